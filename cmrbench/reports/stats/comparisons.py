"""Each method against scratch: Δ with its simultaneous CI and the run-level test, per leaderboard.

The differences ``d[s, n] = method − scratch`` pair each seed with scratch's run on the same
seed (the same labelled subset), over the seeds both share and the subjects scored in all of
them; Δ, its standard error and p come from `estimates.run_level_estimates` (`compare_block`).
The family of the marks is the leaderboard (`compare_board`): every method × budget of one
dataset × encoder × augmentation × setting tested against scratch, Holm over all of them, each
Δ with its Bonferroni simultaneous interval (`estimates.adjust_family`), so that a leaderboard
under a complete null carries any mark at most 5 % of the time and an interval that excludes 0
always carries a mark. A budget trained once shows Δ without an interval or a test. Every score
of `COMPARED_VIEWS` is compared: DSC overall (the leaderboard's family), and per class and per
phase, which form one more family per leaderboard (the details page's table of them).

The subject-level Wilcoxon signed-rank test on seed-combined differences answers another
question (do these trained models differ on these test subjects?) and lives in its own table,
``subject_level``, which the site shows apart from the marks, titled as conditional on the
trained models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import (
    BASELINE,
    MAIN_VIEW,
    BlockScores,
    boards_of,
    difference_limit,
)
from cmrbench.reports.stats.catalogue import (
    METHOD,
    N_SUBJECTS,
    SCOPE,
    VIEW,
    Analysis,
    Column,
    Context,
    Table,
    interval,
    shared_columns,
)
from cmrbench.reports.stats.estimates import (
    RUNS,
    BootstrapConfig,
    adjust_family,
    complete_matrix,
    holm,
    run_level_estimates,
    wilcoxon_pvalue,
)

COMPARED_VIEWS = ("dsc", "dsc_LV", "dsc_MYO", "dsc_RV", "dsc_ED", "dsc_ES")
ONE_RUN_NOTE = "1 run: not tested against training variability, no interval"
ONE_SUBJECT_NOTE = "1 test subject: no interval"
IDENTICAL_NOTE = "identical to scratch"
FAMILY = "the leaderboard's comparisons with scratch (every method × budget with 2 runs or more)"
# The columns of a run-level test in a family, as every comparison table has them.
TESTED = (
    Column("p", "run-level t-test of delta on S − 1 df (empty for one run)"),
    Column(
        "p_holm",
        f"p Holm-adjusted over the family: {FAMILY}; for the per-class and "
        f"per-phase views, all of them × methods × budgets of the leaderboard",
    ),
    Column("significant", "p_holm < 0.05: the mark"),
    Column("direction", "better or worse when significant (the sign of delta), else empty"),
    Column("family_size", "m: tested comparisons in the family"),
    Column("step_down", "marked by Holm's step-down although the simultaneous interval reaches 0"),
)
PAIRED = (
    Column(
        "n_seeds",
        "seeds shared with scratch (each paired with scratch's run on the same labelled subset)",
    ),
    N_SUBJECTS,
)
SIMULTANEOUS = (
    *interval(
        "delta",
        "Δ: mean paired difference to scratch; its interval is "
        "simultaneous over the family (Bonferroni, 95 % / m)",
    ),
    Column("ci_clipped", "the interval was clipped to the range of a difference ([−1, 1] for DSC)"),
)
COMPARISONS = Table(
    "comparisons",
    "Δ vs scratch with simultaneous CI and run-level t-test (Holm over the "
    "leaderboard), unadjusted CI, variance components",
    (
        *shared_columns(),
        METHOD,
        VIEW,
        *PAIRED,
        *SIMULTANEOUS,
        Column(
            "ci_unadjusted_low",
            "lower end of the unadjusted 95 % CI of delta (this comparison alone)",
        ),
        Column("ci_unadjusted_high", "upper end of the unadjusted 95 % CI of delta"),
        Column("standard_error", "run-level standard error of delta"),
        Column("df", "degrees of freedom of the t interval and test"),
        Column("statistic", "t statistic (empty for one run)"),
        *TESTED,
        SCOPE,
        Column("note", "why a method is not tested, or is identical"),
        Column("var_run", "between-run variance component of the differences (2 seeds or more)"),
        Column("var_subject", "between-subject variance component"),
        Column("var_residual", "residual variance"),
    ),
    pages=("details.html", "index.html"),
)
SUBJECT_LEVEL = Table(
    "subject_level",
    "subject-level Wilcoxon test of each method against scratch, conditional "
    "on these trained models (not the leaderboard's test)",
    (
        *shared_columns(),
        METHOD,
        *PAIRED,
        Column("median_diff", "median over subjects of the seed-combined differences"),
        Column("wilcoxon_statistic", "Wilcoxon signed-rank statistic over the test subjects"),
        Column("wilcoxon_p", "its p-value: do these trained models differ on these test subjects?"),
        Column("wilcoxon_p_holm", "wilcoxon_p Holm-adjusted within the block"),
    ),
    pages=("details.html",),
)


def paired_differences(block: BlockScores, method: str, view: str = MAIN_VIEW) -> np.ndarray:
    """``(S, N)`` differences ``method − scratch`` on the seeds both have and the subjects
    scored in all of them (empty without scratch)."""
    if BASELINE not in block.methods:
        return np.empty((0, 0))
    cube = block.scores[view]
    scores, baseline = cube[block.methods.index(method)], cube[block.methods.index(BASELINE)]
    shared = ~np.isnan(scores).all(axis=1) & ~np.isnan(baseline).all(axis=1)
    return complete_matrix(scores - baseline, shared)


def compare_block(block: BlockScores, config: BootstrapConfig, view: str = MAIN_VIEW) -> list[dict]:
    """Each method against `BASELINE` in one block, before the family's adjustment.

    Δ, its standard error, df and p come from `run_level_estimates` on `paired_differences`,
    with the unadjusted interval as ``ci_unadjusted_low/high``. One shared seed gives Δ without
    a test or an interval; without a baseline the rows say so. `compare_board` adds the marks
    and the simultaneous intervals.
    """
    rows = []
    for method in (m for m in block.methods if m != BASELINE):
        note = "" if BASELINE in block.methods else f"no {BASELINE} cells in this block: not tested"
        rows.append(
            _comparison_row(
                block, method, view, paired_differences(block, method, view), config, note
            )
        )
    return rows


def compare_board(
    blocks: list[BlockScores], config: BootstrapConfig, views: tuple[str, ...] = (MAIN_VIEW,)
) -> list[dict]:
    """Every method against scratch in every block of one leaderboard and each of ``views``
    the blocks hold (`compare_block`), with Holm's marks and the Bonferroni simultaneous
    intervals over all of them (`estimates.adjust_family`): one table, one family."""
    rows = [
        row
        for view in views
        for block in blocks
        if view in block.scores
        for row in compare_block(block, config, view)
    ]
    return adjust_family(rows, config.confidence, max(map(difference_limit, views)))


def _comparison_row(
    block: BlockScores,
    method: str,
    view: str,
    differences: np.ndarray,
    config: BootstrapConfig,
    note: str,
) -> dict:
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
    unadjusted = (estimate["ci_low"], estimate["ci_high"]) if tested else (np.nan, np.nan)
    return {
        **block.key,
        "method": method,
        "view": view,
        "n_seeds": n_seeds,
        "n_subjects": n_subjects,
        "delta": estimate["estimate"],
        "ci_unadjusted_low": unadjusted[0],
        "ci_unadjusted_high": unadjusted[1],
        "standard_error": estimate["standard_error"] if tested else np.nan,
        "df": estimate["df"] if tested else np.nan,
        "statistic": estimate["statistic"] if tested else np.nan,
        "p": estimate["p"] if tested else np.nan,
        "scope": RUNS if tested else "",
        "note": note,
        "var_run": estimate["var_run"],
        "var_subject": estimate["var_subject"],
        "var_residual": estimate["var_residual"],
    }


def subject_level_block(block: BlockScores) -> list[dict]:
    """The subject-level Wilcoxon signed-rank test of each method against scratch in one block
    (main view), on the per-subject differences averaged over the shared seeds, Holm within the
    block: conditional on these trained models."""
    rows = []
    for method in (m for m in block.methods if m != BASELINE):
        differences = paired_differences(block, method)
        n_seeds, n_subjects = differences.shape
        per_subject = differences.mean(axis=0) if n_seeds else np.empty(0)
        statistic, p = wilcoxon_pvalue(per_subject)
        rows.append(
            {
                **block.key,
                "method": method,
                "n_seeds": n_seeds,
                "n_subjects": n_subjects,
                "median_diff": float(np.median(per_subject)) if n_subjects else np.nan,
                "wilcoxon_statistic": statistic,
                "wilcoxon_p": p,
            }
        )
    for row, adjusted in zip(rows, holm(np.array([r["wilcoxon_p"] for r in rows]))):
        row["wilcoxon_p_holm"] = adjusted
    return rows


def untested_notes(blocks: list[BlockScores]) -> list[str]:
    """One note per block without scratch cells: its methods are not tested."""
    notes = []
    for block in blocks:
        if BASELINE not in block.methods:
            where = ", ".join(f"{k}={v}" for k, v in block.key.items())
            notes.append(
                f"no scratch cells in block {where}: its methods are not tested against scratch"
            )
    return notes


def compute(context: Context) -> dict[str, pd.DataFrame]:
    """Every leaderboard's family of the main view and its family of the per-class and per-phase
    views; the subject-level tests."""
    rows, subject_level = [], []
    for board in boards_of(context.blocks):
        rows += compare_board(board, context.config)
        rows += compare_board(board, context.config, COMPARED_VIEWS[1:])
        for block in board:
            subject_level += subject_level_block(block)
    return {
        "comparisons": COMPARISONS.frame(rows),
        "subject_level": SUBJECT_LEVEL.frame(subject_level),
    }


ANALYSIS = Analysis((COMPARISONS, SUBJECT_LEVEL), compute)
