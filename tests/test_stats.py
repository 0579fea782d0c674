"""Tests for cmrbench.reports.stats: the run-level test and intervals against scipy,
statsmodels and hand-computed examples; the leaderboard's family (Holm and simultaneous
intervals), bounded intervals, null / power / coverage simulations with a run-level term,
seed-level pairwise tests, ranks and rank sets, labels saved, power at the family's level,
the vendor interaction, n/a handling and clinical agreement with repeated measures."""

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
from cmrbench.reports.stats.comparisons import COMPARED_VIEWS, compare_board, subject_level_block
from cmrbench.reports.stats.efficiency import across_blocks, labels_for
from cmrbench.reports.stats.estimates import (
    BootstrapConfig,
    adjust_family,
    block_generator,
    bounded_interval,
    holm,
    run_level_estimates,
    wilcoxon_pvalue,
)
from cmrbench.reports.stats.leaderboard import (
    leaderboard_table,
    single_pretraining,
    summarise_block,
)
from cmrbench.reports.stats.power import (
    detectable_difference,
    power_table,
    seeds_needed,
    variance_upper_bound,
)
from cmrbench.reports.stats.ranks import cd_cliques, pairwise_board, rank_block
from cmrbench.reports.stats.subgroups import vendor_gap, vendor_interaction
from cmrbench.store import load_store
from support.hand_stats import hand_estimate
from support.synthetic_store import SyntheticGrid, write_synthetic_store

FAST = BootstrapConfig(n_resamples=300, seed=0)
T975_2DF = 4.302652729911275  # sps.t.ppf(0.975, 2)


def make_block(scores: np.ndarray, methods: list[str], key: str = "b0") -> BlockScores:
    """A `BlockScores` around a ``(M, S, N)`` DSC cube (views other than dsc are not needed)."""
    m, s, n = scores.shape
    return BlockScores(
        key={
            "dataset": "d",
            "encoder": "e",
            "augmentation": "none",
            "setting": "default",
            "budget": key,
        },
        n_labelled=10,
        methods=methods,
        seeds=list(range(s)),
        subjects=np.array([f"S{i}" for i in range(n)]),
        meta={
            "vendor": np.array(["A", "B"] * (n // 2) + ["A"] * (n % 2)),
            "seen_vendor": np.ones(n, bool),
        },
        scores={"dsc": scores},
        n_undefined={"dsc": np.zeros(m, int)},
        n_entries={"dsc": np.full(m, s * n)},
    )


def subjects_frame(rows: list[dict]) -> pd.DataFrame:
    """A long subjects table with the store's identifying columns filled in."""
    base = {
        "cell_key": "c0",
        "method": "scratch",
        "encoder": "e",
        "dataset": "d",
        "setting": "default",
        "augmentation": "none",
        "budget": "10",
        "n_labelled": 10,
        "seed": 0,
        "vendor": "A",
        "seen_vendor": True,
        "annotated": True,
        "vol_pred_ml": 1.0,
        "vol_ref_ml": 1.0,
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def family_row(p: float, df: float = 4.0, standard_error: float = 0.01) -> dict:
    """A comparison whose Δ gives two-sided p on ``df`` df with ``standard_error``."""
    delta = float(sps.t.isf(p / 2, df)) * standard_error if not np.isnan(p) else 0.02
    return {"delta": delta, "standard_error": standard_error, "df": df, "p": p}


# -- building blocks -------------------------------------------------------------------


def test_holm_matches_hand_computation_on_three_pvalues():
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, max(0.03, 2·0.03) = 0.06, max(0.06, 1·0.04) = 0.06
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])


def test_holm_ignores_nan_and_equals_statsmodels():
    pvalues = np.array([0.02, np.nan, 0.04, 0.001, 0.3])
    adjusted = holm(pvalues)
    assert np.isnan(adjusted[1])
    finite = ~np.isnan(pvalues)
    np.testing.assert_allclose(adjusted[finite], multipletests(pvalues[finite], method="holm")[1])


def test_wilcoxon_on_five_subjects_matches_scipy_and_exact_enumeration():
    differences = np.array([0.1, -0.2, 0.3, 0.05, 0.4])
    statistic, p = wilcoxon_pvalue(differences)
    # ranks of |d|: 0.05→1, 0.1→2, 0.2→3, 0.3→4, 0.4→5; W- = 3 (only -0.2 is negative)
    assert statistic == 3.0
    ranks = np.arange(1, 6)
    extreme = sum(
        1
        for signs in itertools.product([0, 1], repeat=5)
        if min(ranks[np.array(signs) == 1].sum(), ranks[np.array(signs) == 0].sum()) <= 3
    )
    assert extreme == 10
    assert p == pytest.approx(extreme / 32) == pytest.approx(sps.wilcoxon(differences).pvalue)


@pytest.mark.parametrize("n", [5, 14, 140])
def test_wilcoxon_of_identical_scores_gives_p_one_for_any_number_of_subjects(n):
    assert wilcoxon_pvalue(np.zeros(n)) == (0.0, 1.0)  # scipy gives NaN from n = 14
    assert np.isnan(wilcoxon_pvalue(np.array([np.nan]))[1])


def test_budget_order_sorts_numbers_then_all():
    assert sorted(["all", "50", "10", "100", "15"], key=budget_order) == [
        "10",
        "15",
        "50",
        "100",
        "all",
    ]


# -- bounded intervals and the family ------------------------------------------------------


def test_a_dsc_mean_interval_is_the_logit_delta_method_back_transformed():
    low, high = bounded_interval(0.8, 0.05, 2.0, 0.95, (0.0, 1.0))
    # logit(0.8) = ln 4; half-width on the logit scale t · SE / (m (1 − m)) = 4.3027 · 0.3125
    spread = T975_2DF * 0.05 / (0.8 * 0.2)
    assert low == pytest.approx(1 / (1 + np.exp(-(np.log(4) - spread))))
    assert high == pytest.approx(1 / (1 + np.exp(-(np.log(4) + spread))))
    assert 0.0 < low < 0.8 < high < 1.0 and 0.8 - low > high - 0.8  # longer away from 1


def test_a_two_seed_dsc_interval_stays_inside_zero_and_one():
    # the example: mean 0.582 with a raw interval [−1.118, 2.282] (t on 1 df)
    error = (2.282 - 0.582) / sps.t.ppf(0.975, 1)
    low, high = bounded_interval(0.582, error, 1.0, 0.95, (0.0, 1.0))
    assert 0.0 < low < 0.01 and 0.99 < high < 1.0


def test_a_narrow_interval_is_the_plain_t_interval_and_hd95_stays_positive():
    low, high = bounded_interval(0.85, 0.0005, 2.0, 0.95, (0.0, 1.0))
    assert (low, high) == pytest.approx(
        (0.85 - T975_2DF * 0.0005, 0.85 + T975_2DF * 0.0005), abs=5e-5
    )
    low, high = bounded_interval(10.0, 4.0, 2.0, 0.95, (0.0, np.inf))
    assert (low, high) == pytest.approx((10 * np.exp(-T975_2DF * 0.4), 10 * np.exp(T975_2DF * 0.4)))
    assert bounded_interval(1.0, 0.0, 2.0, 0.95, (0.0, 1.0)) == (1.0, 1.0)  # every score 1


def test_the_family_marks_by_holm_and_gives_bonferroni_intervals():
    rows = [family_row(p) for p in (0.001, 0.02, 0.04, np.nan)]
    adjust_family(rows, 0.95)
    tested = [r for r in rows if not np.isnan(r["p"])]
    np.testing.assert_allclose(
        [r["p_holm"] for r in tested], multipletests([0.001, 0.02, 0.04], method="holm")[1]
    )
    assert [r["significant"] for r in rows] == [True, True, True, False]
    assert all(r["family_size"] == 3 for r in rows)  # the untested row is no member
    critical = sps.t.ppf(1 - 0.05 / 6, 4)  # Bonferroni over m = 3, two-sided
    for row in tested:
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            (row["delta"] - critical * 0.01, row["delta"] + critical * 0.01)
        )
        # the interval excludes 0 exactly when p < α/m; Holm marks 0.02 and 0.04 by stepping down
        assert (row["ci_low"] > 0) == (row["p"] < 0.05 / 3)
        assert row["step_down"] == (row["significant"] and row["ci_low"] <= 0)
    assert [r["step_down"] for r in tested] == [False, True, True]
    assert np.isnan(rows[3]["ci_low"]) and rows[3]["direction"] == ""


