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

Tests come in families (`adjust_family`): Holm's step-down over the family's tested
comparisons gives the marks, and each Δ gets the Bonferroni simultaneous interval at level
1 − α/m (m tested comparisons in the family), so an interval that excludes 0 always carries a
mark. A mean's interval stays inside its metric's range (`bounded_interval`: the delta method
on the logit scale for DSC, on the log scale for HD95, back-transformed).
Random draws come from a generator seeded by `BootstrapConfig.seed` and the block's key
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
    """Random draws (and their generator seed) of the "labels saved" intervals, and the
    confidence of every interval; α = 1 − confidence is the level of every family's marks."""

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
    statistic, p, var_run, var_subject, var_residual`` (the variance components) and
    ``ms_seed, ms_subject, ms_residual`` (the mean squares), the last six for S ≥ 2 only.
    """
    values = np.asarray(values, dtype=float)
    seeds, subjects = values.shape[-2:]
    shape = values.shape[:-2]
    nan = np.full(shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = values.mean(axis=(-2, -1)) if values.size else nan.copy()
        components = {
            "var_run": nan,
            "var_subject": nan,
            "var_residual": nan,
            "ms_seed": nan,
            "ms_subject": nan,
            "ms_residual": nan,
        }
        if seeds >= 2 and subjects >= 2:
            seed_means, subject_means = values.mean(axis=-1), values.mean(axis=-2)
            ms_seed = subjects * seed_means.var(axis=-1, ddof=1)
            ms_subject = seeds * subject_means.var(axis=-1, ddof=1)
            residual = (
                values
                - seed_means[..., :, None]
                - subject_means[..., None, :]
                + estimate[..., None, None]
            )
            ms_residual = (residual**2).sum(axis=(-2, -1)) / ((seeds - 1) * (subjects - 1))
            subject_term = np.maximum(ms_subject - ms_residual, 0.0)
            variance = (ms_seed + subject_term) / (seeds * subjects)
            # S − 1 df even with a subject term: Satterthwaite's larger df rejected 7–12 % of
            # null comparisons at 2–3 seeds in simulation; S − 1 keeps the level at or below α
            df = np.full(shape, float(seeds - 1))
            components = {
                "var_run": np.maximum(ms_seed - ms_residual, 0.0) / subjects,
                "var_subject": subject_term / seeds,
                "var_residual": ms_residual,
                "ms_seed": ms_seed,
                "ms_subject": ms_subject,
                "ms_residual": ms_residual,
            }
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
        p = two_sided_p(statistic, df)
        degenerate = (standard_error == 0) & ~np.isnan(estimate)
        p = np.where(degenerate, np.where(estimate == 0, 1.0, 0.0), p)
        statistic = np.where(degenerate & (estimate == 0), 0.0, statistic)
    return {
        "estimate": estimate,
        "standard_error": standard_error,
        "df": df,
        "ci_low": estimate - quantile * standard_error,
        "ci_high": estimate + quantile * standard_error,
        "statistic": statistic,
        "p": p,
        **components,
    }


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


def block_generator(
    config: BootstrapConfig, key: dict[str, str], purpose: str
) -> np.random.Generator:
    """A generator seeded by the config seed, the block's key and what it is drawn for."""
    text = "|".join(f"{k}={key[k]}" for k in sorted(key)) + "|" + purpose
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng([config.seed, digest])


def alpha_of(confidence: float) -> float:
    """The family-wise error rate that goes with a confidence level (0.95 → 0.05)."""
    return round(1.0 - confidence, 12)


