"""Optimizers and learning-rate schedules of the harness (one place for both loops)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule of a training run (the harness builds them).

    ``schedule`` is ``"poly"`` (power 0.9, nnU-Net), ``"cosine"`` or ``"constant"``, after
    ``warmup_epochs`` of linear warm-up. ``optimizer`` is ``"sgd"`` or ``"adamw"``. Param
    groups may carry an ``lr_scale`` (layer-wise decay), applied on top of the schedule.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0


def build_optimizer(params: list[nn.Parameter] | list[dict], cfg: OptimConfig,
                    device: torch.device) -> torch.optim.Optimizer:
    """SGD (Nesterov optional) or AdamW with the multi-tensor (foreach) implementation."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 betas=(0.9, 0.999), fused=device.type == "cuda",
                                 foreach=None if device.type == "cuda" else True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected 'sgd' or 'adamw'")


def lr_factor(cfg: OptimConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then poly(0.9) or cosine decay."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total_steps - warmup, 1)
    if cfg.schedule == "poly":
        return (1 - progress) ** 0.9
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}; expected 'poly', 'cosine' or 'constant'")
