"""The SSP-method plugin contract (DESIGN.md, "SSP method").

A method is one `SSPMethod` subclass in one file, registered with
``@register_method``. It is built on a `SegNet`, owns its heads (projection MLP,
teacher, reconstruction head), and implements `loss` for one pretraining step plus
optional hooks. The harness (`cmrbench.benchmark.train`) owns everything else: the loop,
optimizer, schedule, precision, checkpoints, logging and devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cmrbench.benchmark.augment import BatchAugment, image_centres
from cmrbench.benchmark.nets import SegNet
from cmrbench.benchmark.optim import OptimConfig


@dataclass(frozen=True)
class PretrainBatch:
    """One pretraining batch, already on the training device.

    Attributes:
        images: ``(B, 1, H, W)`` float, z-scored slices, not yet augmented.
        position: ``(B,)`` float, relative slice position ``z / Z`` (0 = base).
        subject: ``(B,)`` long, subject index within the pretraining pool.
        frame: ``(B,)`` long, cardiac frame index.
        center: ``(B, 2)`` float, where augmentation centres each view, in ``F.affine_grid``
            normalised ``(x, y)``: the subject's label-derived heart centre with the job's
            ``center: labels`` (the study's), zeros (the image centre) with ``center: image``
            or when not given. Pass it on: ``self.augment(images, center=batch.center)``.
    """

    images: torch.Tensor
    position: torch.Tensor
    subject: torch.Tensor
    frame: torch.Tensor
    center: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.center is None:
            object.__setattr__(self, "center", image_centres(self.images))


@dataclass(frozen=True)
class Progress:
    """Where the pretraining loop stands (for schedules inside a method)."""

    step: int            # optimizer steps done before this one
    total_steps: int
    epoch: int           # 0-based epoch of this step
    total_epochs: int
    steps_per_epoch: int


class SSPMethod(nn.Module):
    """Base class of every self-supervised pretraining method.

    Class attributes a subclass sets:
        name: registry name (``"simclr"``).
        paper: the paper it implements (title, authors, year, arXiv id).
        transfers: which `SegNet` parts seed fine-tuning, per encoder family
            (``{"cnn": ("encoder",), "vit": ("encoder",)}``).
        net_kwargs: extra arguments for `create_net` (MIM: one output channel).
        optim: the paper's `OptimConfig`; ``batch_size`` and ``epochs`` the paper's.
        hparams: method hyper-parameters with the paper's values as defaults; the
            grid may override any of them, and they reach ``__init__`` as keywords.

        pretrain_as: the name of another method whose pretraining job this one reuses
            (``mim_enc`` fine-tunes from ``mim``'s checkpoint and differs only in what
            transfers); empty for a method with its own job.

    ``net`` is the network whose weights transfer (for DINO, the student).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    transfers: ClassVar[dict[str, tuple[str, ...]]] = {"cnn": ("encoder",), "vit": ("encoder",)}
    net_kwargs: ClassVar[dict[str, Any]] = {}
    optim: ClassVar[OptimConfig] = OptimConfig()
    batch_size: ClassVar[int] = 64
    epochs: ClassVar[int] = 100
    hparams: ClassVar[dict[str, Any]] = {}
    needs_pretraining: ClassVar[bool] = True
    pretrain_as: ClassVar[str] = ""

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment,
                 generator: torch.Generator | None = None, **hparams: Any) -> None:
        super().__init__()
        unknown = set(hparams) - set(self.hparams)
        if unknown:
            raise ValueError(f"method {self.name!r} has no hyper-parameter(s) {sorted(unknown)}; "
                             f"valid: {sorted(self.hparams)}")
        self.net = net
        self.image_size = image_size
        self.augment = augment
        self.generator = generator
        self.config = {**self.hparams, **hparams}

    @classmethod
    def transferred_parts(cls, family: str) -> tuple[str, ...]:
        """The `SegNet` parts this method's weights seed for an encoder family."""
        return cls.transfers.get(family, ())

    def loss(self, batch: PretrainBatch, progress: Progress) -> torch.Tensor:
        """The scalar loss of one pretraining step."""
        raise NotImplementedError

    def before_optimizer_step(self, progress: Progress) -> None:
        """Hook after ``backward`` and before ``optimizer.step`` (e.g. freeze a layer)."""

    def after_step(self, progress: Progress) -> None:
        """Hook after ``optimizer.step`` (e.g. the DINO teacher's EMA)."""
