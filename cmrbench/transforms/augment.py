"""Batched, on-device augmentation of 2D CMR slices: the study's "augmentation on" preset.

de Mooij et al. (arXiv 2409.18100) augment every fine-tuning slice with translation
±40 px (at 256²), rotation ±180°, isotropic scale 0.7–1.4, flips p = 0.5 per axis, Gaussian
noise p = 0.2 (σ 0.2), Gaussian smoothing p = 0.2 (σ 0.5–1.5 px), an intensity scaling, an
intensity shift ±0.4 and gamma 0.7–1.5. The study ran these per sample in CPU workers
(qcardia-data ``RandResample2Dd`` followed by MONAI's ``RandGaussianNoised``,
``RandGaussianSmoothd``, ``RandScaleIntensityd``, ``RandShiftIntensityd``,
``RandAdjustContrastd``, in that order); cmrbench runs the same operations on whole batches
on the training device (DESIGN.md, "Decisions already taken").

Tensors: images ``(B, 1, H, W)`` float (z-scored), labels ``(B, H, W)`` integer class maps.
Every random parameter is drawn per sample from a ``torch.Generator``, in a fixed order, so a
seed reproduces the batch. Draws happen on the generator's device (or the images' device
without one) and move to the images' device.

Choices where the study's description leaves room (each matches the study's code unless
said otherwise):

- Spatial: one affine ``grid_sample`` per batch, ``theta = [I | c] · R(α) · diag(s·f_x, s·f_y)
  · [I | t]`` in ``affine_grid``'s normalised output→input convention, as the study's
  resampler (qcardia-data ``RandResample2Dd``) builds it. ``c`` is the heart centre the
  caller passes (``center``, ``(B, 2)`` normalised ``(x, y)``): the study first translates
  every augmented slice to its subject's label-derived heart centre; without augmentation
  (preset ``none``) slices stay centred on the image, as in the study. ``s`` scales the
  *sampling grid*, so the anatomy appears ``1/s`` times as large (0.71–1.43×). Translation
  is drawn per axis in ±40/256 of the image size.
- Images are resampled bicubically (``grid_sample(mode="bicubic")``), labels with ``nearest``
  on the same grid. The study resamples the native image once (bicubic) for geometry and
  augmentation together; cmrbench resamples the cached 256² slice (itself one bicubic
  resampling of the native image), so an augmented image is interpolated twice. Outside the
  image, labels are background (0) and images take the slice's minimum intensity: the study
  resampled before z-scoring with zero padding, and its preprocessing shifts each stack's
  minimum to 0, so its padding is the (z-scored) minimum, approximated here per slice.
- Gaussian noise: ``σ ~ U(0, 0.2)`` per image, as MONAI's ``RandGaussianNoise`` draws it.
- Gaussian smoothing: ``σ_x, σ_y ~ U(0.5, 1.5)`` px at 256² independently (scaled with the
  image size), MONAI's ``erf`` kernel truncated at 4σ (normalised to sum 1), zero padding.
- Intensity scaling: the study's config passes ``factors = (0.6, 1.5)`` to MONAI's
  ``RandScaleIntensity``, which multiplies by ``1 + factor``: a multiplier ``U(1.6, 2.5)``,
  applied to every image, so training images are 1.6–2.5× brighter than test images. The
  "paper" preset keeps that multiplier range; the "intended" preset multiplies by
  ``U(0.6, 1.5)`` (what the config's values probably meant), for ablations.
- Gamma: MONAI's ``AdjustContrast``: ``x ← ((x − min)/(max − min + 1e-7))^γ · (max − min) +
  min`` per image, i.e. gamma on min–max normalised intensities, mapped back.
- Scaling, shift and gamma apply to every image (probability 1), as in the study's config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cmrbench.errors import CmrbenchError

REFERENCE_SIZE = 256
"""Image size (px) at which the study states its pixel sizes; other sizes scale them."""

DINO_GLOBAL_CROP_SCALE = (0.4, 1.0)
DINO_LOCAL_CROP_SCALE = (0.05, 0.4)
"""Area fractions of DINO's global and local crops (Caron et al. 2021, ``main_dino.py``)."""

_CROP_ATTEMPTS = 10
_GAMMA_EPSILON = 1e-7
_SMOOTH_TRUNCATE = 4.0


