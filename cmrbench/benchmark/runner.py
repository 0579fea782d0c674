"""Run one pretraining job or one fine-tuning cell into the store (what every executor calls).

Every executor's workers call `run_job` with the run's `RunOptions` (device, CPU threads,
compile, checkpoints, progress; only the plugin folders and the cache folder reach a job
through the environment). Jobs are idempotent and safe to run from several processes at
once: a job whose ``result.json`` exists is skipped, and a job being computed by another
process is left to it (cells) or waited for (a pretraining job that a cell needs),
through ``flock`` locks that die with their process.
"""

from __future__ import annotations

import dataclasses
import io
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from cmrbench.benchmark.checkpoints import load_checkpoint
from cmrbench.benchmark.data import labelled_slices, open_data, pool_slices
from cmrbench.benchmark.devices import (cpu_threads, describe_error, device_description,
                                        resolve_device)
from cmrbench.benchmark.evaluate import evaluate
from cmrbench.benchmark.spec import CellSpec, PretrainSpec, to_jsonable
from cmrbench.benchmark.train import finetune, precision_ran, pretrain
from cmrbench.benchmark.transfer import state_dict_sha256, transfer_weights
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.errors import CmrbenchError
from cmrbench.methods import get_method
from cmrbench.nets import SegNet, create_net
from cmrbench.store import (CellResult, ErrorRecord, JobLock, JsonlLog, PretrainResult, StoreWriter,
                            atomic_write_bytes)
from cmrbench.store.layout import CHECKPOINT, LOG, LOOP_STATE
from cmrbench.transforms.augment import BatchAugment


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


def write_job_spec(store: StoreWriter, spec: CellSpec | PretrainSpec) -> Path:
    """Create the job's folder with its ``spec.json`` (a cell's also names its
    ``pretrain_key`` and ``dataset`` at the top, for the reports) and return the folder."""
    index = ({"pretrain_key": spec.pretrain_key, "dataset": spec.data.dataset}
             if isinstance(spec, CellSpec) else {})
    return store.write_spec(spec, to_jsonable(spec), **index)


# --------------------------------------------------------------------------- pretraining


def _compute(store: StoreWriter, spec: CellSpec | PretrainSpec, work: Callable[[], None]) -> None:
    """Run ``work``; on an exception write ``error.json`` (traceback included) and re-raise."""
    store.clear_error(spec)
    try:
        work()
    except Exception as exc:
        store.write_error(spec, ErrorRecord(key=spec.key, error=describe_error(exc),
                                            traceback=traceback.format_exc()))
        raise


def _run_once(run_dir: Path | str, spec: CellSpec | PretrainSpec,
              work: Callable[[StoreWriter], None]) -> str:
    """Run ``work(store)`` for ``spec`` unless it is done or another process holds it.

    Returns ``"done"`` (computed now), ``"cached"`` (already done) or ``"busy"``.
    """
    store = StoreWriter(run_dir)
    folder = write_job_spec(store, spec)
    if store.is_done(spec):
        return "cached"
    lock = JobLock(folder)
    if not lock.acquire():
        return "busy"
    try:
        if store.is_done(spec):
            return "cached"
        _compute(store, spec, lambda: work(store))
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
    return _run_once(run_dir, spec, lambda store: _pretrain_locked(store, spec, options))


def _pretrain_locked(store: StoreWriter, spec: PretrainSpec, options: RunOptions) -> None:
    started = time.time()
    folder = store.job_dir(spec)
    device, show_progress = options.device, options.progress
    method_cls = get_method(spec.method)
    data = open_data(spec.data, show_progress)
    torch.manual_seed(spec.seed)
    net = create_net(spec.encoder, img_size=spec.data.image_size, **dict(spec.net_kwargs))
    augment = BatchAugment("paper", spec.data.image_size)
    method = method_cls(net, spec.data.image_size, augment, **dict(spec.hparams)).to(device)
    pool = pool_slices(data.cache, data.adapter.default_split()["train"], device, spec.center)
    losses = pretrain(method, pool, epochs=spec.epochs, batch_size=spec.batch_size,
                      optim=spec.optim, seed=spec.seed, device=device,
                      log=JsonlLog(folder / LOG), checkpoint=folder / LOOP_STATE,
                      show_progress=show_progress, compile=options.compile,
                      precision=spec.precision)
    buffer = io.BytesIO()
    torch.save({"net": {k: v.cpu() for k, v in method.net.state_dict().items()}}, buffer)
    atomic_write_bytes(folder / CHECKPOINT, buffer.getvalue())
    store.write_result(spec, PretrainResult(
        key=spec.key, method=spec.method, encoder=spec.encoder,
        wall_time_s=time.time() - started, final_loss=losses["train_loss_final"],
        device=device_description(device), pool_slices=len(pool),
        precision=spec.precision, precision_run=precision_ran(device, spec.precision),
        center=spec.center, views_centred_with_labels=spec.center == "labels",
        threads=torch.get_num_threads()))
    (folder / LOOP_STATE).unlink(missing_ok=True)


