"""The `Subject` record every dataset adapter returns (DESIGN.md, "Subject").

One canonical label convention everywhere inside cmrbench:
0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool (`cmrbench.vocabulary`,
which the reports read too; the adapters import the label values from here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmrbench.errors import CmrbenchError
from cmrbench.vocabulary import BACKGROUND, CLASS_NAMES, FOREGROUND, LV, MYO, NUM_CLASSES, RV


class SubjectError(CmrbenchError, ValueError):
    """A subject's data break the `Subject` contract; the message names the source."""


@dataclass
class Subject:
    """One cine short-axis study.

    Attributes:
        id: subject identifier, unique within its dataset.
        cine: float32 array ``(T, Z, H, W)``; slices ordered base → apex from the geometry.
        spacing: ``(dz, dy, dx)`` in mm (dz = distance between slice centres).
        labels: ``{frame_index: uint8 (Z, H, W)}`` in the canonical convention, for the
            labelled frames only (0-based frame indices).
        ed, es: 0-based end-diastolic and end-systolic frame indices.
        annotated: ``{frame_index: bool (NUM_CLASSES, Z)}``: ``annotated[f][c, z]`` says
            whether class ``c`` was delineated on slice ``z`` of frame ``f``. Row 0
            (background) is True on every slice that carries any annotation. A class that is
            not annotated is unknown there, never background.
        meta: dataset, vendor letter A–D, manufacturer, centre, pathology, field strength, ...
        source: file or folder the subject was read from (for error messages).
    """

    id: str
    cine: np.ndarray
    spacing: tuple[float, float, float]
    labels: dict[int, np.ndarray]
    ed: int
    es: int
    annotated: dict[int, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.annotated:
            self.annotated = {f: fully_annotated(lab.shape[0]) for f, lab in self.labels.items()}
        validate_subject(self)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(T, Z, H, W)`` of the cine stack."""
        return tuple(self.cine.shape)

    @property
    def phases(self) -> dict[str, int]:
        """``{"ED": ed, "ES": es}``."""
        return {"ED": self.ed, "ES": self.es}

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in ml (mm³ / 1000)."""
        dz, dy, dx = self.spacing
        return dz * dy * dx / 1000.0


def fully_annotated(n_slices: int) -> np.ndarray:
    """``annotated`` mask ``(NUM_CLASSES, Z)`` for a frame with every class on every slice."""
    return np.ones((NUM_CLASSES, n_slices), dtype=bool)


def validate_subject(subject: Subject) -> None:
    """Raise `SubjectError` naming the subject's source if it breaks the contract."""
    where = subject.source or subject.id
    cine = subject.cine
    if cine.ndim != 4:
        raise SubjectError(f"{where}: cine must be 4D (T, Z, H, W), got shape {cine.shape}")
    if cine.dtype != np.float32:
        raise SubjectError(f"{where}: cine must be float32, got {cine.dtype}")
    t, z, h, w = cine.shape
    if not np.isfinite(cine).all():
        raise SubjectError(f"{where}: cine contains NaN or infinite values")
    if float(cine.max()) == float(cine.min()):
        raise SubjectError(f"{where}: cine is constant ({float(cine.min())}); expected an image")
    if len(subject.spacing) != 3 or min(subject.spacing) <= 0:
        raise SubjectError(
            f"{where}: spacing must be three positive mm values (dz, dy, dx), got {subject.spacing}"
        )
    for name, frame in (("ED", subject.ed), ("ES", subject.es)):
        if not 0 <= frame < t:
            raise SubjectError(
                f"{where}: {name} frame {frame} is out of range; the cine has "
                f"{t} frames (0-based, expected 0..{t - 1})"
            )
    for frame, label in subject.labels.items():
        if not 0 <= frame < t:
            raise SubjectError(f"{where}: label frame {frame} out of range 0..{t - 1}")
        if label.shape != (z, h, w):
            raise SubjectError(
                f"{where}: label of frame {frame} has shape {label.shape}, "
                f"expected {(z, h, w)} to match the cine"
            )
        if label.dtype != np.uint8:
            raise SubjectError(f"{where}: label of frame {frame} must be uint8, got {label.dtype}")
        bad = np.setdiff1d(np.unique(label), np.arange(NUM_CLASSES))
        if bad.size:
            raise SubjectError(
                f"{where}: label of frame {frame} has values {bad.tolist()}; "
                f"expected only 0 bg, 1 LV, 2 MYO, 3 RV"
            )
        mask = subject.annotated.get(frame)
        if mask is None or mask.shape != (NUM_CLASSES, z) or mask.dtype != bool:
            raise SubjectError(f"{where}: annotated[{frame}] must be bool ({NUM_CLASSES}, {z})")
    for frame in subject.annotated:
        if frame not in subject.labels:
            raise SubjectError(f"{where}: annotated names frame {frame}, which has no label")


__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "FOREGROUND",
    "LV",
    "MYO",
    "NUM_CLASSES",
    "RV",
    "Subject",
    "SubjectError",
    "fully_annotated",
    "validate_subject",
]
