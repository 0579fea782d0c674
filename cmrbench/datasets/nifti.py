"""Read NIfTI cine and label volumes the one way cmrbench does, and turn them into a `Subject`.

Shared by the ACDC, M&Ms and M&Ms-2 adapters (DESIGN.md, "Subject"). Conventions:

* Arrays: a NIfTI volume is stored ``(X, Y, Z[, T])`` (voxel axes i, j, k[, t]), read as
  ``cine (T, Z, H, W)`` with H = axis j and W = axis i (``data.transpose(3, 2, 1, 0)``), then
  cropped and laid out as the network sees it (`cmrbench.datasets.layout`: all-zero borders
  cropped, the two in-plane axes swapped and flipped so that the columns run posterior and
  the rows right-and-feet, from the affine's directions). Images and labels go through the
  same transpose, slice flip, crop and layout.
* Spacing: ``(dz, dy, dx)`` are the lengths of the affine's columns k, j, i (mm), i.e. what the
  header's voxel-to-world transform actually uses (dy and dx swap with the in-plane axes).
* Slice order, base → apex, from geometry: the heart's long axis runs from the base towards
  the apex, which points to the patient's left, anterior and inferior. The slice axis (affine
  column k, a world direction) is compared with that direction (`APEX_DIRECTION_LPS`, in
  DICOM's LPS frame; a NIfTI affine is RAS, so x and y change sign): a negative dot product
  means the stored slices run apex → base and are flipped. A short-axis stack is
  double-oblique; when the header's slice axis lies exactly along a scanner axis the header
  carries no orientation (converters that drop it write a diagonal affine), and when it is
  nearly perpendicular to the apex direction the sign is unreliable. In both cases the
  stored order is kept and the subject's ``meta["notes"]`` says so.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from cmrbench.datasets.base import DatasetError
from cmrbench.datasets.layout import in_network_layout
from cmrbench.datasets.subject import CLASS_NAMES, Subject

_CLASS_LABELS = {0: "background", **CLASS_NAMES}

# Patient left, anterior, inferior in DICOM's LPS frame (+x left, +y posterior, +z head).
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
# |cos| of the angle between the slice axis and the apex direction below which the sign of
# the projection is not trusted (about 78 degrees).
MIN_APEX_ALIGNMENT = 0.2
# A slice axis whose largest direction cosine exceeds this lies along a scanner axis.
CARDINAL_AXIS_COSINE = 1.0 - 1e-4
# Image and label affines agree when every entry is within this many mm (or unit cosines).
AFFINE_TOLERANCE_MM = 1e-3
# A cine frame "is" a given 3D volume when their Pearson correlation reaches this.
MIN_FRAME_MATCH_CORRELATION = 0.99

_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)


@dataclass(frozen=True)
class NiftiVolume:
    """One NIfTI file as stored: ``data`` ``(X, Y, Z[, T])``, its 4×4 ``affine`` and ``path``."""

    path: Path
    data: np.ndarray
    affine: np.ndarray

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)``."""
        return tuple(self.data.shape[:3])


def read_nifti(path: str | Path, what: str = "image") -> NiftiVolume:
    """Read a NIfTI file fully into memory (float32), or raise `DatasetError` naming it.

    ``what`` says what the file should hold ("cine", "label", ...) for the message.
    Missing, corrupt and truncated (``.gz`` cut short) files all fail here, not later.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: missing; expected the {what} NIfTI file here")
    try:
        # nib.load is typed as returning any FileBasedImage; a NIfTI file loads as a
        # SpatialImage (Nifti1Image, Nifti2Image), which has a data object and an affine
        image = cast(SpatialImage, nib.load(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except _READ_ERRORS as err:
        raise DatasetError(
            f"{path}: cannot read the {what} NIfTI file ({type(err).__name__}: "
            f"{err}); expected a complete .nii/.nii.gz file, it may be corrupt "
            f"or truncated"
        ) from err
    if data.ndim < 3:
        raise DatasetError(
            f"{path}: the {what} has shape {data.shape}; expected at least 3D (X, Y, Z)"
        )
    return NiftiVolume(path=path, data=data, affine=np.asarray(image.affine, dtype=np.float64))


def read_cine(path: str | Path) -> NiftiVolume:
    """`read_nifti` for a 4D cine ``(X, Y, Z, T)``; raise `DatasetError` naming the file if it
    is not 4D, holds NaN or infinite values, or is constant."""
    cine = read_nifti(path, "4D cine")
    if cine.data.ndim != 4:
        raise DatasetError(
            f"{cine.path}: cine has shape {cine.data.shape}; expected 4D (X, Y, Z, T)"
        )
    if not np.isfinite(cine.data).all():
        raise DatasetError(
            f"{cine.path}: cine contains NaN or infinite values; expected finite intensities"
        )
    if float(cine.data.min()) == float(cine.data.max()):
        raise DatasetError(
            f"{cine.path}: cine is constant ({float(cine.data.min())}); expected an image"
        )
    return cine


def spacing_zyx(affine: np.ndarray) -> tuple[float, float, float]:
    """``(dz, dy, dx)`` in mm: lengths of the affine's k, j, i columns (see module docstring)."""
    lengths = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return float(lengths[2]), float(lengths[1]), float(lengths[0])


