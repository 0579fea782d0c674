"""``cmrbench run --dry-run``: the jobs of a plan, which are done, and the time still needed.

The estimate models a run as the harness spends it, each part timed here and now on the
current device with the grid's own settings (`cmrbench.benchmark.throughput`):

- fine-tuning: steps per cell (epochs × steps per epoch of the cell's labelled slices, as
  `train.finetune` counts them) × seconds per step of the real loop at the cell's batch size,
  augmentation and optimizer; plus validation passes (forward only) and the evaluation of
  every test subject (loading it, predicting, metrics), timed on one real test subject;
- pretraining: steps per job × seconds per step of the method's real loop with its resolved
  hyper-parameters, batch size and optimizer;
- data preparation, when the slice cache is not built yet: loading and resampling every
  subject, timed on a few.

Slice counts come from the slice cache when it exists, else from a few sampled subjects.
Seconds per step are measured after a warm-up (the first steps pay one-off costs), at the
job's own batch size and settings, over enough steps to spread the loop's set-up as a short
job does (`throughput.step_seconds`). Start-up (imports, planning, data checks) is what the dry run itself took
before estimating; the HTML report is not counted.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmrbench.benchmark.evaluate import evaluate
from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.data import adapter_for
from cmrbench.benchmark.devices import device_description, resolve_device
from cmrbench.benchmark.spec import CellSpec, PretrainSpec, canonical_json
from cmrbench.store import StoreWriter
from cmrbench.benchmark.throughput import (finetune_steps, forward_seconds_per_slice,
                                           pretrain_steps, step_seconds, timed)
from cmrbench.benchmark.train import LOG_EVERY, steps_per_epoch
from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.preprocess import (Geometry, SliceCache, load_slice_cache, preprocess_frames,
                                          slice_cache_folder)
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.datasets.subject import BACKGROUND
from cmrbench.nets import create_net

SAMPLE_SUBJECTS = 3


@dataclass(frozen=True)
class SliceCounts:
    """Slices per subject: exact from a built slice cache, else means of a few subjects.

    ``frames`` and ``slices``: mean cine frames and slices per subject; ``labelled``: mean
    annotated slices per labelled phase; ``load_s`` and ``frame_s``: mean seconds to load a
    subject and to resample one of its frames (what building the cache costs).
    """

    cache: SliceCache | None
    frames: float
    slices: float
    labelled: float
    load_s: float
    frame_s: float

    def labelled_slices(self, subjects: list[str], phases: tuple[str, ...]) -> float:
        """Annotated slices of ``subjects`` at ``phases`` (what a cell trains or validates on)."""
        if self.cache is not None:
            return float(len(self.cache.rows(subjects, labelled=True, phases=phases)))
        return len(subjects) * len(phases) * self.labelled

    def pool_slices(self, subjects: list[str]) -> float:
        """Every frame's slices of ``subjects`` (a pretraining pool)."""
        if self.cache is not None:
            return float(len(self.cache.rows(subjects, labelled=False)))
        return len(subjects) * self.frames * self.slices


CPU_CALIBRATION_PIXELS = 8 * 256 * 256
"""Input pixels of one calibration step on a CPU (8 slices at the study's 256² px)."""


def measure_counts(adapter: DatasetAdapter, geometry: Geometry) -> SliceCounts:
    """`SliceCounts` of ``adapter``: load and resample the first `SAMPLE_SUBJECTS` subjects
    (timed), and read the slice cache if it is built."""
    loads, frames, slices, labelled = [], [], [], []
    frame_s = 0.0
    for subject_id in adapter.subject_ids()[:SAMPLE_SUBJECTS]:
        start = time.perf_counter()
        subject = adapter.load(subject_id)
        loads.append(time.perf_counter() - start)
        frames.append(subject.cine.shape[0])
        slices.append(subject.cine.shape[1])
        labelled.extend(int(subject.annotated[f][BACKGROUND].sum()) for f in subject.labels)
        if not frame_s:
            start = time.perf_counter()
            preprocess_frames(subject, [subject.ed, subject.es], geometry)
            frame_s = (time.perf_counter() - start) / 2
    pool = adapter.default_split()["train"]
    built = (slice_cache_folder(adapter, geometry, pool) / "index.parquet").exists()
    cache = load_slice_cache(adapter, geometry, pool, progress=False) if built else None
    return SliceCounts(cache=cache, frames=float(np.mean(frames)), slices=float(np.mean(slices)),
                       labelled=float(np.mean(labelled)), load_s=float(np.mean(loads)),
                       frame_s=frame_s)


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


