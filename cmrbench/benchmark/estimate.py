"""``cmrbench run --dry-run``: the jobs of a plan, which are done, and the time still needed.

The estimate models a run as the harness spends it, each part timed here and now on the
current device with the grid's own settings (`cmrbench.benchmark.throughput`):

- fine-tuning: steps per cell (epochs × steps per epoch of the cell's labelled slices, as
  `train.finetune` counts them) × seconds per step of the real loop at the cell's batch size,
  augmentation and optimizer; plus validation passes (forward only) and the evaluation of
  every test subject (loading it, predicting, metrics), timed on one real test subject;
- pretraining: steps per job × seconds per step of the method's real loop with its resolved
  hyper-parameters, batch size and optimizer (timed once for the jobs that differ only in
  their seed: ``pretrain_seeds: tied`` plans one per fine-tuning seed, and the estimate says
  what that adds over ``single``);
- data preparation, when the slice cache is not built yet: loading and resampling every
  subject, timed on a few (for each dataset of a ``pretrain.pool`` too);
- external test sets (``evaluate_on``): each subject scored, timed on one of the set's own
  subjects, per cell still to score it; a done cell that kept no fine-tuned weights adds its
  fine-tuning again (a refit).

Slice counts come from the slice cache when it exists, else from a few sampled subjects.
Seconds per step are measured after a warm-up (the first steps pay one-off costs), at the
job's own batch size and settings, over enough steps to spread the loop's set-up as a short
job does (`throughput.step_seconds`). Start-up (imports, planning, data checks) is what the dry run itself took
before estimating; the HTML report is not counted.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmrbench.benchmark.evaluate import evaluate
from cmrbench.benchmark.executors import cells_to_refit
from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.data import adapter_for, selected_subjects
from cmrbench.benchmark.devices import device_description, resolve_device
from cmrbench.benchmark.spec import CellSpec, ExternalSpec, PoolSource, PretrainSpec, canonical_json
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


def measure_counts(adapter: DatasetAdapter, geometry: Geometry,
                   pool: list[str] | None = None) -> SliceCounts:
    """`SliceCounts` of ``adapter``: load and resample the first `SAMPLE_SUBJECTS` subjects
    (timed), and read the slice cache of ``pool`` (default: the adapter's pretraining pool)
    if it is built."""
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
    pool = adapter.pretraining_pool() if pool is None else pool
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
    step by `pretrain_step_key`."""

    finetune_step_s: dict[tuple[str, int, str], float]
    forward_slice_s: dict[str, float]
    evaluate_subject_s: dict[str, float]
    pretrain_step_s: dict[str, float]


def finetune_step_key(spec: CellSpec) -> tuple[str, int, str]:
    """What a fine-tuning step's time depends on, beyond the grid's image size."""
    return spec.encoder, spec.finetune.batch_size, spec.augmentation


def pretrain_step_key(spec: PretrainSpec) -> str:
    """What a pretraining step's time depends on: the job's spec whatever its seed."""
    return dataclasses.replace(spec, seed=0).key


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


def pretrain_step_count(spec: PretrainSpec, pool_slices: float) -> int:
    """Steps of a pretraining job on ``pool_slices`` slices, counted as `train.pretrain` does."""
    pool = int(pool_slices)
    batch = max(1, min(spec.batch_size, pool))
    return max(1, round(spec.epochs * steps_per_epoch(pool, batch)))


@dataclass(frozen=True)
class PoolCounts:
    """One dataset of a pretraining pool: its adapter, the subjects it gives, their counts."""

    adapter: DatasetAdapter
    subjects: list[str]
    counts: SliceCounts

    @property
    def slices(self) -> float:
        return self.counts.pool_slices(self.subjects)


def pool_counts(source: PoolSource) -> PoolCounts:
    """`PoolCounts` of one pool dataset (its slice cache read if built, else sampled)."""
    adapter = adapter_for(source.data)
    subjects = selected_subjects(adapter, source.subjects)
    geometry = Geometry(source.data.image_size, source.data.spacing_mm)
    return PoolCounts(adapter, subjects, measure_counts(adapter, geometry, subjects))


def preparation_seconds(adapter: DatasetAdapter, counts: SliceCounts,
                        pool: list[str] | None = None) -> float:
    """Seconds to build the slice cache (0 when built): every subject loaded, every frame of
    the pretraining ``pool`` (default: the adapter's) and the labelled frames of the others
    resampled."""
    if counts.cache is not None:
        return 0.0
    ids = adapter.subject_ids()
    pooled = set(adapter.pretraining_pool() if pool is None else pool) & set(ids)
    frames = len(pooled) * counts.frames + (len(ids) - len(pooled)) * 2
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
        pretrain_s: dict[str, float] = {}
        for spec in pretrain:
            if pretrain_step_key(spec) in pretrain_s:
                continue
            batch = calibration_batch(spec.batch_size, size, device)
            run = pretrain_steps(spec.method, spec.encoder, size, batch, device, Path(tmp),
                                 dict(spec.hparams), spec.optim)
            pretrain_s[pretrain_step_key(spec)] = (step_seconds(run, device) * spec.batch_size
                                                   / batch)
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
    external = [e for c in cells for e in plan.external_of(c)]
    todo_external = [e for e in external if not store.is_done(e)]
    refit = cells_to_refit(plan, store, cells)
    lines.extend(_external_lines(plan, external, todo_external, refit))
    lines.append(f"\nto do: {len(todo_pre)} pretraining jobs, {len(todo_cells)} cells"
                 + (f", {len(todo_external)} external evaluations ({len(refit)} cells fine-tuned "
                    f"again for them)" if external else ""))
    if calibrate and (todo_cells or todo_pre or todo_external):
        lines.extend(_estimate(plan, todo_cells, todo_pre, dev, startup_s, todo_external, refit))
    return "\n".join(lines)


def _external_lines(plan: Plan, external: list[ExternalSpec], todo: list[ExternalSpec],
                    refit: list[CellSpec]) -> list[str]:
    """Per external test set, how many cells have scored it; the cells to fine-tune again."""
    if not external:
        return []
    lines = ["external test sets:"]
    for test_set in plan.grid.evaluate_on:
        planned = [e for e in external if e.external == test_set]
        waiting = [e for e in todo if e.external == test_set]
        lines.append(f"  {test_set.label} ({test_set.data.dataset}, {test_set.subjects} "
                     f"subjects): {len(planned) - len(waiting)} of {len(planned)} cells scored")
    if refit:
        lines.append("  done cells without kept fine-tuned weights, fine-tuned again to score "
                     "their new external sets (in-domain scores unchanged):")
        lines.extend(f"    [ refit] {c.folder_name}" for c in refit)
    return lines


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.25 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.2f} h"


