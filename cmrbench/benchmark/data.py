"""A job's data on its device: the dataset adapter and slice cache of a `DataSpec`, and the
labelled slices (fine-tuning, validation) or the unlabelled pool (pretraining, over every
dataset of a pretraining spec's pool) as tensors.

Images are ``(N, 1, S, S)`` float16, labels ``(N, S, S)`` uint8, augmentation centres ``(N, 2)``
in ``F.affine_grid``'s normalised ``(x, y)`` (DESIGN.md: the slice set is one float16 array,
held on the training device when it fits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cmrbench.benchmark.spec import DataSpec, PretrainSpec
from cmrbench.benchmark.train import LabelledSlices, SliceBatches
from cmrbench.datasets import create_dataset
from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.preprocess import Geometry, SliceCache, load_slice_cache


@dataclass
class DataContext:
    """A dataset adapter, its preprocessing geometry and its slice cache."""

    adapter: DatasetAdapter
    geometry: Geometry
    cache: SliceCache


def adapter_for(data: DataSpec) -> DatasetAdapter:
    """The dataset adapter a `DataSpec` names (without its excluded subjects)."""
    return create_dataset(data.dataset, data.root, data.exclude, **dict(data.options))


def selected_subjects(adapter: DatasetAdapter, subjects: str) -> list[str]:
    """The subjects a pool or external test set takes from ``adapter``: ``train`` (its
    pretraining pool), ``test`` (its test split) or ``all``."""
    if subjects == "all":
        return adapter.subject_ids()
    return adapter.pretraining_pool() if subjects == "train" else adapter.default_split()["test"]


def open_data(data: DataSpec, show_progress: bool = True, subjects: str = "train") -> DataContext:
    """Build the adapter of ``data`` and open (building once) its slice cache, holding every
    frame of its ``subjects`` (`selected_subjects`) and the labelled frames of the others."""
    adapter = adapter_for(data)
    geometry = Geometry(data.image_size, data.spacing_mm)
    cache = load_slice_cache(adapter, geometry, selected_subjects(adapter, subjects), show_progress)
    return DataContext(adapter, geometry, cache)


def slice_centers(cache: SliceCache, rows: pd.DataFrame, center: str) -> torch.Tensor:
    """Where augmentation centres the slices of ``rows``: ``(N, 2)`` float32 normalised
    ``(x, y)``, the subjects' label-derived heart centres (``center="labels"``) or zeros, the
    image centre (``"image"``)."""
    if center == "image":
        return torch.zeros(len(rows), 2)
    return torch.from_numpy(cache.centers(rows))


def labelled_slices(
    cache: SliceCache,
    subjects: list[str],
    phases: tuple[str, ...],
    device: torch.device,
    center: str = "labels",
) -> LabelledSlices:
    """The annotated slices of ``subjects`` at ``phases``, moved to ``device``, centred as
    `slice_centers` says."""
    rows = cache.rows(subjects, labelled=True, phases=phases)
    images = torch.from_numpy(np.asarray(cache.images[rows.index.to_numpy()]))
    label_rows = rows["label_row"].to_numpy()
    return LabelledSlices(
        images=images.unsqueeze(1).to(device),
        labels=torch.from_numpy(np.asarray(cache.labels[label_rows])).to(device),
        annotated=torch.from_numpy(np.array(cache.annotated(rows))).to(device),
        center=slice_centers(cache, rows, center).to(device),
    )


def pool_fits_on_device(nbytes: float, device: torch.device) -> bool:
    """Whether a pretraining pool of ``nbytes`` is held on ``device``: on a CPU always, on
    CUDA while it takes at most half the free memory (the rest is the training step's)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= 0.5 * free


def pool_slices(
    cache: SliceCache, subjects: list[str], device: torch.device, center: str = "labels"
) -> SliceBatches:
    """Every frame of the pretraining pool, on the device when it fits (else host memory),
    centred as `slice_centers` says."""
    return pooled_slices([(cache, subjects)], device, center)


def pretraining_slices(
    spec: PretrainSpec, device: torch.device, show_progress: bool = True
) -> SliceBatches:
    """Every frame of every dataset of ``spec``'s pool (`PretrainSpec.pool_sources`), each
    from its own slice cache."""
    parts = []
    for source in spec.pool_sources:
        data = open_data(source.data, show_progress, source.subjects)
        parts.append((data.cache, selected_subjects(data.adapter, source.subjects)))
    return pooled_slices(parts, device, spec.center)


def pooled_slices(
    parts: list[tuple[SliceCache, list[str]]], device: torch.device, center: str = "labels"
) -> SliceBatches:
    """Every frame of the given subjects of each slice cache, one `SliceBatches` on the device
    when it fits (else pinned host memory). Subject indices are offset per cache, so two
    datasets' subjects never share one."""
    images, position, subject, frame, centers, maxima = [], [], [], [], [], []
    offset = 0
    for cache, subjects in parts:
        rows = cache.rows(subjects, labelled=False)
        images.append(torch.from_numpy(np.asarray(cache.images[rows.index.to_numpy()])))
        position.append(torch.tensor(rows["position"].to_numpy(), dtype=torch.float32))
        subject.append(torch.tensor(rows["subject_idx"].to_numpy()) + offset)
        frame.append(torch.tensor(rows["frame"].to_numpy()))
        centers.append(slice_centers(cache, rows, center))
        maxima.append(torch.tensor(rows["intensity_max"].to_numpy(), dtype=torch.float32))
        offset += int(cache.index["subject_idx"].max()) + 1 if len(cache.index) else 0
    pool = torch.cat(images).unsqueeze(1)
    target = device
    if device.type == "cuda" and not pool_fits_on_device(pool.numel() * 2, device):
        target = torch.device("cpu")
        pool = pool.pin_memory()
    return SliceBatches(
        images=pool.to(target),
        position=torch.cat(position).to(target),
        subject=torch.cat(subject).to(target),
        frame=torch.cat(frame).to(target),
        center=torch.cat(centers).to(target),
        intensity_max=torch.cat(maxima).to(target),
    )
