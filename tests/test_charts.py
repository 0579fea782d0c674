"""Tests for the challenge-report figures (cmrbench.reports.charts and .svg): every mark is
read back from the SVG and compared with hand-computed values."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmrbench.reports import agreement_charts, build_site, charts
from cmrbench.reports.stats import BootstrapConfig
from cmrbench.reports.svg import Scale, nice_ticks
from support.synthetic_store import SyntheticGrid, write_synthetic_store

NS = "{http://www.w3.org/2000/svg}"
COLOURS = {"scratch": "#000001", "mim": "#000002", "dino": "#000003", "bad\x01name": "#000004"}


def shapes(path: Path, tag: str) -> list[ElementTree.Element]:
    return list(ElementTree.parse(path).getroot().iter(f"{NS}{tag}"))


def tooltip(element: ElementTree.Element) -> str:
    found = element.find(f"{NS}title")
    return "" if found is None else found.text or ""


def test_rank_set_bars_span_the_ranks_the_tests_allow(tmp_path):
    path = charts.rank_set_chart(
        ["mim", "scratch", "dino"],
        [1.0, 2.0, 3.0],
        [1, 1, 3],
        [2, 2, 3],
        COLOURS,
        tmp_path / "sets.svg",
        "ranks",
    )
    bars = {tooltip(r): r for r in shapes(path, "rect") if tooltip(r)}
    assert set(bars) == {
        "mim: the tests allow ranks 1–2",
        "scratch: the tests allow ranks 1–2",
        "dino: the tests allow ranks 3–3",
    }
    # a set of two ranks is twice as tall (34 px per rank, ± 0.4 rank of margin) as one of one
    heights = {name.split(":")[0]: float(r.get("height")) for name, r in bars.items()}
    assert heights["mim"] == pytest.approx(34 * 1.8) and heights["dino"] == pytest.approx(34 * 0.8)
    assert bars["dino: the tests allow ranks 3–3"].get("fill") == "#000003"
    dots = [tooltip(c) for c in shapes(path, "circle")]
    assert dots == ["mim: rank 1 by mean", "scratch: rank 2 by mean", "dino: rank 3 by mean"]


def test_a_long_title_widens_the_chart_to_fit():
    title = "x" * 200
    assert charts.titled(100.0, 50.0, title).width == pytest.approx(16 + 7.4 * 200)
    assert charts.titled(2000.0, 50.0, title).width == 2000.0


def test_significance_map_colours_follow_the_separations_and_the_sign_of_delta(tmp_path):
    pairwise = pd.DataFrame(
        {
            "method_a": ["scratch", "mim", "scratch"],
            "method_b": ["mim", "dino", "dino"],
            "delta": [-0.04, 0.01, 0.03],
            "p_holm": [0.001, 0.4, 0.03],
            "separated": [True, False, True],
        }
    )
    path = charts.significance_map(
        ["mim", "dino", "scratch"], pairwise, tmp_path / "pairs.svg", "pairs"
    )
    fills = {tooltip(r): r.get("fill") for r in shapes(path, "rect") if tooltip(r)}
    assert fills["mim is better than scratch (Holm p = 0.001)"] == charts.BETTER
    assert fills["scratch is worse than mim (Holm p = 0.001)"] == charts.WORSE
    assert fills["mim is not separated from dino (Holm p = 0.4)"] == charts.NOT_SEPARATED
    # the sign of Δ decides, not the order: scratch − dino = +0.03, so scratch is the better
    assert fills["scratch is better than dino (Holm p = 0.03)"] == charts.BETTER
    assert fills["dino is worse than scratch (Holm p = 0.03)"] == charts.WORSE


def test_box_statistics_equal_hand_computed_tukey_box():
    box = charts.box_statistics(np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan]))
    # quartiles 2 and 4, IQR 2: whiskers reach the extremes within [-1, 7], so 100 is out
    assert box == {"q1": 2.0, "median": 3.0, "q3": 4.0, "low": 1.0, "high": 4.0}


def test_dot_and_box_draws_one_dot_per_scored_subject(tmp_path):
    scores = np.array([[0.8, 0.9, np.nan, 0.85], [0.7, 0.75, 0.72, 0.74]])
    path = charts.subject_dot_box(
        ["scratch", "mim"], scores, COLOURS, tmp_path / "dots.svg", "subjects"
    )
    dots = {p.get("stroke"): p.get("d").count("M") for p in shapes(path, "path")}
    assert dots == {"#000001": 3, "#000002": 4}
    medians = [tooltip(r) for r in shapes(path, "rect") if "median" in tooltip(r)]
    # numpy's linear quartiles: 0.825/0.875 and 0.715/0.7425 (printed 0.742: the float is below)
    assert medians == [
        "scratch: median 0.850, quartiles 0.825–0.875",
        "mim: median 0.730, quartiles 0.715–0.742",
    ]


def test_rank_heatmap_writes_each_rank_set_and_shades_its_middle(tmp_path):
    ranks = pd.DataFrame(
        {
            "method": ["scratch", "mim", "scratch", "mim", "dino"],
            "budget": ["10", "10", "all", "all", "all"],
            "rank": [3.0, 1.0, 2.0, 1.0, 3.0],
            "rank_low": [3, 1, 1, 1, 1],
            "rank_high": [3, 2, 3, 3, 3],
        }
    )
    path = charts.rank_heatmap(
        ["scratch", "mim", "dino"], ["10", "all"], ranks, tmp_path / "heat.svg", "ranks"
    )
    texts = [t.text for t in shapes(path, "text")]
    assert {"3", "1–2", "1–3"} <= set(texts)
    fills = {tooltip(r): r.get("fill") for r in shapes(path, "rect") if tooltip(r)}
    # rank 1 is the dark end #1e3a8a, rank 3 (the worst of three) the light end #dbeafe; the set
    # 1–2 has its middle 1.5, a quarter of the way
    assert fills["mim, budget 10: rank 1 by mean; the tests allow 1–2"] == charts._blend(
        "#1e3a8a", "#dbeafe", 0.25
    )
    # nothing separated at budget all: every method the same colour, whatever its rank by mean
    assert len({fill for name, fill in fills.items() if "budget all" in name}) == 1
    assert charts._blend("#1e3a8a", "#dbeafe", 0.0) == "#1e3a8a"
    assert charts._blend("#000000", "#ffffff", 0.5) == "#808080"


def test_delta_chart_draws_hollow_markers_where_delta_is_not_tested(tmp_path):
    rows = pd.DataFrame(
        {
            "method": ["mim", "mim", "mim"],
            "budget": ["10", "25", "all"],
            "n_labelled": [10.0, 25.0, 100.0],
            "delta": [0.03, 0.02, 0.01],
            "ci_low": [0.01, -0.01, np.nan],
            "ci_high": [0.05, 0.05, np.nan],
            "p": [0.001, 0.2, np.nan],
            "significant": [True, False, False],
            "direction": ["better", "", ""],
        }
    )
    path = charts.delta_efficiency_chart(rows, COLOURS, tmp_path / "delta.svg", "delta")
    markers = {tooltip(c): (c.get("fill"), c.get("stroke")) for c in shapes(path, "circle")}
    assert markers == {
        "mim, budget 10: Δ +0.030 [+0.010, +0.050], marked better": ("#000002", "#111827"),
        "mim, budget 25: Δ +0.020 [-0.010, +0.050]": ("#000002", "#000002"),
        "mim, budget all: Δ +0.010 (one run: no interval, not tested)": ("#fff", "#000002"),
    }


def test_bland_altman_grid_has_a_panel_per_method_and_quantity(tmp_path):
    points = pd.DataFrame(
        {
            "method": ["scratch"] * 4 + ["bad\x01name"] * 4,
            "quantity": ["LV EDV", "LV EDV", "LV EF", "LV EF"] * 2,
            "unit": ["ml", "ml", "%", "%"] * 2,
            "pred": [100.0, 120.0, 55.0, 60.0, 90.0, 130.0, 50.0, 62.0],
            "ref": [110.0, 118.0, 57.0, 58.0, 110.0, 118.0, 57.0, 58.0],
        }
    )
    agreement = pd.DataFrame(
        {
            "method": ["scratch", "scratch"],
            "quantity": ["LV EDV", "LV EF"],
            "bias": [-4.0, 0.0],
            "loa_low": [-20.0, -4.0],
            "loa_high": [12.0, 4.0],
        }
    )
    path = agreement_charts.bland_altman_grid(
        points, agreement, COLOURS, tmp_path / "ba.svg", "agreement"
    )
    text = path.read_text()
    assert "\x01" not in text
    dot_paths = [p for p in shapes(path, "path")]
    assert len(dot_paths) == 4  # 2 methods × 2 quantities, 2 points each
    assert all(p.get("d").count("M") == 2 for p in dot_paths)
    titles = [tooltip(line) for line in shapes(path, "line") if tooltip(line)]
    assert "scratch LV EDV: bias -4.00" in titles
    assert "scratch LV EF: limits of agreement -4.00 to 4.00" in titles


def test_scale_and_ticks_match_hand_values():
    assert Scale(0.0, 1.0, 100.0, 0.0)(np.array([0.0, 0.25, 1.0])).tolist() == [100.0, 75.0, 0.0]
    assert Scale(10.0, 1000.0, 0.0, 200.0, log=True)(100.0) == pytest.approx(100.0)
    # a span of 1 in about 4 steps: 0.25 rounds up to the next 1-2-5 step, 0.5
    assert nice_ticks(0.0, 1.0).tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert nice_ticks(0.0, 1.0, count=8).tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(-13.0, 27.0).tolist() == pytest.approx([-10.0, 0.0, 10.0, 20.0])


def test_site_shows_the_ranking_figures_per_block_and_board(tmp_path):
    grid = SyntheticGrid(
        methods=("scratch", "mim", "dino"),
        budgets=("10", "all"),
        n_subjects=12,
        effects={"mim": 0.05},
    )
    write_synthetic_store(tmp_path / "store", grid)
    build_site(tmp_path / "store", tmp_path / "site", BootstrapConfig(n_resamples=100))
    details = (tmp_path / "site" / "details.html").read_text()
    index = (tmp_path / "site" / "index.html").read_text()
    figures = re.findall(r'src="(plots/[^"]+\.svg)"', details + index)
    kinds = {name.split("/")[1].split("-")[0] for name in figures}
    assert {"cd", "ranks", "pairs", "subjects", "delta", "rank"} <= kinds
    for name in figures:
        ElementTree.parse(tmp_path / "site" / name)  # every figure is well-formed XML
