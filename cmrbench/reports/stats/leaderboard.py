"""The leaderboards: a method's mean at each label budget beside scratch, and the means behind it.

One leaderboard per dataset × encoder × augmentation × setting, methods × budgets. Each cell is
a method's mean DSC at one label budget with its 95 % CI over training runs and test subjects,
its difference Δ to scratch with the CI of the same estimand, and a mark when the run-level test
(seeds paired with scratch, Holm within the budget; `comparisons.compare_block`) finds it better
or worse, in the direction of Δ. A budget trained once ("1 run") gets an interval over the test
subjects only and no mark. "Best" is the highest mean among the cells with every expected seed
done. Expected seeds come from the run's grid (``run.json``), so a partly finished grid still
gets a leaderboard with the missing and partial cells marked.

Tables: ``leaderboard``, ``summary`` (every block's means per method and view) and
``per_seed`` (each training run's mean).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import (BLOCK_KEYS, GROUP_KEYS, MAIN_VIEW, VIEWS,
                                           BlockScores, View, budget_order, method_order)
from cmrbench.reports.stats.catalogue import (METHOD, N_SEEDS, N_SUBJECTS, SCOPE, Analysis, Column,
                                              Context, Table, interval, shared_columns)
from cmrbench.reports.stats.efficiency import SCRATCH_EQUIVALENT, scratch_equivalents
from cmrbench.reports.stats.estimates import (BootstrapConfig, complete_matrix, interval_scope,
                                              run_level_estimates)

STUDY_BUDGETS = {"10", "15", "25", "50", "all"}
STUDY_GENERALISATION_SETTINGS = {"vendors=A+B", "vendors=C+D", "phase=ED", "phase=ES"}

LEADERBOARD = Table(
    "leaderboard", "mean DSC with 95 % CI per method × budget, Δ vs scratch with CI, "
                   "run-level test, labels saved",
    (*shared_columns(GROUP_KEYS), METHOD, *shared_columns(("budget", "n_labelled")),
     Column("status", "done (every expected seed), partial (some) or missing (none yet)"),
     Column("seeds_done", "seeds with a result"),
     Column("seeds_expected", "seeds the run's grid holds for the cell"),
     Column("seeds_failed", "seeds whose cell failed (error.json)"),
     *interval("mean", "mean DSC over the done seeds and their test subjects"), SCOPE,
     N_SUBJECTS,
     *interval("delta", "Δ: mean paired difference to scratch (each seed with scratch's run on "
                        "the same labelled subset)", bounds="delta_ci"),
     Column("p", "run-level t-test of delta (S − 1 df; empty for one run)"),
     Column("p_holm", "p Holm-adjusted within the block"),
     Column("direction", "better or worse when p_holm < 0.05 (the sign of delta), else empty"),
     Column("note", "why a cell is not tested (one run, no scratch, ...)"),
     Column("wilcoxon_p_holm", "subject-level Wilcoxon test, Holm-adjusted: conditional on "
                               "these trained models"),
     *SCRATCH_EQUIVALENT,
     Column("best", "highest mean among the cells of the budget with every seed done"),
     Column("beyond_study", "the cell lies beyond what de Mooij et al. published")),
    pages=("index.html", "method-*.html"))
SUMMARY = Table(
    "summary", "mean with 95 % CI over training runs and test subjects per block × method × "
               "view (DSC, HD95, per class and phase)",
    (*shared_columns((*BLOCK_KEYS, "n_labelled", "method", "view")),
     *interval("mean", "mean score over the method's seeds and the subjects scored in each of "
                       "them"), SCOPE, N_SUBJECTS, N_SEEDS,
     Column("seed_sd", "standard deviation of the per-seed means (2 seeds or more)"),
     Column("n_undefined", "annotated entries (subject × seed × phase × class) whose score is "
                           "undefined (HD95 with exactly one mask empty)"),
     Column("n_entries", "annotated entries (subject × seed × phase × class)")),
    pages=("details.html",))
PER_SEED = Table(
    "per_seed", "mean per seed (labelled subset) per block × method × view",
    (*shared_columns((*BLOCK_KEYS, "method", "view", "seed")),
     Column("mean", "mean score of the run over its test subjects"),
     Column("n_subjects", "test subjects scored in the run")),
    pages=("details.html",))


def summarise_block(block: BlockScores, config: BootstrapConfig,
                    views: tuple[View, ...] = VIEWS) -> tuple[list[dict], list[dict]]:
    """Mean with its run-level interval and seed spread per method × view; per-seed means.

    A method's mean is over the seeds it has and the subjects scored in each of them
    (`complete_matrix`); the interval is `run_level_estimates` ("test set only" for one seed).
    Returns (summary rows, per-seed rows).
    """
    summary, per_seed = [], []
    for view in views:
        cube = block.scores[view.name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            seed_means = np.nanmean(cube, axis=2)
        for i, method in enumerate(block.methods):
            matrix = complete_matrix(cube[i])
            estimate = run_level_estimates(matrix, config.confidence)
            present = seed_means[i][~np.isnan(seed_means[i])]
            summary.append({**block.key, "n_labelled": block.n_labelled, "method": method,
                            "view": view.name, "mean": float(estimate["estimate"]),
                            "ci_low": float(estimate["ci_low"]),
                            "ci_high": float(estimate["ci_high"]),
                            "scope": interval_scope(*matrix.shape),
                            "n_subjects": matrix.shape[1], "n_seeds": matrix.shape[0],
                            "seed_sd": (float(np.std(present, ddof=1)) if present.size > 1
                                        else np.nan),
                            "n_undefined": int(block.n_undefined[view.name][i]),
                            "n_entries": int(block.n_entries[view.name][i])})
            for j, seed in enumerate(block.seeds):
                if not np.isnan(seed_means[i, j]):
                    per_seed.append({**block.key, "method": method, "view": view.name,
                                     "seed": seed, "mean": seed_means[i, j],
                                     "n_subjects": int((~np.isnan(cube[i, j])).sum())})
    return summary, per_seed



def leaderboard_table(cells: pd.DataFrame, summary: pd.DataFrame,
                      comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per group × method × budget, in display order (see module docstring).

    ``cells`` is `cmrbench.store.Store.cells` (the run's cells, done or not: they give the
    expected seeds); the numbers come from the ``summary`` and ``comparisons`` tables (view
    ``dsc``).
    """
    if cells.empty:
        return LEADERBOARD.frame()
    keys = [*GROUP_KEYS, "method", "budget"]
    known = cells.assign(done=cells["status"] == "done", failed=cells["status"] == "failed")
    counts = known.groupby(keys).agg(seeds_expected=("seed", "nunique"), seeds_done=("done", "sum"),
                                     seeds_failed=("failed", "sum")).reset_index()
    main = summary[summary["view"] == MAIN_VIEW]
    comparisons = comparisons[comparisons["view"] == MAIN_VIEW].rename(columns={
        "ci_low": "delta_ci_low", "ci_high": "delta_ci_high"})
    rows = []
    for group, frame in cells.groupby(list(GROUP_KEYS), sort=True):
        budgets = sorted(frame["budget"].unique(), key=budget_order)
        for method in method_order(set(frame["method"])):
            for budget in budgets:
                rows.append(dict(zip(GROUP_KEYS, group), method=method, budget=budget))
    table = pd.DataFrame(rows, columns=keys)
    table = table.merge(counts, on=keys, how="left")
    table = table.merge(main[[*keys, "n_labelled", "mean", "ci_low", "ci_high", "scope",
                              "n_subjects"]], on=keys, how="left")
    table = table.merge(comparisons[[*keys, "delta", "delta_ci_low", "delta_ci_high", "p", "p_holm",
                                     "direction", "note", "wilcoxon_p_holm"]], on=keys, how="left")
    for column in ("n_labelled", "mean", "ci_low", "ci_high", "delta", "delta_ci_low",
                   "delta_ci_high", "p", "p_holm", "wilcoxon_p_holm"):
        table[column] = table[column].astype(float)
    for column in ("seeds_expected", "seeds_done", "seeds_failed", "n_subjects"):
        table[column] = table[column].fillna(0).astype(int)
    for column in ("direction", "note", "scope"):
        table[column] = table[column].fillna("").astype(str)
    table["status"] = np.where(table["mean"].isna(), "missing",
                               np.where(table["seeds_done"] < table["seeds_expected"], "partial",
                                        "done"))
    complete = table["mean"].where(table["status"] == "done")
    column_best = complete.groupby([table[k] for k in (*GROUP_KEYS, "budget")]).transform("max")
    table["best"] = complete.notna() & np.isclose(complete, column_best)
    table["n_labelled"] = table.groupby([*GROUP_KEYS, "budget"])["n_labelled"].transform("max")
    equivalents = scratch_equivalents(table)
    table[list(equivalents.columns)] = equivalents
    table["beyond_study"] = [bool(beyond_the_study(r["encoder"], r["setting"], [r["budget"]]))
                             for _, r in table.iterrows()]
    return table[LEADERBOARD.column_names].reset_index(drop=True)


