"""Leaderboards as text: what ``cmrbench stats`` prints.

A leaderboard cell reads ``0.842 [0.831, 0.853] +0.021 [+0.005, +0.037] p=0.012 ▲``: the
method's mean DSC at one budget with its 95 % CI, then Δ vs scratch with its simultaneous CI,
the Holm-adjusted p of the run-level test and its mark, or ``n.s.`` / ``not tested``
(`cmrbench.reports.stats.leaderboard`); the site shows the same marks (`MARKERS`,
`TEST_SET_MARK`, `STEP_DOWN_MARK`). `leaderboard` renders the leaderboards (or, with a Δ, the
power table) as aligned text, markdown, CSV or JSON; `cmrbench.reports.tables` prints any other
table of the catalogue (``--table NAME``, ``--tables``).
"""

from __future__ import annotations

import io
import json
import logging
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from cmrbench.errors import CmrbenchError
from cmrbench.reports.stats import (
    BASELINE,
    GROUP_KEYS,
    MAIN_VIEW,
    TEST_SET_ONLY,
    VIEWS,
    BootstrapConfig,
    Statistics,
    budget_order,
    method_order,
)
from cmrbench.reports.stats.catalogue import records
from cmrbench.reports.stats.leaderboard import (
    SINGLE_PRETRAINING,
    beyond_the_study,
    single_pretraining,
)
from cmrbench.reports.text import aligned, csv_safe, markdown_rows, md_escape, strip_controls
from cmrbench.store import Store, load_store

FORMATS = ("table", "csv", "json", "markdown")
MARKERS = {"better": "▲", "worse": "▼", "": ""}
ASCII_MARKERS = {"better": "+", "worse": "-", "": ""}
TEST_SET_MARK, ASCII_TEST_SET_MARK = "†", "(t)"
STEP_DOWN_MARK, ASCII_STEP_DOWN_MARK = "‡", "(s)"
NOT_SIGNIFICANT, NOT_TESTED = "n.s.", "not tested"
LEGEND = (
    "mean DSC [95% CI over training runs and test subjects, on the logit scale so it "
    f"stays inside [0, 1]], then Δ, the difference to {BASELINE} [simultaneous 95% CI over "
    "the board's m = {m} tested comparisons with scratch (Bonferroni)], Holm's p over "
    "those and the mark: {better}/{worse} Holm-significantly better/worse than "
    f"{BASELINE} (t-test over training runs, each seed paired with {BASELINE}'s run on "
    "the same labelled subset; the board is one family), n.s. not significant; "
    "{test_set} 1 run: interval over the test subjects only, Δ not tested; {step} marked "
    "by Holm's step-down although its simultaneous interval reaches 0; {top} the budget's "
    "top set: no seed-level test separates it from the highest mean among cells with "
    "every seed done. No mark is not evidence of no gain: with 3 seeds only large "
    "differences can be marked (cmrbench stats RUN --power)."
)
# a leaderboard needs only the main score's means and comparisons
LEADERBOARD_VIEWS = tuple(v for v in VIEWS if v.name == MAIN_VIEW)
log = logging.getLogger(__name__)


class LeaderboardFormatError(CmrbenchError, ValueError):
    """An output format that `leaderboard` does not know."""


def labels_saved_text(row: pd.Series | dict) -> str:
    """The "labels saved" column as text: ``31.6 [18.2, 55.0]`` (scratch-equivalent subjects
    with its interval), ``31.6 [18.2, …] (open above: ...)`` where an end lies beyond scratch's
    budgets, ``31.6 (no interval: ...)``, an out-of-range note, or ``""``."""
    value, note = row["scratch_equivalent"], row["scratch_equivalent_note"]
    if np.isnan(value):
        return note
    text = f"{value:.1f}"
    low, high = row["scratch_equivalent_low"], row["scratch_equivalent_high"]
    if not (np.isnan(low) and np.isnan(high)) or note.startswith("open"):
        ends = ("…" if np.isnan(end) else f"{end:.1f}" for end in (low, high))
        text += f" [{', '.join(ends)}]"
    return f"{text} ({note})" if note else text


