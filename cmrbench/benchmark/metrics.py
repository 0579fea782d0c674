"""Segmentation and clinical metrics on numpy masks: Dice, HD95, volumes, EF, LV mass.

The study (de Mooij et al., arXiv 2409.18100) reports 3D Dice per class at ED and ES;
cmrbench adds the 95th-percentile Hausdorff distance and the clinical end points the study
left open (ventricular volumes, ejection fraction, LV mass). Plain functions on arrays, in
MONAI's style (``monai.metrics.compute_dice`` / ``compute_hausdorff_distance``); aggregation
over subjects lives in ``cmrbench/reports/stats/``.

Edge cases (pinned by ``tests/test_metrics.py``):

=====================  ===========  =====================================================
prediction / reference  ``dice``     ``hd95``
=====================  ===========  =====================================================
both empty             1.0          0.0 (nothing to miss, as MONAI returns)
exactly one empty      0.0          NaN: undefined; reports count these cases separately
                                    (MONAI returns inf or NaN here, with a warning)
=====================  ===========  =====================================================

A class that is not annotated in a frame (see ``Subject.annotated``) is *unknown*, never
background: `subject_metrics` gives it ``annotated=False`` and NaN everywhere ("n/a").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cmrbench.datasets.subject import FOREGROUND, LV, MYO, NUM_CLASSES, RV
from cmrbench.vocabulary import CLINICAL_QUANTITIES

LV_MYO_DENSITY_G_PER_ML = 1.05
"""Myocardial density used to turn LV myocardial volume into mass (g/ml)."""

HD_PERCENTILE = 95.0
CLINICAL_KEYS = CLINICAL_QUANTITIES
"""Keys of `clinical_values`: volumes in ml, ejection fractions in %, mass in g."""


class MetricInputError(ValueError):
    """Arrays or spacings handed to a metric do not fit together; the message names them."""


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class in one frame of one subject (NaN where ``annotated`` is False).

    Attributes:
        annotated: whether the class was delineated on at least one slice of the frame.
        dsc: 3D Dice over the annotated slices.
        hd95_mm: 95th-percentile symmetric Hausdorff distance in mm (NaN if exactly one of
            prediction and reference is empty).
        vol_pred_ml, vol_ref_ml: volume of the class over the annotated slices, in ml.
    """

    annotated: bool
    dsc: float
    hd95_mm: float
    vol_pred_ml: float
    vol_ref_ml: float


