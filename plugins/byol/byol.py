"""`byol`: Bootstrap Your Own Latent, a method beyond the study, written as a plugin.

Paper: Grill, Strub, Altché et al., "Bootstrap Your Own Latent: A New Approach to
Self-Supervised Learning", NeurIPS 2020, arXiv 2006.07733.

This file uses only cmrbench's public plugin contract (`METHODS.register`, `SSPMethod`,
`MethodConfig`, `PretrainBatch`, `Step`, `SegNet.features`, the parts of
`cmrbench.methods.parts`, and `OptimConfig` with the optimizer registry `OPTIMIZERS`, to
which it adds LARS); load it with ``cmrbench run --plugins plugins/byol --methods byol,scratch``.

An online network (encoder, global pooling, projector, predictor) predicts the
projection that a target network (an exponential moving average of the online encoder
and projector) gives to another augmented view of the same slice. Loss, symmetrised over
the two views: ``2 − 2 · cos(predictor(online(v1)), target(v2))``. Projector and
predictor are MLPs in → 4096 → 256 with BatchNorm and ReLU; the target's EMA momentum
rises from 0.996 to 1 by a cosine over all steps. Optimizer as the paper's: LARS (below)
with momentum 0.9, trust coefficient 0.001, weight decay 1.5e-6, biases and norm weights
excluded from both the adaptation and the decay, lr 0.2 · batch/256 (0.05 at batch 64, as
the study's other methods), a warm-up over the first 10 % of the run (the paper's 10 of 100
epochs, kept as a fraction so that shortened runs keep its shape) and a cosine; the same on
both encoder families. The online encoder seeds fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cmrbench.methods import METHODS
from cmrbench.methods.base import MethodConfig, OptimConfig, PretrainBatch, SSPMethod, Step
from cmrbench.methods.parts import (
    byol_projection_head,
    momentum_copy,
    momentum_schedule,
    update_momentum,
)
from cmrbench.nets import SegNet
from cmrbench.optim import OPTIMIZERS
from cmrbench.transforms.augment import BatchAugment

LARS_TRUST_COEFFICIENT = 0.001
"""η of You et al. (2017), as BYOL uses it."""


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (LARS).

    Paper: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
    arXiv 1708.03888 (2017): the local learning rate of their Eq. 6 with momentum, as BYOL
    (Grill et al. 2020, implementation details) trains with it.

    For each parameter tensor ``w`` with gradient ``g`` (each layer's weight, bias, ...):
    ``local_lr = η · ‖w‖ / (‖g‖ + β · ‖w‖ + eps)`` (1 when ``‖w‖`` or ``‖g‖`` is 0),
    ``v ← m · v + local_lr · (g + β · w)``, ``w ← w − lr · v`` (the first step sets
    ``v = local_lr · (g + β · w)``, as PyTorch's SGD does). With ``exclude_bias_and_norm``
    (BYOL's setting) a parameter of fewer than 2 dimensions (biases, BatchNorm and LayerNorm
    weights) gets neither the adaptation nor the weight decay: ``v ← m · v + g``.

    Args:
        params: parameters or param groups (a group may override ``lr``, ``weight_decay``).
        lr: the global learning rate (``γ`` of the paper; the harness schedules it).
        momentum: ``m``, in [0, 1).
        weight_decay: ``β``, >= 0.
        trust_coefficient: ``η`` (0.001).
        exclude_bias_and_norm: see above.
        eps: keeps the ratio finite.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = LARS_TRUST_COEFFICIENT,
        exclude_bias_and_norm: bool = True,
        eps: float = 1e-8,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(
                f"LARS needs lr > 0 (got {lr}), momentum in [0, 1) (got "
                f"{momentum}), weight_decay >= 0 (got {weight_decay}) and "
                f"trust_coefficient > 0 (got {trust_coefficient})"
            )
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                weight_decay=weight_decay,
                trust_coefficient=trust_coefficient,
                exclude_bias_and_norm=exclude_bias_and_norm,
                eps=eps,
            ),
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: nn.Parameter, group: dict) -> None:
        update = param.grad
        if not (group["exclude_bias_and_norm"] and param.ndim < 2):
            decay = group["weight_decay"]
            update = update.add(param, alpha=decay)
            param_norm, grad_norm = param.norm(), param.grad.norm()
            ratio = (
                group["trust_coefficient"]
                * param_norm
                / (grad_norm + decay * param_norm + group["eps"])
            )
            update = update * torch.where((param_norm > 0) & (grad_norm > 0), ratio, 1.0)
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = update.clone()
        else:
            state["momentum_buffer"].mul_(group["momentum"]).add_(update)
        param.add_(state["momentum_buffer"], alpha=-group["lr"])


@OPTIMIZERS.register(reads=("momentum",))
def lars(
    params: list[nn.Parameter] | list[dict],
    device: torch.device,
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
) -> torch.optim.Optimizer:
    """`LARS` (η 0.001, biases and norm weights excluded). It reads ``momentum`` besides
    ``lr`` and ``weight_decay``; LARS has no Nesterov variant, so a config that sets
    ``nesterov`` for it is refused."""
    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``2 − 2 · cos(prediction, target)``; both ``(B, D)``, no
    gradient into ``target``."""
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(
            f"BYOL loss needs two (B, D) tensors of one shape; got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    cosine = (
        F.normalize(prediction.float(), dim=1) * F.normalize(target.detach().float(), dim=1)
    ).sum(1)
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
            raise ValueError(
                f"hidden_dim {self.hidden_dim} and projection_dim "
                f"{self.projection_dim} must be positive integers"
            )


@METHODS.register
class BYOL(SSPMethod):
    """BYOL on the net's encoder (pooled features)."""

    name = "byol"
    paper = (
        "Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised "
        "Learning, NeurIPS 2020, arXiv 2006.07733"
    )
    config_class = BYOLConfig
    config: BYOLConfig
    version = 2  # bump when a change to this file changes results (2: LARS)
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    optim = OptimConfig(
        optimizer="lars",
        lr=0.2 * 64 / 256,
        momentum=0.9,
        weight_decay=1.5e-6,
        schedule="cosine",
        warmup_fraction=0.1,
    )
    batch_size = 64
    epochs = 100

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, **hparams)
        hidden, dim = self.config.hidden_dim, self.config.projection_dim
        self.projector = byol_projection_head(net.feature_dim, hidden, dim)
        self.predictor = byol_projection_head(dim, hidden, dim)
        self.target_net = momentum_copy(net)
        self.target_projector = momentum_copy(self.projector)

    def loss(self, batch: PretrainBatch, step: Step) -> torch.Tensor:
        views = torch.cat(self.views(batch, step))
        online = self.predictor(self.projector(self.net.features(views)))
        with torch.no_grad():
            target = self.target_projector(self.target_net.features(views))
        online0, online1 = online.chunk(2)
        target0, target1 = target.chunk(2)
        return (byol_loss(online0, target1) + byol_loss(online1, target0)) / 2

    def after_step(self, step: Step) -> None:
        """Target ← τ · target + (1 − τ) · online, τ from 0.996 to 1 by a cosine over all steps."""
        tau = momentum_schedule(step.index, step.total, self.config.target_momentum)
        update_momentum(self.net, self.target_net, tau)
        update_momentum(self.projector, self.target_projector, tau)
