"""Label efficiency: how many labelled subjects a method saves, and its curve over budgets.

"Labels saved" is the number of labelled subjects scratch needs to reach a method's mean,
interpolated on log budget between scratch's means (`scratch_equivalents`, the leaderboard's
columns). Its interval propagates the run-level uncertainty of every mean it rests on: each
draw takes the method's mean and scratch's mean at every budget with 2 runs or more from their
run-level t distributions (mean + SE · t on S − 1 df, the variance components of
`estimates.run_level_estimates`) and interpolates again; the 2.5 and 97.5 percentiles of the
draws are the interval. Drawing the points independently ignores that the runs of one seed
share their labelled subset, which widens the interval (conservative). Across the budgets of
one leaderboard, ``across_blocks`` gives each method's mean rank, how many budgets find it
better or worse than scratch, and the area under its label-efficiency curve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import BASELINE, GROUP_KEYS, MAIN_VIEW, method_order
from cmrbench.reports.stats.catalogue import (
    METHOD,
    Analysis,
    Column,
    Context,
    Table,
    shared_columns,
)
from cmrbench.reports.stats.estimates import RUNS, BootstrapConfig, block_generator

SCRATCH_EQUIVALENT = (
    Column(
        "scratch_equivalent",
        "labels saved: labelled subjects scratch needs to reach this "
        "mean (interpolated on log budget)",
    ),
    Column(
        "scratch_equivalent_low",
        "lower end of its 95 % interval (the means drawn from their run-level t distributions)",
    ),
    Column("scratch_equivalent_high", "upper end of its interval"),
    Column("scratch_equivalent_note", "why there is no value or no interval, or an end is open"),
)
ACROSS_BLOCKS = Table(
    "across_blocks",
    "per leaderboard × method: mean rank over budgets, blocks better / worse "
    "than scratch, area under the label-efficiency curve",
    (
        *shared_columns(GROUP_KEYS),
        METHOD,
        Column("n_budgets", "budgets with a mean"),
        Column("mean_rank", "the budgets' ranks by mean DSC, averaged"),
        Column("n_ranked", "budgets where the method was ranked"),
        Column("n_better", "budgets where the run-level test finds it better than scratch"),
        Column("n_worse", "budgets where it finds it worse"),
        Column("n_tested", "budgets where it was tested against scratch"),
        Column(
            "aulc",
            "area under the label-efficiency curve: mean DSC over log labelled "
            "subjects (trapezoids) divided by the log range",
        ),
        Column("delta_aulc", "aulc minus scratch's on the same budgets"),
    ),
    pages=("index.html",),
)


def scratch_equivalents(
    table: pd.DataFrame, config: BootstrapConfig = BootstrapConfig()
) -> pd.DataFrame:
    """Per row of a leaderboard table (``mean``, ``standard_error``, ``df``, ``scope``,
    ``n_labelled``), the labelled subjects scratch needs to reach the row's mean ("labels
    saved"), interpolated linearly in log budget between scratch's own means, with its interval
    (see the module docstring; ``config.n_resamples`` draws) and a note when there is none or
    an end lies beyond scratch's budgets with 2 runs or more (left open, NaN).
    """
    out = pd.DataFrame(
        {
            "scratch_equivalent": np.nan,
            "scratch_equivalent_low": np.nan,
            "scratch_equivalent_high": np.nan,
            "scratch_equivalent_note": "",
        },
        index=table.index,
    )
    for group, frame in table.groupby(list(GROUP_KEYS), sort=False):
        curve = frame[
            (frame["method"] == BASELINE) & frame["mean"].notna() & frame["n_labelled"].notna()
        ].sort_values("n_labelled")
        if len(curve) < 2:
            continue
        log_n = np.log(curve["n_labelled"].to_numpy(float))
        means = curve["mean"].to_numpy(float)
        runs = curve[curve["scope"] == RUNS]
        for index, row in frame[frame["method"] != BASELINE].iterrows():
            value = float(labels_for(np.array([row["mean"]]), log_n, means[None])[0])
            low = high = np.nan
            if np.isnan(row["mean"]):
                note = ""
            elif not np.isfinite(value):
                where, sign, edge = (
                    ("above", ">", log_n[-1]) if value > 0 else ("below", "<", log_n[0])
                )
                note = f"{where} scratch at every budget ({sign} {np.exp(edge):.0f} subjects)"
                value = np.nan
            elif row["scope"] != RUNS:
                note = "no interval: one run at this budget"
            elif len(runs) < 2:
                note = "no interval: scratch has fewer than 2 budgets with 2 runs or more"
            else:
                rng = block_generator(
                    config,
                    {
                        **dict(zip(GROUP_KEYS, map(str, group))),
                        "method": str(row["method"]),
                        "budget": str(row["budget"]),
                    },
                    "labels-saved",
                )
                low, high, note = _interval(row, runs, rng, config.n_resamples)
            filled: list[float | str] = [value, low, high, note]
            out.loc[index] = filled
    return out


def _draws(rng: np.random.Generator, rows: pd.DataFrame, n_draws: int) -> np.ndarray:
    """``(n_draws, len(rows))`` means drawn from their run-level t distributions."""
    t = rng.standard_t(rows["df"].to_numpy(float), size=(n_draws, len(rows)))
    return rows["mean"].to_numpy(float) + rows["standard_error"].to_numpy(float) * t


def _interval(
    row: pd.Series, runs: pd.DataFrame, rng: np.random.Generator, n_draws: int
) -> tuple[float, float, str]:
    """The 95 % interval of a row's scratch equivalent on scratch's budgets with 2 runs or
    more; an end beyond them is open (NaN) and the note says so."""
    targets = _draws(rng, pd.DataFrame([row]), n_draws)[:, 0]
    curves = _draws(rng, runs, n_draws)
    log_n = np.log(runs["n_labelled"].to_numpy(float))
    found = labels_for(targets, log_n, curves)
    # a draw beyond scratch's budgets sits at 0 or ∞ labels: a percentile that lands there (or
    # between such a draw and a finite one) is an open end
    low, high = np.percentile(np.clip(found, 0.0, np.finfo(float).max / 4), [2.5, 97.5])
    first, last = np.exp(log_n[0]), np.exp(log_n[-1])
    open_low, open_high = low < first * (1 - 1e-9), high > last * (1 + 1e-9)
    notes = []
    if open_low:
        notes.append(f"open below: under {first:.0f} subjects")
    if open_high:
        notes.append(
            f"open above: beyond {last:.0f} subjects (the largest budget with 2 runs or more)"
        )
    return (
        np.nan if open_low else float(low),
        np.nan if open_high else float(high),
        "; ".join(notes),
    )


def labels_for(targets: np.ndarray, log_n: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Labelled subjects at which each curve first reaches its target, interpolated linearly on
    log budget: ``targets`` ``(B,)``, ``curves`` ``(B, K)`` means at ``log_n`` ``(K,)``
    ascending (one curve may serve every target). Above a curve's maximum: +inf; below its
    minimum: −inf; NaN target: NaN."""
    curves = np.broadcast_to(curves, (targets.size, log_n.size))
    found = np.full(targets.size, np.nan)
    for k in range(log_n.size - 1):
        first, second = curves[:, k], curves[:, k + 1]
        hit = (np.minimum(first, second) <= targets) & (targets <= np.maximum(first, second))
        hit &= np.isnan(found)
        step = np.where(second == first, 1.0, second - first)
        fraction = np.where(hit & (second != first), (targets - first) / step, 0.0)
        found = np.where(hit, np.exp(log_n[k] + fraction * (log_n[k + 1] - log_n[k])), found)
    found = np.where(targets > curves.max(axis=1), np.inf, found)
    return np.where(targets < curves.min(axis=1), -np.inf, found)


