"""The leaderboards: a method's mean at each label budget beside scratch, and the means behind it.

One leaderboard per dataset × encoder × augmentation × setting, methods × budgets. Each cell is
a method's mean DSC at one label budget with its 95 % CI over training runs and test subjects
(on the logit scale, so it stays inside [0, 1]), its difference Δ to scratch with its
simultaneous CI, and a mark when the run-level test (seeds paired with scratch, Holm over the
leaderboard; `comparisons.compare_board`) finds it better or worse, in the direction of Δ. A
budget trained once ("1 run") gets an interval over the test subjects only, Δ without an
interval, and no mark. The *top set* of a budget holds the methods that no seed-level test
separates from the highest mean among the cells with every expected seed done
(`ranks.pairwise_board`): ties, not a winner. Expected seeds come from the run's grid
(``run.json``), so a partly finished grid still gets a leaderboard with the missing and partial
cells marked; ``pretrain_runs`` counts the pretraining jobs behind a cell's seeds (one: the
claim is conditional on that pretraining run).

Tables: ``leaderboard``, ``summary`` (every block's means per method and view) and
``per_seed`` (each training run's mean).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import (
    BLOCK_KEYS,
    GROUP_KEYS,
    MAIN_VIEW,
    VIEWS,
    BlockScores,
    View,
    budget_order,
    method_order,
    view_bounds,
)
from cmrbench.reports.stats.catalogue import (
    METHOD,
    N_SEEDS,
    N_SUBJECTS,
    SCOPE,
    Analysis,
    Column,
    Context,
    Table,
    interval,
    shared_columns,
)
from cmrbench.reports.stats.efficiency import SCRATCH_EQUIVALENT, scratch_equivalents
from cmrbench.reports.stats.estimates import (
    BootstrapConfig,
    bounded_mean,
    complete_matrix,
)

STUDY_BUDGETS = {"10", "15", "25", "50", "all"}
SINGLE_PRETRAINING = (
    "conditional on one pretraining run per method (pretrain_seeds: single): every seed of a "
    "method fine-tunes from the same pretrained checkpoint, so the intervals and tests count "
    "the fine-tuning runs' variability, not the pretraining run's; another pretraining run "
    "may move Δ (pretrain_seeds: tied pretrains one checkpoint per seed)"
)
STUDY_GENERALISATION_SETTINGS = {"vendors=A+B", "vendors=C+D", "phase=ED", "phase=ES"}

LEADERBOARD = Table(
    "leaderboard",
    "mean DSC with 95 % CI per method × budget, Δ vs scratch with CI, run-level test, labels saved",
    (
        *shared_columns(GROUP_KEYS),
        METHOD,
        *shared_columns(("budget", "n_labelled")),
        Column("status", "done (every expected seed), partial (some) or missing (none yet)"),
        Column("seeds_done", "seeds with a result"),
        Column("seeds_expected", "seeds the run's grid holds for the cell"),
        Column("seeds_failed", "seeds whose cell failed (error.json)"),
        Column(
            "pretrain_runs",
            "pretraining jobs behind the done seeds (1 with pretrain_seeds: "
            "single: conditional on that run; 0 without pretraining)",
        ),
        *interval(
            "mean",
            "mean DSC over the done seeds and their test subjects (interval on the logit scale)",
        ),
        SCOPE,
        N_SUBJECTS,
        *interval(
            "delta",
            "Δ: mean paired difference to scratch (each seed with scratch's run on "
            "the same labelled subset); simultaneous interval over the leaderboard "
            "(Bonferroni), none for one run",
            bounds="delta_ci",
        ),
        Column("p", "run-level t-test of delta (S − 1 df; empty for one run)"),
        Column("p_holm", "p Holm-adjusted over the leaderboard's comparisons with scratch"),
        Column("direction", "better or worse when p_holm < 0.05 (the sign of delta), else empty"),
        Column(
            "step_down", "marked by Holm's step-down although the simultaneous interval reaches 0"
        ),
        Column("family_size", "m: tested comparisons with scratch on the leaderboard"),
        Column("note", "why a cell is not tested (one run, no scratch, ...)"),
        *SCRATCH_EQUIVALENT,
        Column(
            "top_set",
            "no seed-level test separates the method from the highest mean of the "
            "budget among the cells with every seed done (empty where nothing is "
            "tested)",
        ),
        Column("beyond_study", "the cell lies beyond what de Mooij et al. published"),
    ),
    pages=("index.html", "method-*.html"),
)
SUMMARY = Table(
    "summary",
    "mean with 95 % CI over training runs and test subjects per block × method × "
    "view (DSC, HD95, per class and phase)",
    (
        *shared_columns((*BLOCK_KEYS, "n_labelled", "method", "view")),
        *interval(
            "mean",
            "mean score over the method's seeds and the subjects scored in each of "
            "them; the interval stays inside the metric's range (logit scale for "
            "DSC, log scale for HD95)",
        ),
        SCOPE,
        Column(
            "standard_error", "run-level standard error of the mean (test set only for one run)"
        ),
        Column("df", "degrees of freedom of its t interval"),
        N_SUBJECTS,
        N_SEEDS,
        Column("seed_sd", "standard deviation of the per-seed means (2 seeds or more)"),
        Column(
            "n_undefined",
            "annotated entries (subject × seed × phase × class) whose score is "
            "undefined (HD95 with exactly one mask empty)",
        ),
        Column("n_entries", "annotated entries (subject × seed × phase × class)"),
    ),
    pages=("details.html",),
)
PER_SEED = Table(
    "per_seed",
    "mean per seed (labelled subset) per block × method × view",
    (
        *shared_columns((*BLOCK_KEYS, "method", "view", "seed")),
        Column("mean", "mean score of the run over its test subjects"),
        Column("n_subjects", "test subjects scored in the run"),
    ),
    pages=("details.html",),
)


def summarise_block(
    block: BlockScores, config: BootstrapConfig, views: tuple[View, ...] = VIEWS
) -> tuple[list[dict], list[dict]]:
    """Mean with its run-level interval and seed spread per method × view; per-seed means.

    A method's mean is over the seeds it has and the subjects scored in each of them
    (`complete_matrix`); its standard error is `run_level_estimates`' ("test set only" for one
    seed) and its interval `bounded_interval`'s, inside the view's metric range.
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
            present = seed_means[i][~np.isnan(seed_means[i])]
            summary.append(
                {
                    **block.key,
                    "n_labelled": block.n_labelled,
                    "method": method,
                    "view": view.name,
                    **bounded_mean(matrix, config.confidence, view_bounds(view.name)),
                    "n_subjects": matrix.shape[1],
                    "n_seeds": matrix.shape[0],
                    "seed_sd": (float(np.std(present, ddof=1)) if present.size > 1 else np.nan),
                    "n_undefined": int(block.n_undefined[view.name][i]),
                    "n_entries": int(block.n_entries[view.name][i]),
                }
            )
            for j, seed in enumerate(block.seeds):
                if not np.isnan(seed_means[i, j]):
                    per_seed.append(
                        {
                            **block.key,
                            "method": method,
                            "view": view.name,
                            "seed": seed,
                            "mean": seed_means[i, j],
                            "n_subjects": int((~np.isnan(cube[i, j])).sum()),
                        }
                    )
    return summary, per_seed


