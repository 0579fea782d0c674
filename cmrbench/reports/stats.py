"""Subject-level statistics of a results store: bootstrap CIs, paired tests, ranks, agreement.

Everything works at the subject level, never per slice (DESIGN.md, "Decisions"). A
subject's score in one cell is its DSC (or HD95) averaged over the annotated classes and
phases; the seeds of a method are then combined per subject (their mean), and the spread
over seeds is reported next to it. A *block* is one dataset × encoder × augmentation ×
setting × budget; inside a block every method is compared with `BASELINE` (``scratch``):

* mean DSC with a two-level bootstrap CI that resamples seeds (which labelled subset) and
  subjects (which test subjects), since at small budgets much of the variance comes from
  the subset (de Mooij et al., arXiv 2409.18100, label budgets 10–50 × three subsets);
* the paired Wilcoxon signed-rank test of each method against scratch on the seed-averaged
  subject scores (scipy), Holm-corrected within the block (statsmodels), with the median
  paired difference and its two-level bootstrap CI;
* a Friedman test across methods, mean ranks with critical-difference cliques from pairwise
  Wilcoxon tests + Holm, and rank stability from bootstrapping subjects;
* clinical agreement (MAE, bias, limits of agreement) of LV/RV EDV, ESV, EF and LV mass.

Un-annotated classes (NaN DSC, ``annotated`` False) are left out of every average, and an
HD95 that is undefined (one mask empty) is counted, never averaged as 0. Bootstraps draw
index arrays once per block from a generator seeded by `BootstrapConfig.seed` and the
block's key, so a block's intervals do not depend on which other blocks the store holds.
"""

from __future__ import annotations

import gc
import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from threadpoolctl import threadpool_limits

BASELINE = "scratch"
ALPHA = 0.05
BLOCK_KEYS = ("dataset", "encoder", "augmentation", "setting", "budget")
GROUP_KEYS = ("dataset", "encoder", "augmentation", "setting")
LIMITS_OF_AGREEMENT_Z = 1.96
CLINICAL_QUANTITIES = ("LV_EDV", "LV_ESV", "LV_EF", "LV_MASS", "RV_EDV", "RV_ESV", "RV_EF")
_BLOCK = list(BLOCK_KEYS)
TABLE_COLUMNS: dict[str, list[str]] = {
    "summary": [*_BLOCK, "n_labelled", "method", "view", "mean", "ci_low", "ci_high", "n_subjects",
                "n_seeds", "seed_sd", "n_undefined", "n_entries"],
    "per_seed": [*_BLOCK, "method", "view", "seed", "mean", "n_subjects"],
    "comparisons": [*_BLOCK, "method", "view", "n_pairs", "median_diff", "ci_low", "ci_high",
                    "statistic", "p", "p_holm", "significant", "direction", "note"],
    "friedman": [*_BLOCK, "view", "n_methods", "n_subjects", "statistic", "p", "note"],
    "ranks": [*_BLOCK, "view", "method", "mean_rank", "n_subjects"],
    "cliques": [*_BLOCK, "view", "clique", "method"],
    "pairwise": [*_BLOCK, "view", "method_a", "method_b", "p", "p_holm", "significant"],
    "rank_stability": [*_BLOCK, "view", "method", "rank", "frequency"],
    "vendors": [*_BLOCK, "method", "view", "kind", "subgroup", "vendors", "mean", "ci_low",
                "ci_high", "n_subjects"],
}


@dataclass(frozen=True)
class View:
    """One subject-level score: ``metric`` averaged over the chosen class and phase (None = all)."""

    name: str
    metric: str
    class_name: str | None = None
    phase: str | None = None


VIEWS: tuple[View, ...] = tuple(
    View(f"{prefix}{suffix}", metric, class_name, phase)
    for prefix, metric in (("dsc", "dsc"), ("hd95", "hd95_mm"))
    for suffix, class_name, phase in (("", None, None), ("_LV", "LV", None), ("_MYO", "MYO", None),
                                      ("_RV", "RV", None), ("_ED", None, "ED"), ("_ES", None, "ES")))
