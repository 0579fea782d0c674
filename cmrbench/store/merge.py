"""Several run folders as one `Store` (``cmrbench report RUN [RUN ...]``).

A cell done in exactly one run is used from that run. A cell identity (method, encoder,
dataset, setting, augmentation, budget, seed) done in two runs with one key (the same spec) is
used once, from the first of those runs in the order given, and the other copies are set
aside; done with different keys (different specs) it is a conflict, and every copy is set
aside with the runs named. Nothing is averaged. Each run's unreadable files stay listed, with
the run's name.
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
REPEATED_ACROSS_RUNS = (
    "done in more than one run with the same key (the same spec): the copy of run {run} is "
    "used, this one set aside, not averaged"
)


def load_stores(run_dirs: Sequence[Path]) -> Store:
    """One `Store` from one or more run folders (``cmrbench report RUN [RUN ...]``).

    Several runs (other datasets, encoders, or one grid split over machines) merge into one
    store: a cell done in exactly one run is used from that run; a cell identity (method,
    encoder, dataset, setting, augmentation, budget, seed) done in two runs with the same key
    is used from the first of them in ``run_dirs``' order (the other copies set aside), and
    done with different keys is a conflict: every copy is set aside with the runs named.
    Nothing is averaged. ``run`` then holds ``runs``: each run's ``run.json`` with its
    ``name``.
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
    by_identity = cells[done].groupby(identity[done])
    done_runs = by_identity["run"].agg(lambda r: ", ".join(sorted(set(r))))
    in_several = identity.map(done_runs).fillna("").str.contains(", ", regex=False).astype(bool)
    conflicted = in_several & identity.map(by_identity["key"].nunique()).fillna(0).gt(1)
    conflicts = cells[conflicted & done].assign(
        reason=[f"{CONFLICT_ACROSS_RUNS} ({done_runs[i]})" for i in identity[conflicted & done]]
    )
    kept = cells[~conflicted]
    best_first = kept.assign(
        _rank=kept["status"].map(STATUS_RANK), _identity=identity[~conflicted]
    ).sort_values("_rank", kind="stable")  # done first, then the runs' order
    used = best_first.drop_duplicates("_identity")
    first_run = used.set_index("_identity")["run"]
    repeated = best_first[best_first.duplicated("_identity") & (best_first["status"] == "done")]
    repeats = repeated.assign(
        reason=[REPEATED_ACROSS_RUNS.format(run=first_run[i]) for i in repeated["_identity"]]
    ).drop(columns=["_rank", "_identity"])
    used = used.drop(columns=["_rank", "_identity"])
    done_used = used[used["status"] == "done"]
    used_keys = {n: set(done_used.loc[done_used["run"] == n, "key"]) for n in names}

    def rows_of_used_cells(table: str) -> pd.DataFrame:
        """Each run's rows of ``table`` that belong to a cell used from that run."""
        rows = pd.concat(
            [
                getattr(s, table)[getattr(s, table)["cell_key"].astype(str).isin(used_keys[n])]
                for s, n in zip(stores, names)
            ],
            ignore_index=True,
        )
        for column in OPTIONAL_SUBJECT_COLUMNS:  # a run without it: unknown, not "nan"
            if column in rows:
                rows[column] = rows[column].astype(object).fillna("").astype(str).astype("category")
        return rows.reset_index(drop=True)

    set_aside = pd.concat(
        [*(s.set_aside.assign(run=n) for s, n in zip(stores, names)), conflicts, repeats],
        ignore_index=True,
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