@dataclass(frozen=True)
class Calibration:
    """Seconds measured on the device: per fine-tuning step by ``(encoder, batch_size,
    augmentation)``, per validation slice and per test subject by encoder, per pretraining
    step by pretraining key."""

    finetune_step_s: dict[tuple[str, int, str], float]
    forward_slice_s: dict[str, float]
    evaluate_subject_s: dict[str, float]
    pretrain_step_s: dict[str, float]


def finetune_step_key(spec: CellSpec) -> tuple[str, int, str]:
    """What a fine-tuning step's time depends on, beyond the grid's image size."""
    return spec.encoder, spec.finetune.batch_size, spec.augmentation


def cell_steps(spec: CellSpec, adapter: DatasetAdapter, counts: SliceCounts) -> tuple[int, int]:
    """``(training steps, validation passes)`` of a cell, counted as `train.finetune` does."""
    setting = Setting(spec.setting)
    subjects = cell_subjects(adapter, spec.budget, spec.seed, setting)
    n = counts.labelled_slices(subjects.labelled, setting.train_phases)
    batch = min(spec.finetune.batch_size, max(1, int(n)))
    per_epoch = steps_per_epoch(int(n), batch)
    steps = max(1, round(spec.finetune.epochs * per_epoch))
    if not spec.finetune.val_every or not subjects.val:
        return steps, 0
    # Validation runs on log steps that end a validation interval, and after the last step.
    every = math.lcm(LOG_EVERY, spec.finetune.val_every * per_epoch)
    return steps, steps // every + (steps % every != 0)


def cell_seconds(spec: CellSpec, adapter: DatasetAdapter, counts: SliceCounts,
                 calibration: Calibration) -> float:
    """Estimated seconds of one cell: training steps, validation passes, test evaluation."""
    setting = Setting(spec.setting)
    subjects = cell_subjects(adapter, spec.budget, spec.seed, setting)
    steps, val_passes = cell_steps(spec, adapter, counts)
    val_slices = counts.labelled_slices(subjects.val, setting.train_phases)
    return (steps * calibration.finetune_step_s[finetune_step_key(spec)]
            + val_passes * val_slices * calibration.forward_slice_s[spec.encoder]
            + len(subjects.test) * calibration.evaluate_subject_s[spec.encoder])


def pretrain_step_count(spec: PretrainSpec, adapter: DatasetAdapter, counts: SliceCounts) -> int:
    """Steps of a pretraining job, counted as `train.pretrain` does."""
    pool = int(counts.pool_slices(adapter.default_split()["train"]))
    batch = max(1, min(spec.batch_size, pool))
    return max(1, round(spec.epochs * steps_per_epoch(pool, batch)))


def preparation_seconds(adapter: DatasetAdapter, counts: SliceCounts) -> float:
    """Seconds to build the slice cache (0 when built): every subject loaded, every frame of
    the pretraining pool and the labelled frames of the others resampled."""
    if counts.cache is not None:
        return 0.0
    ids = adapter.subject_ids()
    pool = set(adapter.default_split()["train"]) & set(ids)
    frames = len(pool) * counts.frames + (len(ids) - len(pool)) * 2
    return len(ids) * counts.load_s + frames * counts.frame_s


def calibration_batch(batch: int, size: int, device: torch.device) -> int:
    """The batch a calibration step runs at: the grid's own on an accelerator; on a CPU at
    most `CPU_CALIBRATION_PIXELS` of input, so that a study-sized step (SimCLR's 224 images
    of 256² px, twice over for its views) cannot exhaust the host's memory. CPU step time
    grows linearly with the batch, so the measurement is scaled back up (`calibrate`)."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, CPU_CALIBRATION_PIXELS // (size * size)))


def calibrate(cells: list[CellSpec], pretrain: list[PretrainSpec], adapter: DatasetAdapter,
              geometry: Geometry, device: torch.device) -> Calibration:
    """Time the grid's own training steps, validation, evaluation and pretraining steps."""
    finetune_s: dict[tuple[str, int, str], float] = {}
    size = geometry.size
    with tempfile.TemporaryDirectory() as tmp:
        for cell in cells:
            key = finetune_step_key(cell)
            if key not in finetune_s:
                batch = calibration_batch(cell.finetune.batch_size, size, device)
                run = finetune_steps(cell.encoder, size, batch, device, Path(tmp),
                                     cell.augmentation, cell.finetune.optim)
                finetune_s[key] = step_seconds(run, device) * cell.finetune.batch_size / batch
        pretrain_s = {}
        for spec in pretrain:
            batch = calibration_batch(spec.batch_size, size, device)
            run = pretrain_steps(spec.method, spec.encoder, size, batch, device, Path(tmp),
                                 dict(spec.hparams), spec.optim)
            pretrain_s[spec.key] = step_seconds(run, device) * spec.batch_size / batch
    encoders = sorted({c.encoder for c in cells})
    forward_s = {e: forward_seconds_per_slice(e, size, calibration_batch(
        max(c.finetune.batch_size for c in cells if c.encoder == e), size, device), device)
        for e in encoders}
    test = adapter.default_split()["test"][:1]
    evaluate_s = {e: _evaluate_seconds(e, adapter, test, geometry, device) for e in encoders}
    return Calibration(finetune_s, forward_s, evaluate_s, pretrain_s)


