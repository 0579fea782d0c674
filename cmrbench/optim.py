"""Optimizers and learning-rate schedules of the harness (one place for both loops)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule of a training run (the harness builds them).

    ``optimizer`` is ``"sgd"`` (``momentum``, ``nesterov``) or ``"adamw"`` (``betas``).
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
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.0
    min_lr: float = 0.0
    no_decay_bias_norm: bool = False
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of "
                             f"{', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction {self.warmup_fraction} must be a fraction of the "
                             f"run in [0, 1)")
        if self.lr <= 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"lr {self.lr} must be > 0 and min_lr {self.min_lr} in [0, lr]")
        if self.weight_decay < 0 or self.momentum < 0:
            raise ValueError(f"weight_decay {self.weight_decay} and momentum {self.momentum} "
                             f"must be >= 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas {self.betas} must be two numbers in [0, 1)")


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
        for selected, group_decay in (([p for p in tensors if p.ndim >= 2], decay),
                                      ([p for p in tensors if p.ndim < 2], 0.0)):
            if selected:
                out.append({**group, "params": selected, "weight_decay": group_decay})
    return out


def build_optimizer(params: list[nn.Parameter] | list[dict], cfg: OptimConfig,
                    device: torch.device) -> torch.optim.Optimizer:
    """SGD (Nesterov optional) or AdamW with the multi-tensor (foreach) implementation;
    with ``cfg.no_decay_bias_norm`` the params are split by `decay_groups` first."""
    if cfg.no_decay_bias_norm:
        params = decay_groups(params, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             betas=cfg.betas, fused=device.type == "cuda",
                             foreach=None if device.type == "cuda" else True)


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
    if cfg.schedule == "poly":
        decay = (1 - progress) ** 0.9
    elif cfg.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = 1.0
    return floor + (1 - floor) * decay
