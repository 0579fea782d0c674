"""`byol`: Bootstrap Your Own Latent, a method beyond the study, written as a plugin.

Paper: Grill, Strub, Altché et al., "Bootstrap Your Own Latent: A New Approach to
Self-Supervised Learning", NeurIPS 2020, arXiv 2006.07733.

This file uses only cmrbench's public plugin contract (`METHODS.register`, `SSPMethod`,
`MethodConfig`, `PretrainBatch`, `Progress`, `OptimConfig`, and `SegNet.features`); load it with
``cmrbench run --plugins plugins/byol --methods byol,scratch``.

An online network (encoder, global pooling, projector, predictor) predicts the
projection that a target network (an exponential moving average of the online encoder
and projector) gives to another augmented view of the same slice. Loss, symmetrised over
the two views: ``2 − 2 · cos(predictor(online(v1)), target(v2))``. Projector and
predictor are MLPs in → 4096 → 256 with BatchNorm and ReLU; the target's EMA momentum
rises from 0.996 to 1 by a cosine over all steps. The paper trains with LARS at
lr 0.2 · batch/256; cmrbench's harness offers SGD, so this uses SGD with momentum 0.9,
lr 0.05, wd 1.5e-6 (the paper's), a warm-up over the first 10 % of the run (the paper's
10 of 100 epochs, kept as a fraction so that shortened runs keep its shape) and a cosine,
batch 64 as the study's other methods. The online encoder seeds fine-tuning.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cmrbench.methods import METHODS
from cmrbench.methods.base import MethodConfig, OptimConfig, PretrainBatch, Progress, SSPMethod
from cmrbench.nets import SegNet
from cmrbench.transforms.augment import BatchAugment


def byol_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``(B, in_dim) -> (B, out_dim)``: Linear, BatchNorm, ReLU, Linear (BYOL's projector)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                         nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``2 − 2 · cos(prediction, target)``; both ``(B, D)``, no
    gradient into ``target``."""
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(f"BYOL loss needs two (B, D) tensors of one shape; got "
                         f"{tuple(prediction.shape)} and {tuple(target.shape)}")
    cosine = (F.normalize(prediction.float(), dim=1) * F.normalize(target.detach().float(), dim=1)).sum(1)
    return (2 - 2 * cosine).mean()


@dataclass(frozen=True)
class BYOLConfig(MethodConfig):
    """BYOL's hyper-parameters (the paper's values): MLP sizes and the target's base momentum."""

    hidden_dim: int = 4096
    projection_dim: int = 256
    target_momentum: float = 0.996

    def __post_init__(self) -> None:
        if not 0 <= self.target_momentum <= 1:
            raise ValueError(f"target_momentum {self.target_momentum} must be in [0, 1]")
        if self.hidden_dim < 1 or self.projection_dim < 1:
            raise ValueError(f"hidden_dim {self.hidden_dim} and projection_dim "
                             f"{self.projection_dim} must be positive integers")


@METHODS.register
class BYOL(SSPMethod):
    """BYOL on the net's encoder (pooled features)."""

    name = "byol"
    paper = ("Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised "
             "Learning, NeurIPS 2020, arXiv 2006.07733")
    config_class = BYOLConfig
    config: BYOLConfig
    version = 1          # bump when a change to this file changes results
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    optim = OptimConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1.5e-6,
                        schedule="cosine", warmup_fraction=0.1)
    batch_size = 64
    epochs = 100

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment,
                 generator: torch.Generator | None = None, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, generator, **hparams)
        hidden, dim = self.config.hidden_dim, self.config.projection_dim
        self.projector = byol_mlp(net.feature_dim, hidden, dim)
        self.predictor = byol_mlp(dim, hidden, dim)
        self.target_net = copy.deepcopy(net).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def loss(self, batch: PretrainBatch, progress: Progress) -> torch.Tensor:
        views = torch.cat(self.views(batch))
        online = self.predictor(self.projector(self.net.features(views)))
        with torch.no_grad():
            target = self.target_projector(self.target_net.features(views))
        online0, online1 = online.chunk(2)
        target0, target1 = target.chunk(2)
        return (byol_loss(online0, target1) + byol_loss(online1, target0)) / 2

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """Target ← τ · target + (1 − τ) · online, τ from 0.996 to 1 by a cosine over all steps."""
        base = self.config.target_momentum
        tau = 1 - (1 - base) * (math.cos(math.pi * progress.step / max(progress.total_steps, 1)) + 1) / 2
        online = [*self.net.parameters(), *self.projector.parameters()]
        target = [*self.target_net.parameters(), *self.target_projector.parameters()]
        for online_param, target_param in zip(online, target):
            target_param.mul_(tau).add_(online_param.detach(), alpha=1 - tau)
