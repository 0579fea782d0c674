"""Vision Transformer segmentation nets (UNETR-style decoder) and the MAE pretraining path.

The encoder is a timm Vision Transformer (Dosovitskiy et al., ICLR 2021, arXiv 2010.11929)
built by ``timm.create_model`` with one input channel, no class token, no classifier and
random initialisation (there are no pretrained weights: pretraining is what the benchmark
measures). Its patch tokens ``(B, N, D)`` form a grid of ``(H/p) x (W/p)`` for patch size
``p``; position embeddings are resampled when the image size differs from ``img_size``, so
one net serves every size that ``p`` divides (DINO's local crops included).

The decoder follows UNETR (Hatamizadeh et al., WACV 2022, arXiv 2103.10504): token maps of
``L = log2(p)`` evenly spaced blocks (3, 6, 9, 12 of a 12-block ViT with ``p = 16``) are
reshaped to ``(B, D, H/p, W/p)``; the deepest is upsampled once by a 2x2 transposed
convolution and the others by as many as bring them to ``H/2^(L-1)``, ..., ``H/2``; a conv
stem on the raw image adds full-resolution detail; `ConvBlock`s merge each level, bottom to
top. Decoder levels ``H/2^k`` (``k = L-1 .. 0``) feed the same `DeepSupervisionHead` as the
U-Net, so training returns ``L`` logits (full resolution first) and evaluation one
``(B, C, H, W)`` tensor: the harness and its losses do not know which family they train.

MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
arXiv 2111.06377): `ViTSegNet.forward_mae_encoder` runs the ViT on the visible tokens only;
the MAE decoder and loss belong to the `mim` method (`cmrbench.methods.mim`).

Fine-tuning follows MAE's end-to-end recipe (AdamW, weight decay 0.05, layer-wise
learning-rate decay 0.75, cosine schedule with warm-up): `ViTSegNet.param_groups`.
"""

from __future__ import annotations

import math
from typing import Any, cast

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cmrbench.nets.base import NETS, ConvBlock, DeepSupervisionHead, SegNet
from cmrbench.optim import OptimConfig
from cmrbench.transforms.masking import keep_tokens

# parameters named so are excluded from weight decay, as are all 1-D ones (biases, norms)
NO_WEIGHT_DECAY = ("encoder.pos_embed",)


def _level_count(patch_size: int) -> int:
    """``log2(patch_size)``: the decoder's number of resolution levels (4 for 16 px patches)."""
    levels = int(math.log2(patch_size))
    if patch_size < 4 or 2**levels != patch_size:
        raise ValueError(
            f"ViT patch size {patch_size} is not supported by the UNETR decoder; "
            "expected a power of two of at least 4"
        )
    return levels


def token_block_indices(depth: int, levels: int) -> list[int]:
    """0-based indices of the ``levels`` blocks whose tokens the decoder reads, evenly spaced.

    ``token_block_indices(12, 4) == [2, 5, 8, 11]`` (UNETR's blocks 3, 6, 9, 12).
    """
    if depth < levels:
        raise ValueError(
            f"a ViT of depth {depth} has fewer blocks than the {levels} token maps "
            "its decoder needs; expected depth >= log2(patch size)"
        )
    return [round(depth * (i + 1) / levels) - 1 for i in range(levels)]


class TokenUpsampler(nn.Sequential):
    """UNETR's projection-upsampling block: ``(B, D, h, w) -> (B, out_ch, h·2^n, w·2^n)``.

    One 2x2 transposed convolution, then ``n_up − 1`` times a transposed convolution and a
    `ConvBlock`.
    """

    def __init__(self, token_dim: int, out_ch: int, n_up: int) -> None:
        layers: list[nn.Module] = [nn.ConvTranspose2d(token_dim, out_ch, 2, stride=2, bias=False)]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(out_ch, out_ch, 2, stride=2, bias=False),
                ConvBlock(out_ch, out_ch),
            ]
        super().__init__(*layers)