def beyond_the_study(encoder: str, setting: str, budgets: list[str]) -> str:
    """Why cells of this encoder, setting and budgets lie beyond what de Mooij et al.
    published ("" when they do not): the study trained only the 2D U-Net, published budgets
    10, 15, 25, 50 and all in the default setting, and (as read from its split files) only
    "all" under the vendor and phase settings."""
    reasons = []
    if not encoder.startswith("unet"):
        reasons.append(f"encoder {encoder} (the study trained only the U-Net)")
    if setting == "default":
        extra = [b for b in budgets if b not in STUDY_BUDGETS]
    elif setting in STUDY_GENERALISATION_SETTINGS:
        extra = [b for b in budgets if b != "all"]
    else:
        extra = []
        reasons.append(f"setting {setting}")
    if extra:
        reasons.append(f"budget{'s' if len(extra) > 1 else ''} {', '.join(extra)} under {setting}")
    return "beyond the study: " + "; ".join(reasons) if reasons else ""



def compute(context: Context) -> dict[str, pd.DataFrame]:
    """The ``summary`` and ``per_seed`` rows of every block, and the leaderboards over them."""
    summary, per_seed = [], []
    for block in context.blocks:
        rows, seeds = summarise_block(block, context.config, context.views)
        summary += rows
        per_seed += seeds
    tables = {"summary": SUMMARY.frame(summary), "per_seed": PER_SEED.frame(per_seed)}
    tables["leaderboard"] = leaderboard_table(context.store.cells, tables["summary"],
                                              context["comparisons"])
    return tables


ANALYSIS = Analysis((LEADERBOARD, SUMMARY, PER_SEED), compute)
