"""The segmentation-net contract (`SegNet`), the parts U-Net and ViT nets share, and the registry.

Every net is a `SegNet`: ``.encoder``, ``.decoder`` and ``.head`` sub-modules (only the
first two can receive pretrained weights), logits ``(B, C, H, W)`` from ``forward`` in
eval mode, a list of deep-supervision logits (full resolution first) in training mode,
and ``features(x) -> (B, feature_dim)``: the encoder's globally pooled bottleneck, the
input of contrastive heads.

Nets come from this package (importing `cmrbench.nets` registers them), from installed
packages through the entry-point group ``cmrbench.nets`` (a module whose import registers
its nets; `discover` on the first look-up), and from plugin folders once
`cmrbench.plugins.load_plugins` has loaded them: a plugin file registers a net exactly as
``unet.py`` does, ``@NETS.register(net_class=MyNet, downsampling=32)`` on its factory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cmrbench.optim import OptimConfig
from cmrbench.plugins import discover
from cmrbench.registry import Registry

# each net factory is registered with the `SegNet` class it builds and its total downsampling,
# so that `net_facts` reads them without building a net (grids, `cmrbench list`)
NETS: Registry[Callable[..., SegNet]] = Registry(
    "net", entry_point_group="cmrbench.nets", required=("net_class", "downsampling")
)
TRANSFERABLE_PARTS = ("encoder", "decoder")


class SegNet(nn.Module):
    """Base class: an encoder, a decoder and an output head.

    Subclasses set ``encoder``, ``decoder``, ``head``, ``feature_dim``, ``family``
    (``"cnn"`` or ``"vit"``) and ``downsampling`` (the factor the input size must divide).
    ``finetune_optim`` is the optimizer its literature fine-tunes it with (the study's
    SGD for the U-Net; grids may override it and it is part of every cell spec).
    """

    family: str = "cnn"
    finetune_optim: OptimConfig = OptimConfig(
        optimizer="sgd", lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5, schedule="poly"
    )
    feature_dim: int
    downsampling: int
    deep_supervision: bool

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features ``(B, feature_dim)`` for images ``(B, 1, H, W)``."""
        raise NotImplementedError

    def param_groups(self, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
        """Optimizer param groups. CNNs: one group; ViTs add layer-wise lr decay."""
        return [
            {
                "params": [p for p in self.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
            }
        ]

    def check_input_size(self, size: int) -> None:
        """Raise ValueError if a square image of ``size`` pixels cannot pass through the net."""
        if size % self.downsampling:
            raise ValueError(
                f"image size {size} is not divisible by {self.downsampling}, the "
                f"total downsampling of this {type(self).__name__}; choose a "
                f"multiple of {self.downsampling}"
            )


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each with BatchNorm and LeakyReLU(0.01); the first may stride."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(0.01, inplace=True),
        )


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


@dataclass(frozen=True)
class NetFacts:
    """What is known about a registered net without building it."""

    family: str  # "cnn" or "vit"
    downsampling: int  # the factor a square input size must divide
    finetune_optim: OptimConfig  # the optimizer its literature fine-tunes it with
    layer_decay: float | None  # layer-wise lr decay when fine-tuning (ViTs)


def net_facts(name: str) -> NetFacts:
    """The facts of the net registered as ``name``, read from its registration and class."""
    discover(NETS)
    metadata = NETS.metadata(name)
    net_class = metadata["net_class"]
    return NetFacts(
        family=net_class.family,
        downsampling=metadata["downsampling"],
        finetune_optim=net_class.finetune_optim,
        layer_decay=getattr(net_class, "layer_decay", None),
    )


def create_net(name: str, **kwargs: Any) -> SegNet:
    """Build the net registered as ``name`` (`net_facts` reads its family, downsampling
    and fine-tuning optimizer without building it).

    Keywords: ``img_size`` (square input size; checked against the net's downsampling,
    and the size ViT position embeddings are made for), ``in_channels``, ``num_classes``,
    ``deep_supervision``.
    """
    discover(NETS)
    return NETS.get(name)(**kwargs)


def list_nets(pattern: str = "*") -> list[str]:
    """Registered net names matching ``pattern``."""
    discover(NETS)
    return NETS.names(pattern)
