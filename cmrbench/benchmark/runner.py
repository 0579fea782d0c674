"""Run one pretraining job or one fine-tuning cell into the store (what every executor calls).

Every executor's workers call `run_job` with the run's `RunOptions` (device, CPU threads,
compile, checkpoints, progress; only the plugin folders and the cache folder reach a job
through the environment). Jobs are idempotent and safe to run from several processes at
once: a job whose ``result.json`` exists is skipped, and a job being computed by another
process is left to it (cells) or waited for (a pretraining job that a cell needs),
through ``flock`` locks that die with their process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from cmrbench.benchmark.checkpoints import load_checkpoint
from cmrbench.benchmark.evaluate import evaluate
from cmrbench.benchmark.spec import CellSpec, DataSpec, PretrainSpec
from cmrbench.benchmark.store import (ERROR, LOG, RESULT, JobLock, JsonlLog, Store,
                                      atomic_write_bytes, atomic_write_json, atomic_write_parquet)
from cmrbench.benchmark.train import LabelledSlices, SliceBatches, finetune, precision_ran, pretrain
from cmrbench.benchmark.transfer import state_dict_sha256, transfer_weights
from cmrbench.datasets import create_dataset
from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.preprocess import Geometry, SliceCache, load_slice_cache
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.errors import CmrbenchError
from cmrbench.methods import get_method
from cmrbench.nets import SegNet, create_net
from cmrbench.transforms.augment import BatchAugment

CHECKPOINT, LOOP_STATE = "checkpoint.pt", "loop_state.pt"


class RunOptionError(CmrbenchError, ValueError):
    """An impossible run option (a thread count below 1, ``--jobs`` with Slurm, ...)."""


@dataclass(frozen=True)
class RunOptions:
    """How a job runs, as every executor passes it to its workers and Slurm tasks.

    None of these is part of a spec: ``compile``, ``keep_checkpoints`` and ``progress``
    do not change results; the device and the CPU thread count can change the last bits
    of float sums (the README's "Reproducibility" says what is bit-identical), so every
    result records both.

    - ``devices``: "cpu", "cuda", "cuda:1" or a CUDA index ("1"); local worker processes
      take one each, round robin, and a job runs on the first; empty: CUDA when
      available, else the CPU.
    - ``threads``: torch's CPU threads per job; None keeps torch's default in this
      process, and the executors then fix it per worker (``cores // jobs`` locally,
      ``cpus_per_task`` on Slurm).
    - ``compile``: `torch.compile` the training steps (``run --compile``).
    - ``keep_checkpoints``: keep a cell's fine-tuning checkpoint after its result.
    - ``progress``: show progress bars.
    """

    devices: tuple[str, ...] = ()
    threads: int | None = None
    compile: bool = False
    keep_checkpoints: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise RunOptionError(f"threads must be at least 1, got {self.threads}")

    @property
    def device(self) -> torch.device:
        """The device a job runs on: the first of ``devices``, or `resolve_device`'s choice."""
        return resolve_device(self.devices[0] if self.devices else None)

    def for_worker(self, index: int, threads: int) -> "RunOptions":
        """The options of local worker process ``index``: its one device (round robin over
        ``devices``), ``threads`` unless set, and no progress bars (they would interleave)."""
        devices = (self.devices[index % len(self.devices)],) if self.devices else ()
        return dataclasses.replace(self, devices=devices, threads=self.threads or threads,
                                   progress=False)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch using ``threads`` CPU threads (None: leave them as they are)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str | None = None) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1", or "1" for "cuda:1"), or CUDA when available,
    else the CPU."""
    if name and name.isdigit():
        return torch.device("cuda", int(name))
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_description(device: torch.device) -> str:
    """Human-readable device name for provenance."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


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
                        center=slice_centers(cache, rows, center).to(target))


def _write_error(folder: Path, key: str, exc: BaseException) -> None:
    atomic_write_json(folder / ERROR, {"key": key, "error": f"{type(exc).__name__}: {exc}",
                                       "traceback": traceback.format_exc()})


# --------------------------------------------------------------------------- pretraining


