"""Tests for cmrbench.reports.stats: the run-level test and intervals against scipy,
statsmodels and a hand-computed example, null / power / coverage simulations with a
run-level term, n/a handling, ranks on shared seeds, and clinical agreement."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests

from cmrbench.reports.stats import CATALOGUE, Statistics
from cmrbench.reports.stats.augmentation import augmentation_vs_ssp
from cmrbench.reports.stats.blocks import BASELINE, BlockScores, budget_order, subject_blocks
from cmrbench.reports.stats.clinical import clinical_agreement
from cmrbench.reports.stats.comparisons import COMPARED_VIEWS, compare_block
from cmrbench.reports.stats.efficiency import across_blocks
from cmrbench.reports.stats.estimates import (BootstrapConfig, holm, run_level_estimates,
                                              wilcoxon_pvalue)
from cmrbench.reports.stats.leaderboard import leaderboard_table, summarise_block
from cmrbench.reports.stats.power import detectable_difference, seeds_needed
from cmrbench.reports.stats.ranks import (cd_cliques, index_counts, kendall_tau_b, rank_block,
                                          rank_stability, resampled_mean_ranks)
from cmrbench.reports.stats.subgroups import vendor_gap
from cmrbench.store import load_store
from support.synthetic_store import SyntheticGrid, write_synthetic_store

FAST = BootstrapConfig(n_resamples=300, seed=0)


def make_block(scores: np.ndarray, methods: list[str], key: str = "b0") -> BlockScores:
    """A `BlockScores` around a ``(M, S, N)`` DSC cube (views other than dsc are not needed)."""
    m, s, n = scores.shape
    return BlockScores(key={"dataset": "d", "encoder": "e", "augmentation": "none", "setting": "default",
                      "budget": key},
                 n_labelled=10, methods=methods, seeds=list(range(s)),
                 subjects=np.array([f"S{i}" for i in range(n)]),
                 meta={"vendor": np.array(["A", "B"] * (n // 2) + ["A"] * (n % 2)),
                       "seen_vendor": np.ones(n, bool)},
                 scores={"dsc": scores},
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
    statistic, p = wilcoxon_pvalue(differences)
    # ranks of |d|: 0.05→1, 0.1→2, 0.2→3, 0.3→4, 0.4→5; W- = 3 (only -0.2 is negative)
    assert statistic == 3.0
    ranks = np.arange(1, 6)
    extreme = sum(1 for signs in itertools.product([0, 1], repeat=5)
                  if min(ranks[np.array(signs) == 1].sum(), ranks[np.array(signs) == 0].sum()) <= 3)
    assert extreme == 10
    assert p == pytest.approx(extreme / 32) == pytest.approx(sps.wilcoxon(differences).pvalue)


@pytest.mark.parametrize("n", [5, 14, 140])
def test_wilcoxon_of_identical_scores_gives_p_one_for_any_number_of_subjects(n):
    assert wilcoxon_pvalue(np.zeros(n)) == (0.0, 1.0)      # scipy gives NaN from n = 14
    assert np.isnan(wilcoxon_pvalue(np.array([np.nan]))[1])


def test_budget_order_sorts_numbers_then_all():
    assert sorted(["all", "50", "10", "100", "15"], key=budget_order) == ["10", "15", "50", "100", "all"]


def test_index_counts_count_each_index_per_row():
    counts = index_counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 1, 2]])


# -- the run-level estimate ----------------------------------------------------------------


def test_run_level_test_on_a_hand_computed_paired_t_example():
    # 3 seeds × 2 subjects; subject means are equal (0.04, 0.04), so the subject term is 0
    differences = np.array([[0.01, 0.03], [0.04, 0.02], [0.07, 0.07]])
    # per-seed means 0.02, 0.03, 0.07: mean 0.04, SD sqrt((4 + 1 + 9)e-4 / 2) = sqrt(7e-4)
    standard_error = np.sqrt(7e-4 / 3)
    t = 0.04 / standard_error                                   # 2.6186
    out = run_level_estimates(differences)
    assert out["estimate"] == pytest.approx(0.04)
    assert out["standard_error"] == pytest.approx(standard_error)
    assert out["df"] == 2
    assert out["p"] == pytest.approx(1 - t / np.sqrt(t ** 2 + 2))   # t on 2 df in closed form
    assert out["ci_low"] == pytest.approx(0.04 - 4.302652729911275 * standard_error)
    assert out["ci_high"] == pytest.approx(0.04 + 4.302652729911275 * standard_error)
    # residuals ±0.01 in the first two seeds: MS_residual = 4e-4 / 2; seed term (MS_seed − MS_res) / N
    assert out["var_residual"] == pytest.approx(2e-4)
    assert out["var_run"] == pytest.approx((2 * 7e-4 - 2e-4) / 2)
    assert out["var_subject"] == 0


def test_without_a_subject_term_it_is_scipys_paired_t_test_on_per_seed_means():
    rng = np.random.default_rng(11)
    scratch = rng.normal(0.8, 0.05, size=(4, 25))
    method = scratch + rng.normal(0.01, 0.01, size=(4, 1)) + rng.normal(0, 0.02, size=(4, 25))
    differences = method - scratch
    differences -= differences.mean(axis=0) - differences.mean()      # equal subject means
    out = run_level_estimates(differences)
    seed_means = differences.mean(axis=1)
    expected = sps.ttest_1samp(seed_means, 0.0)
    interval = expected.confidence_interval(0.95)
    assert out["p"] == pytest.approx(expected.pvalue)
    assert out["statistic"] == pytest.approx(expected.statistic)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((interval.low, interval.high))


def test_variance_of_the_estimate_equals_statsmodels_two_way_anova_mean_squares():
    rng = np.random.default_rng(12)
    seeds, subjects = 3, 20
    values = (rng.normal(0, 0.01, (seeds, 1)) + rng.normal(0, 0.03, (1, subjects))
              + rng.normal(0, 0.01, (seeds, subjects)))
    frame = pd.DataFrame({"d": values.ravel(), "seed": np.repeat(np.arange(seeds), subjects),
                          "subject": np.tile(np.arange(subjects), seeds)})
    table = anova_lm(smf.ols("d ~ C(seed) + C(subject)", data=frame).fit())
    ms_seed, ms_subject, ms_residual = table["mean_sq"].to_numpy()
    assert ms_subject > ms_residual                       # the subject term is in play
    out = run_level_estimates(values)
    variance = (ms_seed + ms_subject - ms_residual) / (seeds * subjects)
    assert out["standard_error"] == pytest.approx(np.sqrt(variance))
    assert out["var_residual"] == pytest.approx(ms_residual)
    assert out["var_subject"] == pytest.approx((ms_subject - ms_residual) / seeds)
    assert out["p"] == pytest.approx(2 * sps.t.sf(abs(values.mean()) / np.sqrt(variance), seeds - 1))


def test_one_seed_gives_a_test_set_interval_and_one_subject_none():
    values = np.array([[0.80, 0.84, 0.90]])
    out = run_level_estimates(values)
    mean, error = values.mean(), values.std(ddof=1) / np.sqrt(3)
    assert out["df"] == 2 and out["standard_error"] == pytest.approx(error)
    assert out["ci_high"] == pytest.approx(mean + sps.t.ppf(0.975, 2) * error)
    single = run_level_estimates(np.array([[0.8], [0.9]]))
    assert single["estimate"] == pytest.approx(0.85)
    assert np.isnan(single["ci_low"]) and np.isnan(single["ci_high"]) and np.isnan(single["p"])


def test_all_zero_differences_are_identical_to_scratch_with_p_one():
    cube = np.random.default_rng(13).normal(0.8, 0.02, size=(1, 3, 140))
    row = compare_block(make_block(np.concatenate([cube, cube]), [BASELINE, "copy"]), FAST)[0]
    assert row["p"] == 1.0 and row["delta"] == 0.0 and row["wilcoxon_p"] == 1.0
    assert row["note"] == "identical to scratch" and row["direction"] == ""


# -- comparisons with scratch ---------------------------------------------------------------


def test_a_single_seed_block_carries_no_mark_and_says_why():
    rng = np.random.default_rng(14)
    scratch = rng.normal(0.8, 0.03, size=(1, 1, 40))
    better = scratch + 0.05 + rng.normal(0, 0.01, size=(1, 1, 40))
    row = compare_block(make_block(np.concatenate([scratch, better]), [BASELINE, "mim"]), FAST)[0]
    assert row["note"] == "1 run: not tested against training variability"
    assert np.isnan(row["p"]) and not row["significant"] and row["direction"] == ""
    assert row["scope"] == "test set only" and row["ci_low"] > 0.04       # interval still shown
    assert row["wilcoxon_p"] < 1e-6                      # the secondary column still says it


def test_one_test_subject_gives_no_interval_and_no_test():
    cube = np.array([[[0.80], [0.82], [0.81]], [[0.85], [0.86], [0.84]]])
    row = compare_block(make_block(cube, [BASELINE, "mim"]), FAST)[0]
    assert row["delta"] == pytest.approx(0.04)
    assert np.isnan(row["ci_low"]) and np.isnan(row["p"]) and row["note"] == "1 test subject: no interval"


def test_skewed_differences_are_marked_in_the_direction_of_the_mean():
    """Many tiny losses and a few large gains: the median is negative, the mean positive."""
    rng = np.random.default_rng(15)
    subject = rng.normal(0.8, 0.03, size=140)
    gain = np.where(np.arange(140) < 25, 0.10, -0.004)        # mean +0.015, median −0.004
    scratch = subject[None, None, :] + rng.normal(0, 0.002, size=(1, 5, 1))
    method = scratch + gain + rng.normal(0, 0.001, size=(1, 5, 140))
    row = compare_block(make_block(np.concatenate([scratch, method]), [BASELINE, "x"]), FAST)[0]
    assert row["median_diff"] < 0 < row["delta"]
    assert row["significant"] and row["direction"] == "better"


def test_comparisons_holm_correct_within_the_block_and_keep_wilcoxon_secondary():
    rng = np.random.default_rng(16)
    base = rng.normal(0.8, 0.03, size=(1, 3, 30)) + rng.normal(0, 0.01, size=(1, 3, 1))
    cube = np.concatenate([base + shift + rng.normal(0, 0.005, size=(1, 3, 1))
                           + rng.normal(0, 0.01, size=(1, 3, 30)) for shift in (0.0, 0.03, 0.0, -0.03)])
    rows = compare_block(make_block(cube, [BASELINE, "a", "b", "c"]), FAST)
    p = np.array([r["p"] for r in rows])
    np.testing.assert_allclose([r["p_holm"] for r in rows], multipletests(p, method="holm")[1])
    wilcoxon = [sps.wilcoxon((cube[i] - cube[0]).mean(axis=0)).pvalue for i in (1, 2, 3)]
    np.testing.assert_allclose([r["wilcoxon_p"] for r in rows], wilcoxon)
    np.testing.assert_allclose([r["wilcoxon_p_holm"] for r in rows],
                               multipletests(wilcoxon, method="holm")[1])
    for row, i in zip(rows, (1, 2, 3)):
        assert row["delta"] == pytest.approx((cube[i] - cube[0]).mean())
        assert (row["p"] < 0.05) == (row["ci_low"] > 0 or row["ci_high"] < 0)   # one estimand


def test_block_without_scratch_is_not_tested_and_says_so():
    cube = np.random.default_rng(6).normal(0.8, 0.02, size=(2, 1, 10))
    rows = compare_block(make_block(cube, ["mim", "simclr"]), FAST)
    assert [r["method"] for r in rows] == ["mim", "simclr"]
    assert all(np.isnan(r["p"]) and not r["significant"] and "not tested" in r["note"] for r in rows)


# -- simulations with a run-level term --------------------------------------------------------


def simulated_blocks(rng: np.random.Generator, n_blocks: int, seeds: int, run_sd: float,
                     effect: float = 0.0) -> list[np.ndarray]:
    """``(2, S, 140)`` DSC cubes (scratch, method) with realistic spreads: subject ability SD
    0.04 (shared by both methods), labelled-subset effect SD 0.02 per seed (shared), each
    training run's own offset SD ``run_sd``, and subject × run noise SD 0.02."""
    cubes = []
    for _ in range(n_blocks):
        subject = rng.normal(0.80, 0.04, size=(1, 1, 140))
        subset = rng.normal(0.0, 0.02, size=(1, seeds, 1))
        runs = rng.normal(0.0, run_sd, size=(2, seeds, 1))
        cube = subject + subset + runs + rng.normal(0.0, 0.02, size=(2, seeds, 140))
        cube[1] += effect
        cubes.append(cube)
    return cubes


