"""The SSP-method plugin contract (DESIGN.md, "SSP method").

A method is one `SSPMethod` subclass in one file, registered with
``@METHODS.register``. It is built on a `SegNet`, owns its heads (projection MLP,
teacher, reconstruction head), and implements `loss` for one pretraining step plus
optional hooks. The harness (`cmrbench.benchmark.train`) owns everything else: the loop,
optimizer, schedule, precision, checkpoints, logging and devices. Shared heads, the
momentum teacher and the contrastive loss are in `cmrbench.methods.parts`.

Randomness has one channel: the `Step` each call receives carries the step's
``generator``, seeded by the harness from the run's seed and the step index; a method
draws every random number (views, masks, crops) from it and never from the global RNG.

A method's hyper-parameters are a frozen `MethodConfig` dataclass (``config_class``): the
paper's values as field defaults, their checks in ``__post_init__``. `resolve_config`
turns the grid's overrides into that dataclass at planning time, so that a pretraining
spec holds every value that changes the result and a typo fails before anything runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cmrbench.nets import SegNet
from cmrbench.optim import OptimConfig
from cmrbench.transforms.augment import BatchAugment, image_centres
from cmrbench.typed import ConfigError, build_config


class MethodConfigError(ConfigError):
    """A method hyper-parameter that is unknown or invalid; the message names the method,
    the key and the valid keys (or the expected value)."""


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters of a method. Subclasses add fields with the paper's values as
    defaults (int, float, bool, str or tuples of those) and check ranges in
    ``__post_init__``, raising `ValueError`; a method without settings uses this class."""


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
        intensity_max: ``(B,)`` float, the largest z-scored intensity of each slice's subject
            (its whole 4D stack), what DINO's solarisation mirrors against; None when not given.
    """

    images: torch.Tensor
    position: torch.Tensor
    subject: torch.Tensor
    frame: torch.Tensor
    center: torch.Tensor | None = None
    intensity_max: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.center is None:
            object.__setattr__(self, "center", image_centres(self.images))


@dataclass(frozen=True)
class Step:
    """One optimizer step of a training loop: where the run stands (for schedules inside a
    method) and the step's random generator (the only source of its random draws).

    Attributes:
        index: optimizer steps done before this one (0-based).
        total: optimizer steps of the whole run.
        epoch: 0-based epoch of this step.
        total_epochs, steps_per_epoch: the run's.
        generator: seeded from the run's seed and ``index`` (`cmrbench.benchmark.train.
            step_generator`), on the training device: the same step of a resumed run draws
            the same numbers.
    """

    index: int
    total: int
    epoch: int
    total_epochs: int
    steps_per_epoch: int
    generator: torch.Generator

    @property
    def fraction(self) -> float:
        """The part of the run done before this step, ``index / total`` in [0, 1)."""
        return self.index / max(self.total, 1)


class SSPMethod(nn.Module):
    """Base class of every self-supervised pretraining method.

    Class attributes a subclass sets:
        name: registry name (``"simclr"``).
        paper: the paper it implements (title, authors, year, arXiv id).
        config_class: its `MethodConfig` dataclass (hyper-parameters with the paper's
            values as defaults); `resolve_config` applies a grid's overrides.
        version: an integer the method's author bumps whenever a change to the method's
            code changes its results; it is part of every pretraining key, so stale
            checkpoints are never reused.
        transfers: which `SegNet` parts seed fine-tuning, per encoder family
            (``{"cnn": ("encoder",), "vit": ("encoder",)}``); a family missing here cannot
            be pretrained with this method (a planning error).
        net_kwargs: extra arguments for `create_net` (MIM: one output channel).
        optim: the paper's `OptimConfig`; ``optim_by_family`` replaces it for an encoder
            family whose literature trains differently (``{"vit": OptimConfig("adamw", ...)}``).
        batch_size, epochs: the paper's.
        n_views: how many augmented views `views` makes of each slice by default.
        pretrain_as: the name of another method whose pretraining job this one reuses
            (``mim_enc`` fine-tunes from ``mim``'s checkpoint and differs only in what
            transfers); empty for a method with its own job.

    ``net`` is the network whose weights transfer (for DINO, the student); ``config`` the
    resolved `config_class` instance.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    version: ClassVar[int] = 1
    transfers: ClassVar[dict[str, tuple[str, ...]]] = {"cnn": ("encoder",), "vit": ("encoder",)}
    net_kwargs: ClassVar[dict[str, Any]] = {}
    optim: ClassVar[OptimConfig] = OptimConfig()
    optim_by_family: ClassVar[dict[str, OptimConfig]] = {}
    batch_size: ClassVar[int] = 64
    epochs: ClassVar[int] = 100
    n_views: ClassVar[int] = 2
    needs_pretraining: ClassVar[bool] = True
    pretrain_as: ClassVar[str] = ""

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment, **hparams: Any) -> None:
        super().__init__()
        self.config = self.resolve_config(hparams)
        self.net = net
        self.image_size = image_size
        self.augment = augment

    @classmethod
    def resolve_config(cls, overrides: Mapping[str, Any] | None = None) -> MethodConfig:
        """The method's `config_class` with ``overrides`` (YAML values, coerced to the field
        types) applied to the paper's defaults.

        Raises:
            MethodConfigError: an unknown key (naming the method, the key and the valid
                keys), a value of the wrong type, or one the config's checks reject.
        """
        try:
            return build_config(cls.config_class, dict(overrides or {}), f"method {cls.name!r}")
        except ConfigError as exc:
            raise MethodConfigError(str(exc)) from None

    @classmethod
    def resolved_hparams(cls, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every field of `resolve_config` ``(overrides)`` as a dict (what a spec stores)."""
        config = cls.resolve_config(overrides)
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}

    @classmethod
    def transferred_parts(cls, family: str) -> tuple[str, ...]:
        """The `SegNet` parts this method's weights seed for an encoder family."""
        return cls.transfers.get(family, ())

    @classmethod
    def optim_for(cls, family: str) -> OptimConfig:
        """The paper's pretraining optimizer for an encoder family (``optim_by_family``,
        else ``optim``)."""
        return cls.optim_by_family.get(family, cls.optim)

    def views(self, batch: PretrainBatch, step: Step) -> list[torch.Tensor]:
        """The augmented views of one step: `n_views` independent draws of the harness's
        augmentation (the study's fine-tuning preset) from ``step.generator``, each
        ``(B, 1, H, W)``, centred on ``batch.center``.

        The hook for a method with its own view pipeline: override it (DINO's multi-crop).
        """
        return [
            self.augment(batch.images, generator=step.generator, center=batch.center)[0]
            for _ in range(self.n_views)
        ]

    def loss(self, batch: PretrainBatch, step: Step) -> torch.Tensor:
        """The scalar loss of one pretraining step; random draws from ``step.generator``."""
        raise NotImplementedError

    def before_optimizer_step(self, step: Step) -> None:
        """Hook after ``backward`` and before ``optimizer.step`` (e.g. freeze a layer)."""

    def after_step(self, step: Step) -> None:
        """Hook after ``optimizer.step`` (e.g. the DINO teacher's EMA)."""
