"""The one training harness: fine-tuning and pretraining loops (nnU-Net's "one trainer").

Methods only supply a loss (`SSPMethod.loss`); this module owns the loop, optimizer,
schedule, precision, checkpoints, logging and devices. Both loops are deterministic
functions of their seed and step: the data order of epoch ``e`` and the random draws of
step ``s`` come from generators seeded with ``(seed, e)`` and ``(seed, s)`` (the step's,
`Step.generator`, is the one random channel: the loop does not reseed the global RNG and
nothing in a step draws from it), so a run resumed from a checkpoint gives the same weights
as one that never stopped.

Speed (DESIGN.md): slices sit on the training device, augmentation runs batched there,
CUDA steps use the spec's precision (bf16 autocast by default), and the loss is read back
only when a log line is written.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from cmrbench.benchmark.losses import deep_supervised_loss, seg_loss
from cmrbench.methods.base import PretrainBatch, SSPMethod, Step
from cmrbench.optim import OptimConfig, build_optimizer, lr_factor, optimizer_step
from cmrbench.store import JsonlLog, atomic_write_bytes
from cmrbench.transforms.augment import BatchAugment, image_centres

LOG_EVERY = 25
IMAGE_CENTRES = torch.empty(0, 2)
"""The default ``center`` of `LabelledSlices` and `SliceBatches`: every slice centred on its
image (zeros, filled in from the images' count)."""
CHECKPOINT_EVERY_S = 300.0
"""A loop with a checkpoint file also saves one at the first log step after this long since
the last, so that an interrupted job loses about 5 minutes at most (a resumed run gives the
same weights, and from a log step the same log)."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the cell fails with this error."""


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of one step's random draws (augmentation, masks, crops)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * 1_000_003 + step)
    return gen


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The data order of ``epoch``: a permutation of ``n`` drawn from ``(seed, epoch)``."""
    gen = torch.Generator()
    gen.manual_seed(seed * 7_919 + epoch + 1)
    return torch.randperm(n, generator=gen).to(device)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "bf16") -> Iterator[None]:
    """The numeric precision of a forward pass (`cmrbench.benchmark.spec.PRECISIONS`).

    On CUDA: ``bf16`` and ``fp16`` autocast to bfloat16 / float16 (fp16 steps need the
    gradient scaler of `grad_scaler`); ``tf32`` runs fp32 with TF32 matmuls and convolutions
    (PyTorch's default for cuDNN convolutions on Ampere and later); ``fp32`` turns TF32 off.
    Elsewhere everything runs in fp32 (half precision is slow on CPUs, TF32 is CUDA-only):
    `precision_ran` says what actually ran.
    """
    cuda = device.type == "cuda"
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if cuda and half is None:
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast(device.type, dtype=half or torch.bfloat16, enabled=cuda and bool(half)):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """The loss scaler of fp16 steps on CUDA (as the study's ``torch.cuda.amp.GradScaler``);
    None for every other precision and device."""
    return torch.amp.GradScaler("cuda") if device.type == "cuda" and precision == "fp16" else None


def precision_ran(device: torch.device, precision: str) -> str:
    """The precision `autocast` really uses for ``precision`` on ``device`` (fp32 off CUDA)."""
    return precision if device.type == "cuda" else "fp32"


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``n`` samples: ``⌊n / batch_size⌋``, at least 1.

    The study's loaders drop the last incomplete batch (``drop_last: True``): budget 10
    (231 slices) at batch 32 gives 7 steps.
    """
    return max(1, n // batch_size)


class EpochBatches:
    """Each step's batch indices: `steps_per_epoch` full batches per epoch, cut in order from
    that epoch's permutation `epoch_order` ``(n, seed, epoch)``, drawn once per epoch on
    ``device``. ``steps`` is the number of steps in an epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.steps = steps_per_epoch(n, batch_size)
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, step: Step) -> torch.Tensor:
        """The ``(batch_size,)`` indices of ``step``'s batch."""
        if step.epoch != self._epoch:
            self._epoch = step.epoch
            self._order = epoch_order(self.n, self.seed, step.epoch, self.device)
        start = (step.index % self.steps) * self.batch_size
        return self._order[start : start + self.batch_size]


# --------------------------------------------------------------------------- data on device


@dataclass
class LabelledSlices:
    """Labelled 2D slices for fine-tuning or validation, on the training device.

    images: ``(N, 1, S, S)`` float16; labels: ``(N, S, S)`` uint8; annotated ``(N, C)`` bool;
    center: ``(N, 2)`` float, where augmentation centres each slice, in ``F.affine_grid``
    normalised ``(x, y)`` (the subject's heart centre, or zeros = image centre; default
    `IMAGE_CENTRES`: zeros).
    """

    images: torch.Tensor
    labels: torch.Tensor
    annotated: torch.Tensor
    center: torch.Tensor = IMAGE_CENTRES

    def __post_init__(self) -> None:
        if self.center is IMAGE_CENTRES:
            self.center = image_centres(self.images)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[idx].float(), self.labels[idx].long(), self.annotated[idx]


@dataclass
class SliceBatches:
    """Unlabelled slices for pretraining: images ``(N, 1, S, S)`` float16 (on the device if
    they fit, else pinned host memory), position / subject / frame ``(N,)``, center ``(N, 2)``
    as in `LabelledSlices` (default: zeros), intensity_max ``(N,)`` each slice's subject's
    largest z-scored intensity (`PretrainBatch`; None: not given)."""

    images: torch.Tensor
    position: torch.Tensor
    subject: torch.Tensor
    frame: torch.Tensor
    center: torch.Tensor = IMAGE_CENTRES
    intensity_max: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.center is IMAGE_CENTRES:
            self.center = image_centres(self.images)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor, device: torch.device) -> PretrainBatch:
        idx_src = idx.to(self.images.device)
        return PretrainBatch(
            images=self.images[idx_src].to(device, non_blocking=True).float(),
            position=self.position[idx_src].to(device, non_blocking=True),
            subject=self.subject[idx_src].to(device, non_blocking=True),
            frame=self.frame[idx_src].to(device, non_blocking=True),
            center=self.center[idx_src].to(device, non_blocking=True),
            intensity_max=None
            if self.intensity_max is None
            else self.intensity_max[idx_src].to(device, non_blocking=True),
        )


# --------------------------------------------------------------------------- the loop


@dataclass
class LoopConfig:
    """What `run_loop` needs beyond the loss: sizes, schedule, where to log and checkpoint."""

    optim: OptimConfig
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    seed: int
    log: JsonlLog
    checkpoint: Path | None = None
    checkpoint_every: int = 0  # steps; 0: only every `CHECKPOINT_EVERY_S` seconds
    desc: str = "train"
    show_progress: bool = True
    validate: Callable[[], float] | None = None
    validate_every: int = 0  # steps; 0 = never
    precision: str = "bf16"  # `autocast`'s


def run_loop(
    module: nn.Module,
    params: list,
    cfg: LoopConfig,
    device: torch.device,
    loss_fn: Callable[[Step], torch.Tensor],
    before_optimizer_step: Callable[[Step], None] = lambda step: None,
    after_step: Callable[[Step], None] = lambda step: None,
) -> dict[str, float]:
    """Optimise ``loss_fn`` for ``cfg.total_steps`` steps, resuming from ``cfg.checkpoint``.

    The loop's phases, each step: `_train_step` (the step's `Step` with `step_generator`
    ``(cfg.seed, index)``, the loss under `autocast`, `optimizer_step` with the schedule's
    `lr_factor` and the two hooks); every `LOG_EVERY` steps and at the end `_LogWindow.write`
    (the mean training loss, validation when due, one log line); then, when due,
    `_CheckpointTimer.save`. Returns the last logged training loss and validation loss.
    """
    optimizer = build_optimizer(params, cfg.optim, device)
    scaler = grad_scaler(device, cfg.precision)
    start = _resume(module, optimizer, cfg, scaler)
    window = _LogWindow(cfg, device, start)
    checkpoints = _CheckpointTimer(cfg)
    module.train()
    with tqdm(
        total=cfg.total_steps,
        initial=start,
        desc=cfg.desc,
        unit="step",
        leave=False,
        disable=not cfg.show_progress,
        dynamic_ncols=True,
    ) as bar:
        for index in range(start, cfg.total_steps):
            step = _step(cfg, index, device)
            loss = _train_step(
                step, optimizer, scaler, cfg, device, loss_fn, before_optimizer_step, after_step
            )
            window.add(loss)
            bar.update(1)
            done = index + 1
            is_last = done == cfg.total_steps
            if done % LOG_EVERY == 0 or is_last:
                window.write(module, optimizer, step, done, validate=_validation_due(cfg, done))
                bar.set_postfix(loss=f"{window.last['train_loss_final']:.4f}")
            if not is_last and checkpoints.due(done):
                checkpoints.save(module, optimizer, done, scaler)
    return window.last


def _step(cfg: LoopConfig, index: int, device: torch.device) -> Step:
    """Step ``index`` of the loop, with its epoch and its own random generator."""
    return Step(
        index=index,
        total=cfg.total_steps,
        epoch=index // cfg.steps_per_epoch,
        total_epochs=max(1, math.ceil(cfg.total_steps / cfg.steps_per_epoch)),
        steps_per_epoch=cfg.steps_per_epoch,
        generator=step_generator(cfg.seed, index, device),
    )


def _train_step(
    step: Step,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    cfg: LoopConfig,
    device: torch.device,
    loss_fn: Callable[[Step], torch.Tensor],
    before_optimizer_step: Callable[[Step], None],
    after_step: Callable[[Step], None],
) -> torch.Tensor:
    """One optimisation step: the loss under the loop's precision, then `optimizer_step` at
    the schedule's learning rate with the hooks. Returns the loss (a scalar tensor)."""
    with autocast(device, cfg.precision):
        loss = loss_fn(step)
    optimizer_step(
        optimizer,
        loss,
        lr_factor(cfg.optim, step.index, cfg.total_steps),
        before_step=lambda: before_optimizer_step(step),
        after_step=lambda: after_step(step),
        scaler=scaler,
    )
    return loss


def _validation_due(cfg: LoopConfig, done: int) -> bool:
    """Whether the log line after ``done`` steps carries a validation loss."""
    if cfg.validate is None or not cfg.validate_every:
        return False
    return done % cfg.validate_every == 0 or done == cfg.total_steps


class _LogWindow:
    """The training losses since the last log line (summed on the device, so a step never
    waits for the GPU), and the numbers `run_loop` returns."""

    def __init__(self, cfg: LoopConfig, device: torch.device, start: int) -> None:
        self.cfg = cfg
        self.loss_sum = torch.zeros((), device=device)
        self.steps = 0
        self.started_s, self.started_step = time.perf_counter(), start
        self.last = {"train_loss_final": float("nan"), "val_loss_final": float("nan")}

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss.detach().float()
        self.steps += 1

    def write(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: Step,
        done: int,
        validate: bool,
    ) -> None:
        """One log line: the window's mean loss (a non-finite one stops the loop with
        `NonFiniteLossError`), the learning rate, throughput and, when ``validate``, the
        validation loss; then a new window."""
        mean_loss = self.loss_sum.item() / self.steps
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"{self.cfg.desc}: loss became {mean_loss} at step {done}")
        now = time.perf_counter()
        seconds = max(now - self.started_s, 1e-9)
        record = {
            "step": done,
            "epoch": step.epoch,
            "loss": mean_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": (done - self.started_step) * self.cfg.batch_size / seconds,
            "time_s": now,
        }
        if validate and self.cfg.validate is not None:
            record["val_loss"] = self.last["val_loss_final"] = self.cfg.validate()
            module.train()
        self.cfg.log.write(record)
        self.last["train_loss_final"] = mean_loss
        self.loss_sum.zero_()
        self.steps, self.started_s, self.started_step = 0, time.perf_counter(), done


class _CheckpointTimer:
    """When the loop saves its checkpoint: every ``cfg.checkpoint_every`` steps, and at a log
    step once `CHECKPOINT_EVERY_S` seconds have passed since the last save (so an
    interrupted job loses little); never without ``cfg.checkpoint``."""

    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg, self.saved_s = cfg, time.perf_counter()

    def due(self, done: int) -> bool:
        if self.cfg.checkpoint is None:
            return False
        every = self.cfg.checkpoint_every
        late = time.perf_counter() - self.saved_s >= CHECKPOINT_EVERY_S
        return bool(every and done % every == 0) or (done % LOG_EVERY == 0 and late)

    def save(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        done: int,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        if self.cfg.checkpoint is None:
            return
        _save_checkpoint(module, optimizer, self.cfg.checkpoint, self.cfg.log, done, scaler)
        self.saved_s = time.perf_counter()


def _save_checkpoint(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    path: Path,
    log: JsonlLog,
    step: int,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """The loop's state after ``step`` steps, written atomically to ``path``: weights,
    optimizer, gradient scaler, and how many lines of ``log`` it has written."""
    buffer = io.BytesIO()
    torch.save(
        {
            "module": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "log_lines": log.count(),
            **({"scaler": scaler.state_dict()} if scaler is not None else {}),
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def _resume(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: LoopConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Load the loop checkpoint if there is one; return the step to start from."""
    if cfg.checkpoint is None or not cfg.checkpoint.exists():
        cfg.log.truncate_to(0)
        return 0
    state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    cfg.log.truncate_to(state["log_lines"])
    return int(state["step"])


# --------------------------------------------------------------------------- the two jobs


def finetune(
    net: nn.Module,
    train: LabelledSlices,
    val: LabelledSlices | None,
    *,
    epochs: float,
    batch_size: int,
    optim: OptimConfig,
    augment: BatchAugment,
    seed: int,
    device: torch.device,
    log: JsonlLog,
    checkpoint: Path | None = None,
    val_every_epochs: int = 0,
    show_progress: bool = True,
    params: list | None = None,
    compile: bool = False,
    dice: str = "sample",
    precision: str = "bf16",
) -> dict[str, float]:
    """Fine-tune ``net`` on labelled slices with the study's loss (0.5 CE + 0.5 Dice, deep
    supervision); the model after the last step is the one evaluated.

    An epoch is `steps_per_epoch` full batches of a fresh permutation (the study's
    ``drop_last``; fewer slices than one batch make one batch of all of them). Augmentation
    centres each slice on ``train.center``. ``dice`` and ``precision`` as in
    `FinetuneConfig`. ``compile`` runs the training forward through `torch.compile` (same
    weights, same module; evaluation stays eager).
    """
    model = torch.compile(net) if compile else net
    n = len(train)
    if n == 0:
        raise ValueError("no annotated training slice: the labelled subjects carry no label")
    batch_size = min(batch_size, n)
    batch_indices = EpochBatches(n, batch_size, seed, train.images.device)
    epoch_steps = batch_indices.steps
    total = max(1, int(round(epochs * epoch_steps)))

    def loss_fn(step: Step) -> torch.Tensor:
        idx = batch_indices(step)
        images, labels, annotated = train.batch(idx)
        images, moved = augment(images, labels, generator=step.generator, center=train.center[idx])
        assert moved is not None  # labels in, labels out
        return deep_supervised_loss(model(images), moved, annotated, dice)

    validate = (
        (lambda: validation_loss(net, val, batch_size, device, dice, precision))
        if val is not None and len(val)
        else None
    )
    cfg = LoopConfig(
        optim=optim,
        total_steps=total,
        steps_per_epoch=epoch_steps,
        batch_size=batch_size,
        seed=seed,
        log=log,
        checkpoint=checkpoint,
        checkpoint_every=max(epoch_steps, total // 10),
        desc="fine-tune",
        show_progress=show_progress,
        validate=validate,
        validate_every=val_every_epochs * epoch_steps,
        precision=precision,
    )
    return run_loop(
        net, params if params is not None else list(net.parameters()), cfg, device, loss_fn
    )


@torch.no_grad()
def validation_loss(
    net: nn.Module,
    val: LabelledSlices,
    batch_size: int,
    device: torch.device,
    dice: str = "sample",
    precision: str = "bf16",
) -> float:
    """Mean `seg_loss` of the main output over the validation slices (no augmentation)."""
    net.eval()
    total, count = torch.zeros((), device=device), 0
    for start in range(0, len(val), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(val)), device=val.images.device)
        images, labels, annotated = val.batch(idx)
        with autocast(device, precision):
            logits = net(images)
        total += seg_loss(logits, labels, annotated, dice) * len(idx)
        count += len(idx)
    return float(total.item() / max(count, 1))


def pretrain(
    method: SSPMethod,
    pool: SliceBatches,
    *,
    epochs: float,
    batch_size: int,
    optim: OptimConfig,
    seed: int,
    device: torch.device,
    log: JsonlLog,
    checkpoint: Path | None = None,
    show_progress: bool = True,
    compile: bool = False,
    precision: str = "bf16",
) -> dict[str, float]:
    """Pretrain ``method`` on unlabelled slices with its own loss and the harness's loop.

    Epochs as in `finetune`. ``compile`` compiles the method's loss with `torch.compile`.
    """
    loss_of = torch.compile(method.loss) if compile else method.loss
    n = len(pool)
    batch_size = min(batch_size, n)
    batch_indices = EpochBatches(n, batch_size, seed, pool.images.device)
    epoch_steps = batch_indices.steps
    total = max(1, int(round(epochs * epoch_steps)))

    def loss_fn(step: Step) -> torch.Tensor:
        return loss_of(pool.batch(batch_indices(step), device), step)

    params = [p for p in method.parameters() if p.requires_grad]
    cfg = LoopConfig(
        optim=optim,
        total_steps=total,
        steps_per_epoch=epoch_steps,
        batch_size=batch_size,
        seed=seed,
        log=log,
        checkpoint=checkpoint,
        checkpoint_every=max(1, min(total // 10, 500)),
        desc=f"pretrain {method.name}",
        show_progress=show_progress,
        precision=precision,
    )
    return run_loop(
        method, params, cfg, device, loss_fn, method.before_optimizer_step, method.after_step
    )
