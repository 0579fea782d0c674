"""Writers of tiny datasets in each adapter's on-disk layout, for the dataset tests.

Every writer starts from the subject the adapter should return — a `CanonicalSubject`: cine
``(T, Z, H, W)`` with slices base → apex and labels 0 bg, 1 LV, 2 MYO, 3 RV — and stores it
the way the dataset does: NIfTI arrays ``(X, Y, Z[, T])`` with W along X and H along Y, slices
in the order the affine implies, labels in the dataset's own convention, frame numbers in the
dataset's own base. Tests then compare what the adapter loads with the canonical arrays.

Sizes: 5 frames, 4 slices, 12 × 16 pixels (H ≠ W, so a swapped transpose shows) and spacing
(dz, dy, dx) = (10, 1.5, 1.25) mm (anisotropic, so swapped spacings show).

``oblique_affine(towards_apex=False)`` stores the slices apex → base (the adapter must flip);
the Sunnybrook writer makes DICOM files whose names and InstanceNumbers are shuffled with
respect to slice and phase, so grouping must come from the headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

N_FRAMES, N_SLICES, HEIGHT, WIDTH = 5, 4, 12, 16
SPACING_ZYX = (10.0, 1.5, 1.25)
# Canonical class → stored value.
ACDC_STORED = {0: 0, 1: 3, 2: 2, 3: 1}
MNMS_STORED = {0: 0, 1: 1, 2: 2, 3: 3}
APEX_RAS = np.array([-1.0, 1.0, -1.0]) / np.sqrt(3.0)
APEX_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)


@dataclass
class CanonicalSubject:
    """What an adapter should return: cine ``(T, Z, H, W)``, labels per 0-based frame."""

    cine: np.ndarray
    labels: dict[int, np.ndarray]
    ed: int
    es: int


def class_boxes(z: int, frame_offset: int) -> dict[int, tuple[slice, slice]]:
    """Rows/columns of each class on slice ``z``: a distinct box per class, moving with z.

    The LV box narrows from base (z = 0) to apex, so a slice flip changes every slice.
    """
    lv_cols = slice(2, 10 - 2 * z - frame_offset)
    return {
        1: (slice(2, 5), lv_cols),
        2: (slice(6, 8), slice(3 + z, 9 + z)),
        3: (slice(9, 11), slice(10, 14 + (z % 2))),
    }


def canonical_subject(seed: int, ed: int, es: int) -> CanonicalSubject:
    """A subject with a distinct value in every voxel and label boxes at ``ed`` and ``es``."""
    rng = np.random.default_rng(seed)
    cine = rng.integers(0, 1000, size=(N_FRAMES, N_SLICES, HEIGHT, WIDTH)).astype(np.float32)
    labels = {}
    for frame, offset in ((ed, 0), (es, 1)):
        label = np.zeros((N_SLICES, HEIGHT, WIDTH), dtype=np.uint8)
        for z in range(N_SLICES):
            for cls, (rows, cols) in class_boxes(z, offset).items():
                label[z, rows, cols] = cls
        labels[frame] = label
    return CanonicalSubject(cine=cine, labels=labels, ed=ed, es=es)


TILTED_APEX_LPS = APEX_LPS + np.array([0.15, -0.05, 0.1])


def network_frame(
    apex: np.ndarray = TILTED_APEX_LPS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS directions of a short-axis stack in the network's layout: rows, columns (the
    in-plane direction closest to posterior) and slices (towards ``apex``, by default the
    apex direction slightly tilted: a double-oblique stack); ``rows × columns = slices``."""
    apex = np.asarray(apex, dtype=np.float64) / np.linalg.norm(apex)
    posterior = np.array([0.0, 1.0, 0.0])
    cols = posterior - (posterior @ apex) * apex
    cols /= np.linalg.norm(cols)
    return np.cross(cols, apex), cols, apex


def lps_to_ras(direction: np.ndarray) -> np.ndarray:
    """A DICOM (LPS+) direction in NIfTI's RAS+ frame."""
    return np.asarray(direction, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])


def oblique_affine(
    towards_apex: bool,
    spacing_zyx: tuple[float, float, float] = SPACING_ZYX,
    origin: tuple[float, float, float] = (-20.0, 30.0, 15.0),
) -> np.ndarray:
    """A double-oblique RAS affine whose slice axis k points towards (or away from) the apex
    and whose i (W) and j (H) axes are already the network's columns and rows (`network_frame`),
    so that a canonical subject stored with it loads unchanged."""
    rows, cols, apex = network_frame()
    dz, dy, dx = spacing_zyx
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = lps_to_ras(cols) * dx, lps_to_ras(rows) * dy
    affine[:3, 2] = lps_to_ras(apex if towards_apex else -apex) * dz
    affine[:3, 3] = origin
    return affine


