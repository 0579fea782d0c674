"""What merging run folders changed: leaderboard numbers that differ from a run's own.

``cmrbench report RUN RUN ...`` reads several runs as one store
(`cmrbench.store.merge_stores`). A cell done in two of them is used from the first run (same
spec) or set aside from both (different specs, a conflict), so a method's mean, or its Δ whose
scratch cell was replaced or set aside, can differ from the number the run's own report
shows. Each such number is listed here, and the pages that show it mark it (a merge never
moves a headline silently).

Table: ``merge_changes`` (empty for one run folder, or when no number moved).
"""

from __future__ import annotations

import math

import pandas as pd

from cmrbench.reports.stats.blocks import GROUP_KEYS, MAIN_VIEW, VIEWS
from cmrbench.reports.stats.catalogue import (
    METHOD,
    Analysis,
    Column,
    Context,
    Table,
    shared_columns,
)

MERGE_CHANGES = Table(
    "merge_changes",
    "leaderboard numbers (mean, Δ vs scratch) that differ from a merged run's "
    "own leaderboard (a cell done in two runs is used from one or set aside)",
    (
        *shared_columns(GROUP_KEYS),
        METHOD,
        *shared_columns(("budget",)),
        Column("run", "the merged run folder whose own leaderboard shows other numbers"),
        Column("mean_alone", "the cell's mean DSC in that run's own leaderboard"),
        Column("delta_alone", "the cell's Δ vs scratch in that run's own leaderboard"),
        Column("mean", "the cell's mean DSC in this report (empty: no result here)"),
        Column("delta", "the cell's Δ vs scratch in this report (empty: not computed here)"),
    ),
    pages=("index.html", "method-*.html"),
)
CELL_KEYS = (*GROUP_KEYS, "method", "budget")
_TOLERANCE = 1e-12


def merge_changes(merged: pd.DataFrame, own: dict[str, pd.DataFrame]) -> list[dict]:
    """The leaderboard cells whose mean or Δ in ``merged`` (a merged store's ``leaderboard``)
    differs from the run's own (``own``: each run's name → its store's ``leaderboard``).

    A cell the run alone shows no number for is not a change (the merge adds it); two missing
    numbers agree. Returns the `MERGE_CHANGES` rows, in the runs' order."""
    here = {tuple(str(row[k]) for k in CELL_KEYS): row for row in merged.to_dict("records")}
    rows = []
    for run, board in own.items():
        for alone in board.to_dict("records"):
            if _missing(alone["mean"]) and _missing(alone["delta"]):
                continue
            now = here.get(
                tuple(str(alone[k]) for k in CELL_KEYS), {"mean": math.nan, "delta": math.nan}
            )
            if _differs(alone["mean"], now["mean"]) or _differs(alone["delta"], now["delta"]):
                rows.append(
                    {
                        **{k: alone[k] for k in CELL_KEYS},
                        "run": run,
                        "mean_alone": alone["mean"],
                        "delta_alone": alone["delta"],
                        "mean": now["mean"],
                        "delta": now["delta"],
                    }
                )
    return rows


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _differs(before: float | None, after: float | None) -> bool:
    if before is None or after is None or math.isnan(before) or math.isnan(after):
        return _missing(before) != _missing(after)
    return abs(before - after) > _TOLERANCE


def compute(context: Context) -> dict[str, pd.DataFrame]:
    parts = context.store.parts
    if not parts:
        return {"merge_changes": MERGE_CHANGES.frame()}
    names = [str(run["name"]) for run in context.store.run["runs"]]
    views = tuple(view for view in VIEWS if view.name == MAIN_VIEW)
    own = {name: context.of(part, views)["leaderboard"] for name, part in zip(names, parts)}
    return {"merge_changes": MERGE_CHANGES.frame(merge_changes(context["leaderboard"], own))}


ANALYSIS = Analysis((MERGE_CHANGES,), compute)
