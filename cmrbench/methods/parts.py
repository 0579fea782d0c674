"""Parts that SSP methods share: projection heads, the momentum (EMA) teacher, the
teacher's cosine schedule and the contrastive loss (lightly's idea of small parts).

A method file imports what it needs from here instead of writing its own copy: SimCLR and
PCL use `simclr_projection_head` and `nt_xent_loss`; DINO `DINOHead`, `momentum_copy`,
`update_momentum` and `momentum_schedule`; the BYOL plugin `byol_projection_head` and the
same teacher helpers. This module registers no method.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from cmrbench.optim import cosine_schedule

ModuleT = TypeVar("ModuleT", bound=nn.Module)

RELU_INPLACE: Callable[[], nn.Module] = partial(nn.ReLU, inplace=True)
"""`mlp_head`'s default activation: an in-place ReLU."""

# --------------------------------------------------------------------------- heads


def mlp_head(
    dims: Sequence[int],
    batch_norm: bool = False,
    activation: Callable[[], nn.Module] = RELU_INPLACE,
) -> nn.Sequential:
    """``(B, dims[0]) -> (B, dims[-1])``: a Linear layer per step of ``dims``; between two
    Linear layers a BatchNorm1d (with ``batch_norm``) and the ``activation``.

    ``mlp_head((512, 512, 512, 512))`` is Linear, ReLU, Linear, ReLU, Linear.
    """
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"an MLP head needs at least two positive sizes; got {tuple(dims)}")
    layers: list[nn.Module] = []
    for index, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        if index:
            layers += [nn.BatchNorm1d(in_dim)] if batch_norm else []
            layers.append(activation())
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def simclr_projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``(B, in_dim) -> (B, out_dim)``: Linear, ReLU, Linear, ReLU, Linear (the study's
    SimCLR and PCL projector, 512-512-512-512 on the U-Net)."""
    return mlp_head((in_dim, hidden_dim, hidden_dim, out_dim))


def byol_projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``(B, in_dim) -> (B, out_dim)``: Linear, BatchNorm, ReLU, Linear (BYOL's projector and
    predictor, Grill et al. 2020: 4096 hidden, 256 out)."""
    return mlp_head((in_dim, hidden_dim, out_dim), batch_norm=True)


class NormalizedLinear(nn.Module):
    """``(B, in_dim) -> (B, out_dim)`` without bias, each weight row scaled to unit norm.

    DINO's last layer is ``weight_norm(Linear)`` with the norm ``g`` fixed to 1
    (``norm_last_layer=True``); with ``g`` fixed that is exactly a row-normalised weight.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """``(B, in_dim) -> (B, out_dim)``: MLP with BatchNorm + GELU (in → hidden → hidden →
    bottleneck), L2 norm, `NormalizedLinear` (Caron et al. 2021; the study's 512-2048-2048-256
    to 8192)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = mlp_head(
            (in_dim, hidden_dim, hidden_dim, bottleneck_dim), batch_norm=True, activation=nn.GELU
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # DINO's initialisation
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(layer.bias)
        self.last_layer = NormalizedLinear(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


# --------------------------------------------------------------------------- momentum teacher


def momentum_copy(module: ModuleT) -> ModuleT:
    """A frozen copy of ``module`` to serve as its momentum teacher (target network): same
    weights now, no gradients, so the optimizer never updates it."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def update_momentum(online: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher ← momentum · teacher + (1 − momentum) · online``, parameter by parameter
    (buffers such as BatchNorm statistics stay the teacher's own)."""
    for online_param, teacher_param in zip(online.parameters(), teacher.parameters()):
        teacher_param.mul_(momentum).add_(online_param.detach(), alpha=1 - momentum)


def momentum_schedule(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """The teacher's momentum at ``step`` of ``total_steps``: ``base → final`` by a half
    cosine (DINO's ``cosine_scheduler`` and BYOL's ``τ``, 0.996 → 1)."""
    return cosine_schedule(step, total_steps, base, final)


# --------------------------------------------------------------------------- losses


def view_pair_mask(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool ``(2n, 2n)``: True where rows ``i`` and ``j`` of ``cat([view0, view1])`` are the
    two views of one image (``j = i ± n``)."""
    idx = torch.arange(2 * n, device=device)
    return (idx[:, None] - idx[None, :]).abs() == n


def nt_xent_loss(
    z0: torch.Tensor, z1: torch.Tensor, temperature: float, positives: torch.Tensor | None = None
) -> torch.Tensor:
    """NT-Xent (InfoNCE; normalised temperature-scaled cross-entropy) of two views.

    Args:
        z0, z1: ``(N, D)`` embeddings of the first and second view of N images.
        temperature: divides the cosine similarities (> 0).
        positives: optional bool ``(2N, 2N)`` over the rows of ``cat([z0, z1])``; the
            default, `view_pair_mask`, makes the other view of the same image the only
            positive (SimCLR, Chen et al. 2020). PCL passes a mask with more positives per row.

    With ``s_ij`` the cosine similarity of rows i and j and ``P(i)`` the positives of i,
    the loss is the mean over the 2N rows of
    ``-1/|P(i)| · Σ_{p∈P(i)} log(exp(s_ip/τ) / Σ_{k≠i} exp(s_ik/τ))``
    (Khosla et al.'s supervised contrastive loss, NeurIPS 2020, which for one positive per
    row is the standard NT-Xent). Computed in float32.
    """
    if temperature <= 0:
        raise ValueError(f"NT-Xent temperature {temperature} must be > 0")
    if z0.ndim != 2 or z0.shape != z1.shape:
        raise ValueError(
            f"NT-Xent needs two (N, D) embeddings of equal shape; got "
            f"{tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    n = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]).float(), dim=1)
    if positives is None:
        positives = view_pair_mask(n, z.device)
    if positives.shape != (2 * n, 2 * n):
        raise ValueError(
            f"positive mask of shape {tuple(positives.shape)} does not match "
            f"2N = {2 * n} embeddings"
        )
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = positives & ~self_pair
    per_row = torch.where(positives, log_prob, 0.0).sum(dim=1) / positives.sum(dim=1)
    return -per_row.mean()