def diagonal_affine(spacing_zyx: tuple[float, float, float] = SPACING_ZYX) -> np.ndarray:
    """An affine with no orientation (as converters that drop it write)."""
    dz, dy, dx = spacing_zyx
    return np.diag([dx, dy, dz, 1.0])


def stores_apex_first(affine: np.ndarray) -> bool:
    """Whether data written with ``affine`` must hold the slices apex → base."""
    k = affine[:3, 2]
    oblique = np.abs(k / np.linalg.norm(k)).max() < 1 - 1e-4
    return bool(oblique and k @ APEX_RAS < 0)


def stored_volume(volume_zhw: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Canonical ``(Z, H, W)`` → stored ``(X, Y, Z)``."""
    if stores_apex_first(affine):
        volume_zhw = volume_zhw[::-1]
    return np.ascontiguousarray(volume_zhw.transpose(2, 1, 0))


def stored_cine(cine_tzhw: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Canonical ``(T, Z, H, W)`` → stored ``(X, Y, Z, T)``."""
    if stores_apex_first(affine):
        cine_tzhw = cine_tzhw[:, ::-1]
    return np.ascontiguousarray(cine_tzhw.transpose(3, 2, 1, 0))


def encode_labels(label: np.ndarray, stored: dict[int, int]) -> np.ndarray:
    """Canonical label values → the dataset's stored values."""
    lookup = np.array([stored[c] for c in range(4)], dtype=np.uint8)
    return lookup[label]


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Save ``data`` with ``affine`` (sform and qform) as ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def write_acdc_patient(
    folder: Path, subject: CanonicalSubject, group: str, affine: np.ndarray
) -> Path:
    """One ACDC ``patientXXX/`` folder: Info.cfg (1-based frames), 4d, frame and _gt files."""
    patient = folder.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.cfg").write_text(
        f"ED: {subject.ed + 1}\nES: {subject.es + 1}\nGroup: {group}\nHeight: 170.0\n"
        f"NbFrame: {subject.cine.shape[0]}\nWeight: 70.0\n"
    )
    write_nifti(folder / f"{patient}_4d.nii.gz", stored_cine(subject.cine, affine), affine)
    for frame, label in subject.labels.items():
        stem = folder / f"{patient}_frame{frame + 1:02d}"
        write_nifti(Path(f"{stem}.nii.gz"), stored_volume(subject.cine[frame], affine), affine)
        write_nifti(
            Path(f"{stem}_gt.nii.gz"),
            stored_volume(encode_labels(label, ACDC_STORED), affine),
            affine,
        )
    return folder