def test_an_interval_beyond_a_dscs_range_is_clipped_and_flagged():
    rows = adjust_family([family_row(0.3, df=1.0, standard_error=0.2)], 0.95, limit=1.0)
    assert (rows[0]["ci_low"], rows[0]["ci_high"]) == (-1.0, 1.0) and rows[0]["ci_clipped"]


# -- the run-level estimate ----------------------------------------------------------------


def test_run_level_test_on_a_hand_computed_paired_t_example():
    # 3 seeds × 2 subjects; subject means are equal (0.04, 0.04), so the subject term is 0
    differences = np.array([[0.01, 0.03], [0.04, 0.02], [0.07, 0.07]])
    # per-seed means 0.02, 0.03, 0.07: mean 0.04, SD sqrt((4 + 1 + 9)e-4 / 2) = sqrt(7e-4)
    standard_error = np.sqrt(7e-4 / 3)
    t = 0.04 / standard_error  # 2.6186
    out = run_level_estimates(differences)
    assert out["estimate"] == pytest.approx(0.04)
    assert out["standard_error"] == pytest.approx(standard_error)
    assert out["df"] == 2
    assert out["p"] == pytest.approx(1 - t / np.sqrt(t**2 + 2))  # t on 2 df in closed form
    assert out["ci_low"] == pytest.approx(0.04 - 4.302652729911275 * standard_error)
    assert out["ci_high"] == pytest.approx(0.04 + 4.302652729911275 * standard_error)
    # residuals ±0.01 in the first two seeds: MS_residual = 4e-4 / 2;
    # seed term (MS_seed − MS_res) / N
    assert out["var_residual"] == pytest.approx(2e-4)
    assert out["var_run"] == pytest.approx((2 * 7e-4 - 2e-4) / 2)
    assert out["var_subject"] == 0


def test_without_a_subject_term_it_is_scipys_paired_t_test_on_per_seed_means():
    rng = np.random.default_rng(11)
    scratch = rng.normal(0.8, 0.05, size=(4, 25))
    method = scratch + rng.normal(0.01, 0.01, size=(4, 1)) + rng.normal(0, 0.02, size=(4, 25))
    differences = method - scratch
    differences -= differences.mean(axis=0) - differences.mean()  # equal subject means
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
    values = (
        rng.normal(0, 0.01, (seeds, 1))
        + rng.normal(0, 0.03, (1, subjects))
        + rng.normal(0, 0.01, (seeds, subjects))
    )
    frame = pd.DataFrame(
        {
            "d": values.ravel(),
            "seed": np.repeat(np.arange(seeds), subjects),
            "subject": np.tile(np.arange(subjects), seeds),
        }
    )
    table = anova_lm(smf.ols("d ~ C(seed) + C(subject)", data=frame).fit())
    ms_seed, ms_subject, ms_residual = table["mean_sq"].to_numpy()
    assert ms_subject > ms_residual  # the subject term is in play
    out = run_level_estimates(values)
    variance = (ms_seed + ms_subject - ms_residual) / (seeds * subjects)
    assert out["standard_error"] == pytest.approx(np.sqrt(variance))
    assert out["var_residual"] == pytest.approx(ms_residual)
    assert out["var_subject"] == pytest.approx((ms_subject - ms_residual) / seeds)
    assert out["p"] == pytest.approx(
        2 * sps.t.sf(abs(values.mean()) / np.sqrt(variance), seeds - 1)
    )


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
    block = make_block(np.concatenate([cube, cube]), [BASELINE, "copy"])
    row = compare_board([block], FAST)[0]
    assert row["p"] == 1.0 and row["delta"] == 0.0 and row["direction"] == ""
    assert row["note"] == "identical to scratch"
    assert subject_level_block(block)[0]["wilcoxon_p"] == 1.0


# -- comparisons with scratch ---------------------------------------------------------------


def test_a_single_seed_block_shows_delta_without_interval_or_mark_and_says_why():
    rng = np.random.default_rng(14)
    scratch = rng.normal(0.8, 0.03, size=(1, 1, 40))
    better = scratch + 0.05 + rng.normal(0, 0.01, size=(1, 1, 40))
    block = make_block(np.concatenate([scratch, better]), [BASELINE, "mim"])
    row = compare_board([block], FAST)[0]
    assert row["note"] == "1 run: not tested against training variability, no interval"
    assert np.isnan(row["p"]) and not row["significant"] and row["direction"] == ""
    assert row["delta"] == pytest.approx(0.05, abs=0.005) and row["scope"] == ""
    assert np.isnan(row["ci_low"]) and np.isnan(row["ci_unadjusted_low"])  # no interval at all
    assert row["family_size"] == 0
    assert subject_level_block(block)[0]["wilcoxon_p"] < 1e-6  # only the conditional test says it


def test_one_test_subject_gives_no_interval_and_no_test():
    cube = np.array([[[0.80], [0.82], [0.81]], [[0.85], [0.86], [0.84]]])
    row = compare_board([make_block(cube, [BASELINE, "mim"])], FAST)[0]
    assert row["delta"] == pytest.approx(0.04)
    assert (
        np.isnan(row["ci_low"])
        and np.isnan(row["p"])
        and row["note"] == "1 test subject: no interval"
    )


