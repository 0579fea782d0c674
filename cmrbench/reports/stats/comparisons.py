"""Each method against scratch: Δ with its CI and the run-level test, per block and score.

The differences ``d[s, n] = method − scratch`` pair each seed with scratch's run on the same
seed (the same labelled subset), over the seeds both share and the subjects scored in all of
them; Δ, its CI and p come from `estimates.run_level_estimates`, Holm-corrected within the
block. The subject-level Wilcoxon signed-rank test on seed-combined differences stays as a
secondary column, conditional on these trained models. Every score of `COMPARED_VIEWS` (DSC
overall, per class and per phase) is compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import BASELINE, MAIN_VIEW, BlockScores
from cmrbench.reports.stats.catalogue import (METHOD, N_SUBJECTS, SCOPE, VIEW, Analysis, Column,
                                              Context, Table, interval, shared_columns)
from cmrbench.reports.stats.estimates import (ALPHA, BootstrapConfig, complete_matrix, holm,
                                              interval_scope, run_level_estimates,
                                              wilcoxon_pvalue)

COMPARED_VIEWS = ("dsc", "dsc_LV", "dsc_MYO", "dsc_RV", "dsc_ED", "dsc_ES")
ONE_RUN_NOTE = "1 run: not tested against training variability"
ONE_SUBJECT_NOTE = "1 test subject: no interval"
IDENTICAL_NOTE = "identical to scratch"
# The columns of a run-level test against scratch, as every comparison table has them.
TESTED = (Column("p", "run-level t-test of delta on S − 1 df (empty for one run)"),
          Column("p_holm", "p Holm-adjusted over the methods of the block"),
          Column("significant", "p_holm < 0.05"),
          Column("direction", "better or worse when significant (the sign of delta), else empty"))
PAIRED = (Column("n_seeds", "seeds shared with scratch (each paired with scratch's run on the "
                            "same labelled subset)"), N_SUBJECTS)
COMPARISONS = Table(
    "comparisons", "Δ vs scratch with CI and run-level t-test (Holm), variance components; "
                   "subject-level Wilcoxon (conditional on these trained models)",
    (*shared_columns(), METHOD, VIEW, *PAIRED,
     *interval("delta", "Δ: mean paired difference to scratch"),
     Column("df", "degrees of freedom of the t interval and test"),
     Column("statistic", "t statistic (empty for one run)"), *TESTED, SCOPE,
     Column("note", "why a method is not tested, or is identical"),
     Column("var_run", "between-run variance component of the differences (2 seeds or more)"),
     Column("var_subject", "between-subject variance component"),
     Column("var_residual", "residual variance"),
     Column("median_diff", "median over subjects of the seed-combined differences"),
     Column("wilcoxon_statistic", "subject-level Wilcoxon signed-rank statistic"),
     Column("wilcoxon_p", "its p-value (conditional on these trained models)"),
     Column("wilcoxon_p_holm", "wilcoxon_p Holm-adjusted within the block")),
    pages=("details.html", "index.html"))


def compare_block(block: BlockScores, config: BootstrapConfig, view: str = MAIN_VIEW,
                  secondary: bool = True) -> list[dict]:
    """Each method against `BASELINE` in one block: Δ with its CI and the run-level test.

    The differences ``d[s, n]`` pair each seed with scratch's run on the same seed (same
    labelled subset), over the seeds both have and the subjects scored in all of them.
    Δ, its CI and p come from `run_level_estimates` (Holm within the block); the mark's
    direction is the sign of Δ. One shared seed gives a "test set only" interval and no
    test; the subject-level Wilcoxon on seed-combined differences is a secondary column
    (conditional on these trained models; ``secondary=False`` leaves it NaN). Without a
    baseline the rows say so.
    """
    others = [m for m in block.methods if m != BASELINE]
    if BASELINE not in block.methods:
        return [_comparison_row(block, m, view, np.empty((0, 0)), config,
                                f"no {BASELINE} cells in this block: not tested", secondary)
                for m in others]
    cube = block.scores[view]
    baseline = cube[block.methods.index(BASELINE)]
    rows = []
    for method in others:
        scores = cube[block.methods.index(method)]
        shared = ~np.isnan(scores).all(axis=1) & ~np.isnan(baseline).all(axis=1)
        differences = complete_matrix(scores - baseline, shared)
        rows.append(_comparison_row(block, method, view, differences, config, "", secondary))
    primary = holm(np.array([r["p"] for r in rows]))
    secondary = holm(np.array([r["wilcoxon_p"] for r in rows]))
    for row, p_holm, wilcoxon_p_holm in zip(rows, primary, secondary):
        significant = bool(p_holm < ALPHA)
        row.update(p_holm=p_holm, significant=significant, wilcoxon_p_holm=wilcoxon_p_holm,
                   direction=("better" if row["delta"] > 0 else "worse") if significant else "")
    return rows


def _comparison_row(block: BlockScores, method: str, view: str, differences: np.ndarray,
                    config: BootstrapConfig, note: str, secondary: bool) -> dict:
    n_seeds, n_subjects = differences.shape
    estimate = {k: float(v) for k, v in run_level_estimates(differences, config.confidence).items()}
    if not note:
        if differences.size == 0:
            note = f"no seed and subject shared with {BASELINE}: not tested"
        elif not differences.any():
            note = IDENTICAL_NOTE
        elif n_subjects < 2:
            note = ONE_SUBJECT_NOTE
        elif n_seeds < 2:
            note = ONE_RUN_NOTE
    tested = n_seeds >= 2 and n_subjects >= 2
    subject_differences = differences.mean(axis=0) if n_seeds else np.empty(0)
    wilcoxon_statistic, wilcoxon_p = wilcoxon_pvalue(subject_differences) if secondary \
        else (np.nan, np.nan)
    return {**block.key, "method": method, "view": view, "n_seeds": n_seeds,
            "n_subjects": n_subjects, "delta": estimate["estimate"],
            "ci_low": estimate["ci_low"], "ci_high": estimate["ci_high"], "df": estimate["df"],
            "statistic": estimate["statistic"] if tested else np.nan,
            "p": estimate["p"] if tested else np.nan, "p_holm": np.nan, "significant": False,
            "direction": "", "scope": interval_scope(n_seeds, n_subjects), "note": note,
            "var_run": estimate["var_run"], "var_subject": estimate["var_subject"],
            "var_residual": estimate["var_residual"],
            "median_diff": float(np.median(subject_differences)) if n_subjects else np.nan,
            "wilcoxon_statistic": wilcoxon_statistic, "wilcoxon_p": wilcoxon_p,
            "wilcoxon_p_holm": np.nan}



def untested_notes(blocks: list[BlockScores]) -> list[str]:
    """One note per block without scratch cells: its methods are not tested."""
    notes = []
    for block in blocks:
        if BASELINE not in block.methods:
            where = ", ".join(f"{k}={v}" for k, v in block.key.items())
            notes.append(f"no scratch cells in block {where}: its methods are not tested "
                         f"against scratch")
    return notes


def compute(context: Context) -> dict[str, pd.DataFrame]:
    """Every compared view of every block (the Wilcoxon column for the main view only)."""
    rows = []
    for block in context.blocks:
        for view in COMPARED_VIEWS:
            if view in block.scores:
                rows += compare_block(block, context.config, view, secondary=view == MAIN_VIEW)
    return {"comparisons": COMPARISONS.frame(rows)}


ANALYSIS = Analysis((COMPARISONS,), compute)
