"""2D slice preprocessing as in the study, and the memory-mapped slice cache.

de Mooij et al. (arXiv 2409.18100) resample every 2D slice to 1.25 x 1.25 mm and
256 x 256 pixels in one affine resampling (bicubic image, nearest label) and z-score the
intensities with the mean and standard deviation of the subject's whole 4D stack (after
shifting the minimum to 0, which z-scoring cancels). A `Subject` arrives with its all-zero
borders cropped and its in-plane axes laid out (`cmrbench.datasets.layout`), so both the
statistics and the image centre are the cropped stack's, as the study's. ``spacing_mm`` and
``size`` are parameters so that CPU grids can use small images: the field of view is
``size * spacing_mm`` mm, centred on the image centre.

The cache holds one contiguous float16 array of slices ``(N, size, size)`` with an index
table, memory-mapped from disk (DESIGN.md): every frame of the training pool (for
pretraining) and the labelled frames of every subject (for fine-tuning and validation).
The index also holds each subject's heart centre, where the study's augmentation centres
every slice: the centre of the minimal enclosing circle of all the subject's labels
(every labelled frame and slice, projected onto the image plane), as qcardia-data's
``gt_center``, here measured on the cached label grid.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.subject import NUM_CLASSES, Subject
from cmrbench.paths import cache_dir

CACHE_VERSION = 3
_CIRCLE_TOLERANCE = 1e-7


@dataclass(frozen=True)
class Geometry:
    """Target in-plane grid: ``size`` x ``size`` pixels of ``spacing_mm``."""

    size: int
    spacing_mm: float


def _sampling_grid(
    src_hw: tuple[int, int],
    src_spacing: tuple[float, float],
    dst_hw: tuple[int, int],
    dst_spacing: tuple[float, float],
) -> torch.Tensor:
    """``grid_sample`` grid ``(1, Hd, Wd, 2)`` mapping destination pixels into the source image.

    Both grids share their centre; ``align_corners=True`` convention (pixel centres at
    -1 and 1 for the first and last pixel).
    """
    (hs, ws), (hd, wd) = src_hw, dst_hw
    ys = (torch.arange(hd, dtype=torch.float64) - (hd - 1) / 2) * dst_spacing[0] / src_spacing[0]
    xs = (torch.arange(wd, dtype=torch.float64) - (wd - 1) / 2) * dst_spacing[1] / src_spacing[1]
    gy = ys / max((hs - 1) / 2, 1e-9)
    gx = xs / max((ws - 1) / 2, 1e-9)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    return grid.float().unsqueeze(0)


def resample(
    images: torch.Tensor,
    src_spacing: tuple[float, float],
    dst_hw: tuple[int, int],
    dst_spacing: tuple[float, float],
    mode: str,
    padding: str = "zeros",
) -> torch.Tensor:
    """Resample ``(N, C, H, W)`` images to ``dst_hw`` pixels of ``dst_spacing`` mm.

    ``mode`` is ``"bicubic"`` (images, logits) or ``"nearest"`` (labels); outside the source
    image the result is 0 (``padding="zeros"``) or the nearest edge value (``"border"``).
    """
    src_h, src_w = images.shape[-2:]
    grid = _sampling_grid((src_h, src_w), src_spacing, dst_hw, dst_spacing).to(images.device)
    grid = grid.expand(images.shape[0], -1, -1, -1)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=True)


def intensity_stats(cine: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the subject's whole 4D stack after a min shift to 0
    (the shift moves the mean and leaves the standard deviation; float64 accumulation)."""
    return float(cine.mean(dtype=np.float64)) - float(cine.min()), float(cine.std(dtype=np.float64))


def zscored_maximum(cine: np.ndarray) -> float:
    """The subject's largest intensity after the z-score of `preprocess_frames` (what the
    study's solarisation mirrors against: qcardia-data's saved ``max_intensity``)."""
    mean, std = intensity_stats(cine)
    return (float(cine.max()) - float(cine.min()) - mean) / std