class UNETRDecoder(nn.Module):
    """Multi-scale decoder on ViT token maps and the raw image (UNETR, arXiv 2103.10504).

    ``channels[k]`` is the width of level ``k`` at resolution ``H/2^k``, ``k = 0 .. L-1``
    with ``L = len(channels) = log2(patch size)``.
    """

    def __init__(self, in_channels: int, token_dim: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        levels = len(channels)
        self.stem = ConvBlock(in_channels, channels[0])
        # skip of level k (1 .. L-1) comes from the k-th shallowest token map, L - k ups away
        self.skips = nn.ModuleList(
            TokenUpsampler(token_dim, channels[k], levels - k) for k in range(1, levels)
        )
        self.bottleneck_up = nn.ConvTranspose2d(token_dim, channels[-1], 2, stride=2, bias=False)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(channels[k + 1], channels[k], 2, stride=2, bias=False)
            for k in range(levels - 1)
        )
        self.blocks = nn.ModuleList(ConvBlock(2 * ch, ch) for ch in channels)

    def forward(self, image: torch.Tensor, token_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder features of every level, lowest resolution first (as `UNetDecoder`).

        Args:
            image: ``(B, in_channels, H, W)``.
            token_maps: ``L`` maps ``(B, D, H/p, W/p)``, shallowest block first.
        """
        skips = [self.stem(image)] + [up(t) for up, t in zip(self.skips, token_maps[:-1])]
        x = self.bottleneck_up(token_maps[-1])
        outs = []
        for level in range(len(skips) - 1, -1, -1):
            if level < len(skips) - 1:
                x = self.ups[level](x)
            x = self.blocks[level](torch.cat([x, skips[level]], dim=1))
            outs.append(x)
        return outs


class ViTSegNet(SegNet):
    """timm ViT encoder + UNETR decoder: ``(B, in_channels, H, W) -> (B, num_classes, H, W)``.

    Args:
        timm_name: the timm architecture ``encoder`` is created as (``vit_tiny_patch16_224``).
        vit_kwargs: overrides of that architecture (``embed_dim``, ``depth``, ...).
        decoder_width: channels of the full-resolution level; level ``k`` has ``width·2^k``.
        img_size: the size the position embeddings are learned at; other sizes resample
            them. Pretraining and fine-tuning must agree on it (it sets ``pos_embed``'s shape).
    """

    family = "vit"
    # MAE end-to-end fine-tuning (He et al. 2022, Table 9): AdamW, betas (0.9, 0.999), weight
    # decay 0.05, cosine schedule, warm-up 5 % of the epochs (50 of the study's 1000), layer
    # decay 0.75. MAE's lr is 1e-3 · batch / 256, i.e. 1.25e-4 at the study's batch 32; the
    # benchmark uses 5e-4 at batch 32, since here the whole decoder also trains from scratch
    # on few labelled slices (a choice, not tuned; grids may override it).
    finetune_optim = OptimConfig(
        optimizer="adamw", lr=5e-4, weight_decay=0.05, schedule="cosine", warmup_fraction=0.05
    )
    layer_decay = 0.75

    def __init__(
        self,
        timm_name: str,
        vit_kwargs: dict[str, Any],
        decoder_width: int,
        in_channels: int = 1,
        num_classes: int = 4,
        deep_supervision: bool = True,
        img_size: int = 256,
    ) -> None:
        super().__init__()
        # timm.create_model is typed as returning an nn.Module; a ``vit_*`` name with these
        # arguments builds a VisionTransformer
        self.encoder = cast(
            VisionTransformer,
            timm.create_model(
                timm_name,
                pretrained=False,
                in_chans=in_channels,
                img_size=img_size,
                num_classes=0,
                class_token=False,
                global_pool="avg",
                fc_norm=False,
                dynamic_img_size=True,
                use_naflex=False,
                **vit_kwargs,
            ),
        )
        self.patch_size = self.encoder.patch_embed.patch_size[0]
        self.feature_dim = self.encoder.embed_dim
        self.downsampling = self.patch_size
        levels = _level_count(self.patch_size)
        self.token_blocks = token_block_indices(len(self.encoder.blocks), levels)
        channels = tuple(decoder_width * 2**k for k in range(levels))
        self.decoder = UNETRDecoder(in_channels, self.feature_dim, channels)
        self.deep_supervision = deep_supervision
        self.head = DeepSupervisionHead(channels, num_classes, levels if deep_supervision else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        token_maps = self.encoder.forward_intermediates(
            x, indices=self.token_blocks, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        all_outputs = self.training and self.deep_supervision
        outs = self.head(self.decoder(x, token_maps), all_outputs=all_outputs)
        return outs if all_outputs else outs[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the patch tokens after the final norm, ``(B, D)`` (timm's ``avg`` pool)."""
        return self.encoder(x)

    def forward_mae_encoder(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """MAE's encoder: tokens ``(B, n_keep, D)`` of the visible patches only.

        Args:
            x: images ``(B, in_channels, H, W)``.
            keep: ``(B, n_keep)`` long, row-major patch indices to keep
                (`masking.random_token_mask(...).keep`).

        Patches are embedded and given their position embeddings first, so each visible
        token knows where it is; the blocks and final norm then see only the visible ones.
        """
        if keep.ndim != 2 or keep.shape[0] != x.shape[0]:
            raise ValueError(
                f"MAE keep indices of shape {tuple(keep.shape)} do not fit a batch "
                f"of {x.shape[0]} images; expected (B, n_keep)"
            )
        enc = self.encoder
        tokens = keep_tokens(enc._pos_embed(enc.patch_embed(x)), keep)
        return enc.norm(enc.blocks(enc.norm_pre(enc.patch_drop(tokens))))

    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
        """Optimizer param groups with layer-wise lr decay (BEiT/MAE fine-tuning).

        Layer ids: patch and position embeddings 0, block ``i`` ``i + 1``, everything after
        the blocks (final norm, decoder, head) ``depth + 1``; a group's ``lr_scale`` is
        ``layer_decay ** (depth + 1 − layer_id)``, which the harness multiplies into its lr.
        Biases, norm weights and ``pos_embed`` get no weight decay.
        """
        decay = self.layer_decay if layer_decay is None else layer_decay
        top = len(self.encoder.blocks) + 1
        groups: dict[tuple[int, bool], dict] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            layer = self._layer_id(name, top)
            no_decay = param.ndim == 1 or name in NO_WEIGHT_DECAY
            group = groups.setdefault(
                (layer, no_decay),
                {
                    "params": [],
                    "weight_decay": 0.0 if no_decay else weight_decay,
                    "lr_scale": decay ** (top - layer),
                },
            )
            group["params"].append(param)
        # top layer first: the harness logs the lr of group 0, which is then the unscaled one
        return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], k[1]))]

    @staticmethod
    def _layer_id(name: str, top: int) -> int:
        if name.startswith(("encoder.patch_embed.", "encoder.pos_embed")):
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return top


