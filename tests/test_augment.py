"""Tests for cmrbench.transforms.augment: geometry, label consistency, ranges, MONAI agreement."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch
import torch.nn.functional as F

from cmrbench.transforms.augment import (
    AUGMENTATIONS,
    DINO_LOCAL_CROP_SCALE,
    PAPER_AUGMENTATION,
    AugmentError,
    AugmentParams,
    BatchAugment,
    apply_affine,
    random_resized_crop,
    spatial_params,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def disk_labels(batch: int, size: int, radius: float) -> torch.Tensor:
    """``(batch, size, size)`` labels: LV disk (1) inside a MYO ring (2), centred."""
    centre = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = torch.sqrt((yy - centre) ** 2 + (xx - centre) ** 2)
    label = torch.where(r < radius, 1, torch.where(r < radius * 1.4, 2, 0))
    return label.expand(batch, size, size).clone()


def structured_batch(batch: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random smooth images and an asymmetric label map (so flips and rotations show)."""
    images = F.avg_pool2d(torch.randn(batch, 1, size, size, generator=seeded(7)), 3, 1, 1)
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    labels[:, 4:12, 6:20] = 1
    labels[:, 14:18, 3:9] = 3
    labels[:, 20:30, 22:26] = 2
    return images, labels


def test_presets_are_none_paper_and_intended() -> None:
    assert set(AUGMENTATIONS) == {"none", "paper", "intended"}
    assert AUGMENTATIONS["paper"] == PAPER_AUGMENTATION
    assert AUGMENTATIONS["intended"] == dataclasses.replace(
        PAPER_AUGMENTATION, intensity_scale=(0.6, 1.5)
    )


@pytest.mark.parametrize(("preset", "low", "high"), [("paper", 1.6, 2.5), ("intended", 0.6, 1.5)])
def test_intensity_multiplier_of_paper_is_1_6_to_2_5_and_of_intended_0_6_to_1_5(
    preset: str, low: float, high: float
) -> None:
    # The preset's own scaling range alone, on constant images: the output is the multiplier.
    params = AugmentParams(intensity_scale=AUGMENTATIONS[preset].intensity_scale)
    out, _ = BatchAugment(params, 8)(torch.ones(2000, 1, 8, 8), None, seeded(20))
    factor = out[:, 0, 0, 0]
    assert torch.allclose(out, factor[:, None, None, None].expand_as(out))
    assert low <= factor.min().item() < low + 0.01
    assert high - 0.01 < factor.max().item() <= high
    assert factor.mean().item() == pytest.approx((low + high) / 2, abs=0.02)


def test_none_preset_returns_the_batch_unchanged() -> None:
    images, labels = structured_batch()
    out_images, out_labels = BatchAugment("none", 32)(images, labels, seeded(0))
    assert torch.equal(out_images, images)
    assert torch.equal(out_labels, labels)


def test_unknown_preset_raises_a_value_error_listing_the_presets() -> None:
    with pytest.raises(
        ValueError, match=r"unknown augmentation preset 'heavy'.*intended, none, paper"
    ):
        BatchAugment("heavy", 64)


def test_images_of_the_wrong_shape_are_rejected_with_the_shapes() -> None:
    augment = BatchAugment("paper", 32)
    with pytest.raises(AugmentError, match=r"\(B, 1, 32, 32\).*\(2, 1, 16, 16\)"):
        augment(torch.zeros(2, 1, 16, 16))
    with pytest.raises(AugmentError, match="labels"):
        augment(torch.zeros(2, 1, 32, 32), torch.zeros(2, 16, 16, dtype=torch.long))


def rotation_theta(batch: int) -> torch.Tensor:
    """``affine_grid`` matrix for torch.rot90(k=1, dims=(H, W)): out[i, j] = in[j, N-1-i]."""
    return torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]).expand(batch, 2, 3)


def test_quarter_turn_affine_equals_rot90_exactly() -> None:
    images, labels = structured_batch()
    out_images, out_labels = apply_affine(images, labels, rotation_theta(4))
    assert torch.allclose(out_images, torch.rot90(images, 1, dims=(-2, -1)), atol=1e-5)
    assert torch.equal(out_labels, torch.rot90(labels, 1, dims=(-2, -1)))


