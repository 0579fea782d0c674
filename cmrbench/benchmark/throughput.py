"""Throughput of the harness against a bare training step of the same net.

The *bare step* is the same net, loss, optimizer and precision on a batch already on the
device, with no augmentation and no data indexing: the ceiling the harness is measured
against (issue: harness ≥ 0.9 × bare). The *harness* numbers run the real loops of
`cmrbench.benchmark.train` (`finetune`, `pretrain`) on synthetic slices held on the
device. Used by ``tests/perf``, ``perf/gpu_check.py`` and, as seconds per step
(`step_seconds`), by the ``--dry-run`` estimate.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cmrbench.benchmark.losses import deep_supervised_loss
from cmrbench.benchmark.train import (
    LabelledSlices,
    SliceBatches,
    autocast,
    finetune,
    pretrain,
    step_generator,
    validation_loss,
)
from cmrbench.methods import get_method
from cmrbench.methods.base import PretrainBatch, Step
from cmrbench.nets import create_net
from cmrbench.optim import OptimConfig, build_optimizer, optimizer_step
from cmrbench.store import JsonlLog
from cmrbench.transforms.augment import BatchAugment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes, with the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def synthetic_slices(n: int, size: int, device: torch.device, seed: int = 0) -> LabelledSlices:
    """``n`` random labelled slices on ``device`` (content does not matter for speed)."""
    gen = torch.Generator().manual_seed(seed)
    return LabelledSlices(
        images=torch.randn(n, 1, size, size, generator=gen).half().to(device),
        labels=torch.randint(0, 4, (n, size, size), generator=gen, dtype=torch.uint8).to(device),
        annotated=torch.ones(n, 4, dtype=torch.bool, device=device),
    )


def bare_finetune_images_per_s(
    encoder: str,
    size: int,
    batch: int,
    device: torch.device,
    steps: int = 20,
    warmup: int = 3,
    compiled: bool = False,
) -> float:
    """Images/s of forward + deep-supervised loss + backward + optimizer step, data on device."""
    net = create_net(encoder, img_size=size).to(device).train()
    model = torch.compile(net) if compiled else net
    optimizer = build_optimizer(
        net.param_groups(net.finetune_optim.weight_decay), net.finetune_optim, device
    )
    data = synthetic_slices(batch, size, device)
    images, labels, annotated = data.batch(torch.arange(batch, device=device))

    def step() -> None:
        with autocast(device):
            loss = deep_supervised_loss(model(images), labels, annotated)
        optimizer_step(optimizer, loss)

    def run(n: int) -> None:
        for _ in range(n):
            step()

    run(warmup)
    return steps * batch / timed(lambda: run(steps), device)


def finetune_steps(
    encoder: str,
    size: int,
    batch: int,
    device: torch.device,
    folder: Path,
    augmentation: str = "paper",
    optim: OptimConfig | None = None,
    compile: bool = False,
) -> Callable[[int], None]:
    """``run(n)``: ``n`` steps of the real fine-tuning loop (`train.finetune`) on synthetic
    slices, with the cell's augmentation and optimizer; each call builds the loop afresh, as
    a cell does."""
    net = create_net(encoder, img_size=size).to(device)
    data = synthetic_slices(4 * batch, size, device)
    augment = BatchAugment(augmentation, size)
    optim = optim or net.finetune_optim

    def run(n: int) -> None:
        finetune(
            net,
            data,
            None,
            epochs=n / 4,
            batch_size=batch,
            optim=optim,
            augment=augment,
            seed=0,
            device=device,
            log=JsonlLog(folder / "log.jsonl"),
            show_progress=False,
            params=net.param_groups(optim.weight_decay),
            compile=compile,
        )

    return run


def harness_finetune_images_per_s(
    encoder: str,
    size: int,
    batch: int,
    device: torch.device,
    steps: int = 20,
    warmup: int = 3,
    augmentation: str = "paper",
    compile: bool = False,
) -> float:
    """Images/s of the real fine-tuning loop (`train.finetune`) with augmentation."""
    with tempfile.TemporaryDirectory() as tmp:
        run = finetune_steps(encoder, size, batch, device, Path(tmp), augmentation, compile=compile)
        run(warmup)
        return steps * batch / timed(lambda: run(steps), device)


def step_seconds(
    run: Callable[[int], None], device: torch.device, budget_s: float = 1.0, max_steps: int = 40
) -> float:
    """Seconds per step of ``run(n)`` (``n`` training steps), measured after a warm-up.

    The first call pays one-off costs (allocator, kernel selection, lazy imports) that a
    long run pays once: it is a 2-step warm-up, not a measurement. The timed call then runs
    as many steps as fit in about ``budget_s`` (2 to ``max_steps``), so that the per-call
    set-up is spread as thinly as in the short jobs of small grids. Steps longer than
    ``budget_s`` (big nets on a CPU) dwarf those costs: the warm-up is the measurement.
    """
    warm = timed(lambda: run(2), device) / 2
    if warm > budget_s:
        return warm
    steps = int(min(max_steps, max(2, budget_s / max(warm, 1e-6))))
    return timed(lambda: run(steps), device) / steps


def forward_seconds_per_slice(encoder: str, size: int, batch: int, device: torch.device) -> float:
    """Seconds of one validation forward pass (`train.validation_loss`) per slice."""
    net = create_net(encoder, img_size=size).to(device)
    data = synthetic_slices(batch, size, device)
    validation_loss(net, data, batch, device)
    passes = 3
    return timed(
        lambda: [validation_loss(net, data, batch, device) for _ in range(passes)], device
    ) / (passes * batch)


def _method_and_batch(
    method: str,
    encoder: str,
    size: int,
    batch: int,
    device: torch.device,
    hparams: Mapping[str, Any] | None = None,
):
    cls = get_method(method)
    net = create_net(encoder, img_size=size, **cls.net_kwargs)
    model = cls(net, size, BatchAugment("paper", size), **dict(hparams or {})).to(device).train()
    gen = torch.Generator().manual_seed(0)
    pool = SliceBatches(
        images=torch.randn(4 * batch, 1, size, size, generator=gen).half().to(device),
        position=torch.rand(4 * batch, generator=gen).to(device),
        subject=torch.zeros(4 * batch, dtype=torch.long, device=device),
        frame=torch.zeros(4 * batch, dtype=torch.long, device=device),
    )
    return cls, model, pool


def bare_pretrain_images_per_s(
    method: str,
    encoder: str,
    size: int,
    batch: int,
    device: torch.device,
    steps: int = 10,
    warmup: int = 2,
    compiled: bool = False,
) -> float:
    """Images/s of the method's loss + backward + optimizer step on one batch on device
    (the method's own view generation included: it is part of its loss)."""
    cls, model, pool = _method_and_batch(method, encoder, size, batch, device)
    loss_of = torch.compile(model.loss) if compiled else model.loss
    optimizer = build_optimizer(
        [p for p in model.parameters() if p.requires_grad], cls.optim, device
    )
    data: PretrainBatch = pool.batch(torch.arange(batch, device=device), device)
    step = Step(
        index=100,
        total=1000,
        epoch=5,
        total_epochs=50,
        steps_per_epoch=20,
        generator=step_generator(0, 100, device),
    )

    def run(n: int) -> None:
        for _ in range(n):
            with autocast(device):
                loss = loss_of(data, step)
            optimizer_step(
                optimizer,
                loss,
                before_step=lambda: model.before_optimizer_step(step),
                after_step=lambda: model.after_step(step),
            )

    run(warmup)
    return steps * batch / timed(lambda: run(steps), device)


def pretrain_steps(
    method: str,
    encoder: str,
    size: int,
    batch: int,
    device: torch.device,
    folder: Path,
    hparams: Mapping[str, Any] | None = None,
    optim: OptimConfig | None = None,
    compile: bool = False,
) -> Callable[[int], None]:
    """``run(n)``: ``n`` steps of the real pretraining loop (`train.pretrain`) of ``method``
    with its resolved ``hparams`` and ``optim`` (the class defaults when None)."""
    cls, model, pool = _method_and_batch(method, encoder, size, batch, device, hparams)
    optim = optim or cls.optim

    def run(n: int) -> None:
        pretrain(
            model,
            pool,
            epochs=n / 4,
            batch_size=batch,
            optim=optim,
            seed=0,
            device=device,
            log=JsonlLog(folder / "log.jsonl"),
            show_progress=False,
            compile=compile,
        )

    return run


def harness_pretrain_images_per_s(
    method: str,
    encoder: str,
    size: int,
    batch: int,
    device: torch.device,
    steps: int = 10,
    warmup: int = 2,
    compile: bool = False,
) -> float:
    """Images/s of the real pretraining loop (`train.pretrain`)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = pretrain_steps(method, encoder, size, batch, device, Path(tmp), compile=compile)
        run(warmup)
        return steps * batch / timed(lambda: run(steps), device)