NOT_ANNOTATED = ClassMetrics(
    annotated=False, dsc=math.nan, hd95_mm=math.nan, vol_pred_ml=math.nan, vol_ref_ml=math.nan
)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2|P∩R| / (|P| + |R|)`` of two boolean masks of any (equal) shape.

    Both empty → 1.0; exactly one empty → 0.0 (the study's convention).
    """
    pred, ref = _as_masks(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two masks' surfaces.

    Defined as MONAI's ``compute_hausdorff_distance(..., percentile=95, spacing=spacing)``:
    the surface of a mask is its edge voxels (the mask minus its binary erosion with the
    face-connected structuring element, the outside counting as background, as in
    ``monai.metrics.utils.get_mask_edges``); for each edge voxel of one mask take the
    Euclidean distance (in mm, voxel size ``spacing``) to the nearest edge voxel of the
    other; the result is the larger of the two directed 95th percentiles (linear
    interpolation, as ``torch.quantile``/``np.percentile``).

    Args:
        pred, ref: boolean masks of equal shape, e.g. ``(Z, H, W)``.
        spacing: voxel size in mm per axis, e.g. ``(dz, dy, dx)``; anisotropy is honoured.

    Returns:
        The distance in mm; 0.0 if both masks are empty, NaN if exactly one is.
    """
    pred, ref = _as_masks(pred, ref)
    spacing = _checked_spacing(spacing, pred.ndim)
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return 0.0
    if pred_empty or ref_empty:
        return math.nan
    # All edge voxels lie inside the union's bounding box, and a voxel on that box's face has
    # a background neighbour just outside it, so cropping changes neither edges nor distances.
    box = _bounding_box(pred | ref)
    pred_edges, ref_edges = _edges(pred[box]), _edges(ref[box])
    return max(
        _directed_percentile(pred_edges, ref_edges, spacing),
        _directed_percentile(ref_edges, pred_edges, spacing),
    )


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a boolean mask in ml: voxel count × voxel volume (mm³) / 1000."""
    mask = np.asarray(mask, dtype=bool)
    spacing = _checked_spacing(spacing, mask.ndim)
    return int(mask.sum()) * float(np.prod(spacing)) / 1000.0


def ejection_fraction(edv_ml: float, esv_ml: float) -> float:
    """Ejection fraction in %: ``100 · (EDV − ESV) / EDV``; NaN if EDV is 0 or an input is NaN.

    A prediction with ESV > EDV gives a negative value, reported as it is.
    """
    if edv_ml == 0 or math.isnan(edv_ml) or math.isnan(esv_ml):
        return math.nan
    return 100.0 * (edv_ml - esv_ml) / edv_ml


def lv_mass_g(myo_ml: float) -> float:
    """LV myocardial mass in g from the myocardial volume in ml (density 1.05 g/ml)."""
    return myo_ml * LV_MYO_DENSITY_G_PER_ML


def subject_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], annotated: np.ndarray
) -> dict[int, ClassMetrics]:
    """Per-class metrics of one frame: ``{LV: ClassMetrics, MYO: ..., RV: ...}``.

    Only the slices where ``annotated[c, z]`` is True are compared for class ``c``: the
    other slices are cleared in both prediction and reference, so they change neither score
    nor volume, while the annotated slices keep their true positions (HD95 measures the
    real distance ``dz`` between slices, even when the annotated slices are not adjacent).

    Args:
        pred, ref: uint8 label maps ``(Z, H, W)`` in the canonical convention.
        spacing: ``(dz, dy, dx)`` in mm.
        annotated: bool ``(NUM_CLASSES, Z)`` as in ``Subject.annotated[frame]``.

    Returns:
        One `ClassMetrics` per foreground class; `NOT_ANNOTATED` (NaN everywhere) for a class
        with no annotated slice.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise MetricInputError(
            f"prediction {pred.shape} and reference {ref.shape} must be "
            f"label maps of one shape (Z, H, W)"
        )
    annotated = np.asarray(annotated)
    expected = (NUM_CLASSES, pred.shape[0])
    if annotated.shape != expected or annotated.dtype != bool:
        raise MetricInputError(
            f"annotated must be bool {expected}, got {annotated.dtype} {annotated.shape}"
        )
    spacing = _checked_spacing(spacing, 3)
    return {c: _class_metrics(pred == c, ref == c, annotated[c], spacing) for c in FOREGROUND}


def clinical_values(volumes: Mapping[str, Mapping[int, float]]) -> dict[str, float]:
    """Clinical end points from per-phase, per-class volumes (all from prediction or reference).

    Args:
        volumes: ``{"ED": {LV: ml, MYO: ml, RV: ml}, "ES": {...}}`` (class ids from
            ``cmrbench.datasets.subject``). A missing phase or class, or NaN, means n/a.

    Returns:
        ``{key: value for key in CLINICAL_KEYS}``: LV/RV EDV and ESV (ml), LV/RV EF (%) and
        LV mass (g, from the ED myocardium), each NaN where an input it needs is n/a.
    """

    def volume(phase: str, cls: int) -> float:
        return float(volumes.get(phase, {}).get(cls, math.nan))

    lv_edv, lv_esv = volume("ED", LV), volume("ES", LV)
    rv_edv, rv_esv = volume("ED", RV), volume("ES", RV)
    return {
        "LV_EDV": lv_edv,
        "LV_ESV": lv_esv,
        "LV_EF": ejection_fraction(lv_edv, lv_esv),
        "RV_EDV": rv_edv,
        "RV_ESV": rv_esv,
        "RV_EF": ejection_fraction(rv_edv, rv_esv),
        "LV_MASS": lv_mass_g(volume("ED", MYO)),
    }


def _class_metrics(
    pred: np.ndarray, ref: np.ndarray, annotated_slices: np.ndarray, spacing: tuple[float, ...]
) -> ClassMetrics:
    if not annotated_slices.any():
        return NOT_ANNOTATED
    keep = annotated_slices[:, None, None]
    pred, ref = pred & keep, ref & keep
    return ClassMetrics(
        annotated=True,
        dsc=dice(pred, ref),
        hd95_mm=hd95(pred, ref, spacing),
        vol_pred_ml=volume_ml(pred, spacing),
        vol_ref_ml=volume_ml(ref, spacing),
    )


def _as_masks(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise MetricInputError(
            f"prediction shape {pred.shape} differs from reference shape "
            f"{ref.shape}; expected masks of one shape"
        )
    return pred, ref


def _checked_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or min(values) <= 0:
        raise MetricInputError(
            f"spacing {tuple(spacing)} must be {ndim} positive mm values, one per mask axis"
        )
    return values


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Edge voxels of a mask, as MONAI's ``get_mask_edges`` (erosion with border 0)."""
    return mask & ~ndimage.binary_erosion(mask)


def _directed_percentile(
    from_edges: np.ndarray, to_edges: np.ndarray, spacing: tuple[float, ...]
) -> float:
    distance_to_surface = ndimage.distance_transform_edt(~to_edges, sampling=spacing)
    return float(np.percentile(distance_to_surface[from_edges], HD_PERCENTILE))
