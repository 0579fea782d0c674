"""Leaderboards: one per dataset × encoder × augmentation × setting, methods × budgets.

Each cell is a method's mean DSC at one label budget with its 95 % CI over training runs
and test subjects, its difference Δ to scratch with the CI of the same estimand, and a
mark when the run-level test (seeds paired with scratch, Holm within the budget; see
`stats.compare_block`) finds it better or worse, in the direction of Δ. A budget trained
once ("1 run") gets an interval over the test subjects only and no mark. "Best" is the
highest mean among the cells with every expected seed done. Expected seeds come from the
run's grid (``run.json``), so a partly finished grid still gets a leaderboard with the
missing and partial cells marked. `leaderboard` renders them for ``cmrbench stats``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cmrbench.errors import CmrbenchError
from cmrbench.reports.stats import (BASELINE, GROUP_KEYS, MAIN_VIEW, RUNS, TABLE_COLUMNS, TEST_SET_ONLY,
                                    VIEWS, BootstrapConfig, Statistics, View, budget_order,
                                    compare_block, method_order, power_table, subject_blocks,
                                    summarise_block)
from cmrbench.reports.text import csv_safe, strip_controls
from cmrbench.store import Store, load_store

FORMATS = ("table", "csv", "json", "markdown")
LEADERBOARD_COLUMNS = [*GROUP_KEYS, "method", "budget", "n_labelled", "status", "seeds_done",
                       "seeds_expected", "seeds_failed", "mean", "ci_low", "ci_high", "scope",
                       "n_subjects", "delta", "delta_ci_low", "delta_ci_high", "p", "p_holm",
                       "direction", "note", "wilcoxon_p_holm", "scratch_equivalent",
                       "scratch_equivalent_low", "scratch_equivalent_high",
                       "scratch_equivalent_note", "best", "beyond_study"]
MARKERS = {"better": "▲", "worse": "▼", "": ""}
ASCII_MARKERS = {"better": "+", "worse": "-", "": ""}
TEST_SET_MARK, ASCII_TEST_SET_MARK = "†", "(t)"
STUDY_BUDGETS = {"10", "15", "25", "50", "all"}
STUDY_GENERALISATION_SETTINGS = {"vendors=A+B", "vendors=C+D", "phase=ED", "phase=ES"}
LEGEND = ("mean DSC [95% CI over training runs and test subjects], then the difference to "
          f"{BASELINE} [95% CI]; {{better}}/{{worse}} Holm-significantly better/worse than "
          f"{BASELINE} (t-test over training runs, each seed paired with {BASELINE}'s run on "
          "the same labelled subset); {test_set} 1 run: interval over the test subjects only, "
          "not tested; {best} highest mean among cells with every seed done")


class LeaderboardFormatError(CmrbenchError, ValueError):
    """An output format that `leaderboard` does not know."""


def leaderboard_table(cells: pd.DataFrame, statistics: Statistics) -> pd.DataFrame:
    """One row per group × method × budget, in display order (see module docstring).

    ``cells`` is `cmrbench.store.Store.cells` (the run's cells, done or not: they give the expected
    seeds); the numbers come from ``statistics.summary`` (view ``dsc``) and
    ``statistics.comparisons``.
    """
    if cells.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    keys = [*GROUP_KEYS, "method", "budget"]
    known = cells.assign(done=cells["status"] == "done", failed=cells["status"] == "failed")
    counts = known.groupby(keys).agg(seeds_expected=("seed", "nunique"), seeds_done=("done", "sum"),
                                     seeds_failed=("failed", "sum")).reset_index()
    summary = statistics.summary
    main = summary[summary["view"] == MAIN_VIEW]
    comparisons = statistics.comparisons
    comparisons = comparisons[comparisons["view"] == MAIN_VIEW].rename(columns={
        "ci_low": "delta_ci_low", "ci_high": "delta_ci_high"})
    rows = []
    for group, frame in cells.groupby(list(GROUP_KEYS), sort=True):
        budgets = sorted(frame["budget"].unique(), key=budget_order)
        for method in method_order(set(frame["method"])):
            for budget in budgets:
                rows.append(dict(zip(GROUP_KEYS, group), method=method, budget=budget))
    table = pd.DataFrame(rows, columns=keys)
    table = table.merge(counts, on=keys, how="left")
    table = table.merge(main[[*keys, "n_labelled", "mean", "ci_low", "ci_high", "scope",
                              "n_subjects"]], on=keys, how="left")
    table = table.merge(comparisons[[*keys, "delta", "delta_ci_low", "delta_ci_high", "p", "p_holm",
                                     "direction", "note", "wilcoxon_p_holm"]], on=keys, how="left")
    for column in ("n_labelled", "mean", "ci_low", "ci_high", "delta", "delta_ci_low",
                   "delta_ci_high", "p", "p_holm", "wilcoxon_p_holm"):
        table[column] = table[column].astype(float)
    for column in ("seeds_expected", "seeds_done", "seeds_failed", "n_subjects"):
        table[column] = table[column].fillna(0).astype(int)
    for column in ("direction", "note", "scope"):
        table[column] = table[column].fillna("").astype(str)
    table["status"] = np.where(table["mean"].isna(), "missing",
                               np.where(table["seeds_done"] < table["seeds_expected"], "partial",
                                        "done"))
    complete = table["mean"].where(table["status"] == "done")
    column_best = complete.groupby([table[k] for k in (*GROUP_KEYS, "budget")]).transform("max")
    table["best"] = complete.notna() & np.isclose(complete, column_best)
    table["n_labelled"] = table.groupby([*GROUP_KEYS, "budget"])["n_labelled"].transform("max")
    equivalents = _scratch_equivalents(table)
    table[list(equivalents.columns)] = equivalents
    table["beyond_study"] = [bool(beyond_the_study(r["encoder"], r["setting"], [r["budget"]]))
                             for _, r in table.iterrows()]
    return table[LEADERBOARD_COLUMNS].reset_index(drop=True)


def _scratch_equivalents(table: pd.DataFrame) -> pd.DataFrame:
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


def labels_saved_text(row: pd.Series | dict) -> str:
    """The "labels saved" column as text: ``31.6 [18.2, 55.0]`` (scratch-equivalent subjects
    with its interval), ``31.6 (no interval: ...)``, an out-of-range note, or ``""``."""
    value, note = row["scratch_equivalent"], row["scratch_equivalent_note"]
    if np.isnan(value):
        return note
    text = f"{value:.1f}"
    if not (np.isnan(row["scratch_equivalent_low"]) or np.isnan(row["scratch_equivalent_high"])):
        text += f" [{row['scratch_equivalent_low']:.1f}, {row['scratch_equivalent_high']:.1f}]"
    return f"{text} ({note})" if note else text


def beyond_the_study(encoder: str, setting: str, budgets: list[str]) -> str:
    """Why cells of this encoder, setting and budgets lie beyond what de Mooij et al.
    published ("" when they do not): the study trained only the 2D U-Net, published budgets
    10, 15, 25, 50 and all in the default setting, and (as read from its split files) only
    "all" under the vendor and phase settings."""
    reasons = []
    if not encoder.startswith("unet"):
        reasons.append(f"encoder {encoder} (the study trained only the U-Net)")
    if setting == "default":
        extra = [b for b in budgets if b not in STUDY_BUDGETS]
    elif setting in STUDY_GENERALISATION_SETTINGS:
        extra = [b for b in budgets if b != "all"]
    else:
        extra = []
        reasons.append(f"setting {setting}")
    if extra:
        reasons.append(f"budget{'s' if len(extra) > 1 else ''} {', '.join(extra)} under {setting}")
    return "beyond the study: " + "; ".join(reasons) if reasons else ""


def cell_text(row: pd.Series | dict, ascii_only: bool = False) -> str:
    """A leaderboard cell as text: ``0.842 [0.831, 0.853] +0.021 [+0.005, +0.037] ▲`` or
    ``missing``."""
    if row["status"] == "missing":
        return "missing"
    if np.isnan(row["ci_low"]):
        text = f"{row['mean']:.3f} (no CI)"
    else:
        text = f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    if row["scope"] == TEST_SET_ONLY:
        text += f" {ASCII_TEST_SET_MARK if ascii_only else TEST_SET_MARK}"
    if not np.isnan(row["delta"]):
        text += f" {row['delta']:+.3f}"
        if not np.isnan(row["delta_ci_low"]):
            text += f" [{row['delta_ci_low']:+.3f}, {row['delta_ci_high']:+.3f}]"
    marker = (ASCII_MARKERS if ascii_only else MARKERS)[row["direction"]]
    if marker:
        text += f" {marker}"
    if row["best"] and ascii_only:
        text += " *"
    if row["status"] == "partial":
        text += f" ({row['seeds_done']}/{row['seeds_expected']} seeds)"
    return text


def group_title(row: pd.Series | dict) -> str:
    """``dataset · encoder · augmentation · setting`` of a leaderboard (no control characters)."""
    return " · ".join(strip_controls(row[k]) for k in GROUP_KEYS)


def legend(ascii_only: bool) -> str:
    """The text under every text leaderboard."""
    markers = ASCII_MARKERS if ascii_only else MARKERS
    return LEGEND.format(better=markers["better"], worse=markers["worse"],
                         test_set=ASCII_TEST_SET_MARK if ascii_only else TEST_SET_MARK,
                         best="*" if ascii_only else "**bold**")


def leaderboard(run_dir: Path, fmt: str = "table", config: BootstrapConfig = BootstrapConfig(),
                power_delta: float | None = None) -> str:
    """The leaderboards of the store at ``run_dir`` as ``table`` (aligned plain text),
    ``csv``, ``json`` or ``markdown`` (for ``cmrbench stats``); with ``power_delta`` the
    power table instead (`stats.power_table`: detectable Δ, seeds needed for that Δ)."""
    if fmt not in FORMATS:
        raise LeaderboardFormatError(f"unknown leaderboard format {fmt!r}; expected one of "
                                     f"{', '.join(FORMATS)}")
    store = load_store(Path(run_dir))
    statistics = main_view_statistics(store, config)
    if power_delta is not None:
        return _render_power(power_table(statistics.comparisons, power_delta), fmt)
    table = leaderboard_table(store.cells, statistics)
    if fmt == "csv":
        return csv_safe(table).to_csv(index=False)
    if fmt == "json":
        return json.dumps(records(table), indent=2) + "\n"
    render = _markdown if fmt == "markdown" else _plain_text
    text = "\n".join(render(frame) for _, frame in table.groupby(list(GROUP_KEYS), sort=False))
    if len(store.set_aside):
        text += (f"\n{len(store.set_aside)} cell folder(s) set aside "
                 f"({'; '.join(sorted(set(store.set_aside['reason'])))})\n")
    return text


def main_view_statistics(store: Store, config: BootstrapConfig) -> Statistics:
    """Only what a leaderboard needs: mean DSC with CI and the comparisons with scratch."""
    views: tuple[View, ...] = tuple(v for v in VIEWS if v.name == MAIN_VIEW)
    blocks = subject_blocks(store.subjects, views)
    with threadpool_limits(limits=1, user_api="blas"):
        summary = [row for block in blocks for row in summarise_block(block, config, views)[0]]
        comparisons = [row for block in blocks for row in compare_block(block, config)]
    tables = {name: pd.DataFrame(columns=columns) for name, columns in TABLE_COLUMNS.items()}
    tables.update(summary=pd.DataFrame(summary, columns=TABLE_COLUMNS["summary"]),
                  comparisons=pd.DataFrame(comparisons, columns=TABLE_COLUMNS["comparisons"]))
    return Statistics(blocks=blocks, clinical=pd.DataFrame(), **tables)


def records(table: pd.DataFrame) -> list[dict]:
    """Table rows as JSON-ready dicts (NaN → None, numpy scalars → Python)."""
    out = []
    for row in table.to_dict(orient="records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(value: object) -> object:
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _render_power(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return csv_safe(table).to_csv(index=False)
    if fmt == "json":
        return json.dumps(records(table), indent=2) + "\n"
    if table.empty:
        return "no block has 2 or more seeds shared with scratch: no power estimate\n"
    delta = float(table["delta"].iloc[0])
    header = ["block", "seeds", "subjects", "SD run", "SD subject", "SD residual",
              "detectable Δ (80 %)", f"seeds for Δ {delta:g}"]
    body = [[" · ".join(str(r[k]) for k in (*GROUP_KEYS, "budget")), str(r["n_seeds"]),
             str(r["n_subjects"]), f"{r['sd_run']:.4f}", f"{r['sd_subject']:.4f}",
             f"{r['sd_residual']:.4f}", f"{r['detectable_delta']:.4f}",
             "> 100" if r["seeds_needed"] is None or pd.isna(r["seeds_needed"])
             else str(int(r["seeds_needed"]))] for _, r in table.iterrows()]
    note = ("detectable Δ: the smallest true difference to scratch the run-level t-test "
            "(α = 0.05, two-sided) finds with 80 % power at the block's seeds and subjects; "
            "variance components of the differences to scratch, averaged over methods")
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join([_md_escape(row[0]), *row[1:]]) + " |" for row in body]
        return "\n".join(lines) + f"\n\n{note}\n"
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [header, ["-" * w for w in widths], *body]]
    return "\n".join(lines) + f"\n{note}\n"


def _wide(frame: pd.DataFrame, ascii_only: bool) -> tuple[list[str], list[list[str]]]:
    budgets = sorted(frame["budget"].unique(), key=budget_order)
    header = ["method"] + [f"{b} (n={int(n)})" if not pd.isna(n) else str(b) for b, n in (
        (b, frame.loc[frame["budget"] == b, "n_labelled"].max()) for b in budgets)]
    body = []
    for method in method_order(set(frame["method"])):
        cells = frame[frame["method"] == method].set_index("budget")
        body.append([strip_controls(method)] +
                    [cell_text(cells.loc[b], ascii_only) for b in budgets])
    return header, body


def _board_label(frame: pd.DataFrame) -> str:
    first = frame.iloc[0]
    return beyond_the_study(str(first["encoder"]), str(first["setting"]),
                            sorted(frame["budget"].unique(), key=budget_order))


def _plain_text(frame: pd.DataFrame) -> str:
    header, body = _wide(frame, ascii_only=True)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    rows = [header, ["-" * w for w in widths], *body]
    label = _board_label(frame)
    lines = [group_title(frame.iloc[0]) + (f"  [{label}]" if label else "")]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(legend(ascii_only=True))
    return "\n".join(lines) + "\n"


def _markdown(frame: pd.DataFrame) -> str:
    header, body = _wide(frame, ascii_only=False)
    best = {(r["method"], r["budget"]) for _, r in frame.iterrows() if r["best"]}
    budgets = sorted(frame["budget"].unique(), key=budget_order)
    out = io.StringIO()
    out.write(f"### {_md_escape(group_title(frame.iloc[0]))}\n\n")
    label = _board_label(frame)
    if label:
        out.write(f"*{_md_escape(label)}*\n\n")
    out.write("| " + " | ".join(_md_escape(h) for h in header) + " |\n")
    out.write("|" + "---|" + "---:|" * (len(header) - 1) + "\n")
    for row in body:
        method, values = row[0], row[1:]
        values = [f"**{v}**" if (method, b) in best else v for v, b in zip(values, budgets)]
        out.write("| " + " | ".join([_md_escape(method), *values]) + " |\n")
    out.write(f"\n{legend(ascii_only=False)}\n")
    return out.getvalue()


def _md_escape(text: str) -> str:
    """Text safe inside a markdown table cell (pipes, HTML and emphasis characters escaped)."""
    for char in ("\\", "|", "*", "_", "`", "[", "]", "<", ">"):
        text = text.replace(char, "\\" + char)
    return text