def _compute(folder: Path, key: str, work: Callable[[], None]) -> None:
    """Run ``work``; on an exception write ``error.json`` (traceback included) and re-raise."""
    (folder / ERROR).unlink(missing_ok=True)
    try:
        work()
    except Exception as exc:
        _write_error(folder, key, exc)
        raise


def _run_once(run_dir: Path | str, spec: CellSpec | PretrainSpec,
              work: Callable[[Path], None]) -> str:
    """Run ``work(folder)`` for ``spec`` unless it is done or another process holds it.

    Returns ``"done"`` (computed now), ``"cached"`` (already done) or ``"busy"``.
    """
    store = Store(run_dir)
    folder = store.write_spec(spec)
    if store.is_done(spec):
        return "cached"
    lock = JobLock(folder)
    if not lock.acquire():
        return "busy"
    try:
        if store.is_done(spec):
            return "cached"
        _compute(folder, spec.key, lambda: work(folder))
        return "done"
    finally:
        lock.release()


def run_job(run_dir: Path | str, spec: CellSpec | PretrainSpec,
            options: RunOptions = RunOptions()) -> str:
    """Run one job (cell or pretraining) in this process with ``options.threads`` CPU
    threads and return its status; the entry point of every executor's workers."""
    with cpu_threads(options.threads):
        if isinstance(spec, CellSpec):
            return run_cell(run_dir, spec, options)
        return run_pretrain_job(run_dir, spec, options)


def run_pretrain_job(run_dir: Path | str, spec: PretrainSpec,
                     options: RunOptions = RunOptions()) -> str:
    """Compute a pretraining job unless done or held by another process (see `_run_once`)."""
    return _run_once(run_dir, spec, lambda folder: _pretrain_locked(folder, spec, options))


def _pretrain_locked(folder: Path, spec: PretrainSpec, options: RunOptions) -> None:
    started = time.time()
    device, show_progress = options.device, options.progress
    method_cls = get_method(spec.method)
    ctx = open_data(spec.data, show_progress)
    torch.manual_seed(spec.seed)
    net = create_net(spec.encoder, img_size=spec.data.image_size, **dict(spec.net_kwargs))
    augment = BatchAugment("paper", spec.data.image_size)
    method = method_cls(net, spec.data.image_size, augment, **dict(spec.hparams)).to(device)
    pool = pool_slices(ctx.cache, ctx.adapter.default_split()["train"], device, spec.center)
    losses = pretrain(method, pool, epochs=spec.epochs, batch_size=spec.batch_size,
                      optim=spec.optim, seed=spec.seed, device=device,
                      log=JsonlLog(folder / LOG), checkpoint=folder / LOOP_STATE,
                      show_progress=show_progress, compile=options.compile,
                      precision=spec.precision)
    buffer = io.BytesIO()
    torch.save({"net": {k: v.cpu() for k, v in method.net.state_dict().items()}}, buffer)
    atomic_write_bytes(folder / CHECKPOINT, buffer.getvalue())
    atomic_write_json(folder / RESULT, {
        "key": spec.key, "status": "done", "method": spec.method, "encoder": spec.encoder,
        "wall_time_s": time.time() - started, "final_loss": losses["train_loss_final"],
        "device": device_description(device), "pool_slices": len(pool),
        "precision": spec.precision, "precision_run": precision_ran(device, spec.precision),
        "center": spec.center, "views_centred_with_labels": spec.center == "labels"})
    (folder / LOOP_STATE).unlink(missing_ok=True)


def load_pretrained(run_dir: Path | str, spec: PretrainSpec,
                    options: RunOptions = RunOptions()) -> dict[str, torch.Tensor]:
    """The pretrained net's state dict, computing the job first (once) if needed.

    If another process holds the job, wait for it (blocking lock), then read its result.
    """
    store = Store(run_dir)
    folder = store.write_spec(spec)
    if not store.is_done(spec):
        lock = JobLock(folder)
        lock.acquire(blocking=True)
        try:
            if not store.is_done(spec):
                _compute(folder, spec.key, lambda: _pretrain_locked(folder, spec, options))
        finally:
            lock.release()
    return torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)["net"]


