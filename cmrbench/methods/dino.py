"""`dino`: self-distillation — a student matches an EMA teacher across crops of a slice.

Paper: Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021, arXiv 2104.14294; configured as in
de Mooij et al., arXiv 2409.18100 (PAPER.md, "The four SSP methods", and the study's
``configs/dino-config.yaml``).

Each slice gives 2 global crops (``image_size``) and 6 local crops (``image_size // 2``):
every crop is the full ("paper") augmentation followed by a random resized crop with a
horizontal flip. The study's config draws crop areas of 14–100 % (global) and 5–14 %
(local) of the image; those are the defaults here (DINO's own defaults are 40–100 % and
5–40 %). Student and teacher are each a U-Net encoder, global average pooling and a
`DINOHead` (MLP 512-2048-2048-256 with BatchNorm and GELU, L2 normalisation, a
weight-normalised linear layer to 8192 outputs). The teacher sees the global crops, the
student all crops; the loss is the cross-entropy between the centred, sharpened teacher
distribution and the student's over every (teacher crop, other student crop) pair.

Schedules: student temperature 0.1; teacher temperature 0.02 → 0.04 linearly over the
first 30 epochs, then constant; centre momentum 0.9; teacher EMA momentum 0.996 → 1.0 by
a cosine over all steps; the last layer is frozen (no update) during the first epoch;
SGD lr 0.0075 (the study's 0.03 · 64/256) with 10 warm-up epochs, then cosine. The
student's encoder (``self.net``) seeds fine-tuning.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cmrbench.benchmark.augment import BatchAugment, random_resized_crop
from cmrbench.benchmark.nets import SegNet
from cmrbench.methods import register_method
from cmrbench.methods.base import OptimConfig, PretrainBatch, Progress, SSPMethod

N_GLOBAL_CROPS = 2


class NormalizedLinear(nn.Module):
    """``(B, in_dim) -> (B, out_dim)`` without bias, each weight row scaled to unit norm.

    DINO's last layer is ``weight_norm(Linear)`` with the norm ``g`` fixed to 1
    (``norm_last_layer=True``); with ``g`` fixed that is exactly a row-normalised weight.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """``(B, in_dim) -> (B, out_dim)``: MLP with BatchNorm + GELU, L2 norm, `NormalizedLinear`."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(layer.bias)
        self.last_layer = NormalizedLinear(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def dino_loss(teacher_out: torch.Tensor, student_out: torch.Tensor, center: torch.Tensor,
              student_temperature: float, teacher_temperature: float) -> torch.Tensor:
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
    if teacher_out.ndim != 3 or student_out.ndim != 3 or teacher_out.shape[1:] != student_out.shape[1:]:
        raise ValueError(f"DINO loss needs teacher (T, B, K) and student (S, B, K) outputs; got "
                         f"{tuple(teacher_out.shape)} and {tuple(student_out.shape)}")
    n_teacher, n_student = teacher_out.shape[0], student_out.shape[0]
    if n_teacher * n_student - min(n_teacher, n_student) < 1:
        raise ValueError(f"DINO loss needs at least one pair of distinct crops; got {n_teacher} "
                         f"teacher and {n_student} student crop(s)")
    if student_temperature <= 0 or teacher_temperature <= 0:
        raise ValueError(f"DINO temperatures must be > 0; got student {student_temperature}, "
                         f"teacher {teacher_temperature}")
    targets = F.softmax((teacher_out.detach().float() - center.float()) / teacher_temperature, dim=-1)
    log_probs = F.log_softmax(student_out.float() / student_temperature, dim=-1)
    cross_entropy = -torch.einsum("tbk,sbk->ts", targets, log_probs) / teacher_out.shape[1]
    same_crop = torch.eye(n_teacher, n_student, dtype=torch.bool, device=cross_entropy.device)
    return cross_entropy[~same_crop].mean()


def updated_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float) -> torch.Tensor:
    """``momentum · center + (1 − momentum) · mean of teacher_out (T, B, K)`` over crops and batch."""
    batch_center = teacher_out.detach().float().mean(dim=(0, 1))[None]
    return center * momentum + batch_center * (1 - momentum)


def teacher_temperature(epoch: int, start: float, end: float, warmup_epochs: int) -> float:
    """Linear warm-up ``start → end`` over ``warmup_epochs`` (reaching ``end`` at the last
    warm-up epoch, as ``linspace``), then ``end``."""
    if epoch >= warmup_epochs:
        return end
    if warmup_epochs == 1:
        return start
    return start + (end - start) * epoch / (warmup_epochs - 1)


def teacher_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """Cosine schedule ``base → final`` over ``total_steps`` (DINO's ``cosine_scheduler``)."""
    return final - (final - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


@register_method
class DINO(SSPMethod):
    """DINO on the U-Net encoder (the study's configuration as defaults)."""

    name = "dino"
    paper = ("Caron et al., Emerging Properties in Self-Supervised Vision Transformers, "
             "ICCV 2021, arXiv 2104.14294")
    transfers = {"cnn": ("encoder",), "vit": ("encoder",)}
    optim = OptimConfig(optimizer="sgd", lr=0.0075, momentum=0.9, weight_decay=1e-4,
                        schedule="cosine", warmup_epochs=10)
    batch_size = 64
    epochs = 100
    hparams = {
        "hidden_dim": 2048, "bottleneck_dim": 256, "out_dim": 8192,
        "student_temperature": 0.1, "teacher_temperature": 0.04,
        "warmup_teacher_temperature": 0.02, "warmup_teacher_temperature_epochs": 30,
        "center_momentum": 0.9, "teacher_momentum": 0.996, "freeze_last_layer_epochs": 1,
        "n_local_crops": 6, "global_crop_scale": (0.14, 1.0), "local_crop_scale": (0.05, 0.14)}

    def __init__(self, net: SegNet, image_size: int, augment: BatchAugment,
                 generator: torch.Generator | None = None, **hparams: Any) -> None:
        super().__init__(net, image_size, augment, generator, **hparams)
        self._check_config()
        if self.config["n_local_crops"]:
            net.check_input_size(self.local_size)
        cfg = self.config
        self.head = DINOHead(net.feature_dim, int(cfg["hidden_dim"]), int(cfg["bottleneck_dim"]),
                             int(cfg["out_dim"]))
        self.teacher_net = copy.deepcopy(net).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, int(cfg["out_dim"])))

    @property
    def local_size(self) -> int:
        """Side of the local crops: half the image size."""
        return self.image_size // 2

    def _check_config(self) -> None:
        cfg = self.config
        for key in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"):
            if cfg[key] <= 0:
                raise ValueError(f"{self.name}: {key} {cfg[key]} must be > 0")
        for key in ("center_momentum", "teacher_momentum"):
            if not 0 <= cfg[key] <= 1:
                raise ValueError(f"{self.name}: {key} {cfg[key]} must be in [0, 1]")
        for key in ("hidden_dim", "bottleneck_dim", "out_dim", "warmup_teacher_temperature_epochs"):
            if int(cfg[key]) < 1:
                raise ValueError(f"{self.name}: {key} {cfg[key]} must be a positive integer")
        for key in ("n_local_crops", "freeze_last_layer_epochs"):
            if int(cfg[key]) < 0:
                raise ValueError(f"{self.name}: {key} {cfg[key]} must be >= 0")
        for key in ("global_crop_scale", "local_crop_scale"):
            low, high = cfg[key]
            if not 0 < low <= high <= 1:
                raise ValueError(f"{self.name}: {key} {cfg[key]} must be area fractions "
                                 "0 < low <= high <= 1")

    def crops(self, images: torch.Tensor, center: torch.Tensor | None = None
              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Global crops ``(B, 1, S, S)`` and local crops ``(B, 1, S/2, S/2)`` of ``images``,
        augmented around ``center`` ``(B, 2)`` (`PretrainBatch.center`)."""
        def crop(size: int, scale: tuple[float, float]) -> torch.Tensor:
            view, _ = self.augment(images, generator=self.generator, center=center)
            return random_resized_crop(view, size, tuple(scale), generator=self.generator)

        global_crops = [crop(self.image_size, self.config["global_crop_scale"])
                        for _ in range(N_GLOBAL_CROPS)]
        local_crops = [crop(self.local_size, self.config["local_crop_scale"])
                       for _ in range(int(self.config["n_local_crops"]))]
        return global_crops, local_crops

    def student_outputs(self, global_crops: list[torch.Tensor],
                        local_crops: list[torch.Tensor]) -> torch.Tensor:
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

    def loss(self, batch: PretrainBatch, progress: Progress) -> torch.Tensor:
        global_crops, local_crops = self.crops(batch.images, batch.center)
        student = self.student_outputs(global_crops, local_crops)
        teacher = self.teacher_outputs(global_crops)
        cfg = self.config
        temperature = teacher_temperature(progress.epoch, cfg["warmup_teacher_temperature"],
                                          cfg["teacher_temperature"],
                                          int(cfg["warmup_teacher_temperature_epochs"]))
        loss = dino_loss(teacher, student, self.center, cfg["student_temperature"], temperature)
        self.center.copy_(updated_center(self.center, teacher, cfg["center_momentum"]))
        return loss

    def before_optimizer_step(self, progress: Progress) -> None:
        """Drop the last layer's gradients during the first ``freeze_last_layer_epochs``."""
        if progress.epoch < int(self.config["freeze_last_layer_epochs"]):
            for param in self.head.last_layer.parameters():
                param.grad = None

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """Teacher ← m · teacher + (1 − m) · student, m from `teacher_momentum` at this step."""
        m = teacher_momentum(progress.step, progress.total_steps, self.config["teacher_momentum"])
        for student, teacher in self._student_teacher_pairs():
            teacher.mul_(m).add_(student.detach(), alpha=1 - m)

    def _student_teacher_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        return ([(s, t) for s, t in zip(self.net.parameters(), self.teacher_net.parameters())]
                + [(s, t) for s, t in zip(self.head.parameters(), self.teacher_head.parameters())])
