"""Label efficiency: how many labelled subjects a method saves, and its curve over budgets.

"Labels saved" is the number of labelled subjects scratch needs to reach a method's mean,
interpolated on log budget between scratch's means, with a conservative interval where every
point has two runs or more (`scratch_equivalents`, the leaderboard's columns). Across the
budgets of one leaderboard, ``across_blocks`` gives each method's mean rank, how many budgets
find it better or worse than scratch, and the area under its label-efficiency curve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import BASELINE, GROUP_KEYS, MAIN_VIEW, method_order
from cmrbench.reports.stats.catalogue import (METHOD, Analysis, Column, Context, Table,
                                              shared_columns)
from cmrbench.reports.stats.estimates import RUNS

SCRATCH_EQUIVALENT = (
    Column("scratch_equivalent", "labels saved: labelled subjects scratch needs to reach this "
                                 "mean (interpolated on log budget)"),
    Column("scratch_equivalent_low", "lower end of its interval (2 runs or more everywhere)"),
    Column("scratch_equivalent_high", "upper end of its interval"),
    Column("scratch_equivalent_note", "why there is no value or no interval"))
ACROSS_BLOCKS = Table(
    "across_blocks", "per leaderboard × method: mean rank over budgets, blocks better / worse "
                     "than scratch, area under the label-efficiency curve",
    (*shared_columns(GROUP_KEYS), METHOD, Column("n_budgets", "budgets with a mean"),
     Column("mean_rank", "the budgets' mean ranks, averaged"),
     Column("n_ranked", "budgets where the method was ranked"),
     Column("n_better", "budgets where the run-level test finds it better than scratch"),
     Column("n_worse", "budgets where it finds it worse"),
     Column("n_tested", "budgets where it was tested against scratch"),
     Column("aulc", "area under the label-efficiency curve: mean DSC over log labelled "
                    "subjects (trapezoids) divided by the log range"),
     Column("delta_aulc", "aulc minus scratch's on the same budgets")),
    pages=("index.html",))


def scratch_equivalents(table: pd.DataFrame) -> pd.DataFrame:
    """Per row, the labelled subjects scratch needs to reach the row's mean ("labels saved"),
    interpolated linearly in log budget between scratch's own means, with a note when the
    mean lies outside scratch's range.

    The interval (``scratch_equivalent_low/high``) is given where the data allow: the row and
    every point of scratch's curve have run-level intervals (two seeds or more). It is the
    conservative union of both uncertainties: the low end is where scratch's upper curve
    (its ``ci_high`` per budget) reaches the row's ``ci_low``, the high end where scratch's
    lower curve reaches the row's ``ci_high``. An end outside scratch's budgets is left open
    (NaN) and the note says so.
    """
    out = pd.DataFrame({"scratch_equivalent": np.nan, "scratch_equivalent_low": np.nan,
                        "scratch_equivalent_high": np.nan, "scratch_equivalent_note": ""},
                       index=table.index)
    for _, frame in table.groupby(list(GROUP_KEYS), sort=False):
        curve = frame[(frame["method"] == BASELINE) & frame["mean"].notna()
                      & frame["n_labelled"].notna()].sort_values("n_labelled")
        if len(curve) < 2:
            continue
        log_n = np.log(curve["n_labelled"].to_numpy(float))
        means = curve["mean"].to_numpy(float)
        curve_has_intervals = bool((curve["scope"] == RUNS).all())
        for index, row in frame[frame["method"] != BASELINE].iterrows():
            value, note = _labels_for(row["mean"], log_n, means)
            low = high = np.nan
            if curve_has_intervals and row["scope"] == RUNS and not np.isnan(value):
                low = _labels_for(row["ci_low"], log_n, curve["ci_high"].to_numpy(float))[0]
                high = _labels_for(row["ci_high"], log_n, curve["ci_low"].to_numpy(float))[0]
                if np.isnan(low) or np.isnan(high):
                    note = "interval reaches beyond scratch's budgets"
            elif not np.isnan(value):
                note = "no interval: fewer than 2 runs at a budget"
            out.loc[index] = [value, low, high, note]
    return out


def _labels_for(target: float, log_n: np.ndarray, means: np.ndarray) -> tuple[float, str]:
    if np.isnan(target):
        return np.nan, ""
    if target > means.max():
        return np.nan, f"above scratch at every budget (> {np.exp(log_n[-1]):.0f} subjects)"
    if target < means.min():
        return np.nan, f"below scratch at every budget (< {np.exp(log_n[0]):.0f} subjects)"
    for k in range(len(means) - 1):
        low, high = means[k], means[k + 1]
        if min(low, high) <= target <= max(low, high):
            fraction = 0.0 if high == low else (target - low) / (high - low)
            return float(np.exp(log_n[k] + fraction * (log_n[k + 1] - log_n[k]))), ""
    return np.nan, ""



def across_blocks(summary: pd.DataFrame, comparisons: pd.DataFrame,
                  ranks: pd.DataFrame) -> pd.DataFrame:
    """One summary row per leaderboard × method: mean rank over its budgets, how many blocks
    find it significantly better / worse than scratch out of those tested, and the area under
    its label-efficiency curve (mean DSC, trapezoids on log labelled subjects, divided by the
    log range: a mean DSC over budgets) on the budgets where scratch and it both have a mean,
    with its difference to scratch's."""
    main = summary[summary["view"] == MAIN_VIEW]
    if main.empty:
        return ACROSS_BLOCKS.frame()
    tested = comparisons[(comparisons["view"] == MAIN_VIEW) & comparisons["p"].notna()]
    rows = []
    for group, frame in main.groupby(list(GROUP_KEYS), sort=False):
        keys = dict(zip(GROUP_KEYS, group))
        in_group = (tested[list(GROUP_KEYS)] == pd.Series(keys)).all(axis=1)
        ranked = ranks[(ranks[list(GROUP_KEYS)] == pd.Series(keys)).all(axis=1)]
        curves = {m: f.dropna(subset=["mean"]).set_index("budget")
                  for m, f in frame.groupby("method")}
        for method in method_order(set(frame["method"])):
            mine = tested[in_group & (tested["method"] == method)]
            rank_rows = ranked[ranked["method"] == method]
            aulc, delta = _aulc(curves.get(method), curves.get(BASELINE))
            rows.append({**keys, "method": method, "n_budgets": len(curves[method]),
                         "mean_rank": (float(rank_rows["mean_rank"].mean()) if len(rank_rows)
                                       else np.nan),
                         "n_ranked": len(rank_rows),
                         "n_better": _count(mine, "better"), "n_worse": _count(mine, "worse"),
                         "n_tested": len(mine), "aulc": aulc, "delta_aulc": delta})
    return ACROSS_BLOCKS.frame(rows)


def _count(tested: pd.DataFrame, direction: str) -> int:
    """Budgets whose run-level test finds the method ``direction`` (better, worse) than scratch."""
    return int((tested["significant"] & (tested["direction"] == direction)).sum())


def _aulc(curve: pd.DataFrame | None, baseline: pd.DataFrame | None) -> tuple[float, float]:
    if curve is None or baseline is None:
        return np.nan, np.nan
    budgets = sorted(set(curve.index) & set(baseline.index),
                     key=lambda b: float(curve.loc[b, "n_labelled"]))
    if len(budgets) < 2:
        return np.nan, np.nan
    log_n = np.log([float(curve.loc[b, "n_labelled"]) for b in budgets])
    if log_n[-1] <= log_n[0]:
        return np.nan, np.nan
    areas = [float(np.trapezoid(frame.loc[budgets, "mean"].to_numpy(float), log_n)
                   / (log_n[-1] - log_n[0])) for frame in (curve, baseline)]
    return areas[0], areas[0] - areas[1]



def compute(context: Context) -> dict[str, pd.DataFrame]:
    return {"across_blocks": across_blocks(context["summary"], context["comparisons"],
                                           context["ranks"])}


ANALYSIS = Analysis((ACROSS_BLOCKS,), compute)