def cell_text(row: pd.Series | dict, ascii_only: bool = False) -> str:
    """A leaderboard cell as text: ``0.842 [0.831, 0.853] +0.021 [+0.005, +0.037] p=0.012 ▲``
    (``n.s.`` when the Holm-adjusted p is 0.05 or more, ``not tested`` without a test) or
    ``missing``."""
    if row["status"] == "missing":
        return "missing"
    test_set = ASCII_TEST_SET_MARK if ascii_only else TEST_SET_MARK
    if np.isnan(row["ci_low"]):
        text = f"{row['mean']:.3f} (no CI)"
    else:
        text = f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    if row["scope"] == TEST_SET_ONLY:
        text += f" {test_set}"
    if not np.isnan(row["delta"]):
        text += f" {row['delta']:+.3f}"
        if not np.isnan(row["delta_ci_low"]):
            text += f" [{row['delta_ci_low']:+.3f}, {row['delta_ci_high']:+.3f}]"
        elif row["scope"] == TEST_SET_ONLY:
            text += f" {test_set}"
        text += " " + test_verdict(row, ascii_only)
    if row["top_set"] and ascii_only:  # markdown bolds the top set instead
        text += " *"
    if row["status"] == "partial":
        text += f" ({row['seeds_done']}/{row['seeds_expected']} seeds)"
    return text


def test_verdict(row: pd.Series | dict, ascii_only: bool = False) -> str:
    """Beside a Δ: Holm's p and the mark (with the step-down mark), ``p=0.31 n.s.``, or
    ``not tested``."""
    if np.isnan(row["p_holm"]):
        return NOT_TESTED
    text = f"p={row['p_holm']:.3f}" if row["p_holm"] >= 1e-3 else "p<0.001"
    if not row["direction"]:
        return f"{text} {NOT_SIGNIFICANT}"
    text += " " + (ASCII_MARKERS if ascii_only else MARKERS)[row["direction"]]
    if row["step_down"]:
        text += " " + (ASCII_STEP_DOWN_MARK if ascii_only else STEP_DOWN_MARK)
    return text


def group_title(row: pd.Series | dict) -> str:
    """``dataset · encoder · augmentation · setting`` of a leaderboard (no control characters)."""
    return " · ".join(strip_controls(row[k]) for k in GROUP_KEYS)


def legend(ascii_only: bool, rows: pd.DataFrame | None = None) -> str:
    """The text under a text leaderboard; with the board's ``rows``, its family size and,
    when its cells rest on one pretraining run per method, `SINGLE_PRETRAINING`."""
    markers = ASCII_MARKERS if ascii_only else MARKERS
    size = int(rows["family_size"].max()) if rows is not None and len(rows) else 0
    text = LEGEND.format(
        better=markers["better"],
        worse=markers["worse"],
        m=size or "m",
        test_set=ASCII_TEST_SET_MARK if ascii_only else TEST_SET_MARK,
        step=ASCII_STEP_DOWN_MARK if ascii_only else STEP_DOWN_MARK,
        top="*" if ascii_only else "**bold**",
    )
    if rows is not None and single_pretraining(rows):
        text += " All of it is " + SINGLE_PRETRAINING + "."
    return text


def leaderboard(
    run_dir: Path,
    fmt: str = "table",
    config: BootstrapConfig = BootstrapConfig(),
    power_delta: float | None = None,
) -> str:
    """The leaderboards of the store at ``run_dir`` as ``table`` (aligned plain text),
    ``csv``, ``json`` or ``markdown`` (for ``cmrbench stats``); with ``power_delta`` the
    power table instead (detectable Δ, seeds needed for that Δ)."""
    check_format(fmt)
    store = load_store(Path(run_dir))
    if power_delta is not None or fmt in ("csv", "json"):
        warn_unreadable(store)  # the output itself stays one table
    statistics = Statistics(store, config, LEADERBOARD_VIEWS, power_delta)
    if power_delta is not None:
        return _render_power(statistics["power"], fmt)
    table = statistics["leaderboard"]
    if fmt == "csv":
        return csv_safe(table).to_csv(index=False)
    if fmt == "json":
        return json.dumps(records(table), indent=2) + "\n"
    render = _markdown if fmt == "markdown" else _plain_text
    text = "\n".join(render(frame) for _, frame in table.groupby(list(GROUP_KEYS), sort=False))
    if len(store.set_aside):
        text += (
            f"\n{len(store.set_aside)} cell folder(s) set aside "
            f"({'; '.join(sorted(set(store.set_aside['reason'])))})\n"
        )
    if len(store.unreadable):
        text += "\n" + "\n".join(unreadable_lines(store)) + "\n"
    return text


def unreadable_lines(store: Store) -> list[str]:
    """What ``cmrbench stats`` and ``report`` say about the files they could not read: how
    many, then one line each (folder/file: reason)."""
    rows = store.unreadable
    lines = [
        f"{len(rows)} unreadable file(s); their cells are left out of every number "
        f"(`cmrbench run` computes a cell with a damaged result.json again; for any other "
        f"file, remove the cell's folder and run again):"
    ]
    for row in rows.itertuples():
        where = "" if not hasattr(row, "run") else f"{row.run}: "
        lines.append(f"  {where}{row.folder}/{row.file}: {strip_controls(row.reason)}")
    return lines


