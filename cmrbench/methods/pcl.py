"""`pcl`: positional contrastive learning — slices at similar heights are positives.

Paper: Zeng, Wu, Chen et al., "Positional Contrastive Learning for Volumetric Medical
Image Segmentation", MICCAI 2021, arXiv 2106.09157; configured as in de Mooij et al.,
arXiv 2409.18100 (PAPER.md, "The four SSP methods").

Same views, encoder and projection head as `simclr`, but a supervised NT-Xent: two views
are positives when their relative slice positions (``z / Z``, 0 = base) differ by
strictly less than 0.1 — across subjects and cardiac frames — and the two views of one
slice are always positives. Temperature 0.1, batch 64, SGD lr 0.1, wd 1e-5, cosine.
The encoder's weights seed fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cmrbench.methods import METHODS
from cmrbench.methods.base import OptimConfig, PretrainBatch, Step
from cmrbench.methods.parts import nt_xent_loss, view_pair_mask
from cmrbench.methods.simclr import SimCLR, SimCLRConfig


def position_positive_mask(position: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool ``(2N, 2N)`` positives over the rows of ``cat([view0, view1])``.

    ``position`` is ``(N,)``, the relative slice position of each image. Rows i and j
    are positives when ``|position_i - position_j| < threshold`` (strict), or when they
    are the two views of one image; a row is never its own positive.
    """
    if threshold <= 0:
        raise ValueError(f"PCL position threshold {threshold} must be > 0")
    if position.ndim != 1:
        raise ValueError(f"positions must be a vector (N,); got shape {tuple(position.shape)}")
    n = position.shape[0]
    both_views = torch.cat([position, position])
    close = (both_views[:, None] - both_views[None, :]).abs() < threshold
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=position.device)
    return (close | view_pair_mask(n, position.device)) & ~self_pair


@dataclass(frozen=True)
class PCLConfig(SimCLRConfig):
    """`SimCLRConfig` plus the relative-position distance below which slices are positives."""

    position_threshold: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.position_threshold <= 0:
            raise ValueError(f"position_threshold {self.position_threshold} must be > 0")


@METHODS.register
class PCL(SimCLR):
    """PCL on the U-Net encoder: `SimCLR` with position-defined positives."""

    name = "pcl"
    paper = (
        "Zeng et al., Positional Contrastive Learning for Volumetric Medical Image "
        "Segmentation, MICCAI 2021, arXiv 2106.09157"
    )
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    config_class = PCLConfig
    config: PCLConfig
    optim = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-5, schedule="cosine")
    # On ViTs: SimCLR's AdamW recipe (MoCo v3) with the lr scaled to PCL's batch of 64.
    optim_by_family = {
        "vit": OptimConfig(
            optimizer="adamw",
            lr=1.5e-4 * 64 / 256,
            weight_decay=0.1,
            schedule="cosine",
            warmup_fraction=40 / 300,
        )
    }
    batch_size = 64
    epochs = 100

    def loss(self, batch: PretrainBatch, step: Step) -> torch.Tensor:
        z0, z1 = self.embed_views(batch, step)
        positives = position_positive_mask(batch.position, self.config.position_threshold)
        return nt_xent_loss(z0, z1, self.config.temperature, positives)
