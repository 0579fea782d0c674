"""Power: the Δ a block's run-level test detects, and the seeds a given Δ needs.

From the variance components of the paired differences with scratch (`comparisons`), pooled
over a block's methods: the minimum Δ detectable at 80 % power (two-sided t-test at α = 0.05 on
S − 1 df, noncentral t) with the block's seeds and subjects, and the fewest seeds that detect a
given Δ (``cmrbench stats RUN --power 0.02``). On the command line only, not on the site.
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
MAX_SEEDS_FOR_POWER = 100
POWER_TABLE = Table(
    "power", "per block: variance components, the Δ detectable at 80 % power, the seeds a Δ "
             "needs (--power DELTA)",
    (*shared_columns(), Column("n_methods", "methods tested on 2 seeds or more (pooled)"),
     Column("n_seeds", "seeds of the block"), Column("n_subjects", "test subjects of the block"),
     Column("sd_run", "run-to-run SD of the differences to scratch"),
     Column("sd_subject", "subject-to-subject SD of the differences"),
     Column("sd_residual", "residual SD"),
     Column("detectable_delta", "smallest true Δ found with 80 % power at these seeds and "
                                "subjects"),
     Column("delta", "the Δ asked for (--power), empty without it"),
     Column("seeds_needed", "fewest seeds that detect delta with 80 % power (empty beyond "
                            "100)")),
    downloads=())


def detectable_difference(var_run: float, var_subject: float, var_residual: float, n_seeds: int,
                          n_subjects: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true Δ the run-level test detects with ``power`` (two-sided, level α).

    Standard error ``sqrt(var_run/S + var_subject/N + var_residual/(S·N))`` on S − 1 df;
    the power of the t-test uses the noncentral t distribution. NaN below 2 seeds.
    """
    if n_seeds < 2 or n_subjects < 1 or np.isnan([var_run, var_subject, var_residual]).any():
        return np.nan
    standard_error = np.sqrt(var_run / n_seeds + var_subject / n_subjects
                             + var_residual / (n_seeds * n_subjects))
    df = n_seeds - 1
    critical = sps.t.ppf(1.0 - alpha / 2.0, df)

    def shortfall(noncentrality: float) -> float:
        # the wrong-sign tail is negligible here, and scipy's nct returns NaN for some of it
        wrong_sign = np.nan_to_num(sps.nct.cdf(-critical, df, noncentrality))
        return float(sps.nct.sf(critical, df, noncentrality) + wrong_sign - power)

    upper = 1.0
    while shortfall(upper) < 0:      # bracket the root; nct is unstable far beyond it
        upper *= 2.0
    return float(optimize.brentq(shortfall, 0.0, upper) * standard_error)


def seeds_needed(var_run: float, var_subject: float, var_residual: float, n_subjects: int,
                 delta: float, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """The fewest seeds (≥ 2) whose detectable Δ is at most ``delta``; None beyond
    `MAX_SEEDS_FOR_POWER`."""
    for n_seeds in range(2, MAX_SEEDS_FOR_POWER + 1):
        found = detectable_difference(var_run, var_subject, var_residual, n_seeds, n_subjects,
                                      power, alpha)
        if found <= abs(delta):
            return n_seeds
    return None


def power_table(comparisons: pd.DataFrame, delta: float | None = None) -> pd.DataFrame:
    """Per block (main view): variance components pooled over the compared methods, the Δ
    detectable at 80 % power with the block's seeds and subjects, and the seeds ``delta`` needs.

    The components are those of the paired differences with scratch (`run_level_estimates`),
    averaged over the methods tested on at least 2 seeds; blocks without any are left out.
    """
    tested = comparisons[(comparisons["view"] == MAIN_VIEW) & (comparisons["n_seeds"] >= 2)
                         & (comparisons["n_subjects"] >= 2)]
    rows = []
    for key, frame in tested.groupby(list(BLOCK_KEYS), sort=False):
        components = [float(frame[c].mean()) for c in ("var_run", "var_subject", "var_residual")]
        n_seeds, n_subjects = int(frame["n_seeds"].max()), int(frame["n_subjects"].max())
        rows.append({**dict(zip(BLOCK_KEYS, key)), "n_methods": len(frame), "n_seeds": n_seeds,
                     "n_subjects": n_subjects,
                     **{f"sd_{name}": float(np.sqrt(v)) for name, v in
                        zip(("run", "subject", "residual"), components)},
                     "detectable_delta": detectable_difference(*components, n_seeds, n_subjects),
                     "delta": np.nan if delta is None else float(delta),
                     "seeds_needed": None if delta is None else
                     seeds_needed(*components, n_subjects, delta)})
    return POWER_TABLE.frame(rows)



def compute(context: Context) -> dict[str, pd.DataFrame]:
    return {"power": power_table(context["comparisons"], context.power_delta)}


ANALYSIS = Analysis((POWER_TABLE,), compute)
