"""Run one pretraining job or one fine-tuning cell into the store (what every executor calls).

Every executor's workers call `run_job` with the run's `RunOptions` (device, CPU threads,
compile, checkpoints, progress), having loaded the run's plugin folders; only the cache
folder reaches a job through the environment. Jobs are idempotent and safe to run from
several processes at once: a job whose ``result.json`` exists is skipped, and a job being
computed by another process is left to it (cells) or waited for (a pretraining job that a
cell needs), through ``flock`` locks that die with their process.

A cell's external test sets (the grid's ``evaluate_on``) are scored inside the cell's job,
under its lock, from its fine-tuned weights: the cell keeps them (``model.pt``) until every
external set planned for it is scored (and for good with ``--keep-checkpoints``). A done cell
whose weights are gone is fine-tuned again for a newly added set ("refit", its own log and
loop state); its in-domain scores are never rewritten, and each external result records
where its weights came from.
"""

from __future__ import annotations

import dataclasses
import io
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cmrbench.benchmark.checkpoints import load_checkpoint
from cmrbench.benchmark.data import (
    DataContext,
    adapter_for,
    labelled_slices,
    open_data,
    pretraining_slices,
    selected_subjects,
)
from cmrbench.benchmark.devices import (
    cpu_threads,
    describe_error,
    device_description,
    resolve_device,
)
from cmrbench.benchmark.evaluate import evaluate
from cmrbench.benchmark.spec import CellSpec, ExternalSpec, PretrainSpec, to_jsonable
from cmrbench.benchmark.train import finetune, precision_ran, pretrain
from cmrbench.benchmark.transfer import state_dict_sha256, transfer_weights
from cmrbench.datasets.base import DatasetError
from cmrbench.datasets.preprocess import Geometry
from cmrbench.datasets.splits import CellSubjects, Setting, cell_subjects
from cmrbench.errors import CmrbenchError
from cmrbench.methods import get_method
from cmrbench.nets import SegNet, create_net
from cmrbench.store import (
    CellResult,
    ErrorRecord,
    ExternalResult,
    JobLock,
    JsonlLog,
    PretrainResult,
    StoreWriter,
    atomic_write_bytes,
)
from cmrbench.store.layout import (
    CHECKPOINT,
    FINETUNED,
    LOG,
    LOOP_STATE,
    REFIT_LOG,
    REFIT_LOOP_STATE,
    RESULT,
)
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
    - ``keep_checkpoints``: keep a cell's fine-tuning checkpoint and its fine-tuned weights
      (``model.pt``, what a later external test set is scored with) after its result.
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

    def for_worker(self, index: int, threads: int) -> RunOptions:
        """The options of local worker process ``index``: its one device (round robin over
        ``devices``), ``threads`` unless set, and no progress bars (they would interleave)."""
        devices = (self.devices[index % len(self.devices)],) if self.devices else ()
        return dataclasses.replace(
            self, devices=devices, threads=self.threads or threads, progress=False
        )


DEFAULT_RUN_OPTIONS = RunOptions()
"""The options a job runs with when none are given (`RunOptions` is frozen, so one shared
instance is safe as a default argument)."""


Job = CellSpec | PretrainSpec | ExternalSpec


def write_job_spec(store: StoreWriter, spec: Job) -> Path:
    """Create the job's folder with its ``spec.json`` (a cell's also names its
    ``pretrain_key`` and ``dataset`` at the top, for the reports) and return the folder."""
    index = (
        {"pretrain_key": spec.pretrain_key, "dataset": spec.data.dataset}
        if isinstance(spec, CellSpec)
        else {}
    )
    return store.write_spec(spec, to_jsonable(spec), **index)


# --------------------------------------------------------------------------- pretraining


def _compute(store: StoreWriter, spec: Job, work: Callable[[], None]) -> None:
    """Run ``work``; on an exception write ``error.json`` (traceback included) and re-raise."""
    store.clear_error(spec)
    try:
        work()
    except Exception as exc:
        store.write_error(
            spec,
            ErrorRecord(key=spec.key, error=describe_error(exc), traceback=traceback.format_exc()),
        )
        raise


