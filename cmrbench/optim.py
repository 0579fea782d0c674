"""Optimizers (a registry: plugins may add one), learning-rate schedules and the one
optimizer step that every training loop takes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from cmrbench.registry import Registry

OPTIMIZER_SETTINGS: dict[str, Any] = {"momentum": 0.9, "nesterov": False, "betas": (0.9, 0.999)}
"""The settings only some optimizers read, each with the value an optimizer that reads it
gets when a config leaves it unset. Every optimizer reads ``lr`` and ``weight_decay``; the
schedule settings are the harness's."""


def _check_reads(name: str, metadata: Mapping[str, Any]) -> None:
    """An optimizer's ``reads`` must be a tuple of `OPTIMIZER_SETTINGS` names."""
    reads = metadata["reads"]
    if not isinstance(reads, tuple) or not set(reads) <= set(OPTIMIZER_SETTINGS):
        raise TypeError(
            f"optimizer {name!r}: reads={reads!r} must be a tuple of the settings "
            f"it reads besides lr and weight_decay, from "
            f"{', '.join(OPTIMIZER_SETTINGS)}"
        )


OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry(
    "optimizer", required=("reads",), check=_check_reads
)
"""Optimizer name → ``factory(params, device, *, lr, weight_decay, <what it reads>)``.

An optimizer declares the settings it reads besides ``lr`` and ``weight_decay``, as timm's
``OptimInfo`` does, and is called with exactly those (``@OPTIMIZERS.register(reads=
("momentum", "nesterov"))``); `OptimConfig` refuses any other. A plugin registers its own
(``lars`` in ``plugins/byol/byol.py``); `OptimConfig.optimizer` must name an entry."""
SCHEDULES = ("poly", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule of a training run (the harness builds them).

    ``optimizer`` names an entry of `OPTIMIZERS`: built in, ``"sgd"`` (reads ``momentum``,
    ``nesterov``) and ``"adamw"`` (reads ``betas``); a plugin's (BYOL's ``"lars"``, reads
    ``momentum``) once its plugin folder is loaded. A setting of `OPTIMIZER_SETTINGS` that the
    optimizer does not read must stay unset (None): setting it is an error, so that it can
    neither be mistaken for one that acts nor enter a spec's key (`settings`). One it reads
    and that is unset takes its `OPTIMIZER_SETTINGS` default when the config is built.
    ``schedule`` is ``"poly"`` (power 0.9, nnU-Net), ``"cosine"`` or ``"constant"``, after a
    linear warm-up over the first ``warmup_fraction`` of the run's steps. The warm-up is a
    FRACTION of the run, not a number of epochs, so that a shortened run
    (``--epochs-scale 0.1``, a short pretraining) keeps the schedule's shape: DINO's 10
    warm-up epochs of 100 are ``warmup_fraction=0.1``. The lr never falls below ``min_lr``
    (DINO's ``min_lr``: the cosine decays from ``lr`` to ``min_lr``, and the warm-up starts no
    lower). With ``no_decay_bias_norm`` biases and every other 1-D parameter (norm weights)
    get no weight decay (DINO, MAE). Param groups may carry an ``lr_scale`` (layer-wise
    decay), applied on top of the schedule.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.0
    min_lr: float = 0.0
    no_decay_bias_norm: bool = False
    betas: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; expected one of "
                f"{', '.join(OPTIMIZERS.names())} (a plugin's optimizer is known "
                f"once its plugin folder is loaded: --plugins)"
            )
        reads = self.reads
        for name, default in OPTIMIZER_SETTINGS.items():
            if name in reads and getattr(self, name) is None:
                object.__setattr__(self, name, default)
            elif name not in reads and getattr(self, name) is not None:
                raise ValueError(
                    f"optimizer {self.optimizer!r} does not read {name}; it reads "
                    f"lr, weight_decay{''.join(f', {r}' for r in reads)} (and the "
                    f"schedule settings): remove {name} or choose an optimizer "
                    f"that reads it"
                )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}"
            )
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(
                f"warmup_fraction {self.warmup_fraction} must be a fraction of the run in [0, 1)"
            )
        if self.lr <= 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"lr {self.lr} must be > 0 and min_lr {self.min_lr} in [0, lr]")
        if self.weight_decay < 0 or (self.momentum or 0) < 0:
            raise ValueError(
                f"weight_decay {self.weight_decay} and momentum {self.momentum} must be >= 0"
            )
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas {self.betas} must be two numbers in [0, 1)")

    @property
    def reads(self) -> tuple[str, ...]:
        """The `OPTIMIZER_SETTINGS` that ``optimizer`` reads (its registration's ``reads``)."""
        return OPTIMIZERS.metadata(self.optimizer)["reads"]

    def settings(self) -> dict[str, Any]:
        """Every setting that acts on the run: all fields but the `OPTIMIZER_SETTINGS` the
        optimizer does not read (what a spec's JSON and key hold)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in OPTIMIZER_SETTINGS or f.name in self.reads
        }


def decay_groups(params: list[nn.Parameter] | list[dict], weight_decay: float) -> list[dict]:
    """Param groups with weight decay only on parameters of 2 or more dimensions.

    Each group of ``params`` (plain parameters form one group with ``weight_decay``) splits
    into its >= 2-D parameters (weights of linear and conv layers: the group's decay) and
    its 1-D parameters (biases, norm weights: no decay); other group keys (``lr_scale``)
    are kept. Empty groups are dropped.
    """
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        decay = group.get("weight_decay", weight_decay)
        tensors = list(group["params"])
        for selected, group_decay in (
            ([p for p in tensors if p.ndim >= 2], decay),
            ([p for p in tensors if p.ndim < 2], 0.0),
        ):
            if selected:
                out.append({**group, "params": selected, "weight_decay": group_decay})
    return out


@OPTIMIZERS.register(reads=("momentum", "nesterov"))
def sgd(
    params: list[nn.Parameter] | list[dict],
    device: torch.device,
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov optional), multi-tensor (foreach) implementation."""
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, foreach=True
    )