MAIN_VIEW = "dsc"


@dataclass(frozen=True)
class BootstrapConfig:
    """Number of bootstrap resamples, generator seed and confidence level of every interval."""

    n_resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {self.n_resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")


@dataclass
class Block:
    """The subject scores of one block as dense arrays.

    Attributes:
        key: the block's ``BLOCK_KEYS`` values.
        n_labelled: labelled training subjects of the budget.
        methods: method names, `BASELINE` first when present, then sorted.
        seeds: the seeds present in the block, sorted.
        subjects, vendors: ``(N,)`` subject ids and vendor letters; ``seen``: ``(N,)`` bool.
        scores: view name → ``(M, S, N)`` subject scores, NaN where a method has no such
            seed, the subject is absent or nothing in the view was annotated/defined.
        n_undefined, n_entries: view name → ``(M,)``: annotated (subject, seed, phase, class)
            entries whose value is NaN (HD95 with one empty mask), and all annotated entries.
    """

    key: dict[str, str]
    n_labelled: int
    methods: list[str]
    seeds: list[int]
    subjects: np.ndarray
    vendors: np.ndarray
    seen: np.ndarray
    scores: dict[str, np.ndarray]
    n_undefined: dict[str, np.ndarray]
    n_entries: dict[str, np.ndarray]


@dataclass
class Statistics:
    """Every table a report shows (long format, one row per block × method × ...)."""

    blocks: list[Block]
    summary: pd.DataFrame
    per_seed: pd.DataFrame
    comparisons: pd.DataFrame
    friedman: pd.DataFrame
    ranks: pd.DataFrame
    cliques: pd.DataFrame
    pairwise: pd.DataFrame
    rank_stability: pd.DataFrame
    vendors: pd.DataFrame
    clinical: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The downloadable tables by name."""
        return {"summary": self.summary, "per_seed": self.per_seed, "comparisons": self.comparisons,
                "friedman": self.friedman, "ranks": self.ranks, "cliques": self.cliques,
                "pairwise": self.pairwise, "rank_stability": self.rank_stability,
                "vendors": self.vendors, "clinical": self.clinical}


def budget_order(budget: str) -> tuple[int, float, str]:
    """Sort key for budgets: numbers ascending, then ``"all"``, then anything else."""
    text = str(budget)
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text) if text == "all" else (2, 0.0, text)


def quantity_order(quantity: str) -> tuple[int, str]:
    """Sort key for clinical quantities: LV volumes, EF, mass, then RV; unknown ones last."""
    known = quantity in CLINICAL_QUANTITIES
    return (CLINICAL_QUANTITIES.index(quantity) if known else len(CLINICAL_QUANTITIES), quantity)


def method_order(methods: list[str] | set[str]) -> list[str]:
    """Methods sorted by name with `BASELINE` first."""
    return sorted(set(methods), key=lambda m: (m != BASELINE, m))


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests``); NaN entries stay NaN."""
    pvalues = np.asarray(pvalues, dtype=float)
    adjusted = np.full(pvalues.shape, np.nan)
    finite = ~np.isnan(pvalues)
    if finite.any():
        # multipletests runs gc.collect() on every Holm call, which costs ~0.1 s on a report's
        # heap; frozen objects are skipped by the collector, so freezing makes it cheap.
        gc.freeze()
        try:
            adjusted[finite] = multipletests(pvalues[finite], alpha=ALPHA, method="holm")[1]
        finally:
            gc.unfreeze()
    return adjusted


def wilcoxon_pvalue(differences: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank ``(statistic, p)`` of paired differences ``(n,)`` (scipy).

    All-zero differences give p = 1; no differences give NaN.
    """
    differences = np.asarray(differences, dtype=float)
    differences = differences[~np.isnan(differences)]
    if differences.size == 0:
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = sps.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def resample_indices(rng: np.random.Generator, size: int, n_resamples: int) -> np.ndarray:
    """``(n_resamples, size)`` indices drawn with replacement from ``range(size)``."""
    return rng.integers(0, size, size=(n_resamples, size))


def index_counts(indices: np.ndarray, size: int) -> np.ndarray:
    """``(B, size)`` float counts of each index in every row of ``indices`` ``(B, k)``."""
    rows = indices.shape[0]
    flat = (indices + np.arange(rows)[:, None] * size).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(float)


def seed_mean(scores: np.ndarray) -> np.ndarray:
    """Seed-combined subject scores: ``(M, S, N)`` → ``(M, N)`` mean over the seeds present."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(scores, axis=1)


def resampled_subject_means(scores: np.ndarray, seed_counts: np.ndarray) -> np.ndarray:
    """Subject scores averaged over resampled seeds: ``(M, S, N)``, ``(B, S)`` → ``(B, M, N)``.

    A seed drawn k times weighs k; NaN (a seed the method lacks) is left out; a subject
    with no drawn seed present is NaN.
    """
    methods, seeds, subjects = scores.shape
    valid = ~np.isnan(scores)
    filled = np.where(valid, scores, 0.0).transpose(1, 0, 2).reshape(seeds, methods * subjects)
    weights = valid.transpose(1, 0, 2).reshape(seeds, methods * subjects).astype(float)
    total = (seed_counts @ filled).reshape(-1, methods, subjects)
    count = (seed_counts @ weights).reshape(-1, methods, subjects)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def two_level_means(scores: np.ndarray, seed_counts: np.ndarray,
                    subject_counts: np.ndarray) -> np.ndarray:
    """Mean over (resampled) subjects of seed-combined scores: ``(M, S, N)`` → ``(B, M)``.

    ``seed_counts`` ``(B, S)`` and ``subject_counts`` ``(B, N)`` say how often each seed and
    subject is drawn in each resample; all ones give the plain point estimate. When the
    missing entries of each method are whole seeds or whole subjects (the usual case: a
    seed not run yet, a class not annotated for a subject), the weighted means factorise
    and two matrix products replace the ``(B, M, N)`` intermediate.
    """
    valid = ~np.isnan(scores)
    seed_present = valid.any(axis=2)
    subject_present = valid.any(axis=1)
    if not np.array_equal(valid, seed_present[:, :, None] & subject_present[:, None, :]):
        return _two_level_means_general(scores, seed_counts, subject_counts)
    methods, seeds, subjects = scores.shape
    filled = np.where(valid, scores, 0.0).reshape(methods * seeds, subjects)
    per_seed_totals = (filled @ subject_counts.T).reshape(methods, seeds, -1)
    total = np.einsum("bs,ms,msb->bm", seed_counts, seed_present, per_seed_totals)
    count = (seed_counts @ seed_present.T) * (subject_counts @ subject_present.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _two_level_means_general(scores: np.ndarray, seed_counts: np.ndarray,
                             subject_counts: np.ndarray) -> np.ndarray:
    subject_means = resampled_subject_means(scores, seed_counts)
    present = ~np.isnan(subject_means)
    total = np.matmul(np.where(present, subject_means, 0.0), subject_counts[:, :, None])[..., 0]
    count = np.matmul(present.astype(float), subject_counts[:, :, None])[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def nan_median_last_axis(values: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN when a row has no value); vectorised."""
    ordered = np.sort(values, axis=-1)
    count = (~np.isnan(values)).sum(axis=-1)
    low = np.take_along_axis(ordered, np.maximum(count - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    high = np.take_along_axis(ordered, (count // 2)[..., None].clip(max=values.shape[-1] - 1),
                              axis=-1)[..., 0]
    return np.where(count > 0, (low + high) / 2.0, np.nan)


def percentile_interval(resampled: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval over axis 0 of ``(B, ...)``, ignoring NaN resamples."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    if not np.isnan(resampled).any():
        low, high = np.percentile(resampled, [tail, 100.0 - tail], axis=0)
        return low, high
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(resampled, [tail, 100.0 - tail], axis=0)
    return low, high


def block_generator(config: BootstrapConfig, key: dict[str, str], purpose: str) -> np.random.Generator:
    """A generator seeded by the config seed, the block's key and what it is drawn for."""
    text = "|".join(f"{k}={key[k]}" for k in sorted(key)) + "|" + purpose
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng([config.seed, digest])


def subject_blocks(subjects: pd.DataFrame, views: tuple[View, ...] = VIEWS) -> list[Block]:
    """Subject scores of every block from the long subjects table (`load.Store.subjects`)."""
    if subjects.empty:
        return []
    cell_codes, _ = pd.factorize(subjects["cell_key"])
    subject_codes, subject_names = pd.factorize(subjects["subject"])
    pair_codes, _ = pd.factorize(cell_codes.astype(np.int64) * len(subject_names) + subject_codes)
    n_pairs = int(pair_codes.max()) + 1
    first_rows = np.unique(pair_codes, return_index=True)[1]
    pairs = subjects.iloc[first_rows][["cell_key", "method", "encoder", "dataset", "setting",
                                       "augmentation", "budget", "n_labelled", "seed", "subject",
                                       "vendor", "seen_vendor"]].reset_index(drop=True)
    annotated = subjects["annotated"].to_numpy(dtype=bool)
    class_values = subjects["class"].astype(str).to_numpy()
    phase_values = subjects["phase"].astype(str).to_numpy()
    for view in views:
        in_view = annotated.copy()
        if view.class_name is not None:
            in_view &= class_values == view.class_name
        if view.phase is not None:
            in_view &= phase_values == view.phase
        values = subjects[view.metric].to_numpy(dtype=float)
        defined = in_view & ~np.isnan(values)
        total = np.bincount(pair_codes, weights=np.where(defined, values, 0.0), minlength=n_pairs)
        count = np.bincount(pair_codes, weights=defined, minlength=n_pairs)
        with np.errstate(invalid="ignore", divide="ignore"):
            pairs[view.name] = np.where(count > 0, total / count, np.nan)
        pairs[f"{view.name}__undefined"] = np.bincount(pair_codes, weights=in_view & ~defined,
                                                       minlength=n_pairs)
        pairs[f"{view.name}__entries"] = np.bincount(pair_codes, weights=in_view, minlength=n_pairs)
    blocks = []
    for key_values, frame in pairs.groupby(list(BLOCK_KEYS), observed=True, sort=False):
        blocks.append(_dense_block(dict(zip(BLOCK_KEYS, map(str, key_values))), frame, views))
    return sorted(blocks, key=lambda b: (tuple(b.key[k] for k in GROUP_KEYS),
                                         budget_order(b.key["budget"])))


def _dense_block(key: dict[str, str], frame: pd.DataFrame, views: tuple[View, ...]) -> Block:
    methods = method_order(frame["method"].astype(str).unique().tolist())
    seeds = sorted(int(s) for s in frame["seed"].unique())
    per_subject = frame.drop_duplicates("subject").sort_values("subject")
    subjects = per_subject["subject"].astype(str).to_numpy()
    m = pd.Categorical(frame["method"].astype(str), categories=methods).codes
    s = pd.Categorical(frame["seed"].astype(int), categories=seeds).codes
    n = pd.Categorical(frame["subject"].astype(str), categories=subjects).codes
    scores, undefined, entries = {}, {}, {}
    for view in views:
        cube = np.full((len(methods), len(seeds), len(subjects)), np.nan)
        cube[m, s, n] = frame[view.name].to_numpy(dtype=float)
        scores[view.name] = cube
        undefined[view.name] = np.bincount(m, weights=frame[f"{view.name}__undefined"],
                                           minlength=len(methods)).astype(int)
        entries[view.name] = np.bincount(m, weights=frame[f"{view.name}__entries"],
                                         minlength=len(methods)).astype(int)
    return Block(key=key, n_labelled=int(frame["n_labelled"].max()), methods=methods, seeds=seeds,
                 subjects=subjects, vendors=per_subject["vendor"].astype(str).to_numpy(),
                 seen=per_subject["seen_vendor"].to_numpy(dtype=bool), scores=scores,
                 n_undefined=undefined, n_entries=entries)


def summarise_block(block: Block, config: BootstrapConfig,
                    views: tuple[View, ...] = VIEWS) -> tuple[list[dict], list[dict]]:
    """Mean with two-level bootstrap CI and seed spread per method × view; per-seed means.

    Returns (summary rows, per-seed rows).
    """
    rng = block_generator(config, block.key, "two-level")
    seed_counts = index_counts(resample_indices(rng, len(block.seeds), config.n_resamples),
                               len(block.seeds))
    subject_counts = index_counts(resample_indices(rng, len(block.subjects), config.n_resamples),
                                  len(block.subjects))
    summary, per_seed = [], []
    for view in views:
        cube = block.scores[view.name]
        point = two_level_means(cube, np.ones((1, len(block.seeds))),
                                np.ones((1, len(block.subjects))))[0]
        low, high = percentile_interval(two_level_means(cube, seed_counts, subject_counts),
                                        config.confidence)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            seed_means = np.nanmean(cube, axis=2)
        subjects_present = (~np.isnan(seed_mean(cube))).sum(axis=1)
        seeds_present = (~np.isnan(seed_means)).sum(axis=1)
        for i, method in enumerate(block.methods):
            present = seed_means[i][~np.isnan(seed_means[i])]
            summary.append({**block.key, "n_labelled": block.n_labelled, "method": method,
                            "view": view.name, "mean": point[i], "ci_low": low[i],
                            "ci_high": high[i], "n_subjects": int(subjects_present[i]),
                            "n_seeds": int(seeds_present[i]),
                            "seed_sd": float(np.std(present, ddof=1)) if present.size > 1 else np.nan,
                            "n_undefined": int(block.n_undefined[view.name][i]),
                            "n_entries": int(block.n_entries[view.name][i])})
            for j, seed in enumerate(block.seeds):
                if not np.isnan(seed_means[i, j]):
                    per_seed.append({**block.key, "method": method, "view": view.name,
                                     "seed": seed, "mean": seed_means[i, j],
                                     "n_subjects": int((~np.isnan(cube[i, j])).sum())})
    return summary, per_seed


def compare_block(block: Block, config: BootstrapConfig, view: str = MAIN_VIEW) -> list[dict]:
    """Each method against `BASELINE` in one block: paired Wilcoxon + Holm, median difference.

    Pairs are subjects; a subject's difference is the mean over the seeds both methods have
    (same seed = same labelled subset). The median difference's CI resamples those seeds and
    the subjects (two-level bootstrap). Without a baseline the rows say so and carry no test.
    """
    others = [m for m in block.methods if m != BASELINE]
    if BASELINE not in block.methods:
        return [{**block.key, "method": m, "view": view, "n_pairs": 0, "median_diff": np.nan,
                 "ci_low": np.nan, "ci_high": np.nan, "statistic": np.nan, "p": np.nan,
                 "p_holm": np.nan, "significant": False, "direction": "",
                 "note": f"no {BASELINE} cells in this block: not tested"} for m in others]
    cube = block.scores[view]
    differences = cube - cube[block.methods.index(BASELINE)]
    subject_differences = seed_mean(differences)
    rng = block_generator(config, block.key, "median-difference")
    seed_counts = index_counts(resample_indices(rng, len(block.seeds), config.n_resamples),
                               len(block.seeds))
    subject_index = resample_indices(rng, len(block.subjects), config.n_resamples)
    resampled = resampled_subject_means(differences, seed_counts)
    resampled = np.take_along_axis(resampled, subject_index[:, None, :], axis=2)
    low, high = percentile_interval(nan_median_last_axis(resampled), config.confidence)
    median = nan_median_last_axis(subject_differences)
    rows = []
    for i, method in enumerate(block.methods):
        if method == BASELINE:
            continue
        paired = subject_differences[i][~np.isnan(subject_differences[i])]
        statistic, p = wilcoxon_pvalue(paired)
        rows.append({**block.key, "method": method, "view": view, "n_pairs": int(paired.size),
                     "median_diff": median[i], "ci_low": low[i], "ci_high": high[i],
                     "statistic": statistic, "p": p,
                     "note": "" if paired.size else "no subject shared with scratch"})
    adjusted = holm(np.array([r["p"] for r in rows]))
    for row, p_holm in zip(rows, adjusted):
        shift = row["median_diff"] if row["median_diff"] != 0 else np.nanmean(
            subject_differences[block.methods.index(row["method"])])
        significant = bool(p_holm < ALPHA)
        row.update(p_holm=p_holm, significant=significant,
                   direction=("better" if shift > 0 else "worse") if significant else "")
    return rows


def rank_block(block: Block, config: BootstrapConfig, view: str = MAIN_VIEW) -> dict[str, list[dict]]:
    """Friedman test, mean ranks, CD cliques and rank stability of the methods in one block.

    Uses the subjects every method has (complete cases) and the seed-combined scores; rank
    1 is the highest score. Cliques join methods whose pairwise Wilcoxon tests (Holm over all
    pairs) are not significant; rank stability is how often each method takes each rank
    when subjects are bootstrapped.
    """
    per_subject = seed_mean(block.scores[view])
    present = ~np.isnan(per_subject).all(axis=1)
    methods = [m for m, keep in zip(block.methods, present) if keep]
    matrix = per_subject[present]
    matrix = matrix[:, ~np.isnan(matrix).any(axis=0)].T
    out: dict[str, list[dict]] = {"friedman": [], "ranks": [], "cliques": [], "pairwise": [],
                                  "rank_stability": []}
    n_subjects, n_methods = matrix.shape
    friedman = {**block.key, "view": view, "n_methods": n_methods, "n_subjects": n_subjects,
                "statistic": np.nan, "p": np.nan, "note": ""}
    out["friedman"].append(friedman)
    if n_methods < 2 or n_subjects < 2:
        friedman["note"] = "fewer than 2 methods or subjects: not ranked"
        return out
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
                             "mean_rank": float(mean_ranks[i]), "n_subjects": n_subjects})
    frequency = rank_frequencies(matrix, block_generator(config, block.key, "rank-stability"),
                                 config.n_resamples)
    for i, method in enumerate(methods):
        for rank in range(n_methods):
            out["rank_stability"].append({**block.key, "view": view, "method": method,
                                          "rank": rank + 1, "frequency": float(frequency[i, rank])})
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


def rank_frequencies(matrix: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """How often each method takes each rank over subject bootstraps.

    ``matrix`` ``(N, M)`` subject × method scores (higher is better) → ``(M, M)`` where entry
    ``[m, r]`` is the fraction of resamples in which method m is ranked r + 1.
    """
    n_subjects, n_methods = matrix.shape
    counts = index_counts(resample_indices(rng, n_subjects, n_resamples), n_subjects)
    means = counts @ matrix / n_subjects
    ranks = np.argsort(np.argsort(-means, axis=1, kind="stable"), axis=1, kind="stable")
    flat = (np.arange(n_methods)[None, :] * n_methods + ranks).ravel()
    return np.bincount(flat, minlength=n_methods * n_methods).reshape(n_methods, n_methods) / n_resamples


def vendor_block(block: Block, config: BootstrapConfig, view: str = MAIN_VIEW) -> list[dict]:
    """Mean score with two-level bootstrap CI per vendor, and over seen / unseen vendors."""
    subgroups = [("vendor", v, block.vendors == v) for v in sorted(set(block.vendors))]
    if block.seen.any() and not block.seen.all():
        subgroups += [("seen", "seen", block.seen), ("seen", "unseen", ~block.seen)]
    rng = block_generator(config, block.key, "vendors")
    seed_counts = index_counts(resample_indices(rng, len(block.seeds), config.n_resamples),
                               len(block.seeds))
    rows = []
    for kind, name, mask in subgroups:
        cube = block.scores[view][:, :, mask]
        subject_counts = index_counts(resample_indices(rng, int(mask.sum()), config.n_resamples),
                                      int(mask.sum()))
        point = two_level_means(cube, np.ones((1, cube.shape[1])), np.ones((1, cube.shape[2])))[0]
        low, high = percentile_interval(two_level_means(cube, seed_counts, subject_counts),
                                        config.confidence)
        present = (~np.isnan(seed_mean(cube))).sum(axis=1)
        vendors_in = "+".join(sorted(set(block.vendors[mask])))
        for i, method in enumerate(block.methods):
            rows.append({**block.key, "method": method, "view": view, "kind": kind,
                         "subgroup": name, "vendors": vendors_in, "mean": point[i],
                         "ci_low": low[i], "ci_high": high[i], "n_subjects": int(present[i])})
    return rows


def clinical_agreement(clinical: pd.DataFrame) -> pd.DataFrame:
    """MAE, bias and limits of agreement (bias ± 1.96 SD) of prediction against reference.

    Computed on each seed's model over the subjects with both values, then averaged over
    seeds (``bias_seed_sd`` is the spread of the bias over seeds). One row per block ×
    method × quantity.
    """
    columns = [*BLOCK_KEYS, "method", "quantity", "unit", "n_subjects", "n_seeds", "mae", "bias",
               "bias_seed_sd", "sd", "loa_low", "loa_high"]
    if clinical.empty:
        return pd.DataFrame(columns=columns)
    rows = clinical[clinical["pred"].notna() & clinical["ref"].notna()].copy()
    rows["difference"] = rows["pred"] - rows["ref"]
    rows["absolute"] = rows["difference"].abs()
    per_seed = rows.groupby([*BLOCK_KEYS, "method", "quantity", "unit", "seed"], observed=True).agg(
        bias=("difference", "mean"), sd=("difference", "std"), mae=("absolute", "mean"),
        n_subjects=("difference", "size")).reset_index()
    table = per_seed.groupby([*BLOCK_KEYS, "method", "quantity", "unit"], observed=True).agg(
        n_subjects=("n_subjects", "max"), n_seeds=("seed", "nunique"), mae=("mae", "mean"),
        bias=("bias", "mean"), bias_seed_sd=("bias", "std"), sd=("sd", "mean")).reset_index()
    table["loa_low"] = table["bias"] - LIMITS_OF_AGREEMENT_Z * table["sd"]
    table["loa_high"] = table["bias"] + LIMITS_OF_AGREEMENT_Z * table["sd"]
    for column in (*BLOCK_KEYS, "method", "quantity", "unit"):
        table[column] = table[column].astype(str)
    return table[columns]


def compute_statistics(subjects: pd.DataFrame, clinical: pd.DataFrame,
                       config: BootstrapConfig = BootstrapConfig(),
                       views: tuple[View, ...] = VIEWS) -> Statistics:
    """All report tables from the long subjects and clinical tables (`load.Store`)."""
    # The bootstraps run thousands of small matrix products; BLAS worker threads only add
    # synchronisation to those, and on a busy machine they make each one many times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        return _compute_statistics(subjects, clinical, config, views)


def _compute_statistics(subjects: pd.DataFrame, clinical: pd.DataFrame, config: BootstrapConfig,
                        views: tuple[View, ...]) -> Statistics:
    blocks = subject_blocks(subjects, views)
    collected: dict[str, list[dict]] = {name: [] for name in (
        "summary", "per_seed", "comparisons", "friedman", "ranks", "cliques", "pairwise",
        "rank_stability", "vendors")}
    notes = []
    for block in blocks:
        summary, per_seed = summarise_block(block, config, views)
        collected["summary"] += summary
        collected["per_seed"] += per_seed
        collected["comparisons"] += compare_block(block, config)
        for name, rows in rank_block(block, config).items():
            collected[name] += rows
        collected["vendors"] += vendor_block(block, config)
        if BASELINE not in block.methods:
            where = ", ".join(f"{k}={v}" for k, v in block.key.items())
            notes.append(f"no scratch cells in block {where}: its methods are not tested against scratch")
    tables = {name: pd.DataFrame(rows, columns=TABLE_COLUMNS[name]) for name, rows in collected.items()}
    return Statistics(blocks=blocks, clinical=clinical_agreement(clinical), notes=notes, **tables)