def test_flip_probability_one_flips_both_axes_exactly() -> None:
    images, labels = structured_batch()
    theta = spatial_params(4, AugmentParams(flip_p=1.0), seeded(0))
    assert torch.equal(theta, torch.tensor([[-1.0, 0, 0], [0, -1.0, 0]]).expand(4, 2, 3))
    out_images, out_labels = apply_affine(images, labels, theta)
    assert torch.allclose(out_images, torch.flip(images, dims=(-2, -1)), atol=1e-5)
    assert torch.equal(out_labels, torch.flip(labels, dims=(-2, -1)))


def test_whole_pixel_translation_rolls_and_pads_with_minimum_and_background() -> None:
    images, labels = structured_batch(size=32)
    shift_px = 3  # content moves 3 px right: out[:, j] = in[:, j - 3]
    theta = torch.tensor([[1.0, 0.0, -2 * shift_px / 32], [0.0, 1.0, 0.0]]).expand(4, 2, 3)
    out_images, out_labels = apply_affine(images, labels, theta)
    rolled = torch.roll(images, shift_px, dims=-1)
    assert torch.allclose(out_images[..., shift_px:], rolled[..., shift_px:], atol=1e-5)
    minimum = images.amin(dim=(1, 2, 3), keepdim=True).expand(-1, 1, 32, shift_px)
    assert torch.allclose(out_images[..., :shift_px], minimum, atol=1e-6)
    assert torch.equal(out_labels[..., shift_px:], torch.roll(labels, shift_px, -1)[..., shift_px:])
    assert (out_labels[..., :shift_px] == 0).all()


def test_grid_scale_two_shrinks_a_disk_to_half_its_radius() -> None:
    labels = disk_labels(1, 64, radius=16)
    theta = spatial_params(1, AugmentParams(scale=(2.0, 2.0)), seeded(0))
    _, out = apply_affine(labels[:, None].float(), labels, theta)
    lv_area = (out == 1).sum().item()
    assert lv_area == pytest.approx(math.pi * 8**2, rel=0.08)


def test_transformed_label_equals_label_of_transformed_image_with_nearest() -> None:
    labels = disk_labels(16, 64, radius=12)
    labels[:, 40:50, 10:30] = 3
    theta = spatial_params(16, PAPER_AUGMENTATION, seeded(1))
    out_images, out_labels = apply_affine(
        labels[:, None].float(), labels, theta, image_mode="nearest"
    )
    assert torch.equal(out_images[:, 0], out_labels.float())
    assert not torch.equal(out_labels, labels)


def test_bicubic_image_rounds_to_the_label_away_from_label_edges() -> None:
    labels = disk_labels(16, 64, radius=12)
    labels[:, 40:50, 10:30] = 3
    theta = spatial_params(16, PAPER_AUGMENTATION, seeded(2))
    out_images, out_labels = apply_affine(labels[:, None].float(), labels, theta)
    as_float = out_labels[:, None].float()
    interior = (F.max_pool2d(as_float, 3, 1, 1) == -F.max_pool2d(-as_float, 3, 1, 1))[:, 0]
    agree = out_images[:, 0].round().long() == out_labels
    assert agree[interior].float().mean().item() >= 0.99
    assert interior.float().mean().item() > 0.8


def test_images_are_resampled_bicubically_with_keys_kernel() -> None:
    # Half a pixel to the right, an impulse spreads over four pixels with the weights of
    # Keys' cubic convolution (a = −0.75): W(0.5) = 1.25/8 − 2.25/4 + 1 = 0.59375 and
    # W(1.5) = −0.75·3.375 + 3.75·2.25 − 9 + 3 = −0.09375 (bilinear: 0.5, 0.5 and 0).
    images = torch.zeros(1, 1, 1, 8)
    images[..., 4] = 1.0
    theta = torch.tensor([[[1.0, 0.0, -1 / 8], [0.0, 1.0, 0.0]]])  # out[j] = in[j − 0.5]
    out, _ = apply_affine(images, None, theta)
    expected = torch.tensor([0, 0, 0, -0.09375, 0.59375, 0.59375, -0.09375, 0])
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-6)


