"""Ranks: Friedman, mean ranks, Wilcoxon–Holm cliques, pairwise tests and rank stability.

Per block, on the seeds every ranked method shares and the subjects scored in all those runs
(`shared_scores`): a subject's score is its mean over those seeds, rank 1 the highest. The
Friedman test runs over the subjects; cliques join methods, consecutive in mean rank, that no
pairwise subject-level Wilcoxon test (Holm over all pairs) separates (not Nemenyi's critical
difference); rank stability resamples seeds and subjects (`BootstrapConfig`) and reports how
often each method takes each rank and Kendall's τ to the observed order (challengeR practice,
Wiesenfarth et al., Sci Rep 2021).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from cmrbench.reports.stats.blocks import MAIN_VIEW, BlockScores
from cmrbench.reports.stats.catalogue import (METHOD, N_SUBJECTS, VIEW, Analysis, Column,
                                              Context, Table, shared_columns)
from cmrbench.reports.stats.estimates import (ALPHA, BootstrapConfig, block_generator, holm,
                                              wilcoxon_pvalue)

SHARED_SEEDS = Column("n_seeds", "seeds every ranked method shares (what the ranks use)")
FRIEDMAN = Table(
    "friedman", "Friedman test across methods per block",
    (*shared_columns(), VIEW, Column("n_methods", "methods ranked"), SHARED_SEEDS,
     Column("n_subjects", "test subjects scored by every method on those seeds"),
     Column("statistic", "Friedman χ² over the subjects (3 methods or more)"),
     Column("p", "its p-value"), Column("note", "why there is no test")),
    pages=("details.html",))
RANKS = Table(
    "ranks", "mean rank per block × method",
    (*shared_columns(), VIEW, METHOD,
     Column("mean_rank", "mean over test subjects of the method's rank (1 = best)"),
     SHARED_SEEDS, N_SUBJECTS),
    pages=("details.html", "index.html"))
CLIQUES = Table(
    "cliques", "cliques of mean ranks that pairwise Wilcoxon + Holm do not separate",
    (*shared_columns(), VIEW, Column("clique", "clique number within the block (0, 1, ...)"),
     Column("method", "a member of the clique")),
    pages=("details.html",))
PAIRWISE = Table(
    "pairwise", "pairwise Wilcoxon tests between methods, Holm-adjusted",
    (*shared_columns(), VIEW, Column("method_a", "first method of the pair"),
     Column("method_b", "second method of the pair"),
     Column("p", "subject-level Wilcoxon signed-rank test of a − b (conditional on these "
                 "trained models)"),
     Column("p_holm", "p Holm-adjusted over every pair of the block"),
     Column("significant", "p_holm < 0.05: the pair is separated")),
    pages=("details.html",))
RANK_STABILITY = Table(
    "rank_stability", "frequency of each rank and Kendall's τ over seed × subject resamples",
    (*shared_columns(), VIEW, METHOD, Column("rank", "a rank (1 = best)"),
     Column("frequency", "share of the resamples in which the method takes that rank"),
     Column("kendall_tau", "mean Kendall's τ between the observed and the resampled orders")),
    pages=("details.html",))


def shared_scores(block: BlockScores, view: str = MAIN_VIEW) -> tuple[list[str], np.ndarray]:
    """The methods with data and their ``(M, S, N)`` scores on the seeds all of them share and
    the subjects scored in every one of those runs (what ranks compare)."""
    cube = block.scores[view]
    has_seed = ~np.isnan(cube).all(axis=2)
    ranked = has_seed.any(axis=1)
    methods = [m for m, keep in zip(block.methods, ranked) if keep]
    shared = cube[ranked][:, has_seed[ranked].all(axis=0)]
    return methods, shared[:, :, ~np.isnan(shared).any(axis=(0, 1))]


def rank_block(block: BlockScores, config: BootstrapConfig,
               view: str = MAIN_VIEW) -> dict[str, list[dict]]:
    """Friedman test, mean ranks, Wilcoxon–Holm cliques and rank stability in one block.

    Uses the seeds every ranked method shares and the subjects scored in all those runs
    (`shared_scores`); a subject's score is its mean over those seeds, rank 1 the highest.
    Cliques join methods whose pairwise subject-level Wilcoxon tests (Holm over all pairs)
    are not significant; rank stability resamples seeds and subjects and ranks methods by
    mean rank, as the mean-rank column does (`rank_stability`).
    """
    methods, shared = shared_scores(block, view)
    out: dict[str, list[dict]] = {"friedman": [], "ranks": [], "cliques": [], "pairwise": [],
                                  "rank_stability": []}
    n_methods, n_seeds, n_subjects = shared.shape
    friedman = {**block.key, "view": view, "n_methods": n_methods, "n_seeds": n_seeds,
                "n_subjects": n_subjects, "statistic": np.nan, "p": np.nan, "note": ""}
    out["friedman"].append(friedman)
    if n_methods < 2 or n_subjects < 2 or n_seeds < 1:
        friedman["note"] = "fewer than 2 methods or subjects on shared seeds: not ranked"
        return out
    matrix = shared.mean(axis=1).T
    if n_methods >= 3:
        result = sps.friedmanchisquare(*matrix.T)
        friedman.update(statistic=float(result.statistic), p=float(result.pvalue))
    else:
        friedman["note"] = "Friedman needs 3 methods or more"
    mean_ranks = sps.rankdata(-matrix, axis=1).mean(axis=0)
    pairs = [(a, b) for a in range(n_methods) for b in range(a + 1, n_methods)]
    pvalues = np.array([wilcoxon_pvalue(matrix[:, a] - matrix[:, b])[1] for a, b in pairs])
    adjusted = holm(pvalues)
    different = {frozenset(pair): bool(p < ALPHA) for pair, p in zip(pairs, adjusted)}
    for (a, b), p, p_holm in zip(pairs, pvalues, adjusted):
        out["pairwise"].append({**block.key, "view": view, "method_a": methods[a],
                                "method_b": methods[b], "p": p, "p_holm": p_holm,
                                "significant": bool(p_holm < ALPHA)})
    for number, members in enumerate(cd_cliques(mean_ranks, different)):
        out["cliques"].extend({**block.key, "view": view, "clique": number, "method": methods[i]}
                              for i in members)
    for i, method in enumerate(methods):
        out["ranks"].append({**block.key, "view": view, "method": method,
                             "mean_rank": float(mean_ranks[i]), "n_seeds": n_seeds,
                             "n_subjects": n_subjects})
    frequency, tau = rank_stability(shared, block_generator(config, block.key, "rank-stability"),
                                    config.n_resamples)
    for i, method in enumerate(methods):
        for rank in range(n_methods):
            out["rank_stability"].append({**block.key, "view": view, "method": method,
                                          "rank": rank + 1, "frequency": float(frequency[i, rank]),
                                          "kendall_tau": tau})
    return out


def cd_cliques(mean_ranks: np.ndarray, different: dict[frozenset, bool]) -> list[list[int]]:
    """Maximal runs of methods, consecutive in mean rank, that no test tells apart.

    ``different[frozenset({a, b})]`` says whether methods a and b differ significantly.
    Returns lists of method indices (two or more each), ordered by mean rank.
    """
    order = list(np.argsort(mean_ranks, kind="stable"))
    cliques: list[list[int]] = []
    reach = -1
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and not any(
                different[frozenset((int(order[k]), int(order[end + 1])))]
                for k in range(start, end + 1)):
            end += 1
        if end > start and end > reach:
            cliques.append([int(i) for i in order[start:end + 1]])
            reach = end
    return cliques


def resampled_mean_ranks(scores: np.ndarray, seed_counts: np.ndarray,
                         subject_counts: np.ndarray) -> np.ndarray:
    """Mean ranks (1 = highest score) over resampled seeds and subjects.

    ``scores`` ``(M, S, N)`` complete; ``seed_counts`` ``(B, S)`` and ``subject_counts``
    ``(B, N)`` say how often each seed and subject is drawn. A subject's score is the
    count-weighted mean over seeds; its ranks across methods are averaged with the subject
    counts as weights. Returns ``(B, M)``. Draws with the same seed counts share one ranking
    of the subjects, so the work grows with the distinct seed draws (10 for 3 seeds).
    """
    methods, seeds, subjects = scores.shape
    unique, inverse = np.unique(seed_counts, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    out = np.empty((seed_counts.shape[0], methods))
    for u, counts in enumerate(unique):
        combined = np.einsum("s,msn->nm", counts, scores) / counts.sum()
        ranks = sps.rankdata(-combined, axis=1)
        chosen = inverse == u
        out[chosen] = (subject_counts[chosen] @ ranks
                       / subject_counts[chosen].sum(axis=1, keepdims=True))
    return out


def rank_stability(scores: np.ndarray, rng: np.random.Generator,
                   n_resamples: int) -> tuple[np.ndarray, float]:
    """How often each method takes each rank when seeds and subjects are resampled, and the
    mean Kendall's τ between the observed and the resampled mean ranks.

    ``scores`` ``(M, S, N)`` complete, higher is better → ``(M, M)`` frequencies (entry
    ``[m, r]``: fraction of resamples in which method m is ranked r + 1 by mean rank) and τ.
    """
    methods, seeds, subjects = scores.shape
    seed_counts = index_counts(resample_indices(rng, seeds, n_resamples), seeds)
    subject_counts = index_counts(resample_indices(rng, subjects, n_resamples), subjects)
    resampled = resampled_mean_ranks(scores, seed_counts, subject_counts)
    observed = resampled_mean_ranks(scores, np.ones((1, seeds)), np.ones((1, subjects)))[0]
    ranks = np.argsort(np.argsort(resampled, axis=1, kind="stable"), axis=1, kind="stable")
    flat = (np.arange(methods)[None, :] * methods + ranks).ravel()
    frequency = (np.bincount(flat, minlength=methods * methods).reshape(methods, methods)
                 / n_resamples)
    taus = kendall_tau_b(observed, resampled)
    tau = float(np.mean(taus[~np.isnan(taus)])) if (~np.isnan(taus)).any() else np.nan
    return frequency, tau


def kendall_tau_b(reference: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Kendall's τ-b between ``reference`` ``(M,)`` and each row of ``others`` ``(B, M)``
    (ties handled as scipy's ``kendalltau``; NaN when either side is constant)."""
    upper = np.triu_indices(reference.size, k=1)
    first = np.sign(reference[:, None] - reference[None, :])[upper]
    second = np.sign(others[:, :, None] - others[:, None, :])[:, upper[0], upper[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (second @ first) / np.sqrt((first != 0).sum() * (second != 0).sum(axis=1))


def resample_indices(rng: np.random.Generator, size: int, n_resamples: int) -> np.ndarray:
    """``(n_resamples, size)`` indices drawn with replacement from ``range(size)``."""
    return rng.integers(0, size, size=(n_resamples, size))


def index_counts(indices: np.ndarray, size: int) -> np.ndarray:
    """``(B, size)`` float counts of each index in every row of ``indices`` ``(B, k)``."""
    rows = indices.shape[0]
    flat = (indices + np.arange(rows)[:, None] * size).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(float)



def compute(context: Context) -> dict[str, pd.DataFrame]:
    """The five rank tables of every block (main view)."""
    collected: dict[str, list[dict]] = {t.name: [] for t in ANALYSIS.tables}
    for block in context.blocks:
        for name, rows in rank_block(block, context.config).items():
            collected[name] += rows
    return {t.name: t.frame(collected[t.name]) for t in ANALYSIS.tables}


ANALYSIS = Analysis((FRIEDMAN, RANKS, CLIQUES, PAIRWISE, RANK_STABILITY), compute)