@OPTIMIZERS.register(reads=("betas",))
def adamw(
    params: list[nn.Parameter] | list[dict],
    device: torch.device,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
) -> torch.optim.Optimizer:
    """AdamW, fused on CUDA and multi-tensor (foreach) elsewhere."""
    return torch.optim.AdamW(
        params,
        lr=lr,
        weight_decay=weight_decay,
        betas=betas,
        fused=device.type == "cuda",
        foreach=None if device.type == "cuda" else True,
    )


def build_optimizer(
    params: list[nn.Parameter] | list[dict], cfg: OptimConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The `OPTIMIZERS` entry ``cfg.optimizer`` on ``params``, given ``lr``, ``weight_decay``
    and the settings it reads; with ``cfg.no_decay_bias_norm`` the params are split by
    `decay_groups` first. Each param group remembers its unscheduled lr as ``initial_lr``
    (PyTorch's schedulers' key; saved with the optimizer's state), which `optimizer_step`
    scales."""
    if cfg.no_decay_bias_norm:
        params = decay_groups(params, cfg.weight_decay)
    optimizer = OPTIMIZERS.get(cfg.optimizer)(
        params,
        device,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        **{name: getattr(cfg, name) for name in cfg.reads},
    )
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return optimizer


def cosine_schedule(step: float, total_steps: float, start: float, end: float) -> float:
    """A half cosine from ``start`` (``step`` 0) to ``end`` (``step == total_steps``);
    ``total_steps`` 0 counts as 1.

    The one cosine of the package: the lr decay (`lr_factor`, over the fraction of the decay
    done: ``total_steps`` 1) and the methods' schedules (DINO's and BYOL's teacher momentum
    0.996 → 1 over the run's steps) use it.
    """
    return end - (end - start) * (1 + math.cos(math.pi * step / max(total_steps, 1))) / 2


def lr_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Learning-rate multiplier of ``cfg.lr`` at ``step`` of ``total_steps``.

    Linear warm-up over ``round(warmup_fraction · total_steps)`` steps, then poly(0.9),
    cosine or constant decay; the decay ends at ``min_lr`` instead of 0 (DINO's
    ``cosine_scheduler``), and no step's lr is below ``min_lr``.
    """
    floor = cfg.min_lr / cfg.lr
    warmup = int(round(cfg.warmup_fraction * total_steps))
    if step < warmup:
        return max((step + 1) / warmup, floor)
    progress = (step - warmup) / max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        return cosine_schedule(progress, 1, 1.0, floor)
    decay = (1 - progress) ** 0.9 if cfg.schedule == "poly" else 1.0
    return floor + (1 - floor) * decay


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    schedule_factor: float = 1.0,
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """One optimizer step on ``loss`` (the training loop's, the throughput benchmark's and
    the method tests'): each group's lr becomes ``initial_lr · schedule_factor · lr_scale``
    (`lr_factor`; ``lr_scale`` is layer-wise decay, 1 when absent), then zero the gradients,
    backward, ``before_step`` (a method's hook: drop a layer's gradients), the optimizer's
    step, ``after_step`` (a method's hook: a teacher's EMA).

    ``optimizer`` comes from `build_optimizer` (which sets ``initial_lr``). With a ``scaler``
    (fp16 steps) the loss is scaled for the backward pass and the scaler steps the optimizer
    (skipping a step whose gradients overflowed) and updates its scale, as ``torch.amp``
    prescribes; the hooks run as without it.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * schedule_factor * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    if before_step is not None:
        before_step()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    if after_step is not None:
        after_step()
