"""Clinical agreement: MAE, bias and limits of agreement of the clinical end points.

LV and RV end-diastolic and end-systolic volumes, ejection fractions and LV mass
(`cmrbench.vocabulary.CLINICAL_UNITS`) from the predicted segmentation against the reference,
per block × method × quantity, with run-level intervals and ΔMAE vs scratch. A subject is
measured once by each training run, so the errors are repeated measures (seeds within
subject): they follow the crossed model ``e[s, n] = bias + a_s + b_n + ε`` of
`estimates.run_level_estimates`, the limits of agreement are ``bias ± 1.96 σ`` with ``σ²`` the
sum of the three variance components (a new training run on a new subject), and their
intervals take the uncertainty of ``σ²`` from the mean squares it is made of, each on its own
degrees of freedom (Bland & Altman, J Biopharm Stat 2007, "multiple observations per
individual"), not from S·N independent errors. An undefined predicted EF (empty predicted
ventricle) counts as 0 %, never helping a model that misses the ventricle.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import pandas as pd
from scipy import special

from cmrbench.reports.stats.blocks import BASELINE, BLOCK_KEYS, method_order
from cmrbench.reports.stats.catalogue import (
    METHOD,
    SCOPE,
    Analysis,
    Column,
    Context,
    Table,
    interval,
    shared_columns,
)
from cmrbench.reports.stats.estimates import (
    bounded_interval,
    complete_matrix,
    interval_scope,
    run_level_estimates,
)

UNDEFINED_EF_PREDICTION = 0.0
LIMITS_OF_AGREEMENT_Z = 1.96


CLINICAL = Table(
    "clinical",
    "MAE, bias, limits of agreement (with between-seed spread) and ΔMAE vs scratch, "
    "each with a 95 % CI, of clinical end points",
    (
        *shared_columns(),
        METHOD,
        Column("quantity", "LV_EDV, LV_ESV, LV_EF, LV_MASS, RV_EDV, RV_ESV or RV_EF"),
        Column("unit", "ml, % or g"),
        Column("n_subjects", "test subjects with a reference value in every run"),
        Column("n_seeds", "training runs (seeds)"),
        Column(
            "n_undefined",
            "predicted EFs left undefined by an empty predicted ventricle (counted as 0 %)",
        ),
        *interval(
            "mae",
            "mean absolute error of prediction − reference (interval on the log "
            "scale, so it stays above 0)",
            bounds="mae_ci",
        ),
        *interval("bias", "mean of prediction − reference", bounds="bias_ci"),
        Column("bias_seed_sd", "standard deviation of the per-seed bias (2 seeds or more)"),
        Column(
            "sd",
            "SD of the error of a new training run on a new subject: the seed, subject "
            "and residual variance components together",
        ),
        Column("loa_low", "lower limit of agreement: bias − 1.96 sd"),
        Column("loa_high", "upper limit of agreement: bias + 1.96 sd"),
        Column("loa_low_ci_low", "lower end of the 95 % CI of loa_low"),
        Column("loa_low_ci_high", "upper end of the 95 % CI of loa_low"),
        Column("loa_high_ci_low", "lower end of the 95 % CI of loa_high"),
        Column("loa_high_ci_high", "upper end of the 95 % CI of loa_high"),
        *interval(
            "delta_mae",
            "MAE minus scratch's on the seeds and subjects both have "
            "(negative: smaller errors); unadjusted interval, no test",
            bounds="delta_mae_ci",
        ),
        SCOPE,
    ),
    pages=("clinical.html",),
)


def clinical_agreement(clinical: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """MAE, bias and limits of agreement of prediction against reference, with intervals.

    Per block × method × quantity, over the seeds and the subjects with a reference value
    in every run (`complete_matrix`). An undefined predicted EF (empty predicted ventricle)
    counts as `UNDEFINED_EF_PREDICTION` (``n_undefined`` of them). Bias and MAE are grand
    means of the seed × subject errors with `run_level_estimates` intervals (MAE's on the log
    scale); the limits of agreement and their intervals follow the crossed repeated-measures
    model of the module docstring (`agreement_spread`). ``delta_mae`` is the MAE difference to
    scratch on the seeds and subjects both have (negative: fewer errors), with its interval.
    """
    if clinical.empty:
        return CLINICAL.frame()
    rows = clinical[clinical["ref"].notna()]
    quantity_is_ef = np.char.endswith(rows["quantity"].to_numpy(str), "_EF")
    undefined = rows["pred"].isna().to_numpy() & quantity_is_ef
    predicted = np.where(undefined, UNDEFINED_EF_PREDICTION, rows["pred"].to_numpy(float))
    keep = ~np.isnan(predicted)
    rows = rows[keep]
    errors, undefined = predicted[keep] - rows["ref"].to_numpy(float), undefined[keep]
    method_codes, method_labels = pd.factorize(rows["method"].astype(str))
    method_names = np.asarray(method_labels, dtype=object)
    subject_codes, _ = pd.factorize(rows["subject"])
    seed_codes, _ = pd.factorize(rows["seed"])
    out = []
    for key, index in rows.groupby(
        [*BLOCK_KEYS, "quantity", "unit"], observed=True, sort=True
    ).indices.items():
        methods_here = np.unique(method_codes[index])
        methods = method_order([method_names[m] for m in methods_here])
        position = np.zeros(len(method_names), int)
        position[methods_here] = [methods.index(method_names[c]) for c in methods_here]
        m = position[method_codes[index]]
        s_codes, s = np.unique(seed_codes[index], return_inverse=True)
        n_codes, n = np.unique(subject_codes[index], return_inverse=True)
        cube = np.full((len(methods), len(s_codes), len(n_codes)), np.nan)
        cube[m, s.ravel(), n.ravel()] = errors[index]
        n_undefined = np.bincount(m, weights=undefined[index], minlength=len(methods))
        # grouped by a list of columns, so each key is a tuple (typed Hashable by pandas)
        block = dict(zip([*BLOCK_KEYS, "quantity", "unit"], map(str, cast(tuple[Any, ...], key))))
        for i, method in enumerate(methods):
            out.append(
                {
                    **block,
                    "method": method,
                    "n_undefined": int(n_undefined[i]),
                    **_agreement(cube, i, methods, confidence),
                }
            )
    table = pd.DataFrame(out)
    return table.reindex(columns=CLINICAL.column_names)


def agreement_spread(errors: np.ndarray, estimate: dict[str, np.ndarray]) -> tuple[float, float]:
    """``(σ, Var(σ̂))`` of the errors ``(S, N ≥ 2)`` of one method: σ² is the seed, subject and
    residual variance components of ``estimate`` (`run_level_estimates` of ``errors``) summed;
    its variance comes from the mean squares it is a combination of, ``Var(Σ c_k MS_k) ≈
    Σ 2 (c_k MS_k)² / df_k`` (a component estimated as 0 drops its mean squares), and the delta
    method, ``Var(σ̂) ≈ Var(σ̂²) / (4 σ̂²)``. One seed: the subjects' variance on N − 1 df."""
    seeds, subjects = errors.shape
    if seeds < 2:
        variance = float(errors.var(ddof=1))
        return float(np.sqrt(variance)), variance / (2.0 * (subjects - 1))
    ms_seed, ms_subject, ms_residual = (
        float(estimate[k]) for k in ("ms_seed", "ms_subject", "ms_residual")
    )
    with_seed, with_subject = ms_seed > ms_residual, ms_subject > ms_residual
    terms = [
        (with_seed / subjects, ms_seed, seeds - 1),
        (with_subject / seeds, ms_subject, subjects - 1),
        (
            1.0 - with_seed / subjects - with_subject / seeds,
            ms_residual,
            (seeds - 1) * (subjects - 1),
        ),
    ]
    variance = sum(c * ms for c, ms, _ in terms)
    variance_of_variance = sum(2.0 * (c * ms) ** 2 / df for c, ms, df in terms)
    if variance <= 0:  # identical errors everywhere
        return 0.0, 0.0
    return float(np.sqrt(variance)), variance_of_variance / (4.0 * variance)


