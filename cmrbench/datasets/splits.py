"""Subject splits: fixed test/validation sets, nested label budgets, settings.

The study (arXiv 2409.18100) draws three random labelled subsets per budget (seeds 0–2),
nested within a seed (10 ⊂ 15 ⊂ 25 ⊂ 50), plus "all" with seed 0, against a fixed
validation and test set. Generalisation settings restrict the *labelled training and
validation* subjects to some vendors (or train on one phase) and keep the full test set;
pretraining always uses every training subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from cmrbench.datasets.base import DatasetAdapter, DatasetError, check_disjoint

ALL = "all"
SETTING_PATTERN = re.compile(r"^(default|vendors=[A-D](\+[A-D])*|phase=(ED|ES))$")


class SplitError(ValueError):
    """A budget or setting cannot be served by the dataset's split."""


@dataclass(frozen=True)
class Setting:
    """A generalisation setting: ``default``, ``vendors=A+B`` or ``phase=ED``."""

    name: str

    def __post_init__(self) -> None:
        if not SETTING_PATTERN.match(self.name):
            raise SplitError(f"unknown setting {self.name!r}; expected 'default', "
                             f"'vendors=A+B' (any of A–D joined by '+'), 'phase=ED' or 'phase=ES'")

    @property
    def vendors(self) -> tuple[str, ...] | None:
        """Vendor letters the labelled subjects are restricted to (None: all)."""
        return tuple(self.name.split("=")[1].split("+")) if self.name.startswith("vendors=") else None

    @property
    def train_phases(self) -> tuple[str, ...]:
        """Phases whose labels are used for fine-tuning."""
        return (self.name.split("=")[1],) if self.name.startswith("phase=") else ("ED", "ES")


@dataclass(frozen=True)
class CellSubjects:
    """Who is used where in one cell."""

    labelled: list[str]   # labelled training subjects (the budget subset)
    val: list[str]
    test: list[str]
    pool: list[str]       # pretraining pool: every training subject


def nested_subset(train_ids: list[str], budget: int, seed: int) -> list[str]:
    """The first ``budget`` subjects of a seeded permutation: nested across budgets."""
    order = np.random.default_rng(seed).permutation(len(train_ids))
    return [sorted(train_ids)[i] for i in order[:budget]]


def parse_budget(budget: str | int) -> str:
    """Normalise a budget to its string form (``"10"`` or ``"all"``)."""
    text = str(budget).strip().lower()
    if text != ALL and not (text.isdigit() and int(text) > 0):
        raise SplitError(f"label budget {budget!r} is not a positive whole number or 'all'")
    return text


def cell_subjects(adapter: DatasetAdapter, budget: str, seed: int, setting: Setting) -> CellSubjects:
    """Resolve the labelled, validation, test and pool subjects of one cell.

    Adapters with the study's own subset files (``fixed_subset``) serve those; otherwise
    subsets are drawn with `nested_subset` from the (setting-restricted) training subjects.
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
        raise SplitError(f"setting {setting.name!r} leaves no labelled training subject in "
                         f"dataset {adapter.name!r}")
    if budget == ALL:
        labelled = sorted(train_l)
    else:
        n = int(budget)
        if n > len(train_l):
            raise SplitError(f"label budget {n} is larger than the {len(train_l)} training "
                             f"subjects of dataset {adapter.name!r} (setting {setting.name}); "
                             f"choose a budget ≤ {len(train_l)} or 'all'")
        fixed = adapter.fixed_subset(n, seed, setting.name)
        labelled = fixed if fixed is not None else nested_subset(train_l, n, seed)
    return CellSubjects(labelled=labelled, val=sorted(val), test=sorted(test), pool=sorted(train))


def check_split(adapter: DatasetAdapter) -> None:
    """Raise `DatasetError` if the default split is empty or its parts overlap."""
    split = adapter.default_split()
    for part in ("train", "test"):
        if not split.get(part):
            raise DatasetError(f"dataset {adapter.name!r}: the {part} split is empty")
    check_disjoint(split, f"dataset {adapter.name!r}")
