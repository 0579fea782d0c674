"""The reference study's split files (shipped as package data) and the split helpers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cmrbench.datasets.base import DatasetError
from cmrbench.datasets.paper_splits import (
    DEFAULT_SPLITS_DIR,
    PAPER_BUDGETS,
    PAPER_SEEDS,
    PAPER_VARIANTS,
    budget_split,
    check_split_name,
    find_splits_dir,
    holdout_split,
    load_paper_split,
    mm1_id,
    mm2_code,
    mm2_id,
    paper_split_file,
    validate_split,
    vendor_split,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_SPLITS_DIR = REPO.parent / "shared" / "data" / "paper-splits"
SPLIT_FILE_NAMES = sorted(
    f"default-cine-split{'' if v == 'default' else '-' + v}.yaml" for v in PAPER_VARIANTS
)


def _count(ids: list[str], prefix: str) -> int:
    return sum(i.startswith(prefix) for i in ids)


def test_the_15_split_files_and_the_studys_licence_ship_inside_the_package() -> None:
    assert len(SPLIT_FILE_NAMES) == 15  # default + 12 budget subsets + 2 vendor splits
    assert DEFAULT_SPLITS_DIR == REPO / "cmrbench" / "datasets" / "paper_split_files"
    assert find_splits_dir() == DEFAULT_SPLITS_DIR
    shipped = sorted(p.name for p in DEFAULT_SPLITS_DIR.glob("*.yaml"))
    assert shipped == SPLIT_FILE_NAMES
    licence = (DEFAULT_SPLITS_DIR / "LICENSE").read_text()
    assert "MIT License" in licence and "Copyright (c) 2024 Q-cardIA Team" in licence


@pytest.mark.skipif(not SHARED_SPLITS_DIR.is_dir(), reason=f"{SHARED_SPLITS_DIR} not found")
def test_shipped_split_files_are_byte_copies_of_the_studys() -> None:
    for name in [*SPLIT_FILE_NAMES, "LICENSE"]:
        assert (DEFAULT_SPLITS_DIR / name).read_bytes() == (SHARED_SPLITS_DIR / name).read_bytes()


def test_a_wheel_installed_in_a_fresh_venv_lists_the_15_split_files(tmp_path: Path) -> None:
    source = tmp_path / "source"  # build from a copy: an in-tree build would write build/
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "cmrbench",
        source / "cmrbench",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("cmrbench-*.whl")
    data_dir = "cmrbench/datasets/paper_split_files/"
    in_wheel = sorted(
        n[len(data_dir) :] for n in zipfile.ZipFile(wheel).namelist() if n.startswith(data_dir)
    )
    assert in_wheel == sorted([*SPLIT_FILE_NAMES, "LICENSE", "README.md"])
    # A plain venv (no system site-packages), so only the wheel's files can be found.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True, env=env
    )
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    listing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.resources as r, cmrbench; "
            "d = r.files('cmrbench') / 'datasets' / 'paper_split_files'; "
            "print(cmrbench.__file__); print(*sorted(p.name for p in d.iterdir()), sep='\\n')",
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert listing[0].startswith(str(tmp_path / "venv"))
    assert sorted(n for n in listing[1:] if n.endswith(".yaml")) == SPLIT_FILE_NAMES


def test_default_split_has_the_studys_296_74_140_subjects() -> None:
    split = load_paper_split()
    assert {k: len(v) for k, v in split.items()} == {"train": 296, "val": 74, "test": 140}
    assert (_count(split["train"], "mm1:"), _count(split["train"], "mm2:")) == (225, 71)
    assert (_count(split["test"], "mm1:"), _count(split["test"], "mm2:")) == (60, 80)
    assert (_count(split["val"], "mm1:"), _count(split["val"], "mm2:")) == (60, 14)
    assert "mm1:A1D9Z7" in split["test"] and "mm2:104" in split["train"]
    every_id = [i for ids in split.values() for i in ids]
    assert len(set(every_id)) == 510
    assert all(re.fullmatch(r"mm1:[A-Z0-9]{6}|mm2:\d{3}", i) for i in every_id)


@pytest.mark.parametrize("subset_seed", PAPER_SEEDS)
def test_budget_subsets_are_nested_within_a_seed_and_share_val_and_test(subset_seed: int) -> None:
    default = load_paper_split()
    previous: set[str] = set()
    for label_budget in PAPER_BUDGETS:
        split = budget_split(label_budget, subset_seed)
        train = set(split["train"])
        assert len(train) == label_budget
        assert previous <= train <= set(default["train"])
        assert split["val"] == default["val"] and split["test"] == default["test"]
        previous = train


def test_budget_subsets_differ_between_seeds() -> None:
    assert len({tuple(budget_split(10, s)["train"]) for s in PAPER_SEEDS}) == 3


def test_vendor_splits_partition_train_and_val_and_keep_the_test_set() -> None:
    default = load_paper_split()
    a_b, c_d = vendor_split("A_B"), vendor_split("C_D")
    for name in ("train", "val"):
        assert not set(a_b[name]) & set(c_d[name])
        assert sorted(a_b[name] + c_d[name]) == default[name]
    assert (len(a_b["train"]), len(c_d["train"])) == (204, 92)
    assert a_b["test"] == c_d["test"] == default["test"]


def test_every_variant_file_exists_and_loads() -> None:
    for variant in PAPER_VARIANTS:
        assert paper_split_file(variant).is_file()
        assert len(load_paper_split(variant)["test"]) == 140


def test_split_option_names_only_paper_and_points_variants_at_the_axes() -> None:
    check_split_name("paper", "mnms+mnms2")
    check_split_name({"train": ["mm1:A1D9Z7"]}, "mnms+mnms2")
    check_split_name(None, "mnms+mnms2")
    with pytest.raises(DatasetError, match="use split=paper") as error:
        check_split_name("paper:Vendor-A_B", "mnms+mnms2")
    assert "settings vendors=A+B / vendors=C+D" in str(error.value)
    with pytest.raises(DatasetError, match="split 'official' is not known"):
        check_split_name("official", "mnms+mnms2")


def test_unknown_variant_and_missing_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown paper split variant 'nr20-seed0'"):
        load_paper_split("nr20-seed0")
    with pytest.raises(DatasetError, match="pass splits_dir=FOLDER") as error:
        find_splits_dir(tmp_path)
    assert str(tmp_path / "default-cine-split.yaml") in str(error.value)


def test_split_file_with_a_subject_in_two_splits_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "default-cine-split.yaml").write_text(
        'train:\n  mm1: ["A1D9Z7"]\nvalid:\n  mm2: ["104"]\ntest:\n  mm1: ["A1D9Z7"]\n'
    )
    with pytest.raises(DatasetError, match="mm1:A1D9Z7 is in both train and test"):
        load_paper_split(splits_dir=tmp_path)


def test_subject_ids_are_prefixed_and_mm2_numbers_zero_padded() -> None:
    assert mm1_id("A1D9Z7") == "mm1:A1D9Z7"
    assert mm2_id("104") == "mm2:104" and mm2_id(7) == "mm2:007"
    assert mm2_code(" 12 ") == "012"


def test_holdout_split_deals_sorted_ids_in_fives_per_group() -> None:
    groups = {"A": [f"a{i}" for i in range(7)], "B": ["b2", "b1", "b0"]}
    assert holdout_split(groups) == {
        "train": ["a0", "a1", "a2", "a5", "a6", "b0", "b1", "b2"],
        "val": ["a3"],
        "test": ["a4"],
    }
    assert holdout_split(groups, val_position=4, test_position=None)["val"] == ["a4"]


def test_validate_split_rejects_unknown_names_and_unknown_ids() -> None:
    with pytest.raises(DatasetError, match="unknown split names \\['tune'\\]"):
        validate_split({"tune": ["x"]}, "here")
    with pytest.raises(DatasetError, match="first: z"):
        validate_split({"train": ["x", "z"]}, "here", known_ids=["x", "y"])
    assert validate_split({"test": ["y"]}, "here", known_ids=["x", "y"]) == {
        "train": [],
        "val": [],
        "test": ["y"],
    }
