"""Bad input through `cmrbench run`: each broken dataset stops the run with a message naming
the file and what was expected, a store already holding finished cells stays byte-for-byte
unchanged, and `--skip-bad-subjects` skips the subject, records it and goes on.

The store is one run of the tiny grid (tests/grids/tiny.yaml) on the phantom. Each broken
dataset is 5 tiny ACDC patients (or M&Ms subjects, or 4 Sunnybrook DICOM studies) written with
`fixtures_nifti`, one of them broken; the run points ``--out`` at that store.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cmrbench.cli import main
from cmrbench.datasets.mnms import MNMS_CSV_NAME
from cmrbench.datasets.nifti import read_nifti
from support.cli import TINY_GRID, run_cli
from support.fixtures_nifti import (
    MNMS_CSV_HEADER,
    canonical_subject,
    mnms_csv_row,
    oblique_affine,
    square,
    stored_cine,
    truncate,
    write_acdc_patient,
    write_mnms_subject,
    write_nifti,
    write_sunnybrook_study,
)

pytestmark = pytest.mark.slow

# One pathology group of 5: the default split deals 001-003 to train, 004 to val, 005 to test.
ACDC_IDS = tuple(f"patient{n:03d}" for n in range(1, 6))
BAD_ACDC = "patient002"
MNMS_IDS = tuple(f"A{n}B{n}C{n}" for n in range(1, 6))
BAD_MNMS = MNMS_IDS[1]
# Sorted, the default split is train 101 and 201, val 301, test 401.
SUNNYBROOK_IDS = tuple(f"SCD0000{n}01" for n in range(1, 5))
BAD_SUNNYBROOK = SUNNYBROOK_IDS[1]
NOTHING_RUN = "nothing was run; --skip-bad-subjects skips bad subjects instead"


# --- the store and its snapshot --------------------------------------------------------------

Snapshot = dict[str, tuple[str, int]]


def snapshot(folder: Path) -> Snapshot:
    """Every file and folder under ``folder``: relative path → (sha256 or "dir", mtime ns)."""
    entries: Snapshot = {}
    for path in sorted(folder.rglob("*")):
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        entries[str(path.relative_to(folder))] = (digest, path.stat().st_mtime_ns)
    return entries


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory, session_cache) -> tuple[Path, Snapshot]:
    """A store holding the tiny grid's finished cells, and its snapshot."""
    out = tmp_path_factory.mktemp("store") / "run"
    env = {**os.environ, "CMRBENCH_CACHE": str(session_cache)}
    env.pop("CMRBENCH_PLUGINS", None)
    proc = run_cli(
        ["run", "--grid", str(TINY_GRID), "--out", str(out), "--quiet", "--no-report"], env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = snapshot(out)
    assert "run.json" in before and len([p for p in before if p.endswith("result.json")]) == 2
    return out, before


# --- broken datasets -------------------------------------------------------------------------


def acdc_dataset(root: Path) -> Path:
    """Five ACDC patients under ``root/training``; returns the folder of `BAD_ACDC`."""
    for seed, patient in enumerate(ACDC_IDS, start=1):
        write_acdc_patient(
            root / "training" / patient,
            canonical_subject(seed, ed=1, es=3),
            "NOR",
            oblique_affine(True),
        )
    return root / "training" / BAD_ACDC


def mnms_dataset(root: Path, bad_es: int = 3) -> Path:
    """Five M&Ms vendor-A subjects directly under ``root`` (ED 1, ES 3; `BAD_MNMS` gets ES
    ``bad_es``); returns the folder of `BAD_MNMS`."""
    rows = []
    for index, code in enumerate(MNMS_IDS):
        write_mnms_subject(
            root / code, canonical_subject(index + 1, ed=1, es=3), oblique_affine(True)
        )
        es = bad_es if code == BAD_MNMS else 3
        rows.append(mnms_csv_row(index, code, "Siemens", "A", 1, 1, es, "NOR"))
    (root / MNMS_CSV_NAME).write_text("\n".join([MNMS_CSV_HEADER, *rows]) + "\n")
    return root / BAD_MNMS


def sunnybrook_dataset(root: Path) -> Path:
    """Four Sunnybrook DICOM studies; returns the image folder of `BAD_SUNNYBROOK`."""
    contours = {
        ("i", 2, 0): square(2.5, 2.5, 5.5, 5.5),
        ("o", 2, 0): square(1.5, 1.5, 6.5, 6.5),
        ("i", 0, 0): square(3.5, 3.5, 4.5, 4.5),
    }
    for seed, study in enumerate(SUNNYBROOK_IDS):
        cine = np.random.default_rng(seed).integers(1, 500, size=(3, 2, 8, 10))
        write_sunnybrook_study(
            root,
            study,
            f"SC-N-{seed + 1}",
            cine.astype(np.float32),
            ed=2,
            es=0,
            contours=contours,
            seed=seed,
        )
    return root / "images" / BAD_SUNNYBROOK


def rewrite_acdc_cine(folder: Path, cine_tzhw: np.ndarray) -> Path:
    path = folder / f"{BAD_ACDC}_4d.nii.gz"
    affine = oblique_affine(True)
    write_nifti(path, stored_cine(cine_tzhw, affine), affine)
    return path


def acdc_label(folder: Path) -> Path:
    """The bad patient's ED label file (ED is frame 2, 1-based)."""
    return folder / f"{BAD_ACDC}_frame02_gt.nii.gz"


@dataclass(frozen=True)
class BadInput:
    """A broken dataset: ``build(root)`` writes it and returns the files the message must
    name; ``expected`` is a regex of what the message must say was expected."""

    dataset: str
    build: Callable[[Path], list[Path]]
    expected: str
    whole_dataset: bool = False  # fails before any subject loads (no NOTHING_RUN hint)


def missing_root(root: Path) -> list[Path]:
    return [root / "not-there"]


def unknown_layout(root: Path) -> list[Path]:
    (root / "notes.txt").write_text("not a dataset")
    (root / "scans").mkdir()
    (root / "scans" / "scan1.nii.gz").write_bytes(b"")
    return [root]


def empty_dataset(root: Path) -> list[Path]:
    (root / "training").mkdir()
    return [root]


def truncated_nifti(root: Path) -> list[Path]:
    return [truncate(acdc_dataset(root) / f"{BAD_ACDC}_4d.nii.gz")]


def corrupt_nifti(root: Path) -> list[Path]:
    label = acdc_label(acdc_dataset(root))
    label.write_bytes(b"this is not a NIfTI file" * 20)
    return [label]


def missing_gt(root: Path) -> list[Path]:
    label = acdc_dataset(root) / f"{BAD_ACDC}_frame04_gt.nii.gz"
    label.unlink()
    return [label]


def missing_mnms_gt(root: Path) -> list[Path]:
    label = mnms_dataset(root) / f"{BAD_MNMS}_sa_gt.nii.gz"
    label.unlink()
    return [label]


def labels_outside_convention(root: Path) -> list[Path]:
    label = acdc_label(acdc_dataset(root))
    volume = read_nifti(label)
    data = volume.data.astype(np.uint8)
    data[0, 0, 0] = 4
    write_nifti(label, data, volume.affine)
    return [label]


def label_shape_mismatch(root: Path) -> list[Path]:
    folder = acdc_dataset(root)
    write_nifti(acdc_label(folder), np.zeros((16, 12, 3), dtype=np.uint8), oblique_affine(True))
    return [acdc_label(folder), folder / f"{BAD_ACDC}_4d.nii.gz"]


def label_affine_mismatch(root: Path) -> list[Path]:
    folder = acdc_dataset(root)
    volume = read_nifti(acdc_label(folder))
    shifted = volume.affine.copy()
    shifted[:3, 3] += 2.0
    write_nifti(acdc_label(folder), volume.data.astype(np.uint8), shifted)
    return [acdc_label(folder), folder / f"{BAD_ACDC}_4d.nii.gz"]


def nan_image(root: Path) -> list[Path]:
    cine = canonical_subject(ACDC_IDS.index(BAD_ACDC) + 1, ed=1, es=3).cine.copy()
    cine[2, 1, 3, 4] = np.nan
    return [rewrite_acdc_cine(acdc_dataset(root), cine)]


def constant_image(root: Path) -> list[Path]:
    return [rewrite_acdc_cine(acdc_dataset(root), np.full((5, 4, 12, 16), 7.0, np.float32))]


def acdc_ed_out_of_range(root: Path) -> list[Path]:
    info = acdc_dataset(root) / "Info.cfg"
    info.write_text(info.read_text().replace("ED: 2", "ED: 9"))
    return [info]


def mnms_es_out_of_range(root: Path) -> list[Path]:
    mnms_dataset(root, bad_es=5)
    return [root / MNMS_CSV_NAME]


def corrupt_dicom(root: Path) -> list[Path]:
    bad = sorted(sunnybrook_dataset(root).glob("*.dcm"))[2]
    bad.write_bytes(b"garbage" * 50)
    return [bad]


def truncated_dicom(root: Path) -> list[Path]:
    return [truncate(sorted(sunnybrook_dataset(root).glob("*.dcm"))[0], keep=0.8)]


BAD_INPUTS = {
    "missing root": BadInput(
        "acdc", missing_root, r"does not exist or is not a folder", whole_dataset=True
    ),
    "unknown layout": BadInput(
        "acdc",
        unknown_layout,
        r"no patientXXX/ folders found .*; "
        r"expected the ACDC layout training/patient001/Info.cfg",
        whole_dataset=True,
    ),
    "empty dataset": BadInput(
        "acdc",
        empty_dataset,
        r"the dataset is empty .*; expected "
        r"training/patientXXX/ folders",
        whole_dataset=True,
    ),
    "truncated NIfTI": BadInput(
        "acdc",
        truncated_nifti,
        r"cannot read the 4D cine NIfTI file "
        r".*expected a complete .nii/.nii.gz file, it may be corrupt "
        r"or truncated",
    ),
    "corrupt NIfTI": BadInput(
        "acdc",
        corrupt_nifti,
        r"cannot read the ED label NIfTI file .*"
        r"expected a complete .nii/.nii.gz file",
    ),
    "missing _gt": BadInput("acdc", missing_gt, r"missing; expected the ES label NIfTI file"),
    "missing M&Ms _sa_gt": BadInput(
        "mnms", missing_mnms_gt, r"missing; expected the 4D label NIfTI file"
    ),
    "labels outside the convention": BadInput(
        "acdc",
        labels_outside_convention,
        r"label values 4 are outside the dataset's "
        r"convention; expected only 0 \(background\), 1 \(RV\), 2 \(MYO\), 3 \(LV\)",
    ),
    "label shape differs": BadInput(
        "acdc",
        label_shape_mismatch,
        r"label has spatial shape "
        r"\(16, 12, 3\) but image .* has \(16, 12, 4\); expected "
        r"the same \(X, Y, Z\)",
    ),
    "label affine differs": BadInput(
        "acdc", label_affine_mismatch, r"expected the same voxel grid"
    ),
    "NaN image": BadInput(
        "acdc",
        nan_image,
        r"cine contains NaN or infinite values; expected "
        r"finite intensities",
    ),
    "constant image": BadInput(
        "acdc",
        constant_image,
        r"cine is constant \(7.0\); expected "
        r"an image",
    ),
    "ACDC ED out of range": BadInput(
        "acdc",
        acdc_ed_out_of_range,
        r"ED 9 is out of range; "
        r"expected a 1-based frame number 1..5",
    ),
    "M&Ms ES out of range": BadInput(
        "mnms",
        mnms_es_out_of_range,
        rf"ES 5 of {BAD_MNMS} is out of range; expected a 0-based "
        rf"frame index 0..4",
    ),
    "corrupt DICOM": BadInput(
        "sunnybrook",
        corrupt_dicom,
        r"cannot read the DICOM image .*"
        r"expected a complete DICOM file",
    ),
    "truncated DICOM": BadInput(
        "sunnybrook",
        truncated_dicom,
        r"expected a complete DICOM "
        r"file, it may be corrupt or truncated",
    ),
}


def run_on(bad: BadInput, root: Path, store: Path, *extra: str) -> tuple[int, str, list[Path]]:
    """Write the broken dataset under ``root`` and run the tiny grid on it into ``store``
    (in this process: the run stops before any training)."""
    root.mkdir()
    named = bad.build(root)
    dataset_root = named[0] if bad.build is missing_root else root
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--dataset",
            bad.dataset,
            "--root",
            str(dataset_root),
            "--budgets",
            "1",
            "--out",
            str(store),
            "--quiet",
            "--no-report",
            *extra,
        ],
        catch_exceptions=False,
    )
    return result.exit_code, result.output, named


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_stops_the_run_naming_the_file_and_leaves_the_store_untouched(
    case: str, finished_store, cmrbench_env, tmp_path: Path
) -> None:
    store, before = finished_store
    bad = BAD_INPUTS[case]
    code, output, named = run_on(bad, tmp_path / "data", store)
    assert code == 1 and output.startswith("Error: "), output
    for path in named:
        assert str(path) in output, output
    assert re.search(bad.expected, output), output
    assert (NOTHING_RUN in output) != bad.whole_dataset, output
    assert snapshot(store) == before


