"""Segmentation nets and their registry (`create_net`, `list_nets`), timm style.

`base` holds the `SegNet` contract, the registry and `net_facts` (a net's family,
downsampling and fine-tuning optimizer, read without building it), `unet` the study's U-Net
family and `vit` the timm Vision Transformers with a UNETR decoder. Importing this package
registers every built-in net.
"""

from cmrbench.nets import unet, vit  # noqa: F401  (each registers its nets)
from cmrbench.nets.base import (
    NETS,
    TRANSFERABLE_PARTS,
    ConvBlock,
    DeepSupervisionHead,
    NetFacts,
    SegNet,
    create_net,
    list_nets,
    net_facts,
)

__all__ = [
    "NETS",
    "TRANSFERABLE_PARTS",
    "ConvBlock",
    "DeepSupervisionHead",
    "NetFacts",
    "SegNet",
    "create_net",
    "list_nets",
    "net_facts",
]