def two_sided_p(statistic: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """Two-sided p-value of a t statistic (scipy.special's ``stdtr``: ``2 · sps.t.sf(|t|)``)."""
    return 2.0 * special.stdtr(df, -np.abs(statistic))


def t_quantile(df: np.ndarray | float, probability: np.ndarray | float) -> np.ndarray:
    """Student's t quantile (scipy.special's ``stdtrit``, what ``sps.t.ppf`` computes)."""
    return special.stdtrit(df, probability)


def bounded_interval(
    estimate: np.ndarray,
    standard_error: np.ndarray,
    df: np.ndarray,
    confidence: float,
    bounds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """A t interval for a mean that stays inside the metric's range ``bounds`` ``(low, high)``.

    Two finite bounds (DSC, [0, 1]): the delta method on the logit scale, ``logit(m) ± t ·
    SE / ((m − low)(high − m))``, back-transformed; a lower bound only (HD95 ≥ 0): on the log
    scale, ``log(m − low) ± t · SE / (m − low)``; no bound: ``m ± t · SE``. An estimate on a
    bound with zero SE (every score 1) gives the point itself. Arrays of any one shape.
    """
    estimate, error = np.asarray(estimate, dtype=float), np.asarray(standard_error, dtype=float)
    low, high = bounds
    half = t_quantile(df, 0.5 + confidence / 2.0) * error
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if np.isfinite(low) and np.isfinite(high):
            width = high - low
            share = (estimate - low) / width
            centre = np.log(share) - np.log1p(-share)
            spread = half / (width * share * (1.0 - share))
            lower = low + width * special.expit(centre - spread)
            upper = low + width * special.expit(centre + spread)
        elif np.isfinite(low):
            above = estimate - low
            lower = low + above * np.exp(-half / above)
            upper = low + above * np.exp(half / above)
        else:
            lower, upper = estimate - half, estimate + half
    degenerate = (error == 0) & ~np.isnan(estimate)
    return np.where(degenerate, estimate, lower), np.where(degenerate, estimate, upper)


def bounded_mean(
    matrix: np.ndarray, confidence: float, bounds: tuple[float, float]
) -> dict[str, float | str]:
    """The mean of one complete ``(S, N)`` seed × subject matrix (`run_level_estimates`)
    with its `bounded_interval` inside ``bounds``: ``mean``, ``ci_low``, ``ci_high``,
    ``scope`` (`interval_scope`), ``standard_error`` and ``df``."""
    estimate = run_level_estimates(matrix, confidence)
    low, high = bounded_interval(
        estimate["estimate"], estimate["standard_error"], estimate["df"], confidence, bounds
    )
    return {
        "mean": float(estimate["estimate"]),
        "ci_low": float(low),
        "ci_high": float(high),
        "scope": interval_scope(*matrix.shape),
        "standard_error": float(estimate["standard_error"]),
        "df": float(estimate["df"]),
    }


def adjust_family(rows: list[dict], confidence: float, limit: float = np.inf) -> list[dict]:
    """Holm's marks and Bonferroni simultaneous intervals over one family of comparisons.

    ``rows`` (updated in place and returned) hold ``delta``, ``standard_error``, ``df`` and
    ``p`` (NaN: not tested, e.g. one run). Over the m tested rows: ``p_holm`` (Holm's
    step-down, statsmodels ``multipletests``), ``significant`` (``p_holm`` < α = 1 −
    ``confidence``) with its ``direction`` (the sign of Δ), and ``ci_low``/``ci_high``, the
    Bonferroni interval ``Δ ± t(1 − α / (2m); df) · SE``: its simultaneous coverage over the
    family is at least 1 − α, and it excludes 0 only when p < α/m, which Holm marks too (Holm
    may also mark a comparison whose interval reaches 0: ``step_down`` says so). Intervals are
    clipped to ``[−limit, limit]`` (a DSC difference lies in [−1, 1]) with ``ci_clipped``
    saying so; an untested row gets no interval. ``family_size`` is m.
    """
    alpha = alpha_of(confidence)
    p = np.array([row["p"] for row in rows], dtype=float)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    adjusted = holm(p)
    for row, p_holm, is_tested in zip(rows, adjusted, tested):
        significant = bool(p_holm < alpha)
        low = high = np.nan
        if is_tested:
            half = float(t_quantile(row["df"], 1.0 - alpha / (2.0 * m))) * row["standard_error"]
            low, high = row["delta"] - half, row["delta"] + half
        row.update(
            p_holm=p_holm,
            significant=significant,
            family_size=m,
            direction=("better" if row["delta"] > 0 else "worse") if significant else "",
            ci_low=max(low, -limit),
            ci_high=min(high, limit),
            ci_clipped=bool(low < -limit or high > limit),
            step_down=bool(significant and low <= 0.0 <= high),
        )
    return rows