@pytest.mark.parametrize("run_sd", [0.005, 0.01])
def test_null_rejection_rate_is_nominal_with_a_run_level_term_and_wilcoxon_fails(run_sd):
    """300 blocks, 3 seeds, 140 subjects, method equal to scratch in distribution but every
    training run with its own offset: the run-level test rejects 2–8 %; the subject-level
    Wilcoxon (the old primary test) rejects far more, because it treats the two trained
    models as the thing compared."""
    rng = np.random.default_rng(17)
    rows = [compare_block(make_block(cube, [BASELINE, "m"], key=str(k)), FAST)[0]
            for k, cube in enumerate(simulated_blocks(rng, 300, 3, run_sd))]
    primary = np.mean([r["significant"] for r in rows])
    wilcoxon = np.mean([r["wilcoxon_p_holm"] < 0.05 for r in rows])
    assert 0.02 <= primary <= 0.08
    assert wilcoxon > 0.3


def test_power_for_a_true_gain_of_0_04_with_three_seeds_is_at_least_0_6():
    rng = np.random.default_rng(18)
    rows = [compare_block(make_block(cube, [BASELINE, "m"], key=str(k)), FAST)[0]
            for k, cube in enumerate(simulated_blocks(rng, 200, 3, 0.01, effect=0.04))]
    assert np.mean([r["significant"] and r["direction"] == "better" for r in rows]) >= 0.6


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [3, 5])
def test_intervals_cover_the_true_mean_and_difference_at_least_92_percent(seeds):
    rng = np.random.default_rng(19)
    for run_sd in (0.005, 0.01):
        cubes = np.stack(simulated_blocks(rng, 1000, seeds, run_sd, effect=0.02))
        level = run_level_estimates(cubes[:, 0])       # true mean 0.80 over subsets, runs, subjects
        gain = run_level_estimates(cubes[:, 1] - cubes[:, 0])
        assert np.mean((level["ci_low"] <= 0.80) & (0.80 <= level["ci_high"])) >= 0.92
        assert np.mean((gain["ci_low"] <= 0.02) & (0.02 <= gain["ci_high"])) >= 0.92


