"""How scores are keyed and held: blocks, views, the baseline, and each block's score cube.

Scores are computed per subject, never per slice (DESIGN.md, "Decisions"): a subject's score
in one cell is its DSC (or HD95) averaged over the annotated classes and phases of a `View`.
A *block* is one dataset × encoder × augmentation × setting × budget (`BLOCK_KEYS`); a
leaderboard (a *group*) is a block without its budget (`GROUP_KEYS`). `subject_scores` turns
the store's long rows into one row per training run × test subject, and `blocks_of` turns
those into a dense `BlockScores` cube per block, what every analysis reads.

Un-annotated classes (NaN DSC, ``annotated`` False) are left out of every average. A missed
structure must not help a model: an undefined HD95 (exactly one mask empty) counts as the
field-of-view diagonal (``hd95_worst_mm``, `cmrbench.store.load_store`) when the store says
it, and is counted per view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cmrbench.vocabulary import CLINICAL_QUANTITIES, PHASES, STRUCTURES

BASELINE = "scratch"
BLOCK_KEYS = ("dataset", "encoder", "augmentation", "setting", "budget")
GROUP_KEYS = ("dataset", "encoder", "augmentation", "setting")
SUBGROUP_COLUMNS = ("vendor", "pathology")
WORST_CASE_METRIC, WORST_CASE_COLUMN = "hd95_mm", "hd95_worst_mm"
# the range of each metric: a mean's interval stays inside it (`estimates.bounded_interval`)
METRIC_BOUNDS = {"dsc": (0.0, 1.0), "hd95_mm": (0.0, np.inf)}


@dataclass(frozen=True)
class View:
    """One subject-level score: ``metric`` averaged over the chosen class and phase (None = all)."""

    name: str
    metric: str
    class_name: str | None = None
    phase: str | None = None


# dsc and hd95, each over every annotated class and phase, then per class, then per phase
VIEWS: tuple[View, ...] = tuple(
    View(f"{prefix}{suffix}", metric, class_name, phase)
    for prefix, metric in (("dsc", "dsc"), ("hd95", "hd95_mm"))
    for suffix, class_name, phase in (
        ("", None, None),
        *((f"_{name}", name, None) for name in STRUCTURES),
        *((f"_{phase}", None, phase) for phase in PHASES),
    )
)
MAIN_VIEW = "dsc"
VIEW_METRICS = {view.name: view.metric for view in VIEWS}


def view_bounds(view: str) -> tuple[float, float]:
    """The range of a view's scores (`METRIC_BOUNDS`); a view of another metric has none."""
    return METRIC_BOUNDS.get(VIEW_METRICS.get(view, ""), (-np.inf, np.inf))


def difference_limit(view: str) -> float:
    """The largest possible difference between two scores of a view (1 for DSC)."""
    low, high = view_bounds(view)
    return high - low


@dataclass
class BlockScores:
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


def boards_of(blocks: list[BlockScores]) -> list[list[BlockScores]]:
    """The blocks grouped by leaderboard (`GROUP_KEYS`), each group in budget order: the
    family of a leaderboard's tests."""
    boards: dict[tuple[str, ...], list[BlockScores]] = {}
    for block in blocks:
        boards.setdefault(tuple(block.key[k] for k in GROUP_KEYS), []).append(block)
    return [sorted(board, key=lambda b: budget_order(b.key["budget"])) for board in boards.values()]


def subject_blocks(subjects: pd.DataFrame, views: tuple[View, ...] = VIEWS) -> list[BlockScores]:
    """Subject scores of every block from the long subjects table
    (`cmrbench.store.Store.subjects`)."""
    if subjects.empty:
        return []
    return blocks_of(subject_scores(subjects, views), views)


def blocks_of(pairs: pd.DataFrame, views: tuple[View, ...] = VIEWS) -> list[BlockScores]:
    """The dense `BlockScores` of every block in a `subject_scores` table."""
    blocks = []
    for key_values, frame in pairs.groupby(list(BLOCK_KEYS), observed=True, sort=False):
        blocks.append(_dense_block(dict(zip(BLOCK_KEYS, map(str, key_values))), frame, views))
    return sorted(
        blocks, key=lambda b: (tuple(b.key[k] for k in GROUP_KEYS), budget_order(b.key["budget"]))
    )


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
    pairs = subjects.iloc[first_rows][
        [
            "cell_key",
            "method",
            "encoder",
            "dataset",
            "setting",
            "augmentation",
            "budget",
            "n_labelled",
            "seed",
            "subject",
            *meta,
        ]
    ].reset_index(drop=True)
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
        pairs[f"{view.name}__undefined"] = np.bincount(
            pair_codes, weights=undefined, minlength=n_pairs
        )
        pairs[f"{view.name}__entries"] = np.bincount(pair_codes, weights=in_view, minlength=n_pairs)
    return pairs


def _dense_block(key: dict[str, str], frame: pd.DataFrame, views: tuple[View, ...]) -> BlockScores:
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
        undefined[view.name] = np.bincount(
            m, weights=frame[f"{view.name}__undefined"], minlength=len(methods)
        ).astype(int)
        entries[view.name] = np.bincount(
            m, weights=frame[f"{view.name}__entries"], minlength=len(methods)
        ).astype(int)
    return BlockScores(
        key=key,
        n_labelled=int(frame["n_labelled"].max()),
        methods=methods,
        seeds=seeds,
        subjects=subjects,
        meta=_subject_meta(per_subject),
        scores=scores,
        n_undefined=undefined,
        n_entries=entries,
    )


def _subject_meta(per_subject: pd.DataFrame) -> dict[str, np.ndarray]:
    meta = {
        c: per_subject[c].astype(str).to_numpy()
        for c in SUBGROUP_COLUMNS
        if c in per_subject.columns
    }
    meta["seen_vendor"] = per_subject["seen_vendor"].to_numpy(dtype=bool)
    return meta


def restricted(block: BlockScores, mask: np.ndarray) -> BlockScores:
    """The block on the subjects where ``mask`` ``(N,)`` is True."""
    return BlockScores(
        key=block.key,
        n_labelled=block.n_labelled,
        methods=block.methods,
        seeds=block.seeds,
        subjects=block.subjects[mask],
        meta={k: v[mask] for k, v in block.meta.items()},
        scores={k: v[:, :, mask] for k, v in block.scores.items()},
        n_undefined=block.n_undefined,
        n_entries=block.n_entries,
    )


def annotated_structures(subjects: pd.DataFrame) -> list[str]:
    """The classes annotated for at least one subject, in LV, MYO, RV order."""
    if subjects.empty:
        return []
    present = {str(c) for c in subjects.loc[subjects["annotated"].astype(bool), "class"].unique()}
    return [c for c in STRUCTURES if c in present] + sorted(present - set(STRUCTURES))
