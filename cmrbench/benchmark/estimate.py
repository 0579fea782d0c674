"""``cmrbench run --dry-run``: the jobs of a plan, which are done, the time still needed and
each job's peak memory (also what ``run`` checks before it starts).

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
job does (`throughput.step_seconds`). Start-up (imports, planning, data checks) is what the
dry run itself took before estimating; the HTML report is not counted.

Memory (`JobMemory`): the peak of the real loop's first steps on synthetic slices, from the
net's creation on (`devices.peak_memory`: resident set on a CPU, allocated bytes on CUDA),
at the calibration batch and half of it, extended along that line to the job's batch (for a
cell, or the peak of evaluating one real test subject if larger); plus the slices the job
holds, counted (a labelled slice is 3 bytes per pixel, a pool slice 2).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cmrbench.benchmark.data import adapter_for, pool_fits_on_device, selected_subjects
from cmrbench.benchmark.devices import (
    MemoryBudget,
    device_description,
    gigabytes,
    memory_budget,
    peak_memory,
    resolve_device,
)
from cmrbench.benchmark.evaluate import evaluate
from cmrbench.benchmark.executors import cells_to_refit
from cmrbench.benchmark.grid import SCALES, Plan
from cmrbench.benchmark.spec import (
    CellSpec,
    DataSpec,
    ExternalSpec,
    PoolSource,
    PretrainSpec,
    canonical_json,
)
from cmrbench.benchmark.throughput import (
    finetune_steps,
    forward_seconds_per_slice,
    pretrain_steps,
    step_seconds,
    timed,
)
from cmrbench.benchmark.train import LOG_EVERY, steps_per_epoch
from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.preprocess import (
    Geometry,
    SliceCache,
    load_slice_cache,
    preprocess_frames,
    slice_cache_folder,
)
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.datasets.subject import BACKGROUND
from cmrbench.nets import create_net, net_facts
from cmrbench.store import StoreWriter

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

IMAGE_BYTES, LABEL_BYTES = 2, 1
"""Bytes per pixel of a slice a job holds: float16 image, uint8 label."""
POOL_SLICE_BYTES = 28
"""Bytes per pretraining-pool slice beside its pixels: position, subject, frame and centre."""


def measure_counts(
    adapter: DatasetAdapter, geometry: Geometry, pool: list[str] | None = None
) -> SliceCounts:
    """`SliceCounts` of ``adapter``: exact from the slice cache of ``pool`` (default: the
    adapter's pretraining pool) when it is built, else load and resample the first
    `SAMPLE_SUBJECTS` subjects (timed)."""
    pool = adapter.pretraining_pool() if pool is None else pool
    if (slice_cache_folder(adapter, geometry, pool) / "index.parquet").exists():
        cache = load_slice_cache(adapter, geometry, pool, progress=False)
        return SliceCounts(
            cache=cache, frames=0.0, slices=0.0, labelled=0.0, load_s=0.0, frame_s=0.0
        )
    loads: list[float] = []
    frames: list[int] = []
    slices: list[int] = []
    labelled: list[int] = []
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
    return SliceCounts(
        cache=None,
        frames=float(np.mean(frames)),
        slices=float(np.mean(slices)),
        labelled=float(np.mean(labelled)),
        load_s=float(np.mean(loads)),
        frame_s=frame_s,
    )


def check_cells_against_data(cells: tuple[CellSpec, ...]) -> None:
    """Resolve every cell's subjects before anything runs, so that a budget larger than
    the training set (or a setting with no subject) fails at once with a clear message."""
    adapters: dict[str, DatasetAdapter] = {}
    seen: set[str] = set()
    for cell in cells:
        data_key = canonical_json(cell.data)  # options may hold dicts: not hashable
        key = f"{data_key}|{cell.budget}|{cell.seed}|{cell.setting}"
        if key in seen:
            continue
        seen.add(key)
        if data_key not in adapters:
            adapters[data_key] = adapter_for(cell.data)
        cell_subjects(adapters[data_key], cell.budget, cell.seed, Setting(cell.setting))


@dataclass(frozen=True)
class StepMemory:
    """Peak memory of a training step at batch ``b``: ``fixed + per_sample · b`` bytes (net,
    gradients and optimizer state; activations and views per image), fitted through the
    peaks of two calibration batches."""

    fixed: float
    per_sample: float

    def at(self, batch: int) -> float:
        return self.fixed + self.per_sample * batch

    @classmethod
    def fit(cls, small: tuple[int, float], large: tuple[int, float]) -> StepMemory:
        """The line through two ``(batch, bytes)`` peaks (its intercept at least 0); one
        batch, or a line that does not rise (measurement noise), gives ``bytes / batch`` per
        sample, an upper bound for larger batches."""
        (b0, m0), (b1, m1) = small, large
        slope = (m1 - m0) / (b1 - b0) if b1 > b0 else 0.0
        if slope <= 0:
            return cls(0.0, m1 / b1)
        return cls(max(0.0, m1 - slope * b1), slope)


@dataclass(frozen=True)
class Calibration:
    """Measured on the device: seconds per fine-tuning step by ``(encoder, batch_size,
    augmentation)``, per validation slice and per test subject by encoder, per pretraining
    step by `pretrain_step_key`; the step memory of the same keys, and the peak bytes of
    evaluating one test subject by encoder."""

    finetune_step_s: dict[tuple[str, int, str], float]
    forward_slice_s: dict[str, float]
    evaluate_subject_s: dict[str, float]
    pretrain_step_s: dict[str, float]
    finetune_memory: dict[tuple[str, int, str], StepMemory]
    pretrain_memory: dict[str, StepMemory]
    evaluate_memory: dict[str, float]


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


def cell_seconds(
    spec: CellSpec, adapter: DatasetAdapter, counts: SliceCounts, calibration: Calibration
) -> float:
    """Estimated seconds of one cell: training steps, validation passes, test evaluation."""
    setting = Setting(spec.setting)
    subjects = cell_subjects(adapter, spec.budget, spec.seed, setting)
    steps, val_passes = cell_steps(spec, adapter, counts)
    val_slices = counts.labelled_slices(subjects.val, setting.train_phases)
    return (
        steps * calibration.finetune_step_s[finetune_step_key(spec)]
        + val_passes * val_slices * calibration.forward_slice_s[spec.encoder]
        + len(subjects.test) * calibration.evaluate_subject_s[spec.encoder]
    )


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


def pretraining_pools(
    pretrain: Sequence[PretrainSpec], data: DataSpec, adapter: DatasetAdapter, counts: SliceCounts
) -> dict[str, PoolCounts]:
    """Every dataset of the jobs' pools by its canonical JSON, the grid's own (``data``, its
    ``adapter``'s pretraining pool counted by ``counts``) included."""
    pools = {
        canonical_json(PoolSource(data)): PoolCounts(adapter, adapter.pretraining_pool(), counts)
    }
    for source in (s for spec in pretrain for s in spec.pool_sources):
        if canonical_json(source) not in pools:
            pools[canonical_json(source)] = pool_counts(source)
    return pools


def preparation_seconds(
    adapter: DatasetAdapter, counts: SliceCounts, pool: list[str] | None = None
) -> float:
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


StepRun = Callable[[int], Callable[[int], None]]
"""``make(batch)`` builds a training loop on synthetic slices and returns its ``run(n)``."""


def calibrate_step(
    make: StepRun,
    job_batch: int,
    size: int,
    synthetic_bytes: int,
    device: torch.device,
    timing: bool = True,
) -> tuple[float, StepMemory]:
    """Seconds per step at ``job_batch`` (nan unless ``timing``) and the step's memory.

    Both are measured at the `calibration_batch`; memory also at half of it, to fit
    `StepMemory`'s line, from the creation of the net to the last step. ``synthetic_bytes``
    per sample are the loop's synthetic slices, which a job's own slices replace
    (`job_memory` counts those). A CUDA step that runs out of memory while calibrating
    needs more than the device has: its memory reads as infinite.
    """
    batch = calibration_batch(job_batch, size, device)
    peaks: list[tuple[int, float]] = []
    seconds = math.nan
    try:
        for trial in dict.fromkeys((max(1, batch // 2), batch)):
            with peak_memory(device) as peak:
                run = make(trial)
                if timing and trial == batch:
                    seconds = step_seconds(run, device) * job_batch / batch
                else:
                    run(2)
            peaks.append((trial, max(0.0, peak.bytes - synthetic_bytes * trial)))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return seconds, StepMemory(math.inf, math.inf)
    return seconds, StepMemory.fit(peaks[0], peaks[-1])


def synthetic_bytes_per_sample(size: int, labelled: bool) -> int:
    """Bytes of the synthetic slices `throughput` loops hold per sample of their batch
    (4 batches of float16 images, and uint8 labels when ``labelled``)."""
    return 4 * size * size * (IMAGE_BYTES + (LABEL_BYTES if labelled else 0))


def calibrate(
    cells: list[CellSpec],
    pretrain: list[PretrainSpec],
    adapter: DatasetAdapter,
    geometry: Geometry,
    device: torch.device,
    timing: bool = True,
) -> Calibration:
    """Time (with ``timing``) and measure the memory of the grid's own training steps and of
    the evaluation of one test subject, and time validation (with ``timing``)."""
    finetune_s: dict[tuple[str, int, str], float] = {}
    finetune_mem: dict[tuple[str, int, str], StepMemory] = {}
    pretrain_s: dict[str, float] = {}
    pretrain_mem: dict[str, StepMemory] = {}
    size = geometry.size
    with tempfile.TemporaryDirectory() as tmp:
        for cell in cells:
            step_key = finetune_step_key(cell)
            if step_key not in finetune_s:
                finetune_s[step_key], finetune_mem[step_key] = calibrate_step(
                    partial(
                        finetune_steps,
                        cell.encoder,
                        size,
                        device=device,
                        folder=Path(tmp),
                        augmentation=cell.augmentation,
                        optim=cell.finetune.optim,
                    ),
                    cell.finetune.batch_size,
                    size,
                    synthetic_bytes_per_sample(size, True),
                    device,
                    timing,
                )
        for spec in pretrain:
            key = pretrain_step_key(spec)
            if key in pretrain_mem:
                continue
            pretrain_s[key], pretrain_mem[key] = calibrate_step(
                partial(
                    pretrain_steps,
                    spec.method,
                    spec.encoder,
                    size,
                    device=device,
                    folder=Path(tmp),
                    hparams=dict(spec.hparams),
                    optim=spec.optim,
                ),
                spec.batch_size,
                size,
                synthetic_bytes_per_sample(size, False),
                device,
                timing,
            )
    forward_s: dict[str, float] = {}
    evaluate_s: dict[str, float] = {}
    evaluate_mem: dict[str, float] = {}
    encoders = sorted({c.encoder for c in cells})
    if timing:
        forward_s = {
            e: forward_seconds_per_slice(
                e,
                size,
                calibration_batch(
                    max(c.finetune.batch_size for c in cells if c.encoder == e), size, device
                ),
                device,
            )
            for e in encoders
        }
    test = adapter.default_split()["test"][:1]
    for encoder in encoders:
        evaluate_s[encoder], evaluate_mem[encoder] = _evaluate_one(
            encoder, adapter, test, geometry, device
        )
    return Calibration(
        finetune_s, forward_s, evaluate_s, pretrain_s, finetune_mem, pretrain_mem, evaluate_mem
    )


def _evaluate_one(
    encoder: str,
    adapter: DatasetAdapter,
    subjects: list[str],
    geometry: Geometry,
    device: torch.device,
) -> tuple[float, float]:
    """Seconds and peak bytes to load, predict and score one test subject (0 without one)."""
    if not subjects:
        return 0.0, 0.0
    with peak_memory(device) as peak:
        net = create_net(encoder, img_size=geometry.size).to(device)
        seconds = timed(
            lambda: evaluate(
                net, (adapter.load(s) for s in subjects), geometry, device, {}, show_progress=False
            ),
            device,
        )
    return seconds / len(subjects), peak.bytes


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class JobMemory:
    """A job's estimated peak memory on its device: the slices it holds there
    (``data_bytes``, counted: a cell's labelled training and validation slices, a
    pretraining job's pool when it sits on the device) plus the larger of its training step
    at the job's batch (`StepMemory`, measured) and, for a cell, the evaluation of a test
    subject (``evaluate_bytes``, measured on one). Beside it, a worker process holds Python
    and torch (`memory_budget` counts those)."""

    job: CellSpec | PretrainSpec
    step: StepMemory
    data_bytes: float
    evaluate_bytes: float = 0.0

    @property
    def batch(self) -> int:
        job = self.job
        return job.finetune.batch_size if isinstance(job, CellSpec) else job.batch_size

    @property
    def bytes(self) -> float:
        return self.data_bytes + max(self.step.at(self.batch), self.evaluate_bytes)

    def largest_batch(self, budget: float) -> int:
        """The largest batch whose estimate fits ``budget`` bytes (0: none does)."""
        room = budget - self.data_bytes - self.step.fixed
        if (
            not math.isfinite(room)
            or self.step.per_sample <= 0
            or self.data_bytes + self.evaluate_bytes > budget
        ):
            return 0
        return max(0, int(room // self.step.per_sample))


def job_memory(
    jobs: list[CellSpec | PretrainSpec],
    adapter: DatasetAdapter,
    counts: SliceCounts,
    pools: dict[str, PoolCounts],
    calibration: Calibration,
    device: torch.device,
) -> list[JobMemory]:
    """`JobMemory` of each job from its calibrated step (and evaluation) and its slices (a
    pretraining job's: every dataset of its pool, `pretraining_pools`)."""
    out = []
    for job in jobs:
        pixels = job.data.image_size**2
        if isinstance(job, CellSpec):
            setting = Setting(job.setting)
            subjects = cell_subjects(adapter, job.budget, job.seed, setting)
            slices = counts.labelled_slices(
                subjects.labelled, setting.train_phases
            ) + counts.labelled_slices(subjects.val, setting.train_phases)
            data = slices * pixels * (IMAGE_BYTES + LABEL_BYTES)
            out.append(
                JobMemory(
                    job,
                    calibration.finetune_memory[finetune_step_key(job)],
                    data,
                    calibration.evaluate_memory[job.encoder],
                )
            )
        else:
            pool = pool_slices(job, pools) * (pixels * IMAGE_BYTES + POOL_SLICE_BYTES)
            data = pool if pool_fits_on_device(pool, device) else 0.0
            out.append(JobMemory(job, calibration.pretrain_memory[pretrain_step_key(job)], data))
    return out


def pool_slices(spec: PretrainSpec, pools: dict[str, PoolCounts]) -> float:
    """Slices of ``spec``'s pool: the sum over its datasets (`pretraining_pools`)."""
    return sum(pools[canonical_json(source)].slices for source in spec.pool_sources)


def estimate_memory(
    plan: Plan, cells: list[CellSpec], pretrain: list[PretrainSpec], device: torch.device
) -> list[JobMemory]:
    """The `JobMemory` of each of ``pretrain`` and ``cells`` on ``device``: their steps run
    now on synthetic slices and one test subject evaluated (no timing), their slices counted
    from the slice caches (or a few sampled subjects when one is not built)."""
    data = plan.grid.data
    adapter = adapter_for(data)
    geometry = Geometry(data.image_size, data.spacing_mm)
    counts = measure_counts(adapter, geometry)
    calibration = calibrate(cells, pretrain, adapter, geometry, device, timing=False)
    return job_memory(
        [*pretrain, *cells],
        adapter,
        counts,
        pretraining_pools(pretrain, data, adapter, counts),
        calibration,
        device,
    )


def describe_job(job: CellSpec | PretrainSpec) -> str:
    """``pretraining job mim on unet2d (batch 128, 256 px)`` or ``cell scratch on unet2d,
    budget 10, seed 0, augmentation paper (batch 32, 256 px)``, with its store folder."""
    size = f"{job.data.image_size} px"
    if isinstance(job, PretrainSpec):
        return (
            f"pretraining job {job.method} on {job.encoder} (batch {job.batch_size}, {size}; "
            f"pretrain/{job.folder_name})"
        )
    return (
        f"cell {job.method} on {job.encoder}, budget {job.budget}, seed {job.seed}, "
        f"augmentation {job.augmentation}, setting {job.setting} (batch "
        f"{job.finetune.batch_size}, {size}; cells/{job.folder_name})"
    )


def memory_advice(memory: JobMemory, budget: MemoryBudget, jobs: int = 1) -> str:
    """What would make a job fit ``budget``: the CPU scale, a batch that fits and the grid
    key that sets it, a smaller image, fewer workers, or ``--force``."""
    job, small = memory.job, SCALES["small"]
    knobs = []
    if not job.data.scale and (
        job.data.image_size > small.image_size or job.encoder not in small.nets.values()
    ):
        net = small.nets.get(net_facts(job.encoder).family, job.encoder)
        size = min(job.data.image_size, small.image_size)
        knobs.append(
            f"--scale small ({net} at {size} px of "
            f"{job.data.image_size * job.data.spacing_mm / size:g} mm)"
        )
    fits = memory.largest_batch(budget.bytes)
    key = (
        f"pretrain.methods.{job.method}.batch_size"
        if isinstance(job, PretrainSpec)
        else "finetune.batch_size"
    )
    if 0 < fits < memory.batch:
        knobs.append(f"a batch of at most {fits} ({key} in a grid file)")
    else:
        knobs.append(f"a smaller batch ({key} in a grid file)")
    knobs.append("a smaller dataset.image_size (activations grow with its square)")
    if jobs > 1:
        knobs.append("fewer --jobs (they share the memory)")
    knobs.append("--force to run it anyway")
    return "; ".join(knobs)


def describe_plan(
    plan: Plan,
    cells: tuple[CellSpec, ...],
    store: StoreWriter,
    device: str | None = None,
    calibrate: bool = True,
    startup_s: float = 0.0,
    jobs: int = 1,
    max_memory_gb: float | None = None,
) -> str:
    """The dry-run text: jobs with their state (and each job's peak memory when
    ``calibrate``), the estimated time still needed and the largest job's memory against
    what each of ``jobs`` workers may use (`memory_budget`).

    ``startup_s``: what the run spends before its first job (imports, planning, checking
    the data), as this dry run measured it on itself.
    """
    dev = resolve_device(device)
    needed = {c.pretrain_key for c in cells if c.pretrain}
    pretrain = [p for p in plan.pretrain if p.key in needed]
    todo_cells = [c for c in cells if not store.is_done(c)]
    todo_pre = [p for p in pretrain if not store.is_done(p)]
    external = [e for c in cells for e in plan.external_of(c)]
    todo_external = [e for e in external if not store.is_done(e)]
    refit = cells_to_refit(plan, store, cells)
    estimate = (
        _Estimate.measure(plan, todo_cells, todo_pre, dev, todo_external, refit)
        if calibrate and (todo_cells or todo_pre or todo_external)
        else None
    )
    memory = {m.job.key: m for m in estimate.memory} if estimate else {}
    lines = [
        f"grid {plan.grid.name} ({plan.grid.source})",
        f"{len(pretrain)} pretraining jobs, {len(cells)} fine-tuning cells",
        "",
        "pretraining jobs:",
    ]
    for p in pretrain:
        lines.append(
            f"  [{_state(store, p):>6}] {p.folder_name}  ({p.epochs:g} epochs, batch "
            f"{p.batch_size}){_memory_note(memory.get(p.key))}"
        )
    lines.append("cells:")
    for c in cells:
        lines.append(f"  [{_state(store, c):>6}] {c.folder_name}{_memory_note(memory.get(c.key))}")
    lines.extend(_external_lines(plan, external, todo_external, refit))
    lines.append(
        f"\nto do: {len(todo_pre)} pretraining jobs, {len(todo_cells)} cells"
        + (
            f", {len(todo_external)} external evaluations ({len(refit)} cells fine-tuned "
            f"again for them)"
            if external
            else ""
        )
    )
    if estimate is not None:
        lines.extend(estimate.time_lines(startup_s))
        lines.extend(estimate.memory_lines(memory_budget(dev, jobs, max_memory_gb), jobs))
    return "\n".join(lines)


def _external_lines(
    plan: Plan, external: list[ExternalSpec], todo: list[ExternalSpec], refit: list[CellSpec]
) -> list[str]:
    """Per external test set, how many cells have scored it; the cells to fine-tune again."""
    if not external:
        return []
    lines = ["external test sets:"]
    for test_set in plan.grid.evaluate_on:
        planned = [e for e in external if e.external == test_set]
        waiting = [e for e in todo if e.external == test_set]
        lines.append(
            f"  {test_set.label} ({test_set.data.dataset}, {test_set.subjects} "
            f"subjects): {len(planned) - len(waiting)} of {len(planned)} cells scored"
        )
    if refit:
        lines.append(
            "  done cells without kept fine-tuned weights, fine-tuned again to score "
            "their new external sets (in-domain scores unchanged):"
        )
        lines.extend(f"    [ refit] {c.folder_name}" for c in refit)
    return lines


def _state(store: StoreWriter, job: CellSpec | PretrainSpec) -> str:
    return "done" if store.is_done(job) else ("failed" if store.has_error(job) else "todo")


def _memory_note(memory: JobMemory | None) -> str:
    return f"  ~{gigabytes(memory.bytes)}" if memory is not None else ""


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.25 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.2f} h"


@dataclass(frozen=True)
class _Estimate:
    """What the dry run measured for the jobs still to do."""

    plan: Plan
    cells: list[CellSpec]
    pretrain: list[PretrainSpec]
    external: list[ExternalSpec]
    refit: list[CellSpec]
    device: torch.device
    adapter: DatasetAdapter
    geometry: Geometry
    counts: SliceCounts
    pools: dict[str, PoolCounts]
    calibration: Calibration
    memory: list[JobMemory]

    @classmethod
    def measure(
        cls,
        plan: Plan,
        cells: list[CellSpec],
        pretrain: list[PretrainSpec],
        device: torch.device,
        external: list[ExternalSpec],
        refit: list[CellSpec],
    ) -> _Estimate:
        data = plan.grid.data
        adapter = adapter_for(data)
        geometry = Geometry(data.image_size, data.spacing_mm)
        counts = measure_counts(adapter, geometry)
        pools = pretraining_pools(pretrain, data, adapter, counts)
        calibration = calibrate([*cells, *refit], pretrain, adapter, geometry, device)
        memory = job_memory([*pretrain, *cells], adapter, counts, pools, calibration, device)
        return cls(
            plan,
            cells,
            pretrain,
            external,
            refit,
            device,
            adapter,
            geometry,
            counts,
            pools,
            calibration,
            memory,
        )

    def time_lines(self, startup_s: float) -> list[str]:
        adapter, counts, calibration, device = (
            self.adapter,
            self.counts,
            self.calibration,
            self.device,
        )
        source = (
            "the slice cache"
            if counts.cache is not None
            else (
                f"{SAMPLE_SUBJECTS} sampled subjects: {counts.frames:.0f} frames × "
                f"{counts.slices:.1f} slices"
            )
        )
        lines = [
            f"\ntime estimate on {device_description(device)}, one job at a time (steps "
            f"timed now; slice counts from {source}):"
        ]
        lines.append(f"  start-up (imports, planning, data checks): {duration(startup_s)}")
        preparation_s = preparation_seconds(adapter, counts)
        total_s = startup_s + preparation_s
        if preparation_s:
            lines.append(
                f"  data preparation: {len(adapter.subject_ids())} subjects → "
                f"{duration(preparation_s)}"
            )
        for pool in list(self.pools.values())[1:]:  # the grid's own dataset is counted above
            seconds = preparation_seconds(pool.adapter, pool.counts, pool.subjects)
            total_s += seconds
            if seconds:
                lines.append(
                    f"  data preparation, pool {pool.adapter.name}: "
                    f"{len(pool.adapter.subject_ids())} subjects → {duration(seconds)}"
                )
        jobs: dict[str, list[PretrainSpec]] = {}
        for spec in self.pretrain:
            jobs.setdefault(pretrain_step_key(spec), []).append(spec)
        extra_s = 0.0
        for key, specs in jobs.items():
            spec = specs[0]
            steps = pretrain_step_count(spec, pool_slices(spec, self.pools))
            step_s = calibration.pretrain_step_s[key]
            seconds = len(specs) * steps * step_s
            total_s += seconds
            extra_s += (len(specs) - 1) * steps * step_s
            seeds = ", ".join(str(s.seed) for s in specs)
            lines.append(
                f"  pretrain {spec.method} on {spec.encoder}: {len(specs)} job(s) (seed "
                f"{seeds}) × {steps:,} steps × {step_s:.3f} s (batch {spec.batch_size}) "
                f"→ {duration(seconds)}"
            )
        if self.plan.grid.pretrain_seeds == "tied" and extra_s:
            lines.append(
                f"  pretrain_seeds: tied pretrains one checkpoint per fine-tuning seed: "
                f"{sum(len(v) - 1 for v in jobs.values())} more pretraining job(s) than "
                f"single, +{duration(extra_s)}"
            )
        for step_key in sorted({finetune_step_key(c) for c in self.cells}):
            group = [c for c in self.cells if finetune_step_key(c) == step_key]
            steps = sum(cell_steps(c, adapter, counts)[0] for c in group)
            seconds = sum(cell_seconds(c, adapter, counts, calibration) for c in group)
            total_s += seconds
            encoder, batch, augmentation = step_key
            lines.append(
                f"  fine-tune {encoder} (batch {batch}, augmentation {augmentation}): "
                f"{len(group)} cells, {steps:,} steps × "
                f"{calibration.finetune_step_s[step_key]:.3f} s, with validation and "
                f"{calibration.evaluate_subject_s[encoder]:.1f} s per test subject → "
                f"{duration(seconds)}"
            )
        seconds, external_lines = self.external_time()
        total_s += seconds
        lines.extend(external_lines)
        lines.append(
            f"  total: {duration(total_s)} on this device "
            f"({'GPU' if device.type == 'cuda' else 'CPU'}-hours {total_s / 3600:,.2f}; "
            f"the HTML report not included)"
        )
        return lines

    def external_time(self) -> tuple[float, list[str]]:
        """Seconds and lines for the external evaluations still to do: each set's subjects
        scored (timed on one of them) per cell, plus each refit cell's fine-tuning again."""
        cells = {c.key: c for c in self.plan.cells}
        total_s, lines = 0.0, []
        for test_set in self.plan.grid.evaluate_on:
            todo = [e for e in self.external if e.external == test_set]
            if not todo:
                continue
            set_adapter = adapter_for(test_set.data)
            subjects = selected_subjects(set_adapter, test_set.subjects)
            seconds = 0.0
            for encoder in sorted({cells[e.cell_key].encoder for e in todo}):
                n_cells = sum(cells[e.cell_key].encoder == encoder for e in todo)
                subject_s, _ = _evaluate_one(
                    encoder, set_adapter, subjects[:1], self.geometry, self.device
                )
                seconds += n_cells * len(subjects) * subject_s
            total_s += seconds
            lines.append(
                f"  external test set {test_set.label}: {len(todo)} cells × "
                f"{len(subjects)} subjects → {duration(seconds)}"
            )
        if self.refit:
            n_test = len(self.adapter.default_split()["test"])
            calibration = self.calibration
            seconds = sum(
                cell_seconds(c, self.adapter, self.counts, calibration)
                - n_test * calibration.evaluate_subject_s[c.encoder]
                for c in self.refit
            )
            total_s += seconds
            lines.append(
                f"  fine-tune again (weights not kept): {len(self.refit)} cells → "
                f"{duration(seconds)}"
            )
        return total_s, lines

    def memory_lines(self, budget: MemoryBudget | None, jobs: int) -> list[str]:
        largest = max(self.memory, key=lambda m: m.bytes)
        where = "GPU memory" if self.device.type == "cuda" else "RAM"
        lines = [
            f"\npeak memory per job ({where}, each job's step measured now at its batch, "
            f"plus the slices it holds; listed beside each job above):",
            f"  largest: {gigabytes(largest.bytes)}, {describe_job(largest.job)}",
        ]
        if budget is None:
            return [*lines, "  available: unknown on this system (not checked)"]
        over = [m for m in self.memory if m.bytes > budget.bytes]
        lines.append(f"  each job may use: {budget}")
        if over:
            lines.append(
                f"  {len(over)} job(s) exceed it and `run` would refuse them; to fit "
                f"the largest: {memory_advice(largest, budget, jobs)}"
            )
        return lines