def test_detectable_difference_matches_simulated_power():
    """The Δ `detectable_difference` returns is detected about 80 % of the time."""
    rng = np.random.default_rng(20)
    var_run, var_subject, var_residual = 2e-4, 0.0, 8e-4
    delta = detectable_difference(var_run, var_subject, var_residual, 3, 140)
    values = (delta + rng.normal(0, np.sqrt(var_run), (4000, 3, 1))
              + rng.normal(0, np.sqrt(var_residual), (4000, 3, 140)))
    assert np.mean(run_level_estimates(values)["p"] < 0.05) == pytest.approx(0.8, abs=0.03)
    assert seeds_needed(var_run, var_subject, var_residual, 140, delta) == 3
    assert seeds_needed(var_run, var_subject, var_residual, 140, delta / 2) > 3


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
    summary, _ = summarise_block(block, FAST)
    rv = next(r for r in summary if r["view"] == "dsc_RV")
    assert rv["n_subjects"] == 1 and rv["mean"] == pytest.approx(0.7)


@pytest.mark.parametrize("worst_case", [None, 400.0])
def test_undefined_hd95_counts_as_the_field_of_view_diagonal_and_is_counted(worst_case):
    rows = [{"subject": "S1", "phase": "ED", "class": "LV", "dsc": 0.9, "hd95_mm": 4.0},
            {"subject": "S1", "phase": "ES", "class": "LV", "dsc": 0.0, "hd95_mm": np.nan},
            {"subject": "S2", "phase": "ED", "class": "LV", "dsc": 0.8, "hd95_mm": 6.0},
            {"subject": "S2", "phase": "ES", "class": "RV", "annotated": False, "dsc": np.nan,
             "hd95_mm": np.nan}]
    frame = subjects_frame(rows)
    if worst_case is not None:
        frame["hd95_worst_mm"] = worst_case
    summary, _ = summarise_block(subject_blocks(frame)[0], FAST)
    hd95 = next(r for r in summary if r["view"] == "hd95")
    # with the diagonal: S1 = (4 + 400) / 2, S2 = 6; without it the entry is left out
    expected = np.mean([(4.0 + 400.0) / 2, 6.0]) if worst_case else 5.0
    assert hd95["mean"] == pytest.approx(expected)                 # never averaged as 0
    assert (hd95["n_undefined"], hd95["n_entries"]) == (1, 3)   # the un-annotated RV is no entry


