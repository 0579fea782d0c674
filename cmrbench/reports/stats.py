"""Statistics of a results store: run-level comparisons with scratch, intervals, ranks, power.

Scores are computed per subject, never per slice (DESIGN.md, "Decisions"): a subject's score
in one cell is its DSC (or HD95) averaged over the annotated classes and phases. A *block*
is one dataset × encoder × augmentation × setting × budget. A method's claim is about
training runs, so the unit of every primary test and interval is the run (one seed: one
labelled subset and one training), with the test subjects as a second, crossed source of
variance (de Mooij et al., arXiv 2409.18100, train three subsets per budget):

* the score matrix ``y[s, n]`` (seed × subject) of a method, or the paired differences
  ``d[s, n] = method − scratch`` on the seeds both share (same seed = same labelled subset),
  follow ``μ + a_s + b_n + e``. The estimate is the grand mean; its variance is the
  between-seed variance of the per-seed means over S plus the subject term
  ``max(MS_subject − MS_residual, 0) / (S·N)`` (two-way crossed random-effects ANOVA); the
  interval and the test use t on S − 1 degrees of freedom (`run_level_estimates`), so Δ, its
  CI and the p-value share one estimand. With σ_subject = 0 this is the paired t-test on
  per-seed mean differences. Holm corrects within a block.
* one seed gives an interval over test subjects only ("test set only": t on N − 1 df,
  conditional on that trained model) and no significance mark; one test subject gives
  neither;
* the subject-level Wilcoxon signed-rank test on seed-combined differences stays as a
  secondary column, conditional on these trained models;
* Friedman, mean ranks, Wilcoxon–Holm cliques and rank stability (seeds and subjects
  resampled, Kendall's τ to the observed order) use the seeds every ranked method shares;
* power: from the variance components, the minimum detectable Δ at 80 % power and the seeds
  a given Δ needs;
* clinical agreement (MAE, bias, limits of agreement) of LV/RV EDV, ESV, EF and LV mass.

Un-annotated classes (NaN DSC, ``annotated`` False) are left out of every average. A missed
structure must not help a model: an undefined HD95 (exactly one mask empty) counts as the
field-of-view diagonal (``hd95_worst_mm``, `load.load_store`) when the store says it, and an
undefined predicted EF (empty predicted ventricle) as 0 %; both are counted per column. Resamples are drawn
from a generator seeded by `BootstrapConfig.seed` and the block's key, so a block's numbers
do not depend on which other blocks the store holds.
"""

from __future__ import annotations

import gc
import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from threadpoolctl import threadpool_limits

BASELINE = "scratch"
ALPHA = 0.05
POWER = 0.8
MAX_SEEDS_FOR_POWER = 100
BLOCK_KEYS = ("dataset", "encoder", "augmentation", "setting", "budget")
GROUP_KEYS = ("dataset", "encoder", "augmentation", "setting")
SUBGROUP_COLUMNS = ("vendor", "pathology")
WORST_CASE_METRIC, WORST_CASE_COLUMN = "hd95_mm", "hd95_worst_mm"
UNDEFINED_EF_PREDICTION = 0.0
LIMITS_OF_AGREEMENT_Z = 1.96
CLINICAL_QUANTITIES = ("LV_EDV", "LV_ESV", "LV_EF", "LV_MASS", "RV_EDV", "RV_ESV", "RV_EF")
CLASS_NAMES = ("LV", "MYO", "RV")
RUNS, TEST_SET_ONLY = "runs", "test set only"
ONE_RUN_NOTE = "1 run: not tested against training variability"
ONE_SUBJECT_NOTE = "1 test subject: no interval"
IDENTICAL_NOTE = "identical to scratch"
_BLOCK = list(BLOCK_KEYS)
# Per-subgroup means: one table per `SUBGROUP_COLUMNS` entry.
_SUBGROUP_TABLE = [*_BLOCK, "method", "view", "kind", "subgroup", "vendors", "mean", "ci_low",
                   "ci_high", "scope", "n_seeds", "n_subjects"]