def load_pretrained(run_dir: Path | str, spec: PretrainSpec,
                    options: RunOptions = RunOptions()) -> dict[str, torch.Tensor]:
    """The pretrained net's state dict, computing the job first (once) if needed.

    If another process holds the job, wait for it (blocking lock), then read its result.
    """
    store = StoreWriter(run_dir)
    folder = write_job_spec(store, spec)
    if not store.is_done(spec):
        lock = JobLock(folder)
        lock.acquire(blocking=True)
        try:
            if not store.is_done(spec):
                _compute(store, spec, lambda: _pretrain_locked(store, spec, options))
        finally:
            lock.release()
    return torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)["net"]


# --------------------------------------------------------------------------- fine-tuning cells


def run_cell(run_dir: Path | str, spec: CellSpec, options: RunOptions = RunOptions()) -> str:
    """Fine-tune and evaluate one cell unless done or held by another process.

    Returns ``"done"``, ``"cached"`` or ``"busy"``; a failure writes ``error.json`` and raises.
    """
    return _run_once(run_dir, spec, lambda store: _cell_locked(store, spec, options))


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


def _cell_locked(store: StoreWriter, spec: CellSpec, options: RunOptions) -> None:
    started = time.time()
    folder = store.job_dir(spec)
    device, show_progress = options.device, options.progress
    net, transfer = build_finetune_net(store.root, spec, options)
    if transfer is not None:
        store.write_transfer(spec, to_jsonable(transfer))
    init_hash = state_dict_sha256(net)
    data = open_data(spec.data, show_progress)
    setting = Setting(spec.setting)
    subjects = cell_subjects(data.adapter, spec.budget, spec.seed, setting)
    schedule = spec.finetune
    train = labelled_slices(data.cache, subjects.labelled, setting.train_phases, device,
                            schedule.center)
    val = labelled_slices(data.cache, subjects.val, setting.train_phases, device, schedule.center)
    net.to(device)
    losses = finetune(net, train, val, epochs=schedule.epochs, batch_size=schedule.batch_size,
                      optim=schedule.optim,
                      augment=BatchAugment(spec.augmentation, spec.data.image_size), seed=spec.seed,
                      device=device, log=JsonlLog(folder / LOG), checkpoint=folder / LOOP_STATE,
                      val_every_epochs=schedule.val_every, show_progress=show_progress,
                      params=net.param_groups(schedule.optim.weight_decay, schedule.layer_decay),
                      compile=options.compile, dice=schedule.dice, precision=schedule.precision)
    describe = {**spec.describe(), "n_labelled": len(subjects.labelled)}
    result = evaluate(net, (data.adapter.load(s) for s in subjects.test), data.geometry, device,
                      describe, seen_vendors=setting.vendors, show_progress=show_progress,
                      precision=schedule.precision, total=len(subjects.test))
    store.write_tables(spec, result.subjects, result.clinical, result.slices)
    store.write_result(spec, CellResult(
        key=spec.key, **{k: v for k, v in describe.items() if k != "cell_key"},
        pretrain_key=spec.pretrain_key, init_weights_sha256=init_hash,
        wall_time_s=time.time() - started, device=device_description(device),
        train_subjects=subjects.labelled, train_slices=len(train), **losses,
        mean_dsc=result.mean_dsc, protocol_version=spec.protocol_version,
        precision=schedule.precision, precision_run=precision_ran(device, schedule.precision),
        dice=schedule.dice, center=schedule.center,
        pretrain_views_centred_with_labels=(spec.pretrain is not None
                                            and spec.pretrain.center == "labels"),
        threads=torch.get_num_threads()))
    if not options.keep_checkpoints:
        (folder / LOOP_STATE).unlink(missing_ok=True)