def _vit(
    timm_name: str, decoder_width: int, default_img_size: int, vit_kwargs: dict[str, Any], **kw: Any
) -> ViTSegNet:
    kw.setdefault("img_size", default_img_size)
    return ViTSegNet(timm_name, vit_kwargs, decoder_width, **kw)


@NETS.register(net_class=ViTSegNet, downsampling=16)
def vit_tiny(**kw: Any) -> ViTSegNet:
    """ViT-Ti/16: 192 wide, 12 blocks, 3 heads; decoder levels of 32, 64, 128, 256 channels."""
    return _vit("vit_tiny_patch16_224", 32, 256, {}, **kw)


@NETS.register(net_class=ViTSegNet, downsampling=16)
def vit_small(**kw: Any) -> ViTSegNet:
    """ViT-S/16: 384 wide, 12 blocks, 6 heads."""
    return _vit("vit_small_patch16_224", 32, 256, {}, **kw)


@NETS.register(net_class=ViTSegNet, downsampling=8)
def vit_xs(**kw: Any) -> ViTSegNet:
    """Unit tests: 8 px patches, 64 wide, 4 blocks, 2 heads; decoder of 16, 32, 64 channels."""
    return _vit(
        "vit_tiny_patch16_224", 16, 64, dict(patch_size=8, embed_dim=64, depth=4, num_heads=2), **kw
    )