TABLE_COLUMNS: dict[str, list[str]] = {
    "summary": [*_BLOCK, "n_labelled", "method", "view", "mean", "ci_low", "ci_high", "scope",
                "n_subjects", "n_seeds", "seed_sd", "n_undefined", "n_entries"],
    "per_seed": [*_BLOCK, "method", "view", "seed", "mean", "n_subjects"],
    "comparisons": [*_BLOCK, "method", "view", "n_seeds", "n_subjects", "delta", "ci_low",
                    "ci_high", "df", "statistic", "p", "p_holm", "significant", "direction",
                    "scope", "note", "var_run", "var_subject", "var_residual", "median_diff",
                    "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_p_holm"],
    "friedman": [*_BLOCK, "view", "n_methods", "n_seeds", "n_subjects", "statistic", "p", "note"],
    "ranks": [*_BLOCK, "view", "method", "mean_rank", "n_seeds", "n_subjects"],
    "cliques": [*_BLOCK, "view", "clique", "method"],
    "pairwise": [*_BLOCK, "view", "method_a", "method_b", "p", "p_holm", "significant"],
    "rank_stability": [*_BLOCK, "view", "method", "rank", "frequency", "kendall_tau"],
    "vendors": _SUBGROUP_TABLE,
    "pathologies": _SUBGROUP_TABLE,
    "subgroup_comparisons": [*_BLOCK, "method", "view", "kind", "subgroup", "n_seeds",
                             "n_subjects", "delta", "ci_low", "ci_high", "p", "p_holm",
                             "significant", "direction", "scope", "note"],
    "vendor_gap": [*_BLOCK, "method", "unseen", "seen", "n_seeds", "gap", "ci_low", "ci_high",
                   "scope"],
    "augmentation_vs_ssp": [*GROUP_KEYS, "budget", "method", "n_seeds", "n_subjects", "delta",
                            "ci_low", "ci_high", "p", "p_holm", "significant", "direction",
                            "scope", "note"],
    "across_blocks": [*GROUP_KEYS, "method", "n_budgets", "mean_rank", "n_ranked", "n_better",
                      "n_worse", "n_tested", "aulc", "delta_aulc"],
}
COMPARED_VIEWS = ("dsc", "dsc_LV", "dsc_MYO", "dsc_RV", "dsc_ED", "dsc_ES")


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
    """Resamples and generator seed of rank stability, and the confidence of every interval."""

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
        subjects: ``(N,)`` subject ids.
        meta: subject-level columns ``(N,)`` by name: ``vendor``, ``seen_vendor`` (bool) and any
            other `SUBGROUP_COLUMNS` the store holds (e.g. ``pathology``).
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
    meta: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    n_undefined: dict[str, np.ndarray]
    n_entries: dict[str, np.ndarray]