class AugmentError(CmrbenchError, ValueError):
    """An augmentation preset or input that cmrbench cannot use; the message says why."""


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of one augmentation preset; pixel sizes are at 256² and scale with the image.

    Attributes:
        translation_px: largest shift per axis, in px at 256².
        rotation_deg: largest rotation angle either way, in degrees.
        scale: range of the sampling-grid scale ``s`` (the anatomy appears ``1/s`` as large).
        flip_p: probability of a flip, per axis.
        noise_p, noise_std: probability of additive Gaussian noise; its σ is ``U(0, noise_std)``.
        smooth_p, smooth_sigma_px: probability of Gaussian smoothing; σ range per axis (px at 256²).
        intensity_scale: range of the multiplicative intensity factor.
        intensity_shift: largest additive intensity offset either way.
        gamma: range of the gamma exponent.
    """

    translation_px: float = 0.0
    rotation_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    flip_p: float = 0.0
    noise_p: float = 0.0
    noise_std: float = 0.0
    smooth_p: float = 0.0
    smooth_sigma_px: tuple[float, float] = (0.0, 0.0)
    intensity_scale: tuple[float, float] = (1.0, 1.0)
    intensity_shift: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)


NO_AUGMENTATION = AugmentParams()

PAPER_AUGMENTATION = AugmentParams(
    translation_px=40.0,
    rotation_deg=180.0,
    scale=(0.7, 1.4),
    flip_p=0.5,
    noise_p=0.2,
    noise_std=0.2,
    smooth_p=0.2,
    smooth_sigma_px=(0.5, 1.5),
    intensity_scale=(1.6, 2.5),
    intensity_shift=0.4,
    gamma=(0.7, 1.5),
)

INTENDED_AUGMENTATION = dataclasses.replace(PAPER_AUGMENTATION, intensity_scale=(0.6, 1.5))

AUGMENTATIONS: dict[str, AugmentParams] = {
    "none": NO_AUGMENTATION,
    "paper": PAPER_AUGMENTATION,
    "intended": INTENDED_AUGMENTATION,
}
"""Augmentation presets by name: ``"none"`` (identity; the study's "off"), ``"paper"`` (the
study's "on", intensity ×1.6–2.5) and ``"intended"`` (the same with intensity ×0.6–1.5)."""


def image_centres(images: Tensor) -> Tensor:
    """Centres ``(B, 2)`` that keep every slice of ``images (B, ...)`` centred on the image:
    zeros, in ``F.affine_grid`` normalised ``(x, y)``."""
    return torch.zeros(images.shape[0], 2, device=images.device)


class BatchAugment:
    """Applies one preset to a batch on the batch's device.

    Example::

        augment = BatchAugment("paper", image_size=256)
        images, labels = augment(images, labels, generator=torch.Generator().manual_seed(0),
                                 center=batch_center)

    Args:
        preset: a name in `AUGMENTATIONS`, or `AugmentParams` for custom ranges.
        image_size: side of the square input slices in px (scales the study's pixel sizes).
    """

    def __init__(self, preset: str | AugmentParams, image_size: int) -> None:
        if isinstance(preset, AugmentParams):
            self.params = preset
        elif preset in AUGMENTATIONS:
            self.params = AUGMENTATIONS[preset]
        else:
            raise AugmentError(
                f"unknown augmentation preset {preset!r}; valid presets: "
                f"{', '.join(sorted(AUGMENTATIONS))}"
            )
        if image_size < 1:
            raise AugmentError(f"image_size must be a positive number of px, got {image_size}")
        self.image_size = image_size

    @torch.no_grad()
    def __call__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        center: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Augment ``images (B, 1, H, W)`` and ``labels (B, H, W)`` alike; images return float32.

        ``center`` ``(B, 2)``: ``F.affine_grid`` normalised ``(x, y)`` each slice is translated
        to before the random affine (the heart centre; None or zeros: the image centre).
        Preset ``none`` returns the slices as they are, centred on the image.
        """
        self._check(images, labels, center)
        images = images.float()
        if self.params == NO_AUGMENTATION:
            return images, labels
        # float32 even inside the training step's autocast region: conv2d would run in bf16
        with torch.autocast(images.device.type, enabled=False):
            draw = _Draw(generator, images.device)
            theta = spatial_params(images.shape[0], self.params, generator, images.device)
            if center is not None:
                theta[:, :, 2] += center.to(theta)
            images, labels = apply_affine(images, labels, theta)
            images = _add_noise(images, self.params, draw)
            images = _smooth(images, self.params, self.image_size, draw)
            images = _scale_shift_gamma(images, self.params, draw)
        return images, labels

    def _check(self, images: Tensor, labels: Tensor | None, center: Tensor | None) -> None:
        expected = f"(B, 1, {self.image_size}, {self.image_size})"
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-2:] != (self.image_size,) * 2:
            raise AugmentError(
                f"images must be {expected} (image_size {self.image_size}), got "
                f"{tuple(images.shape)}"
            )
        if labels is not None and labels.shape != images.shape[:1] + images.shape[2:]:
            raise AugmentError(
                f"labels must be (B, H, W) matching images {tuple(images.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        if center is not None and center.shape != (images.shape[0], 2):
            raise AugmentError(
                f"center must be (B, 2) = ({images.shape[0]}, 2), got {tuple(center.shape)}"
            )


def spatial_params(
    batch_size: int,
    params: AugmentParams,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random affine matrices ``(B, 2, 3)`` for ``F.affine_grid`` (output → input, normalised).

    ``theta = R(α) · diag(s·f_x, s·f_y) · [I | t]`` with ``α ~ U(±rotation)``, ``s ~ U(scale)``,
    ``f = −1`` with probability ``flip_p`` per axis, and ``t ~ U(±translation)`` per axis.
    """
    draw = _Draw(generator, torch.device(device) if device is not None else None)
    u = draw.uniform((batch_size, 6))
    angle = (2 * u[:, 0] - 1) * math.radians(params.rotation_deg)
    low, high = params.scale
    scale = low + (high - low) * u[:, 1]
    flip = torch.where(u[:, 2:4] < params.flip_p, -1.0, 1.0)
    shift = (2 * u[:, 4:6] - 1) * (2 * params.translation_px / REFERENCE_SIZE)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    linear = rotation * (scale[:, None] * flip)[:, None, :]
    return torch.cat([linear, (linear @ shift[:, :, None])], dim=2)


def apply_affine(
    images: Tensor, labels: Tensor | None, theta: Tensor, image_mode: str = "bicubic"
) -> tuple[Tensor, Tensor | None]:
    """Resample ``images (B, 1, H, W)`` and ``labels (B, H, W)`` on one grid, ``theta (B, 2, 3)``.

    Images use ``image_mode`` (bicubic by default, as the study) and take each slice's
    minimum outside the field of view; labels use ``nearest`` and are background (0) outside.
    """
    theta = theta.to(device=images.device, dtype=torch.float32)
    images = images.float()
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    images = (
        F.grid_sample(
            images - floor, grid, mode=image_mode, padding_mode="zeros", align_corners=False
        )
        + floor
    )
    if labels is not None:
        resampled = F.grid_sample(
            labels[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        labels = resampled[:, 0].round().to(labels.dtype)
    return images, labels


def random_resized_crop(
    images: Tensor,
    out_size: int,
    scale: tuple[float, float],
    generator: torch.Generator | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> Tensor:
    """Random crops of ``images (B, 1, H, W)`` resized to ``(B, 1, out_size, out_size)``.

    torchvision's ``RandomResizedCrop`` (as DINO's multi-crop uses it, with its
    ``RandomHorizontalFlip``), batched through one ``affine_grid``: the crop covers an area
    fraction ``U(scale)`` of the image with aspect ratio log-uniform in ``ratio``; like
    torchvision, up to 10 draws per image until the crop fits, else the whole image. Unlike
    torchvision, crop sizes and positions are continuous, not whole pixels. DINO's defaults:
    `DINO_GLOBAL_CROP_SCALE` at full size, `DINO_LOCAL_CROP_SCALE` at half size. Bilinear,
    with edge pixels repeated for the half pixel outside the image.
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise AugmentError(f"crop scale must be area fractions 0 < low <= high <= 1, got {scale}")
    batch = images.shape[0]
    draw = _Draw(generator, images.device)
    u = draw.uniform((batch, _CROP_ATTEMPTS, 2))
    area = scale[0] + (scale[1] - scale[0]) * u[..., 0]
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * u[..., 1])
    width, height = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (width <= 1) & (height <= 1)
    first = fits.float().argmax(dim=1, keepdim=True)
    any_fits = fits.any(dim=1)
    width = torch.where(any_fits, width.gather(1, first)[:, 0], 1.0)
    height = torch.where(any_fits, height.gather(1, first)[:, 0], 1.0)
    position = 2 * draw.uniform((batch, 2)) - 1
    flip = torch.where(draw.uniform((batch,)) < flip_p, -1.0, 1.0)
    zero = torch.zeros_like(width)
    theta = torch.stack(
        [
            torch.stack([width * flip, zero, position[:, 0] * (1 - width)], -1),
            torch.stack([zero, height, position[:, 1] * (1 - height)], -1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [batch, images.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


class _Draw:
    """Uniform and normal draws on the generator's device, returned on the target device."""

    def __init__(self, generator: torch.Generator | None, device: torch.device | None) -> None:
        self.generator = generator
        self.draw_device = generator.device if generator is not None else device
        self.device = device if device is not None else self.draw_device

    def uniform(self, shape: tuple[int, ...]) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.draw_device).to(self.device)

    def normal(self, shape: tuple[int, ...]) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.draw_device).to(self.device)


def _add_noise(images: Tensor, params: AugmentParams, draw: _Draw) -> Tensor:
    u = draw.uniform((images.shape[0], 2))
    chosen = torch.nonzero(u[:, 0] < params.noise_p)[:, 0]
    if chosen.numel() == 0:
        return images
    sigma = (u[chosen, 1] * params.noise_std)[:, None, None, None]
    noise = draw.normal((chosen.numel(), *images.shape[1:])) * sigma
    return images.index_add(0, chosen, noise)


def _smooth(images: Tensor, params: AugmentParams, image_size: int, draw: _Draw) -> Tensor:
    u = draw.uniform((images.shape[0], 3))
    chosen = torch.nonzero(u[:, 0] < params.smooth_p)[:, 0]
    if chosen.numel() == 0:
        return images
    low, high = (s * image_size / REFERENCE_SIZE for s in params.smooth_sigma_px)
    sigma = low + (high - low) * u[chosen, 1:]  # (n, 2): σ_y, σ_x
    radius = int(max(high * _SMOOTH_TRUNCATE, 0.5) + 0.5)
    kernels = _gaussian_kernels(sigma, radius)  # (n, 2, 2·radius + 1)
    count, height, width = chosen.numel(), images.shape[2], images.shape[3]
    stacked = images[chosen].reshape(1, count, height, width)
    stacked = F.conv2d(stacked, kernels[:, 0, None, :, None], padding=(radius, 0), groups=count)
    stacked = F.conv2d(stacked, kernels[:, 1, None, None, :], padding=(0, radius), groups=count)
    return images.index_copy(0, chosen, stacked.reshape(count, 1, height, width))


def _gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """MONAI's ``erf`` Gaussian kernels ``(..., 2·radius + 1)`` for σ ``(...)``, summing to 1."""
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    t = 1.0 / (math.sqrt(2.0) * sigma[..., None])
    kernels = 0.5 * (torch.erf(t * (offsets + 0.5)) - torch.erf(t * (offsets - 0.5)))
    return kernels / kernels.sum(dim=-1, keepdim=True)


def _scale_shift_gamma(images: Tensor, params: AugmentParams, draw: _Draw) -> Tensor:
    u = draw.uniform((images.shape[0], 3))[:, :, None, None, None]
    low, high = params.intensity_scale
    images = images * (low + (high - low) * u[:, 0])
    images = images + (2 * u[:, 1] - 1) * params.intensity_shift
    low, high = params.gamma
    gamma = low + (high - low) * u[:, 2]
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    span = images.amax(dim=(1, 2, 3), keepdim=True) - floor
    return ((images - floor) / (span + _GAMMA_EPSILON)) ** gamma * span + floor


def resample_to_size(
    images: Tensor, theta: Tensor, out_size: int, image_mode: str = "bicubic"
) -> Tensor:
    """Resample ``images (B, 1, H, W)`` on ``theta (B, 2, 3)`` to ``(B, 1, out_size, out_size)``.

    As `apply_affine` (each slice's minimum outside the field of view), but onto a grid of
    its own size: DINO's local crops are one resampling of the slice onto a smaller grid,
    bicubic as the study's resampler.
    """
    theta = theta.to(device=images.device, dtype=torch.float32)
    images = images.float()
    grid = F.affine_grid(theta, [images.shape[0], 1, out_size, out_size], align_corners=False)
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    return (
        F.grid_sample(
            images - floor, grid, mode=image_mode, padding_mode="zeros", align_corners=False
        )
        + floor
    )


def intensity_augment(
    images: Tensor,
    params: AugmentParams,
    image_size: int,
    generator: torch.Generator | None = None,
    probabilities: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Tensor:
    """The preset's intensity operations on ``images (B, 1, H, W)``, in the study's order,
    with a probability for each of intensity scaling, shift and gamma.

    Gaussian noise and smoothing use the preset's probabilities; scaling, shift and gamma
    each apply to a sample with its probability in ``probabilities`` (DINO's views in the
    study: 0.2, 0.15, 0.15; `BatchAugment` applies all three to every image). ``image_size``
    is the size of the slice the σ of the smoothing scales with (px at 256²), also for
    crops resampled onto a smaller grid.
    """
    draw = _Draw(generator, images.device)
    images = _add_noise(images, params, draw)
    images = _smooth(images, params, image_size, draw)
    u = draw.uniform((images.shape[0], 6))[:, :, None, None, None]
    chosen = u[:, :3] < torch.tensor(probabilities, device=images.device)[:, None, None, None]
    low, high = params.intensity_scale
    images = torch.where(chosen[:, 0], images * (low + (high - low) * u[:, 3]), images)
    images = torch.where(chosen[:, 1], images + (2 * u[:, 4] - 1) * params.intensity_shift, images)
    low, high = params.gamma
    gamma = low + (high - low) * u[:, 5]
    floor = images.amin(dim=(1, 2, 3), keepdim=True)
    span = images.amax(dim=(1, 2, 3), keepdim=True) - floor
    adjusted = ((images - floor) / (span + _GAMMA_EPSILON)) ** gamma * span + floor
    return torch.where(chosen[:, 2], adjusted, images)