def ras_to_lps(direction: np.ndarray) -> np.ndarray:
    """A NIfTI (RAS+) world direction in DICOM's LPS+ frame."""
    return np.asarray(direction, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])


def slice_axis_points_to_apex(direction_lps: np.ndarray) -> bool | None:
    """Whether stepping along ``direction_lps`` (a slice-axis direction) moves towards the apex.

    None when the geometry cannot tell: the direction lies exactly along a scanner axis (no
    orientation in the header) or is nearly perpendicular to `APEX_DIRECTION_LPS`.
    """
    unit = np.asarray(direction_lps, dtype=np.float64)
    unit = unit / np.linalg.norm(unit)
    if np.abs(unit).max() > CARDINAL_AXIS_COSINE:
        return None
    alignment = float(unit @ APEX_DIRECTION_LPS)
    if abs(alignment) < MIN_APEX_ALIGNMENT:
        return None
    return alignment > 0


def slice_order_note(direction_lps: np.ndarray, where: str) -> str:
    """Why `slice_axis_points_to_apex` gave None, for ``meta["notes"]``."""
    unit = np.asarray(direction_lps, dtype=np.float64)
    unit = unit / np.linalg.norm(unit)
    if np.abs(unit).max() > CARDINAL_AXIS_COSINE:
        return (
            f"{where}: slice axis {np.round(unit, 3).tolist()} lies along a scanner axis "
            f"(the header carries no oblique orientation); stored slice order kept"
        )
    return (
        f"{where}: slice axis {np.round(unit, 3).tolist()} is nearly perpendicular to the "
        f"apex direction (patient left-anterior-inferior); stored slice order kept"
    )