@dataclass
class Statistics:
    """Every table a report shows (long format, one row per block × method × ...).

    ``structures`` are the classes annotated anywhere in the store (Sunnybrook has no RV);
    ``subject_scores`` is the `subject_scores` table the blocks were built from (one row per
    block × method × seed × subject, a column per view), kept for the report's downloads.
    """

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
    subgroup_comparisons: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS["subgroup_comparisons"]))
    pathologies: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS["pathologies"]))
    vendor_gap: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS["vendor_gap"]))
    augmentation_vs_ssp: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS["augmentation_vs_ssp"]))
    across_blocks: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS["across_blocks"]))
    notes: list[str] = field(default_factory=list)
    structures: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    subject_scores: pd.DataFrame = field(default_factory=pd.DataFrame)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The downloadable tables by name."""
        return {"summary": self.summary, "per_seed": self.per_seed, "comparisons": self.comparisons,
                "friedman": self.friedman, "ranks": self.ranks, "cliques": self.cliques,
                "pairwise": self.pairwise, "rank_stability": self.rank_stability,
                "vendors": self.vendors, "pathologies": self.pathologies,
                "subgroup_comparisons": self.subgroup_comparisons,
                "vendor_gap": self.vendor_gap, "augmentation_vs_ssp": self.augmentation_vs_ssp,
                "across_blocks": self.across_blocks, "clinical": self.clinical}


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

    All-zero differences give statistic 0 and p = 1 for any n (scipy returns NaN for them
    from n = 14 on); no differences give NaN.
    """
    differences = np.asarray(differences, dtype=float)
    differences = differences[~np.isnan(differences)]
    if differences.size == 0:
        return np.nan, np.nan
    if not differences.any():
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = sps.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def run_level_estimates(values: np.ndarray, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Grand mean of complete ``(..., S, N)`` seed × subject matrices with its t interval and test.

    Model ``y[s, n] = μ + a_s + b_n + e`` (random seed and subject, two-way crossed ANOVA
    without replication). For S ≥ 2 the variance of the mean is
    ``(MS_seed + max(MS_subject − MS_residual, 0)) / (S·N)``, i.e. the between-seed variance
    of the per-seed means over S plus the subject term, on S − 1 df (without a subject term
    this is the paired t-test on per-seed means); for one seed it is the
    subject variance over N on N − 1 df ("test set only"). With fewer than two subjects there
    is no interval. The p-value tests μ = 0 (two-sided) with the same standard error and df
    as the interval; a zero standard error gives p = 1 when the mean is 0, else 0.

    Returns arrays of the leading shape: ``estimate, standard_error, df, ci_low, ci_high,
    statistic, p, var_run, var_subject, var_residual`` (the variance components, S ≥ 2 only).
    """
    values = np.asarray(values, dtype=float)
    seeds, subjects = values.shape[-2:]
    shape = values.shape[:-2]
    nan = np.full(shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = values.mean(axis=(-2, -1)) if values.size else nan.copy()
        components = {"var_run": nan, "var_subject": nan, "var_residual": nan}
        if seeds >= 2 and subjects >= 2:
            seed_means, subject_means = values.mean(axis=-1), values.mean(axis=-2)
            ms_seed = subjects * seed_means.var(axis=-1, ddof=1)
            ms_subject = seeds * subject_means.var(axis=-1, ddof=1)
            residual = (values - seed_means[..., :, None] - subject_means[..., None, :]
                        + estimate[..., None, None])
            ms_residual = (residual ** 2).sum(axis=(-2, -1)) / ((seeds - 1) * (subjects - 1))
            subject_term = np.maximum(ms_subject - ms_residual, 0.0)
            variance = (ms_seed + subject_term) / (seeds * subjects)
            # S − 1 df even with a subject term: Satterthwaite's larger df rejected 7–12 % of
            # null comparisons at 2–3 seeds in simulation; S − 1 keeps the level at or below α
            df = np.full(shape, float(seeds - 1))
            components = {"var_run": np.maximum(ms_seed - ms_residual, 0.0) / subjects,
                          "var_subject": subject_term / seeds, "var_residual": ms_residual}
        elif seeds == 1 and subjects >= 2:
            variance = values[..., 0, :].var(axis=-1, ddof=1) / subjects
            df = np.full(shape, float(subjects - 1))
        else:
            variance, df = nan, nan
        standard_error = np.sqrt(variance)
        # scipy.special's t functions: what sps.t.ppf / sps.t.sf compute, without their
        # per-call overhead (a report makes tens of thousands of these calls)
        quantile = special.stdtrit(df, 0.5 + confidence / 2.0)
        statistic = estimate / standard_error
        p = 2.0 * special.stdtr(df, -np.abs(statistic))
        degenerate = (standard_error == 0) & ~np.isnan(estimate)
        p = np.where(degenerate, np.where(estimate == 0, 1.0, 0.0), p)
        statistic = np.where(degenerate & (estimate == 0), 0.0, statistic)
    return {"estimate": estimate, "standard_error": standard_error, "df": df,
            "ci_low": estimate - quantile * standard_error,
            "ci_high": estimate + quantile * standard_error, "statistic": statistic, "p": p,
            **components}


def complete_matrix(scores: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """The complete seed × subject sub-matrix of one method's ``(S, N)`` scores.

    Keeps the seeds in ``seeds`` (bool ``(S,)``; default: those with any value), then the
    subjects with a value in every kept seed.
    """
    if seeds is None:
        seeds = ~np.isnan(scores).all(axis=1)
    kept = scores[seeds]
    return kept[:, ~np.isnan(kept).any(axis=0) & (len(kept) > 0)]


def interval_scope(n_seeds: int, n_subjects: int) -> str:
    """What an interval covers: training runs and subjects, the test set only, or nothing."""
    if n_subjects < 2 or n_seeds < 1:
        return ""
    return RUNS if n_seeds >= 2 else TEST_SET_ONLY


def resample_indices(rng: np.random.Generator, size: int, n_resamples: int) -> np.ndarray:
    """``(n_resamples, size)`` indices drawn with replacement from ``range(size)``."""
    return rng.integers(0, size, size=(n_resamples, size))


def index_counts(indices: np.ndarray, size: int) -> np.ndarray:
    """``(B, size)`` float counts of each index in every row of ``indices`` ``(B, k)``."""
    rows = indices.shape[0]
    flat = (indices + np.arange(rows)[:, None] * size).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(float)


def block_generator(config: BootstrapConfig, key: dict[str, str], purpose: str) -> np.random.Generator:
    """A generator seeded by the config seed, the block's key and what it is drawn for."""
    text = "|".join(f"{k}={key[k]}" for k in sorted(key)) + "|" + purpose
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng([config.seed, digest])


def subject_blocks(subjects: pd.DataFrame, views: tuple[View, ...] = VIEWS) -> list[Block]:
    """Subject scores of every block from the long subjects table (`load.Store.subjects`)."""
    if subjects.empty:
        return []
    return blocks_of(subject_scores(subjects, views), views)


def blocks_of(pairs: pd.DataFrame, views: tuple[View, ...] = VIEWS) -> list[Block]:
    """The dense `Block` of every block in a `subject_scores` table."""
    blocks = []
    for key_values, frame in pairs.groupby(list(BLOCK_KEYS), observed=True, sort=False):
        blocks.append(_dense_block(dict(zip(BLOCK_KEYS, map(str, key_values))), frame, views))
    return sorted(blocks, key=lambda b: (tuple(b.key[k] for k in GROUP_KEYS),
                                         budget_order(b.key["budget"])))


def subject_scores(subjects: pd.DataFrame, views: tuple[View, ...] = VIEWS) -> pd.DataFrame:
    """One row per cell (training run) × test subject: each view's score, the mean over the
    annotated phases and classes it covers (an undefined HD95 counts as ``hd95_worst_mm``),
    with ``<view>__undefined`` and ``<view>__entries`` counts."""
    cell_codes, _ = pd.factorize(subjects["cell_key"])
    subject_codes, subject_names = pd.factorize(subjects["subject"])
    pair_codes, _ = pd.factorize(cell_codes.astype(np.int64) * len(subject_names) + subject_codes)
    n_pairs = int(pair_codes.max()) + 1
    first_rows = np.unique(pair_codes, return_index=True)[1]
    meta = ["seen_vendor", *(c for c in SUBGROUP_COLUMNS if c in subjects.columns)]
    pairs = subjects.iloc[first_rows][["cell_key", "method", "encoder", "dataset", "setting",
                                       "augmentation", "budget", "n_labelled", "seed", "subject",
                                       *meta]].reset_index(drop=True)
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
        undefined = in_view & np.isnan(values)
        if view.metric == WORST_CASE_METRIC and WORST_CASE_COLUMN in subjects.columns:
            values = np.where(undefined, subjects[WORST_CASE_COLUMN].to_numpy(dtype=float), values)
        defined = in_view & ~np.isnan(values)
        total = np.bincount(pair_codes, weights=np.where(defined, values, 0.0), minlength=n_pairs)
        count = np.bincount(pair_codes, weights=defined, minlength=n_pairs)
        with np.errstate(invalid="ignore", divide="ignore"):
            pairs[view.name] = np.where(count > 0, total / count, np.nan)
        pairs[f"{view.name}__undefined"] = np.bincount(pair_codes, weights=undefined,
                                                       minlength=n_pairs)
        pairs[f"{view.name}__entries"] = np.bincount(pair_codes, weights=in_view, minlength=n_pairs)
    return pairs


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
                 subjects=subjects, meta=_subject_meta(per_subject), scores=scores,
                 n_undefined=undefined, n_entries=entries)


