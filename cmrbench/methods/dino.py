"""`dino`: self-distillation — a student matches an EMA teacher across crops of a slice.

Paper: Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021, arXiv 2104.14294; configured as in
de Mooij et al., arXiv 2409.18100 (PAPER.md, "The four SSP methods" and "Details from the
study's code"; the study's ``configs/dino-config.yaml`` and ``train_dino.py``).

Each slice gives 2 global crops (``image_size``) and 6 local crops (``image_size // 2``).
With ``views: study`` (the default) each crop is ONE affine resampling of the slice, as the
study's resampler makes it (`study_crop_theta`): rotation ±180°, flips p 0.5 per axis,
a sampling-grid scale ``s`` in 0.524–1.4 (global) or 0.313–0.524 (local; the convention of
`cmrbench.transforms.augment.spatial_params`: ``s`` is the crop's pixel size over the
slice's, so a local crop of 128 px covers 0.157–0.262 of a 256-px field of view), a
translation of ±40 (global) or ±160 (local) px of the crop's own grid at 256² before
the scaling, and the heart centre as origin. Then DINO's own intensity probabilities:
noise 0.15, smoothing 0.1, scaling 0.2, shift 0.15, gamma 0.15 (ranges of the fine-tuning
preset); global crop 1 is always blurred (σ 0.1–2.0 px at 256²), global crop 2 solarised
with p 0.2 at threshold 0: an intensity ``x`` above the threshold becomes ``m − x``, ``m`` the
subject's largest z-scored intensity (qcardia-data's ``RandSolarized``, `solarize`).
``views: crops`` is the earlier variant: the full fine-tuning augmentation followed by a
random resized crop with a horizontal flip, crop areas 14–100 % (global) and 5–14 % (local)
of the image (DINO's own defaults are 40–100 % and 5–40 %).

Student and teacher are each a U-Net encoder, global average pooling and a `DINOHead`
(MLP 512-2048-2048-256 with BatchNorm and GELU, L2 normalisation, a weight-normalised
linear layer to 8192 outputs). The teacher sees the global crops, the student all crops;
the loss is the cross-entropy between the centred, sharpened teacher distribution and the
student's over every (teacher crop, other student crop) pair.

Schedules, as fractions of the run so that a shortened run keeps their shape: student
temperature 0.1; teacher temperature 0.02 → 0.04 linearly over the first 30 % of the steps
(DINO's 30 of 100 epochs; DINO steps it once per epoch, here it moves every step), then
constant; centre momentum 0.9; teacher EMA momentum 0.996 → 1.0 by a cosine over all
steps; the last layer gets no update during the first 1 % (DINO's first epoch of 100).
SGD lr 0.0075 (the study's 0.03 · 64/256) with a warm-up over the first 10 % of the steps,
then a cosine down to 1e-6; weight decay 1e-4, none on biases and norm weights. On ViTs the
DINO paper's AdamW (lr 5e-4 · 64/256, weight decay 0.04; DINO raises it to 0.4 by a
cosine, here it stays at 0.04). The student's encoder (``self.net``) seeds fine-tuning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cmrbench.methods import METHODS
from cmrbench.methods.base import MethodConfig, OptimConfig, PretrainBatch, SSPMethod, Step
from cmrbench.methods.parts import DINOHead, momentum_copy, momentum_schedule, update_momentum
from cmrbench.nets import SegNet
from cmrbench.transforms.augment import (
    AugmentParams,
    BatchAugment,
    intensity_augment,
    random_resized_crop,
    resample_to_size,
    spatial_params,
)

N_GLOBAL_CROPS = 2
VIEW_PIPELINES = ("study", "crops")

STUDY_VIEW_AUGMENTATION = AugmentParams(
    rotation_deg=180.0,
    flip_p=0.5,
    noise_p=0.15,
    noise_std=0.2,
    smooth_p=0.1,
    smooth_sigma_px=(0.5, 1.5),
    intensity_scale=(1.6, 2.5),
    intensity_shift=0.4,
    gamma=(0.7, 1.5),
)
"""The study's DINO crops: the fine-tuning preset's ranges with DINO's noise and smoothing
probabilities (scale and translation are per crop kind, from `DINOConfig`)."""
STUDY_INTENSITY_PROBABILITIES = (0.2, 0.15, 0.15)
"""Probabilities of intensity scaling, shift and gamma on each study crop."""
BLUR_SIGMA_PX = (0.1, 2.0)
"""σ range (px at 256²) of the blur that global crop 1 always gets."""
SOLARIZE_P, SOLARIZE_THRESHOLD = 0.2, 0.0
"""Probability and threshold of global crop 2's solarisation."""


