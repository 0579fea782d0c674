"""The segmentation loss of fine-tuning: the study's 0.5 cross-entropy + 0.5 soft Dice with deep
supervision, for partial labels (PAPER.md "Network and fine-tuning", "Details from the study's
code").

Shapes: logits ``(B, C, H, W)``, targets ``(B, H, W)`` long in the canonical labels (0 background,
1 LV, 2 MYO, 3 RV), ``annotated`` ``(B, C)`` bool (which classes were delineated on each slice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights 2^-i for outputs i = 0..n-1, normalised to sum to 1."""
    raw = [2.0**-i for i in range(n)]
    return [w / sum(raw) for w in raw]


def marginal_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy in log space, classes not annotated on a slice merged into background.

    Args:
        logits: ``(B, C, H, W)``.
        target: ``(B, H, W)`` long, canonical labels.
        annotated: ``(B, C)`` bool: which classes were delineated on each slice.

    With every class annotated this is ``nn.CrossEntropyLoss`` (log-softmax), as the study
    trains. Otherwise an unannotated class is unknown there, not background: the background's
    log-probability becomes ``logsumexp`` over background and the unannotated classes (the
    marginal loss of Shi et al., MedIA 2021). Log space keeps the gradient of a confidently
    wrong pixel at ``p − 1`` instead of vanishing under a probability clamp.
    """
    log_probs = logits.float().log_softmax(dim=1)
    merged = ~annotated
    merged[:, 0] = True
    outside = ~merged[:, :, None, None]
    background = log_probs.masked_fill(outside, float("-inf")).logsumexp(1, keepdim=True)
    return F.nll_loss(torch.cat([background, log_probs[:, 1:]], dim=1), target)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor,
    dice: str = "sample",
    smooth: float = 1e-5,
) -> torch.Tensor:
    """1 − soft Dice of the foreground classes, leaving out classes not annotated on a slice.

    Args:
        logits: ``(B, C, H, W)``; target ``(B, H, W)`` long; annotated ``(B, C)`` bool.
        dice: ``"sample"``: qcardia-models' ``DiceLoss`` as the study trains: Dice per image
            and class (sums over H, W only), ``(2·I + smooth) / (ΣP + ΣG + smooth)``, weighted
            equally over the foreground classes (weights [0, 1, 1, 1] / 3), averaged over the
            batch. A class absent from an image's reference still costs ≈ 1 unless its
            predicted mass is ≈ 0. Here the weights of one image spread over its *annotated*
            foreground classes, and images with none are left out of the mean.
            ``"batch"``: sums over the batch as well, one Dice per class, averaged over the
            classes annotated on any slice of the batch.
    """
    probs = logits.float().softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    weight = annotated[:, 1:].float()
    if dice == "sample":
        inter = (probs * onehot).sum(dim=(2, 3))
        denom = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
        per_class = 1 - (2 * inter + smooth) / (denom + smooth)  # (B, C-1)
        counted = weight.sum(dim=1)
        per_image = (per_class * weight).sum(dim=1) / counted.clamp_min(1)
        return per_image.sum() / (counted > 0).sum().clamp_min(1)
    if dice == "batch":
        p, g = probs * weight[:, :, None, None], onehot * weight[:, :, None, None]
        inter = (p * g).sum(dim=(0, 2, 3))
        denom = p.sum(dim=(0, 2, 3)) + g.sum(dim=(0, 2, 3))
        present = annotated[:, 1:].any(dim=0)
        per_class = (2 * inter + smooth) / (denom + smooth)
        return 1 - (per_class * present).sum() / present.sum().clamp_min(1)
    raise ValueError(f"dice: unknown value {dice!r}; allowed: sample, batch")


def seg_loss(
    logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, dice: str = "sample"
) -> torch.Tensor:
    """The study's loss, 0.5 cross-entropy + 0.5 soft Dice (background excluded), with
    partial labels (`marginal_cross_entropy`, `soft_dice_loss`).

    Args:
        logits: ``(B, C, H, W)``.
        target: ``(B, H, W)`` long, canonical labels.
        annotated: ``(B, C)`` bool: which classes were delineated on each slice.
        dice: ``"sample"`` (the study's) or ``"batch"``, see `soft_dice_loss`.
    """
    return 0.5 * marginal_cross_entropy(logits, target, annotated) + 0.5 * soft_dice_loss(
        logits, target, annotated, dice
    )


def deep_supervised_loss(
    outputs: list[torch.Tensor] | torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor,
    dice: str = "sample",
) -> torch.Tensor:
    """`seg_loss` over every deep-supervision output, against targets downsampled with
    ``F.interpolate(mode="nearest-exact")`` as the study does (pixel ``2i + 1`` at stride 2)."""
    outputs = outputs if isinstance(outputs, list) else [outputs]
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for weight, out in zip(deep_supervision_weights(len(outputs)), outputs):
        scaled = target
        if out.shape[-2:] != target.shape[-2:]:
            scaled = F.interpolate(
                target[:, None].float(), size=out.shape[-2:], mode="nearest-exact"
            )[:, 0].long()
        total = total + weight * seg_loss(out, scaled, annotated, dice)
    return total
