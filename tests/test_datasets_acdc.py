"""ACDC adapter on tiny fixtures in the official layout (tests/fixtures_nifti.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrbench.datasets.acdc import ACDC_FRAME_BASE, ACDC_LABEL_MAP, ACDCDataset
from cmrbench.datasets.base import DatasetError, create_dataset
from cmrbench.datasets.check import check_dataset, format_report
from cmrbench.datasets.subject import LV, MYO, RV
from support.fixtures_nifti import (
    HEIGHT,
    N_FRAMES,
    N_SLICES,
    SPACING_ZYX,
    WIDTH,
    canonical_subject,
    diagonal_affine,
    oblique_affine,
    write_acdc_info_only,
    write_acdc_patient,
)

# patient001 is stored apex → base (the adapter must flip), patient002 base → apex,
# patient101 (official test set) has a diagonal affine (no orientation: stored order kept).
SUBJECTS = {
    "patient001": (canonical_subject(1, ed=1, es=3), "DCM", oblique_affine(False)),
    "patient002": (canonical_subject(2, ed=2, es=4), "NOR", oblique_affine(True)),
    "patient101": (canonical_subject(3, ed=0, es=2), "HCM", diagonal_affine()),
}


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("acdc")
    for patient, (subject, group, affine) in SUBJECTS.items():
        parent = "testing" if patient == "patient101" else "training"
        write_acdc_patient(root / parent / patient, subject, group, affine)
    return root


@pytest.fixture(scope="module")
def acdc(acdc_root: Path) -> ACDCDataset:
    return ACDCDataset(acdc_root)


def test_acdc_is_registered_and_lists_training_and_testing_patients(acdc_root: Path) -> None:
    dataset = create_dataset("acdc", acdc_root)
    assert isinstance(dataset, ACDCDataset)
    assert dataset.subject_ids() == ["patient001", "patient002", "patient101"]


def test_acdc_labels_are_remapped_to_canonical_lv_myo_rv(
    acdc: ACDCDataset, acdc_root: Path
) -> None:
    subject = acdc.load("patient002")
    expected = SUBJECTS["patient002"][0]
    for frame, label in expected.labels.items():
        np.testing.assert_array_equal(subject.labels[frame], label)
    # On disk the base slice's LV box (rows 2-4, cols 2-9 at ED) is stored as 3 (ACDC's LV).
    stored = np.asarray(
        nib.load(acdc_root / "training/patient002/patient002_frame03_gt.nii.gz").dataobj
    )
    assert set(np.unique(stored[2:10, 2:5, 0])) == {3}
    assert set(np.unique(subject.labels[2][0, 2:5, 2:10])) == {LV}
    assert set(np.unique(subject.labels[2][0, 6:8, 3:9])) == {MYO}
    assert set(np.unique(subject.labels[2][0, 9:11, 10:14])) == {RV}
    assert ACDC_LABEL_MAP == {0: 0, 1: RV, 2: MYO, 3: LV}


def test_acdc_info_cfg_frames_are_one_based(acdc: ACDCDataset, acdc_root: Path) -> None:
    info = (acdc_root / "training/patient001/Info.cfg").read_text()
    assert "ED: 2" in info and "ES: 4" in info
    subject = acdc.load("patient001")
    assert ACDC_FRAME_BASE == 1
    assert (subject.ed, subject.es) == (1, 3)
    assert sorted(subject.labels) == [1, 3]


def test_acdc_cine_is_t_z_h_w_with_h_from_the_nifti_j_axis(acdc: ACDCDataset) -> None:
    subject = acdc.load("patient002")
    assert subject.shape == (N_FRAMES, N_SLICES, HEIGHT, WIDTH)
    assert subject.cine.dtype == np.float32
    np.testing.assert_array_equal(subject.cine, SUBJECTS["patient002"][0].cine)


def test_acdc_spacing_comes_from_the_header(acdc: ACDCDataset) -> None:
    dz, dy, dx = SPACING_ZYX
    for patient in ("patient001", "patient002"):
        assert acdc.load(patient).spacing == pytest.approx(SPACING_ZYX)
    # patient101's diagonal affine stores rows anterior and columns right: the layout swaps them
    assert acdc.load("patient101").spacing == pytest.approx((dz, dx, dy))


def test_acdc_flips_slices_stored_apex_to_base(acdc: ACDCDataset, acdc_root: Path) -> None:
    expected = SUBJECTS["patient001"][0]
    stored = np.asarray(nib.load(acdc_root / "training/patient001/patient001_4d.nii.gz").dataobj)
    # The file's first slice is the canonical apex, so only a flip can give the canonical stack.
    np.testing.assert_array_equal(stored[:, :, 0, 0].T, expected.cine[0, -1])
    subject = acdc.load("patient001")
    np.testing.assert_array_equal(subject.cine, expected.cine)
    np.testing.assert_array_equal(subject.labels[1], expected.labels[1])
    assert subject.meta["slice_order"] == "geometry" and subject.meta["notes"] == []


def test_acdc_keeps_stored_order_when_the_header_has_no_orientation(acdc: ACDCDataset) -> None:
    subject = acdc.load("patient101")
    # A diagonal RAS affine: stored columns (i) run right, rows (j) anterior, slices (k) head.
    # The network's columns run posterior (-j) and its rows left (-i), so that rows × columns
    # points along k, the stored slice order kept.
    stored = SUBJECTS["patient101"][0].cine
    np.testing.assert_array_equal(subject.cine, stored.swapaxes(-1, -2)[..., ::-1, ::-1])
    assert subject.meta["layout"]["network"] == "LPS"
    assert subject.meta["slice_order"] == "stored"
    assert "lies along a scanner axis" in subject.meta["notes"][0]


def test_acdc_meta_is_siemens_without_vendor_letter_and_group_is_pathology(
    acdc: ACDCDataset,
) -> None:
    meta = acdc.subject_meta("patient001")
    assert meta["vendor"] == "" and meta["manufacturer"] == "Siemens"
    assert meta["pathology"] == "DCM" and meta["height_cm"] == 170.0
    assert acdc.subject_meta("patient101")["official_split"] == "test"


def test_acdc_reads_patient_folders_directly_under_root(tmp_path: Path) -> None:
    subject, group, affine = SUBJECTS["patient002"]
    write_acdc_patient(tmp_path / "patient002", subject, group, affine)
    dataset = ACDCDataset(tmp_path)
    assert dataset.subject_ids() == ["patient002"]
    np.testing.assert_array_equal(dataset.load("patient002").labels[4], subject.labels[4])


def _info_only_acdc(root: Path, with_test: bool) -> None:
    for number in range(1, 11):
        write_acdc_info_only(
            root / "training" / f"patient{number:03d}", "DCM" if number <= 5 else "NOR"
        )
    if with_test:
        for number in (101, 102):
            write_acdc_info_only(root / "testing" / f"patient{number:03d}", "HCM")


def test_acdc_default_split_uses_official_test_and_every_fifth_per_group_as_val(
    tmp_path: Path,
) -> None:
    _info_only_acdc(tmp_path, with_test=True)
    split = ACDCDataset(tmp_path).default_split()
    assert split["test"] == ["patient101", "patient102"]
    assert split["val"] == ["patient005", "patient010"]
    assert split["train"] == [f"patient{n:03d}" for n in (1, 2, 3, 4, 6, 7, 8, 9)]


def test_acdc_default_split_without_test_patients_holds_out_val_and_test_per_group(
    tmp_path: Path,
) -> None:
    _info_only_acdc(tmp_path, with_test=False)
    split = ACDCDataset(tmp_path).default_split()
    assert split == {
        "train": [f"patient{n:03d}" for n in (1, 2, 3, 6, 7, 8)],
        "val": ["patient004", "patient009"],
        "test": ["patient005", "patient010"],
    }


def test_acdc_split_option_overrides_the_default_and_rejects_unknown_ids(acdc_root: Path) -> None:
    chosen = {"train": ["patient001", "patient101"], "test": ["patient002"]}
    split = ACDCDataset(acdc_root, split=chosen).default_split()
    assert split == {"train": ["patient001", "patient101"], "val": [], "test": ["patient002"]}
    with pytest.raises(DatasetError, match="patient999"):
        ACDCDataset(acdc_root, split={"train": ["patient999"]}).default_split()


def test_check_dataset_summarises_a_good_acdc_fixture(acdc: ACDCDataset) -> None:
    report = check_dataset(acdc)
    assert report.ok and len(report.subjects) == 3
    assert report.value_range("frames") == (N_FRAMES, N_FRAMES)
    dz, dy, dx = SPACING_ZYX  # patient101's layout swaps dy and dx (see above)
    assert report.spacing_range() == [
        pytest.approx((dz, dz)),
        pytest.approx((dx, dy)),
        pytest.approx((dx, dy)),
    ]
    assert report.label_values() == [0, 1, 2, 3]
    assert report.pathologies() == {"DCM": 1, "NOR": 1, "HCM": 1}
    assert report.vendors() == {"": 3}
    assert report.split_sizes == {"train": 2, "val": 0, "test": 1}
    assert len(report.notes) == 1 and report.notes[0].subject_id == "patient101"
    text = format_report(report)
    assert "3 loaded of 3 listed" in text
    assert "dz 10.00–10.00, dy 1.25–1.50, dx 1.25–1.50" in text
    assert "no problems" in text


def test_acdc_validation_none_keeps_every_training_patient_in_train(tmp_path: Path) -> None:
    _info_only_acdc(tmp_path, with_test=True)
    split = ACDCDataset(tmp_path, validation="none").default_split()
    assert split == {
        "train": [f"patient{n:03d}" for n in range(1, 11)],
        "val": [],
        "test": ["patient101", "patient102"],
    }
    without_test = tmp_path / "no-test"
    _info_only_acdc(without_test, with_test=False)
    split = ACDCDataset(without_test, validation="none").default_split()
    assert split == {
        "train": [f"patient{n:03d}" for n in (1, 2, 3, 4, 6, 7, 8, 9)],
        "val": [],
        "test": ["patient005", "patient010"],
    }


def test_acdc_validation_option_rejects_unknown_values(tmp_path: Path) -> None:
    _info_only_acdc(tmp_path, with_test=True)
    with pytest.raises(DatasetError, match="validation='off'; expected one of holdout, none"):
        ACDCDataset(tmp_path, validation="off").default_split()


def test_acdc_abnormal_right_ventricle_group_is_reported_as_arv(tmp_path: Path) -> None:
    write_acdc_info_only(tmp_path / "training" / "patient081", "RV")
    write_acdc_info_only(tmp_path / "training" / "patient061", "NOR")
    dataset = ACDCDataset(tmp_path)
    assert dataset.info("patient081")["Group"] == "RV"
    assert dataset.subject_meta("patient081")["pathology"] == "ARV"
    assert dataset.subject_meta("patient061")["pathology"] == "NOR"
