"""Sunnybrook Cardiac Data adapter: DICOM cine stacks with partial LV contours.

The Sunnybrook Cardiac Data (Radau et al., MIDAS Journal 2009; CC0), layout as in
``shared/data/sunnybrook/README.md``: ``root/images/<SCD id>/*.dcm`` (one 2D image per file),
``root/contours/<SC-... id>/i-contours/IM-0001-NNNN-icontour-manual.txt`` (LV endocardium, at
ED and ES) and ``o-contours/...-ocontour-manual.txt`` (LV epicardium, ED only), where ``NNNN``
is the DICOM InstanceNumber of the contoured image, and ``root/link.csv`` (``patient_id`` →
``original_id``). Subject ids are the image folder names (``SCD0000101``).

Grouping, from the DICOM headers only (never file names): the slice normal is
``row × column`` of ImageOrientationPatient; images whose ImagePositionPatient projects to the
same position on it (within `SLICE_POSITION_TOLERANCE_MM`) form one slice, and a slice's
images ordered by TriggerTime (then InstanceNumber) are its phases. Slices run base → apex by
the rule of `cmrbench.datasets.nifti` (the apex lies towards the patient's left, anterior,
inferior; the slice normal is oriented to point that way). ``spacing = (dz, dy, dx)``: dz the
distance between neighbouring slice positions, (dy, dx) = PixelSpacing (row, column spacing).
Pixel values get RescaleSlope/RescaleIntercept when present. Labels are filled on the stored
pixel grid; then image and labels are cropped and laid out as the network sees them
(`cmrbench.datasets.layout`, from ImageOrientationPatient: the SCD stores SCD0000101 turned
by 90 degrees against the other three studies, and the layout undoes that).

Labels: contour points are ``x y`` = (column, row) pixel coordinates; a pixel is inside when
its centre ``(x=c, y=r)`` is inside the closed polygon or on it (`fill_polygon`). ED is the
contoured phase that has o-contours, ES the other i-contoured phase. LV (1) = inside the
i-contour at ED and ES; MYO (2) = inside the o-contour and outside the i-contour, at ED only.
``annotated[f][c, z]``: LV where frame f has an i-contour on slice z, MYO only at ED where both
contours exist, RV never; background where any class is annotated.

Contour checks (a failure is a `DatasetError` naming the files, so ``cmrbench data check``
lists it and ``--skip-bad-subjects`` skips the study): every i-contour point of an image with
both contours lies inside its o-contour, or within `CONTOUR_ENCLOSE_TOLERANCE_PX` of it
(`outside_distance`); and no study's contour files are byte copies of another study's
(`contour_fingerprint`; the copy is the study that sorts later, or both when ``link.csv``
points two studies at one contour folder). The enclosure error names the way out: delete the
study's o-contours folder, or pass the option ``inconsistent_contours=drop_myo``, which loads
every such study without its o-contours (and says so in ``meta["notes"]``).

Partial annotations stay partial: a study without o-contours loads with MYO not annotated
anywhere (n/a in every result, never background) and a note that ``cmrbench data check``
prints; its ED is then the i-contoured phase with the larger contoured area.

Meta: the SCD has no M&Ms vendor letter; the DICOM Manufacturer gives one through
`cmrbench.datasets.mnms.vendor_letter` (GE → "C", ``manufacturer`` "GE"), and ``meta`` keeps
the headers' Manufacturer (``dicom_manufacturer``), ManufacturerModelName
(``manufacturer_model``) and MagneticFieldStrength (``field_strength``, T). ``pathology`` is
the SCD group in the contour folder's id (``SC-HF-I-1`` → ``HF-I``, heart failure with
infarction).

Default split: sorted ids, the last quarter (at least one) ``test``, the quarter before it (at
least one) ``val``, the rest ``train`` — with the four shared studies: train SCD0000101 and
SCD0000201, val SCD0000301, test SCD0000401. Option ``split={"train": [...], "val": [...],
"test": [...]}`` overrides it (e.g. train 3 / test 1).
"""

from __future__ import annotations