def _subject_meta(per_subject: pd.DataFrame) -> dict[str, np.ndarray]:
    meta = {c: per_subject[c].astype(str).to_numpy() for c in SUBGROUP_COLUMNS
            if c in per_subject.columns}
    meta["seen_vendor"] = per_subject["seen_vendor"].to_numpy(dtype=bool)
    return meta


def summarise_block(block: Block, config: BootstrapConfig,
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
                            "seed_sd": float(np.std(present, ddof=1)) if present.size > 1 else np.nan,
                            "n_undefined": int(block.n_undefined[view.name][i]),
                            "n_entries": int(block.n_entries[view.name][i])})
            for j, seed in enumerate(block.seeds):
                if not np.isnan(seed_means[i, j]):
                    per_seed.append({**block.key, "method": method, "view": view.name,
                                     "seed": seed, "mean": seed_means[i, j],
                                     "n_subjects": int((~np.isnan(cube[i, j])).sum())})
    return summary, per_seed


def compare_block(block: Block, config: BootstrapConfig, view: str = MAIN_VIEW,
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


def _comparison_row(block: Block, method: str, view: str, differences: np.ndarray,
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


def shared_scores(block: Block, view: str = MAIN_VIEW) -> tuple[list[str], np.ndarray]:
    """The methods with data and their ``(M, S, N)`` scores on the seeds all of them share and
    the subjects scored in every one of those runs (what ranks compare)."""
    cube = block.scores[view]
    has_seed = ~np.isnan(cube).all(axis=2)
    ranked = has_seed.any(axis=1)
    methods = [m for m, keep in zip(block.methods, ranked) if keep]
    shared = cube[ranked][:, has_seed[ranked].all(axis=0)]
    return methods, shared[:, :, ~np.isnan(shared).any(axis=(0, 1))]


def rank_block(block: Block, config: BootstrapConfig, view: str = MAIN_VIEW) -> dict[str, list[dict]]:
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
        out[chosen] = subject_counts[chosen] @ ranks / subject_counts[chosen].sum(axis=1, keepdims=True)
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
    frequency = np.bincount(flat, minlength=methods * methods).reshape(methods, methods) / n_resamples
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


def subgroup_masks(block: Block, column: str) -> list[tuple[str, str, np.ndarray]]:
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


def subgroup_block(block: Block, config: BootstrapConfig, column: str = "vendor",
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


def detectable_difference(var_run: float, var_subject: float, var_residual: float, n_seeds: int,
                          n_subjects: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true Δ the run-level test detects with ``power`` (two-sided, level α).

    Standard error ``sqrt(var_run/S + var_subject/N + var_residual/(S·N))`` on S − 1 df;
    the power of the t-test uses the noncentral t distribution. NaN below 2 seeds.
    """
    if n_seeds < 2 or n_subjects < 1 or np.isnan([var_run, var_subject, var_residual]).any():
        return np.nan
    standard_error = np.sqrt(var_run / n_seeds + var_subject / n_subjects
                             + var_residual / (n_seeds * n_subjects))
    df = n_seeds - 1
    critical = sps.t.ppf(1.0 - alpha / 2.0, df)

    def shortfall(noncentrality: float) -> float:
        # the wrong-sign tail is negligible here, and scipy's nct returns NaN for some of it
        wrong_sign = np.nan_to_num(sps.nct.cdf(-critical, df, noncentrality))
        return float(sps.nct.sf(critical, df, noncentrality) + wrong_sign - power)

    upper = 1.0
    while shortfall(upper) < 0:      # bracket the root; nct is unstable far beyond it
        upper *= 2.0
    return float(optimize.brentq(shortfall, 0.0, upper) * standard_error)


def seeds_needed(var_run: float, var_subject: float, var_residual: float, n_subjects: int,
                 delta: float, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """The fewest seeds (≥ 2) whose detectable Δ is at most ``delta``; None beyond
    `MAX_SEEDS_FOR_POWER`."""
    for n_seeds in range(2, MAX_SEEDS_FOR_POWER + 1):
        found = detectable_difference(var_run, var_subject, var_residual, n_seeds, n_subjects,
                                      power, alpha)
        if found <= abs(delta):
            return n_seeds
    return None


def power_table(comparisons: pd.DataFrame, delta: float | None = None) -> pd.DataFrame:
    """Per block (main view): variance components pooled over the compared methods, the Δ
    detectable at 80 % power with the block's seeds and subjects, and the seeds ``delta`` needs.

    The components are those of the paired differences with scratch (`run_level_estimates`),
    averaged over the methods tested on at least 2 seeds; blocks without any are left out.
    """
    columns = [*BLOCK_KEYS, "n_methods", "n_seeds", "n_subjects", "sd_run", "sd_subject",
               "sd_residual", "detectable_delta", "delta", "seeds_needed"]
    tested = comparisons[(comparisons["view"] == MAIN_VIEW) & (comparisons["n_seeds"] >= 2)
                         & (comparisons["n_subjects"] >= 2)]
    rows = []
    for key, frame in tested.groupby(list(BLOCK_KEYS), sort=False):
        components = [float(frame[c].mean()) for c in ("var_run", "var_subject", "var_residual")]
        n_seeds, n_subjects = int(frame["n_seeds"].max()), int(frame["n_subjects"].max())
        rows.append({**dict(zip(BLOCK_KEYS, key)), "n_methods": len(frame), "n_seeds": n_seeds,
                     "n_subjects": n_subjects,
                     **{f"sd_{name}": float(np.sqrt(v)) for name, v in
                        zip(("run", "subject", "residual"), components)},
                     "detectable_delta": detectable_difference(*components, n_seeds, n_subjects),
                     "delta": np.nan if delta is None else float(delta),
                     "seeds_needed": None if delta is None else
                     seeds_needed(*components, n_subjects, delta)})
    return pd.DataFrame(rows, columns=columns)


def restricted(block: Block, mask: np.ndarray) -> Block:
    """The block on the subjects where ``mask`` ``(N,)`` is True."""
    return Block(key=block.key, n_labelled=block.n_labelled, methods=block.methods,
                 seeds=block.seeds, subjects=block.subjects[mask],
                 meta={k: v[mask] for k, v in block.meta.items()},
                 scores={k: v[:, :, mask] for k, v in block.scores.items()},
                 n_undefined=block.n_undefined, n_entries=block.n_entries)


def subgroup_comparisons(block: Block, config: BootstrapConfig, column: str = "vendor",
                         view: str = MAIN_VIEW) -> list[dict]:
    """Δ vs scratch per value of a subject column (`compare_block` on those subjects, Holm
    within the subgroup), and over the seen and unseen vendors when the setting restricts them."""
    keep = TABLE_COLUMNS["subgroup_comparisons"]
    return [{**{k: row[k] for k in keep if k in row}, "kind": kind, "subgroup": name}
            for kind, name, mask in subgroup_masks(block, column)
            for row in compare_block(restricted(block, mask), config, view, secondary=False)]


def vendor_gap(block: Block, config: BootstrapConfig, view: str = MAIN_VIEW) -> list[dict]:
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
        unseen, known = complete_matrix(scores[:, ~seen], runs), complete_matrix(scores[:, seen], runs)
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


def augmentation_vs_ssp(blocks: list[Block], config: BootstrapConfig,
                        view: str = MAIN_VIEW) -> list[dict]:
    """The study's question "does augmentation matter more than SSP?": scratch trained with
    augmentation against each SSP method trained without it (augmentation ``none``), on the
    same dataset, encoder, setting and budget; Δ = scratch(augmented) − method(none), paired
    by seed and subject, with `run_level_estimates` and Holm over the methods."""
    rows = []
    for block in blocks:
        if block.key["augmentation"] != "none":
            continue
        for augmented in blocks:
            same = all(augmented.key[k] == block.key[k] for k in BLOCK_KEYS if k != "augmentation")
            if not same or augmented is block or BASELINE not in augmented.methods:
                continue
            rows += _scratch_augmented_rows(block, augmented, config, view)
    return rows


def _scratch_augmented_rows(plain: Block, augmented: Block, config: BootstrapConfig,
                            view: str) -> list[dict]:
    subjects = np.intersect1d(plain.subjects, augmented.subjects)
    seeds = sorted(set(plain.seeds) & set(augmented.seeds))
    plain_index = [list(plain.subjects).index(s) for s in subjects]
    augmented_index = [list(augmented.subjects).index(s) for s in subjects]
    scratch = augmented.scores[view][augmented.methods.index(BASELINE)]
    scratch = scratch[[augmented.seeds.index(s) for s in seeds]][:, augmented_index]
    rows = []
    for i, method in enumerate(plain.methods):
        if method == BASELINE:
            continue
        scores = plain.scores[view][i][[plain.seeds.index(s) for s in seeds]][:, plain_index]
        shared = ~np.isnan(scores).all(axis=1) & ~np.isnan(scratch).all(axis=1)
        differences = complete_matrix(scratch - scores, shared)
        estimate = {k: float(v) for k, v in run_level_estimates(differences, config.confidence).items()}
        n_seeds, n_subjects = differences.shape
        tested = n_seeds >= 2 and n_subjects >= 2
        rows.append({**{k: plain.key[k] for k in GROUP_KEYS if k != "augmentation"},
                     "augmentation": f"{BASELINE} {augmented.key['augmentation']} vs {method} none",
                     "budget": plain.key["budget"], "method": method, "n_seeds": n_seeds,
                     "n_subjects": n_subjects, "delta": estimate["estimate"],
                     "ci_low": estimate["ci_low"], "ci_high": estimate["ci_high"],
                     "p": estimate["p"] if tested else np.nan,
                     "scope": interval_scope(n_seeds, n_subjects),
                     "note": "" if tested else ONE_RUN_NOTE if n_seeds == 1 else "not tested"})
    adjusted = holm(np.array([r["p"] for r in rows]))
    for row, p_holm in zip(rows, adjusted):
        significant = bool(p_holm < ALPHA)
        row.update(p_holm=p_holm, significant=significant,
                   direction=("better" if row["delta"] > 0 else "worse") if significant else "")
    return rows


def across_blocks(summary: pd.DataFrame, comparisons: pd.DataFrame,
                  ranks: pd.DataFrame) -> pd.DataFrame:
    """One summary row per leaderboard × method: mean rank over its budgets, how many blocks
    find it significantly better / worse than scratch out of those tested, and the area under
    its label-efficiency curve (mean DSC, trapezoids on log labelled subjects, divided by the
    log range: a mean DSC over budgets) on the budgets where scratch and it both have a mean,
    with its difference to scratch's."""
    columns = TABLE_COLUMNS["across_blocks"]
    main = summary[summary["view"] == MAIN_VIEW]
    if main.empty:
        return pd.DataFrame(columns=columns)
    tested = comparisons[(comparisons["view"] == MAIN_VIEW) & comparisons["p"].notna()]
    rows = []
    for group, frame in main.groupby(list(GROUP_KEYS), sort=False):
        keys = dict(zip(GROUP_KEYS, group))
        in_group = (tested[list(GROUP_KEYS)] == pd.Series(keys)).all(axis=1)
        ranked = ranks[(ranks[list(GROUP_KEYS)] == pd.Series(keys)).all(axis=1)]
        curves = {m: f.dropna(subset=["mean"]).set_index("budget") for m, f in frame.groupby("method")}
        for method in method_order(set(frame["method"])):
            mine = tested[in_group & (tested["method"] == method)]
            rank_rows = ranked[ranked["method"] == method]
            aulc, delta = _aulc(curves.get(method), curves.get(BASELINE))
            rows.append({**keys, "method": method, "n_budgets": len(curves[method]),
                         "mean_rank": float(rank_rows["mean_rank"].mean()) if len(rank_rows) else np.nan,
                         "n_ranked": len(rank_rows),
                         "n_better": int((mine["significant"] & (mine["direction"] == "better")).sum()),
                         "n_worse": int((mine["significant"] & (mine["direction"] == "worse")).sum()),
                         "n_tested": len(mine), "aulc": aulc, "delta_aulc": delta})
    return pd.DataFrame(rows, columns=columns)


def _aulc(curve: pd.DataFrame | None, baseline: pd.DataFrame | None) -> tuple[float, float]:
    if curve is None or baseline is None:
        return np.nan, np.nan
    budgets = sorted(set(curve.index) & set(baseline.index),
                     key=lambda b: float(curve.loc[b, "n_labelled"]))
    if len(budgets) < 2:
        return np.nan, np.nan
    log_n = np.log([float(curve.loc[b, "n_labelled"]) for b in budgets])
    if log_n[-1] <= log_n[0]:
        return np.nan, np.nan
    areas = [float(np.trapezoid(frame.loc[budgets, "mean"].to_numpy(float), log_n)
                   / (log_n[-1] - log_n[0])) for frame in (curve, baseline)]
    return areas[0], areas[0] - areas[1]


CLINICAL_COLUMNS = [*BLOCK_KEYS, "method", "quantity", "unit", "n_subjects", "n_seeds",
                    "n_undefined", "mae", "mae_ci_low", "mae_ci_high", "bias", "bias_ci_low",
                    "bias_ci_high", "bias_seed_sd", "sd", "loa_low", "loa_high",
                    "loa_low_ci_low", "loa_low_ci_high", "loa_high_ci_low", "loa_high_ci_high",
                    "delta_mae", "delta_mae_ci_low", "delta_mae_ci_high", "scope"]


def clinical_agreement(clinical: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """MAE, bias and limits of agreement of prediction against reference, with intervals.

    Per block × method × quantity, over the seeds and the subjects with a reference value
    in every run (`complete_matrix`). An undefined predicted EF (empty predicted ventricle)
    counts as `UNDEFINED_EF_PREDICTION` (``n_undefined`` of them). Bias and MAE are grand
    means of the seed × subject errors with `run_level_estimates` intervals; the limits of
    agreement are bias ± 1.96 · sqrt(within-run SD² + between-seed variance of the bias), so
    a new training run's spread is in them, with intervals from Bland & Altman's (1999)
    variance ``SE(bias)² + 1.96² SD² / (2 (n − 1))``. ``delta_mae`` is the MAE difference to
    scratch on the seeds and subjects both have (negative: fewer errors), with its interval.
    """
    if clinical.empty:
        return pd.DataFrame(columns=CLINICAL_COLUMNS)
    rows = clinical[clinical["ref"].notna()]
    quantity_is_ef = np.char.endswith(rows["quantity"].to_numpy(str), "_EF")
    undefined = rows["pred"].isna().to_numpy() & quantity_is_ef
    predicted = np.where(undefined, UNDEFINED_EF_PREDICTION, rows["pred"].to_numpy(float))
    keep = ~np.isnan(predicted)
    rows = rows[keep]
    errors, undefined = predicted[keep] - rows["ref"].to_numpy(float), undefined[keep]
    method_codes, method_names = pd.factorize(rows["method"].astype(str))
    method_names = np.asarray(method_names, dtype=object)
    subject_codes, _ = pd.factorize(rows["subject"])
    seed_codes, _ = pd.factorize(rows["seed"])
    out = []
    for key, index in rows.groupby([*BLOCK_KEYS, "quantity", "unit"], observed=True,
                                   sort=True).indices.items():
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
        block = dict(zip([*BLOCK_KEYS, "quantity", "unit"], map(str, key)))
        for i, method in enumerate(methods):
            out.append({**block, "method": method, "n_undefined": int(n_undefined[i]),
                        **_agreement(cube, i, methods, confidence)})
    table = pd.DataFrame(out)
    return table.reindex(columns=CLINICAL_COLUMNS)


def _agreement(cube: np.ndarray, index: int, methods: list[str], confidence: float) -> dict:
    errors = complete_matrix(cube[index])
    n_seeds, n_subjects = errors.shape
    bias = run_level_estimates(errors, confidence)
    mae = run_level_estimates(np.abs(errors), confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        within = float(np.mean(errors.var(axis=1, ddof=1))) if n_subjects > 1 else np.nan
        between = float(errors.mean(axis=1).var(ddof=1)) if n_seeds > 1 else 0.0
    sd = float(np.sqrt(within + between))
    half = LIMITS_OF_AGREEMENT_Z * sd
    if errors.size > 1:
        limit_se = float(np.sqrt(bias["standard_error"] ** 2
                                 + LIMITS_OF_AGREEMENT_Z ** 2 * sd ** 2 / (2 * (errors.size - 1))))
        quantile = float(special.stdtrit(bias["df"], 0.5 + confidence / 2.0))
    else:
        limit_se = quantile = np.nan
    row = {"n_subjects": n_subjects, "n_seeds": n_seeds, "mae": float(mae["estimate"]),
           "mae_ci_low": float(mae["ci_low"]), "mae_ci_high": float(mae["ci_high"]),
           "bias": float(bias["estimate"]), "bias_ci_low": float(bias["ci_low"]),
           "bias_ci_high": float(bias["ci_high"]),
           "bias_seed_sd": float(np.sqrt(between)) if n_seeds > 1 else np.nan, "sd": sd,
           "scope": interval_scope(n_seeds, n_subjects)}
    for name, limit in (("loa_low", row["bias"] - half), ("loa_high", row["bias"] + half)):
        row.update({name: limit, f"{name}_ci_low": limit - quantile * limit_se,
                    f"{name}_ci_high": limit + quantile * limit_se})
    row.update(delta_mae=np.nan, delta_mae_ci_low=np.nan, delta_mae_ci_high=np.nan)
    if methods[index] != BASELINE and BASELINE in methods:
        baseline = cube[methods.index(BASELINE)]
        shared = ~np.isnan(cube[index]).all(axis=1) & ~np.isnan(baseline).all(axis=1)
        gain = run_level_estimates(complete_matrix(np.abs(cube[index]) - np.abs(baseline), shared),
                                   confidence)
        row.update(delta_mae=float(gain["estimate"]), delta_mae_ci_low=float(gain["ci_low"]),
                   delta_mae_ci_high=float(gain["ci_high"]))
    return row


def compute_statistics(subjects: pd.DataFrame, clinical: pd.DataFrame,
                       config: BootstrapConfig = BootstrapConfig(),
                       views: tuple[View, ...] = VIEWS) -> Statistics:
    """All report tables from the long subjects and clinical tables (`load.Store`)."""
    # Rank stability runs thousands of small matrix products; BLAS worker threads only add
    # synchronisation to those, and on a busy machine they make each one many times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        return _compute_statistics(subjects, clinical, config, views)


def _compute_statistics(subjects: pd.DataFrame, clinical: pd.DataFrame, config: BootstrapConfig,
                        views: tuple[View, ...]) -> Statistics:
    scores = subject_scores(subjects, views) if not subjects.empty else pd.DataFrame()
    blocks = blocks_of(scores, views) if not subjects.empty else []
    collected: dict[str, list[dict]] = {name: [] for name in (
        "summary", "per_seed", "comparisons", "friedman", "ranks", "cliques", "pairwise",
        "rank_stability", "vendors", "pathologies", "subgroup_comparisons", "vendor_gap")}
    notes = []
    for block in blocks:
        summary, per_seed = summarise_block(block, config, views)
        collected["summary"] += summary
        collected["per_seed"] += per_seed
        for view in COMPARED_VIEWS:
            if view in block.scores:
                collected["comparisons"] += compare_block(block, config, view,
                                                          secondary=view == MAIN_VIEW)
        for name, rows in rank_block(block, config).items():
            collected[name] += rows
        collected["vendors"] += subgroup_block(block, config, "vendor")
        collected["pathologies"] += subgroup_block(block, config, "pathology")
        for column in SUBGROUP_COLUMNS:
            collected["subgroup_comparisons"] += subgroup_comparisons(block, config, column)
        collected["vendor_gap"] += vendor_gap(block, config)
        if BASELINE not in block.methods:
            where = ", ".join(f"{k}={v}" for k, v in block.key.items())
            notes.append(f"no scratch cells in block {where}: its methods are not tested against scratch")
    tables = {name: pd.DataFrame(rows, columns=TABLE_COLUMNS[name]) for name, rows in collected.items()}
    tables["augmentation_vs_ssp"] = pd.DataFrame(augmentation_vs_ssp(blocks, config),
                                                 columns=TABLE_COLUMNS["augmentation_vs_ssp"])
    tables["across_blocks"] = across_blocks(tables["summary"], tables["comparisons"],
                                            tables["ranks"])
    return Statistics(blocks=blocks, clinical=clinical_agreement(clinical, config.confidence),
                      notes=notes, subject_scores=scores,
                      structures=annotated_structures(subjects), **tables)


def annotated_structures(subjects: pd.DataFrame) -> list[str]:
    """The classes annotated for at least one subject, in LV, MYO, RV order."""
    if subjects.empty:
        return []
    present = {str(c) for c in subjects.loc[subjects["annotated"].astype(bool), "class"].unique()}
    return [c for c in CLASS_NAMES if c in present] + sorted(present - set(CLASS_NAMES))