def _run_once(
    run_dir: Path | str,
    spec: CellSpec | PretrainSpec,
    work: Callable[[StoreWriter], None],
    external: tuple[ExternalSpec, ...] = (),
) -> str:
    """Run ``work(store)`` for ``spec`` unless it (and its ``external`` evaluations) are done
    or another process holds it; ``work`` records its own failures (`_compute`).

    Returns ``"done"`` (computed now), ``"cached"`` (already done) or ``"busy"``.
    """
    store = StoreWriter(run_dir)
    folder = write_job_spec(store, spec)
    for evaluation in external:
        write_job_spec(store, evaluation)

    def done() -> bool:
        return store.is_done(spec) and all(store.is_done(e) for e in external)

    if done():
        return "cached"
    lock = JobLock(folder)
    if not lock.acquire():
        return "busy"
    try:
        if done():
            return "cached"
        work(store)
        return "done"
    finally:
        lock.release()


def run_job(
    run_dir: Path | str,
    spec: CellSpec | PretrainSpec,
    options: RunOptions = RunOptions(),
    external: tuple[ExternalSpec, ...] = (),
) -> str:
    """Run one job (a cell with its ``external`` evaluations, or a pretraining job) in this
    process with ``options.threads`` CPU threads and return its status; the entry point of
    every executor's workers."""
    with cpu_threads(options.threads):
        if isinstance(spec, CellSpec):
            return run_cell(run_dir, spec, options, external)
        return run_pretrain_job(run_dir, spec, options)


def run_pretrain_job(
    run_dir: Path | str, spec: PretrainSpec, options: RunOptions = RunOptions()
) -> str:
    """Compute a pretraining job unless done or held by another process (see `_run_once`)."""
    return _run_once(
        run_dir,
        spec,
        lambda store: _compute(store, spec, lambda: _pretrain_locked(store, spec, options)),
    )


def _pretrain_locked(store: StoreWriter, spec: PretrainSpec, options: RunOptions) -> None:
    started = time.time()
    folder = store.job_dir(spec)
    device, show_progress = options.device, options.progress
    method_cls = get_method(spec.method)
    torch.manual_seed(spec.seed)
    net = create_net(spec.encoder, img_size=spec.data.image_size, **dict(spec.net_kwargs))
    augment = BatchAugment("paper", spec.data.image_size)
    method = method_cls(net, spec.data.image_size, augment, **dict(spec.hparams)).to(device)
    pool = pretraining_slices(spec, device, show_progress)
    losses = pretrain(
        method,
        pool,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        optim=spec.optim,
        seed=spec.seed,
        device=device,
        log=JsonlLog(folder / LOG),
        checkpoint=folder / LOOP_STATE,
        show_progress=show_progress,
        compile=options.compile,
        precision=spec.precision,
    )
    buffer = io.BytesIO()
    torch.save({"net": {k: v.cpu() for k, v in method.net.state_dict().items()}}, buffer)
    atomic_write_bytes(folder / CHECKPOINT, buffer.getvalue())
    store.write_result(
        spec,
        PretrainResult(
            key=spec.key,
            method=spec.method,
            encoder=spec.encoder,
            wall_time_s=time.time() - started,
            final_loss=losses["train_loss_final"],
            device=device_description(device),
            pool_slices=len(pool),
            precision=spec.precision,
            precision_run=precision_ran(device, spec.precision),
            center=spec.center,
            views_centred_with_labels=spec.center == "labels",
            threads=torch.get_num_threads(),
        ),
    )
    (folder / LOOP_STATE).unlink(missing_ok=True)


def load_pretrained(
    run_dir: Path | str, spec: PretrainSpec, options: RunOptions = RunOptions()
) -> dict[str, torch.Tensor]:
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


def run_cell(
    run_dir: Path | str,
    spec: CellSpec,
    options: RunOptions = RunOptions(),
    external: tuple[ExternalSpec, ...] = (),
) -> str:
    """Fine-tune and evaluate one cell, and score it on its ``external`` test sets, unless
    all of that is done or another process holds the cell.

    Returns ``"done"``, ``"cached"`` or ``"busy"``; a failure writes ``error.json`` (in the
    cell's folder, or the external set's) and raises.
    """
    return _run_once(
        run_dir, spec, lambda store: _cell_and_external(store, spec, options, external), external
    )


def build_finetune_net(
    run_dir: Path | str, spec: CellSpec, options: RunOptions = RunOptions()
) -> tuple[SegNet, dict[str, Any] | None]:
    """The cell's segmentation net: random init seeded by the cell, plus the pretrained parts
    the spec names (``spec.transfers``), from its pretraining job or its external checkpoint."""
    torch.manual_seed(spec.seed)
    net = create_net(spec.encoder, img_size=spec.data.image_size)
    if spec.checkpoint is not None:
        report = load_checkpoint(net, spec.checkpoint)
        return net, {
            "pretrain_key": None,
            "checkpoint": dataclasses.asdict(spec.checkpoint),
            **report.to_json(),
        }
    if spec.pretrain is None:
        return net, None
    state = load_pretrained(run_dir, spec.pretrain, options)
    report = transfer_weights(net, state, spec.transfers)
    return net, {"pretrain_key": spec.pretrain_key, **report.to_json()}