def _agreement(cube: np.ndarray, index: int, methods: list[str], confidence: float) -> dict:
    errors = complete_matrix(cube[index])
    n_seeds, n_subjects = errors.shape
    bias = run_level_estimates(errors, confidence)
    mae = run_level_estimates(np.abs(errors), confidence)
    mae_low, mae_high = bounded_interval(
        mae["estimate"], mae["standard_error"], mae["df"], confidence, (0.0, np.inf)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        between = float(errors.mean(axis=1).var(ddof=1)) if n_seeds > 1 else np.nan
        sd, sd_variance = agreement_spread(errors, bias) if n_subjects > 1 else (np.nan, np.nan)
    half = LIMITS_OF_AGREEMENT_Z * sd
    limit_se = float(np.sqrt(bias["standard_error"] ** 2 + LIMITS_OF_AGREEMENT_Z**2 * sd_variance))
    quantile = float(special.stdtrit(bias["df"], 0.5 + confidence / 2.0))
    row = {
        "n_subjects": n_subjects,
        "n_seeds": n_seeds,
        "mae": float(mae["estimate"]),
        "mae_ci_low": float(mae_low),
        "mae_ci_high": float(mae_high),
        "bias": float(bias["estimate"]),
        "bias_ci_low": float(bias["ci_low"]),
        "bias_ci_high": float(bias["ci_high"]),
        "bias_seed_sd": float(np.sqrt(between)),
        "sd": sd,
        "scope": interval_scope(n_seeds, n_subjects),
    }
    for name, limit in (("loa_low", row["bias"] - half), ("loa_high", row["bias"] + half)):
        row.update(
            {
                name: limit,
                f"{name}_ci_low": limit - quantile * limit_se,
                f"{name}_ci_high": limit + quantile * limit_se,
            }
        )
    row.update(delta_mae=np.nan, delta_mae_ci_low=np.nan, delta_mae_ci_high=np.nan)
    if methods[index] != BASELINE and BASELINE in methods:
        baseline = cube[methods.index(BASELINE)]
        shared = ~np.isnan(cube[index]).all(axis=1) & ~np.isnan(baseline).all(axis=1)
        gain = run_level_estimates(
            complete_matrix(np.abs(cube[index]) - np.abs(baseline), shared), confidence
        )
        row.update(
            delta_mae=float(gain["estimate"]),
            delta_mae_ci_low=float(gain["ci_low"]),
            delta_mae_ci_high=float(gain["ci_high"]),
        )
    return row


def compute(context: Context) -> dict[str, pd.DataFrame]:
    return {"clinical": clinical_agreement(context.store.clinical, context.config.confidence)}


ANALYSIS = Analysis((CLINICAL,), compute)