def test_skewed_differences_are_marked_in_the_direction_of_the_mean():
    """Many tiny losses and a few large gains: the median is negative, the mean positive."""
    rng = np.random.default_rng(15)
    subject = rng.normal(0.8, 0.03, size=140)
    gain = np.where(np.arange(140) < 25, 0.10, -0.004)  # mean +0.015, median −0.004
    scratch = subject[None, None, :] + rng.normal(0, 0.002, size=(1, 5, 1))
    method = scratch + gain + rng.normal(0, 0.001, size=(1, 5, 140))
    block = make_block(np.concatenate([scratch, method]), [BASELINE, "x"])
    row = compare_board([block], FAST)[0]
    assert subject_level_block(block)[0]["median_diff"] < 0 < row["delta"]
    assert row["significant"] and row["direction"] == "better"


def test_a_leaderboard_is_one_family_over_its_methods_and_budgets():
    rng = np.random.default_rng(16)
    blocks = []
    for budget in ("10", "25"):
        base = rng.normal(0.8, 0.03, size=(1, 3, 30)) + rng.normal(0, 0.01, size=(1, 3, 1))
        cube = np.concatenate(
            [
                base
                + shift
                + rng.normal(0, 0.005, size=(1, 3, 1))
                + rng.normal(0, 0.01, size=(1, 3, 30))
                for shift in (0.0, 0.03, 0.0, -0.03)
            ]
        )
        blocks.append(make_block(cube, [BASELINE, "a", "b", "c"], budget))
    rows = compare_board(blocks, FAST)
    assert len(rows) == 6 and all(r["family_size"] == 6 for r in rows)
    p = np.array([r["p"] for r in rows])
    np.testing.assert_allclose([r["p_holm"] for r in rows], multipletests(p, method="holm")[1])
    critical = sps.t.ppf(1 - 0.05 / 12, 2)
    for row, block, i in zip(rows, np.repeat(blocks, 3), (1, 2, 3) * 2):
        differences = block.scores["dsc"][i] - block.scores["dsc"][0]
        hand = hand_estimate(differences)
        assert row["delta"] == pytest.approx(hand["mean"]) and row["p"] == pytest.approx(hand["p"])
        assert (row["ci_unadjusted_low"], row["ci_unadjusted_high"]) == pytest.approx(
            (hand["low"], hand["high"])
        )
        half = critical * (hand["mean"] - hand["low"]) / T975_2DF
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            (hand["mean"] - half, hand["mean"] + half)
        )
        # an interval that excludes 0 always carries a mark
        assert not (row["ci_low"] > 0 or row["ci_high"] < 0) or row["significant"]
    wilcoxon = [
        sps.wilcoxon((blocks[0].scores["dsc"][i] - blocks[0].scores["dsc"][0]).mean(axis=0)).pvalue
        for i in (1, 2, 3)
    ]
    conditional = subject_level_block(blocks[0])
    np.testing.assert_allclose([r["wilcoxon_p"] for r in conditional], wilcoxon)
    np.testing.assert_allclose(
        [r["wilcoxon_p_holm"] for r in conditional], multipletests(wilcoxon, method="holm")[1]
    )


def test_block_without_scratch_is_not_tested_and_says_so():
    cube = np.random.default_rng(6).normal(0.8, 0.02, size=(2, 1, 10))
    rows = compare_board([make_block(cube, ["mim", "simclr"])], FAST)
    assert [r["method"] for r in rows] == ["mim", "simclr"]
    assert all(
        np.isnan(r["p"]) and not r["significant"] and "not tested" in r["note"] for r in rows
    )


# -- simulations with a run-level term --------------------------------------------------------


def simulated_blocks(
    rng: np.random.Generator,
    n_blocks: int,
    seeds: int,
    run_sd: float,
    effect: float = 0.0,
    methods: int = 2,
) -> list[np.ndarray]:
    """``(methods, S, 140)`` DSC cubes (scratch first) with realistic spreads: subject ability
    SD 0.04 (shared by every method), labelled-subset effect SD 0.02 per seed (shared), each
    training run's own offset SD ``run_sd``, and subject × run noise SD 0.02; the last method
    gets ``effect``."""
    cubes = []
    for _ in range(n_blocks):
        subject = rng.normal(0.80, 0.04, size=(1, 1, 140))
        subset = rng.normal(0.0, 0.02, size=(1, seeds, 1))
        runs = rng.normal(0.0, run_sd, size=(methods, seeds, 1))
        cube = subject + subset + runs + rng.normal(0.0, 0.02, size=(methods, seeds, 140))
        cube[-1] += effect
        cubes.append(cube)
    return cubes


@pytest.mark.parametrize("run_sd", [0.005, 0.01])
def test_null_rejection_rate_is_nominal_with_a_run_level_term_and_wilcoxon_fails(run_sd):
    """300 blocks, 3 seeds, 140 subjects, method equal to scratch in distribution but every
    training run with its own offset: the run-level test rejects 2–8 %; the subject-level
    Wilcoxon (conditional on the trained models) rejects far more, because it treats the two
    trained models as the thing compared."""
    rng = np.random.default_rng(17)
    blocks = [
        make_block(cube, [BASELINE, "m"], key=str(k))
        for k, cube in enumerate(simulated_blocks(rng, 300, 3, run_sd))
    ]
    primary = np.mean([compare_board([block], FAST)[0]["significant"] for block in blocks])
    wilcoxon = np.mean(
        [subject_level_block(block)[0]["wilcoxon_p_holm"] < 0.05 for block in blocks]
    )
    assert 0.02 <= primary <= 0.08
    assert wilcoxon > 0.3


def test_power_for_a_true_gain_of_0_04_with_three_seeds_is_at_least_0_6():
    rng = np.random.default_rng(18)
    rows = [
        compare_board([make_block(cube, [BASELINE, "m"], key=str(k))], FAST)[0]
        for k, cube in enumerate(simulated_blocks(rng, 200, 3, 0.01, effect=0.04))
    ]
    assert np.mean([r["significant"] and r["direction"] == "better" for r in rows]) >= 0.6


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [3, 5])
def test_intervals_cover_the_true_mean_and_difference_at_least_92_percent(seeds):
    rng = np.random.default_rng(19)
    for run_sd in (0.005, 0.01):
        cubes = np.stack(simulated_blocks(rng, 1000, seeds, run_sd, effect=0.02))
        level = run_level_estimates(cubes[:, 0])  # true mean 0.80 over subsets, runs, subjects
        low, high = bounded_interval(
            level["estimate"], level["standard_error"], level["df"], 0.95, (0.0, 1.0)
        )
        gain = run_level_estimates(cubes[:, 1] - cubes[:, 0])
        assert np.mean((level["ci_low"] <= 0.80) & (0.80 <= level["ci_high"])) >= 0.92
        assert np.mean((low <= 0.80) & (0.80 <= high)) >= 0.92
        assert np.mean((gain["ci_low"] <= 0.02) & (0.02 <= gain["ci_high"])) >= 0.92