@dataclass
class FineTuned:
    """A cell's net after fine-tuning, with what its result records."""

    net: SegNet
    data: DataContext
    setting: Setting
    subjects: CellSubjects
    losses: dict[str, float]
    train_slices: int
    init_hash: str


def _fine_tune(
    store: StoreWriter,
    spec: CellSpec,
    options: RunOptions,
    log: str = LOG,
    loop_state: str = LOOP_STATE,
) -> FineTuned:
    """Build the cell's net and fine-tune it, logging to ``log`` and resuming from
    ``loop_state`` (files of the cell's folder); the cell's first fit writes ``transfer.json``."""
    folder = store.job_dir(spec)
    device, show_progress = options.device, options.progress
    net, transfer = build_finetune_net(store.root, spec, options)
    if transfer is not None and log == LOG:
        store.write_transfer(spec, to_jsonable(transfer))
    init_hash = state_dict_sha256(net)
    data = open_data(spec.data, show_progress)
    setting = Setting(spec.setting)
    subjects = cell_subjects(data.adapter, spec.budget, spec.seed, setting)
    schedule = spec.finetune
    train = labelled_slices(
        data.cache, subjects.labelled, setting.train_phases, device, schedule.center
    )
    val = labelled_slices(data.cache, subjects.val, setting.train_phases, device, schedule.center)
    net.to(device)
    losses = finetune(
        net,
        train,
        val,
        epochs=schedule.epochs,
        batch_size=schedule.batch_size,
        optim=schedule.optim,
        augment=BatchAugment(spec.augmentation, spec.data.image_size),
        seed=spec.seed,
        device=device,
        log=JsonlLog(folder / log),
        checkpoint=folder / loop_state,
        val_every_epochs=schedule.val_every,
        show_progress=show_progress,
        params=net.param_groups(schedule.optim.weight_decay, schedule.layer_decay),
        compile=options.compile,
        dice=schedule.dice,
        precision=schedule.precision,
    )
    return FineTuned(net, data, setting, subjects, losses, len(train), init_hash)


def _cell_and_external(
    store: StoreWriter, spec: CellSpec, options: RunOptions, external: tuple[ExternalSpec, ...]
) -> None:
    """The cell (unless done), then each external test set not yet scored, then the
    fine-tuned weights go unless ``--keep-checkpoints``."""
    folder = store.job_dir(spec)
    if not store.is_done(spec):
        _compute(
            store, spec, lambda: _cell_locked(store, spec, options, keep_weights=bool(external))
        )
    weights: list[dict[str, Any]] = []  # loaded (or refit) once, for every external set

    def finetuned() -> dict[str, Any]:
        if not weights:
            weights.append(_finetuned_weights(store, spec, options))
        return weights[0]

    def score(evaluation: ExternalSpec) -> None:
        _score_external(store, spec, evaluation, finetuned(), options)

    for evaluation in external:
        if not store.is_done(evaluation):
            _compute(store, evaluation, partial(score, evaluation))
    if not options.keep_checkpoints:
        (folder / FINETUNED).unlink(missing_ok=True)


def _save_finetuned(
    store: StoreWriter, spec: CellSpec, net: SegNet, source: str, refit_matches: bool | None = None
) -> None:
    """``model.pt``: the fine-tuned net's weights and where they came from (``cell`` or
    ``refit``, with whether the refit's final loss matched the cell's)."""
    buffer = io.BytesIO()
    torch.save(
        {
            "net": {k: v.cpu() for k, v in net.state_dict().items()},
            "source": source,
            "refit_matches": refit_matches,
        },
        buffer,
    )
    atomic_write_bytes(store.job_dir(spec) / FINETUNED, buffer.getvalue())


