"""Random patch masks for masked image modelling (MIM on the U-Net, MAE on a ViT).

The study (de Mooij et al., arXiv 2409.18100) masks 32 x 32 patches of 256 x 256 slices,
exactly 75 % of them per image, and fills them with 0. DESIGN.md scales the patch with
the image size so that every size keeps the study's geometry: an 8 x 8 grid of 64
patches with ⌊0.75 · 64⌋ = 48 masked.

Patches (or ViT tokens) are numbered row by row: patch ``k`` covers grid row
``k // n_per_side`` and column ``k % n_per_side``, the order of `patchify` and of a ViT's
patch embedding.

The masks are drawn as in MAE (He et al., "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022, arXiv 2111.06377): uniform noise per patch, ``argsort``, and the
patches with the lowest noise are kept. That gives every image exactly the same number of
masked patches, which the study requires and a ViT needs to batch its visible tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cmrbench.errors import CmrbenchError

# ratio · n is computed in floating point; ⌊0.29 · 100⌋ would otherwise give 28
_FLOOR_TOLERANCE = 1e-9


class MaskingError(CmrbenchError, ValueError):
    """A patch grid, ratio or mask that does not fit the image (message names the values)."""


def patch_grid(image_size: int, n_per_side: int = 8) -> int:
    """The patch side in pixels that tiles an ``image_size``² image with ``n_per_side``² patches.

    ``patch_grid(256) == 32`` (the study's patch), ``patch_grid(64) == 8``.
    """
    if n_per_side < 1 or image_size < n_per_side or image_size % n_per_side:
        raise MaskingError(
            f"image size {image_size} cannot be tiled by {n_per_side} x "
            f"{n_per_side} square patches; expected a multiple of {n_per_side}"
        )
    return image_size // n_per_side


def num_masked(n_patches: int, ratio: float) -> int:
    """⌊ratio · n_patches⌋, the number of masked patches per image (48 of 64 at 0.75)."""
    if not 0.0 <= ratio < 1.0:
        raise MaskingError(
            f"mask ratio {ratio} is outside [0, 1); at least one patch must stay visible"
        )
    if n_patches < 1:
        raise MaskingError(f"number of patches {n_patches} must be at least 1")
    return math.floor(ratio * n_patches + _FLOOR_TOLERANCE)


@dataclass(frozen=True)
class TokenMask:
    """One random mask per image, as index tensors (MAE's layout).

    Attributes:
        keep: ``(B, n_keep)`` long, indices of the visible tokens, in shuffled order.
        masked: ``(B, n_masked)`` long, indices of the masked tokens.
        restore: ``(B, n)`` long, the permutation that puts ``cat([kept, masked], 1)``
            back into token order (``gather(..., restore)``).
        mask: ``(B, n)`` bool, True where a token is masked.
    """

    keep: torch.Tensor
    masked: torch.Tensor
    restore: torch.Tensor
    mask: torch.Tensor


def random_token_mask(
    batch: int,
    n_tokens: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> TokenMask:
    """Mask exactly ⌊ratio · n_tokens⌋ random tokens of each of ``batch`` images.

    Noise is drawn on the generator's device (so a CPU generator reproduces the same
    masks on any accelerator) and the result is moved to ``device``.
    """
    n_mask = num_masked(n_tokens, ratio)
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, n_tokens, generator=generator, device=noise_device)
    shuffle = noise.argsort(dim=1).to(device if device is not None else noise.device)
    restore = shuffle.argsort(dim=1)
    n_keep = n_tokens - n_mask
    # in shuffled order the first n_keep tokens are visible, the rest masked
    shuffled_mask = torch.arange(n_tokens, device=shuffle.device).expand(batch, -1) >= n_keep
    mask = shuffled_mask.gather(1, restore)
    return TokenMask(
        keep=shuffle[:, :n_keep], masked=shuffle[:, n_keep:], restore=restore, mask=mask
    )


def random_patch_mask(
    batch: int,
    n_patches: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool ``(batch, n_patches)``, True on exactly ⌊ratio · n_patches⌋ random patches per row."""
    return random_token_mask(batch, n_patches, ratio, generator, device).mask


def patch_mask_to_pixels(mask: torch.Tensor, image_size: int, n_per_side: int = 8) -> torch.Tensor:
    """Expand a patch mask ``(B, n_per_side²)`` to a pixel mask ``(B, 1, H, W)`` (bool)."""
    patch = patch_grid(image_size, n_per_side)
    if mask.ndim != 2 or mask.shape[1] != n_per_side**2:
        raise MaskingError(
            f"patch mask of shape {tuple(mask.shape)} does not fit a "
            f"{n_per_side} x {n_per_side} grid; expected (B, {n_per_side**2})"
        )
    grid = mask.reshape(mask.shape[0], 1, n_per_side, n_per_side)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut images ``(B, C, H, W)`` into row-major patches ``(B, N, patch · patch · C)``."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise MaskingError(
            f"image of {h} x {w} pixels cannot be cut into {patch} x {patch} "
            f"patches; expected sides that are multiples of {patch}"
        )
    grid = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), -1)


def unpatchify(patches: torch.Tensor, patch: int, channels: int = 1) -> torch.Tensor:
    """Inverse of `patchify` for a square grid: ``(B, N, patch · patch · C) -> (B, C, H, W)``."""
    b, n, _ = patches.shape
    side = math.isqrt(n)
    if side * side != n:
        raise MaskingError(f"{n} patches do not form a square grid")
    grid = patches.reshape(b, side, side, patch, patch, channels)
    return grid.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, side * patch, side * patch)


def keep_tokens(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The visible tokens ``(B, n_keep, D)`` of ``tokens`` ``(B, N, D)`` (MAE's encoder input)."""
    return tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