def write_acdc_info_only(folder: Path, group: str) -> None:
    """A patient folder holding only Info.cfg (enough for ids, meta and the default split)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.cfg").write_text(f"ED: 1\nES: 3\nGroup: {group}\nNbFrame: 5\n")


# Info.cfg's group names, in the order of the official training ids (001–020 DCM, ...,
# 081–100 RV); the adapter reports "RV" (abnormal right ventricle) as "ARV".
ACDC_INFO_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def write_acdc_official(
    root: Path, train_per_group: int, test_per_group: int, full: bool = False
) -> dict[str, str]:
    """ACDC's official layout under ``root``: ``training/patient001...`` in one block per
    group (as released), ``testing/patient101...`` dealt over the groups in turn.

    ``full``: whole patients (`canonical_subject`, base → apex oblique affine); otherwise
    Info.cfg only. Returns patient id → Info.cfg group.
    """
    groups = {}
    for g, group in enumerate(ACDC_INFO_GROUPS):
        for k in range(train_per_group):
            groups[f"patient{g * train_per_group + k + 1:03d}"] = group
    for k in range(test_per_group * len(ACDC_INFO_GROUPS)):
        groups[f"patient{101 + k:03d}"] = ACDC_INFO_GROUPS[k % len(ACDC_INFO_GROUPS)]
    for patient, group in groups.items():
        number = int(patient[-3:])
        folder = root / ("testing" if number >= 101 else "training") / patient
        if full:
            write_acdc_patient(
                folder, canonical_subject(number, ed=0, es=2), group, oblique_affine(True)
            )
        else:
            write_acdc_info_only(folder, group)
    return groups


MNMS_CSV_HEADER = ",External code,VendorName,Vendor,Centre,ED,ES,Age,Pathology,Sex,Height,Weight"


def write_mnms_subject(folder: Path, subject: CanonicalSubject, affine: np.ndarray) -> Path:
    """``<ID>/<ID>_sa.nii.gz`` and ``<ID>_sa_gt.nii.gz`` (labels at ED and ES only)."""
    code = folder.name
    write_nifti(folder / f"{code}_sa.nii.gz", stored_cine(subject.cine, affine), affine)
    gt = np.zeros(subject.cine.shape, dtype=np.uint8)
    for frame, label in subject.labels.items():
        gt[frame] = encode_labels(label, MNMS_STORED)
    write_nifti(folder / f"{code}_sa_gt.nii.gz", stored_cine(gt, affine), affine)
    return folder


def mnms_csv_row(
    index: int,
    code: str,
    vendor_name: str,
    vendor: str,
    centre: int,
    ed: int,
    es: int,
    pathology: str,
) -> str:
    """One row of the M&Ms info CSV (ED and ES 0-based, as in the official file)."""
    return f"{index},{code},{vendor_name},{vendor},{centre},{ed},{es},50,{pathology},M,170,70"


def write_mnms2_subject(
    folder: Path, subject: CanonicalSubject, affine: np.ndarray, ed_noise: float = 0.0
) -> Path:
    """``<NNN>/<NNN>_SA_CINE``, ``_SA_ED(_gt)``, ``_SA_ES(_gt)``; ``ed_noise`` perturbs _SA_ED."""
    number = folder.name
    write_nifti(folder / f"{number}_SA_CINE.nii.gz", stored_cine(subject.cine, affine), affine)
    for phase, frame in (("ED", subject.ed), ("ES", subject.es)):
        image = subject.cine[frame]
        if phase == "ED" and ed_noise:
            image = image + np.random.default_rng(0).normal(0, ed_noise, image.shape)
        write_nifti(
            folder / f"{number}_SA_{phase}.nii.gz",
            stored_volume(image.astype(np.float32), affine),
            affine,
        )
        write_nifti(
            folder / f"{number}_SA_{phase}_gt.nii.gz",
            stored_volume(encode_labels(subject.labels[frame], MNMS_STORED), affine),
            affine,
        )
    return folder


MNMS2_CSV_HEADER = "SUBJECT_CODE,DISEASE,SEX,AGE,VENDOR,SCANNER,FIELD"


# --- one heart, stored in several layouts -----------------------------------------------

# Layout name (nibabel's axis codes of the file) → (where the heart's apex points, which
# network axis and sign the stored axes i and j hold). k always holds the slices apex first.
# The heart sits in the patient with its RV anterior; its long axis points to the feet in the
# LPS and RPS files and to the patient's left in the PIR file (a short-axis plane close to
# sagittal, as some M&Ms vendors store it). RPS is LPS with the i axis mirrored.
POSED_LAYOUTS: dict[str, tuple[np.ndarray, tuple[str, int], tuple[str, int]]] = {
    "LPS": (np.array([0.3, -0.25, -1.0]), ("rows", -1), ("cols", 1)),
    "RPS": (np.array([0.3, -0.25, -1.0]), ("rows", 1), ("cols", 1)),
    "PIR": (np.array([1.0, -0.25, -0.3]), ("cols", 1), ("rows", 1)),
}


def posed_arrays(volume: np.ndarray, layout: str) -> np.ndarray:
    """Canonical ``(..., Z, H, W)`` → stored ``(..., Z, X, Y)`` of ``layout`` (slices apex first,
    then i and j as `POSED_LAYOUTS` says)."""
    _, (i_axis, i_sign), (_, j_sign) = POSED_LAYOUTS[layout]
    stored = volume[..., ::-1, :, :]
    if i_axis == "cols":
        stored = np.swapaxes(stored, -1, -2)
    if i_sign < 0:
        stored = stored[..., ::-1, :]
    if j_sign < 0:
        stored = stored[..., ::-1]
    return np.ascontiguousarray(stored)


def posed_affine(layout: str, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """The RAS affine of `posed_arrays` data: each stored axis's world direction × spacing."""
    apex, i_spec, j_spec = POSED_LAYOUTS[layout]
    rows, cols, apex = network_frame(apex)
    dz, dy, dx = spacing_zyx
    axes = {"rows": (rows, dy), "cols": (cols, dx)}
    affine = np.eye(4)
    for column, (axis, sign) in enumerate((i_spec, j_spec)):
        direction, step = axes[axis]
        affine[:3, column] = lps_to_ras(sign * direction) * step
    affine[:3, 2] = lps_to_ras(-apex) * dz
    affine[:3, 3] = (12.0, -30.0, 40.0)
    return affine