def leaderboard_table(
    cells: pd.DataFrame,
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    pairwise: pd.DataFrame,
    config: BootstrapConfig = BootstrapConfig(),
) -> pd.DataFrame:
    """One row per group × method × budget, in display order (see module docstring).

    ``cells`` is `cmrbench.store.Store.cells` (the run's cells, done or not: they give the
    expected seeds and the pretraining jobs); the numbers come from the ``summary`` and
    ``comparisons`` tables (view ``dsc``) and the top sets from ``pairwise``.
    """
    if cells.empty:
        return LEADERBOARD.frame()
    keys = [*GROUP_KEYS, "method", "budget"]
    known = cells.assign(
        done=cells["status"] == "done",
        failed=cells["status"] == "failed",
        pretrained=cells["pretrain_key"].where(cells["status"] == "done"),
    )
    counts = (
        known.groupby(keys)
        .agg(
            seeds_expected=("seed", "nunique"),
            seeds_done=("done", "sum"),
            seeds_failed=("failed", "sum"),
            pretrain_runs=("pretrained", "nunique"),
        )
        .reset_index()
    )
    main = summary[summary["view"] == MAIN_VIEW]
    comparisons = comparisons[comparisons["view"] == MAIN_VIEW].rename(
        columns={"ci_low": "delta_ci_low", "ci_high": "delta_ci_high"}
    )
    rows = []
    for group, frame in cells.groupby(list(GROUP_KEYS), sort=True):
        budgets = sorted(frame["budget"].unique(), key=budget_order)
        for method in method_order(set(frame["method"])):
            for budget in budgets:
                rows.append(dict(zip(GROUP_KEYS, group), method=method, budget=budget))
    table = pd.DataFrame(rows, columns=keys)
    table = table.merge(counts, on=keys, how="left")
    table = table.merge(
        main[
            [
                *keys,
                "n_labelled",
                "mean",
                "ci_low",
                "ci_high",
                "scope",
                "n_subjects",
                "standard_error",
                "df",
            ]
        ],
        on=keys,
        how="left",
    )
    table = table.merge(
        comparisons[
            [
                *keys,
                "delta",
                "delta_ci_low",
                "delta_ci_high",
                "p",
                "p_holm",
                "direction",
                "step_down",
                "family_size",
                "note",
            ]
        ],
        on=keys,
        how="left",
    )
    for column in (
        "n_labelled",
        "mean",
        "ci_low",
        "ci_high",
        "delta",
        "delta_ci_low",
        "delta_ci_high",
        "p",
        "p_holm",
        "standard_error",
        "df",
    ):
        table[column] = table[column].astype(float)
    for column in ("seeds_expected", "seeds_done", "seeds_failed", "pretrain_runs", "n_subjects"):
        table[column] = table[column].fillna(0).astype(int)
    for column in ("direction", "note", "scope"):
        table[column] = table[column].fillna("").astype(str)
    table["step_down"] = table["step_down"].fillna(False).astype(bool)
    table["family_size"] = (
        table.groupby(list(GROUP_KEYS))["family_size"].transform("max").fillna(0).astype(int)
    )
    table["status"] = np.where(
        table["mean"].isna(),
        "missing",
        np.where(table["seeds_done"] < table["seeds_expected"], "partial", "done"),
    )
    table["top_set"] = top_sets(table, pairwise)
    table["n_labelled"] = table.groupby([*GROUP_KEYS, "budget"])["n_labelled"].transform("max")
    equivalents = scratch_equivalents(table, config)
    table[list(equivalents.columns)] = equivalents
    table["beyond_study"] = [
        bool(beyond_the_study(r["encoder"], r["setting"], [r["budget"]]))
        for _, r in table.iterrows()
    ]
    return table[LEADERBOARD.column_names].reset_index(drop=True)