def test_the_store_gives_each_cell_its_field_of_view_diagonal(tmp_path):
    write_synthetic_store(tmp_path, SyntheticGrid(methods=("scratch",), budgets=("10",), seeds=(0,),
                                                  n_subjects=4, image_size=32))
    store = load_store(tmp_path)
    assert store.subjects["hd95_worst_mm"].unique().tolist() == pytest.approx([32 * 1.25 * np.sqrt(2)])


def test_seeds_are_combined_per_subject_and_kept_per_seed():
    rows = [{"cell_key": f"c{seed}", "seed": seed, "subject": subject, "phase": "ED", "class": "LV",
             "dsc": value, "hd95_mm": 1.0}
            for seed, values in ((0, (0.6, 0.8)), (1, (0.7, 1.0))) for subject, value in zip(("S1", "S2"), values)]
    summary, per_seed = summarise_block(subject_blocks(subjects_frame(rows))[0], FAST)
    dsc = next(r for r in summary if r["view"] == "dsc")
    assert dsc["mean"] == pytest.approx(np.mean([0.65, 0.9]))
    assert dsc["seed_sd"] == pytest.approx(np.std([0.7, 0.85], ddof=1))
    assert sorted((r["seed"], round(r["mean"], 6)) for r in per_seed if r["view"] == "dsc") == [(0, 0.7), (1, 0.85)]


# -- ranks on shared seeds ---------------------------------------------------------------


