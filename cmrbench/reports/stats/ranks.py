"""Ranks and separations: which methods the seed-level tests tell apart, and the ranks that allows.

Everything here uses the unit of the leaderboard's marks: for a pair of methods in a block, the
per-seed paired differences (each seed with the other method's run on the same labelled
subset) over the seeds both have, with the run-level estimate and t-test on S − 1 df
(`estimates.run_level_estimates`). A pair with scratch *is* the leaderboard's test: its row
repeats the ``comparisons`` row (p, Holm p over the leaderboard, the mark), so the pairwise map
separates a method from scratch exactly where the index marks it. A pair of two other methods
belongs to the leaderboard's second family, every such pair at every budget, Holm over all of
them (`pairwise_board`).

Per block (`rank_block`): methods ordered by their mean over the seeds every ranked method
shares (rank 1 the highest, ties averaged), so the order agrees with the sign of each Δ on those
seeds; each method's rank set, the ranks it can take given the separations,
``[1 + methods separated above it, M − methods separated below it]`` (Al Mohamad, Goeman & van
Zwet, Biometrics 2022, build simultaneous rank intervals from pairwise tests this way; here the
separations come from two families, each wrong somewhere at most 5 % of the time, so a
leaderboard's rank sets all hold with probability at least 90 %): a block where no test
separates anything gives every method the set 1…M; and the cliques, runs of methods
consecutive in rank that no test separates (not Nemenyi's critical difference).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from cmrbench.reports.stats.blocks import (
    BASELINE,
    BLOCK_KEYS,
    MAIN_VIEW,
    BlockScores,
    boards_of,
    difference_limit,
)
from cmrbench.reports.stats.catalogue import (
    METHOD,
    N_SUBJECTS,
    VIEW,
    Analysis,
    Column,
    Context,
    Table,
    interval,
    shared_columns,
)
from cmrbench.reports.stats.comparisons import FAMILY
from cmrbench.reports.stats.estimates import (
    BootstrapConfig,
    adjust_family,
    complete_matrix,
    run_level_estimates,
)

VS_SCRATCH, BETWEEN_METHODS = "vs scratch", "between methods"
SHARED_SEEDS = Column("n_seeds", "seeds every ranked method shares (what the ranks use)")
RANKS = Table(
    "ranks",
    "rank per block × method by mean DSC on shared seeds, with the set of ranks the "
    "seed-level tests allow",
    (
        *shared_columns(),
        VIEW,
        METHOD,
        Column(
            "mean",
            "mean DSC over the seeds every ranked method shares and the subjects scored "
            "in all of them",
        ),
        Column("rank", "rank by that mean (1 = best; ties averaged)"),
        Column("rank_low", "best rank the tests allow: 1 + methods separated above it"),
        Column(
            "rank_high", "worst rank the tests allow: methods ranked − methods separated below it"
        ),
        SHARED_SEEDS,
        N_SUBJECTS,
    ),
    pages=("details.html", "index.html"),
)
CLIQUES = Table(
    "cliques",
    "cliques: methods consecutive in rank that no seed-level test separates",
    (
        *shared_columns(),
        VIEW,
        Column("clique", "clique number within the block (0, 1, ...)"),
        Column("method", "a member of the clique"),
    ),
    pages=("details.html",),
)
PAIRWISE = Table(
    "pairwise",
    "every pair of methods per block: seed-level paired t-test, Holm over its "
    "family, and whether the pairwise map separates them",
    (
        *shared_columns(),
        VIEW,
        Column("method_a", "first method of the pair"),
        Column("method_b", "second method of the pair"),
        Column(
            "family",
            f"{VS_SCRATCH}: the leaderboard's own test ({FAMILY}); "
            f"{BETWEEN_METHODS}: every pair of other methods × budget of the "
            f"leaderboard",
        ),
        Column(
            "n_seeds",
            "seeds both methods have (each run paired with the other's run on the "
            "same labelled subset)",
        ),
        N_SUBJECTS,
        *interval(
            "delta",
            "mean paired difference a − b; its interval is simultaneous over the "
            "family (Bonferroni)",
        ),
        Column("p", "run-level t-test of a − b on S − 1 df (empty: not tested, one run)"),
        Column("p_holm", "p Holm-adjusted over the family"),
        Column(
            "separated",
            "p_holm < 0.05: the pairwise map colours the pair (and the index marks "
            "a pair with scratch)",
        ),
    ),
    pages=("details.html",),
)


def shared_scores(block: BlockScores, view: str = MAIN_VIEW) -> tuple[list[str], np.ndarray]:
    """The methods with data and their ``(M, S, N)`` scores on the seeds all of them share and
    the subjects scored in every one of those runs (what ranks compare)."""
    cube = block.scores[view]
    has_seed = ~np.isnan(cube).all(axis=2)
    ranked = has_seed.any(axis=1)
    methods = [m for m, keep in zip(block.methods, ranked) if keep]
    shared = cube[ranked][:, has_seed[ranked].all(axis=0)]
    return methods, shared[:, :, ~np.isnan(shared).any(axis=(0, 1))]


def _pair_row(
    block: BlockScores, view: str, method_a: str, method_b: str, config: BootstrapConfig
) -> dict:
    """The seed-level test of ``method_a − method_b`` on the seeds both have, unadjusted."""
    cube = block.scores[view]
    a, b = cube[block.methods.index(method_a)], cube[block.methods.index(method_b)]
    shared = ~np.isnan(a).all(axis=1) & ~np.isnan(b).all(axis=1)
    differences = complete_matrix(a - b, shared)
    n_seeds, n_subjects = differences.shape
    estimate = run_level_estimates(differences, config.confidence)
    tested = n_seeds >= 2 and n_subjects >= 2
    return {
        **block.key,
        "view": view,
        "method_a": method_a,
        "method_b": method_b,
        "family": BETWEEN_METHODS,
        "n_seeds": n_seeds,
        "n_subjects": n_subjects,
        "delta": float(estimate["estimate"]),
        "standard_error": float(estimate["standard_error"]),
        "df": float(estimate["df"]),
        "p": float(estimate["p"]) if tested else np.nan,
    }


def _scratch_pair(comparison: dict | pd.Series) -> dict:
    """A comparison with scratch as the pair (scratch, method): Δ and interval negated."""
    return {
        **{k: comparison[k] for k in BLOCK_KEYS},
        "view": comparison["view"],
        "method_a": BASELINE,
        "method_b": comparison["method"],
        "family": VS_SCRATCH,
        "n_seeds": comparison["n_seeds"],
        "n_subjects": comparison["n_subjects"],
        "delta": -comparison["delta"],
        "ci_low": -comparison["ci_high"],
        "ci_high": -comparison["ci_low"],
        "p": comparison["p"],
        "p_holm": comparison["p_holm"],
        "separated": bool(comparison["significant"]),
    }


def pairwise_board(
    blocks: list[BlockScores],
    comparisons: pd.DataFrame,
    config: BootstrapConfig,
    view: str = MAIN_VIEW,
) -> list[dict]:
    """Every pair of methods in every block of one leaderboard: pairs with scratch from the
    leaderboard's ``comparisons`` rows of ``view``, the other pairs tested on the seeds both
    have and Holm-adjusted together (`estimates.adjust_family`); ``separated`` is what the
    pairwise map colours."""
    others = []
    for block in blocks:
        for a, b in combinations([m for m in block.methods if m != BASELINE], 2):
            others.append(_pair_row(block, view, a, b, config))
    adjust_family(others, config.confidence, difference_limit(view))
    keep = PAIRWISE.column_names
    rows = [
        {**{k: row[k] for k in keep if k in row}, "separated": row["significant"]} for row in others
    ]
    if not comparisons.empty:
        rows += [
            _scratch_pair(row)
            for row in comparisons[comparisons["view"] == view].to_dict(orient="records")
        ]
    order = {tuple(block.key[k] for k in BLOCK_KEYS): i for i, block in enumerate(blocks)}
    return sorted(
        rows,
        key=lambda r: (
            order.get(tuple(r[k] for k in BLOCK_KEYS), len(order)),
            r["method_a"] != BASELINE,
        ),
    )


def rank_block(
    block: BlockScores, pairwise: list[dict], view: str = MAIN_VIEW
) -> dict[str, list[dict]]:
    """Ranks, rank sets and cliques of one block from its ``pairwise`` rows (see the module
    docstring); a block with fewer than 2 methods or subjects on shared seeds is not ranked."""
    methods, shared = shared_scores(block, view)
    out: dict[str, list[dict]] = {"ranks": [], "cliques": []}
    n_methods, n_seeds, n_subjects = shared.shape
    if n_methods < 2 or n_subjects < 2 or n_seeds < 1:
        return out
    means = shared.mean(axis=(1, 2))
    ranks = sps.rankdata(-means)
    above, below = separation_counts(methods, pairwise)
    for i, method in enumerate(methods):
        out["ranks"].append(
            {
                **block.key,
                "view": view,
                "method": method,
                "mean": float(means[i]),
                "rank": float(ranks[i]),
                "rank_low": 1 + above[method],
                "rank_high": n_methods - below[method],
                "n_seeds": n_seeds,
                "n_subjects": n_subjects,
            }
        )
    different = {
        frozenset((methods.index(r["method_a"]), methods.index(r["method_b"]))): bool(
            r["separated"]
        )
        for r in pairwise
        if r["method_a"] in methods and r["method_b"] in methods
    }
    for number, members in enumerate(cd_cliques(ranks, different)):
        out["cliques"].extend(
            {**block.key, "view": view, "clique": number, "method": methods[i]} for i in members
        )
    return out


def separation_counts(
    methods: list[str], pairwise: list[dict]
) -> tuple[dict[str, int], dict[str, int]]:
    """Per method, how many methods a test separates above it and below it (the sign of the
    pair's Δ says which is above)."""
    above, below = dict.fromkeys(methods, 0), dict.fromkeys(methods, 0)
    for row in pairwise:
        a, b = row["method_a"], row["method_b"]
        if row["separated"] and a in above and b in above:
            better, worse = (a, b) if row["delta"] > 0 else (b, a)
            above[worse] += 1
            below[better] += 1
    return above, below


def cd_cliques(mean_ranks: np.ndarray, different: dict[frozenset, bool]) -> list[list[int]]:
    """Maximal runs of methods, consecutive in mean rank, that no test tells apart.

    ``different[frozenset({a, b})]`` says whether methods a and b differ significantly (a pair
    it does not hold is not separated). Returns lists of method indices (two or more each),
    ordered by mean rank.
    """
    order = list(np.argsort(mean_ranks, kind="stable"))
    cliques: list[list[int]] = []
    reach = -1
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and not any(
            different.get(frozenset((int(order[k]), int(order[end + 1]))), False)
            for k in range(start, end + 1)
        ):
            end += 1
        if end > start and end > reach:
            cliques.append([int(i) for i in order[start : end + 1]])
            reach = end
    return cliques


def compute(context: Context) -> dict[str, pd.DataFrame]:
    """The pairwise tests of every leaderboard, then each block's ranks and cliques (main
    view)."""
    comparisons = context["comparisons"]
    collected: dict[str, list[dict]] = {t.name: [] for t in ANALYSIS.tables}
    by_block = (
        {key: frame for key, frame in comparisons.groupby(list(BLOCK_KEYS), sort=False)}
        if not comparisons.empty
        else {}
    )
    for board in boards_of(context.blocks):
        keys = [tuple(block.key[k] for k in BLOCK_KEYS) for block in board]
        mine = (
            pd.concat([by_block[k] for k in keys if k in by_block])
            if any(k in by_block for k in keys)
            else comparisons.iloc[:0]
        )
        pairwise = pairwise_board(board, mine, context.config)
        collected["pairwise"] += pairwise
        for block in board:
            in_block = [r for r in pairwise if all(r[k] == block.key[k] for k in BLOCK_KEYS)]
            for name, rows in rank_block(block, in_block).items():
                collected[name] += rows
    return {t.name: t.frame(collected[t.name]) for t in ANALYSIS.tables}


ANALYSIS = Analysis((RANKS, CLIQUES, PAIRWISE), compute)
