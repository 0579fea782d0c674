"""Tests for cmrbench.reports.stats: scipy/statsmodels agreement, hand-computed values,
n/a handling, a known injected effect, and the false-positive rate under the null."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from cmrbench.reports import stats
from cmrbench.reports.load import load_store
from cmrbench.reports.stats import (BASELINE, Block, BootstrapConfig, budget_order, cd_cliques,
                                    clinical_agreement, compare_block, compute_statistics, holm,
                                    index_counts, nan_median_last_axis, rank_block,
                                    rank_frequencies, subject_blocks, two_level_means)
from synthetic_store import SyntheticGrid, write_synthetic_store

FAST = BootstrapConfig(n_resamples=300, seed=0)


def make_block(scores: np.ndarray, methods: list[str], key: str = "b0") -> Block:
    """A `Block` around a ``(M, S, N)`` DSC cube (views other than dsc are not needed)."""
    m, s, n = scores.shape
    return Block(key={"dataset": "d", "encoder": "e", "augmentation": "none", "setting": "default",
                      "budget": key},
                 n_labelled=10, methods=methods, seeds=list(range(s)),
                 subjects=np.array([f"S{i}" for i in range(n)]),
                 vendors=np.array(["A", "B"] * (n // 2) + ["A"] * (n % 2)),
                 seen=np.ones(n, bool), scores={"dsc": scores},
                 n_undefined={"dsc": np.zeros(m, int)}, n_entries={"dsc": np.full(m, s * n)})


def subjects_frame(rows: list[dict]) -> pd.DataFrame:
    """A long subjects table with the store's identifying columns filled in."""
    base = {"cell_key": "c0", "method": "scratch", "encoder": "e", "dataset": "d",
            "setting": "default", "augmentation": "none", "budget": "10", "n_labelled": 10,
            "seed": 0, "vendor": "A", "seen_vendor": True, "annotated": True,
            "vol_pred_ml": 1.0, "vol_ref_ml": 1.0}
    return pd.DataFrame([{**base, **row} for row in rows])


# -- building blocks -------------------------------------------------------------------


def test_holm_matches_hand_computation_on_three_pvalues():
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, max(0.03, 2·0.03) = 0.06, max(0.06, 1·0.04) = 0.06
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])


def test_holm_ignores_nan_and_equals_statsmodels():
    pvalues = np.array([0.02, np.nan, 0.04, 0.001, 0.3])
    adjusted = holm(pvalues)
    assert np.isnan(adjusted[1])
    finite = ~np.isnan(pvalues)
    np.testing.assert_allclose(adjusted[finite],
                               multipletests(pvalues[finite], method="holm")[1])


def test_wilcoxon_on_five_subjects_matches_scipy_and_exact_enumeration():
    differences = np.array([0.1, -0.2, 0.3, 0.05, 0.4])
    statistic, p = stats.wilcoxon_pvalue(differences)
    # ranks of |d|: 0.05→1, 0.1→2, 0.2→3, 0.3→4, 0.4→5; W- = 3 (only -0.2 is negative)
    assert statistic == 3.0
    ranks = np.arange(1, 6)
    extreme = sum(1 for signs in itertools.product([0, 1], repeat=5)
                  if min(ranks[np.array(signs) == 1].sum(), ranks[np.array(signs) == 0].sum()) <= 3)
    assert extreme == 10
    assert p == pytest.approx(extreme / 32) == pytest.approx(sps.wilcoxon(differences).pvalue)


def test_wilcoxon_of_identical_scores_is_not_significant():
    assert stats.wilcoxon_pvalue(np.zeros(12))[1] == 1.0
    assert np.isnan(stats.wilcoxon_pvalue(np.array([np.nan]))[1])


def test_budget_order_sorts_numbers_then_all():
    assert sorted(["all", "50", "10", "100", "15"], key=budget_order) == ["10", "15", "50", "100", "all"]


def test_index_counts_count_each_index_per_row():
    counts = index_counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 1, 2]])


def test_nan_median_matches_numpy_nanmedian():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(50, 4, 9))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(values, axis=-1)
    np.testing.assert_allclose(nan_median_last_axis(values), expected, equal_nan=True)


# -- two-level bootstrap ---------------------------------------------------------------


