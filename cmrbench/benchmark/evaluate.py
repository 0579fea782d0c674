"""Evaluation: predict whole test volumes at ED and ES and score them per subject.

As in the study (arXiv 2409.18100), the model after the last epoch predicts every slice
of the test subject's ED and ES frames on the preprocessed grid, centred on the image (no
heart centring at test time, as in the study); its logits are resampled back to the
subject's original geometry before the argmax, bicubically with border padding as the
study does (`cmrbench.datasets.preprocess.logits_to_original`), and 3D metrics are computed
there (`cmrbench.benchmark.metrics`). Classes that are not annotated are n/a. Inference
runs at the cell's precision (`cmrbench.benchmark.train.autocast`; the study evaluated in
fp32).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from cmrbench.benchmark.metrics import CLINICAL_KEYS, clinical_values, subject_metrics
from cmrbench.benchmark.train import autocast
from cmrbench.datasets.preprocess import (
    Geometry,
    logits_to_original,
    preprocess_frames,
    preprocess_labels,
)
from cmrbench.datasets.subject import Subject
from cmrbench.vocabulary import CLASS_NAMES, CLINICAL_UNITS

QUALITATIVE_SUBJECTS = 2  # the first test subjects (sorted) give the report's overlays


@dataclass
class Evaluation:
    """Per-subject metric rows, clinical rows and qualitative slices of one cell.

    ``slices`` (the report's overlays) are on the preprocessed grid, so they share a shape.
    """

    subjects: pd.DataFrame
    clinical: pd.DataFrame
    slices: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mean_dsc(self) -> float:
        return float(self.subjects["dsc"].mean(skipna=True))


@dataclass
class FramePrediction:
    """One frame's prediction: ``labels`` uint8 ``(Z, H, W)`` in the original geometry, and
    the preprocessed ``images`` ``(Z, S, S)`` with their argmax ``grid_labels``."""

    labels: np.ndarray
    images: np.ndarray
    grid_labels: np.ndarray


@torch.no_grad()
def predict_frames(
    net: nn.Module,
    subject: Subject,
    frames: list[int],
    geometry: Geometry,
    device: torch.device,
    batch_size: int = 64,
    precision: str = "bf16",
) -> list[FramePrediction]:
    """Predict every slice of ``frames`` and resample the logits to the original grid."""
    net.eval()
    stacks = preprocess_frames(subject, frames, geometry)  # (F, Z, S, S)
    slices = stacks.reshape(-1, 1, geometry.size, geometry.size)
    logits = []
    for start in range(0, slices.shape[0], batch_size):
        with autocast(device, precision):
            logits.append(net(slices[start : start + batch_size].to(device)).float().cpu())
    grid_logits = torch.cat(logits).reshape(
        len(frames), stacks.shape[1], -1, geometry.size, geometry.size
    )
    out = []
    for stack, frame_logits in zip(stacks, grid_logits):
        original = logits_to_original(frame_logits, subject, geometry)  # (Z, C, H, W)
        out.append(
            FramePrediction(
                labels=original.argmax(dim=1).to(torch.uint8).numpy(),
                images=stack.numpy(),
                grid_labels=frame_logits.argmax(dim=1).to(torch.uint8).numpy(),
            )
        )
    return out


def evaluate(
    net: nn.Module,
    subjects: Iterable[Subject],
    geometry: Geometry,
    device: torch.device,
    describe: dict[str, Any],
    seen_vendors: tuple[str, ...] | None = None,
    show_progress: bool = True,
    precision: str = "bf16",
    total: int | None = None,
) -> Evaluation:
    """Score ``net`` on test subjects; ``describe`` holds the cell's identifying columns.

    ``subjects`` are read one at a time (a generator keeps one cine in memory: ACDC's 50
    test subjects held at once took 3.3 GB); ``total`` is their number, for the progress bar.
    """
    rows, clinical_rows = [], []
    image, reference, prediction, who, phases, slice_idx = [], [], [], [], [], []
    for n, subject in enumerate(
        tqdm(
            subjects,
            total=total,
            desc="evaluate",
            unit="subject",
            leave=False,
            disable=not show_progress,
        )
    ):
        vendor = str(subject.meta.get("vendor", ""))
        ident = {
            **describe,
            "subject": subject.id,
            "vendor": vendor,
            "pathology": str(subject.meta.get("pathology") or ""),
            "seen_vendor": seen_vendors is None or vendor in seen_vendors,
        }
        volumes: dict[str, dict[str, dict[int, float]]] = {"pred": {}, "ref": {}}
        labelled = {p: f for p, f in subject.phases.items() if f in subject.labels}
        predictions = predict_frames(
            net, subject, list(labelled.values()), geometry, device, precision=precision
        )
        for (phase, frame), predicted in zip(labelled.items(), predictions):
            pred, ref = predicted.labels, subject.labels[frame]
            metrics = subject_metrics(pred, ref, subject.spacing, subject.annotated[frame])
            for cls, m in metrics.items():
                rows.append(
                    {
                        **ident,
                        "phase": phase,
                        "class": CLASS_NAMES[cls],
                        "annotated": m.annotated,
                        "dsc": m.dsc,
                        "hd95_mm": m.hd95_mm,
                        "vol_pred_ml": m.vol_pred_ml,
                        "vol_ref_ml": m.vol_ref_ml,
                    }
                )
                volumes["pred"].setdefault(phase, {})[cls] = m.vol_pred_ml
                volumes["ref"].setdefault(phase, {})[cls] = m.vol_ref_ml
            if n < QUALITATIVE_SUBJECTS:
                z = int(np.argmax((ref > 0).sum(axis=(1, 2))))  # the slice with most heart
                image.append(predicted.images[z])
                reference.append(preprocess_labels(subject, frame, geometry)[z].numpy())
                prediction.append(predicted.grid_labels[z])
                who.append(subject.id)
                phases.append(phase)
                slice_idx.append(z)
        pred_values = clinical_values(volumes["pred"])
        ref_values = clinical_values(volumes["ref"])
        for key in CLINICAL_KEYS:
            clinical_rows.append(
                {
                    **ident,
                    "quantity": key,
                    "unit": CLINICAL_UNITS[key],
                    "pred": pred_values[key],
                    "ref": ref_values[key],
                }
            )
    slices = {}
    if image:
        slices = {
            "image": np.stack(image).astype(np.float32),
            "reference": np.stack(reference),
            "prediction": np.stack(prediction),
            "subject": np.array(who),
            "phase": np.array(phases),
            "slice": np.array(slice_idx),
        }
    return Evaluation(pd.DataFrame(rows), pd.DataFrame(clinical_rows), slices)