def write_posed_mnms_subject(
    folder: Path, subject: CanonicalSubject, spacing_zyx: tuple[float, float, float], layout: str
) -> Path:
    """`write_mnms_subject` in a `POSED_LAYOUTS` layout: the same heart, stored otherwise."""
    code = folder.name
    affine = posed_affine(layout, spacing_zyx)
    gt = np.zeros(subject.cine.shape, dtype=np.uint8)
    for frame, label in subject.labels.items():
        gt[frame] = encode_labels(label, MNMS_STORED)
    for suffix, volume in (("sa", subject.cine), ("sa_gt", gt)):
        write_nifti(
            folder / f"{code}_{suffix}.nii.gz",
            posed_arrays(volume, layout).transpose(2, 3, 1, 0),
            affine,
        )
    return folder


def rotate_sunnybrook_study(root: Path, study: str) -> None:
    """Store a Sunnybrook study under ``root`` turned by 90 degrees: every image's pixels
    rotated (``np.rot90``), ImageOrientationPatient, ImagePositionPatient and PixelSpacing
    rewritten so that every pixel keeps its place in the patient, and the contours' points
    moved with their pixels. The study's anatomy is unchanged; only its storage differs."""
    for path in sorted((root / "images" / study).glob("*.dcm")):
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
        height, width = pixels.shape
        row_cosines = np.asarray(dataset.ImageOrientationPatient[:3], dtype=np.float64)
        column_cosines = np.asarray(dataset.ImageOrientationPatient[3:], dtype=np.float64)
        row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
        # rot90: new pixel (r, c) = old (c, W - 1 - r); new pixel (0, 0) = old (0, W - 1)
        origin = (
            np.asarray(dataset.ImagePositionPatient, dtype=np.float64)
            + (width - 1) * column_spacing * row_cosines
        )
        dataset.ImagePositionPatient = [float(v) for v in origin]
        dataset.ImageOrientationPatient = [float(v) for v in (*column_cosines, *(-row_cosines))]
        dataset.PixelSpacing = [column_spacing, row_spacing]
        dataset.Rows, dataset.Columns = width, height
        dataset.PixelData = np.ascontiguousarray(np.rot90(pixels)).tobytes()
        dataset.save_as(path)
    link = {
        line.split(",")[0]: line.split(",")[1]
        for line in (root / "link.csv").read_text().splitlines()[1:]
    }
    for contour in (root / "contours" / link[study]).glob("*-contours/*.txt"):
        points = np.loadtxt(contour, ndmin=2)
        width = _image_width(root / "images" / study)
        np.savetxt(contour, np.stack([points[:, 1], width - 1 - points[:, 0]], axis=1), fmt="%.2f")


def _image_width(folder: Path) -> int:
    """Columns of the (now rotated) images of a study folder: the stored rows before."""
    return int(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).Rows)


# --- Sunnybrook (DICOM) -----------------------------------------------------------------

SUNNYBROOK_PIXEL_SPACING = (1.5, 1.25)  # (row spacing dy, column spacing dx)
SUNNYBROOK_SLICE_GAP = 8.0


