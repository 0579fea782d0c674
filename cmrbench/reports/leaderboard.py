"""Leaderboards: one per dataset × encoder × augmentation × setting, methods × budgets.

Each cell is a method's mean DSC at one label budget with its two-level bootstrap 95 % CI,
whether it is Holm-significantly better or worse than scratch (paired Wilcoxon over
subjects, see `stats.compare_block`), and whether it is the best in its column. A cell
the store has no result for yet is "missing", so a partly finished grid still gets a
leaderboard. `leaderboard` renders them for ``cmrbench stats RUN_DIR --format ...``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cmrbench.reports.load import Store, load_store
from cmrbench.reports.stats import (BASELINE, GROUP_KEYS, MAIN_VIEW, TABLE_COLUMNS, VIEWS,
                                    BootstrapConfig, Statistics, View, budget_order, compare_block,
                                    method_order, subject_blocks, summarise_block)
from cmrbench.reports.text import csv_safe, strip_controls

FORMATS = ("table", "csv", "json", "markdown")
LEADERBOARD_COLUMNS = [*GROUP_KEYS, "method", "budget", "n_labelled", "status", "seeds_done",
                       "seeds_known", "seeds_failed", "mean", "ci_low", "ci_high", "n_subjects",
                       "median_diff", "p_holm", "direction", "best"]
MARKERS = {"better": "▲", "worse": "▼", "": ""}
ASCII_MARKERS = {"better": "+", "worse": "-", "": ""}


class LeaderboardFormatError(ValueError):
    """An output format that `leaderboard` does not know."""


def leaderboard_table(cells: pd.DataFrame, statistics: Statistics) -> pd.DataFrame:
    """One row per group × method × budget, in display order (see module docstring).

    ``cells`` is `load.Store.cells` (it says which cells exist, done or not); the numbers
    come from ``statistics.summary`` (view ``dsc``) and ``statistics.comparisons``.
    """
    if cells.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    keys = [*GROUP_KEYS, "method", "budget"]
    known = cells.assign(done=cells["status"] == "done", failed=cells["status"] == "failed")
    counts = known.groupby(keys).agg(seeds_known=("seed", "nunique"), seeds_done=("done", "sum"),
                                     seeds_failed=("failed", "sum")).reset_index()
    summary = statistics.summary
    main = summary[summary["view"] == MAIN_VIEW]
    comparisons = statistics.comparisons
    rows = []
    for group, frame in cells.groupby(list(GROUP_KEYS), sort=True):
        budgets = sorted(frame["budget"].unique(), key=budget_order)
        for method in method_order(set(frame["method"])):
            for budget in budgets:
                rows.append(dict(zip(GROUP_KEYS, group), method=method, budget=budget))
    table = pd.DataFrame(rows, columns=keys)
    table = table.merge(counts, on=keys, how="left")
    table = table.merge(main[[*keys, "n_labelled", "mean", "ci_low", "ci_high", "n_subjects"]],
                        on=keys, how="left")
    table = table.merge(comparisons[[*keys, "median_diff", "p_holm", "direction"]], on=keys,
                        how="left")
    for column in ("n_labelled", "mean", "ci_low", "ci_high", "median_diff", "p_holm"):
        table[column] = table[column].astype(float)
    for column in ("seeds_known", "seeds_done", "seeds_failed", "n_subjects"):
        table[column] = table[column].fillna(0).astype(int)
    table["direction"] = table["direction"].fillna("").astype(str)
    table["status"] = np.where(table["mean"].isna(), "missing",
                               np.where(table["seeds_done"] < table["seeds_known"], "partial", "done"))
    column_best = table.groupby([*GROUP_KEYS, "budget"])["mean"].transform("max")
    table["best"] = table["mean"].notna() & np.isclose(table["mean"], column_best)
    table["n_labelled"] = table.groupby([*GROUP_KEYS, "budget"])["n_labelled"].transform("max")
    return table[LEADERBOARD_COLUMNS].reset_index(drop=True)


def cell_text(row: pd.Series | dict, ascii_only: bool = False) -> str:
    """A leaderboard cell as text: ``0.842 [0.831, 0.853] ▲`` or ``missing``."""
    if row["status"] == "missing":
        return "missing"
    text = f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    marker = (ASCII_MARKERS if ascii_only else MARKERS)[row["direction"]]
    if marker:
        text += f" {marker}"
    if row["best"]:
        text += " *" if ascii_only else ""
    if row["status"] == "partial":
        text += f" ({row['seeds_done']}/{row['seeds_known']} seeds)"
    return text


def group_title(row: pd.Series | dict) -> str:
    """``dataset · encoder · augmentation · setting`` of a leaderboard (no control characters)."""
    return " · ".join(strip_controls(row[k]) for k in GROUP_KEYS)


def leaderboard(run_dir: Path, fmt: str = "table",
                config: BootstrapConfig = BootstrapConfig()) -> str:
    """The leaderboards of the store at ``run_dir`` as ``table`` (aligned plain text),
    ``csv``, ``json`` or ``markdown`` (for ``cmrbench stats``)."""
    if fmt not in FORMATS:
        raise LeaderboardFormatError(f"unknown leaderboard format {fmt!r}; expected one of "
                                     f"{', '.join(FORMATS)}")
    store = load_store(Path(run_dir))
    table = leaderboard_table(store.cells, main_view_statistics(store, config))
    if fmt == "csv":
        return csv_safe(table).to_csv(index=False)
    if fmt == "json":
        return json.dumps(records(table), indent=2) + "\n"
    render = _markdown if fmt == "markdown" else _plain_text
    return "\n".join(render(frame) for _, frame in table.groupby(list(GROUP_KEYS), sort=False))


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


def _wide(frame: pd.DataFrame, ascii_only: bool) -> tuple[list[str], list[list[str]]]:
    budgets = sorted(frame["budget"].unique(), key=budget_order)
    header = ["method"] + [f"{b} (n={int(n)})" if not pd.isna(n) else str(b) for b, n in (
        (b, frame.loc[frame["budget"] == b, "n_labelled"].max()) for b in budgets)]
    body = []
    for method in method_order(set(frame["method"])):
        cells = frame[frame["method"] == method].set_index("budget")
        body.append([strip_controls(method)] + [cell_text(cells.loc[b], ascii_only) for b in budgets])
    return header, body


def _plain_text(frame: pd.DataFrame) -> str:
    header, body = _wide(frame, ascii_only=True)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    rows = [header, ["-" * w for w in widths], *body]
    lines = [group_title(frame.iloc[0])]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"mean DSC [95% CI]; +/- Holm-significantly better/worse than {BASELINE} "
                 f"(paired Wilcoxon over subjects); * best in column")
    return "\n".join(lines) + "\n"


def _markdown(frame: pd.DataFrame) -> str:
    header, body = _wide(frame, ascii_only=False)
    best = {(r["method"], r["budget"]) for _, r in frame.iterrows() if r["best"]}
    budgets = sorted(frame["budget"].unique(), key=budget_order)
    out = io.StringIO()
    out.write(f"### {_md_escape(group_title(frame.iloc[0]))}\n\n")
    out.write("| " + " | ".join(_md_escape(h) for h in header) + " |\n")
    out.write("|" + "---|" + "---:|" * (len(header) - 1) + "\n")
    for row in body:
        method, values = row[0], row[1:]
        values = [f"**{v}**" if (method, b) in best else v for v, b in zip(values, budgets)]
        out.write("| " + " | ".join([_md_escape(method), *values]) + " |\n")
    out.write(f"\nmean DSC [95% CI]; ▲/▼ Holm-significantly better/worse than {BASELINE} "
              f"(paired Wilcoxon over subjects); **bold** best in column\n")
    return out.getvalue()


def _md_escape(text: str) -> str:
    """Text safe inside a markdown table cell (pipes, HTML and emphasis characters escaped)."""
    for char in ("\\", "|", "*", "_", "`", "[", "]", "<", ">"):
        text = text.replace(char, "\\" + char)
    return text