# -- power at the family's level ------------------------------------------------------------


def test_detectable_difference_at_alpha_over_m_matches_simulated_holm_power():
    """One true Δ among m = 5 comparisons of a family: the Δ `detectable_difference` returns
    at α/5 is marked by Holm about 80 % of the time (a little more: Holm steps down)."""
    rng = np.random.default_rng(20)
    var_run, var_residual, m = 2e-4, 8e-4, 5
    seed_variance = var_run + var_residual / 140
    delta = detectable_difference(seed_variance, 0.0, 3, 140, alpha=0.05 / m)
    effects = np.array([delta, 0.0, 0.0, 0.0, 0.0])[None, :, None, None]
    values = (
        effects
        + rng.normal(0, np.sqrt(var_run), (2000, m, 3, 1))
        + rng.normal(0, np.sqrt(var_residual), (2000, m, 3, 140))
    )
    p = run_level_estimates(values)["p"]
    marked = np.mean([holm(row)[0] < 0.05 for row in p])
    assert 0.78 <= marked <= 0.86
    assert delta > detectable_difference(seed_variance, 0.0, 3, 140)  # α/m asks for more
    assert seeds_needed(seed_variance, 0.0, 140, delta, alpha=0.05 / m) == 3
    assert seeds_needed(seed_variance, 0.0, 140, delta / 2, alpha=0.05 / m) > 3


def test_the_variance_upper_bound_is_the_chi_square_limit():
    # χ²(0.2; 2) = −2 ln 0.8 in closed form: the 80 % upper bound of a 2-df variance is 4.48 ×
    assert variance_upper_bound(1.0, 2) == pytest.approx(2 / (-2 * np.log(0.8)))
    assert variance_upper_bound(3.0, 4, 0.9) == pytest.approx(12 / sps.chi2.ppf(0.1, 4))


def test_power_plans_at_the_familys_level_with_the_upper_bound():
    keys = {
        "dataset": "d",
        "encoder": "e",
        "augmentation": "none",
        "setting": "default",
        "budget": "10",
        "view": "dsc",
    }
    comparisons = pd.DataFrame(
        [
            {
                **keys,
                "method": m,
                "n_seeds": 3,
                "n_subjects": 100,
                "family_size": 20,
                "var_run": v,
                "var_subject": 1e-5,
                "var_residual": 4e-4,
            }
            for m, v in (("a", 1e-4), ("b", 3e-4))
        ]
    )
    row = power_table(comparisons, delta=0.05).iloc[0]
    seed_variance = 2e-4 + 4e-4 / 100  # the methods' run terms averaged
    upper = 2 * seed_variance / sps.chi2.ppf(0.2, 2)
    assert (row["family_size"], row["alpha_per_test"]) == (20, 0.05 / 20)
    assert row["sd_seed_mean_upper"] == pytest.approx(np.sqrt(upper))
    assert row["detectable_delta"] == pytest.approx(
        detectable_difference(upper, 1e-5, 3, 100, alpha=0.05 / 20)
    )
    assert row["seeds_needed"] == seeds_needed(upper, 1e-5, 100, 0.05, alpha=0.05 / 20)


# -- subject scores from the long table --------------------------------------------------


def test_unannotated_classes_are_left_out_of_subject_averages():
    rows = []
    for subject, rv_annotated in (("S1", True), ("S2", False)):
        for phase in ("ED", "ES"):
            for name, dsc in (("LV", 0.9), ("MYO", 0.8), ("RV", 0.7)):
                annotated = rv_annotated or name != "RV"
                rows.append(
                    {
                        "subject": subject,
                        "phase": phase,
                        "class": name,
                        "annotated": annotated,
                        "dsc": dsc if annotated else np.nan,
                        "hd95_mm": 2.0 if annotated else np.nan,
                    }
                )
    block = subject_blocks(subjects_frame(rows))[0]
    assert block.scores["dsc"][0, 0].tolist() == pytest.approx(
        [0.8, 0.85]
    )  # S2: (0.9+0.8)/2, not /3
    assert block.scores["dsc_RV"][0, 0, 0] == pytest.approx(0.7)
    assert np.isnan(block.scores["dsc_RV"][0, 0, 1])  # n/a, never 0
    summary, _ = summarise_block(block, FAST)
    rv = next(r for r in summary if r["view"] == "dsc_RV")
    assert rv["n_subjects"] == 1 and rv["mean"] == pytest.approx(0.7)


@pytest.mark.parametrize("worst_case", [None, 400.0])
def test_undefined_hd95_counts_as_the_field_of_view_diagonal_and_is_counted(worst_case):
    rows = [
        {"subject": "S1", "phase": "ED", "class": "LV", "dsc": 0.9, "hd95_mm": 4.0},
        {"subject": "S1", "phase": "ES", "class": "LV", "dsc": 0.0, "hd95_mm": np.nan},
        {"subject": "S2", "phase": "ED", "class": "LV", "dsc": 0.8, "hd95_mm": 6.0},
        {
            "subject": "S2",
            "phase": "ES",
            "class": "RV",
            "annotated": False,
            "dsc": np.nan,
            "hd95_mm": np.nan,
        },
    ]
    frame = subjects_frame(rows)
    if worst_case is not None:
        frame["hd95_worst_mm"] = worst_case
    summary, _ = summarise_block(subject_blocks(frame)[0], FAST)
    hd95 = next(r for r in summary if r["view"] == "hd95")
    # with the diagonal: S1 = (4 + 400) / 2, S2 = 6; without it the entry is left out
    expected = np.mean([(4.0 + 400.0) / 2, 6.0]) if worst_case else 5.0
    assert hd95["mean"] == pytest.approx(expected)  # never averaged as 0
    assert (hd95["n_undefined"], hd95["n_entries"]) == (1, 3)  # the un-annotated RV is no entry


def test_the_store_gives_each_cell_its_field_of_view_diagonal(tmp_path):
    write_synthetic_store(
        tmp_path,
        SyntheticGrid(
            methods=("scratch",), budgets=("10",), seeds=(0,), n_subjects=4, image_size=32
        ),
    )
    store = load_store(tmp_path)
    assert store.subjects["hd95_worst_mm"].unique().tolist() == pytest.approx(
        [32 * 1.25 * np.sqrt(2)]
    )


def test_seeds_are_combined_per_subject_and_kept_per_seed():
    rows = [
        {
            "cell_key": f"c{seed}",
            "seed": seed,
            "subject": subject,
            "phase": "ED",
            "class": "LV",
            "dsc": value,
            "hd95_mm": 1.0,
        }
        for seed, values in ((0, (0.6, 0.8)), (1, (0.7, 1.0)))
        for subject, value in zip(("S1", "S2"), values)
    ]
    summary, per_seed = summarise_block(subject_blocks(subjects_frame(rows))[0], FAST)
    dsc = next(r for r in summary if r["view"] == "dsc")
    assert dsc["mean"] == pytest.approx(np.mean([0.65, 0.9]))
    assert dsc["seed_sd"] == pytest.approx(np.std([0.7, 0.85], ddof=1))
    assert sorted((r["seed"], round(r["mean"], 6)) for r in per_seed if r["view"] == "dsc") == [
        (0, 0.7),
        (1, 0.85),
    ]