def test_slices_are_translated_to_their_heart_centre_before_the_random_affine() -> None:
    # A 2 × 2 blob whose centre is pixel (x 20.5, y 12.5) of 32: normalised ((2·20.5 + 1)/32 − 1,
    # (2·12.5 + 1)/32 − 1) = (0.3125, −0.1875). Flipping both axes about the heart centre
    # brings the (symmetric) blob to the image centre, rows and columns 15–16.
    images = torch.zeros(2, 1, 32, 32)
    images[:, :, 12:14, 20:22] = 1.0
    labels = (images[:, 0] > 0).long() * 2
    center = torch.tensor([[0.3125, -0.1875], [0.0, 0.0]])
    out, out_labels = BatchAugment(AugmentParams(flip_p=1.0), 32)(
        images, labels, seeded(0), center=center
    )
    expected = torch.zeros(32, 32)
    expected[15:17, 15:17] = 1.0
    assert torch.allclose(out[0, 0], expected, atol=1e-5)
    assert torch.equal(out_labels[0], expected.long() * 2)
    # Centre zeros: the image centre, so the second slice is only flipped.
    assert torch.allclose(out[1], torch.flip(images[1], dims=(-2, -1)), atol=1e-5)


def test_without_augmentation_slices_stay_centred_on_the_image() -> None:
    images, labels = structured_batch()
    out, out_labels = BatchAugment("none", 32)(
        images, labels, seeded(0), center=torch.full((4, 2), 0.5)
    )
    assert torch.equal(out, images) and torch.equal(out_labels, labels)


def test_center_of_the_wrong_shape_is_rejected_with_the_shapes() -> None:
    with pytest.raises(AugmentError, match=r"center must be \(B, 2\) = \(4, 2\), got \(4, 3\)"):
        BatchAugment("paper", 32)(torch.zeros(4, 1, 32, 32), center=torch.zeros(4, 3))