def across_blocks(
    summary: pd.DataFrame, comparisons: pd.DataFrame, ranks: pd.DataFrame
) -> pd.DataFrame:
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
        curves = {
            m: f.dropna(subset=["mean"]).set_index("budget") for m, f in frame.groupby("method")
        }
        for method in method_order(set(frame["method"])):
            mine = tested[in_group & (tested["method"] == method)]
            rank_rows = ranked[ranked["method"] == method]
            aulc, delta = _aulc(curves.get(method), curves.get(BASELINE))
            rows.append(
                {
                    **keys,
                    "method": method,
                    "n_budgets": len(curves[method]),
                    "mean_rank": (float(rank_rows["rank"].mean()) if len(rank_rows) else np.nan),
                    "n_ranked": len(rank_rows),
                    "n_better": _count(mine, "better"),
                    "n_worse": _count(mine, "worse"),
                    "n_tested": len(mine),
                    "aulc": aulc,
                    "delta_aulc": delta,
                }
            )
    return ACROSS_BLOCKS.frame(rows)


def _count(tested: pd.DataFrame, direction: str) -> int:
    """Budgets whose run-level test finds the method ``direction`` (better, worse) than scratch."""
    return int((tested["significant"] & (tested["direction"] == direction)).sum())


def _aulc(curve: pd.DataFrame | None, baseline: pd.DataFrame | None) -> tuple[float, float]:
    if curve is None or baseline is None:
        return np.nan, np.nan
    shared = set(curve.index) & set(baseline.index)
    labelled = {b: float(curve.loc[b, "n_labelled"]) for b in shared}
    budgets = sorted(labelled, key=labelled.__getitem__)
    if len(budgets) < 2:
        return np.nan, np.nan
    log_n = np.log([labelled[b] for b in budgets])
    if log_n[-1] <= log_n[0]:
        return np.nan, np.nan
    areas = [
        float(
            np.trapezoid(frame.loc[budgets, "mean"].to_numpy(float), log_n) / (log_n[-1] - log_n[0])
        )
        for frame in (curve, baseline)
    ]
    return areas[0], areas[0] - areas[1]


def compute(context: Context) -> dict[str, pd.DataFrame]:
    return {
        "across_blocks": across_blocks(context["summary"], context["comparisons"], context["ranks"])
    }


ANALYSIS = Analysis((ACROSS_BLOCKS,), compute)