def _finetuned_weights(store: StoreWriter, spec: CellSpec, options: RunOptions) -> dict[str, Any]:
    """The done cell's ``model.pt``; if the cell kept none, the cell fine-tuned again (same
    spec, seed and data: the same weights on the same device and thread count), saved there."""
    path = store.job_dir(spec) / FINETUNED
    if not path.exists():
        fitted = _fine_tune(store, spec, options, REFIT_LOG, REFIT_LOOP_STATE)
        own = CellResult.from_json(store.result(spec), store.job_dir(spec) / RESULT)
        _save_finetuned(
            store,
            spec,
            fitted.net,
            "refit",
            fitted.losses["train_loss_final"] == own.train_loss_final,
        )
        (store.job_dir(spec) / REFIT_LOOP_STATE).unlink(missing_ok=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def _score_external(
    store: StoreWriter,
    spec: CellSpec,
    evaluation: ExternalSpec,
    weights: dict[str, Any],
    options: RunOptions,
) -> None:
    """Score the fine-tuned net on one external test set at the cell's geometry and precision;
    rows as the cell's, with ``test_dataset`` = the set's label."""
    started = time.time()
    device, test_set = options.device, evaluation.external
    net = create_net(spec.encoder, img_size=spec.data.image_size)
    net.load_state_dict(weights["net"])
    net.to(device)
    adapter = adapter_for(test_set.data)
    subjects = selected_subjects(adapter, test_set.subjects)
    own = CellResult.from_json(store.result(spec), store.job_dir(spec) / RESULT)
    describe = {**spec.describe(), "n_labelled": own.n_labelled, "test_dataset": test_set.label}
    result = evaluate(
        net,
        (adapter.load(s) for s in subjects),
        Geometry(spec.data.image_size, spec.data.spacing_mm),
        device,
        describe,
        seen_vendors=Setting(spec.setting).vendors,
        show_progress=options.progress,
        precision=spec.finetune.precision,
        total=len(subjects),
    )
    if result.subjects.empty:
        raise DatasetError(
            f"external test set {test_set.label!r} ({test_set.data.dataset}, "
            f"subjects {test_set.subjects}): none of its {len(subjects)} subjects "
            f"is labelled at ED and ES; expected labelled test subjects"
        )
    store.write_tables(evaluation, result.subjects, result.clinical, {})
    store.write_result(
        evaluation,
        ExternalResult(
            key=evaluation.key,
            cell_key=spec.key,
            test_dataset=test_set.label,
            dataset=test_set.data.dataset,
            subjects=test_set.subjects,
            n_subjects=int(result.subjects["subject"].nunique()),
            mean_dsc=result.mean_dsc,
            wall_time_s=time.time() - started,
            device=device_description(device),
            threads=torch.get_num_threads(),
            weights="kept" if weights["source"] == "cell" else "refit",
            refit_matches=weights["refit_matches"],
            protocol_version=evaluation.protocol_version,
        ),
    )


def _cell_locked(
    store: StoreWriter, spec: CellSpec, options: RunOptions, keep_weights: bool = False
) -> None:
    """Fine-tune, score the test subjects and write the cell's tables and result (last); the
    fine-tuned weights stay in ``model.pt`` when ``keep_weights`` or ``--keep-checkpoints``."""
    started = time.time()
    folder = store.job_dir(spec)
    device, show_progress = options.device, options.progress
    fitted = _fine_tune(store, spec, options)
    if keep_weights or options.keep_checkpoints:
        _save_finetuned(store, spec, fitted.net, "cell")
    subjects, schedule = fitted.subjects, spec.finetune
    describe = {**spec.describe(), "n_labelled": len(subjects.labelled)}
    result = evaluate(
        fitted.net,
        (fitted.data.adapter.load(s) for s in subjects.test),
        fitted.data.geometry,
        device,
        {**describe, "test_dataset": spec.data.dataset},
        seen_vendors=fitted.setting.vendors,
        show_progress=show_progress,
        precision=schedule.precision,
        total=len(subjects.test),
    )
    store.write_tables(spec, result.subjects, result.clinical, result.slices)
    store.write_result(
        spec,
        CellResult(
            key=spec.key,
            **{k: v for k, v in describe.items() if k != "cell_key"},
            pretrain_key=spec.pretrain_key,
            init_weights_sha256=fitted.init_hash,
            wall_time_s=time.time() - started,
            device=device_description(device),
            train_subjects=subjects.labelled,
            train_slices=fitted.train_slices,
            train_loss_final=fitted.losses["train_loss_final"],
            val_loss_final=fitted.losses["val_loss_final"],
            mean_dsc=result.mean_dsc,
            protocol_version=spec.protocol_version,
            precision=schedule.precision,
            precision_run=precision_ran(device, schedule.precision),
            dice=schedule.dice,
            center=schedule.center,
            pretrain_views_centred_with_labels=(
                spec.pretrain is not None and spec.pretrain.center == "labels"
            ),
            threads=torch.get_num_threads(),
        ),
    )
    if not options.keep_checkpoints:
        (folder / LOOP_STATE).unlink(missing_ok=True)