def _evaluate_seconds(encoder: str, adapter: DatasetAdapter, subjects: list[str],
                      geometry: Geometry, device: torch.device) -> float:
    """Seconds to load, predict and score one test subject (0 without test subjects)."""
    if not subjects:
        return 0.0
    net = create_net(encoder, img_size=geometry.size).to(device)
    return timed(lambda: evaluate(net, (adapter.load(s) for s in subjects), geometry, device,
                                  {}, show_progress=False), device) / len(subjects)


def describe_plan(plan: Plan, cells: tuple[CellSpec, ...], store: StoreWriter, device: str | None = None,
                  calibrate: bool = True, startup_s: float = 0.0) -> str:
    """The dry-run text: jobs with their state, and the estimated time still needed.

    ``startup_s``: what the run spends before its first job (imports, planning, checking
    the data), as this dry run measured it on itself.
    """
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
        lines.extend(_estimate(plan, todo_cells, todo_pre, dev, startup_s))
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.25 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.2f} h"


def _estimate(plan: Plan, cells: list[CellSpec], pretrain: list[PretrainSpec],
              device: torch.device, startup_s: float) -> list[str]:
    data = plan.grid.data
    adapter = adapter_for(data)
    geometry = Geometry(data.image_size, data.spacing_mm)
    counts = measure_counts(adapter, geometry)
    calibration = calibrate(cells, pretrain, adapter, geometry, device)
    source = "the slice cache" if counts.cache is not None else \
        f"{SAMPLE_SUBJECTS} sampled subjects: {counts.frames:.0f} frames × {counts.slices:.1f} slices"
    lines = [f"\ntime estimate on {device_description(device)}, one job at a time (steps timed "
             f"now; slice counts from {source}):"]
    lines.append(f"  start-up (imports, planning, data checks): {duration(startup_s)}")
    preparation_s = preparation_seconds(adapter, counts)
    total_s = startup_s + preparation_s
    if preparation_s:
        lines.append(f"  data preparation: {len(adapter.subject_ids())} subjects → "
                     f"{duration(preparation_s)}")
    for spec in pretrain:
        steps = pretrain_step_count(spec, adapter, counts)
        step_s = calibration.pretrain_step_s[spec.key]
        total_s += steps * step_s
        lines.append(f"  pretrain {spec.method} on {spec.encoder}: {steps:,} steps × "
                     f"{step_s:.3f} s (batch {spec.batch_size}) → {duration(steps * step_s)}")
    for key in sorted({finetune_step_key(c) for c in cells}):
        group = [c for c in cells if finetune_step_key(c) == key]
        steps = sum(cell_steps(c, adapter, counts)[0] for c in group)
        seconds = sum(cell_seconds(c, adapter, counts, calibration) for c in group)
        total_s += seconds
        encoder, batch, augmentation = key
        lines.append(f"  fine-tune {encoder} (batch {batch}, augmentation {augmentation}): "
                     f"{len(group)} cells, {steps:,} steps × "
                     f"{calibration.finetune_step_s[key]:.3f} s, with validation and "
                     f"{calibration.evaluate_subject_s[encoder]:.1f} s per test subject → "
                     f"{duration(seconds)}")
    lines.append(f"  total: {duration(total_s)} on this device "
                 f"({'GPU' if device.type == 'cuda' else 'CPU'}-hours {total_s / 3600:,.2f}; "
                 f"the HTML report not included)")
    return lines
