"""The study's 2D nnU-Net-style U-Net (de Mooij et al., arXiv 2409.18100) and smaller variants.

`unet2d`: 7 levels with 32, 64, 128, 256, 512, 512, 512 channels, two 3x3 conv + BatchNorm +
LeakyReLU(0.01) per block, stride-2 convolutions down, 2x2 transposed convolutions up,
and deep supervision over the 6 decoder outputs. Smaller variants serve CPU grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cmrbench.nets.base import NETS, ConvBlock, DeepSupervisionHead, SegNet


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


class UNet2D(SegNet):
    """2D U-Net ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` (see module docstring)."""

    def __init__(
        self,
        channels: Sequence[int],
        in_channels: int = 1,
        num_classes: int = 4,
        deep_supervision: bool = True,
        num_ds_outputs: int | None = None,
    ) -> None:
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
        outs = self.head(
            self.decoder(self.encoder(x)), all_outputs=self.training and self.deep_supervision
        )
        return outs if self.training and self.deep_supervision else outs[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1].mean(dim=(2, 3))


def _unet(channels: Sequence[int], img_size: int | None = None, **kw: Any) -> UNet2D:
    net = UNet2D(channels, **kw)
    if img_size is not None:
        net.check_input_size(img_size)
    return net


@NETS.register(net_class=UNet2D, downsampling=64)
def unet2d(**kw: Any) -> UNet2D:
    """The study's U-Net: 7 stages of 32–512 channels, for 256×256 input."""
    return _unet((32, 64, 128, 256, 512, 512, 512), **kw)


@NETS.register(net_class=UNet2D, downsampling=16)
def unet2d_s(**kw: Any) -> UNet2D:
    """5 stages of 16–256 channels, for the CPU smoke grids at 64×64."""
    return _unet((16, 32, 64, 128, 256), **kw)


@NETS.register(net_class=UNet2D, downsampling=8)
def unet2d_xs(**kw: Any) -> UNet2D:
    """4 stages of 8–64 channels, for unit tests."""
    return _unet((8, 16, 32, 64), **kw)
