"""`mim` and `mim_enc`: masked image modelling — the U-Net inpaints masked patches.

Paper: the study's own MIM (de Mooij et al., arXiv 2409.18100, PAPER.md "The four SSP
methods"), a convolutional take on SimMIM (Xie et al., CVPR 2022, arXiv 2111.09886) and
MAE (He et al., CVPR 2022, arXiv 2111.06377) with 0-filled patches and no mask token.

The whole U-Net, with one output channel and no deep supervision, reconstructs the
image from a copy in which exactly 75 % of an 8 x 8 grid of square patches (32 x 32 px at
256², scaled with the image size: `cmrbench.benchmark.masking`) are set to 0; the loss is
the mean squared error over the masked pixels only. SGD lr 0.01, momentum 0.99, Nesterov,
wd 3e-5, batch 128.

Two choices PAPER.md leaves open follow the study's code (``configs/mim-config.yaml``
and ``train_mim.py``): the input is first augmented with the standard ("paper")
augmentation (its training data loader has ``augmentation: True``), and the learning
rate follows a cosine schedule (``CosineAnnealingLR``), not nnU-Net's poly.

The study saved both encoder-only and encoder + decoder weights without saying which it
fine-tuned, so both exist: `mim` seeds encoder and decoder, `mim_enc` only the encoder.
They pretrain identically; one pretraining run serves both.

On a ViT, MIM is MAE (He et al., CVPR 2022): the masked tokens (75 % of the ViT's own
patches) are dropped from the encoder and a light decoder reconstructs their pixels
(`cmrbench.benchmark.vit.mae_loss`; ``norm_pix`` for normalised-pixel targets). The MAE
decoder is discarded, so `mim` and `mim_enc` both transfer only the encoder there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cmrbench.benchmark.augment import BatchAugment
from cmrbench.benchmark.masking import num_masked, patch_grid, patch_mask_to_pixels, random_patch_mask
from cmrbench.benchmark.nets import SegNet
from cmrbench.benchmark.vit import MAEDecoder, mae_loss
from cmrbench.methods import register_method
from cmrbench.methods.base import MethodConfig, OptimConfig, PretrainBatch, Progress, SSPMethod


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(prediction − target)²`` over the pixels where ``mask`` is True.

    All three are ``(B, 1, H, W)``; ``mask`` is bool. Computed in float32.
    """
    if prediction.shape != target.shape or mask.shape != target.shape:
        raise ValueError(f"masked MSE needs prediction, target and mask of one shape; got "
                         f"{tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}")
    squared = (prediction.float() - target.float()) ** 2
    return torch.where(mask, squared, 0.0).sum() / mask.sum().clamp_min(1)


@dataclass(frozen=True)
class MIMConfig(MethodConfig):
    """MIM's hyper-parameters: the masked fraction, the patch grid (U-Net) and MAE's
    normalised-pixel targets (ViT)."""

    mask_ratio: float = 0.75
    patches_per_side: int = 8
    norm_pix: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio {self.mask_ratio} must be in (0, 1)")
        if self.patches_per_side < 1:
            raise ValueError(f"patches_per_side {self.patches_per_side} must be a positive integer")


@register_method
class MIM(SSPMethod):
    """MIM on the whole U-Net; encoder and decoder seed fine-tuning."""

    name = "mim"
    paper = ("de Mooij, Pluim, Scannell, Self-supervised pretraining for cardiovascular "
             "magnetic resonance cine segmentation, arXiv 2409.18100 (masked image modelling)")
    transfers = {"cnn": ("encoder", "decoder"), "vit": ("encoder",)}
    net_kwargs = {"num_classes": 1, "deep_supervision": False}
    config_class = MIMConfig
    config: MIMConfig
    optim = OptimConfig(optimizer="sgd", lr=0.01, momentum=0.99, nesterov=True,
                        weight_decay=3e-5, schedule="cosine")
    # On ViTs, MAE's pretraining recipe (He et al. 2022, Table 8): AdamW, betas (0.9, 0.95),
    # lr 1.5e-4 · batch/256 (7.5e-5 at batch 128), weight decay 0.05 but none on biases and
    # norms, cosine after a warm-up of 40 of its 800 epochs.
    optim_by_family = {"vit": OptimConfig(optimizer="adamw", lr=1.5e-4 * 128 / 256,
                                          betas=(0.9, 0.95), weight_decay=0.05,
                                          no_decay_bias_norm=True, schedule="cosine",
                                          warmup_fraction=40 / 800)}
    n_views = 1
    batch_size = 128
    epochs = 100

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment,
                 generator: torch.Generator | None = None, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, generator, **hparams)
        if net.family == "vit":
            self.mae_decoder = MAEDecoder(net.feature_dim, net.patch_size)
            return
        self.patches_per_side = self.config.patches_per_side
        patch_grid(image_size, self.patches_per_side)    # raises if the grid does not fit
        self.n_patches = self.patches_per_side ** 2
        if num_masked(self.n_patches, self.config.mask_ratio) < 1:
            raise ValueError(f"{self.name}: mask_ratio {self.config.mask_ratio} masks no "
                             f"patch of {self.n_patches}")

    def mask_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, 1, H, W)`` with masked patches set to 0, and the bool pixel mask."""
        patches = random_patch_mask(images.shape[0], self.n_patches, self.config.mask_ratio,
                                    self.generator, images.device)
        pixels = patch_mask_to_pixels(patches, self.image_size, self.patches_per_side)
        return images.masked_fill(pixels, 0.0), pixels

    def loss(self, batch: PretrainBatch, progress: Progress) -> torch.Tensor:
        (images,) = self.views(batch)
        if self.net.family == "vit":
            return mae_loss(self.net, self.mae_decoder, images, self.config.mask_ratio,
                            self.config.norm_pix, self.generator)
        masked, pixels = self.mask_images(images)
        return masked_mse(self.net(masked), images, pixels)


@register_method
class MIMEncoder(MIM):
    """`mim` with only the encoder seeding fine-tuning (same pretraining, same checkpoint)."""

    name = "mim_enc"
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    pretrain_as = "mim"
