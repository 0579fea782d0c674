"""``cmrbench run --dry-run``: the jobs of a plan, which are done, and the compute left.

The estimate multiplies the images each job still has to process (from the dataset's
subject and slice counts and the schedules) by a throughput measured here and now: a
few harness steps of each encoder (fine-tuning) and of each method (pretraining) on the
current device, at the grid's image and batch sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.runner import adapter_for, device_description, resolve_device
from cmrbench.benchmark.spec import CellSpec, PretrainSpec, canonical_json
from cmrbench.benchmark.store import Store
from cmrbench.benchmark.throughput import (harness_finetune_images_per_s,
                                           harness_pretrain_images_per_s)
from cmrbench.benchmark.train import steps_per_epoch
from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.splits import Setting, cell_subjects

SAMPLE_SUBJECTS = 3


@dataclass(frozen=True)
class DataShape:
    """Mean frames and slices per subject, measured on a few subjects."""

    frames: float
    slices: float


def measure_shape(adapter: DatasetAdapter) -> DataShape:
    """Mean ``T`` and ``Z`` over the first `SAMPLE_SUBJECTS` subjects."""
    shapes = [adapter.load(s).cine.shape for s in adapter.subject_ids()[:SAMPLE_SUBJECTS]]
    return DataShape(frames=float(np.mean([s[0] for s in shapes])),
                     slices=float(np.mean([s[1] for s in shapes])))


def check_cells_against_data(cells: tuple[CellSpec, ...]) -> None:
    """Resolve every cell's subjects before anything runs, so that a budget larger than
    the training set (or a setting with no subject) fails at once with a clear message."""
    adapters: dict[str, DatasetAdapter] = {}
    seen: set[str] = set()
    for cell in cells:
        data_key = canonical_json(cell.data)          # options may hold dicts: not hashable
        key = f"{data_key}|{cell.budget}|{cell.seed}|{cell.setting}"
        if key in seen:
            continue
        seen.add(key)
        if data_key not in adapters:
            adapters[data_key] = adapter_for(cell.data)
        cell_subjects(adapters[data_key], cell.budget, cell.seed, Setting(cell.setting))


def cell_images(spec: CellSpec, adapter: DatasetAdapter, shape: DataShape) -> float:
    """Images one cell processes: fine-tuning steps × batch, validation and test passes."""
    setting = Setting(spec.setting)
    who = cell_subjects(adapter, spec.budget, spec.seed, setting)
    phases = len(setting.train_phases)
    train_slices = len(who.labelled) * phases * shape.slices
    epoch_steps = steps_per_epoch(int(train_slices), spec.finetune.batch_size)
    steps = max(1, round(spec.finetune.epochs * epoch_steps))
    val_passes = spec.finetune.epochs / spec.finetune.val_every if spec.finetune.val_every else 0
    val_images = val_passes * len(who.val) * phases * shape.slices / 3   # forward only ≈ 1/3 step
    test_images = len(who.test) * 2 * shape.slices / 3
    return steps * spec.finetune.batch_size + val_images + test_images


def pretrain_images(spec: PretrainSpec, adapter: DatasetAdapter, shape: DataShape) -> float:
    """Images one pretraining job processes (source images, before multi-view expansion)."""
    pool = len(adapter.default_split()["train"]) * shape.frames * shape.slices
    return spec.epochs * (pool // spec.batch_size) * spec.batch_size


def calibrate_finetune(encoder: str, image_size: int, batch_size: int, device: torch.device) -> float:
    """Harness fine-tuning slices/s of ``encoder`` on ``device`` (a short real loop)."""
    if device.type == "cuda":
        return harness_finetune_images_per_s(encoder, image_size, batch_size, device, steps=12, warmup=4)
    return harness_finetune_images_per_s(encoder, image_size, min(batch_size, 16), device, steps=6, warmup=2)


def calibrate_pretrain(spec: PretrainSpec, device: torch.device) -> float:
    """Harness pretraining slices/s of ``spec.method`` on ``device`` (a short real loop)."""
    size = spec.data.image_size
    if device.type == "cuda":
        return harness_pretrain_images_per_s(spec.method, spec.encoder, size, spec.batch_size,
                                             device, steps=8, warmup=3)
    return harness_pretrain_images_per_s(spec.method, spec.encoder, size, min(spec.batch_size, 4),
                                         device, steps=2, warmup=1)


def describe_plan(plan: Plan, cells: tuple[CellSpec, ...], store: Store, device: str | None = None,
                  calibrate: bool = True) -> str:
    """The dry-run text: jobs with their state, and the estimated compute still needed."""
    dev = resolve_device(device)
    needed = {c.pretrain_key for c in cells if c.pretrain}
    pretrain = [p for p in plan.pretrain if p.key in needed]
    lines = [f"grid {plan.grid.name} ({plan.grid.source})",
             f"{len(pretrain)} pretraining jobs, {len(cells)} fine-tuning cells", "",
             "pretraining jobs:"]
    for p in pretrain:
        state = "done" if store.is_done(p) else ("failed" if store.has_error(p) else "todo")
        lines.append(f"  [{state:>6}] {p.folder_name}  ({p.epochs:g} epochs, batch {p.batch_size})")
    lines.append("cells:")
    for c in cells:
        state = "done" if store.is_done(c) else ("failed" if store.has_error(c) else "todo")
        lines.append(f"  [{state:>6}] {c.folder_name}")
    todo_cells = [c for c in cells if not store.is_done(c)]
    todo_pre = [p for p in pretrain if not store.is_done(p)]
    lines.append(f"\nto do: {len(todo_pre)} pretraining jobs, {len(todo_cells)} cells")
    if calibrate and (todo_cells or todo_pre):
        lines.extend(_estimate(plan, todo_cells, todo_pre, dev))
    return "\n".join(lines)


def _estimate(plan: Plan, cells: list[CellSpec], pretrain: list[PretrainSpec],
              device: torch.device) -> list[str]:
    data = plan.grid.data
    adapter = adapter_for(data)
    shape = measure_shape(adapter)
    lines = [f"\ncompute estimate on {device_description(device)} "
             f"(throughput measured now, {shape.frames:.0f} frames × {shape.slices:.1f} slices "
             f"per subject):"]
    total_s = 0.0
    for encoder in sorted({c.encoder for c in cells}):
        enc_cells = [c for c in cells if c.encoder == encoder]
        rate = calibrate_finetune(encoder, data.image_size, enc_cells[0].finetune.batch_size, device)
        images = sum(cell_images(c, adapter, shape) for c in enc_cells)
        total_s += images / rate
        lines.append(f"  fine-tune {encoder}: {rate:,.0f} slices/s, {len(enc_cells)} cells, "
                     f"{images / 1e6:,.2f} M slices → {images / rate / 3600:,.2f} h")
    for spec in pretrain:
        rate = calibrate_pretrain(spec, device)
        images = pretrain_images(spec, adapter, shape)
        total_s += images / rate
        lines.append(f"  pretrain {spec.method} on {spec.encoder}: {rate:,.0f} slices/s, "
                     f"{images / 1e6:,.2f} M slices → {images / rate / 3600:,.2f} h")
    unit = "GPU-hours" if device.type == "cuda" else "CPU-hours"
    lines.append(f"  total: {total_s / 3600:,.2f} {unit} on this device")
    return lines
