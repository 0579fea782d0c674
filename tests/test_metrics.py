"""Tests for cmrbench.benchmark.metrics: MONAI agreement, hand-computed values, edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from cmrbench.benchmark.metrics import (
    CLINICAL_KEYS,
    ClassMetrics,
    MetricInputError,
    clinical_values,
    dice,
    ejection_fraction,
    hd95,
    lv_mass_g,
    subject_metrics,
    volume_ml,
)
from cmrbench.datasets.subject import LV, MYO, NUM_CLASSES, RV

CMR_SPACINGS = [(8.0, 1.3, 1.3), (10.0, 1.25, 1.25), (9.1, 1.42, 1.17), (1.0, 1.0, 1.0)]


def random_blob(rng: np.random.Generator, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """A smooth random blob (thresholded smoothed noise) filling about ``fill`` of the array."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0.8, 3.0, 3.0))
    return field > np.quantile(field, 1.0 - fill)


def monai_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    monai_metrics = pytest.importorskip("monai.metrics")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(pred[None, None]),
            torch.from_numpy(ref[None, None]),
            include_background=True,
            percentile=95,
            spacing=list(spacing),
        )
    return float(value[0, 0])


def monai_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    monai_metrics = pytest.importorskip("monai.metrics")
    value = monai_metrics.compute_dice(
        torch.from_numpy(pred[None, None]),
        torch.from_numpy(ref[None, None]),
        include_background=True,
        ignore_empty=False,
    )
    return float(value[0, 0])


@pytest.mark.parametrize("seed", range(12))
def test_dice_and_hd95_agree_with_monai_on_random_anisotropic_blobs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(6, 12)), int(rng.integers(24, 48)), int(rng.integers(24, 48)))
    spacing = CMR_SPACINGS[seed % len(CMR_SPACINGS)]
    ref = random_blob(rng, shape, fill=float(rng.uniform(0.05, 0.3)))
    # A perturbed copy: partly overlapping, sometimes with stray islands far away.
    pred = ndimage.shift(
        ref, shift=(int(rng.integers(-1, 2)), rng.integers(-3, 4), rng.integers(-3, 4)), order=0
    )
    pred ^= random_blob(rng, shape, fill=0.02)

    assert dice(pred, ref) == pytest.approx(monai_dice(pred, ref), abs=1e-6)
    # MONAI returns float32 distances; ours are float64, so agreement is to float32 precision.
    assert hd95(pred, ref, spacing) == pytest.approx(monai_hd95(pred, ref, spacing), rel=1e-5)


def test_hd95_agrees_with_monai_when_masks_touch_the_array_border() -> None:
    rng = np.random.default_rng(99)
    ref = random_blob(rng, (8, 32, 32), fill=0.4)
    ref[:, :, :3] = True
    pred = random_blob(rng, (8, 32, 32), fill=0.4)
    spacing = (10.0, 1.25, 1.25)
    assert hd95(pred, ref, spacing) == pytest.approx(monai_hd95(pred, ref, spacing), rel=1e-5)


def test_two_single_voxels_three_voxels_apart_at_2mm_are_6mm_apart() -> None:
    pred = np.zeros((1, 8, 8), dtype=bool)
    ref = np.zeros((1, 8, 8), dtype=bool)
    pred[0, 2, 1] = True
    ref[0, 2, 4] = True
    assert hd95(pred, ref, (5.0, 2.0, 2.0)) == pytest.approx(6.0)


def test_hd95_uses_slice_spacing_along_z() -> None:
    pred = np.zeros((4, 5, 5), dtype=bool)
    ref = np.zeros((4, 5, 5), dtype=bool)
    pred[0, 2, 2] = True
    ref[2, 2, 2] = True
    assert hd95(pred, ref, (8.0, 1.3, 1.3)) == pytest.approx(16.0)


