"""Per-pathology tables: result rows that carry ``pathology`` get a mean and a Δ per group.

A synthetic store (tests/synthetic_store.py) gets a ``pathology`` column in its
``subjects.parquet`` files, as `cmrbench run` writes it; the expected numbers are computed
here with pandas from those files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_sunnybrook_e2e import TableParser

from cmrbench.reports import BootstrapConfig, Statistics, build_site, load_store
from cmrbench.store import load_stores
from support.synthetic_store import SyntheticGrid, write_synthetic_store

FAST = BootstrapConfig(n_resamples=50, seed=0)
GROUPS = ("NOR", "DCM")
GRID = SyntheticGrid(
    methods=("scratch", "mim"),
    budgets=("10",),
    seeds=(0, 1, 2),
    n_subjects=8,
    effects={"mim": 0.03},
)


def add_pathology(run_dir: Path, every_cell: bool = True) -> dict[str, str]:
    """Give each subject a group (alternating over the sorted ids) in the cells' rows."""
    files = sorted((run_dir / "cells").glob("*/subjects.parquet"))
    subjects = sorted(pd.read_parquet(files[0])["subject"].unique())
    groups = {s: GROUPS[i % len(GROUPS)] for i, s in enumerate(subjects)}
    for path in files if every_cell else files[:1]:
        rows = pd.read_parquet(path)
        rows["pathology"] = rows["subject"].map(groups)
        rows.to_parquet(path)
    return groups


@pytest.fixture(scope="module")
def store_with_pathology(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    run_dir = tmp_path_factory.mktemp("pathology") / "run"
    write_synthetic_store(run_dir, GRID)
    return run_dir, add_pathology(run_dir)


def expected_means(run_dir: Path) -> pd.DataFrame:
    """Mean DSC per method × group: per-subject means over annotated entries, then over
    seeds and the group's subjects."""
    store = load_store(run_dir)
    rows = store.subjects[store.subjects["annotated"]]
    per_subject = rows.groupby(["method", "seed", "subject", "pathology"], observed=True)[
        "dsc"
    ].mean()
    return per_subject.groupby(["method", "pathology"], observed=True).mean()


def test_pathology_table_holds_each_groups_mean_and_delta_vs_scratch(store_with_pathology):
    run_dir, groups = store_with_pathology
    store = load_store(run_dir)
    statistics = Statistics(store, FAST)
    table = statistics["pathologies"].set_index(["method", "subgroup"])
    expected = expected_means(run_dir)
    assert set(table.index) == {(m, g) for m in GRID.methods for g in GROUPS}
    for (method, group), mean in expected.items():
        assert table.loc[(method, group), "mean"] == pytest.approx(mean, abs=1e-12)
        assert table.loc[(method, group), "n_subjects"] == list(groups.values()).count(group)
        assert table.loc[(method, group), "n_seeds"] == 3
    deltas = statistics["subgroup_comparisons"]
    deltas = deltas[deltas["kind"] == "pathology"].set_index("subgroup")
    for group in GROUPS:
        assert deltas.loc[group, "method"] == "mim"
        assert deltas.loc[group, "delta"] == pytest.approx(
            expected[("mim", group)] - expected[("scratch", group)], abs=1e-12
        )
    assert set(statistics["vendors"]["subgroup"]) == {"A", "B", "C", "D"}  # vendors unchanged


def test_report_page_shows_the_groups_as_columns(store_with_pathology):
    run_dir, _ = store_with_pathology
    build_site(run_dir, run_dir / "report")
    parser = TableParser()
    parser.feed((run_dir / "report" / "pathologies.html").read_text())
    means, deltas = parser.tables[:2]
    assert [h.split("4 subjects")[0] for h in means[0][2:]] == ["DCM", "NOR"]
    assert [row[1] for row in means[1:]] == ["scratch", "mim"]
    assert [row[1] for row in deltas[1:]] == ["mim"]
    expected = expected_means(run_dir)
    assert means[2][2].startswith(f"{expected[('mim', 'DCM')]:.3f}")


def test_a_store_where_some_cells_lack_pathology_gets_no_pathology_table(tmp_path):
    run_dir = tmp_path / "run"
    write_synthetic_store(run_dir, GRID)
    add_pathology(run_dir, every_cell=False)
    store = load_store(run_dir)
    assert "pathology" not in store.subjects.columns
    assert Statistics(store, FAST)["pathologies"].empty
    build_site(run_dir, run_dir / "report")
    assert (
        "No pathology groups in these results."
        in (run_dir / "report" / "pathologies.html").read_text()
    )


def test_merging_a_run_without_pathology_adds_no_nan_group(store_with_pathology, tmp_path):
    with_groups, _ = store_with_pathology
    without = tmp_path / "other"
    write_synthetic_store(
        without,
        SyntheticGrid(
            methods=("scratch", "mim"),
            budgets=("10",),
            seeds=(0, 1, 2),
            n_subjects=8,
            dataset="mnms2",
        ),
    )
    merged = load_stores([with_groups, without])
    statistics = Statistics(merged, FAST)
    assert set(statistics["pathologies"]["subgroup"]) == set(GROUPS)
    assert set(statistics["pathologies"]["dataset"]) == {GRID.dataset}