def check_same_grid(image: NiftiVolume, label: NiftiVolume) -> None:
    """Raise `DatasetError` naming both files unless they share spatial shape and affine."""
    if image.spatial_shape != label.spatial_shape:
        raise DatasetError(
            f"{label.path}: label has spatial shape {label.spatial_shape} but "
            f"image {image.path} has {image.spatial_shape}; expected the same "
            f"(X, Y, Z)"
        )
    if not np.allclose(image.affine, label.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        raise DatasetError(
            f"{label.path}: label affine {np.round(label.affine, 4).tolist()} "
            f"differs from image {image.path} affine "
            f"{np.round(image.affine, 4).tolist()}; expected the same voxel grid "
            f"(within {AFFINE_TOLERANCE_MM} mm)"
        )


def to_canonical_labels(data: np.ndarray, label_map: Mapping[int, int], path: Path) -> np.ndarray:
    """Map a label array's stored values to canonical uint8 values, or raise naming ``path``.

    ``label_map`` maps every value the dataset's convention allows to its canonical class.
    """
    values = np.unique(data)
    allowed = np.array(sorted(label_map), dtype=np.float64)
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        expected = ", ".join(f"{k} ({_CLASS_LABELS[c]})" for k, c in sorted(label_map.items()))
        shown = ", ".join(f"{v:g}" for v in bad[:10])
        raise DatasetError(
            f"{path}: label values {shown} are outside the dataset's "
            f"convention; expected only {expected}"
        )
    lookup = np.zeros(int(allowed.max()) + 1, dtype=np.uint8)
    for stored, canonical in label_map.items():
        lookup[stored] = canonical
    return lookup[data.astype(np.int64)]


def best_matching_frame(cine: NiftiVolume, frame: NiftiVolume) -> tuple[int, float]:
    """``(t, r)``: the cine frame ``t`` (0-based) equal to, or most correlated with, ``frame``.

    ``cine.data`` is ``(X, Y, Z, T)``, ``frame.data`` ``(X, Y, Z)``; ``r`` is the Pearson
    correlation (1.0 for an exact copy).
    """
    if cine.spatial_shape != frame.spatial_shape or frame.data.ndim != 3:
        raise DatasetError(
            f"{frame.path}: shape {frame.data.shape} cannot be a frame of cine "
            f"{cine.path} with shape {cine.data.shape}; expected (X, Y, Z) = "
            f"{cine.spatial_shape}"
        )
    target = frame.data.astype(np.float64).ravel()
    target_centred = target - target.mean()
    correlation = np.full(cine.data.shape[3], -np.inf)
    for t in range(cine.data.shape[3]):
        candidate = cine.data[..., t]
        if np.array_equal(candidate, frame.data):
            return t, 1.0
        centred = candidate.astype(np.float64).ravel()
        centred -= centred.mean()
        norm = np.linalg.norm(centred) * np.linalg.norm(target_centred)
        if norm > 0:
            correlation[t] = centred @ target_centred / norm
    best = int(np.argmax(correlation))
    return best, float(correlation[best])


def find_frame(cine: NiftiVolume, frame: NiftiVolume, phase: str) -> int:
    """The 0-based cine frame that ``frame`` (the ``phase`` volume) was taken from."""
    index, correlation = best_matching_frame(cine, frame)
    if not correlation >= MIN_FRAME_MATCH_CORRELATION:  # also when NaN
        raise DatasetError(
            f"{frame.path}: no frame of cine {cine.path} matches this {phase} "
            f"volume (best: frame {index}, correlation {correlation:.3f}); "
            f"expected one with correlation >= {MIN_FRAME_MATCH_CORRELATION}"
        )
    return index


def subject_from_nifti(
    subject_id: str,
    cine: NiftiVolume,
    labels: Mapping[int, NiftiVolume],
    label_map: Mapping[int, int],
    ed: int,
    es: int,
    meta: dict[str, Any],
) -> Subject:
    """Build a `Subject` from a 4D cine ``(X, Y, Z, T)`` (`read_cine`) and 3D label volumes.

    ``labels`` maps 0-based frame indices to label volumes on the cine's grid; ``label_map``
    is the dataset's label convention (stored value → canonical class). Applies the
    transpose, spacing and base → apex rules of this module, then the crop and in-plane
    layout of `cmrbench.datasets.layout`, to image and labels alike.
    """
    n_frames = cine.data.shape[3]
    for name, frame in (("ED", ed), ("ES", es)):
        if not 0 <= frame < n_frames:
            raise DatasetError(
                f"{cine.path}: {name} frame {frame} (0-based) is out of range; "
                f"the cine has {n_frames} frames (expected 0..{n_frames - 1})"
            )
    for volume in labels.values():
        check_same_grid(cine, volume)
    towards_apex = slice_axis_points_to_apex(ras_to_lps(cine.affine[:3, 2]))
    notes = list(meta.get("notes", []))
    if towards_apex is None:
        notes.append(slice_order_note(ras_to_lps(cine.affine[:3, 2]), str(cine.path)))
    flip = towards_apex is False
    cine_tzhw = cine.data.transpose(3, 2, 1, 0)
    label_arrays = {
        f: to_canonical_labels(v.data, label_map, v.path).transpose(2, 1, 0)
        for f, v in labels.items()
    }
    if flip:
        cine_tzhw = cine_tzhw[:, ::-1]
        label_arrays = {f: lab[::-1] for f, lab in label_arrays.items()}
    meta = {**meta, "notes": notes, "slice_order": "stored" if towards_apex is None else "geometry"}
    stored = Subject(
        id=subject_id,
        cine=np.ascontiguousarray(cine_tzhw, dtype=np.float32),
        spacing=spacing_zyx(cine.affine),
        labels={f: np.ascontiguousarray(lab) for f, lab in label_arrays.items()},
        ed=ed,
        es=es,
        meta=meta,
        source=str(cine.path),
    )
    row_dir, col_dir, slice_dir = (ras_to_lps(cine.affine[:3, axis]) for axis in (1, 0, 2))
    return in_network_layout(stored, row_dir, col_dir, -slice_dir if flip else slice_dir)


def has_files(root: Path, depth: int = 3) -> bool:
    """Whether ``root`` holds any file within ``depth`` folder levels (empty vs unknown layout)."""
    if depth < 0 or not root.is_dir():
        return False
    return any(entry.is_file() or has_files(entry, depth - 1) for entry in root.iterdir())
