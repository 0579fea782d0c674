"""Dataset adapters: the registry and the interface every adapter implements.

An adapter reads one on-disk layout and returns `Subject` records in the canonical label
convention (0 bg, 1 LV, 2 MYO, 3 RV). Subjects load lazily, one at a time: a real dataset
does not fit in memory as float32.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable

from cmrbench.datasets.subject import Subject
from cmrbench.errors import CmrbenchError
from cmrbench.plugins import discover
from cmrbench.registry import Registry

# discovery imports every module of this package but these helpers, which register no
# adapter (and preprocess would pull in torch)
DATASETS: Registry[type["DatasetAdapter"]] = Registry(
    "dataset", package="cmrbench.datasets", entry_point_group="cmrbench.datasets",
    helper_modules=("base", "check", "layout", "nifti", "paper_splits", "preprocess", "show",
                    "splits", "subject", "view"))
SPLIT_NAMES = ("train", "val", "test")


class DatasetError(CmrbenchError, ValueError):
    """A dataset cannot be read; the message names the file and what was expected."""


def check_disjoint(split: dict[str, list[str]], where: str) -> None:
    """Raise `DatasetError` (prefixed by ``where``) if a subject is in two parts of ``split``."""
    seen: dict[str, str] = {}
    for part, ids in split.items():
        for subject_id in ids:
            if subject_id in seen:
                raise DatasetError(f"{where}: subject {subject_id} is in both {seen[subject_id]} "
                                   f"and {part}; expected each subject in one split")
            seen[subject_id] = part


class DatasetAdapter(ABC):
    """Reads one dataset layout.

    Subclasses set ``name`` and register with ``@DATASETS.register``; a subclass in a
    plugin file (``--plugins DIR``, ``CMRBENCH_PLUGINS``) or behind an entry point in the
    group ``cmrbench.datasets`` is found like a built-in one (`cmrbench.plugins`).
    ``root`` is the dataset folder (None for generated datasets such as the phantom).
    """

    name: str = ""
    needs_root: bool = True

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        if self.needs_root:
            if root is None:
                raise DatasetError(f"dataset {self.name!r} needs --root DIR (the folder that "
                                   f"holds its files)")
            root = Path(root)
            if not root.is_dir():
                raise DatasetError(f"dataset {self.name!r}: root {root} does not exist or is "
                                   f"not a folder")
        self.root = Path(root) if root is not None else None
        self.options = options

    @abstractmethod
    def subject_ids(self) -> list[str]:
        """All subject ids, sorted."""

    @abstractmethod
    def load(self, subject_id: str) -> Subject:
        """Read one subject; raise `DatasetError`/`SubjectError` naming the file if bad."""

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        """Cheap per-subject metadata (vendor, pathology, ...). Default: load the subject."""
        return dict(self.load(subject_id).meta)

    @abstractmethod
    def default_split(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}`` subject ids (fixed, documented)."""

    def fixed_subset(self, budget: int, seed: int, setting: str) -> list[str] | None:
        """The study's own labelled subset for (budget, seed, setting), if the dataset has
        one (M&Ms + M&Ms-2 with the paper splits); None lets cmrbench draw it."""
        return None

    def setting_split(self, setting: str) -> dict[str, list[str]] | None:
        """The study's own train/val lists for a vendor setting, if any; None: filter by
        ``meta["vendor"]``."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this dataset's content for cache keys (name, root, options)."""
        return {"name": self.name, "root": str(self.root.resolve()) if self.root else None,
                "options": dict(sorted(self.options.items()))}


class ExcludingAdapter(DatasetAdapter):
    """Another adapter without some subjects (``--skip-bad-subjects``)."""

    needs_root = False

    def __init__(self, inner: DatasetAdapter, exclude: tuple[str, ...]) -> None:
        super().__init__(None)
        self.inner, self.exclude = inner, frozenset(exclude)
        self.name, self.root, self.options = inner.name, inner.root, inner.options

    def subject_ids(self) -> list[str]:
        return [s for s in self.inner.subject_ids() if s not in self.exclude]

    def load(self, subject_id: str) -> Subject:
        return self.inner.load(subject_id)

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        return self.inner.subject_meta(subject_id)

    def default_split(self) -> dict[str, list[str]]:
        return {part: [s for s in ids if s not in self.exclude]
                for part, ids in self.inner.default_split().items()}

    def fixed_subset(self, budget: int, seed: int, setting: str) -> list[str] | None:
        subset = self.inner.fixed_subset(budget, seed, setting)
        if subset is not None and self.exclude & set(subset):
            raise DatasetError(f"the study's subset for budget {budget}, seed {seed} contains "
                               f"skipped subject(s) {sorted(self.exclude & set(subset))}")
        return subset

    def setting_split(self, setting: str) -> dict[str, list[str]] | None:
        split = self.inner.setting_split(setting)
        return None if split is None else {k: [s for s in v if s not in self.exclude]
                                           for k, v in split.items()}

    def fingerprint(self) -> dict[str, Any]:
        return {**self.inner.fingerprint(), "exclude": sorted(self.exclude)}


def create_dataset(name: str, root: str | Path | None = None, exclude: tuple[str, ...] = (),
                   **options: Any) -> DatasetAdapter:
    """Instantiate the adapter registered as ``name``, without the ``exclude`` subjects
    (discovering adapters first, with the plugin folders of ``CMRBENCH_PLUGINS``)."""
    discover(DATASETS)
    adapter = DATASETS.get(name)(root, **options)
    return ExcludingAdapter(adapter, exclude) if exclude else adapter


def list_datasets(pattern: str = "*",
                  plugin_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Registered dataset names matching ``pattern`` (discovering adapters first)."""
    discover(DATASETS, plugin_dirs)
    return DATASETS.names(pattern)
