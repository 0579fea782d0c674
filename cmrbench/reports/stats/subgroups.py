"""Subgroups: means and Δ vs scratch per scanner vendor and per pathology group of the subjects.

Per value of a subject column (`blocks.SUBGROUP_COLUMNS`: ``vendor``, ``pathology``), the
method's mean with its run-level interval and its Δ vs scratch with the run-level test (Holm
within the subgroup). Where the setting restricts the training vendors (``vendors=A+B``), the
test subjects of the training vendors ("seen") and of the others ("unseen") are pooled too,
and ``vendor_gap`` gives each method's unseen − seen difference with its interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from cmrbench.reports.stats.blocks import (MAIN_VIEW, SUBGROUP_COLUMNS, BlockScores,
                                           restricted)
from cmrbench.reports.stats.catalogue import (METHOD, N_SEEDS, N_SUBJECTS, SCOPE, VIEW, Analysis,
                                              Column, Context, Table, interval, shared_columns)
from cmrbench.reports.stats.comparisons import PAIRED, TESTED, compare_block
from cmrbench.reports.stats.estimates import (RUNS, BootstrapConfig, complete_matrix,
                                              interval_scope, run_level_estimates)

KIND = Column("kind", "the subject column the subgroup is a value of (vendor, pathology), or "
                      "seen for the pooled seen / unseen vendors")
SUBGROUP = Column("subgroup", "the value: a vendor letter, a pathology group, seen or unseen")


def _subgroup_means(name: str, description: str, page: str) -> Table:
    return Table(name, description, (
        *shared_columns(), METHOD, VIEW, KIND, SUBGROUP,
        Column("vendors", "the vendor letters of the subgroup's test subjects"),
        *interval("mean", "mean score over the method's seeds and the subgroup's subjects"),
        SCOPE, N_SEEDS, N_SUBJECTS), pages=(page,))


VENDORS = _subgroup_means("vendors", "mean DSC with run-level CI per vendor and over seen / "
                                     "unseen vendors", "vendors.html")
PATHOLOGIES = _subgroup_means("pathologies", "mean DSC with run-level CI per pathology group",
                              "pathologies.html")
SUBGROUP_COMPARISONS = Table(
    "subgroup_comparisons", "Δ vs scratch with CI and run-level test per vendor (and over seen "
                            "/ unseen vendors) and per pathology group",
    (*shared_columns(), METHOD, VIEW, KIND, SUBGROUP, *PAIRED,
     *interval("delta", "Δ: mean paired difference to scratch on the subgroup's subjects"),
     *TESTED, SCOPE, Column("note", "why a method is not tested, or is identical")),
    pages=("vendors.html", "pathologies.html"))
VENDOR_GAP = Table(
    "vendor_gap", "unseen − seen vendor gap per method with CI (vendor settings)",
    (*shared_columns(), METHOD, Column("unseen", "vendors the training did not see"),
     Column("seen", "the training vendors"), N_SEEDS,
     *interval("gap", "mean over unseen-vendor subjects minus mean over seen-vendor subjects "
                      "(negative: worse on unseen vendors)"), SCOPE),
    pages=("vendors.html",))


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


def subgroup_block(block: BlockScores, config: BootstrapConfig, column: str = "vendor",
                   view: str = MAIN_VIEW) -> list[dict]:
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
            estimate = run_level_estimates(matrix, config.confidence)
            rows.append({**block.key, "method": method, "view": view, "kind": kind,
                         "subgroup": name, "vendors": "+".join(sorted(set(vendors[mask]))),
                         "mean": float(estimate["estimate"]), "ci_low": float(estimate["ci_low"]),
                         "ci_high": float(estimate["ci_high"]),
                         "scope": interval_scope(*matrix.shape), "n_seeds": matrix.shape[0],
                         "n_subjects": matrix.shape[1]})
    return rows


def subgroup_comparisons(block: BlockScores, config: BootstrapConfig, column: str = "vendor",
                         view: str = MAIN_VIEW) -> list[dict]:
    """Δ vs scratch per value of a subject column (`compare_block` on those subjects, Holm
    within the subgroup), and over the seen and unseen vendors when the setting restricts them."""
    keep = SUBGROUP_COMPARISONS.column_names
    return [{**{k: row[k] for k in keep if k in row}, "kind": kind, "subgroup": name}
            for kind, name, mask in subgroup_masks(block, column)
            for row in compare_block(restricted(block, mask), config, view, secondary=False)]


def vendor_gap(block: BlockScores, config: BootstrapConfig, view: str = MAIN_VIEW) -> list[dict]:
    """Per method, mean over the unseen vendors minus mean over the seen ones, with its CI.

    Per seed, ``g_s`` = unseen mean − seen mean; the variance of the mean gap is the
    between-seed variance of ``g_s`` over S plus each group's subject term over its size
    (as in `run_level_estimates`), on S − 1 df. Empty unless the setting restricts vendors.
    """
    seen = block.meta["seen_vendor"]
    if seen.all() or not seen.any():
        return []
    vendors = block.meta.get("vendor", np.full(len(block.subjects), ""))
    rows = []
    for i, method in enumerate(block.methods):
        scores = block.scores[view][i]
        runs = ~np.isnan(scores).all(axis=1)
        unseen = complete_matrix(scores[:, ~seen], runs)
        known = complete_matrix(scores[:, seen], runs)
        n_seeds = unseen.shape[0]
        estimate = ci_low = ci_high = np.nan
        if n_seeds >= 2 and min(unseen.shape[1], known.shape[1]) >= 2:
            gaps = unseen.mean(axis=1) - known.mean(axis=1)
            subject_terms = [run_level_estimates(m, config.confidence)["var_subject"] / m.shape[1]
                             for m in (unseen, known)]
            error = float(np.sqrt(gaps.var(ddof=1) / n_seeds + sum(subject_terms)))
            half = float(sps.t.ppf(0.5 + config.confidence / 2.0, n_seeds - 1)) * error
            estimate = float(gaps.mean())
            ci_low, ci_high = estimate - half, estimate + half
        elif n_seeds == 1:
            estimate = float(unseen.mean() - known.mean())
        rows.append({**block.key, "method": method,
                     "unseen": "+".join(sorted(set(vendors[~seen]))),
                     "seen": "+".join(sorted(set(vendors[seen]))), "n_seeds": n_seeds,
                     "gap": estimate, "ci_low": ci_low, "ci_high": ci_high,
                     "scope": RUNS if n_seeds >= 2 else ""})
    return rows



def compute(context: Context) -> dict[str, pd.DataFrame]:
    """The subgroup tables of every block."""
    collected: dict[str, list[dict]] = {t.name: [] for t in ANALYSIS.tables}
    for block in context.blocks:
        collected["vendors"] += subgroup_block(block, context.config, "vendor")
        collected["pathologies"] += subgroup_block(block, context.config, "pathology")
        for column in SUBGROUP_COLUMNS:
            collected["subgroup_comparisons"] += subgroup_comparisons(block, context.config,
                                                                      column)
        collected["vendor_gap"] += vendor_gap(block, context.config)
    return {t.name: t.frame(collected[t.name]) for t in ANALYSIS.tables}


ANALYSIS = Analysis((VENDORS, PATHOLOGIES, SUBGROUP_COMPARISONS, VENDOR_GAP), compute)
