"""Subject splits: the reference study's split files, split overrides and holdout rules.

The study (de Mooij, Pluim, Scannell, arXiv 2409.18100) publishes its M&Ms + M&Ms-2
subject lists as YAML files (q-cardIA/ssp-cmr-cine-segmentation v1.0.0,
``data/subject_splits/``, MIT licence). The 15 files ship as package data in
``cmrbench/datasets/paper_split_files/`` with the study's licence notice. Each maps ``train`` /
``valid`` / ``test`` to ``mm1`` (M&Ms codes such as ``A1D9Z7``) and ``mm2`` (M&Ms-2 numbers
such as ``"104"``). Here they become ``{"train", "val", "test"}`` lists of prefixed ids,
``"mm1:A1D9Z7"`` and ``"mm2:104"`` (M&Ms-2 numbers zero-padded to three digits, as its
folders are named), so the two datasets' subjects never collide.

Variants: ``"default"`` (296 / 74 / 140), ``"nr{10,15,25,50}-seed{0,1,2}"`` (the labelled
subsets; same validation and test sets) and ``"Vendor-A_B"`` / ``"Vendor-C_D"`` (train and
validation restricted to those M&Ms vendors; same test set). A dataset option names only
``split="paper"`` (`check_split_name`); the other variants are reached through the budget and
setting axes, since a split's training subjects are also the pretraining pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cmrbench.datasets.base import SPLIT_NAMES, DatasetError, check_disjoint

MM1_PREFIX = "mm1:"
MM2_PREFIX = "mm2:"
PAPER_BUDGETS = (10, 15, 25, 50)
PAPER_SEEDS = (0, 1, 2)
PAPER_VENDOR_GROUPS = ("A_B", "C_D")
PAPER_VARIANTS = (
    "default",
    *(f"nr{b}-seed{s}" for b in PAPER_BUDGETS for s in PAPER_SEEDS),
    *(f"Vendor-{g}" for g in PAPER_VENDOR_GROUPS),
)
# The YAML files name the validation split "valid".
_YAML_SPLIT_NAMES = {"train": "train", "valid": "val", "test": "test"}
# Package data (pyproject.toml), found through the installed package, not the source tree.
DEFAULT_SPLITS_DIR = Path(str(resources.files("cmrbench") / "datasets" / "paper_split_files"))
PAPER_SPLIT = "paper"  # the split option that selects the study's default split file


def mm1_id(code: str) -> str:
    """Prefixed id of an M&Ms subject code: ``"A1D9Z7"`` → ``"mm1:A1D9Z7"``."""
    return f"{MM1_PREFIX}{str(code).strip()}"


def mm2_code(number: str | int) -> str:
    """M&Ms-2 subject folder name: ``104`` or ``"104"`` → ``"104"``, ``7`` → ``"007"``."""
    return f"{int(str(number).strip()):03d}"


def mm2_id(number: str | int) -> str:
    """Prefixed id of an M&Ms-2 subject number: ``"104"`` → ``"mm2:104"``."""
    return f"{MM2_PREFIX}{mm2_code(number)}"


def find_splits_dir(splits_dir: str | Path | None = None) -> Path:
    """The folder that holds the study's split YAML files, or `DatasetError` saying where to look.

    ``splits_dir`` given: that folder. Otherwise the copy shipped in the package
    (`DEFAULT_SPLITS_DIR`).
    """
    folder = Path(splits_dir) if splits_dir is not None else DEFAULT_SPLITS_DIR
    if not (folder / "default-cine-split.yaml").is_file():
        raise DatasetError(
            f"paper splits not found: {folder / 'default-cine-split.yaml'} does "
            f"not exist; expected the study's split YAML files there (pass "
            f"splits_dir=FOLDER, the folder holding default-cine-split*.yaml)"
        )
    return folder


def check_split_name(split: Any, dataset: str) -> None:
    """Reject a ``split`` option string other than ``"paper"`` (a dict of id lists is checked
    by `split_option`), pointing ``"paper:<variant>"`` at the budget and setting axes."""
    if not isinstance(split, str) or split == PAPER_SPLIT:
        return
    kind, _, variant = split.partition(":")
    if kind == PAPER_SPLIT and variant:
        raise DatasetError(
            f"dataset {dataset!r}: split {split!r} is not supported; use split=paper and pick "
            f"the study's subsets with the grid's axes: budgets 10, 15, 25, 50 with seeds 0-2 "
            f"(files nr<budget>-seed<seed>) and settings vendors=A+B / vendors=C+D (files "
            f"Vendor-A_B / Vendor-C_D). As a split, {variant!r} would also shrink the "
            f"pretraining pool to its training subjects"
        )
    raise DatasetError(
        f"dataset {dataset!r}: split {split!r} is not known; expected "
        f"'paper' or a mapping of train/val/test to subject id lists"
    )


def paper_split_file(variant: str = "default", splits_dir: str | Path | None = None) -> Path:
    """Path of one split file; ``variant`` is one of `PAPER_VARIANTS`."""
    if variant not in PAPER_VARIANTS:
        raise DatasetError(
            f"unknown paper split variant {variant!r}; expected one of {', '.join(PAPER_VARIANTS)}"
        )
    suffix = "" if variant == "default" else f"-{variant}"
    path = find_splits_dir(splits_dir) / f"default-cine-split{suffix}.yaml"
    if not path.is_file():
        raise DatasetError(f"{path}: missing; expected the study's {variant} split file")
    return path


def load_paper_split(
    variant: str = "default", splits_dir: str | Path | None = None
) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` → sorted prefixed ids of one of the study's split files."""
    path = paper_split_file(variant, splits_dir)
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DatasetError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(content, dict) or set(content) != set(_YAML_SPLIT_NAMES):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DatasetError(f"{path}: top-level keys {found}; expected train, valid, test")
    split: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for yaml_name, name in _YAML_SPLIT_NAMES.items():
        parts = content[yaml_name] or {}
        if not isinstance(parts, dict) or set(parts) - {"mm1", "mm2"}:
            raise DatasetError(
                f"{path}: {yaml_name} must map mm1 and mm2 to lists of subjects; "
                f"found {parts!r:.200}"
            )
        split[name] = sorted(
            [mm1_id(c) for c in parts.get("mm1") or []]
            + [mm2_id(n) for n in parts.get("mm2") or []]
        )
    return validate_split(split, str(path))