def _estimate(plan: Plan, cells: list[CellSpec], pretrain: list[PretrainSpec],
              device: torch.device, startup_s: float, external: Sequence[ExternalSpec] = (),
              refit: Sequence[CellSpec] = ()) -> list[str]:
    data = plan.grid.data
    adapter = adapter_for(data)
    geometry = Geometry(data.image_size, data.spacing_mm)
    counts = measure_counts(adapter, geometry)
    calibration = calibrate([*cells, *refit], pretrain, adapter, geometry, device)
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
    own = canonical_json(PoolSource(data))
    pools: dict[str, float] = {own: counts.pool_slices(adapter.pretraining_pool())}
    for pool_source in (s for spec in pretrain for s in spec.pool_sources):
        if canonical_json(pool_source) in pools:
            continue
        pool = pool_counts(pool_source)
        pools[canonical_json(pool_source)] = pool.slices
        seconds = preparation_seconds(pool.adapter, pool.counts, pool.subjects)
        total_s += seconds
        if seconds:
            lines.append(f"  data preparation, pool {pool_source.data.dataset}: "
                         f"{len(pool.adapter.subject_ids())} subjects → {duration(seconds)}")
    jobs: dict[str, list[PretrainSpec]] = {}
    for spec in pretrain:
        jobs.setdefault(pretrain_step_key(spec), []).append(spec)
    extra_s = 0.0
    for key, specs in jobs.items():
        spec = specs[0]
        steps = pretrain_step_count(spec, sum(pools[canonical_json(s)] for s in spec.pool_sources))
        step_s = calibration.pretrain_step_s[key]
        seconds = len(specs) * steps * step_s
        total_s += seconds
        extra_s += (len(specs) - 1) * steps * step_s
        seeds = ", ".join(str(s.seed) for s in specs)
        lines.append(f"  pretrain {spec.method} on {spec.encoder}: {len(specs)} job(s) (seed "
                     f"{seeds}) × {steps:,} steps × {step_s:.3f} s (batch {spec.batch_size}) → "
                     f"{duration(seconds)}")
    if plan.grid.pretrain_seeds == "tied" and extra_s:
        lines.append(f"  pretrain_seeds: tied pretrains one checkpoint per fine-tuning seed: "
                     f"{sum(len(v) - 1 for v in jobs.values())} more pretraining job(s) than "
                     f"single, +{duration(extra_s)}")
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
    seconds, external_lines = _external_estimate(plan, external, refit, adapter, counts,
                                                 calibration, geometry, device)
    total_s += seconds
    lines.extend(external_lines)
    lines.append(f"  total: {duration(total_s)} on this device "
                 f"({'GPU' if device.type == 'cuda' else 'CPU'}-hours {total_s / 3600:,.2f}; "
                 f"the HTML report not included)")
    return lines


def _external_estimate(plan: Plan, external: Sequence[ExternalSpec], refit: Sequence[CellSpec],
                       adapter: DatasetAdapter, counts: SliceCounts, calibration: Calibration,
                       geometry: Geometry, device: torch.device) -> tuple[float, list[str]]:
    """Seconds and lines for the external evaluations still to do: each set's subjects scored
    (timed on one of them) per cell, plus each refit cell's fine-tuning again."""
    cells = {c.key: c for c in plan.cells}
    total_s, lines = 0.0, []
    for test_set in plan.grid.evaluate_on:
        todo = [e for e in external if e.external == test_set]
        if not todo:
            continue
        set_adapter = adapter_for(test_set.data)
        subjects = selected_subjects(set_adapter, test_set.subjects)
        seconds = 0.0
        for encoder in sorted({cells[e.cell_key].encoder for e in todo}):
            n_cells = sum(cells[e.cell_key].encoder == encoder for e in todo)
            seconds += n_cells * len(subjects) * _evaluate_seconds(
                encoder, set_adapter, subjects[:1], geometry, device)
        total_s += seconds
        lines.append(f"  external test set {test_set.label}: {len(todo)} cells × "
                     f"{len(subjects)} subjects → {duration(seconds)}")
    if refit:
        n_test = len(adapter.default_split()["test"])
        seconds = sum(cell_seconds(c, adapter, counts, calibration)
                      - n_test * calibration.evaluate_subject_s[c.encoder] for c in refit)
        total_s += seconds
        lines.append(f"  fine-tune again (weights not kept): {len(refit)} cells → "
                     f"{duration(seconds)}")
    return total_s, lines