def single_pretraining(rows: pd.DataFrame) -> bool:
    """Whether a leaderboard's claims rest on one pretraining run per method: some pretrained
    method has 2 or more seeds done, all fine-tuned from one pretraining job
    (`SINGLE_PRETRAINING`)."""
    pretrained = rows[(rows["pretrain_runs"] > 0) & (rows["seeds_done"] >= 2)]
    return bool((pretrained["pretrain_runs"] == 1).any())


def top_sets(table: pd.DataFrame, pairwise: pd.DataFrame) -> pd.Series:
    """Per leaderboard row: does it belong to its budget's top set? The top is the highest mean
    among the cells with every expected seed done; the set holds those cells that no pair in
    ``pairwise`` separates from it. Where no pair of the block is tested (one run), no cell
    is in it: nothing can be told apart."""
    in_set = pd.Series(False, index=table.index)
    if pairwise.empty:
        return in_set
    pairs = {
        key: frame
        for key, frame in pairwise[pairwise["view"] == MAIN_VIEW].groupby(
            list(BLOCK_KEYS), sort=False
        )
    }
    for key, frame in table.groupby([*GROUP_KEYS, "budget"], sort=False):
        complete = frame[(frame["status"] == "done") & frame["mean"].notna()]
        block_pairs = pairs.get(tuple(str(k) for k in key))
        if complete.empty or block_pairs is None:
            continue
        top = complete.at[complete["mean"].idxmax(), "method"]
        with_top = block_pairs[(block_pairs["method_a"] == top) | (block_pairs["method_b"] == top)]
        if not with_top["p"].notna().any():
            continue
        separated = with_top[with_top["separated"].astype(bool)]
        apart = set(separated["method_a"]) | set(separated["method_b"])
        in_set[complete.index] = ~complete["method"].isin(apart - {top})
    return in_set


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
    tables["leaderboard"] = leaderboard_table(
        context.store.cells,
        tables["summary"],
        context["comparisons"],
        context["pairwise"],
        context.config,
    )
    return tables


ANALYSIS = Analysis((LEADERBOARD, SUMMARY, PER_SEED), compute)
