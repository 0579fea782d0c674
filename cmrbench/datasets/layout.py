"""How every stack reaches the network: zero borders cropped, in-plane axes in one layout.

de Mooij et al. (arXiv 2409.18100) reformat every M&Ms and M&Ms-2 study before anything else
(qcardia-data 1.0.0, ``setup/reformat/utils.py`` ``reformat_sa_cine_scans``, with the fixes
of ``mm1.py`` and ``mm2.py``): rows and columns that are zero in every slice and frame are
cropped, then the stack is re-oriented to the nearest world axes of its affine. Scanners
store short-axis stacks in different in-plane layouts (real M&Ms files are LPS for some
vendors, PIR or PIL for others), so without this step a network trained without
augmentation meets hearts turned by 75-90 degrees between subjects.

The layout (the study's, for the layouts M&Ms stores; one rule here for every dataset):

* the **columns** run towards the patient's back (posterior), the **rows** towards the
  patient's right and feet, and ``rows × columns`` points from the base to the apex;
* only the two in-plane axes are swapped and flipped, never interpolated, so spacing,
  volumes and distances stay exact; slices keep their base → apex order
  (`cmrbench.datasets.nifti`), which fixes the handedness.

Of the four rotations of the stored rows and columns that keep ``rows × columns`` pointing to
the apex, `in_plane_layout` takes the one whose columns lie closest to posterior and whose
rows lie closest to right-and-feet (the largest sum of the two cosines): on a short-axis plane
(normal towards left, anterior, inferior) both references lie in the plane, 90 degrees
apart, so the choice is stable; it depends only on the world geometry, never on how the file
stores it. For files stored LPS (rows ≈ P, columns ≈ L, slices ≈ S), PIR and PIL this gives
what ``mm1.py`` gives (rows R, columns P; rows I, columns P). Directions are DICOM's patient
frame, LPS+ (+x left, +y posterior, +z head).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product

import numpy as np

from cmrbench.datasets.subject import Subject

POSTERIOR_LPS = np.array([0.0, 1.0, 0.0])
"""Where the network's columns point (as close as the stored axes allow)."""
RIGHT_FEET_LPS = np.array([-1.0, 0.0, -1.0]) / np.sqrt(2.0)
"""Where the network's rows point (as close as the stored axes allow)."""
_LPS_LETTERS = ("LR", "PA", "SI")


@dataclass(frozen=True)
class InPlaneLayout:
    """A permutation and flips of the two in-plane axes of ``(..., H, W)`` arrays.

    ``transpose`` swaps the stored rows and columns first; ``flip_rows`` / ``flip_cols`` then
    reverse the new rows / columns. The identity leaves arrays as stored.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``array`` ``(..., H, W)`` in this layout (a contiguous copy)."""
        if self.transpose:
            array = np.swapaxes(array, -1, -2)
        if self.flip_rows:
            array = array[..., ::-1, :]
        if self.flip_cols:
            array = array[..., ::-1]
        return np.ascontiguousarray(array)

    def spacing(self, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
        """``(dz, dy, dx)`` of the arrays after `apply`."""
        dz, dy, dx = spacing
        return (dz, dx, dy) if self.transpose else (dz, dy, dx)

    def directions(self, row_dir: np.ndarray, col_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World directions of the new rows and columns, from the stored ones."""
        rows, cols = (col_dir, row_dir) if self.transpose else (row_dir, col_dir)
        return (-rows if self.flip_rows else rows), (-cols if self.flip_cols else cols)


def _unit(direction: np.ndarray) -> np.ndarray:
    vector = np.asarray(direction, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def in_plane_layout(
    row_dir: np.ndarray, col_dir: np.ndarray, slice_dir: np.ndarray
) -> InPlaneLayout:
    """The layout that turns stored arrays into the network's (see module docstring).

    ``row_dir``, ``col_dir`` and ``slice_dir`` are LPS world directions in which the stored
    row index, column index and slice index increase (slices already base → apex, or as
    stored when the geometry cannot tell).
    """
    row_dir, col_dir, slice_dir = _unit(row_dir), _unit(col_dir), _unit(slice_dir)
    best, best_score = InPlaneLayout(), -np.inf
    for transpose, flip_rows, flip_cols in product((False, True), repeat=3):
        layout = InPlaneLayout(transpose, flip_rows, flip_cols)
        rows, cols = layout.directions(row_dir, col_dir)
        if np.cross(rows, cols) @ slice_dir <= 0:
            continue
        score = cols @ POSTERIOR_LPS + rows @ RIGHT_FEET_LPS
        # an exact tie (a plane at 45 degrees to both references) keeps the earlier candidate,
        # the storage with fewer swaps
        if score > best_score + 1e-9:
            best, best_score = layout, score
    return best


def axis_letters(*directions: np.ndarray) -> str:
    """The nearest patient-axis letter of each LPS direction (``"RPI"``: right, posterior,
    inferior). Each axis gets its own nearest letter, so on a double-oblique plane two axes
    may share one (``"PLL"``), unlike nibabel's ``aff2axcodes``, which assigns them jointly."""
    letters = []
    for direction in directions:
        vector = _unit(direction)
        axis = int(np.argmax(np.abs(vector)))
        letters.append(_LPS_LETTERS[axis][0 if vector[axis] > 0 else 1])
    return "".join(letters)


def zero_border_crop(cine: np.ndarray, labels: dict[int, np.ndarray]) -> tuple[slice, slice]:
    """Rows and columns of ``cine`` ``(T, Z, H, W)`` to keep: all but the leading and trailing
    ones that are zero in every frame and slice (qcardia-data's "borderless" crop).

    A labelled pixel is never cropped (the study crops by the image alone; a label in an
    all-zero border would be a corrupt file, and volumes must stay exact).
    """
    content = np.any(cine != 0, axis=(0, 1))
    for label in labels.values():
        content |= np.any(label != 0, axis=0)
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size == 0:
        return slice(0, cine.shape[2]), slice(0, cine.shape[3])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def in_network_layout(
    subject: Subject, row_dir: np.ndarray, col_dir: np.ndarray, slice_dir: np.ndarray
) -> Subject:
    """``subject`` (arrays as stored, slices base → apex) cropped by `zero_border_crop` and
    re-laid out by `in_plane_layout`; ``meta["layout"]`` records what was done.

    ``row_dir``, ``col_dir``, ``slice_dir``: LPS directions of the stored row, column and
    slice indices. Spacing follows the axes; annotation flags (per slice) are unchanged.
    """
    rows, cols = zero_border_crop(subject.cine, subject.labels)
    layout = in_plane_layout(row_dir, col_dir, slice_dir)
    new_rows, new_cols = layout.directions(_unit(row_dir), _unit(col_dir))
    record = {
        "stored": axis_letters(row_dir, col_dir, slice_dir),
        "network": axis_letters(new_rows, new_cols, slice_dir),
        "stored_shape": list(subject.cine.shape[-2:]),
        "crop_rows": [rows.start, rows.stop],
        "crop_cols": [cols.start, cols.stop],
    }
    labels = {frame: layout.apply(label[:, rows, cols]) for frame, label in subject.labels.items()}
    return replace(
        subject,
        cine=layout.apply(subject.cine[..., rows, cols]),
        labels=labels,
        spacing=layout.spacing(subject.spacing),
        meta={**subject.meta, "layout": record},
    )