def sunnybrook_orientation() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, normal) LPS cosines of an oblique stack whose normal points to the base:
    ImageOrientationPatient's row cosines (the direction of increasing column index) are the
    network's columns, its column cosines the network's rows (`network_frame`), so a
    canonical subject loads unchanged."""
    rows, cols, apex = network_frame(APEX_LPS + np.array([0.1, -0.05, 0.2]))
    return cols, rows, -apex


def write_sunnybrook_study(
    root: Path,
    image_id: str,
    contour_id: str,
    cine: np.ndarray,
    ed: int,
    es: int,
    contours: dict[tuple[str, int, int], np.ndarray],
    seed: int = 0,
) -> dict[tuple[int, int], int]:
    """One study: ``images/<image_id>/*.dcm`` and ``contours/<contour_id>/{i,o}-contours``.

    ``cine`` is canonical ``(T, Z, H, W)`` (slice 0 = base); ``contours`` maps
    ``(kind, frame, slice)`` to ``(N, 2)`` x y points. InstanceNumbers and file names are
    shuffled. Returns ``(frame, slice) → InstanceNumber``.
    """
    n_frames, n_slices, height, width = cine.shape
    row, column, normal = sunnybrook_orientation()
    rng = np.random.default_rng(seed)
    instances = rng.permutation(n_frames * n_slices) + 1
    file_numbers = rng.permutation(n_frames * n_slices) + 1
    image_dir = root / "images" / image_id
    image_dir.mkdir(parents=True, exist_ok=True)
    instance_of = {}
    for index, (t, z) in enumerate((t, z) for z in range(n_slices) for t in range(n_frames)):
        # The normal points to the base, so the base (z = 0) has the largest projection.
        position = np.array([10.0, -40.0, 25.0]) - normal * SUNNYBROOK_SLICE_GAP * z
        instance_of[(t, z)] = int(instances[index])
        write_dicom_image(
            image_dir / f"{file_numbers[index]}.dcm",
            cine[t, z],
            instance=int(instances[index]),
            trigger_time=30.0 * t + 5.0,
            position=position,
            row=row,
            column=column,
        )
    for (kind, t, z), points in contours.items():
        folder = root / "contours" / contour_id / f"{kind}-contours"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"IM-0001-{instance_of[(t, z)]:04d}-{kind}contour-manual.txt"
        np.savetxt(folder / name, points, fmt="%.2f")
    link = root / "link.csv"
    lines = link.read_text().splitlines() if link.is_file() else ["patient_id,original_id"]
    link.write_text("\n".join([*lines, f"{image_id},{contour_id}"]) + "\n")
    return instance_of


def write_dicom_image(
    path: Path,
    pixels: np.ndarray,
    instance: int,
    trigger_time: float,
    position: np.ndarray,
    row: np.ndarray,
    column: np.ndarray,
) -> Path:
    """A minimal MR DICOM image with the geometry and timing tags the adapter reads."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "SIGNA HDx"
    ds.MagneticFieldStrength = 1.5
    ds.InstanceNumber = instance
    ds.TriggerTime = trigger_time
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in (*row, *column)]
    ds.PixelSpacing = list(SUNNYBROOK_PIXEL_SPACING)
    ds.SliceThickness = SUNNYBROOK_SLICE_GAP
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Closed axis-aligned polygon with corners ``(x0, y0)`` and ``(x1, y1)``."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` to ``keep`` of its bytes (a download that stopped half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


NNUNET_ACDC_LABELS = {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}  # nnU-Net's Dataset027


def write_nnunet_case(
    root: Path,
    folder: str,
    case: str,
    image: np.ndarray,
    label: np.ndarray | None,
    affine: np.ndarray,
    stored: dict[int, int],
) -> None:
    """One nnU-Net v2 case: ``images<folder>/<case>_0000.nii.gz`` and, given a canonical
    ``label``, ``labels<folder>/<case>.nii.gz`` in the ``stored`` convention."""
    write_nifti(
        root / f"images{folder}" / f"{case}_0000.nii.gz", stored_volume(image, affine), affine
    )
    if label is not None:
        write_nifti(
            root / f"labels{folder}" / f"{case}.nii.gz",
            stored_volume(encode_labels(label, stored), affine),
            affine,
        )


def write_nnunet_json(root: Path, labels: dict[str, int]) -> None:
    """``dataset.json`` with ``numTraining`` counted from ``imagesTr``."""
    n_training = len(list((root / "imagesTr").glob("*_0000.nii.gz")))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "cineMRI"},
                "labels": labels,
                "numTraining": n_training,
                "file_ending": ".nii.gz",
            }
        )
    )


def write_nnunet_subject(
    root: Path,
    folder: str,
    subject_id: str,
    subject: CanonicalSubject,
    affine: np.ndarray,
    labelled: bool = True,
    naming: str = "frame",
) -> None:
    """A subject's ED and ES frames as two cases, named ``<id>_frame<NN>`` (1-based) or
    ``<id>_ED`` / ``<id>_ES``, labelled in nnU-Net's ACDC convention (1 RV, 2 MLV, 3 LVC)."""
    for phase, frame in (("ED", subject.ed), ("ES", subject.es)):
        case = (
            f"{subject_id}_frame{frame + 1:02d}" if naming == "frame" else f"{subject_id}_{phase}"
        )
        write_nnunet_case(
            root,
            folder,
            case,
            subject.cine[frame],
            subject.labels[frame] if labelled else None,
            affine,
            ACDC_STORED,
        )