def preprocess_frames(subject: Subject, frames: list[int], geometry: Geometry) -> torch.Tensor:
    """Slices of ``frames`` as float32 ``(len(frames), Z, size, size)``: resampled, z-scored."""
    mean, std = intensity_stats(subject.cine)
    _, dy, dx = subject.spacing
    vol = torch.from_numpy(subject.cine[frames] - subject.cine.min())
    f, z, h, w = vol.shape
    out = resample(
        vol.reshape(f * z, 1, h, w),
        (dy, dx),
        (geometry.size,) * 2,
        (geometry.spacing_mm,) * 2,
        mode="bicubic",
    )
    return ((out - mean) / std).reshape(f, z, geometry.size, geometry.size)


def preprocess_labels(subject: Subject, frame: int, geometry: Geometry) -> torch.Tensor:
    """Label map of ``frame`` resampled with nearest neighbour: uint8 ``(Z, size, size)``."""
    _, dy, dx = subject.spacing
    lab = torch.from_numpy(subject.labels[frame]).float().unsqueeze(1)
    out = resample(lab, (dy, dx), (geometry.size,) * 2, (geometry.spacing_mm,) * 2, mode="nearest")
    return out.squeeze(1).round().to(torch.uint8)


def logits_to_original(logits: torch.Tensor, subject: Subject, geometry: Geometry) -> torch.Tensor:
    """Resample logits ``(Z, C, size, size)`` back to the subject's grid ``(Z, C, H, W)``.

    As the study (qcardia-data ``PredictionResample3Dd.inverse``): logits, not labels, are
    resampled before the argmax, bicubically (the image mode), and pixels outside the
    preprocessed field of view take the nearest edge logits (border padding).
    """
    _, dy, dx = subject.spacing
    h, w = subject.cine.shape[-2:]
    return resample(
        logits.float(),
        (geometry.spacing_mm,) * 2,
        (h, w),
        (dy, dx),
        mode="bicubic",
        padding="border",
    )


# --------------------------------------------------------------------------- heart centre


