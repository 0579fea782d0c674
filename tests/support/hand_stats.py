"""Run-level statistics written out by hand, for tests that check the reports against them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def hand_estimate(matrix: np.ndarray) -> dict[str, float]:
    """Mean of a seed × subject matrix with its run-level 95 % CI and p (README "Reports"):
    two-way crossed ANOVA without replication, t on S − 1 df; one seed: t over the subjects
    on N − 1 df ("test set only")."""
    s, n = matrix.shape
    grand = matrix.mean()
    if s == 1:
        se, df = matrix[0].std(ddof=1) / np.sqrt(n), n - 1
    else:
        seed_means, subject_means = matrix.mean(axis=1), matrix.mean(axis=0)
        ms_seed = n * np.sum((seed_means - grand) ** 2) / (s - 1)
        ms_subject = s * np.sum((subject_means - grand) ** 2) / (n - 1)
        residual = matrix - seed_means[:, None] - subject_means[None, :] + grand
        ms_residual = np.sum(residual**2) / ((s - 1) * (n - 1))
        se, df = np.sqrt((ms_seed + max(ms_subject - ms_residual, 0.0)) / (s * n)), s - 1
    half = stats.t.ppf(0.975, df) * se
    return {
        "mean": grand,
        "low": grand - half,
        "high": grand + half,
        "p": 2 * stats.t.sf(abs(grand / se), df),
    }


def logit_interval(estimate: dict[str, float]) -> tuple[float, float]:
    """A DSC mean's interval as the reports give it: `hand_estimate`'s t half-width taken to the
    logit scale by the delta method, ``logit(m) ± half / (m (1 − m))``, and back."""
    mean = estimate["mean"]
    spread = (mean - estimate["low"]) / (mean * (1 - mean))
    centre = np.log(mean / (1 - mean))
    return 1 / (1 + np.exp(spread - centre)), 1 / (1 + np.exp(-centre - spread))


def subject_dsc(rows: pd.DataFrame) -> pd.DataFrame:
    """Seed × subject matrix of per-subject DSC (the mean over annotated phases and classes)
    of one method's rows, subjects sorted."""
    annotated = rows[rows["annotated"].astype(bool) & rows["dsc"].notna()]
    per_subject = annotated.groupby(["seed", "subject"], observed=True)["dsc"].mean()
    return per_subject.unstack("subject").sort_index(axis=1)
