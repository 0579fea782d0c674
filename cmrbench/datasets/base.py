"""Dataset adapters: the registry, the interface every adapter implements and its options.

An adapter reads one on-disk layout and returns `Subject` records in the canonical label
convention (0 bg, 1 LV, 2 MYO, 3 RV). Subjects load lazily, one at a time: a real dataset
does not fit in memory as float32.

An adapter's options (a grid's ``dataset.options``, ``--option key=value``) are declared
by its ``options_class``, a frozen `DatasetOptions` dataclass with one typed field per
option and the adapter's default; `check_dataset_options` checks and types them for every
caller (`create_dataset`, the grid parser), so a typo or a wrong type fails naming the
adapter, the key and the valid keys instead of being ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cmrbench.datasets.subject import Subject
from cmrbench.errors import CmrbenchError
from cmrbench.plugins import discover
from cmrbench.registry import Registry
from cmrbench.typed import ConfigError, build_config

# discovery imports every module of this package but these helpers, which register no
# adapter (and preprocess would pull in torch)
DATASETS: Registry[type[DatasetAdapter]] = Registry(
    "dataset",
    package="cmrbench.datasets",
    entry_point_group="cmrbench.datasets",
    helper_modules=(
        "base",
        "check",
        "layout",
        "nifti",
        "paper_splits",
        "preprocess",
        "show",
        "splits",
        "subject",
        "view",
    ),
)
SPLIT_NAMES = ("train", "val", "test")


class DatasetError(CmrbenchError, ValueError):
    """A dataset cannot be read; the message names the file and what was expected."""


def check_disjoint(split: dict[str, list[str]], where: str) -> None:
    """Raise `DatasetError` (prefixed by ``where``) if a subject is in two parts of ``split``."""
    seen: dict[str, str] = {}
    for part, ids in split.items():
        for subject_id in ids:
            if subject_id in seen:
                raise DatasetError(
                    f"{where}: subject {subject_id} is in both {seen[subject_id]} "
                    f"and {part}; expected each subject in one split"
                )
            seen[subject_id] = part


@dataclass(frozen=True)
class DatasetOptions:
    """An adapter's options: none. An adapter that takes options subclasses this with one
    field per option (int, float, bool, str, lists, mappings, ``X | None``), its default
    the adapter's, and names it as ``options_class``; ``__post_init__`` may check ranges
    (raising `ValueError`)."""


@dataclass(frozen=True)
class SplitOptions(DatasetOptions):
    """The options of an adapter that reads a dataset of subjects from files.

    ``split``: ``{"train": [...], "val": [...], "test": [...]}`` subject ids replacing the
    adapter's default split (`cmrbench.datasets.paper_splits.split_option`). ``stratify``:
    a ``meta`` field (``pathology``) within whose groups label budgets are drawn in
    proportion (`cmrbench.datasets.splits`).
    """

    split: dict[str, list[Any]] | None = None
    stratify: str | None = None


class DatasetAdapter(ABC):
    """Reads one dataset layout.

    Subclasses set ``name`` and register with ``@DATASETS.register``; a subclass in a
    plugin file (``--plugins DIR``, ``CMRBENCH_PLUGINS``) or behind an entry point in the
    group ``cmrbench.datasets`` is found like a built-in one (`cmrbench.plugins`).
    ``root`` is the dataset folder (None for generated datasets such as the phantom).
    ``options_class`` declares the options it takes (default: none); ``self.options``
    holds those given, typed (`check_dataset_options`).
    """

    name: str = ""
    needs_root: bool = True
    options_class: ClassVar[type[DatasetOptions]] = DatasetOptions
    where_to_get: str = ""  # where the data comes from and the layout ``root`` must hold

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        if self.needs_root:
            if root is None:
                raise DatasetError(
                    f"dataset {self.name!r} needs --root DIR (the folder that holds its files)"
                )
            root = Path(root)
            if not root.is_dir():
                seen_from = "" if root.is_absolute() else f" (seen from {Path.cwd()})"
                raise DatasetError(
                    f"dataset {self.name!r}: root {root}{seen_from} does not exist "
                    f"or is not a folder" + (f". {self.where_to_get}" if self.where_to_get else "")
                )
        self.root = Path(root) if root is not None else None
        self.options = options

    @classmethod
    def typed_options(cls, options: Mapping[str, Any]) -> DatasetOptions:
        """``options`` as this adapter's ``options_class``, each value typed.

        Raises:
            DatasetError: an option it does not declare (naming the adapter, the key and
                the valid keys), a value of the wrong type, or one its checks reject.
        """
        try:
            return build_config(cls.options_class, options, f"dataset {cls.name!r}", noun="option")
        except ConfigError as exc:
            raise DatasetError(str(exc)) from None

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
        return {
            "name": self.name,
            "root": str(self.root.resolve()) if self.root else None,
            "options": dict(sorted(self.options.items())),
        }

    def pretraining_pool(self) -> list[str]:
        """The subjects whose every frame is pretraining material: the training split (an
        adapter that holds unlabelled studies may add them)."""
        return self.default_split()["train"]

    def source(self) -> dict[str, Any]:
        """What this dataset's subject ids are ids within: two adapters with one source hold
        the same subject under one id, whatever their split options (the leakage check of
        `cmrbench.benchmark.leakage`). Default: the name and the root folder."""
        return {"name": self.name, "root": str(self.root.resolve()) if self.root else None}

    def inferred(self) -> list[str]:
        """What the adapter inferred from the files rather than read from the user (a label
        mapping, how files form subjects and phases, counts), for ``cmrbench data check``."""
        return []


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
        return {
            part: [s for s in ids if s not in self.exclude]
            for part, ids in self.inner.default_split().items()
        }

    def fixed_subset(self, budget: int, seed: int, setting: str) -> list[str] | None:
        subset = self.inner.fixed_subset(budget, seed, setting)
        if subset is not None and self.exclude & set(subset):
            raise DatasetError(
                f"the study's subset for budget {budget}, seed {seed} contains "
                f"skipped subject(s) {sorted(self.exclude & set(subset))}"
            )
        return subset

    def setting_split(self, setting: str) -> dict[str, list[str]] | None:
        split = self.inner.setting_split(setting)
        return (
            None
            if split is None
            else {k: [s for s in v if s not in self.exclude] for k, v in split.items()}
        )

    def fingerprint(self) -> dict[str, Any]:
        return {**self.inner.fingerprint(), "exclude": sorted(self.exclude)}

    def pretraining_pool(self) -> list[str]:
        return [s for s in self.inner.pretraining_pool() if s not in self.exclude]

    def source(self) -> dict[str, Any]:
        return self.inner.source()

    def inferred(self) -> list[str]:
        return self.inner.inferred()


def check_dataset_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` of the adapter registered as ``name``, each typed as its
    ``options_class`` declares (YAML values: ``8.0`` for an int becomes 8, ``"1e-4"`` for a
    float 0.0001); only the options given, so that an adapter's fingerprint names what its
    user set. Raises `DatasetError` as `DatasetAdapter.typed_options`.
    """
    discover(DATASETS)
    typed = DATASETS.get(name).typed_options(options)
    return {key: getattr(typed, key) for key in options}


def create_dataset(
    name: str, root: str | Path | None = None, exclude: tuple[str, ...] = (), **options: Any
) -> DatasetAdapter:
    """Instantiate the adapter registered as ``name`` with its ``options`` (checked by
    `check_dataset_options`), without the ``exclude`` subjects (discovering the built-in
    adapters first; a plugin folder's once `cmrbench.plugins.load_plugins` has loaded it)."""
    typed = check_dataset_options(name, options)
    adapter = DATASETS.get(name)(root, **typed)
    return ExcludingAdapter(adapter, exclude) if exclude else adapter


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching ``pattern`` (discovering adapters first)."""
    discover(DATASETS)
    return DATASETS.names(pattern)
