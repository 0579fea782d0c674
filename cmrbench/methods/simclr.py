"""`simclr`: contrastive learning between two augmented views of each slice.

Paper: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020, arXiv 2002.05709; configured as in de Mooij et al.,
arXiv 2409.18100 (PAPER.md, "The four SSP methods").

Each slice is augmented twice with the full ("paper") augmentation; the U-Net encoder's
globally pooled bottleneck goes through an MLP 512-512-512-512 (three linear layers,
ReLU between them); NT-Xent with cosine similarity and temperature 0.1 pulls the two
views of a slice together and pushes them from the other 2N - 2 views of the batch.
The encoder's weights seed fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cmrbench.methods import METHODS
from cmrbench.methods.base import MethodConfig, OptimConfig, PretrainBatch, Progress, SSPMethod
from cmrbench.nets import SegNet
from cmrbench.transforms.augment import BatchAugment


class ProjectionMLP(nn.Sequential):
    """``(B, in_dim) -> (B, out_dim)``: Linear, ReLU, Linear, ReLU, Linear (the study's head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def view_pair_mask(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool ``(2n, 2n)``: True where rows ``i`` and ``j`` of ``cat([view0, view1])`` are the
    two views of one image (``j = i ± n``)."""
    idx = torch.arange(2 * n, device=device)
    return (idx[:, None] - idx[None, :]).abs() == n


def nt_xent_loss(z0: torch.Tensor, z1: torch.Tensor, temperature: float,
                 positives: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy) of two views.

    Args:
        z0, z1: ``(N, D)`` embeddings of the first and second view of N images.
        temperature: divides the cosine similarities (> 0).
        positives: optional bool ``(2N, 2N)`` over the rows of ``cat([z0, z1])``; the
            default, `view_pair_mask`, makes the other view of the same image the only
            positive (SimCLR). PCL passes a mask with more positives per row.

    With ``s_ij`` the cosine similarity of rows i and j and ``P(i)`` the positives of i,
    the loss is the mean over the 2N rows of
    ``-1/|P(i)| · Σ_{p∈P(i)} log(exp(s_ip/τ) / Σ_{k≠i} exp(s_ik/τ))``
    (Khosla et al.'s supervised contrastive loss, NeurIPS 2020, which for one positive per
    row is the standard NT-Xent). Computed in float32.
    """
    if temperature <= 0:
        raise ValueError(f"NT-Xent temperature {temperature} must be > 0")
    if z0.ndim != 2 or z0.shape != z1.shape:
        raise ValueError(f"NT-Xent needs two (N, D) embeddings of equal shape; got "
                         f"{tuple(z0.shape)} and {tuple(z1.shape)}")
    n = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]).float(), dim=1)
    if positives is None:
        positives = view_pair_mask(n, z.device)
    if positives.shape != (2 * n, 2 * n):
        raise ValueError(f"positive mask of shape {tuple(positives.shape)} does not match "
                         f"2N = {2 * n} embeddings")
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = positives & ~self_pair
    per_row = torch.where(positives, log_prob, 0.0).sum(dim=1) / positives.sum(dim=1)
    return -per_row.mean()


@dataclass(frozen=True)
class SimCLRConfig(MethodConfig):
    """SimCLR's hyper-parameters (the study's values): NT-Xent temperature, projector sizes."""

    temperature: float = 0.1
    hidden_dim: int = 512
    out_dim: int = 512

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature {self.temperature} must be > 0")
        for key in ("hidden_dim", "out_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} {getattr(self, key)} must be a positive integer")


@METHODS.register
class SimCLR(SSPMethod):
    """SimCLR on the U-Net encoder (the study's configuration as defaults)."""

    name = "simclr"
    paper = ("Chen et al., A Simple Framework for Contrastive Learning of Visual "
             "Representations, ICML 2020, arXiv 2002.05709")
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    config_class = SimCLRConfig
    config: SimCLRConfig
    optim = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                        schedule="cosine")
    # On ViTs: MoCo v3's recipe for contrastive ViT pretraining (Chen, Xie, He, ICCV 2021,
    # arXiv 2104.02057), which found LARS/SGD unstable for ViTs: AdamW, lr 1.5e-4 · batch/256
    # (1.3125e-4 at batch 224), weight decay 0.1, 40 warm-up epochs of 300, cosine.
    optim_by_family = {"vit": OptimConfig(optimizer="adamw", lr=1.5e-4 * 224 / 256,
                                          weight_decay=0.1, schedule="cosine",
                                          warmup_fraction=40 / 300)}
    batch_size = 224           # images, i.e. 448 views
    epochs = 100

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment,
                 generator: torch.Generator | None = None, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, generator, **hparams)
        self.projector = ProjectionMLP(net.feature_dim, self.config.hidden_dim, self.config.out_dim)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W) -> (B, out_dim)``: pooled encoder features through the projector."""
        return self.projector(self.net.features(images))

    def embed_views(self, batch: PretrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``(B, out_dim)`` of two augmented views (`views`), from one forward
        pass (shared BN statistics)."""
        return self.embed(torch.cat(self.views(batch))).chunk(2)

    def loss(self, batch: PretrainBatch, progress: Progress) -> torch.Tensor:
        z0, z1 = self.embed_views(batch)
        return nt_xent_loss(z0, z1, self.config.temperature)
