"""Report figures drawn with matplotlib: label efficiency, rank diagram with cliques, loss
curves, qualitative overlays.

Figures are matplotlib `Figure` objects on an Agg canvas (no pyplot, no GUI, and no
change to the process-wide backend) saved as SVG with text kept as text
(``svg.fonttype = none``, which matplotlib escapes as XML) and no date, so a rebuilt report
is byte-identical. Every string that comes from the store passes `plain` first: matplotlib
would otherwise read ``$...$`` as mathtext.
Overlays are PNG images composed in numpy (image, reference, prediction side by side).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cmrbench.reports.stats import BASELINE, TEST_SET_ONLY
from cmrbench.reports.text import strip_controls

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

SVG_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "cmrbench",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "font.family": "sans-serif",
}
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
)
BASELINE_COLOUR = "#111111"
LABEL_COLOURS = {1: (0.90, 0.10, 0.10), 2: (0.10, 0.75, 0.20), 3: (0.15, 0.35, 0.95)}
OVERLAY_ALPHA = 0.45
OVERLAY_MIN_SIZE = 128


def plain(text: object, limit: int = 60) -> str:
    """``text`` as matplotlib shows it literally (dollar signs escaped, no mathtext), cut to
    ``limit`` characters so that long names cannot push a legend off the figure; control
    characters are dropped (XML forbids them, so they would make the SVG unreadable)."""
    text = strip_controls(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def method_colours(methods: list[str]) -> dict[str, str]:
    """A fixed colour per method (scratch black), stable for a given set of names."""
    others = sorted(m for m in set(methods) if m != BASELINE)
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}
    colours[BASELINE] = BASELINE_COLOUR
    return colours


def save_svg(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as SVG (no date metadata) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="svg", metadata={"Date": None})
    return path


def _figure(width: float, height: float) -> Figure:
    """A figure to draw inside ``matplotlib.rc_context(SVG_STYLE)``; margins are set by hand
    because automatic layouts draw every figure twice (they dominate a report's build time)."""
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def label_efficiency_plot(
    points: pd.DataFrame, colours: dict[str, str], path: Path, title: str
) -> Path:
    """Mean DSC against labelled subjects (log axis), one line per method, 95 % CI bars;
    hollow markers where the interval covers the test subjects only (one run).

    ``points``: one row per method × budget with ``method, budget, n_labelled, mean,
    ci_low, ci_high`` and optionally ``scope`` (rows without a mean are skipped).
    """
    points = points.dropna(subset=["mean"])
    with matplotlib.rc_context(SVG_STYLE):
        figure = _figure(8.0, 3.8)
        axes = figure.add_axes((0.08, 0.13, 0.64, 0.77))
        methods = sorted(points["method"].unique(), key=lambda m: (m != BASELINE, m))
        dodge = np.linspace(-0.025, 0.025, max(len(methods), 1))
        handles, labels = [], []
        for offset, method in zip(dodge, methods):
            rows = points[points["method"] == method].sort_values("n_labelled")
            x = rows["n_labelled"].to_numpy(float) * 10**offset
            y = rows["mean"].to_numpy(float)
            error = np.vstack(
                [y - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - y]
            )
            style = "--" if method == BASELINE else "-"
            container = axes.errorbar(
                x,
                y,
                yerr=np.nan_to_num(error),
                color=colours[method],
                linestyle=style,
                marker="o",
                markersize=3.5,
                capsize=2,
                linewidth=1.4,
                elinewidth=0.8,
            )
            hollow = (rows["scope"] == TEST_SET_ONLY).to_numpy() if "scope" in rows else []
            if np.any(hollow):
                axes.plot(
                    x[hollow],
                    y[hollow],
                    linestyle="none",
                    marker="o",
                    markersize=5,
                    markerfacecolor="white",
                    markeredgecolor=colours[method],
                )
            handles.append(container.lines[0])
            labels.append(plain(method, 28))
        ticks = points.drop_duplicates("budget").sort_values("n_labelled")
        axes.set_xscale("log")
        axes.set_xticks(ticks["n_labelled"].to_numpy(float))
        axes.set_xticklabels(
            [
                plain(b if b != "all" else f"all ({int(n)})")
                for b, n in zip(ticks["budget"], ticks["n_labelled"])
            ]
        )
        axes.minorticks_off()
        axes.set_xlabel("labelled training subjects")
        axes.set_ylabel("mean DSC (95 % CI)")
        axes.set_title(plain(title, 110), loc="left", fontsize=10)
        axes.legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        return save_svg(figure, path)


def cd_diagram(
    mean_ranks: dict[str, float],
    cliques: list[list[str]],
    colours: dict[str, str],
    path: Path,
    title: str,
) -> Path:
    """Ranks with cliques: methods on a rank axis (1 = best, by mean DSC on shared seeds),
    cliques as bars.

    A bar joins methods, consecutive in rank, that no seed-level test of the leaderboard
    separates (`ranks.rank_block`: the marks' unit and families); it is not Nemenyi's critical
    difference.
    """
    ordered = sorted(mean_ranks, key=lambda m: mean_ranks[m])
    count = len(ordered)
    half = (count + 1) // 2
    width, label_zone = 8.0, 2.6
    with matplotlib.rc_context(SVG_STYLE):
        figure = _figure(width, 1.1 + 0.3 * half + 0.12 * len(cliques))
        axes = figure.add_axes((0.0, 0.0, 1.0, 0.86))
        axes.grid(False)
        axes.set_axis_off()
        low, high = 1.0, float(max(count, 2))
        units_per_inch = (high - low) / (width - 2 * label_zone)
        axes.plot([low, high], [0, 0], color="#333333", linewidth=1.0)
        for tick in range(1, int(high) + 1):
            axes.plot([tick, tick], [0, -0.08], color="#333333", linewidth=1.0)
            axes.text(tick, -0.14, str(tick), ha="center", va="bottom", fontsize=8)
        clique_top = 0.15
        for k, members in enumerate(cliques):
            ranks = [mean_ranks[m] for m in members]
            y = clique_top + 0.1 * k
            axes.plot(
                [min(ranks) - 0.03, max(ranks) + 0.03],
                [y, y],
                color="#444444",
                linewidth=3.0,
                solid_capstyle="round",
            )
        label_top = clique_top + 0.1 * len(cliques) + 0.2
        for i, method in enumerate(ordered):
            left = i < half
            row = i if left else count - 1 - i
            y = label_top + 0.25 * row
            x_end = low - 0.25 * units_per_inch if left else high + 0.25 * units_per_inch
            rank = mean_ranks[method]
            axes.plot(
                [rank, rank, x_end], [0, y, y], color=colours.get(method, "#333333"), linewidth=1.0
            )
            axes.text(
                x_end + (-0.05 if left else 0.05) * units_per_inch,
                y,
                f"{plain(method, 28)} ({rank:g})",
                ha="right" if left else "left",
                va="center",
                fontsize=8.5,
            )
        axes.set_xlim(low - label_zone * units_per_inch, high + label_zone * units_per_inch)
        axes.set_ylim(label_top + 0.25 * half + 0.05, -0.3)
        figure.text(0.01, 0.97, plain(title, 110), ha="left", va="top", fontsize=10)
        return save_svg(figure, path)


def loss_curve_plot(curves: dict[str, pd.DataFrame], path: Path, title: str) -> Path:
    """Pretraining loss against step, one line per pretraining job (``log.jsonl`` rows)."""
    with matplotlib.rc_context(SVG_STYLE):
        figure = _figure(8.0, 3.2)
        axes = figure.add_axes((0.08, 0.15, 0.6, 0.74))
        handles, labels = [], []
        for i, (label, log) in enumerate(sorted(curves.items())):
            if {"step", "loss"} <= set(log.columns):
                (line,) = axes.plot(
                    log["step"].to_numpy(float),
                    log["loss"].to_numpy(float),
                    color=PALETTE[i % len(PALETTE)],
                    linewidth=1.2,
                )
                handles.append(line)
                labels.append(plain(label, 36))
        axes.set_xlabel("step")
        axes.set_ylabel("pretraining loss")
        axes.set_title(plain(title, 110), loc="left", fontsize=10)
        if handles:
            axes.legend(
                handles,
                labels,
                loc="center left",
                bbox_to_anchor=(1.02, 0.5),
                frameon=False,
                fontsize=8,
            )
        return save_svg(figure, path)


def overlay_png(slices: dict[str, np.ndarray], path: Path, max_slices: int = 4) -> Path:
    """PNG grid: one row per slice, columns image | reference overlay | prediction overlay.

    ``slices``: ``image`` float32 ``(K, H, W)``, ``reference`` and ``prediction`` uint8
    ``(K, H, W)`` with labels 0 bg, 1 LV, 2 MYO, 3 RV (`cmrbench.store.read_slices`).
    """
    rows = []
    for k in range(min(max_slices, slices["image"].shape[0])):
        gray = _normalised(slices["image"][k])
        panels = [
            np.repeat(gray[..., None], 3, axis=2),
            _overlay(gray, slices["reference"][k]),
            _overlay(gray, slices["prediction"][k]),
        ]
        separator = np.ones((gray.shape[0], 2, 3))
        row = np.concatenate([panels[0], separator, panels[1], separator, panels[2]], axis=1)
        rows.append(np.concatenate([row, np.ones((2, row.shape[1], 3))], axis=0))
    grid = np.concatenate(rows, axis=0) if rows else np.ones((8, 8, 3))
    scale = max(1, OVERLAY_MIN_SIZE // max(1, slices["image"].shape[-1]))
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, np.clip(grid, 0.0, 1.0), format="png")
    return path


def _normalised(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return np.clip((image - low) / (high - low if high > low else 1.0), 0.0, 1.0)


def _overlay(gray: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for label, colour in LABEL_COLOURS.items():
        mask = labels == label
        rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * np.array(colour)
    return rgb
