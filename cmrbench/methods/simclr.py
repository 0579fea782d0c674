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

from cmrbench.methods import METHODS
from cmrbench.methods.base import MethodConfig, OptimConfig, PretrainBatch, SSPMethod, Step
from cmrbench.methods.parts import nt_xent_loss, simclr_projection_head
from cmrbench.nets import SegNet
from cmrbench.transforms.augment import BatchAugment


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
    paper = (
        "Chen et al., A Simple Framework for Contrastive Learning of Visual "
        "Representations, ICML 2020, arXiv 2002.05709"
    )
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    config_class = SimCLRConfig
    config: SimCLRConfig
    optim = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="cosine")
    # On ViTs: MoCo v3's recipe for contrastive ViT pretraining (Chen, Xie, He, ICCV 2021,
    # arXiv 2104.02057), which found LARS/SGD unstable for ViTs: AdamW, lr 1.5e-4 · batch/256
    # (1.3125e-4 at batch 224), weight decay 0.1, 40 warm-up epochs of 300, cosine.
    optim_by_family = {
        "vit": OptimConfig(
            optimizer="adamw",
            lr=1.5e-4 * 224 / 256,
            weight_decay=0.1,
            schedule="cosine",
            warmup_fraction=40 / 300,
        )
    }
    batch_size = 224  # images, i.e. 448 views
    epochs = 100

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, **hparams)
        self.projector = simclr_projection_head(
            net.feature_dim, self.config.hidden_dim, self.config.out_dim
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W) -> (B, out_dim)``: pooled encoder features through the projector."""
        return self.projector(self.net.features(images))

    def embed_views(self, batch: PretrainBatch, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``(B, out_dim)`` of two augmented views (`views`), from one forward
        pass (shared BN statistics)."""
        z0, z1 = self.embed(torch.cat(self.views(batch, step))).chunk(2)
        return z0, z1

    def loss(self, batch: PretrainBatch, step: Step) -> torch.Tensor:
        z0, z1 = self.embed_views(batch, step)
        return nt_xent_loss(z0, z1, self.config.temperature)
