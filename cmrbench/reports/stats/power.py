"""Power: the Δ a leaderboard's run-level test detects, and the seeds a given Δ needs.

From the variance components of the paired differences with scratch (`comparisons`), pooled
over a block's methods: the smallest Δ the leaderboard's test finds with 80 % power, and the
fewest seeds that find a given Δ (``cmrbench stats RUN --power 0.02``). Two things make it
plan honestly:

* the level is the family's: a comparison is tested among the m comparisons of its leaderboard,
  and a single true difference among them is marked when p < α/m (Holm's first step), so the
  power is that of a two-sided t-test at α/m on S − 1 df (noncentral t);
* the run-to-run variance is estimated on S − 1 df (two at three seeds), so it is replaced by
  its one-sided 80 % upper confidence bound ``(S − 1) s² / χ²(0.2; S − 1)`` (Browne, J. Appl.
  Stat. 1995: a pilot's variance planned at its upper confidence limit reaches the intended
  power in most studies, where the point estimate reaches it in about half).

On the command line only, not on the site.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from cmrbench.reports.stats.blocks import BLOCK_KEYS, MAIN_VIEW
from cmrbench.reports.stats.catalogue import Analysis, Column, Context, Table, shared_columns
from cmrbench.reports.stats.estimates import ALPHA

POWER = 0.8
VARIANCE_UPPER_CONFIDENCE = 0.8
MAX_SEEDS_FOR_POWER = 100
POWER_TABLE = Table(
    "power",
    "per block: variance components, the Δ detectable at 80 % power at the family's "
    "level with an upper bound on the run variance, the seeds a Δ needs (--power DELTA)",
    (
        *shared_columns(),
        Column("n_methods", "methods tested on 2 seeds or more (pooled)"),
        Column("n_seeds", "seeds of the block"),
        Column("n_subjects", "test subjects of the block"),
        Column("family_size", "m: tested comparisons with scratch on the leaderboard (the family)"),
        Column("alpha_per_test", "the level a single true difference is tested at: 0.05 / m"),
        Column("sd_run", "run-to-run SD of the differences to scratch"),
        Column("sd_subject", "subject-to-subject SD of the differences"),
        Column("sd_residual", "residual SD"),
        Column("sd_seed_mean", "SD of a per-seed mean difference (run and residual terms)"),
        Column(
            "sd_seed_mean_upper",
            "its one-sided 80 % upper confidence bound (chi-square on "
            "S − 1 df): what the power is planned with",
        ),
        Column(
            "detectable_delta", "smallest true Δ found with 80 % power at these seeds and subjects"
        ),
        Column("delta", "the Δ asked for (--power), empty without it"),
        Column("seeds_needed", "fewest seeds that detect delta with 80 % power (empty beyond 100)"),
    ),
    downloads=(),
)


def variance_upper_bound(
    variance: float, df: float, confidence: float = VARIANCE_UPPER_CONFIDENCE
) -> float:
    """One-sided upper confidence bound of a variance estimated on ``df`` degrees of freedom:
    ``df · variance / χ²(1 − confidence; df)``."""
    return float(df * variance / sps.chi2.ppf(1.0 - confidence, df))


def detectable_difference(
    seed_variance: float,
    subject_variance: float,
    n_seeds: int,
    n_subjects: int,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """The smallest true Δ the run-level test detects with ``power`` (two-sided, level α).

    Standard error ``sqrt(seed_variance / S + subject_variance / N)`` on S − 1 df, where
    ``seed_variance`` is the variance of a per-seed mean difference (run plus residual / N);
    the power of the t-test uses the noncentral t distribution. NaN below 2 seeds.
    """
    if n_seeds < 2 or n_subjects < 1 or np.isnan([seed_variance, subject_variance]).any():
        return np.nan
    standard_error = np.sqrt(seed_variance / n_seeds + subject_variance / n_subjects)
    df = n_seeds - 1
    critical = sps.t.ppf(1.0 - alpha / 2.0, df)

    def shortfall(noncentrality: float) -> float:
        # the wrong-sign tail is negligible here, and scipy's nct returns NaN for some of it
        wrong_sign = np.nan_to_num(sps.nct.cdf(-critical, df, noncentrality))
        return float(sps.nct.sf(critical, df, noncentrality) + wrong_sign - power)

    upper = 1.0
    while shortfall(upper) < 0:  # bracket the root; nct is unstable far beyond it
        upper *= 2.0
    return float(optimize.brentq(shortfall, 0.0, upper) * standard_error)


def seeds_needed(
    seed_variance: float,
    subject_variance: float,
    n_subjects: int,
    delta: float,
    alpha: float = ALPHA,
    power: float = POWER,
) -> int | None:
    """The fewest seeds (≥ 2) whose detectable Δ is at most ``delta``; None beyond
    `MAX_SEEDS_FOR_POWER`."""
    for n_seeds in range(2, MAX_SEEDS_FOR_POWER + 1):
        found = detectable_difference(
            seed_variance, subject_variance, n_seeds, n_subjects, alpha, power
        )
        if found <= abs(delta):
            return n_seeds
    return None


def power_table(comparisons: pd.DataFrame, delta: float | None = None) -> pd.DataFrame:
    """Per block (main view): variance components pooled over the compared methods, the Δ
    detectable at 80 % power at α/m with the block's seeds and subjects and the upper bound of
    the seed variance, and the seeds ``delta`` needs.

    The components are those of the paired differences with scratch (`run_level_estimates`),
    averaged over the methods tested on at least 2 seeds; blocks without any are left out.
    The upper bound keeps the block's S − 1 df (the methods share scratch's runs, so pooling
    them does not add independent degrees of freedom).
    """
    tested = comparisons[
        (comparisons["view"] == MAIN_VIEW)
        & (comparisons["n_seeds"] >= 2)
        & (comparisons["n_subjects"] >= 2)
    ]
    rows = []
    for key, frame in tested.groupby(list(BLOCK_KEYS), sort=False):
        var_run, var_subject, var_residual = (
            float(frame[c].mean()) for c in ("var_run", "var_subject", "var_residual")
        )
        n_seeds, n_subjects = int(frame["n_seeds"].max()), int(frame["n_subjects"].max())
        family_size = int(frame["family_size"].max())
        alpha = ALPHA / family_size
        seed_variance = var_run + var_residual / n_subjects
        upper = variance_upper_bound(seed_variance, n_seeds - 1)
        rows.append(
            {
                **dict(zip(BLOCK_KEYS, key)),
                "n_methods": len(frame),
                "n_seeds": n_seeds,
                "n_subjects": n_subjects,
                "family_size": family_size,
                "alpha_per_test": alpha,
                **{
                    f"sd_{name}": float(np.sqrt(v))
                    for name, v in zip(
                        ("run", "subject", "residual"), (var_run, var_subject, var_residual)
                    )
                },
                "sd_seed_mean": float(np.sqrt(seed_variance)),
                "sd_seed_mean_upper": float(np.sqrt(upper)),
                "detectable_delta": detectable_difference(
                    upper, var_subject, n_seeds, n_subjects, alpha
                ),
                "delta": np.nan if delta is None else float(delta),
                "seeds_needed": None
                if delta is None
                else seeds_needed(upper, var_subject, n_subjects, delta, alpha),
            }
        )
    return POWER_TABLE.frame(rows)


def compute(context: Context) -> dict[str, pd.DataFrame]:
    return {"power": power_table(context["comparisons"], context.power_delta)}


ANALYSIS = Analysis((POWER_TABLE,), compute)
