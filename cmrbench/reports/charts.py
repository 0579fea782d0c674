"""The challenge-report figures (challengeR practice; Wiesenfarth et al., Sci Rep 2021) as SVG.

Per block (one budget of one dataset × encoder × setting × augmentation):
- `rank_set_chart`: each method's rank and the ranks the seed-level tests allow it;
- `significance_map`: which pairs of methods the seed-level tests separate (`ranks.pairwise`);
- `subject_dot_box`: every test subject's score (mean over the method's seeds) with a box.
Per group (one board, all budgets):
- `rank_heatmap`: the ranks each method can take at each budget;
- `delta_efficiency_chart`: Δ vs scratch with its simultaneous CI against labelled subjects.
Every figure that separates or orders methods reads the tables of the leaderboard's own tests,
so none can separate what the marks do not. The clinical page's Bland–Altman panels are in
`cmrbench.reports.agreement_charts`.

All are drawn with `cmrbench.reports.svg`, so a report of 1,000 cells draws hundreds of them
in seconds. Inputs are plain arrays and tables from `cmrbench.reports.stats`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmrbench.reports.svg import (
    AXIS_GREY,
    Scale,
    Svg,
    axes_frame,
    nice_ticks,
    padded_range,
    tick_label,
)

BETTER, WORSE, NOT_SEPARATED = "#1d4ed8", "#f59e0b", "#e5e7eb"
LABEL_WIDTH, TITLE_HEIGHT = 110.0, 26.0
DOT_RADIUS = 1.8
TITLE_CHAR_WIDTH = 7.4


def titled(width: float, height: float, title: str) -> Svg:
    """A chart of at least ``width`` × ``height`` px with ``title`` as its heading, widened
    so the heading fits (about 7.4 px per character of 12 px bold text, generously)."""
    svg = Svg(max(width, 16 + TITLE_CHAR_WIDTH * len(title)), height, title)
    svg.text(8, 17, title, size=12, bold=True)
    return svg


def rank_set_chart(
    methods: list[str],
    ranks: list[float],
    lows: list[int],
    highs: list[int],
    colours: dict[str, str],
    path: Path,
    title: str,
) -> Path:
    """Rank sets: one column per method (ordered by rank), a bar over the ranks the seed-level
    tests allow it (``lows``–``highs``, `ranks.rank_block`) and a dot at its rank by mean. A
    block where no test separates anything draws every bar over all ranks."""
    count = len(methods)
    cell = 34.0
    width, height = LABEL_WIDTH + cell * count + 20, TITLE_HEIGHT + cell * count + 70
    svg = titled(width, height, title)
    x = Scale(0.5, count + 0.5, LABEL_WIDTH, LABEL_WIDTH + cell * count)
    y = Scale(0.5, count + 0.5, TITLE_HEIGHT, TITLE_HEIGHT + cell * count)
    axes_frame(svg, x, y, None, np.arange(1, count + 1))
    svg.text(
        LABEL_WIDTH - 30,
        TITLE_HEIGHT + cell * count / 2,
        "rank",
        size=10,
        anchor="middle",
        rotate=True,
    )
    for column, method in enumerate(methods, start=1):
        cx, low, high = float(x(column)), lows[column - 1], highs[column - 1]
        svg.rect(
            cx - 0.22 * cell,
            float(y(low - 0.4)),
            0.44 * cell,
            float(y(high + 0.4) - y(low - 0.4)),
            colours[method],
            title=f"{method}: the tests allow ranks {low}–{high}",
        )
        svg.circle(
            cx,
            float(y(ranks[column - 1])),
            4.0,
            "#111827",
            title=f"{method}: rank {ranks[column - 1]:g} by mean",
        )
        svg.text(cx + 3, TITLE_HEIGHT + cell * count + 6, method, size=9, anchor="end", rotate=True)
    return svg.save(path)


def significance_map(methods: list[str], pairwise: pd.DataFrame, path: Path, title: str) -> Path:
    """Pairwise map: the cell in row A, column B is blue when a test separates A and B and A is
    the better (the sign of the pair's Δ), amber when separated and A is the worse, grey when
    not separated; methods in the order given (by rank).

    ``pairwise``: ``method_a, method_b, delta, p_holm, separated`` (`ranks.pairwise_board`).
    """
    count = len(methods)
    cell = 26.0
    width, height = LABEL_WIDTH + cell * count + 20, TITLE_HEIGHT + cell * count + 90
    svg = titled(width, height, title)
    tests: dict[tuple[str, str], tuple[float, bool, float]] = {}
    pairs = pairwise[["method_a", "method_b", "p_holm", "separated", "delta"]]
    for first, second, p_holm, separated, delta in pairs.itertuples(index=False, name=None):
        tests[(first, second)] = (float(p_holm), bool(separated), float(delta))
        tests[(second, first)] = (float(p_holm), bool(separated), -float(delta))
    for i, a in enumerate(methods):
        top = TITLE_HEIGHT + i * cell
        svg.text(LABEL_WIDTH - 6, top + cell / 2 + 4, a, size=9, anchor="end")
        for j, b in enumerate(methods):
            left = LABEL_WIDTH + j * cell
            if i == j:
                svg.rect(left, top, cell - 2, cell - 2, "#fff", stroke=AXIS_GREY)
                continue
            p_holm, separated, delta = tests.get((a, b), (np.nan, False, np.nan))
            fill = (BETTER if delta > 0 else WORSE) if separated else NOT_SEPARATED
            verdict = (
                ("is better than" if delta > 0 else "is worse than")
                if separated
                else "is not separated from"
            )
            test = "not tested: one run" if np.isnan(p_holm) else f"Holm p = {tick_label(p_holm)}"
            svg.rect(left, top, cell - 2, cell - 2, fill, title=f"{a} {verdict} {b} ({test})")
    for j, b in enumerate(methods):
        svg.text(
            LABEL_WIDTH + j * cell + cell / 2,
            TITLE_HEIGHT + count * cell + 6,
            b,
            size=9,
            anchor="end",
            rotate=True,
        )
    legend_y = height - 12
    for offset, (fill, label) in enumerate(
        ((BETTER, "row better"), (WORSE, "row worse"), (NOT_SEPARATED, "not separated"))
    ):
        svg.rect(8 + offset * 95, legend_y - 9, 10, 10, fill)
        svg.text(22 + offset * 95, legend_y, label, size=9)
    return svg.save(path)


def box_statistics(values: np.ndarray) -> dict[str, float]:
    """Tukey's box of the finite ``values``: quartiles (numpy's linear interpolation) and
    whiskers at the most extreme values within 1.5 IQR of the box."""
    finite = values[np.isfinite(values)]
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    reach = 1.5 * (q3 - q1)
    inside = finite[(finite >= q1 - reach) & (finite <= q3 + reach)]
    return {
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "low": float(inside.min()),
        "high": float(inside.max()),
    }


def subject_dot_box(
    methods: list[str],
    scores: np.ndarray,
    colours: dict[str, str],
    path: Path,
    title: str,
    axis_label: str = "DSC (mean over seeds)",
) -> Path:
    """Dot-and-box plot: every test subject's score per method (jittered dots) over a box of
    its quartiles and 1.5-IQR whiskers.

    ``scores`` ``(M, N)``: subject scores per method, NaN where missing.
    """
    count = len(methods)
    column = 62.0
    plot_top, plot_height = TITLE_HEIGHT + 6, 190.0
    width, height = 60 + column * count + 20, plot_top + plot_height + 60
    svg = titled(width, height, title)
    low, high = padded_range(scores)
    y = Scale(low, high, plot_top + plot_height, plot_top)
    x = Scale(0.5, count + 0.5, 60, 60 + column * count)
    axes_frame(svg, x, y, None, nice_ticks(low, high))
    svg.text(14, plot_top + plot_height / 2, axis_label, size=10, anchor="middle", rotate=True)
    jitter = (np.random.default_rng(0).random(int(scores.shape[1])) - 0.5) * 0.45 * column
    for index, method in enumerate(methods):
        centre = float(x(index + 1))
        values = scores[index]
        if not np.isfinite(values).any():
            continue
        box = box_statistics(values)
        half = 0.3 * column
        svg.line(centre, float(y(box["low"])), centre, float(y(box["high"])), "#4b5563")
        svg.rect(
            centre - half,
            float(y(box["q3"])),
            2 * half,
            float(y(box["q1"]) - y(box["q3"])),
            "none",
            stroke="#4b5563",
            title=f"{method}: median {box['median']:.3f}, "
            f"quartiles {box['q1']:.3f}–{box['q3']:.3f}",
        )
        svg.line(
            centre - half,
            float(y(box["median"])),
            centre + half,
            float(y(box["median"])),
            "#111827",
            2.0,
        )
        svg.dots(centre + jitter, y(values), DOT_RADIUS, colours[method])
        svg.text(centre, plot_top + plot_height + 14, method, size=9, anchor="middle")
    return svg.save(path)


def rank_heatmap(
    methods: list[str], budgets: list[str], ranks: pd.DataFrame, path: Path, title: str
) -> Path:
    """The ranks each method (rows) can take at each budget (columns): the cell reads
    ``low–high`` (one number when the tests pin it down) and is shaded by the middle of the
    set, darker being better, so a budget where no test separates anything is one flat
    colour; blank where the method was not ranked.

    ``ranks``: ``method, budget, rank, rank_low, rank_high`` (`ranks.rank_block`).
    """
    cell_w, cell_h = 58.0, 24.0
    width = LABEL_WIDTH + cell_w * len(budgets) + 20
    height = TITLE_HEIGHT + 18 + cell_h * len(methods) + 12
    svg = titled(width, height, title)
    columns = ["method", "budget", "rank_low", "rank_high", "rank"]
    lookup = {
        (m, b): (int(low), int(high), float(rank))
        for m, b, low, high, rank in ranks[columns].itertuples(index=False, name=None)
    }
    worst = max(len(methods), 2)
    for j, budget in enumerate(budgets):
        svg.text(
            LABEL_WIDTH + j * cell_w + cell_w / 2,
            TITLE_HEIGHT + 12,
            budget,
            size=9,
            anchor="middle",
        )
    for i, method in enumerate(methods):
        top = TITLE_HEIGHT + 18 + i * cell_h
        svg.text(LABEL_WIDTH - 6, top + cell_h / 2 + 4, method, size=9, anchor="end")
        for j, budget in enumerate(budgets):
            if (method, budget) not in lookup:
                continue
            low, high, rank = lookup[(method, budget)]
            shade = ((low + high) / 2 - 1) / (worst - 1)  # 0 = best
            fill = _blend("#1e3a8a", "#dbeafe", min(max(shade, 0.0), 1.0))
            label = str(low) if low == high else f"{low}–{high}"
            svg.rect(
                LABEL_WIDTH + j * cell_w,
                top,
                cell_w - 2,
                cell_h - 2,
                fill,
                title=f"{method}, budget {budget}: rank {rank:g} by mean; the tests allow {label}",
            )
            svg.text(
                LABEL_WIDTH + j * cell_w + cell_w / 2,
                top + cell_h / 2 + 4,
                label,
                size=9,
                anchor="middle",
                colour="#fff" if shade < 0.5 else "#111827",
            )
    return svg.save(path)


def delta_efficiency_chart(
    comparisons: pd.DataFrame, colours: dict[str, str], path: Path, title: str
) -> Path:
    """Δ vs scratch (mean DSC difference with its simultaneous 95 % CI over the leaderboard)
    against labelled subjects on a log axis, one line per method; hollow markers where Δ is
    not tested (one run: no interval), a black ring where the leaderboard marks it; a dashed
    line at Δ = 0.

    ``comparisons``: ``method, budget, n_labelled, delta, ci_low, ci_high, p, significant``.
    """
    rows = comparisons.dropna(subset=["delta", "n_labelled"])
    rows = rows[rows["n_labelled"] > 0]
    width, height = 620.0, 300.0
    left, right, top, bottom = 60.0, 470.0, TITLE_HEIGHT + 8, 250.0
    svg = titled(width, height, title)
    if rows.empty:
        svg.text(left, (top + bottom) / 2, "no comparison with scratch in this board", size=11)
        return svg.save(path)
    budgets = rows.drop_duplicates("budget").sort_values("n_labelled")
    n_low, n_high = float(budgets["n_labelled"].min()), float(budgets["n_labelled"].max())
    x = Scale(n_low / 1.25, n_high * 1.25, left, right, log=True)
    low, high = padded_range(
        np.concatenate(
            [
                rows["ci_low"].to_numpy(float),
                rows["ci_high"].to_numpy(float),
                rows["delta"].to_numpy(float),
            ]
        ),
        include=(0.0,),
    )
    y = Scale(low, high, bottom, top)
    axes_frame(
        svg,
        x,
        y,
        budgets["n_labelled"].to_numpy(float),
        nice_ticks(low, high),
        [str(b) for b in budgets["budget"]],
    )
    svg.line(left, float(y(0.0)), right, float(y(0.0)), "#6b7280", 1.0, dash="4 3")
    svg.text(
        14, (top + bottom) / 2, "Δ DSC vs scratch (95 % CI)", size=10, anchor="middle", rotate=True
    )
    svg.text(
        (left + right) / 2, bottom + 28, "labelled training subjects", size=10, anchor="middle"
    )
    methods = list(dict.fromkeys(rows["method"]))
    for number, method in enumerate(methods):
        mine = rows[rows["method"] == method].sort_values("n_labelled")
        dodge = 1.0 + 0.012 * (number - (len(methods) - 1) / 2)
        xs = x(mine["n_labelled"].to_numpy(float) * dodge)
        ys = y(mine["delta"].to_numpy(float))
        colour = colours[method]
        for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
            svg.line(float(x0), float(y0), float(x1), float(y1), colour, 1.4)
        for px, py, row in zip(xs, ys, mine.itertuples(index=False)):
            tested = np.isfinite(row.p)
            if tested:
                svg.line(float(px), float(y(row.ci_low)), float(px), float(y(row.ci_high)), colour)
            mark = f", marked {row.direction}" if row.significant else ""
            svg.circle(
                float(px),
                float(py),
                3.5,
                colour if tested else "#fff",
                stroke="#111827" if row.significant else colour,
                title=f"{method}, budget {row.budget}: Δ {row.delta:+.3f} "
                + (
                    f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]{mark}"
                    if tested
                    else "(one run: no interval, not tested)"
                ),
            )
        svg.rect(right + 20, top + 16 * number, 10, 10, colour)
        svg.text(right + 34, top + 16 * number + 9, method, size=10)
    return svg.save(path)


def _blend(dark: str, light: str, fraction: float) -> str:
    """The colour ``fraction`` of the way from ``dark`` to ``light`` (hex ``#rrggbb``)."""
    a = np.array([int(dark[k : k + 2], 16) for k in (1, 3, 5)], dtype=float)
    b = np.array([int(light[k : k + 2], 16) for k in (1, 3, 5)], dtype=float)
    return "#" + "".join(f"{int(round(v)):02x}" for v in a + (b - a) * fraction)