def warn_unreadable(store: Store) -> None:
    """Log `unreadable_lines` as a warning (the CLI prints it on stderr), when there are any."""
    if len(store.unreadable):
        log.warning("\n".join(unreadable_lines(store)))


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise LeaderboardFormatError(
            f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )


def _render_power(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return csv_safe(table).to_csv(index=False)
    if fmt == "json":
        return json.dumps(records(table), indent=2) + "\n"
    if table.empty:
        return "no block has 2 or more seeds shared with scratch: no power estimate\n"
    delta = float(table["delta"].iloc[0])
    header = [
        "block",
        "seeds",
        "subjects",
        "m",
        "SD run",
        "SD subject",
        "SD seed mean",
        "upper 80 %",
        "detectable Δ (80 %)",
        f"seeds for Δ {delta:g}",
    ]
    body = [
        [
            " · ".join(str(r[k]) for k in (*GROUP_KEYS, "budget")),
            str(r["n_seeds"]),
            str(r["n_subjects"]),
            str(r["family_size"]),
            f"{r['sd_run']:.4f}",
            f"{r['sd_subject']:.4f}",
            f"{r['sd_seed_mean']:.4f}",
            f"{r['sd_seed_mean_upper']:.4f}",
            f"{r['detectable_delta']:.4f}",
            "> 100"
            if r["seeds_needed"] is None or pd.isna(r["seeds_needed"])
            else str(int(r["seeds_needed"])),
        ]
        for _, r in table.iterrows()
    ]
    note = (
        "detectable Δ: the smallest true difference to scratch that the leaderboard's test "
        "finds with 80 % power, tested among the m comparisons of its family (two-sided "
        "t-test at 0.05 / m, Holm's first step), with the SD of a per-seed mean difference at "
        "its one-sided 80 % upper confidence bound (a 2-df variance is not known); variance "
        "components of the differences to scratch, averaged over methods. No mark at 3 "
        "seeds is not evidence of no gain: it is what a Δ below the detectable one gives "
        "most of the time."
    )
    if fmt == "markdown":
        lines = markdown_rows(header, [[md_escape(row[0]), *row[1:]] for row in body])
        return "\n".join(lines) + f"\n\n{note}\n"
    return "\n".join(aligned([header, *body])) + f"\n{textwrap.fill(note, 100)}\n"


def _wide(frame: pd.DataFrame, ascii_only: bool) -> tuple[list[str], list[list[str]]]:
    budgets = sorted(frame["budget"].unique(), key=budget_order)
    header = ["method"] + [
        f"{b} (n={int(n)})" if not pd.isna(n) else str(b)
        for b, n in ((b, frame.loc[frame["budget"] == b, "n_labelled"].max()) for b in budgets)
    ]
    body = []
    for method in method_order(set(frame["method"])):
        cells = frame[frame["method"] == method].set_index("budget")
        body.append(
            [strip_controls(method)] + [cell_text(cells.loc[b], ascii_only) for b in budgets]
        )
    return header, body


def _board_label(frame: pd.DataFrame) -> str:
    first = frame.iloc[0]
    return beyond_the_study(
        str(first["encoder"]),
        str(first["setting"]),
        sorted(frame["budget"].unique(), key=budget_order),
    )


def _plain_text(frame: pd.DataFrame) -> str:
    header, body = _wide(frame, ascii_only=True)
    label = _board_label(frame)
    lines = [group_title(frame.iloc[0]) + (f"  [{label}]" if label else "")]
    lines += aligned([header, *body])
    lines.append(textwrap.fill(legend(ascii_only=True, rows=frame), 100))
    return "\n".join(lines) + "\n"


def _markdown(frame: pd.DataFrame) -> str:
    header, body = _wide(frame, ascii_only=False)
    best = {(r["method"], r["budget"]) for _, r in frame.iterrows() if r["top_set"]}
    budgets = sorted(frame["budget"].unique(), key=budget_order)
    out = io.StringIO()
    out.write(f"### {md_escape(group_title(frame.iloc[0]))}\n\n")
    label = _board_label(frame)
    if label:
        out.write(f"*{md_escape(label)}*\n\n")
    rows = [
        [
            md_escape(method),
            *(f"**{v}**" if (method, b) in best else v for v, b in zip(values, budgets)),
        ]
        for method, *values in body
    ]
    rule = "|" + "---|" + "---:|" * (len(header) - 1)
    out.write("\n".join(markdown_rows([md_escape(h) for h in header], rows, rule)) + "\n")
    out.write(f"\n{legend(ascii_only=False, rows=frame)}\n")
    return out.getvalue()