# -- pairwise tests, ranks and rank sets ---------------------------------------------------


def board_of(
    rng: np.random.Generator, shifts: tuple[float, ...], budgets=("10", "25"), seeds: int = 3
) -> list[BlockScores]:
    """Blocks of one leaderboard: scratch then one method per shift, run offsets SD 0.005."""
    names = [BASELINE, *(f"m{i}" for i in range(1, len(shifts)))]
    blocks = []
    for budget in budgets:
        base = rng.normal(0.8, 0.03, size=(1, seeds, 30)) + rng.normal(0, 0.01, (1, seeds, 1))
        cube = np.concatenate(
            [
                base
                + shift
                + rng.normal(0, 0.005, size=(1, seeds, 1))
                + rng.normal(0, 0.01, size=(1, seeds, 30))
                for shift in shifts
            ]
        )
        blocks.append(make_block(cube, names, budget))
    return blocks


def test_pairwise_tests_pair_seeds_and_take_scratch_pairs_from_the_leaderboard():
    blocks = board_of(np.random.default_rng(4), (0.0, 0.0, 0.03, -0.03))
    comparisons = pd.DataFrame(compare_board(blocks, FAST))
    rows = pairwise_board(blocks, comparisons, FAST)
    assert len(rows) == 2 * 6  # every pair of 4 methods in both blocks
    with_scratch = [r for r in rows if r["method_a"] == BASELINE]
    for row in with_scratch:  # the leaderboard's own test, Δ negated
        mark = comparisons[
            (comparisons["budget"] == row["budget"]) & (comparisons["method"] == row["method_b"])
        ].iloc[0]
        assert row["family"] == "vs scratch" and row["delta"] == pytest.approx(-mark["delta"])
        assert (row["p"], row["p_holm"], row["separated"]) == (
            mark["p"],
            mark["p_holm"],
            mark["significant"],
        )
    others = [r for r in rows if r["method_a"] != BASELINE]
    assert all(r["family"] == "between methods" for r in others)
    for row in others:
        block = next(b for b in blocks if b.key["budget"] == row["budget"])
        a, b = (
            block.scores["dsc"][block.methods.index(m)] for m in (row["method_a"], row["method_b"])
        )
        hand = hand_estimate(a - b)
        assert row["delta"] == pytest.approx(hand["mean"]) and row["p"] == pytest.approx(hand["p"])
    np.testing.assert_allclose(
        [r["p_holm"] for r in others], multipletests([r["p"] for r in others], method="holm")[1]
    )
    assert all(r["separated"] == (r["p_holm"] < 0.05) for r in others)
    separated = {(r["budget"], r["method_a"], r["method_b"]) for r in rows if r["separated"]}
    assert {("10", "m2", "m3"), ("25", "m2", "m3")} <= separated  # +0.03 against −0.03


def test_ranks_follow_the_means_and_rank_sets_follow_the_separations():
    cube = np.array([0.90, 0.89, 0.70, 0.60])[:, None, None] + np.zeros((4, 2, 3))
    block = make_block(cube, ["a", "b", "c", "d"])
    # hand-worked separations: a–c, a–d and b–d are separated, every other pair is not
    separated = {("a", "c"), ("a", "d"), ("b", "d")}
    pairwise = [
        {**block.key, "method_a": x, "method_b": y, "delta": 1.0, "separated": (x, y) in separated}
        for x, y in itertools.combinations("abcd", 2)
    ]
    out = rank_block(block, pairwise)
    ranks = {r["method"]: (r["rank"], r["rank_low"], r["rank_high"]) for r in out["ranks"]}
    # a: nothing above, c and d below → 1–2; b: d below → 1–3; c: a above → 2–4; d: a, b above → 3–4
    assert ranks == {"a": (1.0, 1, 2), "b": (2.0, 1, 3), "c": (3.0, 2, 4), "d": (4.0, 3, 4)}
    cliques = [sorted(g["method"]) for _, g in pd.DataFrame(out["cliques"]).groupby("clique")]
    assert cliques == [["a", "b"], ["b", "c"], ["c", "d"]]


def test_where_nothing_is_separated_every_method_can_take_every_rank():
    blocks = board_of(np.random.default_rng(7), (0.0, 0.0, 0.0, 0.0), budgets=("10",))
    comparisons = pd.DataFrame(compare_board(blocks, FAST))
    pairwise = pairwise_board(blocks, comparisons, FAST)
    assert not any(r["separated"] for r in pairwise)
    out = rank_block(blocks[0], pairwise)
    assert {(r["rank_low"], r["rank_high"]) for r in out["ranks"]} == {(1, 4)}
    assert [len(g) for _, g in pd.DataFrame(out["cliques"]).groupby("clique")] == [4]


def test_cd_cliques_on_a_hand_worked_example():
    # a, b, c, d by mean rank; a–c, a–d and b–d differ, every other pair does not
    different = {
        frozenset(p): p in {(0, 2), (0, 3), (1, 3)} for p in itertools.combinations(range(4), 2)
    }
    assert cd_cliques(np.array([1.2, 1.5, 2.8, 3.9]), different) == [[0, 1], [1, 2], [2, 3]]
    everything_differs = {k: True for k in different}
    assert cd_cliques(np.array([1.2, 1.5, 2.8, 3.9]), everything_differs) == []
    nothing_differs = {k: False for k in different}
    assert cd_cliques(np.array([3.0, 1.0, 2.0, 4.0]), nothing_differs) == [[1, 2, 0, 3]]


# -- stores: injected effect, edited grid, failed seed --------------------------------------