# --------------------------------------------------------------------------- fine-tuning cells


def run_cell(run_dir: Path | str, spec: CellSpec, options: RunOptions = RunOptions()) -> str:
    """Fine-tune and evaluate one cell unless done or held by another process.

    Returns ``"done"``, ``"cached"`` or ``"busy"``; a failure writes ``error.json`` and raises.
    """
    return _run_once(run_dir, spec, lambda folder: _cell_locked(run_dir, folder, spec, options))


def build_finetune_net(run_dir: Path | str, spec: CellSpec, options: RunOptions = RunOptions()
                       ) -> tuple[SegNet, dict[str, Any] | None]:
    """The cell's segmentation net: random init seeded by the cell, plus the pretrained parts
    the spec names (``spec.transfers``), from its pretraining job or its external checkpoint."""
    torch.manual_seed(spec.seed)
    net = create_net(spec.encoder, img_size=spec.data.image_size)
    if spec.checkpoint is not None:
        report = load_checkpoint(net, spec.checkpoint)
        return net, {"pretrain_key": None, "checkpoint": dataclasses.asdict(spec.checkpoint),
                     **report.to_json()}
    if spec.pretrain is None:
        return net, None
    state = load_pretrained(run_dir, spec.pretrain, options)
    report = transfer_weights(net, state, spec.transfers)
    return net, {"pretrain_key": spec.pretrain_key, **report.to_json()}


def _cell_locked(run_dir: Path | str, folder: Path, spec: CellSpec, options: RunOptions) -> None:
    started = time.time()
    device, show_progress = options.device, options.progress
    net, transfer = build_finetune_net(run_dir, spec, options)
    if transfer is not None:
        atomic_write_json(folder / "transfer.json", transfer)
    init_hash = state_dict_sha256(net)
    ctx = open_data(spec.data, show_progress)
    setting = Setting(spec.setting)
    who = cell_subjects(ctx.adapter, spec.budget, spec.seed, setting)
    ft = spec.finetune
    train = labelled_slices(ctx.cache, who.labelled, setting.train_phases, device, ft.center)
    val = labelled_slices(ctx.cache, who.val, setting.train_phases, device, ft.center)
    net.to(device)
    losses = finetune(net, train, val, epochs=ft.epochs, batch_size=ft.batch_size, optim=ft.optim,
                      augment=BatchAugment(spec.augmentation, spec.data.image_size), seed=spec.seed,
                      device=device, log=JsonlLog(folder / LOG), checkpoint=folder / LOOP_STATE,
                      val_every_epochs=ft.val_every, show_progress=show_progress,
                      params=net.param_groups(ft.optim.weight_decay, ft.layer_decay),
                      compile=options.compile, dice=ft.dice, precision=ft.precision)
    describe = {**spec.describe(), "n_labelled": len(who.labelled)}
    result = evaluate(net, (ctx.adapter.load(s) for s in who.test), ctx.geometry, device, describe,
                      seen_vendors=setting.vendors, show_progress=show_progress,
                      precision=ft.precision)
    atomic_write_parquet(folder / "subjects.parquet", result.subjects)
    atomic_write_parquet(folder / "clinical.parquet", result.clinical)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **result.slices)
    atomic_write_bytes(folder / "slices.npz", buffer.getvalue())
    atomic_write_json(folder / RESULT, {
        "key": spec.key, "status": "done", **{k: v for k, v in describe.items() if k != "cell_key"},
        "pretrain_key": spec.pretrain_key, "init_weights_sha256": init_hash,
        "wall_time_s": time.time() - started, "device": device_description(device),
        "train_subjects": who.labelled, "train_slices": len(train), **losses,
        "mean_dsc": result.mean_dsc, "protocol_version": spec.protocol_version,
        "precision": ft.precision, "precision_run": precision_ran(device, ft.precision),
        "dice": ft.dice, "center": ft.center,
        "pretrain_views_centred_with_labels": (spec.pretrain is not None
                                               and spec.pretrain.center == "labels")})
    if not options.keep_checkpoints:
        (folder / LOOP_STATE).unlink(missing_ok=True)
