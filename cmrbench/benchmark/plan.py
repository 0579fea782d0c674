"""``cmrbench run --dry-run``: the jobs of a plan, which are done, and the compute left.

The estimate multiplies the images each job still has to process (from the dataset's
subject and slice counts and the schedules) by a throughput measured here and now: a
few harness steps of each encoder (fine-tuning) and of each method (pretraining) on the
current device, at the grid's image and batch sizes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from cmrbench.benchmark.augment import BatchAugment
from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.nets import create_net
from cmrbench.benchmark.runner import device_description, resolve_device
from cmrbench.benchmark.spec import CellSpec, PretrainSpec
from cmrbench.benchmark.store import Store
from cmrbench.benchmark.train import autocast, build_optimizer, deep_supervised_loss
from cmrbench.datasets import create_dataset
from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.methods import get_method
from cmrbench.methods.base import PretrainBatch, Progress

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
    for key in sorted({(c.data, c.budget, c.seed, c.setting) for c in cells}, key=str):
        data, budget, seed, setting = key
        name = f"{data.dataset}|{data.root}|{data.options}"
        if name not in adapters:
            adapters[name] = create_dataset(data.dataset, data.root, **dict(data.options))
        cell_subjects(adapters[name], budget, seed, Setting(setting))


def cell_images(spec: CellSpec, adapter: DatasetAdapter, shape: DataShape) -> float:
    """Images one cell processes: fine-tuning steps × batch, validation and test passes."""
    setting = Setting(spec.setting)
    who = cell_subjects(adapter, spec.budget, spec.seed, setting)
    phases = len(setting.train_phases)
    train_slices = len(who.labelled) * phases * shape.slices
    steps = max(1, round(spec.finetune.epochs * math.ceil(train_slices / spec.finetune.batch_size)))
    val_passes = spec.finetune.epochs / spec.finetune.val_every if spec.finetune.val_every else 0
    val_images = val_passes * len(who.val) * phases * shape.slices / 3   # forward only ≈ 1/3 step
    test_images = len(who.test) * 2 * shape.slices / 3
    return steps * spec.finetune.batch_size + val_images + test_images


def pretrain_images(spec: PretrainSpec, adapter: DatasetAdapter, shape: DataShape) -> float:
    """Images one pretraining job processes (source images, before multi-view expansion)."""
    pool = len(adapter.default_split()["train"]) * shape.frames * shape.slices
    return spec.epochs * (pool // spec.batch_size) * spec.batch_size


def _time_steps(step, n_warmup: int, n_timed: int, device: torch.device) -> float:
    for _ in range(n_warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(n_timed):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / n_timed


def calibrate_finetune(encoder: str, image_size: int, batch_size: int, device: torch.device) -> float:
    """Harness fine-tuning images/s of ``encoder`` on ``device`` (augmented, full loss)."""
    batch = batch_size if device.type == "cuda" else min(batch_size, 4)
    net = create_net(encoder, img_size=image_size).to(device).train()
    opt = build_optimizer(list(net.parameters()), get_method("scratch").optim, device)
    augment = BatchAugment("paper", image_size)
    images = torch.randn(batch, 1, image_size, image_size, device=device)
    labels = torch.randint(0, 4, (batch, image_size, image_size), device=device)
    annotated = torch.ones(batch, 4, dtype=torch.bool, device=device)

    def step() -> None:
        x, y = augment(images, labels)
        with autocast(device):
            loss = deep_supervised_loss(net(x), y, annotated)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    warm, timed = (3, 10) if device.type == "cuda" else (1, 2)
    return batch / _time_steps(step, warm, timed, device)


def calibrate_pretrain(spec: PretrainSpec, device: torch.device) -> float:
    """Harness pretraining images/s of ``spec.method`` on ``device``."""
    cls = get_method(spec.method)
    size = spec.data.image_size
    batch = spec.batch_size if device.type == "cuda" else min(spec.batch_size, 4)
    net = create_net(spec.encoder, img_size=size, **cls.net_kwargs)
    method = cls(net, size, BatchAugment("paper", size), **dict(spec.hparams)).to(device).train()
    opt = build_optimizer([p for p in method.parameters() if p.requires_grad], cls.optim, device)
    data = PretrainBatch(images=torch.randn(batch, 1, size, size, device=device),
                         position=torch.rand(batch, device=device),
                         subject=torch.zeros(batch, dtype=torch.long, device=device),
                         frame=torch.zeros(batch, dtype=torch.long, device=device))
    progress = Progress(step=0, total_steps=100, epoch=1, total_epochs=10, steps_per_epoch=10)

    def step() -> None:
        with autocast(device):
            loss = method.loss(data, progress)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        method.before_optimizer_step(progress)
        opt.step()
        method.after_step(progress)

    warm, timed = (3, 8) if device.type == "cuda" else (1, 2)
    return batch / _time_steps(step, warm, timed, device)


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
    adapter = create_dataset(data.dataset, data.root, **dict(data.options))
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