def test_hd95_interpolates_the_95th_percentile_linearly() -> None:
    # pred is a 1-pixel line (every pixel is surface) at 0..4 px from a single ref pixel:
    # directed distances 0,1,2,3,4 mm → 95th percentile at rank 0.95·4 = 3.8 → 3.8 mm;
    # the other direction is 0, so the symmetric value is 3.8 mm.
    pred = np.zeros((3, 7), dtype=bool)
    ref = np.zeros((3, 7), dtype=bool)
    pred[1, 1:6] = True
    ref[1, 1] = True
    assert hd95(pred, ref, (1.0, 1.0)) == pytest.approx(3.8)


def test_square_and_its_one_pixel_shift_have_dice_half_and_hd95_one_pixel() -> None:
    pred = np.zeros((6, 6), dtype=bool)
    ref = np.zeros((6, 6), dtype=bool)
    pred[2:4, 1:3] = True
    ref[2:4, 2:4] = True
    assert dice(pred, ref) == pytest.approx(0.5)
    # distances pred→ref: 0, 0, 0.7, 0.7 → percentile at rank 2.85 → 0.7 (both directions)
    assert hd95(pred, ref, (1.5, 0.7)) == pytest.approx(0.7)


def test_both_empty_gives_dice_one_and_hd95_zero() -> None:
    empty = np.zeros((3, 4, 4), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty, (8.0, 1.0, 1.0)) == 0.0


def test_exactly_one_empty_gives_dice_zero_and_hd95_nan() -> None:
    empty = np.zeros((3, 4, 4), dtype=bool)
    full = empty.copy()
    full[1, 1:3, 1:3] = True
    assert dice(full, empty) == 0.0
    assert dice(empty, full) == 0.0
    assert math.isnan(hd95(full, empty, (8.0, 1.0, 1.0)))
    assert math.isnan(hd95(empty, full, (8.0, 1.0, 1.0)))


def test_identical_masks_have_dice_one_and_hd95_zero() -> None:
    mask = random_blob(np.random.default_rng(3), (6, 20, 20), fill=0.2)
    assert dice(mask, mask) == 1.0
    assert hd95(mask, mask, (8.0, 1.3, 1.3)) == 0.0


def test_mismatched_shapes_or_spacing_raise_a_clear_error() -> None:
    with pytest.raises(MetricInputError, match=r"\(3, 4\).*\(3, 5\)"):
        dice(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(MetricInputError, match="spacing"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1.0, 1.0))
    with pytest.raises(MetricInputError, match="spacing"):
        volume_ml(np.ones((2, 2)), (1.0, 0.0))


def test_volume_of_a_block_is_voxel_count_times_voxel_volume() -> None:
    mask = np.zeros((4, 6, 6), dtype=bool)
    mask[1:3, 1:4, 1:5] = True  # 2·3·4 = 24 voxels of 10·1.5·1.5 = 22.5 mm³
    assert volume_ml(mask, (10.0, 1.5, 1.5)) == pytest.approx(0.54)


def test_ejection_fraction_and_mass_from_hand_values() -> None:
    assert ejection_fraction(150.0, 60.0) == pytest.approx(60.0)
    assert ejection_fraction(100.0, 120.0) == pytest.approx(-20.0)
    assert math.isnan(ejection_fraction(0.0, 0.0))
    assert math.isnan(ejection_fraction(100.0, math.nan))
    assert lv_mass_g(100.0) == pytest.approx(105.0)


def test_clinical_values_from_per_phase_volumes_with_missing_rv() -> None:
    values = clinical_values({"ED": {LV: 150.0, MYO: 100.0}, "ES": {LV: 50.0, MYO: 110.0}})
    assert set(values) == set(CLINICAL_KEYS)
    assert values["LV_EDV"] == 150.0 and values["LV_ESV"] == 50.0
    assert values["LV_EF"] == pytest.approx(100.0 * 100.0 / 150.0)
    assert values["LV_MASS"] == pytest.approx(105.0)
    assert all(math.isnan(values[k]) for k in ("RV_EDV", "RV_ESV", "RV_EF"))


def test_clinical_values_are_nan_where_a_phase_or_volume_is_missing() -> None:
    values = clinical_values({"ED": {LV: 150.0, MYO: math.nan, RV: 160.0}})
    assert values["LV_EDV"] == 150.0 and values["RV_EDV"] == 160.0
    assert all(math.isnan(values[k]) for k in ("LV_ESV", "LV_EF", "RV_ESV", "RV_EF", "LV_MASS"))