@dataclass(frozen=True)
class DINOConfig(MethodConfig):
    """DINO's hyper-parameters (the study's values); ``*_fraction`` are parts of the run."""

    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    out_dim: int = 8192
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    warmup_teacher_temperature: float = 0.02
    warmup_teacher_temperature_fraction: float = 0.3
    center_momentum: float = 0.9
    teacher_momentum: float = 0.996
    freeze_last_layer_fraction: float = 0.01
    views: str = "study"
    n_local_crops: int = 6
    global_scale: tuple[float, float] = (0.524, 1.4)  # views: study
    local_scale: tuple[float, float] = (0.313, 0.524)
    global_translation_px: float = 40.0
    local_translation_px: float = 160.0
    global_crop_scale: tuple[float, float] = (0.14, 1.0)  # views: crops
    local_crop_scale: tuple[float, float] = (0.05, 0.14)

    def __post_init__(self) -> None:
        for key in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} {getattr(self, key)} must be > 0")
        for key in (
            "center_momentum",
            "teacher_momentum",
            "warmup_teacher_temperature_fraction",
            "freeze_last_layer_fraction",
        ):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{key} {getattr(self, key)} must be in [0, 1]")
        for key in ("hidden_dim", "bottleneck_dim", "out_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} {getattr(self, key)} must be a positive integer")
        if self.n_local_crops < 0:
            raise ValueError(f"n_local_crops {self.n_local_crops} must be >= 0")
        if self.views not in VIEW_PIPELINES:
            raise ValueError(f"views {self.views!r} must be one of {', '.join(VIEW_PIPELINES)}")
        for key in ("global_scale", "local_scale"):
            low, high = getattr(self, key)
            if not 0 < low <= high:
                raise ValueError(f"{key} {getattr(self, key)} must be grid scales 0 < low <= high")
        for key in ("global_translation_px", "local_translation_px"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} {getattr(self, key)} must be >= 0")
        for key in ("global_crop_scale", "local_crop_scale"):
            low, high = getattr(self, key)
            if not 0 < low <= high <= 1:
                raise ValueError(
                    f"{key} {getattr(self, key)} must be area fractions 0 < low <= high <= 1"
                )


def dino_loss(
    teacher_out: torch.Tensor,
    student_out: torch.Tensor,
    center: torch.Tensor,
    student_temperature: float,
    teacher_temperature: float,
) -> torch.Tensor:
    """Cross-entropy between teacher and student distributions over pairs of distinct crops.

    Args:
        teacher_out: ``(T, B, K)`` teacher outputs for T (global) crops.
        student_out: ``(S, B, K)`` student outputs; its first T crops are the teacher's.
        center: ``(1, K)`` running centre of the teacher outputs.

    With ``q_t = softmax((teacher_t − center) / τ_t)`` and
    ``log p_s = log_softmax(student_s / τ_s)``, the loss is the mean over the pairs
    ``t ≠ s`` of ``mean_b(−Σ_k q_t log p_s)``. Computed in float32; no gradient reaches
    the teacher.
    """
    if (
        teacher_out.ndim != 3
        or student_out.ndim != 3
        or teacher_out.shape[1:] != student_out.shape[1:]
    ):
        raise ValueError(
            f"DINO loss needs teacher (T, B, K) and student (S, B, K) outputs; got "
            f"{tuple(teacher_out.shape)} and {tuple(student_out.shape)}"
        )
    n_teacher, n_student = teacher_out.shape[0], student_out.shape[0]
    if n_teacher * n_student - min(n_teacher, n_student) < 1:
        raise ValueError(
            f"DINO loss needs at least one pair of distinct crops; got {n_teacher} "
            f"teacher and {n_student} student crop(s)"
        )
    if student_temperature <= 0 or teacher_temperature <= 0:
        raise ValueError(
            f"DINO temperatures must be > 0; got student {student_temperature}, "
            f"teacher {teacher_temperature}"
        )
    targets = F.softmax(
        (teacher_out.detach().float() - center.float()) / teacher_temperature, dim=-1
    )
    log_probs = F.log_softmax(student_out.float() / student_temperature, dim=-1)
    cross_entropy = -torch.einsum("tbk,sbk->ts", targets, log_probs) / teacher_out.shape[1]
    same_crop = torch.eye(n_teacher, n_student, dtype=torch.bool, device=cross_entropy.device)
    return cross_entropy[~same_crop].mean()


def updated_center(
    center: torch.Tensor, teacher_out: torch.Tensor, momentum: float
) -> torch.Tensor:
    """``momentum · center + (1 − momentum) · mean of teacher_out (T, B, K)``, the mean taken
    over crops and batch."""
    batch_center = teacher_out.detach().float().mean(dim=(0, 1))[None]
    return center * momentum + batch_center * (1 - momentum)


