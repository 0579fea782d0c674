"""Several run folders as one `Store` (``cmrbench report RUN [RUN ...]``).

A cell done in exactly one run is used from that run; a cell identity (method, encoder,
dataset, setting, augmentation, budget, seed) done in two runs is a conflict, and every
copy is set aside with the runs named, never averaged. Each run's unreadable files stay
listed, with the run's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cmrbench.store.errors import StoreError
from cmrbench.store.layout import OPTIONAL_SUBJECT_COLUMNS
from cmrbench.store.reader import CELL_SPEC_FIELDS, Store, load_store

STATUS_RANK = {"done": 0, "failed": 1, "unreadable": 2, "pending": 3}
CONFLICT_ACROSS_RUNS = (
    "done in more than one run (same method, encoder, dataset, setting, "
    "augmentation, budget and seed): a conflict, not averaged"
)


def load_stores(run_dirs: Sequence[Path]) -> Store:
    """One `Store` from one or more run folders (``cmrbench report RUN [RUN ...]``).

    Several runs (other datasets, encoders, or one grid split over machines) merge into one
    store: a cell done in exactly one run is used from that run; a cell identity (method,
    encoder, dataset, setting, augmentation, budget, seed) done in two runs is a conflict,
    and every copy is set aside with the runs named, never averaged. ``run`` then holds
    ``runs``: each run's ``run.json`` with its ``name``.
    """
    if not run_dirs:
        raise StoreError("no run folder given")
    if len(run_dirs) == 1:
        return load_store(Path(run_dirs[0]))
    names = run_names([Path(d) for d in run_dirs])
    return merge_stores([load_store(Path(d)) for d in run_dirs], names)


def run_names(run_dirs: list[Path]) -> list[str]:
    """A distinct short name per run folder (its name; ``name-2`` … when two share it)."""
    names: list[str] = []
    for run_dir in run_dirs:
        name, n = run_dir.resolve().name, 2
        while name in names:
            name, n = f"{run_dir.resolve().name}-{n}", n + 1
        names.append(name)
    return names


def merge_stores(stores: list[Store], names: list[str]) -> Store:
    """The stores of several runs as one (see `load_stores`); tables gain a ``run`` column."""
    cells = pd.concat([s.cells.assign(run=n) for s, n in zip(stores, names)], ignore_index=True)
    identity = cells[list(CELL_SPEC_FIELDS)].astype(str).agg("|".join, axis=1)
    done = cells["status"] == "done"
    done_runs = cells[done].groupby(identity[done])["run"].agg(lambda r: ", ".join(sorted(set(r))))
    conflicted = identity.map(done_runs).fillna("").str.contains(", ", regex=False).astype(bool)
    conflicts = cells[conflicted & done].assign(
        reason=[f"{CONFLICT_ACROSS_RUNS} ({done_runs[i]})" for i in identity[conflicted & done]]
    )
    kept = cells[~conflicted]
    best_first = kept.assign(
        _rank=kept["status"].map(STATUS_RANK), _identity=identity[~conflicted]
    ).sort_values("_rank", kind="stable")
    used = best_first.drop_duplicates("_identity").drop(columns=["_rank", "_identity"])
    done_keys = set(used.loc[used["status"] == "done", "key"])

    def rows_of_used_cells(table: str) -> pd.DataFrame:
        rows = pd.concat([getattr(s, table) for s in stores], ignore_index=True)
        for column in OPTIONAL_SUBJECT_COLUMNS:  # a run without it: unknown, not "nan"
            if column in rows:
                rows[column] = rows[column].astype(object).fillna("").astype(str).astype("category")
        return rows[rows["cell_key"].astype(str).isin(done_keys)].reset_index(drop=True)

    set_aside = pd.concat(
        [*(s.set_aside.assign(run=n) for s, n in zip(stores, names)), conflicts], ignore_index=True
    )
    pretrain = pd.concat(
        [s.pretrain.assign(run=n) for s, n in zip(stores, names)], ignore_index=True
    ).drop_duplicates("key")
    run = {
        "grid": " + ".join(dict.fromkeys(str(s.run.get("grid", n)) for s, n in zip(stores, names))),
        "runs": [{"name": n, "folder": str(s.run_dir), **s.run} for s, n in zip(stores, names)],
        "methods": {k: v for s in stores for k, v in (s.run.get("methods") or {}).items()},
        "skipped_subjects": [
            {**entry, "run": n}
            for s, n in zip(stores, names)
            for entry in s.run.get("skipped_subjects") or []
        ],
    }
    unreadable = pd.concat(
        [s.unreadable.assign(run=n) for s, n in zip(stores, names)], ignore_index=True
    )
    return Store(
        run_dir=stores[0].run_dir,
        run=run,
        cells=used.reset_index(drop=True),
        set_aside=set_aside,
        subjects=rows_of_used_cells("subjects"),
        clinical=rows_of_used_cells("clinical"),
        pretrain=pretrain.reset_index(drop=True),
        external=rows_of_used_cells("external"),
        external_clinical=rows_of_used_cells("external_clinical"),
        unreadable=unreadable,
        parts=tuple(stores),
    )