import hashlib
import re
import struct
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from matplotlib.path import Path as PolygonPath

from cmrbench.datasets.base import DATASETS, DatasetAdapter, DatasetError, SplitOptions
from cmrbench.datasets.layout import in_network_layout
from cmrbench.datasets.mnms import vendor_letter
from cmrbench.datasets.nifti import has_files, slice_axis_points_to_apex, slice_order_note
from cmrbench.datasets.paper_splits import split_option
from cmrbench.datasets.subject import BACKGROUND, LV, MYO, NUM_CLASSES, Subject

SUNNYBROOK_CENTRE = "Sunnybrook Health Sciences Centre"
LINK_FILE = "link.csv"
LINK_COLUMNS = ("patient_id", "original_id")
# Images whose positions along the slice normal differ by less than this are one slice.
SLICE_POSITION_TOLERANCE_MM = 0.1
# Neighbouring slice gaps may differ from the median gap by this fraction (else: missing slice).
SLICE_GAP_TOLERANCE = 0.1
CONTOUR_KINDS = {"i": "i-contours", "o": "o-contours"}
# What a study whose contours fail the enclosure check does: fail (default) or load without
# its o-contours (MYO not annotated), as if its o-contours folder were deleted.
INCONSISTENT_OPTION, INCONSISTENT_CHOICES = "inconsistent_contours", ("refuse", "drop_myo")
# Contours are drawn on the pixel grid: where the two touch, inner points of the four shared
# studies lie up to 0.71 px outside the outer contour; 1.5 px allows that, not a swap or a
# contour of another image.
CONTOUR_ENCLOSE_TOLERANCE_PX = 1.5
# A pixel centre this close to a contour lies on it (coordinates have two decimals).
ON_CONTOUR_PX = 1e-6
_CONTOUR_FILE = re.compile(r"^IM-\d+-(\d+)-([io])contour-manual\.txt$")
_REQUIRED_TAGS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "TriggerTime",
    "InstanceNumber",
)
# What pydicom raises on corrupt or truncated files (cutting a real SCD image at every 7th
# byte gave all of these).
_DICOM_ERRORS = (
    pydicom.errors.InvalidDicomError,
    OSError,
    EOFError,
    ValueError,
    AttributeError,
    struct.error,
)


