"""The run-level estimate behind every interval and test, Holm, the Wilcoxon test, resampling.

A method's claim is about training runs, so the unit of every primary test and interval is the
run (one seed: one labelled subset and one training), with the test subjects as a second,
crossed source of variance (de Mooij et al., arXiv 2409.18100, train three subsets per
budget): a seed × subject score matrix ``y[s, n]`` (or the paired differences to scratch on
the seeds both share) follows ``μ + a_s + b_n + e``. The estimate is the grand mean; its
variance is the between-seed variance of the per-seed means over S plus the subject term
``max(MS_subject − MS_residual, 0) / (S·N)`` (two-way crossed random-effects ANOVA); the
interval and the test use t on S − 1 degrees of freedom (`run_level_estimates`), so Δ, its CI
and the p-value share one estimand. With σ_subject = 0 this is the paired t-test on per-seed
mean differences. One seed gives an interval over test subjects only ("test set only": t on
N − 1 df, conditional on that trained model) and no test; one test subject gives neither.
Resamples are drawn from a generator seeded by `BootstrapConfig.seed` and the block's key
(`block_generator`), so a block's numbers do not depend on which other blocks the store holds.
"""

from __future__ import annotations

import gc
import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
RUNS, TEST_SET_ONLY = "runs", "test set only"


@dataclass(frozen=True)
class BootstrapConfig:
    """Resamples and generator seed of rank stability, and the confidence of every interval."""

    n_resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {self.n_resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests``); NaN entries stay NaN."""
    pvalues = np.asarray(pvalues, dtype=float)
    adjusted = np.full(pvalues.shape, np.nan)
    finite = ~np.isnan(pvalues)
    if finite.any():
        # multipletests runs gc.collect() on every Holm call, which costs ~0.1 s on a report's
        # heap; frozen objects are skipped by the collector, so freezing makes it cheap.
        gc.freeze()
        try:
            adjusted[finite] = multipletests(pvalues[finite], alpha=ALPHA, method="holm")[1]
        finally:
            gc.unfreeze()
    return adjusted


def wilcoxon_pvalue(differences: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank ``(statistic, p)`` of paired differences ``(n,)`` (scipy).

    All-zero differences give statistic 0 and p = 1 for any n (scipy returns NaN for them
    from n = 14 on); no differences give NaN.
    """
    differences = np.asarray(differences, dtype=float)
    differences = differences[~np.isnan(differences)]
    if differences.size == 0:
        return np.nan, np.nan
    if not differences.any():
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = sps.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def run_level_estimates(values: np.ndarray, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Grand mean of complete ``(..., S, N)`` seed × subject matrices with its t interval and test.

    Model ``y[s, n] = μ + a_s + b_n + e`` (random seed and subject, two-way crossed ANOVA
    without replication). For S ≥ 2 the variance of the mean is
    ``(MS_seed + max(MS_subject − MS_residual, 0)) / (S·N)``, i.e. the between-seed variance
    of the per-seed means over S plus the subject term, on S − 1 df (without a subject term
    this is the paired t-test on per-seed means); for one seed it is the
    subject variance over N on N − 1 df ("test set only"). With fewer than two subjects there
    is no interval. The p-value tests μ = 0 (two-sided) with the same standard error and df
    as the interval; a zero standard error gives p = 1 when the mean is 0, else 0.

    Returns arrays of the leading shape: ``estimate, standard_error, df, ci_low, ci_high,
    statistic, p, var_run, var_subject, var_residual`` (the variance components, S ≥ 2 only).
    """
    values = np.asarray(values, dtype=float)
    seeds, subjects = values.shape[-2:]
    shape = values.shape[:-2]
    nan = np.full(shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = values.mean(axis=(-2, -1)) if values.size else nan.copy()
        components = {"var_run": nan, "var_subject": nan, "var_residual": nan}
        if seeds >= 2 and subjects >= 2:
            seed_means, subject_means = values.mean(axis=-1), values.mean(axis=-2)
            ms_seed = subjects * seed_means.var(axis=-1, ddof=1)
            ms_subject = seeds * subject_means.var(axis=-1, ddof=1)
            residual = (values - seed_means[..., :, None] - subject_means[..., None, :]
                        + estimate[..., None, None])
            ms_residual = (residual ** 2).sum(axis=(-2, -1)) / ((seeds - 1) * (subjects - 1))
            subject_term = np.maximum(ms_subject - ms_residual, 0.0)
            variance = (ms_seed + subject_term) / (seeds * subjects)
            # S − 1 df even with a subject term: Satterthwaite's larger df rejected 7–12 % of
            # null comparisons at 2–3 seeds in simulation; S − 1 keeps the level at or below α
            df = np.full(shape, float(seeds - 1))
            components = {"var_run": np.maximum(ms_seed - ms_residual, 0.0) / subjects,
                          "var_subject": subject_term / seeds, "var_residual": ms_residual}
        elif seeds == 1 and subjects >= 2:
            variance = values[..., 0, :].var(axis=-1, ddof=1) / subjects
            df = np.full(shape, float(subjects - 1))
        else:
            variance, df = nan, nan
        standard_error = np.sqrt(variance)
        # scipy.special's t functions: what sps.t.ppf / sps.t.sf compute, without their
        # per-call overhead (a report makes tens of thousands of these calls)
        quantile = special.stdtrit(df, 0.5 + confidence / 2.0)
        statistic = estimate / standard_error
        p = 2.0 * special.stdtr(df, -np.abs(statistic))
        degenerate = (standard_error == 0) & ~np.isnan(estimate)
        p = np.where(degenerate, np.where(estimate == 0, 1.0, 0.0), p)
        statistic = np.where(degenerate & (estimate == 0), 0.0, statistic)
    return {"estimate": estimate, "standard_error": standard_error, "df": df,
            "ci_low": estimate - quantile * standard_error,
            "ci_high": estimate + quantile * standard_error, "statistic": statistic, "p": p,
            **components}


def complete_matrix(scores: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """The complete seed × subject sub-matrix of one method's ``(S, N)`` scores.

    Keeps the seeds in ``seeds`` (bool ``(S,)``; default: those with any value), then the
    subjects with a value in every kept seed.
    """
    if seeds is None:
        seeds = ~np.isnan(scores).all(axis=1)
    kept = scores[seeds]
    return kept[:, ~np.isnan(kept).any(axis=0) & (len(kept) > 0)]


def interval_scope(n_seeds: int, n_subjects: int) -> str:
    """What an interval covers: training runs and subjects, the test set only, or nothing."""
    if n_subjects < 2 or n_seeds < 1:
        return ""
    return RUNS if n_seeds >= 2 else TEST_SET_ONLY


def block_generator(config: BootstrapConfig, key: dict[str, str],
                    purpose: str) -> np.random.Generator:
    """A generator seeded by the config seed, the block's key and what it is drawn for."""
    text = "|".join(f"{k}={key[k]}" for k in sorted(key)) + "|" + purpose
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng([config.seed, digest])

