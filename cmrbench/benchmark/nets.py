"""Segmentation nets and their registry (`create_net`, `list_nets`), timm style.

Every net is a `SegNet`: ``.encoder``, ``.decoder`` and ``.head`` sub-modules (only the
first two can receive pretrained weights), logits ``(B, C, H, W)`` from ``forward`` in
eval mode, a list of deep-supervision logits (full resolution first) in training mode,
and ``features(x) -> (B, feature_dim)``: the encoder's globally pooled bottleneck, the
input of contrastive heads.

`unet2d` is the study's 2D nnU-Net-style U-Net (de Mooij et al., arXiv 2409.18100):
7 levels with 32, 64, 128, 256, 512, 512, 512 channels, two 3x3 conv + BatchNorm +
LeakyReLU(0.01) per block, stride-2 convolutions down, 2x2 transposed convolutions up,
and deep supervision over the 6 decoder outputs. Smaller variants serve CPU grids.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from cmrbench.benchmark.optim import OptimConfig
from cmrbench.registry import Registry

NETS: Registry[Callable[..., "SegNet"]] = Registry("net")
TRANSFERABLE_PARTS = ("encoder", "decoder")


class SegNet(nn.Module):
    """Base class: an encoder, a decoder and an output head.

    Subclasses set ``encoder``, ``decoder``, ``head``, ``feature_dim``, ``family``
    (``"cnn"`` or ``"vit"``) and ``downsampling`` (the factor the input size must divide).
    ``finetune_optim`` is the optimizer its literature fine-tunes it with (the study's
    SGD for the U-Net; grids may override it and it is part of every cell spec).
    """

    family: str = "cnn"
    finetune_optim: OptimConfig = OptimConfig(optimizer="sgd", lr=0.01, momentum=0.99,
                                              nesterov=True, weight_decay=3e-5, schedule="poly")
    feature_dim: int
    downsampling: int
    deep_supervision: bool

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features ``(B, feature_dim)`` for images ``(B, 1, H, W)``."""
        raise NotImplementedError

    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
        """Optimizer param groups. CNNs: one group; ViTs add layer-wise lr decay."""
        return [{"params": [p for p in self.parameters() if p.requires_grad],
                 "weight_decay": weight_decay}]

    def check_input_size(self, size: int) -> None:
        """Raise ValueError if a square image of ``size`` pixels cannot pass through the net."""
        if size % self.downsampling:
            raise ValueError(f"image size {size} is not divisible by {self.downsampling}, the "
                             f"total downsampling of this {type(self).__name__}; choose a "
                             f"multiple of {self.downsampling}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each with BatchNorm and LeakyReLU(0.01); the first may stride."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.01, inplace=True))


class UNetEncoder(nn.Module):
    """Stages of `ConvBlock`s; stage 0 keeps the resolution, each later one halves it."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        stages, prev = [], in_channels
        for i, ch in enumerate(channels):
            stages.append(ConvBlock(prev, ch, stride=1 if i == 0 else 2))
            prev = ch
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Skip features, highest resolution first; the last one is the bottleneck."""
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Transposed-conv upsampling + skip concatenation + `ConvBlock`, bottom to top."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        ups, blocks = [], []
        for deep, shallow in zip(channels[:0:-1], channels[-2::-1]):
            ups.append(nn.ConvTranspose2d(deep, shallow, 2, stride=2, bias=False))
            blocks.append(ConvBlock(2 * shallow, shallow))
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder features of every stage, lowest resolution first."""
        x, outs = skips[-1], []
        for up, block, skip in zip(self.ups, self.blocks, skips[-2::-1]):
            x = block(torch.cat([up(x), skip], dim=1))
            outs.append(x)
        return outs


class DeepSupervisionHead(nn.Module):
    """One 1x1 convolution per decoder stage; outputs full resolution first."""

    def __init__(self, channels: Sequence[int], num_classes: int, num_outputs: int) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        # decoder stages from the top: channels[0], channels[1], ...
        self.convs = nn.ModuleList(nn.Conv2d(ch, num_classes, 1) for ch in channels[:num_outputs])

    def forward(self, decoded: list[torch.Tensor], all_outputs: bool) -> list[torch.Tensor]:
        top_first = decoded[::-1]
        n = self.num_outputs if all_outputs else 1
        return [conv(feat) for conv, feat in zip(self.convs[:n], top_first[:n])]


class UNet2D(SegNet):
    """2D U-Net ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` (see module docstring)."""

    def __init__(self, channels: Sequence[int], in_channels: int = 1, num_classes: int = 4,
                 deep_supervision: bool = True, num_ds_outputs: int | None = None) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.encoder = UNetEncoder(in_channels, channels)
        self.decoder = UNetDecoder(channels)
        self.deep_supervision = deep_supervision
        n_out = num_ds_outputs or len(channels) - 1
        self.head = DeepSupervisionHead(channels, num_classes, n_out if deep_supervision else 1)
        self.feature_dim = channels[-1]
        self.downsampling = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outs = self.head(self.decoder(self.encoder(x)),
                         all_outputs=self.training and self.deep_supervision)
        return outs if self.training and self.deep_supervision else outs[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1].mean(dim=(2, 3))


def _unet(channels: Sequence[int]) -> Callable[..., UNet2D]:
    def factory(img_size: int | None = None, **kw: Any) -> UNet2D:
        net = UNet2D(channels, **kw)
        if img_size is not None:
            net.check_input_size(img_size)
        return net
    return factory


UNET_CHANNELS: dict[str, tuple[int, ...]] = {
    "unet2d": (32, 64, 128, 256, 512, 512, 512),   # the study's U-Net, 256x256 input
    "unet2d_s": (16, 32, 64, 128, 256),            # CPU smoke grids, 64x64 input
    "unet2d_xs": (8, 16, 32, 64),                  # unit tests
}
for _name, _channels in UNET_CHANNELS.items():
    NETS.add(_name, _unet(_channels), source=__file__)


def create_net(name: str, **kwargs: Any) -> SegNet:
    """Build the net registered as ``name``.

    Keywords: ``img_size`` (square input size; checked against the net's downsampling,
    and the size ViT position embeddings are made for), ``in_channels``, ``num_classes``,
    ``deep_supervision``.
    """
    return NETS.get(name)(**kwargs)


def list_nets(pattern: str = "*") -> list[str]:
    """Registered net names matching ``pattern``."""
    return NETS.names(pattern)

# ViT nets register themselves in NETS on import (they build on the pieces above).
from cmrbench.benchmark import vit  # noqa: E402,F401  isort: skip