def test_friedman_and_mean_ranks_match_scipy_on_the_seeds_every_method_shares():
    rng = np.random.default_rng(4)
    base = rng.normal(0.8, 0.04, size=25)
    cube = np.stack([np.stack([base + shift + rng.normal(0, 0.01, 25) for _ in range(3)])
                     for shift in (0.0, 0.0, 0.03, -0.03)])
    cube[1, 2] = np.nan                               # method "a" lacks seed 2: a partial cell
    methods = [BASELINE, "a", "b", "c"]
    out = rank_block(make_block(cube, methods), FAST)
    matrix = cube[:, :2].mean(axis=1).T               # seeds 0 and 1 only, for every method
    friedman = sps.friedmanchisquare(*matrix.T)
    assert out["friedman"][0]["n_seeds"] == 2
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


def test_rank_stability_equals_an_explicit_loop_over_seed_and_subject_draws():
    rng = np.random.default_rng(5)
    scores = rng.normal(0.8, 0.02, size=(3, 3, 15)) + np.array([0.0, 0.005, 0.01])[:, None, None]
    frequency, tau = rank_stability(scores, np.random.default_rng(9), 200)
    draws = np.random.default_rng(9)
    seed_draws = draws.integers(0, 3, size=(200, 3))
    subject_draws = draws.integers(0, 15, size=(200, 15))
    observed = sps.rankdata(-scores.mean(axis=1).T, axis=1).mean(axis=0)
    expected, taus = np.zeros((3, 3)), []
    for seeds, subjects in zip(seed_draws, subject_draws):
        combined = scores[:, seeds].mean(axis=1)[:, subjects].T          # (N drawn, M)
        mean_ranks = sps.rankdata(-combined, axis=1).mean(axis=0)
        for rank, method in enumerate(np.argsort(mean_ranks, kind="stable")):
            expected[method, rank] += 1 / 200
        taus.append(sps.kendalltau(observed, mean_ranks).statistic)
    np.testing.assert_allclose(frequency, expected)
    assert tau == pytest.approx(np.nanmean(taus))


def test_kendall_tau_b_equals_scipy_with_ties():
    reference = np.array([1.0, 2.0, 2.0, 4.0])
    others = np.array([[1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0], [2.0, 2.0, 1.0, 3.0]])
    expected = [sps.kendalltau(reference, row).statistic for row in others]
    np.testing.assert_allclose(kendall_tau_b(reference, others), expected)


def test_resampled_mean_ranks_with_unit_counts_are_the_mean_ranks():
    scores = np.random.default_rng(21).normal(size=(4, 2, 9))
    ranks = resampled_mean_ranks(scores, np.ones((1, 2)), np.ones((1, 9)))[0]
    np.testing.assert_allclose(ranks, sps.rankdata(-scores.mean(axis=1).T, axis=1).mean(axis=0))


# -- stores: injected effect, edited grid, failed seed --------------------------------------