def teacher_temperature(fraction: float, start: float, end: float, warmup_fraction: float) -> float:
    """Linear warm-up ``start → end`` over the first ``warmup_fraction`` of the run, then
    ``end``; ``fraction`` is the part of the run done (`Step.fraction`)."""
    if fraction >= warmup_fraction:
        return end
    return start + (end - start) * fraction / warmup_fraction


def study_crop_theta(
    batch_size: int,
    scale: tuple[float, float],
    translation_px: float,
    size_fraction: float,
    center: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Affine matrices ``(B, 2, 3)`` of one kind of DINO crop, as the study's resampler.

    ``theta = [I | c] · size_fraction · R(α) · diag(s·f_x, s·f_y) · [I | t]`` (qcardia-data
    ``RandResample2Dd``): `spatial_params` of `STUDY_VIEW_AUGMENTATION` with ``s ~ U(scale)``
    and ``t`` up to ``translation_px`` px of the crop's own grid at 256², shrunk by the
    crop's side over the slice's (``size_fraction``: 1 global, 0.5 local) and moved to the
    heart centre ``c`` (``center`` ``(B, 2)``, normalised ``(x, y)``; None: the image centre).
    """
    params = AugmentParams(
        translation_px=translation_px / size_fraction,
        rotation_deg=STUDY_VIEW_AUGMENTATION.rotation_deg,
        scale=scale,
        flip_p=STUDY_VIEW_AUGMENTATION.flip_p,
    )
    theta = spatial_params(batch_size, params, generator, device) * size_fraction
    if center is not None:
        theta[:, :, 2] += center.to(theta)
    return theta


def solarize(
    images: torch.Tensor,
    p: float,
    threshold: float,
    generator: torch.Generator | None = None,
    maximum: torch.Tensor | None = None,
) -> torch.Tensor:
    """With probability ``p`` per image ``(B, 1, H, W)``, replace every intensity ``x`` above
    ``threshold`` by ``maximum − x``, as qcardia-data's ``RandSolarized`` (the study's DINO).

    ``maximum`` ``(B,)``: each image's subject's largest z-scored intensity over its whole 4D
    stack (``RandSolarized(use_saved_max=True)``, the study's setting; not changed by the
    intensity augmentation that ran before); None: each image's own maximum.
    """
    u = torch.rand(
        images.shape[0],
        generator=generator,
        device=generator.device if generator is not None else images.device,
    )
    chosen = (u.to(images.device) < p)[:, None, None, None]
    if maximum is None:
        maximum = images.amax(dim=(1, 2, 3))
    top = maximum.to(images)[:, None, None, None]
    return torch.where(chosen & (images > threshold), top - images, images)


@METHODS.register
class DINO(SSPMethod):
    """DINO on the U-Net encoder (the study's configuration as defaults)."""

    name = "dino"
    paper = (
        "Caron et al., Emerging Properties in Self-Supervised Vision Transformers, "
        "ICCV 2021, arXiv 2104.14294"
    )
    config_class = DINOConfig
    config: DINOConfig
    center: torch.Tensor  # buffer (1, out_dim): the running mean of the teacher's outputs
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    optim = OptimConfig(
        optimizer="sgd",
        lr=0.0075,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_fraction=0.1,
        min_lr=1e-6,
        no_decay_bias_norm=True,
    )
    optim_by_family = {
        "vit": OptimConfig(
            optimizer="adamw",
            lr=5e-4 * 64 / 256,
            weight_decay=0.04,
            schedule="cosine",
            warmup_fraction=0.1,
            min_lr=1e-6,
            no_decay_bias_norm=True,
        )
    }
    batch_size = 64
    epochs = 100

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, **hparams)
        cfg = self.config
        if cfg.n_local_crops:
            net.check_input_size(self.local_size)
        self.head = DINOHead(net.feature_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.out_dim)
        self.teacher_net = momentum_copy(net)
        self.teacher_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))

    @property
    def local_size(self) -> int:
        """Side of the local crops: half the image size."""
        return self.image_size // 2

    def views(self, batch: PretrainBatch, step: Step) -> list[torch.Tensor]:
        """The 2 global crops ``(B, 1, S, S)``, then the local crops ``(B, 1, S/2, S/2)``."""
        global_crops, local_crops = self.crops(
            batch.images, step.generator, batch.center, batch.intensity_max
        )
        return global_crops + local_crops

    @torch.no_grad()
    def crops(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        center: torch.Tensor | None = None,
        intensity_max: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Global crops ``(B, 1, S, S)`` and local crops ``(B, 1, S/2, S/2)`` of ``images``
        ``(B, 1, S, S)`` by the ``views`` pipeline, around ``center`` ``(B, 2)`` (study views),
        every random draw from ``generator``; ``intensity_max`` ``(B,)`` is what solarisation
        mirrors against (`solarize`)."""
        # float32 even inside the training step's autocast region, as `BatchAugment`
        with torch.autocast(images.device.type, enabled=False):
            if self.config.views == "study":
                return self._study_crops(images.float(), generator, center, intensity_max)
            return self._resized_crops(images, generator, center)

    def _study_crops(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        center: torch.Tensor | None,
        intensity_max: torch.Tensor | None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cfg, size = self.config, self.image_size

        def crop(
            scale: tuple[float, float], translation_px: float, out_size: int, params: AugmentParams
        ) -> torch.Tensor:
            theta = study_crop_theta(
                images.shape[0],
                scale,
                translation_px,
                out_size / size,
                center,
                generator,
                images.device,
            )
            view = resample_to_size(images, theta, out_size)
            return intensity_augment(view, params, size, generator, STUDY_INTENSITY_PROBABILITIES)

        blurred = dataclasses.replace(
            STUDY_VIEW_AUGMENTATION, smooth_p=1.0, smooth_sigma_px=BLUR_SIGMA_PX
        )
        first = crop(cfg.global_scale, cfg.global_translation_px, size, blurred)
        second = solarize(
            crop(cfg.global_scale, cfg.global_translation_px, size, STUDY_VIEW_AUGMENTATION),
            SOLARIZE_P,
            SOLARIZE_THRESHOLD,
            generator,
            intensity_max,
        )
        local = [
            crop(
                cfg.local_scale, cfg.local_translation_px, self.local_size, STUDY_VIEW_AUGMENTATION
            )
            for _ in range(cfg.n_local_crops)
        ]
        return [first, second], local

    def _resized_crops(
        self, images: torch.Tensor, generator: torch.Generator, center: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        def crop(size: int, scale: tuple[float, float]) -> torch.Tensor:
            view, _ = self.augment(images, generator=generator, center=center)
            return random_resized_crop(view, size, scale, generator=generator)

        global_crops = [
            crop(self.image_size, self.config.global_crop_scale) for _ in range(N_GLOBAL_CROPS)
        ]
        local_crops = [
            crop(self.local_size, self.config.local_crop_scale)
            for _ in range(self.config.n_local_crops)
        ]
        return global_crops, local_crops

    def student_outputs(
        self, global_crops: list[torch.Tensor], local_crops: list[torch.Tensor]
    ) -> torch.Tensor:
        """``(2 + n_local, B, out_dim)``: one encoder pass per crop size, one head pass."""
        features = [self.net.features(torch.cat(global_crops))]
        if local_crops:
            features.append(self.net.features(torch.cat(local_crops)))
        out = self.head(torch.cat(features))
        return out.reshape(len(global_crops) + len(local_crops), global_crops[0].shape[0], -1)

    @torch.no_grad()
    def teacher_outputs(self, global_crops: list[torch.Tensor]) -> torch.Tensor:
        """``(2, B, out_dim)`` teacher outputs of the global crops."""
        out = self.teacher_head(self.teacher_net.features(torch.cat(global_crops)))
        return out.reshape(len(global_crops), global_crops[0].shape[0], -1)

    def loss(self, batch: PretrainBatch, step: Step) -> torch.Tensor:
        crops = self.views(batch, step)
        global_crops, local_crops = crops[:N_GLOBAL_CROPS], crops[N_GLOBAL_CROPS:]
        student = self.student_outputs(global_crops, local_crops)
        teacher = self.teacher_outputs(global_crops)
        cfg = self.config
        temperature = teacher_temperature(
            step.fraction,
            cfg.warmup_teacher_temperature,
            cfg.teacher_temperature,
            cfg.warmup_teacher_temperature_fraction,
        )
        loss = dino_loss(teacher, student, self.center, cfg.student_temperature, temperature)
        self.center.copy_(updated_center(self.center, teacher, cfg.center_momentum))
        return loss

    def before_optimizer_step(self, step: Step) -> None:
        """Drop the last layer's gradients during the first ``freeze_last_layer_fraction``."""
        if step.fraction < self.config.freeze_last_layer_fraction:
            for param in self.head.last_layer.parameters():
                param.grad = None

    def after_step(self, step: Step) -> None:
        """Teacher ← m · teacher + (1 − m) · student, m by `momentum_schedule` at this step."""
        momentum = momentum_schedule(step.index, step.total, self.config.teacher_momentum)
        update_momentum(self.net, self.teacher_net, momentum)
        update_momentum(self.head, self.teacher_head, momentum)