@pytest.mark.parametrize("case", ["missing root", "unknown layout", "empty dataset"])
def test_skip_bad_subjects_cannot_skip_a_broken_dataset_and_leaves_the_store_untouched(
    case: str, finished_store, cmrbench_env, tmp_path: Path
) -> None:
    store, before = finished_store
    bad = BAD_INPUTS[case]
    code, output, named = run_on(bad, tmp_path / "data", store, "--skip-bad-subjects")
    assert code == 1 and output.startswith("Error: "), output
    assert str(named[0]) in output and re.search(bad.expected, output), output
    assert snapshot(store) == before


def test_skip_bad_subjects_runs_without_the_subject_and_records_it(
    cmrbench_env, tmp_path: Path
) -> None:
    root, out = tmp_path / "data", tmp_path / "run"
    missing = missing_gt(root)[0]
    proc = run_cli(
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--dataset",
            "acdc",
            "--root",
            str(root),
            "--budgets",
            "all",
            "--out",
            str(out),
            "--quiet",
            "--skip-bad-subjects",
        ],
        cmrbench_env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"skipping {BAD_ACDC}: {missing}" in proc.stderr

    skipped = json.loads((out / "run.json").read_text())["skipped_subjects"]
    assert [(s["dataset"], s["subject"]) for s in skipped] == [("acdc", BAD_ACDC)]
    reason = skipped[0]["reason"]
    assert str(missing) in reason and "expected the ES label NIfTI file" in reason

    provenance = (out / "report" / "provenance.html").read_text()
    section = provenance.split("<h2>Skipped subjects</h2>", 1)[1].split("<h2>", 1)[0]
    assert f"<td>{BAD_ACDC}</td>" in section and html.escape(reason) in section

    cells = sorted(out.glob("cells/*/result.json"))
    assert len(cells) == 1
    result = json.loads(cells[0].read_text())
    spec = json.loads((cells[0].parent / "spec.json").read_text())
    # Budget "all" takes every training subject: the split is the adapter's, less the skip.
    assert result["train_subjects"] == ["patient001", "patient003"]
    assert spec["data"]["exclude"] == [BAD_ACDC]
    tested = pd.read_parquet(cells[0].parent / "subjects.parquet")["subject"]
    assert set(tested) == {"patient005"}