def hand_built_frame() -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction ``(4, 8, 8)``: LV 2×2 squares, MYO ring-ish, RV block."""
    ref = np.zeros((4, 8, 8), dtype=np.uint8)
    ref[:, 3:5, 3:5] = LV
    ref[:, 2, 2:6] = MYO
    ref[:, 5:7, 6:8] = RV
    return ref, ref.copy()


def test_subject_metrics_perfect_prediction_scores_one_with_volumes() -> None:
    ref, pred = hand_built_frame()
    spacing = (10.0, 1.5, 1.5)
    metrics = subject_metrics(pred, ref, spacing, np.ones((NUM_CLASSES, 4), dtype=bool))
    assert set(metrics) == {LV, MYO, RV}
    lv = metrics[LV]
    assert lv == ClassMetrics(
        annotated=True,
        dsc=1.0,
        hd95_mm=0.0,
        vol_pred_ml=pytest.approx(16 * 22.5 / 1000),
        vol_ref_ml=pytest.approx(16 * 22.5 / 1000),
    )
    assert metrics[MYO].vol_ref_ml == pytest.approx(16 * 22.5 / 1000)


def test_subject_metrics_ignores_wrong_predictions_on_unannotated_slices() -> None:
    ref, pred = hand_built_frame()
    annotated = np.ones((NUM_CLASSES, 4), dtype=bool)
    annotated[LV, 3] = False
    pred[3] = LV  # every pixel of slice 3 predicted LV: wrong, but LV is not annotated there
    metrics = subject_metrics(pred, ref, (10.0, 1.5, 1.5), annotated)
    assert metrics[LV].dsc == 1.0
    assert metrics[LV].hd95_mm == 0.0
    assert metrics[LV].vol_pred_ml == pytest.approx(12 * 22.5 / 1000)
    # MYO and RV are annotated on slice 3, where the prediction erased them.
    assert metrics[MYO].dsc == pytest.approx(2 * 12 / (12 + 16))
    assert metrics[RV].vol_pred_ml == pytest.approx(12 * 22.5 / 1000)


def test_subject_metrics_class_without_annotation_is_nan_not_zero() -> None:
    ref, pred = hand_built_frame()
    annotated = np.ones((NUM_CLASSES, 4), dtype=bool)
    annotated[RV] = False
    pred[pred == LV] = 0
    metrics = subject_metrics(pred, ref, (10.0, 1.5, 1.5), annotated)
    rv = metrics[RV]
    assert rv.annotated is False
    assert all(math.isnan(v) for v in (rv.dsc, rv.hd95_mm, rv.vol_pred_ml, rv.vol_ref_ml))
    assert metrics[LV].annotated is True and metrics[LV].dsc == 0.0
    assert math.isnan(metrics[LV].hd95_mm)


def test_subject_metrics_keeps_true_slice_positions_between_annotated_slices() -> None:
    # LV annotated on slices 0 and 2 only: reference LV on slice 0, prediction on slice 2.
    # They are 2·dz = 20 mm apart; stacking the annotated slices would wrongly give 10 mm.
    ref = np.zeros((3, 6, 6), dtype=np.uint8)
    pred = np.zeros((3, 6, 6), dtype=np.uint8)
    ref[0, 2:4, 2:4] = LV
    pred[2, 2:4, 2:4] = LV
    annotated = np.zeros((NUM_CLASSES, 3), dtype=bool)
    annotated[LV, [0, 2]] = True
    metrics = subject_metrics(pred, ref, (10.0, 1.5, 1.5), annotated)
    assert metrics[LV].hd95_mm == pytest.approx(20.0)
    assert metrics[MYO].annotated is False


def test_subject_metrics_rejects_an_annotated_mask_of_the_wrong_shape() -> None:
    ref, pred = hand_built_frame()
    with pytest.raises(MetricInputError, match=r"annotated must be bool \(4, 4\)"):
        subject_metrics(pred, ref, (10.0, 1.5, 1.5), np.ones((NUM_CLASSES, 3), dtype=bool))
