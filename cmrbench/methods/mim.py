"""`mim` and `mim_enc`: masked image modelling — the U-Net inpaints masked patches.

Paper: the study's own MIM (de Mooij et al., arXiv 2409.18100, PAPER.md "The four SSP
methods"), a convolutional take on SimMIM (Xie et al., CVPR 2022, arXiv 2111.09886) and
MAE (He et al., CVPR 2022, arXiv 2111.06377) with 0-filled patches and no mask token.

The whole U-Net, with one output channel and no deep supervision, reconstructs the
image from a copy in which exactly 75 % of an 8 x 8 grid of square patches (32 x 32 px at
256², scaled with the image size: `cmrbench.transforms.masking`) are set to 0; the loss is
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
(`mae_loss` below; ``norm_pix`` for normalised-pixel targets). The MAE
decoder is discarded, so `mim` and `mim_enc` both transfer only the encoder there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

from cmrbench.methods import METHODS
from cmrbench.methods.base import MethodConfig, OptimConfig, PretrainBatch, SSPMethod, Step
from cmrbench.nets import SegNet
from cmrbench.nets.vit import ViTSegNet
from cmrbench.transforms.augment import BatchAugment
from cmrbench.transforms.masking import (
    num_masked,
    patch_grid,
    patch_mask_to_pixels,
    patchify,
    random_patch_mask,
    random_token_mask,
)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(prediction − target)²`` over the pixels where ``mask`` is True.

    All three are ``(B, 1, H, W)``; ``mask`` is bool. Computed in float32.
    """
    if prediction.shape != target.shape or mask.shape != target.shape:
        raise ValueError(
            f"masked MSE needs prediction, target and mask of one shape; got "
            f"{tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}"
        )
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