def budget_split(
    label_budget: int, subset_seed: int, splits_dir: str | Path | None = None
) -> dict[str, list[str]]:
    """The study's labelled subset of ``label_budget`` subjects drawn with ``subset_seed``."""
    return load_paper_split(f"nr{label_budget}-seed{subset_seed}", splits_dir)


def vendor_split(vendor_group: str, splits_dir: str | Path | None = None) -> dict[str, list[str]]:
    """The study's split with train and val restricted to vendors ``"A_B"`` or ``"C_D"``."""
    return load_paper_split(f"Vendor-{vendor_group}", splits_dir)


def validate_split(
    split: Mapping[str, Iterable[str]], where: str, known_ids: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Validate a split: only train/val/test keys, no subject twice, every id known.

    Returns ``{"train", "val", "test"}`` → sorted lists (a missing key is an empty list).
    """
    if not isinstance(split, Mapping):
        raise DatasetError(
            f"{where}: split must be a mapping of train/val/test to subject "
            f"id lists; got {type(split).__name__}"
        )
    unknown_names = set(split) - set(SPLIT_NAMES)
    if unknown_names:
        raise DatasetError(
            f"{where}: unknown split names {sorted(unknown_names)}; expected "
            f"{', '.join(SPLIT_NAMES)}"
        )
    result = {name: sorted(str(i) for i in split.get(name, ())) for name in SPLIT_NAMES}
    check_disjoint(result, where)
    if known_ids is not None:
        missing = sorted({s for ids in result.values() for s in ids} - set(known_ids))
        if missing:
            raise DatasetError(
                f"{where}: {len(missing)} split subjects are not in the dataset "
                f"(first: {', '.join(missing[:10])}); expected only ids the "
                f"dataset lists"
            )
    return result


def split_option(
    options: Mapping[str, Any], subject_ids: Iterable[str], dataset: str
) -> dict[str, list[str]] | None:
    """The ``split={"train": [...], "val": [...], "test": [...]}`` option, validated; or None."""
    split = options.get("split")
    if split is None:
        return None
    return validate_split(split, f"dataset {dataset!r} option split", known_ids=subject_ids)


def holdout_split(
    ids_by_group: Mapping[str, Iterable[str]],
    every: int = 5,
    val_position: int | None = 3,
    test_position: int | None = 4,
) -> dict[str, list[str]]:
    """Deterministic stratified split: within each group, sorted ids are dealt in rounds.

    In each round of ``every`` consecutive ids of a group, the one at ``val_position`` goes
    to val and the one at ``test_position`` to test (None: none), the rest to train. With
    the defaults that is 60 / 20 / 20 % per group.
    """
    split: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for group in sorted(ids_by_group):
        for position, subject_id in enumerate(sorted(ids_by_group[group])):
            slot = position % every
            name = "val" if slot == val_position else "test" if slot == test_position else "train"
            split[name].append(subject_id)
    return {name: sorted(ids) for name, ids in split.items()}
