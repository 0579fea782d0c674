"""Subject splits: fixed test/validation sets, nested label budgets, settings.

The study (arXiv 2409.18100) draws three random labelled subsets per budget (seeds 0–2),
nested within a seed (10 ⊂ 15 ⊂ 25 ⊂ 50), plus "all" with seed 0, against a fixed
validation and test set. Generalisation settings restrict the *labelled training and
validation* subjects to some vendors (or train on one phase) and keep the full test set;
pretraining always uses every training subject.

Dataset option ``stratify=<meta key>`` (e.g. ``stratify=pathology`` on ACDC) draws the
subsets stratified by that subject meta value: every budget holds each group in proportion
to its size (ACDC's five groups of 20: budget 10 holds two of each), still nested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from cmrbench.datasets.base import DatasetAdapter, DatasetError, check_disjoint
from cmrbench.errors import CmrbenchError

ALL = "all"
STRATIFY_OPTION = "stratify"
SETTING_PATTERN = re.compile(r"^(default|vendors=[A-D](\+[A-D])*|phase=(ED|ES))$")


class SplitError(CmrbenchError, ValueError):
    """A budget or setting cannot be served by the dataset's split."""


@dataclass(frozen=True)
class Setting:
    """A generalisation setting: ``default``, ``vendors=A+B`` or ``phase=ED``."""

    name: str

    def __post_init__(self) -> None:
        if not SETTING_PATTERN.match(self.name):
            raise SplitError(
                f"unknown setting {self.name!r}; expected 'default', "
                f"'vendors=A+B' (any of A–D joined by '+'), 'phase=ED' or 'phase=ES'"
            )

    @property
    def vendors(self) -> tuple[str, ...] | None:
        """Vendor letters the labelled subjects are restricted to (None: all)."""
        return (
            tuple(self.name.split("=")[1].split("+")) if self.name.startswith("vendors=") else None
        )

    @property
    def train_phases(self) -> tuple[str, ...]:
        """Phases whose labels are used for fine-tuning."""
        return (self.name.split("=")[1],) if self.name.startswith("phase=") else ("ED", "ES")


@dataclass(frozen=True)
class CellSubjects:
    """Who is used where in one cell."""

    labelled: list[str]  # labelled training subjects (the budget subset)
    val: list[str]
    test: list[str]
    pool: list[str]  # pretraining pool: every training subject


def nested_subset(
    train_ids: list[str], budget: int, seed: int, groups: Mapping[str, str] | None = None
) -> list[str]:
    """The first ``budget`` subjects of `draw_order`: nested across budgets."""
    return draw_order(train_ids, seed, groups)[:budget]


def draw_order(
    train_ids: list[str], seed: int, groups: Mapping[str, str] | None = None
) -> list[str]:
    """Every training subject in the order ``seed`` draws them (a budget takes a prefix).

    Without ``groups``: a seeded permutation of the sorted ids. With ``groups`` (subject →
    stratum): each stratum is permuted on its own, and its ``k``-th subject (0-based) of
    ``n`` comes at quota position ``(k + ½) / n``; merging the strata by that position
    (Sainte-Laguë apportionment) makes every prefix hold each stratum in proportion to
    its size, rounded. Strata tied at a position come in a seeded order, so which stratum
    gets the extra subject of an uneven budget varies with the seed.
    """
    rng = np.random.default_rng(seed)
    ordered = sorted(train_ids)
    if groups is None:
        return [ordered[i] for i in rng.permutation(len(ordered))]
    strata: dict[str, list[str]] = {}
    for subject_id in ordered:
        strata.setdefault(groups[subject_id], []).append(subject_id)
    names = sorted(strata)
    tie_break = rng.permutation(len(names))
    keyed = []
    for name, tie in zip(names, tie_break):
        members = strata[name]
        for rank, index in enumerate(rng.permutation(len(members))):
            keyed.append((Fraction(2 * rank + 1, 2 * len(members)), int(tie), members[index]))
    return [subject_id for _, _, subject_id in sorted(keyed)]


def stratify_groups(adapter: DatasetAdapter, subject_ids: list[str]) -> dict[str, str] | None:
    """Subject → stratum from the dataset option ``stratify=<meta key>`` (None: not set)."""
    key = adapter.options.get(STRATIFY_OPTION)
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise SplitError(
            f"dataset {adapter.name!r} option stratify={key!r}; expected the name "
            f"of a subject meta field such as 'pathology'"
        )
    groups = {}
    for subject_id in subject_ids:
        meta = adapter.subject_meta(subject_id)
        if meta.get(key) in (None, ""):
            raise SplitError(
                f"dataset {adapter.name!r} option stratify={key!r}: subject "
                f"{subject_id} has no {key!r}; expected one of the meta fields "
                f"{', '.join(sorted(k for k, v in meta.items() if v not in (None, '')))}"
            )
        groups[subject_id] = str(meta[key])
    return groups


def parse_budget(budget: str | int) -> str:
    """Normalise a budget to its string form (``"10"`` or ``"all"``)."""
    text = str(budget).strip().lower()
    if text != ALL and not (text.isdigit() and int(text) > 0):
        raise SplitError(f"label budget {budget!r} is not a positive whole number or 'all'")
    return text


def cell_subjects(
    adapter: DatasetAdapter, budget: str, seed: int, setting: Setting
) -> CellSubjects:
    """Resolve the labelled, validation, test and pool subjects of one cell.

    Adapters with the study's own subset files (``fixed_subset``) serve those; otherwise
    subsets are drawn with `nested_subset` from the (setting-restricted) training subjects,
    stratified when the dataset option ``stratify`` names a meta field.
    """
    split = adapter.default_split()
    train, val, test = split["train"], split["val"], split["test"]
    vendors = setting.vendors
    if vendors is not None:
        restricted = adapter.setting_split(setting.name)
        if restricted is not None:
            train_l, val = restricted["train"], restricted["val"]
        else:
            train_l = [s for s in train if adapter.subject_meta(s).get("vendor") in vendors]
            val = [s for s in val if adapter.subject_meta(s).get("vendor") in vendors]
    else:
        train_l = train
    if not train_l:
        raise SplitError(
            f"setting {setting.name!r} leaves no labelled training subject in "
            f"dataset {adapter.name!r}"
        )
    if budget == ALL:
        labelled = sorted(train_l)
    else:
        n = int(budget)
        if n > len(train_l):
            raise SplitError(
                f"label budget {n} is larger than the {len(train_l)} training "
                f"subjects of dataset {adapter.name!r} (setting {setting.name}); "
                f"choose a budget ≤ {len(train_l)} or 'all'"
            )
        fixed = adapter.fixed_subset(n, seed, setting.name)
        if fixed is not None and adapter.options.get(STRATIFY_OPTION) is not None:
            raise SplitError(
                f"dataset {adapter.name!r}: option stratify does not apply to the "
                f"study's own labelled subsets (budget {n}, seed {seed}); drop it"
            )
        labelled = (
            fixed
            if fixed is not None
            else nested_subset(train_l, n, seed, stratify_groups(adapter, train_l))
        )
    return CellSubjects(labelled=labelled, val=sorted(val), test=sorted(test), pool=sorted(train))


def check_split(adapter: DatasetAdapter) -> None:
    """Raise `DatasetError` if the default split is empty or its parts overlap."""
    split = adapter.default_split()
    for part in ("train", "test"):
        if not split.get(part):
            raise DatasetError(f"dataset {adapter.name!r}: the {part} split is empty")
    check_disjoint(split, f"dataset {adapter.name!r}")