@pytest.fixture(scope="module")
def effect_store(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("effect-store")
    grid = SyntheticGrid(
        methods=("scratch", "simclr", "mim", "dino"),
        budgets=("10", "all"),
        n_subjects=30,
        effects={"mim": 0.1},
        unannotated_rv_every=6,
    )
    write_synthetic_store(run_dir, grid)
    return load_store(run_dir)


def test_store_comparisons_equal_a_pandas_recomputation_and_scipy_wilcoxon(effect_store):
    statistics = Statistics(effect_store, FAST)
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    conditional = statistics["subject_level"]
    subjects = effect_store.subjects
    annotated = subjects[subjects["annotated"]]
    per_run = annotated.groupby(["budget", "method", "seed", "subject"], observed=True)[
        "dsc"
    ].mean()
    for budget, frame in per_run.groupby(level="budget"):
        wide = frame.droplevel("budget").unstack("method")
        methods = ["dino", "mim", "simclr"]
        differences = {m: wide[m] - wide["scratch"] for m in methods}
        wilcoxon = [
            sps.wilcoxon(differences[m].groupby(level="subject").mean()).pvalue for m in methods
        ]
        rows = comparisons[comparisons["budget"] == budget].set_index("method")
        np.testing.assert_allclose(
            rows.loc[methods, "delta"], [differences[m].mean() for m in methods]
        )
        tests = conditional[conditional["budget"] == budget].set_index("method")
        np.testing.assert_allclose(tests.loc[methods, "wilcoxon_p"], wilcoxon)
        np.testing.assert_allclose(
            tests.loc[methods, "wilcoxon_p_holm"], multipletests(wilcoxon, method="holm")[1]
        )
        if budget == "10":
            seed_means = {m: differences[m].groupby(level="seed").mean() for m in methods}
            # the paired t on per-seed means is the floor of the run-level p (subject term ≥ 0)
            assert all(
                rows.loc[m, "p"] >= sps.ttest_1samp(seed_means[m], 0).pvalue - 1e-12
                for m in methods
            )
    assert "wilcoxon_p" not in comparisons and "wilcoxon_p_holm" not in statistics["leaderboard"]


def test_injected_effect_is_flagged_better_and_ranked_first(effect_store):
    statistics = Statistics(effect_store, FAST)
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    mim = comparisons[comparisons["method"] == "mim"].set_index("budget")
    assert mim.loc["10", "significant"] and mim.loc["10", "direction"] == "better"
    assert mim.loc["10", "ci_low"] > 0 and mim.loc["10", "delta"] > 0.04
    assert not mim.loc["all", "significant"] and np.isnan(mim.loc["all", "ci_low"])
    assert mim.loc["all", "note"] == "1 run: not tested against training variability, no interval"
    ranks = statistics["ranks"]
    for _, in_budget in ranks.groupby("budget"):
        assert in_budget.sort_values("rank")["method"].iloc[0] == "mim"
    top = ranks[(ranks["method"] == "mim") & (ranks["budget"] == "10")].iloc[0]
    # separated from scratch (the mark); the other pairs decide whether it is surely first
    assert top["rank_low"] == 1 and top["rank_high"] < 4
    board = statistics["leaderboard"].set_index(["method", "budget"])
    assert board.loc[("mim", "10"), "top_set"] and not board.loc[("scratch", "10"), "top_set"]
    assert not board.xs("all", level="budget")["top_set"].any()  # one run: nothing tested
    assert statistics.structures == ["LV", "MYO", "RV"]


def test_equal_methods_with_run_offsets_get_no_marks(tmp_path):
    """The issue's store: every method equals scratch, each run has its own offset."""
    write_synthetic_store(
        tmp_path,
        SyntheticGrid(
            methods=("scratch", "a", "b", "c", "d"),
            budgets=("10", "25", "50"),
            n_subjects=80,
            run_noise_sd=0.01,
            seed=3,
        ),
    )
    store = load_store(tmp_path)
    statistics = Statistics(store, FAST)
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    assert len(comparisons) == 12 and comparisons["significant"].sum() == 0
    assert (comparisons["family_size"] == 12).all()
    assert not statistics["pairwise"]["separated"].any()
    assert (statistics["subject_level"]["wilcoxon_p_holm"] < 0.05).sum() >= 6


def edited_grid_store(run_dir, record_grid: bool = True) -> None:
    """A run, then a rerun into the same folder with different dataset options (same cell
    identities, different keys) and one more seed."""
    first = SyntheticGrid(
        methods=("scratch", "mim"),
        budgets=("10",),
        seeds=(0, 1),
        n_subjects=20,
        effects={"mim": 0.3},
        options={"split": "old"},
    )
    write_synthetic_store(run_dir, first)
    write_synthetic_store(
        run_dir,
        SyntheticGrid(
            methods=("scratch", "mim"),
            budgets=("10",),
            seeds=(0, 1, 2),
            n_subjects=20,
            options={"split": "new"},
            seed=1,
            record_grid=record_grid,
        ),
    )


def test_an_edited_grid_rerun_uses_only_the_new_grid_and_sets_the_rest_aside(tmp_path):
    edited_grid_store(tmp_path)
    store = load_store(tmp_path)
    assert len(store.cells) == 6 and len(store.set_aside) == 4
    assert set(store.set_aside["reason"]) == {"not in this grid"}
    assert store.subjects["cell_key"].nunique() == 6
    statistics = Statistics(store, FAST)
    board = statistics["leaderboard"].set_index("method")
    assert board.loc["mim", "seeds_done"] == 3 and board.loc["mim", "seeds_expected"] == 3
    assert board.loc["mim", "delta"] < 0.1  # the old run's +0.3 is not pooled in


def test_without_a_grid_list_conflicting_configurations_are_never_merged(tmp_path):
    edited_grid_store(tmp_path, record_grid=False)
    store = load_store(tmp_path)
    # seeds 0 and 1 exist under both configurations: all 8 of those cells are set aside
    assert len(store.set_aside) == 8 and set(store.cells["seed"]) == {2}
    assert "different key" in store.set_aside["reason"].iloc[0]


def test_a_failed_seed_gives_a_partial_cell_that_cannot_be_top(tmp_path):
    write_synthetic_store(
        tmp_path,
        SyntheticGrid(
            methods=("scratch", "mim", "simclr"),
            budgets=("10",),
            n_subjects=30,
            effects={"simclr": 0.03, "mim": 0.01},
            failed=(("simclr", "10"),),
        ),
    )
    store = load_store(tmp_path)
    statistics = Statistics(store, FAST)
    board = statistics["leaderboard"].set_index("method")
    assert board.loc["simclr", "status"] == "partial" and board.loc["simclr", "seeds_failed"] == 1
    assert board["mean"].idxmax() == "simclr" and not board.loc["simclr", "top_set"]
    assert board.loc["mim", "top_set"]
    assert (statistics["ranks"]["n_seeds"] == 2).all()
    comparisons = statistics["comparisons"][statistics["comparisons"]["view"] == "dsc"]
    simclr = comparisons.set_index("method").loc["simclr"]
    assert simclr["n_seeds"] == 2


def test_one_pretraining_run_per_method_is_recognised_from_the_cells(tmp_path):
    grids = {
        seeds: SyntheticGrid(
            methods=("scratch", "mim", "mim_enc"),
            budgets=("10", "all"),
            n_subjects=6,
            pretrain_seeds=seeds,
            pretrain_as={"mim_enc": "mim"},
        )
        for seeds in ("single", "tied")
    }
    for seeds, grid in grids.items():
        write_synthetic_store(tmp_path / seeds, grid)
        store = load_store(tmp_path / seeds)
        # mim_enc reuses mim's job: one job with single, one per seed with tied
        assert len(store.pretrain) == (1 if seeds == "single" else 3)
        board = Statistics(store, FAST)["leaderboard"].set_index(["method", "budget"])
        assert board.loc[("scratch", "10"), "pretrain_runs"] == 0
        assert board.loc[("mim_enc", "10"), "pretrain_runs"] == (1 if seeds == "single" else 3)
        assert board.loc[("mim", "all"), "pretrain_runs"] == 1  # budget all: checkpoint 0
        assert single_pretraining(board.reset_index()) == (seeds == "single")


# -- the study's questions and the summary across blocks ---------------------------------------


def test_class_and_phase_comparisons_use_the_same_estimand(effect_store):
    statistics = Statistics(effect_store, FAST)
    rows = statistics["comparisons"].set_index(["budget", "method", "view"])
    subjects = effect_store.subjects
    lv = subjects[(subjects["class"] == "LV") & (subjects["budget"] == "10")]
    per_run = (
        lv.groupby(["method", "seed", "subject"], observed=True)["dsc"].mean().unstack("method")
    )
    assert rows.loc[("10", "mim", "dsc_LV"), "delta"] == pytest.approx(
        (per_run["mim"] - per_run["scratch"]).mean()
    )
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


def test_vendor_interaction_without_a_subject_term_is_a_t_test_on_per_seed_interactions():
    vendors = np.array(["A", "B", "C", "D"] * 3)
    seen = np.isin(vendors, ["A", "B"])
    scratch = np.repeat(np.array([0.80, 0.83, 0.78])[:, None], 12, axis=1)
    interaction = np.array([0.04, 0.01, 0.03])  # extra gain on unseen vendors, per seed
    method = scratch + 0.02 + np.where(seen, 0.0, interaction[:, None])
    block = make_block(np.stack([scratch, method]), [BASELINE, "mim"])
    block.meta = {"vendor": vendors, "seen_vendor": seen}
    row = vendor_interaction([block], FAST)[0]
    test = sps.ttest_1samp(interaction, 0.0)
    assert (row["unseen"], row["seen"], row["n_seeds"]) == ("C+D", "A+B", 3)
    assert row["delta_seen"] == pytest.approx(0.02)
    assert row["delta_unseen"] == pytest.approx(0.02 + interaction.mean())
    assert row["interaction"] == pytest.approx(interaction.mean())
    assert row["p"] == pytest.approx(test.pvalue) and row["p_holm"] == pytest.approx(test.pvalue)
    interval = test.confidence_interval(0.95)  # one test: Bonferroni over m = 1
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert row["family_size"] == 1


def test_augmented_scratch_is_compared_with_each_ssp_method_without_augmentation():
    rng = np.random.default_rng(22)
    subject = rng.normal(0.8, 0.03, size=(1, 1, 30))
    subset = rng.normal(0, 0.01, size=(1, 3, 1))
    plain = (
        subject + subset + np.array([0.0, 0.02])[:, None, None] + rng.normal(0, 0.005, (2, 3, 30))
    )
    augmented = (
        subject + subset + np.array([0.05])[:, None, None] + rng.normal(0, 0.005, (1, 3, 30))
    )
    none_block = make_block(plain, [BASELINE, "mim"])
    paper_block = make_block(augmented, [BASELINE])
    paper_block.key = {**paper_block.key, "augmentation": "paper"}
    rows = augmentation_vs_ssp([none_block, paper_block], FAST)
    assert len(rows) == 1 and rows[0]["method"] == "mim"
    assert rows[0]["augmentation"] == "scratch paper vs mim none"
    assert rows[0]["delta"] == pytest.approx((augmented[0] - plain[1]).mean())
    assert rows[0]["significant"] and rows[0]["direction"] == "better"
    assert rows[0]["ci_low"] > 0 and rows[0]["family_size"] == 1


def test_across_blocks_summary_on_hand_computed_curves():
    keys = {"dataset": "d", "encoder": "e", "augmentation": "none", "setting": "default"}
    summary = pd.DataFrame(
        [
            {**keys, "view": "dsc", "method": m, "budget": b, "n_labelled": n, "mean": v}
            for m, values in ((BASELINE, (0.70, 0.80, 0.90)), ("mim", (0.76, 0.84, 0.90)))
            for b, n, v in zip(("10", "100", "all"), (10, 100, 1000), values)
        ]
    )
    comparisons = pd.DataFrame(
        [
            {
                **keys,
                "budget": b,
                "view": "dsc",
                "method": "mim",
                "p": p,
                "significant": sig,
                "direction": "better" if sig else "",
            }
            for b, p, sig in (("10", 0.01, True), ("100", 0.2, False), ("all", np.nan, False))
        ]
    )
    ranks = pd.DataFrame(
        [
            {**keys, "budget": b, "method": m, "rank": r}
            for b, pair in (("10", (2.0, 1.0)), ("100", (1.0, 2.0)))
            for m, r in zip((BASELINE, "mim"), pair)
        ]
    )
    table = across_blocks(summary, comparisons, ranks).set_index("method")
    # equal log steps: area / range = (0.76/2 + 0.84 + 0.90/2) / 2 and (0.70/2 + 0.80 + 0.90/2) / 2
    assert table.loc["mim", "aulc"] == pytest.approx(0.835)
    assert table.loc["mim", "delta_aulc"] == pytest.approx(0.835 - 0.80)
    assert (table.loc["mim", "n_better"], table.loc["mim", "n_tested"]) == (1, 2)
    assert table.loc["mim", "mean_rank"] == pytest.approx(1.5)


# -- clinical agreement -------------------------------------------------------------------


def test_clinical_agreement_matches_hand_computed_bias_limits_mae_and_intervals():
    base = {
        "dataset": "d",
        "encoder": "e",
        "augmentation": "none",
        "setting": "default",
        "budget": "10",
        "quantity": "LV_EF",
        "unit": "%",
    }
    differences = {0: [2.0, -1.0, 5.0], 1: [0.0, 1.0, 2.0]}
    rows = [
        {**base, "method": "mim", "seed": seed, "subject": f"S{i}", "ref": 50.0, "pred": 50.0 + d}
        for seed, values in differences.items()
        for i, d in enumerate(values)
    ]
    rows.append({**base, "method": "mim", "seed": 0, "subject": "S9", "ref": np.nan, "pred": 40.0})
    rows += [
        {**base, "method": BASELINE, "seed": seed, "subject": f"S{i}", "ref": 50.0, "pred": 53.0}
        for seed in (0, 1)
        for i in range(3)
    ]
    rows.append({**base, "method": "mim", "seed": 1, "subject": "S8", "ref": 60.0, "pred": np.nan})
    table = clinical_agreement(pd.DataFrame(rows)).set_index("method")
    row = table.loc["mim"]
    # S8's EF is undefined in seed 1 only (counted as 0 %, error −60); S8 lacks seed 0, so the
    # complete seed × subject matrix is S0–S2: errors [[2, −1, 5], [0, 1, 2]]
    assert row["n_undefined"] == 1 and (row["n_subjects"], row["n_seeds"]) == (3, 2)
    assert row["bias"] == pytest.approx(1.5)
    assert row["mae"] == pytest.approx(11 / 6)
    assert row["bias_seed_sd"] == pytest.approx(np.std([2.0, 1.0], ddof=1))
    # MS_seed 1.5, MS_subject 6.5, MS_residual 3.5: the seed component is 0 (1.5 < 3.5), so
    # σ² = MS_subject / S + (1 − 1/S) MS_residual = 3.25 + 1.75 = 5, a new run on a new subject
    sd = np.sqrt(5.0)
    assert row["sd"] == pytest.approx(sd)
    assert (row["loa_low"], row["loa_high"]) == pytest.approx((1.5 - 1.96 * sd, 1.5 + 1.96 * sd))
    # bias: var = (1.5 + 3.0) / 6, t on 1 df
    t975 = sps.t.ppf(0.975, 1)
    half_width = t975 * np.sqrt(0.75)
    assert (row["bias_ci_low"], row["bias_ci_high"]) == pytest.approx(
        (1.5 - half_width, 1.5 + half_width)
    )
    # Var(σ̂²) = 2 (3.25)² / 2 + 2 (1.75)² / 2 = 13.625 (subject df 2, residual df 2), not the
    # 2 σ⁴ / (6 − 1) of six independent errors; Var(σ̂) = 13.625 / (4 · 5)
    limit_se = np.sqrt(0.75 + 1.96**2 * 13.625 / 20)
    assert row["loa_high_ci_high"] == pytest.approx(1.5 + 1.96 * sd + t975 * limit_se)
    assert row["loa_low_ci_low"] == pytest.approx(1.5 - 1.96 * sd - t975 * limit_se)
    # MAE on the log scale: |errors| [[2, 1, 5], [0, 1, 2]] give MS_seed 25/6, MS_subject 25/6,
    # MS_residual 7/6, so SE² = (25/6 + 3) / 6
    mae_se = np.sqrt((25 / 6 + 3) / 6)
    spread = t975 * mae_se / (11 / 6)
    assert (row["mae_ci_low"], row["mae_ci_high"]) == pytest.approx(
        (11 / 6 * np.exp(-spread), 11 / 6 * np.exp(spread))
    )
    assert row["delta_mae"] == pytest.approx(11 / 6 - 3.0)  # scratch's MAE is 3
    assert np.isnan(table.loc[BASELINE, "delta_mae"])


# -- labels saved ----------------------------------------------------------------------------


def test_labels_for_interpolates_on_log_budget_at_the_first_crossing():
    log_n = np.log([10.0, 100.0, 1000.0])
    curves = np.array(
        [
            [0.70, 0.80, 0.90],
            [0.70, 0.80, 0.90],
            [0.70, 0.90, 0.80],
            [0.70, 0.80, 0.90],
            [0.70, 0.80, 0.90],
        ]
    )
    found = labels_for(np.array([0.75, 0.85, 0.85, 0.95, 0.65]), log_n, curves)
    assert found[:3] == pytest.approx([10**1.5, 10**2.5, 10**1.75])  # first crossing wins
    assert found[3] == np.inf and found[4] == -np.inf


def labels_saved_board(scope: str = "runs", error: float = 0.004) -> tuple[pd.DataFrame, dict]:
    keys = {"dataset": "d", "encoder": "unet2d", "augmentation": "none", "setting": "default"}
    means = {
        (BASELINE, "10"): 0.70,
        (BASELINE, "100"): 0.80,
        ("mim", "10"): 0.75,
        ("mim", "100"): 0.85,
    }
    cells = pd.DataFrame(
        [
            {**keys, "method": m, "budget": b, "seed": s, "status": "done", "pretrain_key": None}
            for m, b in means
            for s in (0, 1, 2)
        ]
    )
    summary = pd.DataFrame(
        [
            {
                **keys,
                "method": m,
                "budget": b,
                "view": "dsc",
                "n_labelled": int(b),
                "mean": v,
                "ci_low": v - 0.01,
                "ci_high": v + 0.01,
                "scope": scope if m == "mim" else "runs",
                "standard_error": error,
                "df": 2.0,
                "n_subjects": 10,
            }
            for (m, b), v in means.items()
        ],
        columns=CATALOGUE["summary"].column_names,
    )
    board = leaderboard_table(
        cells, summary, CATALOGUE["comparisons"].frame(), CATALOGUE["pairwise"].frame(), FAST
    )
    return board[board["method"] == "mim"].set_index("budget"), keys


def test_labels_saved_interpolates_scratch_on_log_budget_with_a_propagated_interval():
    from cmrbench.reports.leaderboard import labels_saved_text
    from cmrbench.reports.stats import TEST_SET_ONLY

    mim, keys = labels_saved_board()
    assert mim.loc["10", "scratch_equivalent"] == pytest.approx(np.sqrt(10 * 100))  # halfway in log
    assert np.isnan(mim.loc["100", "scratch_equivalent"])
    assert (
        mim.loc["100", "scratch_equivalent_note"]
        == "above scratch at every budget (> 100 subjects)"
    )
    # the same draws by an explicit loop: mim's mean, then scratch's two means, each mean + SE · t
    rng = block_generator(FAST, {**keys, "method": "mim", "budget": "10"}, "labels-saved")
    target = 0.75 + 0.004 * rng.standard_t(np.array([2.0]), size=(FAST.n_resamples, 1))[:, 0]
    curve = np.array([0.70, 0.80]) + 0.004 * rng.standard_t(
        np.array([2.0, 2.0]), size=(FAST.n_resamples, 2)
    )
    equivalents = [10 ** (1 + (t - c[0]) / (c[1] - c[0])) for t, c in zip(target, curve)]
    low, high = np.percentile(equivalents, [2.5, 97.5])
    assert (
        mim.loc["10", "scratch_equivalent_low"],
        mim.loc["10", "scratch_equivalent_high"],
    ) == pytest.approx((low, high))
    assert low < np.sqrt(1000) < high
    assert labels_saved_text(mim.loc["10"]).startswith("31.6 [")
    one_run, _ = labels_saved_board(scope=TEST_SET_ONLY)
    assert np.isnan(one_run.loc["10", "scratch_equivalent_low"])
    assert labels_saved_text(one_run.loc["10"]) == "31.6 (no interval: one run at this budget)"
    wide, _ = labels_saved_board(error=0.05)  # draws beyond scratch's budgets leave ends open
    assert np.isnan(wide.loc["10", "scratch_equivalent_low"])
    assert "open below: under 10 subjects" in wide.loc["10", "scratch_equivalent_note"]
    assert labels_saved_text(wide.loc["10"]).startswith("31.6 […, ")