def explicit_two_level_mean(cube: np.ndarray, seeds: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Mean over drawn subjects of the mean over drawn seeds, one method at a time (loops)."""
    out = []
    for method in cube:
        drawn = method[seeds][:, subjects]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out.append(np.nanmean(np.nanmean(drawn, axis=0)))
    return np.array(out)


@pytest.mark.parametrize("pattern", ["complete", "missing seeds and subjects", "scattered"])
def test_two_level_means_equal_an_explicit_loop_over_resamples(pattern):
    rng = np.random.default_rng(2)
    cube = rng.normal(0.8, 0.05, size=(3, 3, 12))
    if pattern == "missing seeds and subjects":
        cube[1, 2, :] = np.nan      # a seed not run yet
        cube[:, :, 4] = np.nan      # a subject without this class
    elif pattern == "scattered":
        cube[0, 1, 3] = cube[2, 0, 7] = np.nan
    seed_index = rng.integers(0, 3, size=(40, 3))
    subject_index = rng.integers(0, 12, size=(40, 12))
    resampled = two_level_means(cube, index_counts(seed_index, 3), index_counts(subject_index, 12))
    expected = np.array([explicit_two_level_mean(cube, s, n) for s, n in zip(seed_index, subject_index)])
    np.testing.assert_allclose(resampled, expected, equal_nan=True)
    point = two_level_means(cube, np.ones((1, 3)), np.ones((1, 12)))[0]
    np.testing.assert_allclose(point, explicit_two_level_mean(cube, np.arange(3), np.arange(12)))


def test_confidence_interval_widens_with_seed_spread():
    rng = np.random.default_rng(3)
    subjects = rng.normal(0.8, 0.03, size=40)
    calm = np.stack([subjects + 0.001 * k for k in range(3)])[None]
    shaky = np.stack([subjects + 0.03 * k for k in range(3)])[None]
    config = BootstrapConfig(n_resamples=1000)
    widths = []
    for cube in (calm, shaky):
        rows, _ = stats.summarise_block(make_block(cube, [BASELINE]), config, (stats.VIEWS[0],))
        widths.append(rows[0]["ci_high"] - rows[0]["ci_low"])
    assert widths[1] > 2 * widths[0]


# -- subject scores from the long table --------------------------------------------------


def test_unannotated_classes_are_left_out_of_subject_averages():
    rows = []
    for subject, rv_annotated in (("S1", True), ("S2", False)):
        for phase in ("ED", "ES"):
            for name, dsc in (("LV", 0.9), ("MYO", 0.8), ("RV", 0.7)):
                annotated = rv_annotated or name != "RV"
                rows.append({"subject": subject, "phase": phase, "class": name, "annotated": annotated,
                             "dsc": dsc if annotated else np.nan, "hd95_mm": 2.0 if annotated else np.nan})
    block = subject_blocks(subjects_frame(rows))[0]
    assert block.scores["dsc"][0, 0].tolist() == pytest.approx([0.8, 0.85])   # S2: (0.9+0.8)/2, not /3
    assert block.scores["dsc_RV"][0, 0, 0] == pytest.approx(0.7)
    assert np.isnan(block.scores["dsc_RV"][0, 0, 1])                        # n/a, never 0
    summary, _ = stats.summarise_block(block, FAST)
    rv = next(r for r in summary if r["view"] == "dsc_RV")
    assert rv["n_subjects"] == 1 and rv["mean"] == pytest.approx(0.7)


def test_undefined_hd95_is_counted_and_not_averaged_as_zero():
    rows = [{"subject": "S1", "phase": "ED", "class": "LV", "dsc": 0.9, "hd95_mm": 4.0},
            {"subject": "S1", "phase": "ES", "class": "LV", "dsc": 0.0, "hd95_mm": np.nan},
            {"subject": "S2", "phase": "ED", "class": "LV", "dsc": 0.8, "hd95_mm": 6.0},
            {"subject": "S2", "phase": "ES", "class": "RV", "annotated": False, "dsc": np.nan,
             "hd95_mm": np.nan}]
    block = subject_blocks(subjects_frame(rows))[0]
    summary, _ = stats.summarise_block(block, FAST)
    hd95 = next(r for r in summary if r["view"] == "hd95")
    assert hd95["mean"] == pytest.approx(5.0)          # (4 + 6) / 2; the empty-mask entry is not a 0
    assert (hd95["n_undefined"], hd95["n_entries"]) == (1, 3)   # the un-annotated RV is no entry


def test_seeds_are_combined_per_subject_and_kept_per_seed():
    rows = [{"cell_key": f"c{seed}", "seed": seed, "subject": subject, "phase": "ED", "class": "LV",
             "dsc": value, "hd95_mm": 1.0}
            for seed, values in ((0, (0.6, 0.8)), (1, (0.7, 1.0))) for subject, value in zip(("S1", "S2"), values)]
    summary, per_seed = stats.summarise_block(subject_blocks(subjects_frame(rows))[0], FAST)
    dsc = next(r for r in summary if r["view"] == "dsc")
    assert dsc["mean"] == pytest.approx(np.mean([0.65, 0.9]))
    assert dsc["seed_sd"] == pytest.approx(np.std([0.7, 0.85], ddof=1))
    assert sorted((r["seed"], round(r["mean"], 6)) for r in per_seed if r["view"] == "dsc") == [(0, 0.7), (1, 0.85)]


# -- tests against scratch, ranks, cliques ------------------------------------------------


@pytest.fixture(scope="module")
def effect_store(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("effect-store")
    grid = SyntheticGrid(methods=("scratch", "simclr", "mim", "dino"), budgets=("10", "all"),
                         n_subjects=30, effects={"mim": 0.05}, unannotated_rv_every=6)
    write_synthetic_store(run_dir, grid)
    return load_store(run_dir)


def test_comparisons_equal_scipy_wilcoxon_and_statsmodels_holm_on_the_store(effect_store):
    statistics = compute_statistics(effect_store.subjects, effect_store.clinical, FAST)
    subjects = effect_store.subjects
    annotated = subjects[subjects["annotated"]]
    per_subject = annotated.groupby(["budget", "method", "seed", "subject"], observed=True)["dsc"].mean()
    seed_combined = per_subject.groupby(["budget", "method", "subject"], observed=True).mean().unstack("method")
    for budget, frame in seed_combined.groupby(level="budget"):
        methods = ["dino", "mim", "simclr"]
        pvalues = [sps.wilcoxon(frame[m] - frame["scratch"]).pvalue for m in methods]
        expected = multipletests(pvalues, method="holm")[1]
        rows = statistics.comparisons[statistics.comparisons["budget"] == budget].set_index("method")
        np.testing.assert_allclose(rows.loc[methods, "p"], pvalues)
        np.testing.assert_allclose(rows.loc[methods, "p_holm"], expected)
        np.testing.assert_allclose(rows.loc[methods, "median_diff"],
                                   [(frame[m] - frame["scratch"]).median() for m in methods])


def test_injected_effect_is_flagged_better_and_ranked_first(effect_store):
    statistics = compute_statistics(effect_store.subjects, effect_store.clinical, FAST)
    mim = statistics.comparisons[statistics.comparisons["method"] == "mim"]
    assert len(mim) == 2 and mim["significant"].all() and (mim["direction"] == "better").all()
    assert (mim["median_diff"] > 0.03).all() and (mim["ci_low"] > 0).all()
    for budget, ranks in statistics.ranks.groupby("budget"):
        assert ranks.sort_values("mean_rank")["method"].iloc[0] == "mim"
    first = statistics.rank_stability[(statistics.rank_stability["method"] == "mim")
                                      & (statistics.rank_stability["rank"] == 1)]
    assert (first["frequency"] > 0.95).all()
    cliques = statistics.cliques
    assert not cliques.groupby(["budget", "clique"])["method"].apply(
        lambda m: {"mim", "scratch"} <= set(m)).any()


def test_friedman_and_mean_ranks_match_scipy():
    rng = np.random.default_rng(4)
    base = rng.normal(0.8, 0.04, size=25)
    cube = np.stack([np.stack([base + shift + rng.normal(0, 0.01, 25) for _ in range(2)])
                     for shift in (0.0, 0.002, 0.03, -0.03)])
    methods = [BASELINE, "a", "b", "c"]
    out = rank_block(make_block(cube, methods), FAST)
    matrix = cube.mean(axis=1).T
    friedman = sps.friedmanchisquare(*matrix.T)
    assert out["friedman"][0]["statistic"] == pytest.approx(friedman.statistic)
    assert out["friedman"][0]["p"] == pytest.approx(friedman.pvalue)
    expected_ranks = sps.rankdata(-matrix, axis=1).mean(axis=0)
    assert [r["mean_rank"] for r in out["ranks"]] == pytest.approx(expected_ranks.tolist())
    pairs = list(itertools.combinations(range(4), 2))
    expected_p = holm(np.array([sps.wilcoxon(matrix[:, a] - matrix[:, b]).pvalue for a, b in pairs]))
    assert [r["p_holm"] for r in out["pairwise"]] == pytest.approx(expected_p.tolist())
    clique_sets = [set(g["method"]) for _, g in pd.DataFrame(out["cliques"]).groupby("clique")]
    assert clique_sets == [{BASELINE, "a"}]          # b is clearly best, c clearly worst


def test_cd_cliques_on_a_hand_worked_example():
    # a, b, c, d by mean rank; a–c, a–d and b–d differ, every other pair does not
    different = {frozenset(p): p in {(0, 2), (0, 3), (1, 3)} for p in itertools.combinations(range(4), 2)}
    assert cd_cliques(np.array([1.2, 1.5, 2.8, 3.9]), different) == [[0, 1], [1, 2], [2, 3]]
    everything_differs = {k: True for k in different}
    assert cd_cliques(np.array([1.2, 1.5, 2.8, 3.9]), everything_differs) == []
    nothing_differs = {k: False for k in different}
    assert cd_cliques(np.array([3.0, 1.0, 2.0, 4.0]), nothing_differs) == [[1, 2, 0, 3]]


def test_rank_frequencies_equal_an_explicit_bootstrap_loop():
    rng = np.random.default_rng(5)
    matrix = rng.normal(0.8, 0.05, size=(15, 3))
    frequencies = rank_frequencies(matrix, np.random.default_rng(9), 200)
    draws = np.random.default_rng(9).integers(0, 15, size=(200, 15))
    expected = np.zeros((3, 3))
    for draw in draws:
        order = np.argsort(-matrix[draw].mean(axis=0), kind="stable")
        for rank, method in enumerate(order):
            expected[method, rank] += 1 / 200
    np.testing.assert_allclose(frequencies, expected)
    np.testing.assert_allclose(frequencies.sum(axis=0), 1.0)


def test_block_without_scratch_is_not_tested_and_says_so():
    cube = np.random.default_rng(6).normal(0.8, 0.02, size=(2, 1, 10))
    rows = compare_block(make_block(cube, ["mim", "simclr"]), FAST)
    assert [r["method"] for r in rows] == ["mim", "simclr"]
    assert all(np.isnan(r["p"]) and not r["significant"] and "not tested" in r["note"] for r in rows)


def test_false_positive_rate_under_the_null_is_near_five_percent():
    """200 blocks where the method equals scratch in distribution; the labelled subset
    (seed) shifts both alike, as in the study's design. Wilcoxon + Holm over one method
    rejects ~Binomial(200, 0.05); the band holds 99.8 % of that distribution."""
    rng = np.random.default_rng(7)
    rejected_single, rejected_any = 0, 0
    for block in range(200):
        subject = rng.normal(0.8, 0.04, size=30)
        subset = rng.normal(0.0, 0.02, size=3)
        cube = (subject[None, None, :] + subset[None, :, None]
                + rng.normal(0.0, 0.02, size=(4, 3, 30)))
        rows = compare_block(make_block(cube, [BASELINE, "a", "b", "c"], key=str(block)), FAST)
        rejected_any += any(r["significant"] for r in rows)
        single = compare_block(make_block(cube[:2], [BASELINE, "a"], key=str(block)), FAST)
        rejected_single += single[0]["significant"]
    low, high = sps.binom.ppf(0.001, 200, 0.05), sps.binom.ppf(0.999, 200, 0.05)
    assert low <= rejected_single <= high
    assert rejected_any <= high            # Holm keeps the family-wise rate at or below 5 %


# -- clinical agreement -------------------------------------------------------------------


def test_clinical_agreement_matches_hand_computed_bias_limits_and_mae():
    base = {"dataset": "d", "encoder": "e", "augmentation": "none", "setting": "default",
            "budget": "10", "method": "mim", "quantity": "LV_EF", "unit": "%"}
    differences = {0: [2.0, -1.0, 5.0], 1: [0.0, 1.0, 2.0]}
    rows = [{**base, "seed": seed, "subject": f"S{i}", "ref": 50.0, "pred": 50.0 + d}
            for seed, values in differences.items() for i, d in enumerate(values)]
    rows.append({**base, "seed": 0, "subject": "S9", "ref": np.nan, "pred": 40.0})
    table = clinical_agreement(pd.DataFrame(rows))
    row = table.iloc[0]
    bias = [2.0, 1.0]                                     # per seed: mean of 2, -1, 5 and of 0, 1, 2
    sd = [np.std([2.0, -1.0, 5.0], ddof=1), 1.0]
    assert row["bias"] == pytest.approx(1.5)
    assert row["sd"] == pytest.approx(np.mean(sd))
    assert row["loa_low"] == pytest.approx(1.5 - 1.96 * np.mean(sd))
    assert row["loa_high"] == pytest.approx(1.5 + 1.96 * np.mean(sd))
    assert row["mae"] == pytest.approx(np.mean([8 / 3, 1.0]))
    assert row["bias_seed_sd"] == pytest.approx(np.std(bias, ddof=1))
    assert (row["n_subjects"], row["n_seeds"]) == (3, 2)  # S9 has no reference