@METHODS.register
class MIM(SSPMethod):
    """MIM on the whole U-Net; encoder and decoder seed fine-tuning."""

    name = "mim"
    paper = (
        "de Mooij, Pluim, Scannell, Self-supervised pretraining for cardiovascular "
        "magnetic resonance cine segmentation, arXiv 2409.18100 (masked image modelling)"
    )
    transfers = {"cnn": ("encoder", "decoder"), "vit": ("encoder",)}
    net_kwargs = {"num_classes": 1, "deep_supervision": False}
    config_class = MIMConfig
    config: MIMConfig
    optim = OptimConfig(
        optimizer="sgd", lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5, schedule="cosine"
    )
    # On ViTs, MAE's pretraining recipe (He et al. 2022, Table 8): AdamW, betas (0.9, 0.95),
    # lr 1.5e-4 · batch/256 (7.5e-5 at batch 128), weight decay 0.05 but none on biases and
    # norms, cosine after a warm-up of 40 of its 800 epochs.
    optim_by_family = {
        "vit": OptimConfig(
            optimizer="adamw",
            lr=1.5e-4 * 128 / 256,
            betas=(0.9, 0.95),
            weight_decay=0.05,
            no_decay_bias_norm=True,
            schedule="cosine",
            warmup_fraction=40 / 800,
        )
    }
    n_views = 1
    batch_size = 128
    epochs = 100

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, **hparams)
        if net.family == "vit":
            if not isinstance(net, ViTSegNet):
                raise TypeError(
                    f"{self.name} pretrains a vit-family net with MAE, which needs a ViTSegNet "
                    f"(its patch_size and forward_mae_encoder); got {type(net).__name__}"
                )
            self.mae_decoder = MAEDecoder(net.feature_dim, net.patch_size)
            return
        self.patches_per_side = self.config.patches_per_side
        patch_grid(image_size, self.patches_per_side)  # raises if the grid does not fit
        self.n_patches = self.patches_per_side**2
        if num_masked(self.n_patches, self.config.mask_ratio) < 1:
            raise ValueError(
                f"{self.name}: mask_ratio {self.config.mask_ratio} masks no "
                f"patch of {self.n_patches}"
            )

    def mask_images(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, 1, H, W)`` with masked patches (drawn from ``generator``) set to 0,
        and the bool pixel mask."""
        patches = random_patch_mask(
            images.shape[0], self.n_patches, self.config.mask_ratio, generator, images.device
        )
        pixels = patch_mask_to_pixels(patches, self.image_size, self.patches_per_side)
        return images.masked_fill(pixels, 0.0), pixels

    def loss(self, batch: PretrainBatch, step: Step) -> torch.Tensor:
        (images,) = self.views(batch, step)
        if self.net.family == "vit":
            assert isinstance(self.net, ViTSegNet)  # __init__ accepts no other vit-family net
            return mae_loss(
                self.net,
                self.mae_decoder,
                images,
                self.config.mask_ratio,
                self.config.norm_pix,
                step.generator,
            )
        masked, pixels = self.mask_images(images, step.generator)
        return masked_mse(self.net(masked), images, pixels)


@METHODS.register
class MIMEncoder(MIM):
    """`mim` with only the encoder seeding fine-tuning (same pretraining, same checkpoint)."""

    name = "mim_enc"
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    pretrain_as = "mim"


class MAEDecoder(nn.Module):
    """MAE's light decoder: visible tokens ``(B, n_keep, D)`` -> patch pixels ``(B, N, p·p·C)``.

    The visible tokens are projected to ``embed_dim``, a learned mask token fills the masked
    places, tokens are put back in patch order, fixed 2D sin-cos positions are added (as in
    MAE), ``depth`` timm Transformer blocks run, and a linear layer predicts each patch's
    pixels in `masking.patchify` order. Defaults (128 wide, 2 blocks, 4 heads) are light
    for ViT-Tiny; MAE's own is 512 wide with 8 blocks for ViT-B and larger.
    """

    def __init__(
        self,
        encoder_dim: int,
        patch_size: int,
        in_channels: int = 1,
        embed_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim % 4:
            raise ValueError(
                f"MAE decoder width {embed_dim} must be divisible by 4 for its 2D "
                "sin-cos position embedding"
            )
        self.patch_size = patch_size
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.Sequential(
            *(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.pred = nn.Linear(embed_dim, patch_size * patch_size * in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE's initialisation: N(0, 0.02) mask token, Xavier-uniform linear layers."""
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self, visible: torch.Tensor, restore: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Predicted pixels ``(B, N, p·p·C)`` of every patch.

        Args:
            visible: encoder tokens ``(B, n_keep, D)`` in `TokenMask.keep` order.
            restore: ``(B, N)`` long, `TokenMask.restore`.
            grid: the patch grid ``(H/p, W/p)``, ``N = H/p · W/p``.
        """
        x = self.embed(visible)
        batch, n_keep, dim = x.shape
        n_tokens = restore.shape[1]
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(batch, n_tokens - n_keep, -1)], dim=1)
        x = x.gather(1, restore.unsqueeze(-1).expand(-1, -1, dim))
        x = x + build_sincos2d_pos_embed(list(grid), dim, device=x.device, dtype=x.dtype)
        return self.pred(self.norm(self.blocks(x)))


def masked_patch_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = False
) -> torch.Tensor:
    """MAE's loss: per-patch mean squared error, averaged over the masked patches only.

    Args:
        prediction: ``(B, N, P)`` predicted patch pixels.
        target: ``(B, N, P)`` true patch pixels (`masking.patchify`).
        mask: ``(B, N)`` bool, True on masked patches.
        norm_pix: normalise each target patch by its own mean and (unbiased) variance
            first, MAE's "normalized pixels" variant.
    """
    if prediction.shape != target.shape or mask.shape != target.shape[:2]:
        raise ValueError(
            f"MAE loss needs prediction and target (B, N, P) and mask (B, N); got "
            f"{tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}"
        )
    target = target.float()
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((prediction.float() - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


def mae_loss(
    net: ViTSegNet,
    decoder: MAEDecoder,
    images: torch.Tensor,
    mask_ratio: float = 0.75,
    norm_pix: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One MAE step's loss on ``images`` ``(B, C, H, W)``: mask ⌊ratio · N⌋ of the N patches
    per image (`masking.random_token_mask`), encode the rest, reconstruct, `masked_patch_loss`."""
    net.check_input_size(images.shape[-1])
    patch = net.patch_size
    grid = (images.shape[-2] // patch, images.shape[-1] // patch)
    token_mask = random_token_mask(
        images.shape[0], grid[0] * grid[1], mask_ratio, generator, images.device
    )
    visible = net.forward_mae_encoder(images, token_mask.keep)
    prediction = decoder(visible, token_mask.restore, grid)
    return masked_patch_loss(prediction, patchify(images, patch), token_mask.mask, norm_pix)