def minimal_enclosing_circle(points: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """The smallest circle ``(x, y, radius)`` holding every point of ``points`` ``(N, 2)``.

    Welzl's algorithm in its iterative form (randomised incremental, expected O(N)), the
    algorithm of the ``smallestenclosingcircle`` package that qcardia-data uses; ``seed``
    fixes the shuffle (the circle does not depend on it).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("minimal_enclosing_circle needs at least one point")
    pts = pts[np.random.default_rng(seed).permutation(len(pts))].tolist()
    circle = (pts[0][0], pts[0][1], 0.0)
    for i, p in enumerate(pts):
        if _inside(circle, p):
            continue
        circle = (p[0], p[1], 0.0)
        for j, q in enumerate(pts[:i]):
            if _inside(circle, q):
                continue
            circle = _diameter_circle(p, q)
            for r in pts[:j]:
                if not _inside(circle, r):
                    circle = _circumcircle(p, q, r)
    return circle


def _inside(circle: tuple[float, float, float], point: list[float]) -> bool:
    x, y, radius = circle
    slack = radius * _CIRCLE_TOLERANCE + _CIRCLE_TOLERANCE
    return math.hypot(point[0] - x, point[1] - y) <= radius + slack


def _diameter_circle(p: list[float], q: list[float]) -> tuple[float, float, float]:
    x, y = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    return x, y, math.hypot(p[0] - x, p[1] - y)


def _circumcircle(p: list[float], q: list[float], r: list[float]) -> tuple[float, float, float]:
    """The circle through three points; for (numerically) collinear points, the diameter
    circle of the farthest pair, which then holds all three."""
    (ax, ay), (bx, by), (cx, cy) = p, q, r
    det = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(det) < 1e-12:
        pairs = ((p, q), (p, r), (q, r))
        return max((_diameter_circle(a, b) for a, b in pairs), key=lambda circle: circle[2])
    a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
    x = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / det
    y = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / det
    return x, y, max(math.hypot(x - px, y - py) for px, py in (p, q, r))


def heart_center(labels: np.ndarray) -> tuple[float, float] | None:
    """Centre ``(x, y)`` in pixels (column, row) of the minimal enclosing circle of every
    labelled pixel of ``labels`` ``(..., H, W)``, projected over the leading axes (frames,
    slices); None when nothing is labelled. Only boundary pixels can touch the circle, so
    only they enter Welzl's algorithm."""
    labelled = np.asarray(labels) > 0
    mask = labelled.reshape(-1, *labelled.shape[-2:]).any(axis=0)
    if not mask.any():
        return None
    boundary = mask & ~ndimage.binary_erosion(mask)
    rows, cols = np.nonzero(boundary)
    x, y, _ = minimal_enclosing_circle(np.stack([cols, rows], axis=1))
    return x, y


def normalised_center(center_px: np.ndarray, size: int) -> np.ndarray:
    """Pixel ``(x, y)`` ``(N, 2)`` on a ``size``² grid → ``F.affine_grid`` normalised ``(x, y)``
    (``align_corners=False``: pixel ``i``'s centre is at ``(2i + 1) / size − 1``); NaN
    (a subject without labels) → 0, the image centre."""
    out = (2 * np.asarray(center_px, dtype=np.float64) + 1) / size - 1
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


# --------------------------------------------------------------------------- slice cache


@dataclass
class SliceCache:
    """Preprocessed slices of one dataset at one geometry, memory-mapped from raw files.

    Attributes:
        images: float16 ``(N, size, size)`` memmap.
        labels: uint8 ``(M, size, size)`` memmap, the labelled slices.
        index: one row per image slice: subject, subject_idx, frame, z, n_slices,
            position (z / Z, 0 = base), phase ("ED", "ES" or ""), label_row (-1 if none),
            annotated_0..annotated_3 (bool), center_x, center_y (the subject's heart centre
            in pixels of the cached grid, `heart_center`; NaN without labels), intensity_max
            (the subject's largest z-scored intensity, `zscored_maximum`).
        folder: where it lives.
    """

    images: np.ndarray
    labels: np.ndarray
    index: pd.DataFrame
    folder: Path

    def rows(
        self,
        subjects: list[str],
        labelled: bool,
        phases: tuple[str, ...] = ("ED", "ES"),
        annotated_only: bool = True,
    ) -> pd.DataFrame:
        """Index rows of ``subjects``; labelled rows of ``phases`` only when ``labelled``."""
        rows = self.index[self.index["subject"].isin(set(subjects))]
        if labelled:
            rows = rows[(rows["label_row"] >= 0) & rows["phase"].isin(phases)]
            if annotated_only:
                rows = rows[rows["annotated_0"]]
        return rows

    def annotated(self, rows: pd.DataFrame) -> np.ndarray:
        """bool ``(len(rows), NUM_CLASSES)`` annotation flags of ``rows``."""
        return rows[[f"annotated_{c}" for c in range(NUM_CLASSES)]].to_numpy(bool)

    def centers(self, rows: pd.DataFrame) -> np.ndarray:
        """float32 ``(len(rows), 2)`` heart centres of ``rows`` in ``F.affine_grid``
        normalised ``(x, y)`` (zeros, the image centre, for a subject without labels)."""
        return normalised_center(
            rows[["center_x", "center_y"]].to_numpy(np.float64), self.images.shape[-1]
        )


def cache_key(adapter: DatasetAdapter, geometry: Geometry, pool: list[str]) -> str:
    """Hash of dataset identity, geometry, pretraining pool and cache version."""
    blob = json.dumps(
        {
            "dataset": adapter.fingerprint(),
            "size": geometry.size,
            "spacing": geometry.spacing_mm,
            "pool": sorted(pool),
            "version": CACHE_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def slice_cache_folder(adapter: DatasetAdapter, geometry: Geometry, pool: list[str]) -> Path:
    """Folder of the slice cache of ``adapter`` at ``geometry`` with pretraining ``pool``
    (complete once it holds ``index.parquet``)."""
    return cache_dir(
        "slices", f"{adapter.name}-{geometry.size}px-{cache_key(adapter, geometry, pool)}"
    )


def load_slice_cache(
    adapter: DatasetAdapter, geometry: Geometry, pool: list[str], progress: bool = True
) -> SliceCache:
    """Open (building once, under a file lock) the slice cache.

    ``pool`` = subjects whose every frame is cached (the pretraining pool); every other
    subject contributes its labelled frames only.
    """
    folder = slice_cache_folder(adapter, geometry, pool)
    done = folder / "index.parquet"
    if not done.exists():
        with open(folder.parent / f"{folder.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                _build_cache(adapter, geometry, set(pool), folder, progress)
    index = pd.read_parquet(done)
    shapes = json.loads((folder / "shapes.json").read_text())
    size = shapes["size"]
    images = _memmap(folder / "images.bin", np.float16, (shapes["images"], size, size))
    labels = _memmap(folder / "labels.bin", np.uint8, (shapes["labels"], size, size))
    return SliceCache(images, labels, index, folder)


def _memmap(path: Path, dtype: type, shape: tuple[int, int, int]) -> np.ndarray:
    """Read-only memmap of a raw array file (an empty array when ``shape[0] == 0``)."""
    if shape[0] == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _build_cache(
    adapter: DatasetAdapter, geometry: Geometry, pool: set[str], folder: Path, progress: bool
) -> None:
    """Stream every subject's preprocessed slices to raw files in a temp folder, then move
    them in place (the index last: it marks the cache complete)."""
    tmp = folder / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows: list[dict] = []
    n_images = n_labels = 0
    ids = adapter.subject_ids()
    with open(tmp / "images.bin", "wb") as image_file, open(tmp / "labels.bin", "wb") as label_file:
        for subject_idx, sid in enumerate(
            tqdm(ids, desc=f"preprocess {adapter.name}", unit="subject", disable=not progress)
        ):
            subject = adapter.load(sid)
            frames = list(range(subject.cine.shape[0])) if sid in pool else sorted(subject.labels)
            slices = preprocess_frames(subject, frames, geometry)
            image_file.write(slices.half().numpy().tobytes())
            phase_of = {subject.ed: "ED", subject.es: "ES"}
            z_count = subject.cine.shape[1]
            label_maps = {
                frame: preprocess_labels(subject, frame, geometry).numpy()
                for frame in sorted(subject.labels)
            }
            center = heart_center(np.stack(list(label_maps.values()))) if label_maps else None
            center_x, center_y = center if center is not None else (math.nan, math.nan)
            intensity_max = zscored_maximum(subject.cine)
            for frame in frames:
                labelled = frame in subject.labels
                if labelled:
                    label_file.write(label_maps[frame].tobytes())
                ann = subject.annotated.get(frame, np.zeros((NUM_CLASSES, z_count), bool))
                for z in range(z_count):
                    rows.append(
                        {
                            "subject": sid,
                            "subject_idx": subject_idx,
                            "frame": frame,
                            "z": z,
                            "n_slices": z_count,
                            "position": z / z_count,
                            "phase": phase_of.get(frame, "") if labelled else "",
                            "label_row": n_labels + z if labelled else -1,
                            **{f"annotated_{c}": bool(ann[c, z]) for c in range(NUM_CLASSES)},
                            "center_x": center_x,
                            "center_y": center_y,
                            "intensity_max": intensity_max,
                        }
                    )
                n_labels += z_count if labelled else 0
            n_images += len(frames) * z_count
    (tmp / "shapes.json").write_text(
        json.dumps({"images": n_images, "labels": n_labels, "size": geometry.size})
    )
    pd.DataFrame(rows).to_parquet(tmp / "index.parquet")
    for name in ("images.bin", "labels.bin", "shapes.json", "index.parquet"):
        os.replace(tmp / name, folder / name)
    tmp.rmdir()