@pytest.fixture(scope="module")
def effect_store(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("effect-store")
    grid = SyntheticGrid(methods=("scratch", "simclr", "mim", "dino"), budgets=("10", "all"),
                         n_subjects=30, effects={"mim": 0.1}, unannotated_rv_every=6)
    write_synthetic_store(run_dir, grid)
    return load_store(run_dir)


def test_store_comparisons_equal_a_pandas_recomputation_and_scipy_wilcoxon(effect_store):
    statistics = Statistics(effect_store, FAST)
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    subjects = effect_store.subjects
    annotated = subjects[subjects["annotated"]]
    per_run = annotated.groupby(["budget", "method", "seed", "subject"], observed=True)["dsc"].mean()
    for budget, frame in per_run.groupby(level="budget"):
        wide = frame.droplevel("budget").unstack("method")
        methods = ["dino", "mim", "simclr"]
        differences = {m: wide[m] - wide["scratch"] for m in methods}
        wilcoxon = [sps.wilcoxon(differences[m].groupby(level="subject").mean()).pvalue for m in methods]
        rows = comparisons[comparisons["budget"] == budget].set_index("method")
        np.testing.assert_allclose(rows.loc[methods, "delta"], [differences[m].mean() for m in methods])
        np.testing.assert_allclose(rows.loc[methods, "wilcoxon_p"], wilcoxon)
        np.testing.assert_allclose(rows.loc[methods, "wilcoxon_p_holm"],
                                   multipletests(wilcoxon, method="holm")[1])
        if budget == "10":
            seed_means = {m: differences[m].groupby(level="seed").mean() for m in methods}
            # the paired t on per-seed means is the floor of the run-level p (subject term ≥ 0)
            assert all(rows.loc[m, "p"] >= sps.ttest_1samp(seed_means[m], 0).pvalue - 1e-12
                       for m in methods)


def test_injected_effect_is_flagged_better_and_ranked_first(effect_store):
    statistics = Statistics(effect_store, FAST)
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    mim = comparisons[comparisons["method"] == "mim"].set_index("budget")
    assert mim.loc["10", "significant"] and mim.loc["10", "direction"] == "better"
    assert mim.loc["10", "ci_low"] > 0 and mim.loc["10", "delta"] > 0.04
    assert not mim.loc["all", "significant"]            # one run: an interval, no mark
    assert mim.loc["all", "note"] == "1 run: not tested against training variability"
    for budget, ranks in statistics["ranks"].groupby("budget"):
        assert ranks.sort_values("mean_rank")["method"].iloc[0] == "mim"
    first = statistics["rank_stability"][(statistics["rank_stability"]["method"] == "mim")
                                      & (statistics["rank_stability"]["rank"] == 1)]
    assert (first["frequency"] > 0.95).all()
    assert statistics.structures == ["LV", "MYO", "RV"]


def test_equal_methods_with_run_offsets_get_no_marks(tmp_path):
    """The issue's store: every method equals scratch, each run has its own offset."""
    write_synthetic_store(tmp_path, SyntheticGrid(
        methods=("scratch", "a", "b", "c", "d"), budgets=("10", "25", "50"), n_subjects=80,
        run_noise_sd=0.01, seed=3))
    store = load_store(tmp_path)
    statistics = Statistics(store, FAST)
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    assert len(comparisons) == 12 and comparisons["significant"].sum() <= 1
    assert (comparisons["wilcoxon_p_holm"] < 0.05).sum() >= 6


def edited_grid_store(run_dir, record_grid: bool = True) -> None:
    """A run, then a rerun into the same folder with different dataset options (same cell
    identities, different keys) and one more seed."""
    first = SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0, 1),
                          n_subjects=20, effects={"mim": 0.3}, options={"split": "old"})
    write_synthetic_store(run_dir, first)
    write_synthetic_store(run_dir, SyntheticGrid(
        methods=("scratch", "mim"), budgets=("10",), seeds=(0, 1, 2), n_subjects=20,
        options={"split": "new"}, seed=1, record_grid=record_grid))


def test_an_edited_grid_rerun_uses_only_the_new_grid_and_sets_the_rest_aside(tmp_path):
    edited_grid_store(tmp_path)
    store = load_store(tmp_path)
    assert len(store.cells) == 6 and len(store.set_aside) == 4
    assert set(store.set_aside["reason"]) == {"not in this grid"}
    assert store.subjects["cell_key"].nunique() == 6
    statistics = Statistics(store, FAST)
    board = statistics["leaderboard"].set_index("method")
    assert board.loc["mim", "seeds_done"] == 3 and board.loc["mim", "seeds_expected"] == 3
    assert board.loc["mim", "delta"] < 0.1             # the old run's +0.3 is not pooled in


def test_without_a_grid_list_conflicting_configurations_are_never_merged(tmp_path):
    edited_grid_store(tmp_path, record_grid=False)
    store = load_store(tmp_path)
    # seeds 0 and 1 exist under both configurations: all 8 of those cells are set aside
    assert len(store.set_aside) == 8 and set(store.cells["seed"]) == {2}
    assert "different key" in store.set_aside["reason"].iloc[0]


def test_a_failed_seed_gives_a_partial_cell_that_cannot_be_best(tmp_path):
    write_synthetic_store(tmp_path, SyntheticGrid(
        methods=("scratch", "mim", "simclr"), budgets=("10",), n_subjects=30,
        effects={"simclr": 0.03, "mim": 0.01}, failed=(("simclr", "10"),)))
    store = load_store(tmp_path)
    statistics = Statistics(store, FAST)
    board = statistics["leaderboard"].set_index("method")
    assert board.loc["simclr", "status"] == "partial" and board.loc["simclr", "seeds_failed"] == 1
    assert board["mean"].idxmax() == "simclr" and not board.loc["simclr", "best"]
    assert board.loc["mim", "best"]
    assert (statistics["ranks"]["n_seeds"] == 2).all() and (statistics["friedman"]["n_seeds"] == 2).all()
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    simclr = comparisons.set_index("method").loc["simclr"]
    assert simclr["n_seeds"] == 2

# -- the study's questions and the summary across blocks ---------------------------------------


