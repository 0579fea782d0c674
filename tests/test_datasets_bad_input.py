"""Bad input: every broken fixture fails with an error naming the file and the expectation,
and `check_dataset` collects all of them instead of stopping at the first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmrbench.datasets.acdc import ACDCDataset
from cmrbench.datasets.base import DatasetError, create_dataset
from cmrbench.datasets.check import check_dataset, format_report
from cmrbench.datasets.mnms import MNMS_CSV_NAME, Mnms2Dataset, MnmsDataset
from cmrbench.datasets.nifti import read_nifti
from cmrbench.datasets.subject import SubjectError
from cmrbench.datasets.sunnybrook import SunnybrookDataset
from support.fixtures_nifti import (
    MNMS2_CSV_HEADER,
    MNMS_CSV_HEADER,
    CanonicalSubject,
    canonical_subject,
    mnms_csv_row,
    oblique_affine,
    square,
    stored_cine,
    stored_volume,
    truncate,
    write_acdc_patient,
    write_mnms2_subject,
    write_mnms_subject,
    write_nifti,
    write_sunnybrook_study,
)

ADAPTERS = ("acdc", "mnms", "mnms2", "sunnybrook")


def acdc_patient(root: Path, name: str = "patient001", seed: int = 1) -> Path:
    return write_acdc_patient(
        root / "training" / name, canonical_subject(seed, ed=1, es=3), "DCM", oblique_affine(True)
    )


def mnms_subject(root: Path, ed: int = 1, es: int = 3) -> Path:
    folder = write_mnms_subject(
        root / "Training/Labeled/A1B2C3", canonical_subject(2, ed=1, es=3), oblique_affine(True)
    )
    (root / MNMS_CSV_NAME).write_text(
        MNMS_CSV_HEADER + "\n" + mnms_csv_row(0, "A1B2C3", "Siemens", "A", 1, ed, es, "NOR") + "\n"
    )
    return folder


def mnms2_subject(root: Path) -> Path:
    folder = write_mnms2_subject(
        root / "101", canonical_subject(3, ed=3, es=1), oblique_affine(True)
    )
    (root / "dataset_information.csv").write_text(
        MNMS2_CSV_HEADER + "\n101,NOR,M,50,SIEMENS,Avanto,1.5\n"
    )
    return folder


# --- roots and layouts --------------------------------------------------------------------


@pytest.mark.parametrize("name", ADAPTERS)
def test_missing_root_names_the_root(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    with pytest.raises(DatasetError, match=f"root {missing} does not exist"):
        create_dataset(name, missing)


@pytest.mark.parametrize("name", ADAPTERS)
def test_unknown_layout_names_the_root_and_the_expected_layout(name: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a dataset")
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "scan1.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetError) as error:
        create_dataset(name, tmp_path).subject_ids()
    message = str(error.value)
    assert str(tmp_path) in message and "expected" in message and "empty" not in message


@pytest.mark.parametrize("name", ADAPTERS)
def test_empty_dataset_is_reported_as_empty(name: str, tmp_path: Path) -> None:
    (tmp_path / "training").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        create_dataset(name, tmp_path).subject_ids()


def test_sunnybrook_link_csv_without_rows_is_an_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "link.csv").write_text("patient_id,original_id\n")
    with pytest.raises(DatasetError, match=r"link.csv: the dataset is empty"):
        SunnybrookDataset(tmp_path).subject_ids()


# --- corrupt and truncated files ------------------------------------------------------------


def test_truncated_gz_nifti_names_the_file(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    cine = truncate(folder / "patient001_4d.nii.gz")
    with pytest.raises(DatasetError, match="corrupt or truncated") as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(cine) in str(error.value) and "4D cine" in str(error.value)


def test_corrupt_nifti_label_names_the_file(tmp_path: Path) -> None:
    folder = mnms_subject(tmp_path)
    gt = folder / "A1B2C3_sa_gt.nii.gz"
    gt.write_bytes(b"this is not a NIfTI file" * 20)
    with pytest.raises(DatasetError, match="cannot read the 4D label NIfTI file") as error:
        MnmsDataset(tmp_path).load("A1B2C3")
    assert str(gt) in str(error.value)


def _sunnybrook_study(root: Path) -> dict[tuple[int, int], int]:
    cine = np.random.default_rng(0).integers(1, 500, size=(3, 2, 8, 10)).astype(np.float32)
    contours = {
        ("i", 2, 0): square(2.5, 2.5, 5.5, 5.5),
        ("o", 2, 0): square(1.5, 1.5, 6.5, 6.5),
        ("i", 0, 0): square(3.5, 3.5, 4.5, 4.5),
    }
    return write_sunnybrook_study(root, "SCD0000001", "SC-N-1", cine, ed=2, es=0, contours=contours)


def _dicom_files(root: Path) -> list[Path]:
    return sorted((root / "images" / "SCD0000001").glob("*.dcm"))


def test_corrupt_dicom_names_the_file(tmp_path: Path) -> None:
    _sunnybrook_study(tmp_path)
    bad = _dicom_files(tmp_path)[2]
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(DatasetError, match="cannot read the DICOM image") as error:
        SunnybrookDataset(tmp_path).load("SCD0000001")
    assert str(bad) in str(error.value)


def test_truncated_dicom_names_the_file(tmp_path: Path) -> None:
    _sunnybrook_study(tmp_path)
    bad = truncate(_dicom_files(tmp_path)[0], keep=0.8)
    with pytest.raises(DatasetError, match="corrupt or truncated") as error:
        SunnybrookDataset(tmp_path).load("SCD0000001")
    assert str(bad) in str(error.value)


# --- missing labels, bad labels, mismatched grids -------------------------------------------


def test_missing_acdc_gt_names_the_expected_file(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    (folder / "patient001_frame04_gt.nii.gz").unlink()
    with pytest.raises(DatasetError, match="missing; expected the ES label NIfTI file") as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(folder / "patient001_frame04_gt.nii.gz") in str(error.value)


def test_missing_mnms_and_mnms2_gt_name_the_expected_file(tmp_path: Path) -> None:
    folder = mnms_subject(tmp_path / "mnms")
    (folder / "A1B2C3_sa_gt.nii.gz").unlink()
    with pytest.raises(DatasetError, match="A1B2C3_sa_gt.nii.gz: missing"):
        MnmsDataset(tmp_path / "mnms").load("A1B2C3")
    folder2 = mnms2_subject(tmp_path / "mnms2")
    (folder2 / "101_SA_ED_gt.nii.gz").unlink()
    with pytest.raises(DatasetError, match="101_SA_ED_gt.nii.gz: missing; expected the ED label"):
        Mnms2Dataset(tmp_path / "mnms2").load("101")


def test_label_values_outside_the_convention_name_the_file_and_the_convention(
    tmp_path: Path,
) -> None:
    folder = acdc_patient(tmp_path)
    gt_path = folder / "patient001_frame02_gt.nii.gz"
    gt = read_nifti(gt_path)
    data = gt.data.astype(np.uint8)
    data[0, 0, 0] = 4
    write_nifti(gt_path, data, gt.affine)
    with pytest.raises(
        DatasetError,
        match=r"label values 4 are outside the dataset's "
        r"convention; expected only 0 \(background\), "
        r"1 \(RV\), 2 \(MYO\), 3 \(LV\)",
    ) as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(gt_path) in str(error.value)


def test_label_whose_shape_differs_from_the_image_names_both_files(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    gt_path = folder / "patient001_frame02_gt.nii.gz"
    affine = oblique_affine(True)
    write_nifti(gt_path, np.zeros((16, 12, 3), dtype=np.uint8), affine)
    with pytest.raises(
        DatasetError,
        match=r"label has spatial shape \(16, 12, 3\) but image "
        r".*has \(16, 12, 4\)",
    ) as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(gt_path) in str(error.value)
    assert str(folder / "patient001_4d.nii.gz") in str(error.value)


def test_label_whose_affine_differs_from_the_image_names_both_files(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    gt_path = folder / "patient001_frame02_gt.nii.gz"
    gt = read_nifti(gt_path)
    shifted = gt.affine.copy()
    shifted[:3, 3] += 2.0
    write_nifti(gt_path, gt.data.astype(np.uint8), shifted)
    with pytest.raises(DatasetError, match="expected the same voxel grid") as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(gt_path) in str(error.value) and "patient001_4d.nii.gz" in str(error.value)


# --- bad images ---------------------------------------------------------------------------


def _rewrite_acdc_cine(folder: Path, cine_tzhw: np.ndarray) -> Path:
    path = folder / "patient001_4d.nii.gz"
    affine = oblique_affine(True)
    write_nifti(path, stored_cine(cine_tzhw, affine), affine)
    return path


def test_nan_image_names_the_file(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    cine = canonical_subject(1, ed=1, es=3).cine.copy()
    cine[2, 1, 3, 4] = np.nan
    path = _rewrite_acdc_cine(folder, cine)
    with pytest.raises(DatasetError, match="cine contains NaN or infinite values") as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(path) in str(error.value)


def test_constant_image_names_the_file(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    path = _rewrite_acdc_cine(folder, np.full((5, 4, 12, 16), 7.0, dtype=np.float32))
    with pytest.raises(DatasetError, match=r"cine is constant \(7.0\); expected an image") as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(path) in str(error.value)


def test_three_dimensional_cine_names_the_file_and_the_expected_axes(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    path = folder / "patient001_4d.nii.gz"
    write_nifti(
        path, np.arange(16 * 12 * 4, dtype=np.float32).reshape(16, 12, 4), oblique_affine(True)
    )
    with pytest.raises(DatasetError, match=r"expected 4D \(X, Y, Z, T\)") as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(path) in str(error.value)


def test_sunnybrook_constant_images_fail_the_subject_contract(tmp_path: Path) -> None:
    cine = np.full((3, 2, 8, 10), 40.0, dtype=np.float32)
    contours = {
        ("i", 2, 0): square(2.5, 2.5, 5.5, 5.5),
        ("o", 2, 0): square(1.5, 1.5, 6.5, 6.5),
        ("i", 0, 0): square(3.5, 3.5, 4.5, 4.5),
    }
    write_sunnybrook_study(tmp_path, "SCD0000001", "SC-N-1", cine, ed=2, es=0, contours=contours)
    with pytest.raises(SubjectError, match="cine is constant") as error:
        SunnybrookDataset(tmp_path).load("SCD0000001")
    assert str(tmp_path / "images" / "SCD0000001") in str(error.value)


# --- frame indices ------------------------------------------------------------------------


def test_acdc_ed_out_of_range_names_info_cfg_and_the_range(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    info = folder / "Info.cfg"
    info.write_text(info.read_text().replace("ED: 2", "ED: 9"))
    with pytest.raises(
        DatasetError,
        match=r"ED 9 is out of range; expected a 1-based frame "
        r"number 1..5",
    ) as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(info) in str(error.value)


def test_mnms_csv_es_out_of_range_names_the_csv_and_the_range(tmp_path: Path) -> None:
    mnms_subject(tmp_path, ed=1, es=5)
    with pytest.raises(
        DatasetError,
        match=r"ES 5 of A1B2C3 is out of range; expected a 0-based "
        r"frame index 0..4",
    ) as error:
        MnmsDataset(tmp_path).load("A1B2C3")
    assert str(tmp_path / MNMS_CSV_NAME) in str(error.value)


def test_acdc_frame_file_that_contradicts_info_cfg_is_reported(tmp_path: Path) -> None:
    folder = acdc_patient(tmp_path)
    # A writer that mixed up 0- and 1-based numbering: frame02 holds cine frame 0.
    subject = canonical_subject(1, ed=1, es=3)
    affine = oblique_affine(True)
    frame_path = folder / "patient001_frame02.nii.gz"
    write_nifti(frame_path, stored_volume(subject.cine[0], affine), affine)
    with pytest.raises(
        DatasetError,
        match=r"is cine frame 0 \(0-based\).*says ED is frame 2 "
        r"\(1-based, i.e. 1\)",
    ) as error:
        ACDCDataset(tmp_path).load("patient001")
    assert str(frame_path) in str(error.value)


def test_mnms2_ed_volume_that_is_no_cine_frame_names_the_file(tmp_path: Path) -> None:
    folder = mnms2_subject(tmp_path)
    ed_path = folder / "101_SA_ED.nii.gz"
    rng = np.random.default_rng(9)
    write_nifti(ed_path, rng.normal(size=(16, 12, 4)).astype(np.float32), oblique_affine(True))
    with pytest.raises(DatasetError, match="no frame of cine .* matches this ED volume") as error:
        Mnms2Dataset(tmp_path).load("101")
    assert str(ed_path) in str(error.value)


# --- Sunnybrook contours --------------------------------------------------------------------


def test_sunnybrook_o_contours_in_two_phases_are_rejected(tmp_path: Path) -> None:
    instance_of = _sunnybrook_study(tmp_path)
    folder = tmp_path / "contours" / "SC-N-1" / "o-contours"
    np.savetxt(
        folder / f"IM-0001-{instance_of[(1, 1)]:04d}-ocontour-manual.txt",
        square(1.5, 1.5, 6.5, 6.5),
    )
    with pytest.raises(
        DatasetError,
        match=r"o-contours in frames \[1, 2\]; expected exactly "
        r"one frame \(end-diastole\)",
    ) as error:
        SunnybrookDataset(tmp_path).load("SCD0000001")
    assert str(folder) in str(error.value)


def test_sunnybrook_contour_of_an_unknown_image_names_the_contour_file(tmp_path: Path) -> None:
    _sunnybrook_study(tmp_path)
    path = tmp_path / "contours" / "SC-N-1" / "i-contours" / "IM-0001-0999-icontour-manual.txt"
    np.savetxt(path, square(1.5, 1.5, 3.5, 3.5))
    with pytest.raises(DatasetError, match="InstanceNumber 999, which is not in") as error:
        SunnybrookDataset(tmp_path).load("SCD0000001")
    assert str(path) in str(error.value)


def test_sunnybrook_contour_with_too_few_points_names_the_file(tmp_path: Path) -> None:
    instance_of = _sunnybrook_study(tmp_path)
    path = (
        tmp_path
        / "contours"
        / "SC-N-1"
        / "i-contours"
        / f"IM-0001-{instance_of[(2, 0)]:04d}-icontour-manual.txt"
    )
    path.write_text("1.0 2.0\n3.0 4.0\n")
    with pytest.raises(DatasetError, match=r"expected at least 3 finite 'x y' points") as error:
        SunnybrookDataset(tmp_path).load("SCD0000001")
    assert str(path) in str(error.value)


# --- check_dataset collects everything ------------------------------------------------------


def test_check_dataset_collects_every_problem_and_still_summarises_the_good_subjects(
    tmp_path: Path,
) -> None:
    acdc_patient(tmp_path, "patient001", seed=1)
    truncated = truncate(acdc_patient(tmp_path, "patient002", seed=2) / "patient002_4d.nii.gz")
    missing_gt = acdc_patient(tmp_path, "patient003", seed=3) / "patient003_frame02_gt.nii.gz"
    missing_gt.unlink()
    seen: list[str] = []
    report = check_dataset(ACDCDataset(tmp_path), on_subject=seen.append)
    assert seen == ["patient001", "patient002", "patient003"]
    assert not report.ok
    assert [p.subject_id for p in report.problems] == ["patient002", "patient003"]
    assert str(truncated) in report.problems[0].message
    assert str(missing_gt) in report.problems[1].message
    assert [s.subject_id for s in report.subjects] == ["patient001"]
    text = format_report(report)
    assert "1 loaded of 3 listed" in text and "problems (2):" in text
    assert str(truncated) in text and str(missing_gt) in text


def test_check_dataset_says_how_far_heart_centres_lie_and_where_heart_centring_is_safe(
    tmp_path: Path,
) -> None:
    # one square heart, rows 2..11 and columns 22..31 of a 24 x 40 image of 1.5 x 1.0 mm pixels:
    # its enclosing circle's centre (26.5, 6.5) lies 7 px (7 mm) right of and 5 px (7.5 mm)
    # above the image centre (19.5, 11.5); augmentation shifts by 40/256 of the field of view
    cine = np.random.default_rng(4).uniform(1, 100, (5, 2, 24, 40)).astype(np.float32)
    heart = np.zeros((2, 24, 40), dtype=np.uint8)
    heart[:, 2:12, 22:32] = 1
    write_mnms_subject(
        tmp_path / "C1",
        CanonicalSubject(cine, {1: heart, 3: heart}, ed=1, es=3),
        oblique_affine(True, (10.0, 1.5, 1.0)),
    )
    (tmp_path / "info.csv").write_text(
        MNMS_CSV_HEADER + "\n" + mnms_csv_row(0, "C1", "Siemens", "A", 1, 1, 3, "NOR") + "\n"
    )
    report = check_dataset(MnmsDataset(tmp_path))
    assert report.subjects[0].heart_offset_mm == pytest.approx((7.0, -7.5))
    assert (
        "heart      centres up to 7.5 mm (per axis) from the image centre: center: labels "
        "matches test-time centring at a field of view of 48 mm or more"
    ) in format_report(report)


def test_check_dataset_reports_an_unreadable_layout_instead_of_raising(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    report = check_dataset(MnmsDataset(tmp_path))
    assert not report.ok and report.subjects == []
    assert report.problems[0].subject_id == "" and str(tmp_path) in report.problems[0].message
    assert "(dataset):" in format_report(report)


def test_sunnybrook_duplicate_instance_numbers_name_both_files(tmp_path: Path) -> None:
    _sunnybrook_study(tmp_path)
    first, second = _dicom_files(tmp_path)[:2]
    second.write_bytes(first.read_bytes())
    with pytest.raises(DatasetError, match="expected one image per InstanceNumber") as error:
        SunnybrookDataset(tmp_path).load("SCD0000001")
    assert str(first) in str(error.value) and str(second) in str(error.value)
