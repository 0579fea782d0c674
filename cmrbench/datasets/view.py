"""What the network sees: a subject's ED and ES slices as the slice cache holds them.

`network_view` loads one subject through its dataset adapter (all-zero borders cropped, the
in-plane axes in the network's layout: `cmrbench.datasets.layout`), resamples and z-scores
its ED and ES frames as the slice cache does (`cmrbench.datasets.preprocess`) and rounds
the images to float16 as the cache stores them: the arrays training reads before
augmentation. Users check a new dataset (or a new adapter) by looking at them
(``cmrbench data show``); tests check orientation with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmrbench.datasets.base import create_dataset
from cmrbench.datasets.preprocess import Geometry, preprocess_frames, preprocess_labels
from cmrbench.datasets.subject import Subject

PhaseViews = dict[str, tuple[np.ndarray, np.ndarray]]
"""``{"ED": (image, labels), "ES": (image, labels)}``, each ``(Z, S, S)``."""


def subject_view(subject: Subject, geometry: Geometry) -> PhaseViews:
    """``{"ED": (image, labels), "ES": (image, labels)}`` of a loaded ``subject``: images float32
    ``(Z, S, S)`` (z-scored, float16-rounded as cached), labels uint8 ``(Z, S, S)`` in the
    canonical classes (0 background, 1 LV, 2 MYO, 3 RV); only phases with labels."""
    phases = {phase: frame for phase, frame in subject.phases.items() if frame in subject.labels}
    images = preprocess_frames(subject, list(phases.values()), geometry).to(torch.float16)
    return {
        phase: (images[i].float().numpy(), preprocess_labels(subject, frame, geometry).numpy())
        for i, (phase, frame) in enumerate(phases.items())
    }


def network_view(
    dataset: str,
    root: str | Path | None,
    subject: str,
    *,
    image_size: int,
    spacing_mm: float,
    options: Mapping[str, Any] | None = None,
) -> PhaseViews:
    """The ED and ES slices of ``subject`` exactly as training receives them before
    augmentation: ``{"ED": (image, labels), "ES": (image, labels)}``.

    ``image`` is float32 ``(Z, image_size, image_size)``, z-scored over the subject's 4D stack
    and rounded to float16 as the slice cache stores it; ``labels`` is uint8 of the same shape
    (1 LV, 2 MYO, 3 RV; a class the dataset does not annotate reads 0 there). Slices run
    base → apex; rows and columns are the network's layout (columns towards posterior).
    ``options`` are the dataset adapter's options (``--option`` on the command line).

    Example::

        view = network_view("sunnybrook", "../shared/data/sunnybrook", "SCD0000101",
                            image_size=256, spacing_mm=1.25)
        image, labels = view["ED"]          # (Z, 256, 256) each
    """
    adapter = create_dataset(dataset, root, **dict(options or {}))
    return subject_view(adapter.load(subject), Geometry(image_size, spacing_mm))