def test_class_and_phase_comparisons_use_the_same_estimand(effect_store):
    statistics = Statistics(effect_store, FAST)
    rows = statistics["comparisons"].set_index(["budget", "method", "view"])
    subjects = effect_store.subjects
    lv = subjects[(subjects["class"] == "LV") & (subjects["budget"] == "10")]
    per_run = lv.groupby(["method", "seed", "subject"], observed=True)["dsc"].mean().unstack("method")
    assert rows.loc[("10", "mim", "dsc_LV"), "delta"] == pytest.approx(
        (per_run["mim"] - per_run["scratch"]).mean())
    assert set(rows.index.get_level_values("view")) == set(COMPARED_VIEWS)


def test_vendor_gap_without_a_subject_term_is_a_t_interval_on_per_seed_gaps():
    seed_level = np.array([0.80, 0.83, 0.78])
    vendors = np.array(["A", "B", "C", "D"] * 3)
    seen = np.isin(vendors, ["A", "B"])
    gap_per_seed = np.array([-0.05, -0.02, -0.06])
    cube = np.repeat(seed_level[:, None], 12, axis=1) + np.where(seen, 0.0, gap_per_seed[:, None])
    block = make_block(cube[None], [BASELINE])
    block.meta = {"vendor": vendors, "seen_vendor": seen}
    row = vendor_gap(block, FAST)[0]
    interval = sps.ttest_1samp(gap_per_seed, 0.0).confidence_interval(0.95)
    assert (row["unseen"], row["seen"], row["n_seeds"]) == ("C+D", "A+B", 3)
    assert row["gap"] == pytest.approx(gap_per_seed.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high))


def test_augmented_scratch_is_compared_with_each_ssp_method_without_augmentation():
    rng = np.random.default_rng(22)
    subject = rng.normal(0.8, 0.03, size=(1, 1, 30))
    subset = rng.normal(0, 0.01, size=(1, 3, 1))
    plain = subject + subset + np.array([0.0, 0.02])[:, None, None] + rng.normal(0, 0.005, (2, 3, 30))
    augmented = subject + subset + np.array([0.05])[:, None, None] + rng.normal(0, 0.005, (1, 3, 30))
    none_block = make_block(plain, [BASELINE, "mim"])
    paper_block = make_block(augmented, [BASELINE])
    paper_block.key = {**paper_block.key, "augmentation": "paper"}
    rows = augmentation_vs_ssp([none_block, paper_block], FAST)
    assert len(rows) == 1 and rows[0]["method"] == "mim"
    assert rows[0]["augmentation"] == "scratch paper vs mim none"
    assert rows[0]["delta"] == pytest.approx((augmented[0] - plain[1]).mean())
    assert rows[0]["significant"] and rows[0]["direction"] == "better"


def test_across_blocks_summary_on_hand_computed_curves():
    keys = {"dataset": "d", "encoder": "e", "augmentation": "none", "setting": "default"}
    summary = pd.DataFrame([{**keys, "view": "dsc", "method": m, "budget": b, "n_labelled": n,
                             "mean": v}
                            for m, values in ((BASELINE, (0.70, 0.80, 0.90)), ("mim", (0.76, 0.84, 0.90)))
                            for b, n, v in zip(("10", "100", "all"), (10, 100, 1000), values)])
    comparisons = pd.DataFrame([{**keys, "budget": b, "view": "dsc", "method": "mim", "p": p,
                                 "significant": sig, "direction": "better" if sig else ""}
                                for b, p, sig in (("10", 0.01, True), ("100", 0.2, False),
                                                  ("all", np.nan, False))])
    ranks = pd.DataFrame([{**keys, "budget": b, "method": m, "mean_rank": r}
                          for b in ("10", "100") for m, r in ((BASELINE, 1.8), ("mim", 1.2))])
    table = across_blocks(summary, comparisons, ranks).set_index("method")
    # equal log steps: area / range = (0.76/2 + 0.84 + 0.90/2) / 2 and (0.70/2 + 0.80 + 0.90/2) / 2
    assert table.loc["mim", "aulc"] == pytest.approx(0.835)
    assert table.loc["mim", "delta_aulc"] == pytest.approx(0.835 - 0.80)
    assert (table.loc["mim", "n_better"], table.loc["mim", "n_tested"]) == (1, 2)
    assert table.loc["mim", "mean_rank"] == pytest.approx(1.2)


# -- clinical agreement -------------------------------------------------------------------