def fill_polygon(points_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool ``(H, W)``: pixels whose centre ``(x=column, y=row)`` lies inside the polygon or on
    its outline.

    ``points_xy`` ``(N, 2)`` are the closed polygon's vertices as ``x y`` pixel coordinates.
    The SCD's contours run along half-pixel steps, so many pixel centres lie exactly on them;
    counting those as inside (the drawn line belongs to the structure it outlines) keeps the
    mask the same however the image is stored (rotated or mirrored), which a point-in-polygon
    test alone does not.
    """
    points = np.asarray(points_xy, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    # Only pixel centres inside the polygon's bounding box can be inside it.
    col_lo, row_lo = np.maximum(np.ceil(points.min(axis=0)).astype(int), 0)
    col_hi, row_hi = np.minimum(np.floor(points.max(axis=0)).astype(int) + 1, shape[::-1])
    if col_lo >= col_hi or row_lo >= row_hi:
        return mask
    rows, cols = np.mgrid[row_lo:row_hi, col_lo:col_hi]
    centres = np.column_stack([cols.ravel(), rows.ravel()]).astype(np.float64)
    inside = PolygonPath(points).contains_points(centres)
    inside |= edge_distance(centres, points) <= ON_CONTOUR_PX
    mask[row_lo:row_hi, col_lo:col_hi] = inside.reshape(rows.shape)
    return mask


def edge_distance(points_xy: np.ndarray, polygon_xy: np.ndarray) -> np.ndarray:
    """``(N,)`` distance (pixels) of each point of ``points_xy`` ``(N, 2)`` to the nearest edge
    of the closed polygon ``polygon_xy`` ``(M, 2)``."""
    points = np.asarray(points_xy, dtype=np.float64)
    start = np.asarray(polygon_xy, dtype=np.float64)
    edge = np.roll(start, -1, axis=0) - start
    offset = points[:, None, :] - start[None]  # (N, M, 2)
    along = np.clip((offset * edge).sum(-1) / np.maximum((edge * edge).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(offset - along[..., None] * edge, axis=-1).min(axis=1)


def read_contour(path: Path) -> np.ndarray:
    """``(N, 2)`` float ``x y`` points of one contour file, or `DatasetError` naming it."""
    try:
        points = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DatasetError(
            f"{path}: cannot read the contour ({err}); expected lines of 'x y' pixel coordinates"
        ) from err
    if points.shape[1] != 2 or points.shape[0] < 3 or not np.isfinite(points).all():
        raise DatasetError(
            f"{path}: contour has shape {points.shape}; expected at least 3 finite 'x y' points"
        )
    return points


def outside_distance(points_xy: np.ndarray, polygon_xy: np.ndarray) -> float:
    """Largest distance (pixels) of ``points_xy`` ``(N, 2)`` outside the closed polygon
    ``polygon_xy`` ``(M, 2)`` to its boundary; 0 when every point is inside."""
    points = np.asarray(points_xy, dtype=np.float64)
    outside = points[~PolygonPath(polygon_xy).contains_points(points)]
    return float(edge_distance(outside, polygon_xy).max()) if len(outside) else 0.0


def contour_fingerprint(contour_dir: Path) -> str | None:
    """SHA-256 of a study's contour files' bytes (names ignored), or None without files."""
    digests = sorted(
        hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in CONTOUR_KINDS.values()
        for path in (contour_dir / folder).glob("*contour-manual.txt")
    )
    return hashlib.sha256("".join(digests).encode()).hexdigest() if digests else None


def read_dicom(path: Path, with_pixels: bool = True) -> pydicom.Dataset:
    """One DICOM image with the tags grouping needs, or `DatasetError` naming the file."""
    try:
        with warnings.catch_warnings():
            # The SCD's UIDs break the UI value rules; pydicom warns on every file.
            warnings.simplefilter("ignore", UserWarning)
            dataset = pydicom.dcmread(path, stop_before_pixels=not with_pixels)
        missing = [tag for tag in _REQUIRED_TAGS if tag not in dataset]
        if with_pixels and not missing:
            _ = dataset.pixel_array  # decode now: a truncated file fails here, named
    except _DICOM_ERRORS as err:
        raise DatasetError(
            f"{path}: cannot read the DICOM image ({type(err).__name__}: "
            f"{err}); expected a complete DICOM file, it may be corrupt or "
            f"truncated"
        ) from err
    if missing:
        raise DatasetError(
            f"{path}: DICOM image lacks {', '.join(missing)}; expected the "
            f"geometry and timing tags {', '.join(_REQUIRED_TAGS)}"
        )
    return dataset


@dataclass(frozen=True)
class SliceGeometry:
    """How a study's images group into slices: base → apex order, spacing and the LPS
    directions of the stored rows, columns and slices (ImageOrientationPatient)."""

    slice_of: dict[int, int]  # InstanceNumber → slice index (0 = base)
    positions: np.ndarray  # (Z,) mm along the apex-pointing normal
    spacing: tuple[float, float, float]  # (dz, dy, dx)
    note: str  # why the order is not from geometry, or ""
    directions: tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, columns, slices (LPS)


def slice_geometry(images: list[tuple[Path, pydicom.Dataset]]) -> SliceGeometry:
    """Group images into slices from ImagePositionPatient / ImageOrientationPatient."""
    first_path, first = images[0]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    pixel_spacing = tuple(float(v) for v in first.PixelSpacing)
    file_of: dict[int, Path] = {}
    for path, image in images:
        instance = int(image.InstanceNumber)
        if instance in file_of:
            raise DatasetError(
                f"{path}: InstanceNumber {instance} is also in {file_of[instance]}; "
                f"expected one image per InstanceNumber (contours refer to it)"
            )
        file_of[instance] = path
        if not np.allclose(
            np.asarray(image.ImageOrientationPatient, float), orientation, atol=1e-3
        ):
            raise DatasetError(
                f"{path}: ImageOrientationPatient differs from {first_path}; "
                f"expected one short-axis stack with one orientation"
            )
        if tuple(float(v) for v in image.PixelSpacing) != pixel_spacing:
            raise DatasetError(
                f"{path}: PixelSpacing {list(image.PixelSpacing)} differs from "
                f"{first_path} {list(pixel_spacing)}; expected one spacing"
            )
    normal = np.cross(orientation[:3], orientation[3:])
    towards_apex = slice_axis_points_to_apex(normal)
    note = slice_order_note(normal, str(first_path.parent)) if towards_apex is None else ""
    sign = -1.0 if towards_apex is False else 1.0
    projected = {
        int(image.InstanceNumber): sign
        * float(np.asarray(image.ImagePositionPatient, float) @ normal)
        for _, image in images
    }
    positions = _cluster(sorted(projected.values()))
    slice_of = {
        instance: int(np.argmin(np.abs(positions - p))) for instance, p in projected.items()
    }
    gaps = np.diff(positions)
    dz = float(np.median(gaps)) if gaps.size else float(first.get("SliceThickness", 1.0))
    if gaps.size and np.abs(gaps - dz).max() > SLICE_GAP_TOLERANCE * dz:
        raise DatasetError(
            f"{first_path.parent}: slice positions {np.round(positions, 2)} "
            f"are not evenly spaced; expected a gap of about {dz:.2f} mm "
            f"between all neighbouring slices (is a slice missing?)"
        )
    # DICOM: the first three cosines are the direction of increasing column index
    return SliceGeometry(
        slice_of=slice_of,
        positions=positions,
        spacing=(dz, pixel_spacing[0], pixel_spacing[1]),
        note=note,
        directions=(orientation[3:], orientation[:3], sign * normal),
    )


def _cluster(sorted_positions: list[float]) -> np.ndarray:
    """Distinct slice positions: sorted values closer than the tolerance are one slice."""
    groups: list[list[float]] = [[sorted_positions[0]]]
    for position in sorted_positions[1:]:
        if position - groups[-1][-1] < SLICE_POSITION_TOLERANCE_MM:
            groups[-1].append(position)
        else:
            groups.append([position])
    return np.array([np.mean(g) for g in groups])


@dataclass(frozen=True)
class SunnybrookOptions(SplitOptions):
    """``split``, ``stratify`` and ``inconsistent_contours`` (`INCONSISTENT_CHOICES`: refuse a
    study whose endocardial contour leaves its epicardial one, or load it without MYO)."""

    inconsistent_contours: str = "refuse"

    def __post_init__(self) -> None:
        if self.inconsistent_contours not in INCONSISTENT_CHOICES:
            raise ValueError(
                f"option {INCONSISTENT_OPTION}={self.inconsistent_contours!r}; "
                f"expected one of {', '.join(INCONSISTENT_CHOICES)}"
            )


@DATASETS.register
class SunnybrookDataset(DatasetAdapter):
    """Sunnybrook Cardiac Data (see module docstring)."""

    name = "sunnybrook"
    options_class = SunnybrookOptions
    where_to_get = (
        "The Sunnybrook Cardiac Data (CC0) come from the Cardiac Atlas Project "
        "(cardiacatlas.org, 'Sunnybrook Cardiac Data'); pass --root DIR, DIR holding "
        "images/<SCD id>/*.dcm, contours/<SC-... id>/i-contours/*-icontour-manual.txt (and "
        "o-contours/) and link.csv (patient_id,original_id). A cmrbench checkout's tests read "
        "four studies from ../shared/data/sunnybrook"
    )

    @cached_property
    def _links(self) -> dict[str, str]:
        """Image folder id → contour folder id, from ``link.csv``."""
        root = Path(str(self.root))
        path = root / LINK_FILE
        if not path.is_file():
            state = "holds no link.csv" if has_files(root) else "is empty"
            raise DatasetError(
                f"Sunnybrook root {root} {state}; expected {path} mapping "
                f"images/<patient_id>/ to contours/<original_id>/"
            )
        try:
            table = pd.read_csv(path, dtype=str)
        except (ValueError, OSError, pd.errors.ParserError) as err:
            raise DatasetError(f"{path}: cannot read ({err})") from err
        if not set(LINK_COLUMNS) <= set(table.columns):
            raise DatasetError(
                f"{path}: columns {list(table.columns)}; expected {', '.join(LINK_COLUMNS)}"
            )
        if table.empty:
            raise DatasetError(f"{path}: the dataset is empty; expected one row per study")
        return {str(r.patient_id).strip(): str(r.original_id).strip() for r in table.itertuples()}

    def subject_ids(self) -> list[str]:
        return sorted(self._links)

    def _image_files(self, subject_id: str) -> list[Path]:
        root = Path(str(self.root))
        if subject_id not in self._links:
            raise DatasetError(f"{root / LINK_FILE}: no study {subject_id!r}")
        folder = root / "images" / subject_id
        files = sorted(folder.glob("*.dcm"))
        if not files:
            raise DatasetError(f"{folder}: no *.dcm images; expected the study's DICOM files")
        return files

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        header = read_dicom(self._image_files(subject_id)[0], with_pixels=False)
        return self._meta(subject_id, header)

    def _meta(self, subject_id: str, header: pydicom.Dataset) -> dict[str, Any]:
        original = self._links[subject_id]
        dicom_manufacturer = str(header.get("Manufacturer", ""))
        letter, manufacturer = vendor_letter(dicom_manufacturer)
        field = header.get("MagneticFieldStrength")
        return {
            "dataset": self.name,
            "vendor": letter,
            "manufacturer": manufacturer,
            "dicom_manufacturer": dicom_manufacturer,
            "manufacturer_model": str(header.get("ManufacturerModelName", "")),
            "field_strength": float(field) if field is not None else None,
            "centre": SUNNYBROOK_CENTRE,
            "pathology": re.sub(r"^SC-|-\d+$", "", original),
            "original_id": original,
        }

    def load(self, subject_id: str) -> Subject:
        images = [(path, read_dicom(path)) for path in self._image_files(subject_id)]
        geometry = slice_geometry(images)
        cine, frame_of = _stack(images, geometry)
        contour_dir = self._contour_dir(subject_id)
        self._check_not_a_copy(subject_id)
        contours = _read_contours(contour_dir, geometry.slice_of, frame_of)
        notes = [geometry.note] if geometry.note else []
        try:
            _check_enclosure(contours)
        except DatasetError as err:
            if self.options.get(INCONSISTENT_OPTION, "refuse") == "refuse":
                raise DatasetError(
                    f"{err}. To load the study without its myocardium, delete "
                    f"{contour_dir / CONTOUR_KINDS['o']} or pass --option "
                    f"{INCONSISTENT_OPTION}=drop_myo"
                ) from None
            contours = {"i": contours["i"], "o": {}}
            notes.append(f"{err}; the o-contours are dropped ({INCONSISTENT_OPTION}=drop_myo)")
        ed, es = _ed_es(contours, contour_dir)
        if not contours["o"]:
            notes.append(
                f"{contour_dir}: no o-contours, so MYO is not annotated (n/a, never "
                f"background); ED is the i-contoured phase with the larger LV area"
            )
        labels, annotated = _labels(contours, ed, es, cine.shape[1:])
        meta = self._meta(subject_id, images[0][1])
        meta.update(notes=notes, slice_order="stored" if geometry.note else "geometry")
        stored = Subject(
            id=subject_id,
            cine=cine,
            spacing=geometry.spacing,
            labels=labels,
            ed=ed,
            es=es,
            annotated=annotated,
            meta=meta,
            source=str(images[0][0].parent),
        )
        return in_network_layout(stored, *geometry.directions)

    def _contour_dir(self, subject_id: str) -> Path:
        return Path(str(self.root)) / "contours" / self._links[subject_id]

    @cached_property
    def _fingerprints(self) -> dict[str, str | None]:
        """Study id → `contour_fingerprint` of its contour folder."""
        return {s: contour_fingerprint(self._contour_dir(s)) for s in self.subject_ids()}

    def _check_not_a_copy(self, subject_id: str) -> None:
        """`DatasetError` if ``subject_id``'s contours repeat an earlier study's (or share
        its contour folder)."""
        own = self._fingerprints[subject_id]
        for other in self.subject_ids():
            same_folder = self._links[other] == self._links[subject_id]
            if (
                other != subject_id
                and own is not None
                and self._fingerprints[other] == own
                and (other < subject_id or same_folder)
            ):
                raise DatasetError(
                    f"{self._contour_dir(subject_id)}: the contour files of study "
                    f"{subject_id} are byte copies of those of study {other} "
                    f"({self._contour_dir(other)}); expected each study's own contours "
                    f"(check {Path(str(self.root)) / LINK_FILE})"
                )

    def default_split(self) -> dict[str, list[str]]:
        override = split_option(self.options, self.subject_ids(), self.name)
        if override is not None:
            return override
        ids = self.subject_ids()
        if len(ids) < 3:
            raise DatasetError(
                f"{self.root}: {len(ids)} studies; the default split needs at "
                f"least 3 (train, val, test); pass split={{...}} instead"
            )
        n_holdout = max(1, len(ids) // 4)
        return {
            "train": ids[: len(ids) - 2 * n_holdout],
            "val": ids[len(ids) - 2 * n_holdout : len(ids) - n_holdout],
            "test": ids[len(ids) - n_holdout :],
        }


def _stack(
    images: list[tuple[Path, pydicom.Dataset]], geometry: SliceGeometry
) -> tuple[np.ndarray, dict[int, int]]:
    """cine float32 ``(T, Z, H, W)`` and InstanceNumber → frame, phases by TriggerTime."""
    by_slice: dict[int, list[tuple[Path, pydicom.Dataset]]] = {}
    for path, image in images:
        by_slice.setdefault(geometry.slice_of[int(image.InstanceNumber)], []).append((path, image))
    counts = {z: len(v) for z, v in sorted(by_slice.items())}
    if len(set(counts.values())) != 1:
        raise DatasetError(
            f"{images[0][0].parent}: slices have different numbers of phases "
            f"{counts}; expected every slice to have the same number"
        )
    n_frames, n_slices = next(iter(counts.values())), len(counts)
    shape = images[0][1].pixel_array.shape
    cine = np.empty((n_frames, n_slices, *shape), dtype=np.float32)
    frame_of: dict[int, int] = {}
    for z, members in by_slice.items():
        members.sort(key=lambda m: (float(m[1].TriggerTime), int(m[1].InstanceNumber)))
        for t, (path, image) in enumerate(members):
            pixels = image.pixel_array
            if pixels.shape != shape:
                raise DatasetError(
                    f"{path}: image is {pixels.shape} pixels; expected {shape} like {images[0][0]}"
                )
            slope = float(image.get("RescaleSlope", 1.0))
            intercept = float(image.get("RescaleIntercept", 0.0))
            cine[t, z] = pixels.astype(np.float32) * slope + intercept
            frame_of[int(image.InstanceNumber)] = t
    return cine, frame_of


@dataclass(frozen=True)
class Contour:
    """One contour file's ``(N, 2)`` ``x y`` points, with its path for error messages."""

    path: Path
    points: np.ndarray


Contours = dict[str, dict[tuple[int, int], Contour]]  # "i"|"o" → (frame, slice) → contour


def _read_contours(
    contour_dir: Path, slice_of: dict[int, int], frame_of: dict[int, int]
) -> Contours:
    """``{"i"|"o": {(frame, slice): Contour}}`` from the study's contour folders."""
    if not contour_dir.is_dir():
        raise DatasetError(
            f"{contour_dir}: missing; expected the study's contour folder with "
            f"i-contours/ and o-contours/"
        )
    contours: Contours = {"i": {}, "o": {}}
    for kind, folder in CONTOUR_KINDS.items():
        for path in sorted((contour_dir / folder).glob(f"*-{kind}contour-manual.txt")):
            match = _CONTOUR_FILE.match(path.name)
            if match is None:
                raise DatasetError(
                    f"{path}: unexpected contour file name; expected "
                    f"IM-0001-NNNN-{kind}contour-manual.txt"
                )
            instance = int(match.group(1))
            if instance not in slice_of:
                raise DatasetError(
                    f"{path}: names image InstanceNumber {instance}, which is "
                    f"not in the study; expected a contour of one of its images"
                )
            contours[kind][(frame_of[instance], slice_of[instance])] = Contour(
                path, read_contour(path)
            )
    return contours


def _check_enclosure(contours: Contours) -> None:
    """`DatasetError` naming both files if an i-contour leaves its image's o-contour by more
    than `CONTOUR_ENCLOSE_TOLERANCE_PX`."""
    for key, outer in sorted(contours["o"].items()):
        inner = contours["i"].get(key)
        if inner is None:
            continue
        distance = outside_distance(inner.points, outer.points)
        if distance > CONTOUR_ENCLOSE_TOLERANCE_PX:
            raise DatasetError(
                f"{inner.path}: the endocardial contour reaches {distance:.1f} px "
                f"outside the epicardial contour {outer.path}; expected it inside "
                f"(within {CONTOUR_ENCLOSE_TOLERANCE_PX} px)"
            )


def _ed_es(contours: Contours, contour_dir: Path) -> tuple[int, int]:
    """ED = the phase with o-contours; ES = the other phase with i-contours. Without any
    o-contour, ED is the i-contoured phase whose contours enclose the larger area (the
    larger LV volume, as the study tells ED from ES on M&Ms)."""
    o_frames = sorted({f for f, _ in contours["o"]})
    i_frames = sorted({f for f, _ in contours["i"]})
    if not o_frames and len(i_frames) == 2:
        area = {
            f: sum(polygon_area(c.points) for (g, _), c in contours["i"].items() if g == f)
            for f in i_frames
        }
        ed = max(i_frames, key=lambda f: area[f])
        return ed, next(f for f in i_frames if f != ed)
    if len(o_frames) != 1:
        raise DatasetError(
            f"{contour_dir / CONTOUR_KINDS['o']}: o-contours in frames "
            f"{o_frames}; expected exactly one frame (end-diastole), or none"
        )
    ed = o_frames[0]
    others = [f for f in i_frames if f != ed]
    if ed not in i_frames or len(others) != 1:
        raise DatasetError(
            f"{contour_dir / CONTOUR_KINDS['i']}: i-contours in frames "
            f"{i_frames}; expected two frames, ED {ed} (the o-contoured frame) "
            f"and ES"
        )
    return ed, others[0]


def polygon_area(points_xy: np.ndarray) -> float:
    """Area (pixels²) of the closed polygon ``points_xy`` ``(N, 2)`` (shoelace formula)."""
    x, y = np.asarray(points_xy, dtype=np.float64).T
    return 0.5 * abs(float(x @ np.roll(y, -1) - y @ np.roll(x, -1)))


def _labels(
    contours: Contours, ed: int, es: int, volume_shape: tuple[int, int, int]
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Filled label volumes ``(Z, H, W)`` and ``annotated`` ``(NUM_CLASSES, Z)`` at ED and ES."""
    n_slices, height, width = volume_shape
    labels, annotated = {}, {}
    for frame in (ed, es):
        label = np.zeros(volume_shape, dtype=np.uint8)
        known = np.zeros((NUM_CLASSES, n_slices), dtype=bool)
        for z in range(n_slices):
            inner = contours["i"].get((frame, z))
            outer = contours["o"].get((frame, z)) if frame == ed else None
            if inner is None:
                continue
            blood_pool = fill_polygon(inner.points, (height, width))
            if outer is not None:
                label[z][fill_polygon(outer.points, (height, width)) & ~blood_pool] = MYO
                known[MYO, z] = True
            label[z][blood_pool] = LV
            known[LV, z] = True
        known[BACKGROUND] = known[1:].any(axis=0)
        labels[frame], annotated[frame] = label, known
    return labels, annotated
