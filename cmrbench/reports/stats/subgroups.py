"""Subgroups: means and Δ vs scratch per scanner vendor and per pathology group of the subjects.

Per value of a subject column (`blocks.SUBGROUP_COLUMNS`: ``vendor``, ``pathology``), the
method's mean with its run-level interval and its Δ vs scratch with the run-level test; the
subgroups of one column of one leaderboard form one family (every subgroup × method × budget,
Holm, simultaneous intervals: the page's table). Where the setting restricts
the training vendors (``vendors=A+B``), the test subjects of the training vendors ("seen") and
of the others ("unseen") are pooled too; ``vendor_gap`` gives each method's unseen − seen
difference with its interval, and ``vendor_interaction`` tests the study's generalisation
claim: is the gain over scratch different on unseen vendors, Δ(unseen) − Δ(seen)?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import (
    BASELINE,
    MAIN_VIEW,
    SUBGROUP_COLUMNS,
    BlockScores,
    boards_of,
    difference_limit,
    restricted,
    view_bounds,
)
from cmrbench.reports.stats.catalogue import (
    METHOD,
    N_SEEDS,
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
from cmrbench.reports.stats.comparisons import PAIRED, SIMULTANEOUS, TESTED, compare_block
from cmrbench.reports.stats.estimates import (
    RUNS,
    BootstrapConfig,
    adjust_family,
    bounded_mean,
    complete_matrix,
    run_level_estimates,
    t_quantile,
    two_sided_p,
)

KIND = Column(
    "kind",
    "the subject column the subgroup is a value of (vendor, pathology), or "
    "seen for the pooled seen / unseen vendors",
)
SUBGROUP = Column("subgroup", "the value: a vendor letter, a pathology group, seen or unseen")
UNSEEN_SEEN = (
    Column("unseen", "vendors the training did not see"),
    Column("seen", "the training vendors"),
)


def _subgroup_means(name: str, description: str, page: str) -> Table:
    return Table(
        name,
        description,
        (
            *shared_columns(),
            METHOD,
            VIEW,
            KIND,
            SUBGROUP,
            Column("vendors", "the vendor letters of the subgroup's test subjects"),
            *interval(
                "mean",
                "mean score over the method's seeds and the subgroup's subjects "
                "(interval on the logit scale)",
            ),
            SCOPE,
            N_SEEDS,
            N_SUBJECTS,
        ),
        pages=(page,),
    )


VENDORS = _subgroup_means(
    "vendors",
    "mean DSC with run-level CI per vendor and over seen / unseen vendors",
    "vendors.html",
)
PATHOLOGIES = _subgroup_means(
    "pathologies", "mean DSC with run-level CI per pathology group", "pathologies.html"
)
SUBGROUP_COMPARISONS = Table(
    "subgroup_comparisons",
    "Δ vs scratch with simultaneous CI and run-level test per vendor "
    "(and over seen / unseen vendors) and per pathology group; a "
    "leaderboard's vendors (or pathologies) are one family",
    (
        *shared_columns(),
        METHOD,
        VIEW,
        KIND,
        SUBGROUP,
        *PAIRED,
        *SIMULTANEOUS,
        *TESTED,
        SCOPE,
        Column("note", "why a method is not tested, or is identical"),
    ),
    pages=("vendors.html", "pathologies.html"),
)
VENDOR_GAP = Table(
    "vendor_gap",
    "unseen − seen vendor gap per method with unadjusted CI (vendor settings)",
    (
        *shared_columns(),
        METHOD,
        *UNSEEN_SEEN,
        N_SEEDS,
        *interval(
            "gap",
            "mean over unseen-vendor subjects minus mean over seen-vendor subjects "
            "(negative: worse on unseen vendors); unadjusted interval, no test",
        ),
        SCOPE,
    ),
    pages=("vendors.html",),
)
VENDOR_INTERACTION = Table(
    "vendor_interaction",
    "does pretraining help more on unseen vendors? Δ(unseen) − Δ(seen) "
    "per method with simultaneous CI and run-level test (vendor settings)",
    (
        *shared_columns(),
        METHOD,
        *UNSEEN_SEEN,
        N_SEEDS,
        Column("delta_unseen", "Δ vs scratch on the unseen vendors' subjects"),
        Column("delta_seen", "Δ vs scratch on the seen vendors' subjects"),
        *interval(
            "interaction",
            "delta_unseen − delta_seen, per seed then averaged; its interval "
            "is simultaneous over the leaderboard's interaction tests",
        ),
        Column("ci_clipped", "the interval was clipped to [−2, 2]"),
        Column("p", "run-level t-test of the interaction on S − 1 df (empty for one run)"),
        Column(
            "p_holm",
            "p Holm-adjusted over the leaderboard's interaction tests (every method × budget)",
        ),
        Column("significant", "p_holm < 0.05"),
        Column(
            "direction", "better: the gain over scratch is larger on unseen vendors; worse: smaller"
        ),
        Column("family_size", "m: tested interactions on the leaderboard"),
        Column("step_down", "marked by Holm's step-down although the interval reaches 0"),
        SCOPE,
    ),
    pages=("vendors.html",),
)


def subgroup_masks(block: BlockScores, column: str) -> list[tuple[str, str, np.ndarray]]:
    """``(kind, subgroup, mask (N,))`` per value of a subject column, plus seen and unseen
    vendors for ``vendor`` when the setting restricts the training vendors; [] without the
    column. An empty value is unknown, not a subgroup (ACDC has no vendor letter)."""
    if column not in block.meta:
        return []
    values = block.meta[column]
    subgroups = [(column, v, values == v) for v in sorted(set(values) - {""})]
    seen = block.meta["seen_vendor"]
    if column == "vendor" and seen.any() and not seen.all():
        subgroups += [("seen", "seen", seen), ("seen", "unseen", ~seen)]
    return subgroups


def subgroup_block(
    block: BlockScores, config: BootstrapConfig, column: str = "vendor", view: str = MAIN_VIEW
) -> list[dict]:
    """Mean with its run-level interval per value of a subject column (vendor, pathology, ...).

    For ``vendor`` also over the seen and the unseen vendors when the setting restricts the
    training vendors. Rows carry ``kind`` (the column, or ``seen``) and ``subgroup``.
    """
    vendors = block.meta.get("vendor", np.full(len(block.subjects), ""))
    rows = []
    for kind, name, mask in subgroup_masks(block, column):
        cube = block.scores[view][:, :, mask]
        for i, method in enumerate(block.methods):
            matrix = complete_matrix(cube[i])
            rows.append(
                {
                    **block.key,
                    "method": method,
                    "view": view,
                    "kind": kind,
                    "subgroup": name,
                    "vendors": "+".join(sorted(set(vendors[mask]))),
                    **bounded_mean(matrix, config.confidence, view_bounds(view)),
                    "n_seeds": matrix.shape[0],
                    "n_subjects": matrix.shape[1],
                }
            )
    return rows


def subgroup_comparisons(
    board: list[BlockScores], config: BootstrapConfig, column: str = "vendor", view: str = MAIN_VIEW
) -> list[dict]:
    """Δ vs scratch per value of a subject column, and over the seen and unseen vendors when the
    setting restricts them, in every block of one leaderboard (`compare_block` on each
    subgroup's subjects): the page's table of one leaderboard is one family (Holm, simultaneous
    intervals; `estimates.adjust_family`)."""
    rows = []
    for block in board:
        for kind, name, mask in subgroup_masks(block, column):
            rows += [
                {**row, "kind": kind, "subgroup": name}
                for row in compare_block(restricted(block, mask), config, view)
            ]
    adjust_family(rows, config.confidence, difference_limit(view))
    keep = SUBGROUP_COMPARISONS.column_names
    return [{k: row[k] for k in keep if k in row} for row in rows]


def gap_estimate(scores: np.ndarray, seen: np.ndarray, confidence: float) -> dict[str, float]:
    """Mean over the unseen subjects minus mean over the seen ones of a ``(S, N)`` matrix.

    Per seed (those with any value), ``g_s`` = unseen mean − seen mean, on the subjects scored
    in every such seed; the variance of the mean gap is the between-seed variance of ``g_s``
    over S plus each group's subject term over its size (as in `run_level_estimates`), on
    S − 1 df, with the t-test of gap = 0. One seed: the gap alone; returns ``estimate,
    standard_error, df, ci_low, ci_high, p, n_seeds``.
    """
    runs = ~np.isnan(scores).all(axis=1)
    unseen, known = complete_matrix(scores[:, ~seen], runs), complete_matrix(scores[:, seen], runs)
    n_seeds = unseen.shape[0]
    out = dict.fromkeys(("estimate", "standard_error", "df", "ci_low", "ci_high", "p"), np.nan)
    if n_seeds >= 2 and min(unseen.shape[1], known.shape[1]) >= 2:
        gaps = unseen.mean(axis=1) - known.mean(axis=1)
        subject_terms = [
            run_level_estimates(m, confidence)["var_subject"] / m.shape[1] for m in (unseen, known)
        ]
        error = float(np.sqrt(gaps.var(ddof=1) / n_seeds + sum(subject_terms)))
        estimate, df = float(gaps.mean()), float(n_seeds - 1)
        half = float(t_quantile(df, 0.5 + confidence / 2.0)) * error
        p = float(two_sided_p(estimate / error, df)) if error > 0 else float(estimate == 0)
        out.update(
            estimate=estimate,
            standard_error=error,
            df=df,
            ci_low=estimate - half,
            ci_high=estimate + half,
            p=p,
        )
    elif n_seeds == 1 and unseen.size and known.size:
        out["estimate"] = float(unseen.mean() - known.mean())
    return {**out, "n_seeds": n_seeds}


def vendor_gap(block: BlockScores, config: BootstrapConfig, view: str = MAIN_VIEW) -> list[dict]:
    """Per method, mean over the unseen vendors minus mean over the seen ones, with its
    unadjusted CI (`gap_estimate`). Empty unless the setting restricts vendors."""
    seen = block.meta["seen_vendor"]
    if seen.all() or not seen.any():
        return []
    rows = []
    for i, method in enumerate(block.methods):
        gap = gap_estimate(block.scores[view][i], seen, config.confidence)
        rows.append(
            {
                **block.key,
                "method": method,
                **_seen_vendors(block),
                "n_seeds": gap["n_seeds"],
                "gap": gap["estimate"],
                "ci_low": gap["ci_low"],
                "ci_high": gap["ci_high"],
                "scope": RUNS if gap["n_seeds"] >= 2 else "",
            }
        )
    return rows


def vendor_interaction(
    board: list[BlockScores], config: BootstrapConfig, view: str = MAIN_VIEW
) -> list[dict]:
    """Per method and budget of one leaderboard whose setting restricts the training vendors,
    Δ vs scratch on the unseen vendors minus Δ on the seen ones (`gap_estimate` of the paired
    differences: each seed with scratch's run on the same labelled subset), Holm over the
    leaderboard's interactions with simultaneous intervals (`estimates.adjust_family`)."""
    rows = []
    for block in board:
        seen = block.meta["seen_vendor"]
        if seen.all() or not seen.any() or BASELINE not in block.methods:
            continue
        cube = block.scores[view]
        baseline = cube[block.methods.index(BASELINE)]
        for i, method in enumerate(block.methods):
            if method == BASELINE:
                continue
            differences = cube[i] - baseline
            gap = gap_estimate(differences, seen, config.confidence)
            parts = [
                np.nanmean(differences[:, mask])
                if np.isfinite(differences[:, mask]).any()
                else np.nan
                for mask in (~seen, seen)
            ]
            rows.append(
                {
                    **block.key,
                    "method": method,
                    **_seen_vendors(block),
                    "n_seeds": gap["n_seeds"],
                    "delta_unseen": float(parts[0]),
                    "delta_seen": float(parts[1]),
                    "delta": gap["estimate"],
                    "standard_error": gap["standard_error"],
                    "df": gap["df"],
                    "p": gap["p"],
                    "scope": RUNS if gap["n_seeds"] >= 2 else "",
                }
            )
    adjust_family(rows, config.confidence, 2.0 * difference_limit(view))
    keep = VENDOR_INTERACTION.column_names
    return [{**{k: row[k] for k in keep if k in row}, "interaction": row["delta"]} for row in rows]


def _seen_vendors(block: BlockScores) -> dict[str, str]:
    """The ``unseen`` and ``seen`` vendor letters of a block's test subjects."""
    seen = block.meta["seen_vendor"]
    vendors = block.meta.get("vendor", np.full(len(block.subjects), ""))
    return {
        "unseen": "+".join(sorted(set(vendors[~seen]))),
        "seen": "+".join(sorted(set(vendors[seen]))),
    }


def compute(context: Context) -> dict[str, pd.DataFrame]:
    """The subgroup tables of every leaderboard."""
    collected: dict[str, list[dict]] = {t.name: [] for t in ANALYSIS.tables}
    for board in boards_of(context.blocks):
        for block in board:
            collected["vendors"] += subgroup_block(block, context.config, "vendor")
            collected["pathologies"] += subgroup_block(block, context.config, "pathology")
            collected["vendor_gap"] += vendor_gap(block, context.config)
        for column in SUBGROUP_COLUMNS:
            collected["subgroup_comparisons"] += subgroup_comparisons(board, context.config, column)
        collected["vendor_interaction"] += vendor_interaction(board, context.config)
    return {t.name: t.frame(collected[t.name]) for t in ANALYSIS.tables}


ANALYSIS = Analysis(
    (VENDORS, PATHOLOGIES, SUBGROUP_COMPARISONS, VENDOR_GAP, VENDOR_INTERACTION), compute
)