def test_clinical_agreement_matches_hand_computed_bias_limits_mae_and_intervals():
    base = {"dataset": "d", "encoder": "e", "augmentation": "none", "setting": "default",
            "budget": "10", "quantity": "LV_EF", "unit": "%"}
    differences = {0: [2.0, -1.0, 5.0], 1: [0.0, 1.0, 2.0]}
    rows = [{**base, "method": "mim", "seed": seed, "subject": f"S{i}", "ref": 50.0, "pred": 50.0 + d}
            for seed, values in differences.items() for i, d in enumerate(values)]
    rows.append({**base, "method": "mim", "seed": 0, "subject": "S9", "ref": np.nan, "pred": 40.0})
    rows += [{**base, "method": BASELINE, "seed": seed, "subject": f"S{i}", "ref": 50.0, "pred": 53.0}
             for seed in (0, 1) for i in range(3)]
    rows.append({**base, "method": "mim", "seed": 1, "subject": "S8", "ref": 60.0, "pred": np.nan})
    table = clinical_agreement(pd.DataFrame(rows)).set_index("method")
    row = table.loc["mim"]
    # S8's EF is undefined in seed 1 only (counted as 0 %, error −60); S8 lacks seed 0, so the
    # complete seed × subject matrix is S0–S2: errors [[2, −1, 5], [0, 1, 2]]
    assert row["n_undefined"] == 1 and (row["n_subjects"], row["n_seeds"]) == (3, 2)
    assert row["bias"] == pytest.approx(1.5)
    assert row["mae"] == pytest.approx(11 / 6)
    assert row["bias_seed_sd"] == pytest.approx(np.std([2.0, 1.0], ddof=1))
    sd = np.sqrt(np.mean([9.0, 1.0]) + 0.5)      # within-run variances 9 and 1; bias variance 0.5
    assert row["sd"] == pytest.approx(sd)
    assert (row["loa_low"], row["loa_high"]) == pytest.approx((1.5 - 1.96 * sd, 1.5 + 1.96 * sd))
    # MS_seed 1.5, MS_subject 6.5, MS_residual 3.5: var = (1.5 + 3.0) / 6, t on 1 df
    half_width = sps.t.ppf(0.975, 1) * np.sqrt(0.75)
    assert (row["bias_ci_low"], row["bias_ci_high"]) == pytest.approx((1.5 - half_width, 1.5 + half_width))
    limit_se = np.sqrt(0.75 + 1.96 ** 2 * sd ** 2 / (2 * 5))
    assert row["loa_high_ci_high"] == pytest.approx(1.5 + 1.96 * sd + sps.t.ppf(0.975, 1) * limit_se)
    assert row["delta_mae"] == pytest.approx(11 / 6 - 3.0)          # scratch's MAE is 3
    assert np.isnan(table.loc[BASELINE, "delta_mae"])


def test_labels_saved_interpolates_scratch_on_log_budget_with_an_interval():
    from cmrbench.reports.leaderboard import labels_saved_text
    from cmrbench.reports.stats import TEST_SET_ONLY

    keys = {"dataset": "d", "encoder": "unet2d", "augmentation": "none", "setting": "default"}
    means = {(BASELINE, "10"): 0.70, (BASELINE, "100"): 0.80, ("mim", "10"): 0.75,
             ("mim", "100"): 0.85}
    cells = pd.DataFrame([{**keys, "method": m, "budget": b, "seed": 0, "status": "done"}
                          for m, b in means])
    summary = pd.DataFrame([{**keys, "method": m, "budget": b, "view": "dsc", "n_labelled": int(b),
                             "mean": v, "ci_low": v - 0.01, "ci_high": v + 0.01, "scope": "runs",
                             "n_subjects": 10} for (m, b), v in means.items()],
                           columns=CATALOGUE["summary"].column_names)
    no_comparisons = CATALOGUE["comparisons"].frame()
    board = leaderboard_table(cells, summary, no_comparisons)
    mim = board[board["method"] == "mim"].set_index("budget")
    assert mim.loc["10", "scratch_equivalent"] == pytest.approx(np.sqrt(10 * 100))  # halfway in log
    assert np.isnan(mim.loc["100", "scratch_equivalent"])
    assert mim.loc["100", "scratch_equivalent_note"] == "above scratch at every budget (> 100 subjects)"
    # interval: scratch's upper curve (0.71 → 0.81) reaches mim's ci_low 0.74 three tenths of
    # the way in log budget, 10^1.3 subjects; its lower curve (0.69 → 0.79) reaches 0.76 at 10^1.7
    assert mim.loc["10", "scratch_equivalent_low"] == pytest.approx(10 ** 1.3)
    assert mim.loc["10", "scratch_equivalent_high"] == pytest.approx(10 ** 1.7)
    assert labels_saved_text(mim.loc["10"]) == "31.6 [20.0, 50.1]"
    one_run = summary.assign(scope=np.where(summary["method"] == "mim", TEST_SET_ONLY, "runs"))
    board = leaderboard_table(cells, one_run, no_comparisons)
    mim = board[board["method"] == "mim"].set_index("budget")
    assert np.isnan(mim.loc["10", "scratch_equivalent_low"])
    assert labels_saved_text(mim.loc["10"]) == "31.6 (no interval: fewer than 2 runs at a budget)"
