"""Provenance: what ran, where and for how long, what was left out, and why.

Not statistics but tables of the run record, so that a reader of the downloads can check what
the numbers rest on: every pretraining job and fine-tuning cell with its status and wall time,
the cell folders the report does not use (not in this grid, conflicting configurations, a
conflict between merged runs), the files the reader could not read (their cells are left out
of every number), and the subjects the run skipped.
"""

from __future__ import annotations

import pandas as pd

from cmrbench.reports.stats.catalogue import Analysis, Column, Context, Table
from cmrbench.store import Store

RUN = Column("run", "the run folder or bundle the row comes from (a report of several runs)")
KEY = Column("key", "the job's key: a hash of its fully resolved spec (its folder's suffix)")
STATUS = Column(
    "status",
    "done, failed, pending (a grid cell not started has no folder) or "
    "unreadable (a file of the job could not be read)",
)
WALL_TIME = Column("wall_time_s", "wall time of the job in seconds")
DEVICE = Column("device", "the device that computed it")
ERROR = Column("error", "the error of a failed job (error.json has the traceback)")
CELL_FIELDS = (
    Column("method", "pretraining method or external checkpoint"),
    Column("encoder", "segmentation net"),
    Column("dataset", "dataset"),
    Column("setting", "generalisation setting"),
    Column("augmentation", "fine-tuning augmentation preset"),
    Column("budget", "label budget"),
    Column("seed", "seed of the training run"),
)

JOBS = Table(
    "jobs",
    "every pretraining job and fine-tuning cell with status and wall time",
    (
        RUN,
        Column("kind", "pretrain or fine-tune"),
        KEY,
        *CELL_FIELDS[:2],
        *(Column(c.name, f"{c.meaning} (fine-tuning cells only)") for c in CELL_FIELDS[2:]),
        STATUS,
        WALL_TIME,
        DEVICE,
        ERROR,
    ),
    pages=("provenance.html",),
)
SET_ASIDE = Table(
    "set_aside",
    "cell folders not used: not in this grid, or conflicting configurations",
    (
        KEY,
        Column("folder", "the cell folder"),
        STATUS,
        *CELL_FIELDS,
        Column("pretrain_key", "key of the pretraining job it fine-tunes from"),
        WALL_TIME,
        DEVICE,
        Column("threads", "CPU threads of the job"),
        ERROR,
        Column("center", "where fine-tuning views were centred (labels, image)"),
        Column("pretrain_center", "where pretraining views were centred"),
        Column("fov_diagonal_mm", "field-of-view diagonal: what an undefined HD95 counts as"),
        Column("protocol_version", "the harness's protocol version of the cell"),
        Column("scale", "small: a scaled-down cell (run --scale small); empty: full size"),
        Column("reason", "why the report does not use it"),
        RUN,
    ),
    pages=("provenance.html", "index.html"),
)
UNREADABLE = Table(
    "unreadable",
    "files the report could not read: their cells are left out of every number",
    (
        Column("kind", "what the file belongs to: cell, pretraining job or run"),
        KEY,
        Column("folder", "the job's folder relative to the run folder (. for run.json)"),
        Column("file", "the file that could not be read"),
        Column("reason", "why (a truncated file, a missing file or column, ...)"),
        RUN,
    ),
    pages=("provenance.html", "index.html"),
)
SKIPPED_SUBJECTS = Table(
    "skipped_subjects",
    "subjects the run skipped, with the reason",
    (
        Column("dataset", "dataset"),
        Column("subject", "the skipped subject"),
        Column("reason", "why (names the file)"),
        RUN,
    ),
    pages=("provenance.html",),
)


def jobs_table(store: Store) -> pd.DataFrame:
    """Pretraining jobs then cells, one row each, as text except the seed and wall time."""
    cells = store.cells.assign(kind="fine-tune")
    pretrain = store.pretrain.assign(kind="pretrain")
    columns = JOBS.column_names
    jobs = pd.concat([pretrain, cells], ignore_index=True).reindex(columns=columns)
    jobs["seed"] = [("" if pd.isna(s) else str(int(s))) for s in jobs["seed"]]
    text = [c for c in columns if c not in ("seed", "wall_time_s")]
    jobs[text] = jobs[text].astype(object).fillna("").astype(str)
    return jobs


def compute(context: Context) -> dict[str, pd.DataFrame]:
    """The store's own tables; ``set_aside``, ``unreadable`` and ``skipped_subjects`` carry
    ``run`` only in a report of several runs."""
    store = context.store
    return {
        "jobs": jobs_table(store),
        "set_aside": store.set_aside,
        "unreadable": store.unreadable,
        "skipped_subjects": pd.DataFrame(store.run.get("skipped_subjects") or []),
    }


ANALYSIS = Analysis((JOBS, SET_ASIDE, UNREADABLE, SKIPPED_SUBJECTS), compute)
