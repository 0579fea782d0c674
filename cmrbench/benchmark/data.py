"""A job's data on its device: the dataset adapter and slice cache of a `DataSpec`, and the
labelled slices (fine-tuning, validation) or the unlabelled pool (pretraining) as tensors.

Images are ``(N, 1, S, S)`` float16, labels ``(N, S, S)`` uint8, augmentation centres ``(N, 2)``
in ``F.affine_grid``'s normalised ``(x, y)`` (DESIGN.md: the slice set is one float16 array,
held on the training device when it fits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cmrbench.benchmark.spec import DataSpec
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


def open_data(data: DataSpec, show_progress: bool = True) -> DataContext:
    """Build the adapter of ``data`` and open (building once) its slice cache."""
    adapter = adapter_for(data)
    geometry = Geometry(data.image_size, data.spacing_mm)
    cache = load_slice_cache(adapter, geometry, adapter.default_split()["train"], show_progress)
    return DataContext(adapter, geometry, cache)


def slice_centers(cache: SliceCache, rows: pd.DataFrame, center: str) -> torch.Tensor:
    """Where augmentation centres the slices of ``rows``: ``(N, 2)`` float32 normalised
    ``(x, y)``, the subjects' label-derived heart centres (``center="labels"``) or zeros, the
    image centre (``"image"``)."""
    if center == "image":
        return torch.zeros(len(rows), 2)
    return torch.from_numpy(cache.centers(rows))


def labelled_slices(cache: SliceCache, subjects: list[str], phases: tuple[str, ...],
                    device: torch.device, center: str = "labels") -> LabelledSlices:
    """The annotated slices of ``subjects`` at ``phases``, moved to ``device``, centred as
    `slice_centers` says."""
    rows = cache.rows(subjects, labelled=True, phases=phases)
    images = torch.from_numpy(np.asarray(cache.images[rows.index.to_numpy()]))
    label_rows = rows["label_row"].to_numpy()
    return LabelledSlices(images=images.unsqueeze(1).to(device),
                          labels=torch.from_numpy(np.asarray(cache.labels[label_rows])).to(device),
                          annotated=torch.from_numpy(np.array(cache.annotated(rows))).to(device),
                          center=slice_centers(cache, rows, center).to(device))


def pool_slices(cache: SliceCache, subjects: list[str], device: torch.device,
                center: str = "labels") -> SliceBatches:
    """Every frame of the pretraining pool, on the device when it fits (else host memory),
    centred as `slice_centers` says."""
    rows = cache.rows(subjects, labelled=False)
    images = torch.from_numpy(np.asarray(cache.images[rows.index.to_numpy()])).unsqueeze(1)
    target = device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() * 2 > 0.5 * free:
            target = torch.device("cpu")
            images = images.pin_memory()
    return SliceBatches(images=images.to(target),
                        position=torch.tensor(rows["position"].to_numpy(), dtype=torch.float32).to(target),
                        subject=torch.tensor(rows["subject_idx"].to_numpy()).to(target),
                        frame=torch.tensor(rows["frame"].to_numpy()).to(target),
                        center=slice_centers(cache, rows, center).to(target),
                        intensity_max=torch.tensor(rows["intensity_max"].to_numpy(),
                                                   dtype=torch.float32).to(target))