def test_same_seed_reproduces_the_batch_and_another_seed_changes_it() -> None:
    images, labels = structured_batch()
    augment = BatchAugment("paper", 32)
    first = augment(images, labels, seeded(5))
    again = augment(images, labels, seeded(5))
    other = augment(images, labels, seeded(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.allclose(first[0], other[0])


def test_each_sample_gets_its_own_parameters() -> None:
    images, labels = structured_batch(batch=2)
    images[1] = images[0]
    labels[1] = labels[0]
    out_images, _ = BatchAugment("paper", 32)(images, labels, seeded(0))
    assert not torch.allclose(out_images[0], out_images[1])


def test_paper_scale_and_translation_stay_in_the_study_ranges() -> None:
    size, batch = 128, 256
    labels = disk_labels(batch, size, radius=16)
    theta = spatial_params(batch, PAPER_AUGMENTATION, seeded(3))
    _, out = apply_affine(labels[:, None].float(), labels, theta)
    area_ratio = (out == 1).sum(dim=(1, 2)).float() / (labels == 1).sum(dim=(1, 2)).float()
    # The grid scale s ∈ [0.7, 1.4] shows the anatomy 1/s as large: area ×[1/1.4², 1/0.7²].
    assert area_ratio.min() >= 1 / 1.4**2 * 0.96 and area_ratio.max() <= 1 / 0.7**2 * 1.04
    assert area_ratio.min() < 0.6 and area_ratio.max() > 1.7
    # The disk's centre moves by -t: at most 40/256 of the size per axis (20 px at 128).
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = (out == 1).float()
    centre = (
        torch.stack(
            [(inside * grid).sum(dim=(1, 2)) / inside.sum(dim=(1, 2)) for grid in (yy, xx)], dim=1
        )
        - (size - 1) / 2
    )
    assert centre.abs().max() <= 20.5
    assert centre.abs().max() > 17


def test_paper_rotation_and_flips_are_drawn_uniformly() -> None:
    theta = spatial_params(4000, AugmentParams(rotation_deg=180.0), seeded(4))
    angle = torch.atan2(theta[:, 1, 0], theta[:, 0, 0])
    quadrant_counts = torch.histc(angle, bins=4, min=-math.pi, max=math.pi) / 4000
    assert torch.allclose(quadrant_counts, torch.full((4,), 0.25), atol=0.03)
    flips = spatial_params(4000, AugmentParams(flip_p=0.5), seeded(4))
    flipped = torch.stack([flips[:, 0, 0], flips[:, 1, 1]], 1) < 0
    assert flipped.float().mean(dim=0).sub(0.5).abs().max() < 0.03
    assert (flipped[:, 0] & flipped[:, 1]).float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_noise_hits_about_a_fifth_of_images_with_sigma_uniform_up_to_0_2() -> None:
    images = torch.zeros(3000, 1, 16, 16)
    out, _ = BatchAugment(AugmentParams(noise_p=0.2, noise_std=0.2), 16)(images, None, seeded(8))
    changed = (out != images).flatten(1).any(dim=1)
    assert changed.float().mean().item() == pytest.approx(0.2, abs=0.03)
    sigma = out[changed].flatten(1).std(dim=1)
    assert sigma.max().item() < 0.2 * 1.25
    assert sigma.mean().item() == pytest.approx(0.1, abs=0.01)  # mean of U(0, 0.2)


def test_smoothing_hits_about_a_fifth_of_images() -> None:
    images = torch.randn(3000, 1, 16, 16, generator=seeded(9))
    params = AugmentParams(smooth_p=0.2, smooth_sigma_px=(8.0, 24.0))  # σ 0.5–1.5 px at 16²
    out, _ = BatchAugment(params, 16)(images, None, seeded(9))
    changed = (out - images).flatten(1).abs().amax(dim=1) > 1e-4
    assert changed.float().mean().item() == pytest.approx(0.2, abs=0.03)
    assert (out[changed].std() < images[changed].std()).item()


@pytest.mark.parametrize(("image_size", "monai_sigma"), [(256, 1.2), (512, 2.4), (128, 0.6)])
def test_smoothing_matches_monai_gaussian_smooth_with_sigma_scaled_to_the_size(
    image_size: int, monai_sigma: float
) -> None:
    transforms = pytest.importorskip("monai.transforms")
    images = torch.randn(2, 1, image_size, image_size, generator=seeded(10))
    params = AugmentParams(smooth_p=1.0, smooth_sigma_px=(1.2, 1.2))
    out, _ = BatchAugment(params, image_size)(images, None, seeded(10))
    expected = torch.stack([transforms.GaussianSmooth(sigma=monai_sigma)(img) for img in images])
    assert torch.allclose(out, torch.as_tensor(expected), atol=1e-4)


def test_intensity_scale_shift_and_gamma_match_monai_adjust_contrast() -> None:
    transforms = pytest.importorskip("monai.transforms")
    images = torch.randn(3, 1, 16, 16, generator=seeded(11))
    params = AugmentParams(intensity_scale=(1.6, 1.6), gamma=(1.3, 1.3))
    out, _ = BatchAugment(params, 16)(images, None, seeded(11))
    scaled = transforms.ScaleIntensity(minv=None, maxv=None, factor=0.6)
    expected = torch.stack([transforms.AdjustContrast(gamma=1.3)(scaled(img)) for img in images])
    assert torch.allclose(out, torch.as_tensor(expected), atol=1e-5)


def test_intensity_shift_moves_every_pixel_by_one_offset_within_0_4() -> None:
    images = torch.randn(500, 1, 8, 8, generator=seeded(12))
    out, _ = BatchAugment(AugmentParams(intensity_shift=0.4), 8)(images, None, seeded(12))
    offsets = (out - images).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-5)
    assert offsets.abs().max().item() <= 0.4 + 1e-5
    assert offsets.abs().max().item() > 0.38


def test_paper_preset_keeps_labels_integer_classes_and_images_finite() -> None:
    images, labels = structured_batch(batch=8)
    out_images, out_labels = BatchAugment("paper", 32)(images, labels, seeded(13))
    assert out_images.dtype == torch.float32 and torch.isfinite(out_images).all()
    assert out_labels.dtype == torch.long and set(out_labels.unique().tolist()) <= {0, 1, 2, 3}


def test_random_resized_crop_shapes_for_global_and_local_crops() -> None:
    images = torch.randn(6, 1, 64, 64)
    assert random_resized_crop(images, 64, (0.4, 1.0), seeded(0)).shape == (6, 1, 64, 64)
    assert random_resized_crop(images, 32, DINO_LOCAL_CROP_SCALE, seeded(0)).shape == (6, 1, 32, 32)


@pytest.mark.parametrize("out_size", [64, 32])
def test_full_crop_without_flip_returns_the_input_resized(out_size: int) -> None:
    images = torch.randn(3, 1, 64, 64, generator=seeded(14))
    crops = random_resized_crop(images, out_size, (1.0, 1.0), seeded(0), flip_p=0.0)
    expected = F.interpolate(images, size=out_size, mode="bilinear", align_corners=False)
    assert torch.allclose(crops, expected, atol=1e-5)


def test_full_crop_with_flip_probability_one_is_the_mirrored_input() -> None:
    images = torch.randn(3, 1, 32, 32, generator=seeded(15))
    crops = random_resized_crop(images, 32, (1.0, 1.0), seeded(0), flip_p=1.0)
    assert torch.allclose(crops, torch.flip(images, dims=(-1,)), atol=1e-5)


def test_crop_areas_and_aspect_ratios_stay_in_range() -> None:
    size = 256
    ramp = torch.arange(size).float().expand(100, 1, size, size)

    def crop_extent(images: torch.Tensor) -> torch.Tensor:
        """Fraction of the side a crop covers (64 samples span 63/64 of the crop)."""
        crops = random_resized_crop(images, 64, DINO_LOCAL_CROP_SCALE, seeded(16), flip_p=0.0)
        return (crops.amax(dim=(1, 2, 3)) - crops.amin(dim=(1, 2, 3))) * 64 / 63 / size

    width, height = crop_extent(ramp), crop_extent(ramp.transpose(-1, -2))
    area, aspect = width * height, width / height
    assert area.min() >= 0.05 * 0.97 and area.max() <= 0.4 * 1.03
    assert aspect.min() >= 0.75 * 0.97 and aspect.max() <= 4 / 3 * 1.03


def test_invalid_crop_scale_is_rejected() -> None:
    with pytest.raises(AugmentError, match=r"\(0.5, 1.5\)"):
        random_resized_crop(torch.zeros(1, 1, 8, 8), 8, (0.5, 1.5), seeded(0))


def test_paper_batch_of_64_at_64px_takes_under_a_second() -> None:
    images, labels = torch.randn(64, 1, 64, 64), torch.randint(0, 4, (64, 64, 64))
    augment = BatchAugment("paper", 64)
    augment(images, labels, seeded(0))
    start = time.perf_counter()
    augment(images, labels, seeded(1))
    assert time.perf_counter() - start < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cpu_batch_from_the_same_cpu_generator() -> None:
    images, labels = structured_batch(batch=16)
    augment = BatchAugment("paper", 32)
    cpu_images, cpu_labels = augment(images, labels, seeded(17))
    gpu_images, gpu_labels = augment(images.cuda(), labels.cuda(), seeded(17))
    assert gpu_images.is_cuda and gpu_labels.is_cuda
    assert torch.allclose(gpu_images.cpu(), cpu_images, atol=1e-3)
    assert (gpu_labels.cpu() == cpu_labels).float().mean().item() > 0.999
    cuda_generator = torch.Generator(device="cuda").manual_seed(17)
    again = augment(images.cuda(), labels.cuda(), cuda_generator)[0]
    assert torch.equal(
        again,
        augment(images.cuda(), labels.cuda(), torch.Generator(device="cuda").manual_seed(17))[0],
    )
    crops = random_resized_crop(images.cuda(), 16, DINO_LOCAL_CROP_SCALE, cuda_generator)
    assert crops.is_cuda and crops.shape == (16, 1, 16, 16)
