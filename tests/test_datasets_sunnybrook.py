"""Sunnybrook adapter: a tiny synthetic DICOM study, then the four real studies in shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from cmrbench.datasets.base import DatasetError, create_dataset
from cmrbench.datasets.check import check_dataset, format_report
from cmrbench.datasets.subject import BACKGROUND, LV, MYO, RV
from cmrbench.datasets.sunnybrook import SunnybrookDataset, fill_polygon, outside_distance
from support.fixtures_nifti import (
    SUNNYBROOK_PIXEL_SPACING,
    SUNNYBROOK_SLICE_GAP,
    square,
    write_sunnybrook_study,
)
from support.real_data import SUNNYBROOK, needs_sunnybrook

# --- polygon fill -----------------------------------------------------------------------


def test_fill_polygon_marks_pixel_centres_inside_an_axis_aligned_square() -> None:
    mask = fill_polygon(square(1.5, 1.5, 4.5, 3.5), (6, 7))
    expected = np.zeros((6, 7), dtype=bool)
    expected[2:4, 2:5] = True  # rows y = 2, 3; columns x = 2, 3, 4
    np.testing.assert_array_equal(mask, expected)


def test_fill_polygon_uses_x_as_column_and_y_as_row_on_a_diamond() -> None:
    # |x - 4| + |y - 2| < 2.5 around centre (x=4, y=2): 1 + 3 + 5 + 3 + 1 = 13 pixels.
    diamond = np.array([[4, -0.5], [6.5, 2], [4, 4.5], [1.5, 2]], dtype=np.float64)
    mask = fill_polygon(diamond, (5, 9))
    rows, cols = np.nonzero(mask)
    assert mask.sum() == 13
    assert set(zip(rows.tolist(), cols.tolist())) == {
        (r, c) for r in range(5) for c in range(9) if abs(c - 4) + abs(r - 2) <= 2
    }


def test_fill_polygon_counts_pixel_centres_on_the_contour_as_inside_in_any_storage() -> None:
    # A contour along half-pixel steps through pixel centres, as the SCD's: the square with
    # corners (1, 1) and (4, 3) has 4 x 3 centres on or inside it, 10 of them on its outline.
    outline = square(1.0, 1.0, 4.0, 3.0)
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:4, 1:5] = True
    np.testing.assert_array_equal(fill_polygon(outline, (5, 6)), expected)
    # The same outline traced the other way round, and in an image stored turned by 90°
    # ((x, y) -> (y, W - 1 - x)), fills the same pixels.
    np.testing.assert_array_equal(fill_polygon(outline[::-1], (5, 6)), expected)
    turned = np.stack([outline[:, 1], 5 - outline[:, 0]], axis=1)
    np.testing.assert_array_equal(fill_polygon(turned, (6, 5)), np.rot90(expected))


# --- synthetic study -----------------------------------------------------------------------

T, Z, H, W = 4, 3, 12, 16
ED, ES = 3, 1


def synthetic_contours() -> dict[tuple[str, int, int], np.ndarray]:
    """i-contours at ED (all slices) and ES (slices 0, 1); o-contours at ED (slices 0, 1)."""
    contours = {}
    for z in range(Z):
        contours[("i", ED, z)] = square(2.5, 1.5, 7.5 - z, 5.5)  # cols 3..7-z, rows 2..5
    for z in range(2):
        contours[("i", ES, z)] = square(3.5, 2.5, 6.5, 4.5)  # cols 4..6, rows 3..4
        contours[("o", ED, z)] = square(1.5, 0.5, 9.5, 7.5)  # cols 2..9, rows 1..7
    return contours


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[SunnybrookDataset, np.ndarray]:
    root = tmp_path_factory.mktemp("sunnybrook")
    cine = np.random.default_rng(5).integers(1, 2000, size=(T, Z, H, W)).astype(np.float32)
    write_sunnybrook_study(root, "SCD0000001", "SC-HF-I-9", cine, ED, ES, synthetic_contours())
    return create_dataset("sunnybrook", root), cine  # type: ignore[return-value]


def test_sunnybrook_groups_slices_and_phases_from_headers_base_first(synthetic) -> None:
    dataset, cine = synthetic
    subject = dataset.load("SCD0000001")
    # File names and InstanceNumbers are shuffled and the slice normal points to the base:
    # only header geometry and TriggerTime can give the canonical stack.
    np.testing.assert_array_equal(subject.cine, cine)
    assert subject.meta["slice_order"] == "geometry"


def test_sunnybrook_spacing_comes_from_dicom_headers(synthetic) -> None:
    subject = synthetic[0].load("SCD0000001")
    assert subject.spacing == pytest.approx((SUNNYBROOK_SLICE_GAP, *SUNNYBROOK_PIXEL_SPACING))


def test_sunnybrook_ed_is_the_phase_with_epicardial_contours(synthetic) -> None:
    subject = synthetic[0].load("SCD0000001")
    assert (subject.ed, subject.es) == (ED, ES)
    assert sorted(subject.labels) == [ES, ED]


def test_sunnybrook_labels_fill_lv_and_myocardium_at_ed_and_lv_at_es(synthetic) -> None:
    subject = synthetic[0].load("SCD0000001")
    expected_ed = np.zeros((Z, H, W), dtype=np.uint8)
    expected_ed[:2, 1:8, 2:10] = MYO
    for z in range(Z):
        expected_ed[z, 2:6, 3 : 8 - z] = LV
    expected_es = np.zeros((Z, H, W), dtype=np.uint8)
    expected_es[:2, 3:5, 4:7] = LV
    np.testing.assert_array_equal(subject.labels[ED], expected_ed)
    np.testing.assert_array_equal(subject.labels[ES], expected_es)


def test_sunnybrook_annotated_marks_only_contoured_classes_and_slices(synthetic) -> None:
    subject = synthetic[0].load("SCD0000001")
    ed, es = subject.annotated[ED], subject.annotated[ES]
    assert ed[LV].tolist() == [True, True, True]
    assert ed[MYO].tolist() == [True, True, False]
    assert es[LV].tolist() == [True, True, False]
    assert not es[MYO].any() and not ed[RV].any() and not es[RV].any()
    assert ed[BACKGROUND].tolist() == [True, True, True]
    assert es[BACKGROUND].tolist() == [True, True, False]


def test_sunnybrook_meta_has_manufacturer_and_field_from_dicom(synthetic) -> None:
    meta = synthetic[0].subject_meta("SCD0000001")
    assert (meta["vendor"], meta["manufacturer"], meta["dicom_manufacturer"]) == (
        "C",
        "GE",
        "GE MEDICAL SYSTEMS",
    )
    assert meta["field_strength"] == 1.5 and meta["manufacturer_model"] == "SIGNA HDx"
    assert meta["original_id"] == "SC-HF-I-9" and meta["pathology"] == "HF-I"


# --- contour checks --------------------------------------------------------------------------


def test_outside_distance_is_zero_inside_and_the_gap_to_the_nearest_edge_outside() -> None:
    box = square(0, 0, 4, 4)
    assert outside_distance(np.array([[1.0, 1.0], [4.0, 2.0]]), box) == 0.0
    assert outside_distance(np.array([[2.0, 2.0], [6.0, 2.0]]), box) == pytest.approx(2.0)
    assert outside_distance(np.array([[5.0, 5.0], [2.0, -1.0]]), box) == pytest.approx(2**0.5)


def _write_study(
    root: Path,
    image_id: str,
    contour_id: str,
    contours: dict[tuple[str, int, int], np.ndarray],
    seed: int,
) -> None:
    cine = np.random.default_rng(seed).integers(1, 2000, size=(T, Z, H, W)).astype(np.float32)
    write_sunnybrook_study(root, image_id, contour_id, cine, ED, ES, contours, seed=seed)


def _shifted(contours: dict[tuple[str, int, int], np.ndarray]) -> dict:
    return {key: points + np.array([1.0, 0.0]) for key, points in contours.items()}


def test_an_endocardial_contour_outside_its_epicardial_one_fails_naming_both_files(
    tmp_path: Path,
) -> None:
    # o-contour cols 4.5..6.5, rows 3.5..4.5 inside i-contour cols 2.5..7.5, rows 1.5..5.5: the
    # i corner (2.5, 1.5) is sqrt(2² + 2²) = 2.83 px from the o corner (4.5, 3.5).
    swapped = {**synthetic_contours(), ("o", ED, 0): square(4.5, 3.5, 6.5, 4.5)}
    _write_study(tmp_path, "SCD0000001", "SC-HF-I-9", swapped, seed=1)
    with pytest.raises(DatasetError, match="reaches 2.8 px outside the epicardial") as error:
        create_dataset("sunnybrook", tmp_path).load("SCD0000001")
    message = str(error.value)
    assert "i-contours/IM-0001-" in message and "o-contours/IM-0001-" in message
    # ... and the two ways out: delete the o-contours, or drop them by an option
    assert (
        f"delete {tmp_path / 'contours' / 'SC-HF-I-9' / 'o-contours'} or pass --option "
        f"inconsistent_contours=drop_myo" in message
    )


def test_contours_that_touch_within_the_tolerance_load(tmp_path: Path) -> None:
    # i-contour of slice 1: cols 2.5..6.5, rows 1.5..5.5; its corners lie 0.71 px outside.
    touching = {**synthetic_contours(), ("o", ED, 1): square(3.0, 2.0, 9.5, 7.5)}
    _write_study(tmp_path, "SCD0000001", "SC-HF-I-9", touching, seed=1)
    assert create_dataset("sunnybrook", tmp_path).load("SCD0000001").ed == ED


def test_a_study_whose_contours_copy_another_studys_fails_naming_both_folders(
    tmp_path: Path,
) -> None:
    _write_study(tmp_path, "SCD0000001", "SC-HF-I-1", synthetic_contours(), seed=1)
    # Other InstanceNumbers, so other file names: the copy is found by content.
    _write_study(tmp_path, "SCD0000002", "SC-HF-I-2", synthetic_contours(), seed=2)
    _write_study(tmp_path, "SCD0000003", "SC-HF-I-3", _shifted(synthetic_contours()), seed=3)
    dataset = create_dataset("sunnybrook", tmp_path)
    assert dataset.load("SCD0000001").ed == ED and dataset.load("SCD0000003").ed == ED
    with pytest.raises(DatasetError, match="byte copies of those of study SCD0000001") as error:
        dataset.load("SCD0000002")
    assert str(tmp_path / "contours" / "SC-HF-I-1") in str(error.value)
    assert str(tmp_path / "contours" / "SC-HF-I-2") in str(error.value)


def test_two_studies_linked_to_one_contour_folder_both_fail(tmp_path: Path) -> None:
    _write_study(tmp_path, "SCD0000001", "SC-HF-I-1", synthetic_contours(), seed=1)
    _write_study(tmp_path, "SCD0000002", "SC-HF-I-1", {}, seed=1)
    dataset = create_dataset("sunnybrook", tmp_path)
    for study in ("SCD0000001", "SCD0000002"):
        with pytest.raises(DatasetError, match="byte copies"):
            dataset.load(study)


def test_data_check_lists_contour_problems_and_skip_bad_subjects_skips_them(tmp_path: Path) -> None:
    from cmrbench.benchmark.api import without_bad_subjects
    from cmrbench.benchmark.grid import parse_grid

    _write_study(tmp_path, "SCD0000001", "SC-HF-I-1", synthetic_contours(), seed=1)
    _write_study(tmp_path, "SCD0000002", "SC-HF-I-2", synthetic_contours(), seed=2)
    swapped = {**_shifted(synthetic_contours()), ("o", ED, 0): square(5.5, 3.5, 7.5, 4.5)}
    _write_study(tmp_path, "SCD0000003", "SC-HF-I-3", swapped, seed=3)
    _write_study(
        tmp_path, "SCD0000004", "SC-HF-I-4", _shifted(_shifted(synthetic_contours())), seed=4
    )
    report = check_dataset(create_dataset("sunnybrook", tmp_path))
    problems = {p.subject_id: p.message for p in report.problems}
    assert sorted(problems) == ["SCD0000002", "SCD0000003"]
    assert "SC-HF-I-1" in problems["SCD0000002"] and "epicardial" in problems["SCD0000003"]
    grid = parse_grid(
        {
            "dataset": {"name": "sunnybrook", "root": str(tmp_path)},
            "encoders": ["unet2d_xs"],
            "methods": ["scratch"],
            "budgets": ["all"],
        },
        "contour-check grid",
    )
    kept, skipped = without_bad_subjects(grid, progress=False)
    assert [s["subject"] for s in skipped] == ["SCD0000002", "SCD0000003"]
    assert sorted(kept.data.exclude) == ["SCD0000002", "SCD0000003"]


# --- the four real studies -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> dict:
    dataset = SunnybrookDataset(SUNNYBROOK)
    return {subject_id: dataset.load(subject_id) for subject_id in dataset.subject_ids()}


def _lv_ml(subject, frame: int) -> float:
    return float((subject.labels[frame] == LV).sum() * subject.voxel_ml)


@needs_sunnybrook
def test_real_studies_have_10_to_13_slices_of_20_phases_without_zero_borders(real: dict) -> None:
    assert sorted(real) == ["SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401"]
    for subject_id, subject in real.items():
        t, z, h, w = subject.shape
        assert t == 20 and 10 <= z <= 13
        # the rows and columns of the 256² images that hold a non-zero pixel in some image
        # (two studies carry zero borders of 18-19 px)
        pixels = np.stack(
            [
                pydicom.dcmread(path).pixel_array
                for path in sorted((SUNNYBROOK / "images" / subject_id).glob("*.dcm"))
            ]
        )
        content = (pixels != 0).any(axis=0)
        kept = [np.ptp(np.flatnonzero(content.any(axis=a))) + 1 for a in (1, 0)]
        assert sorted((h, w)) == sorted(kept)
        assert {h, w} <= {219, 220, 256}


@needs_sunnybrook
def test_real_spacing_matches_the_dicom_headers(real: dict) -> None:
    for subject_id, subject in real.items():
        dz, dy, dx = subject.spacing
        assert dy == dx and 1.29 <= round(dy, 2) <= 1.37 and 8.0 <= round(dz, 2) <= 10.0
        header = pydicom.dcmread(
            SUNNYBROOK / "images" / subject_id / "1.dcm", stop_before_pixels=True
        )
        assert dz == pytest.approx(float(header.SpacingBetweenSlices), abs=0.05)
        assert dy == pytest.approx(float(header.PixelSpacing[0]))


@needs_sunnybrook
def test_real_ed_has_myocardium_es_has_none_and_rv_is_never_annotated(real: dict) -> None:
    for subject in real.values():
        ed, es = subject.annotated[subject.ed], subject.annotated[subject.es]
        assert ed[MYO].sum() >= 8 and (subject.labels[subject.ed] == MYO).any()
        assert not es[MYO].any() and not (subject.labels[subject.es] == MYO).any()
        assert not ed[RV].any() and not es[RV].any()
        assert ed[LV].sum() >= 9 and es[LV].sum() >= 9


@needs_sunnybrook
def test_real_lv_volumes_and_ejection_fraction_are_plausible_for_heart_failure(real: dict) -> None:
    for subject in real.values():
        edv, esv = _lv_ml(subject, subject.ed), _lv_ml(subject, subject.es)
        assert 50 <= edv <= 400
        assert 5 <= 100 * (edv - esv) / edv <= 60


@needs_sunnybrook
def test_real_slices_run_base_to_apex(real: dict) -> None:
    for subject in real.values():
        contoured = np.flatnonzero(subject.annotated[subject.ed][LV])
        areas = [(subject.labels[subject.ed][z] == LV).sum() for z in contoured]
        assert areas[0] > areas[-1]
        assert subject.meta["slice_order"] == "geometry"


@needs_sunnybrook
def test_real_contours_lie_on_the_bright_blood_pool(real: dict) -> None:
    # Cine SSFP blood is bright: a contour mapped to the wrong image would not show this.
    for subject in real.values():
        for frame in (subject.ed, subject.es):
            inside = subject.labels[frame] == LV
            frame_mean = subject.cine[frame][subject.annotated[frame][LV]].mean()
            assert subject.cine[frame][inside].mean() > 1.3 * frame_mean


@needs_sunnybrook
def test_real_meta_is_ge_1_5_tesla(real: dict) -> None:
    for subject in real.values():
        assert subject.meta["vendor"] == "C" and subject.meta["manufacturer"] == "GE"
        assert subject.meta["field_strength"] == 1.5


@needs_sunnybrook
def test_real_default_split_is_two_one_one_and_can_be_overridden() -> None:
    assert SunnybrookDataset(SUNNYBROOK).default_split() == {
        "train": ["SCD0000101", "SCD0000201"],
        "val": ["SCD0000301"],
        "test": ["SCD0000401"],
    }
    chosen = {"train": ["SCD0000101", "SCD0000201", "SCD0000301"], "test": ["SCD0000401"]}
    assert SunnybrookDataset(SUNNYBROOK, split=chosen).default_split() == {**chosen, "val": []}


# --- partial annotations ---------------------------------------------------------------------


def _copy_study(root: Path, study: str) -> Path:
    """A folder holding one real study (images, contours, link.csv) to change in a test."""
    import shutil

    contour = dict(
        line.split(",") for line in (SUNNYBROOK / "link.csv").read_text().splitlines()[1:]
    )[study]
    shutil.copytree(SUNNYBROOK / "images" / study, root / "images" / study)
    shutil.copytree(SUNNYBROOK / "contours" / contour, root / "contours" / contour)
    (root / "link.csv").write_text(f"patient_id,original_id\n{study},{contour}\n")
    return root / "contours" / contour


@needs_sunnybrook
def test_a_study_without_o_contours_loads_its_lv_with_myo_not_annotated(
    tmp_path: Path, real: dict
) -> None:
    import shutil

    shutil.rmtree(_copy_study(tmp_path, "SCD0000201") / "o-contours")
    subject = create_dataset("sunnybrook", tmp_path).load("SCD0000201")
    original = real["SCD0000201"]
    # ED is still the study's ED: the i-contoured phase with the larger LV area
    assert (subject.ed, subject.es) == (original.ed, original.es)
    for frame in (subject.ed, subject.es):
        np.testing.assert_array_equal(subject.labels[frame] == LV, original.labels[frame] == LV)
        assert not (subject.labels[frame] == MYO).any()
        assert not subject.annotated[frame][MYO].any()  # n/a, never background
        np.testing.assert_array_equal(subject.annotated[frame][LV], original.annotated[frame][LV])
    assert any("no o-contours, so MYO is not annotated" in n for n in subject.meta["notes"])
    report = format_report(check_dataset(create_dataset("sunnybrook", tmp_path)))
    assert "annotated  LV in 1, MYO in 0, RV in 0" in report
    assert "no o-contours, so MYO is not annotated (n/a, never background)" in report


def test_an_inconsistent_study_loads_without_its_o_contours_with_drop_myo(tmp_path: Path) -> None:
    swapped = {**synthetic_contours(), ("o", ED, 0): square(4.5, 3.5, 6.5, 4.5)}
    _write_study(tmp_path, "SCD0000001", "SC-HF-I-9", swapped, seed=1)
    subject = create_dataset("sunnybrook", tmp_path, inconsistent_contours="drop_myo").load(
        "SCD0000001"
    )
    assert (subject.ed, subject.es) == (ED, ES)  # the larger i-contoured area is ED's
    assert not (subject.labels[ED] == MYO).any() and not subject.annotated[ED][MYO].any()
    assert subject.annotated[ED][LV].tolist() == [True, True, True]
    assert any("inconsistent_contours=drop_myo" in note for note in subject.meta["notes"])
    with pytest.raises(
        DatasetError,
        match=r"inconsistent_contours='keep'; expected one of "
        r"refuse, drop_myo",
    ):
        create_dataset("sunnybrook", tmp_path, inconsistent_contours="keep")
