"""Patch masks for MIM / MAE (cmrbench.transforms.masking)."""

from __future__ import annotations

import pytest
import torch

from cmrbench.transforms.masking import (
    MaskingError,
    keep_tokens,
    num_masked,
    patch_grid,
    patch_mask_to_pixels,
    patchify,
    random_patch_mask,
    random_token_mask,
    unpatchify,
)


@pytest.mark.parametrize(("image_size", "patch"), [(256, 32), (128, 16), (64, 8), (32, 4)])
def test_patch_grid_keeps_an_8_by_8_grid_at_every_size(image_size: int, patch: int) -> None:
    assert patch_grid(image_size) == patch


def test_patch_grid_rejects_sizes_the_grid_does_not_tile() -> None:
    with pytest.raises(MaskingError, match="100"):
        patch_grid(100)


@pytest.mark.parametrize(
    ("n", "ratio", "expected"),
    [
        (64, 0.75, 48),
        (16, 0.75, 12),
        (10, 0.75, 7),
        (49, 0.75, 36),
        (100, 0.29, 29),
        (5, 0.5, 2),
        (64, 0.0, 0),
    ],
)
def test_num_masked_is_the_floor_of_ratio_times_n(n: int, ratio: float, expected: int) -> None:
    assert num_masked(n, ratio) == expected


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_num_masked_rejects_ratios_outside_0_1(ratio: float) -> None:
    with pytest.raises(MaskingError, match=str(ratio)):
        num_masked(64, ratio)


@pytest.mark.parametrize(("n", "ratio"), [(64, 0.75), (16, 0.5), (49, 0.75), (100, 0.29)])
def test_random_patch_mask_masks_exactly_floor_ratio_n_per_image(n: int, ratio: float) -> None:
    mask = random_patch_mask(32, n, ratio, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (32, n)
    assert mask.sum(dim=1).tolist() == [num_masked(n, ratio)] * 32


def test_random_patch_mask_differs_between_images_and_repeats_with_the_seed() -> None:
    first = random_patch_mask(8, 64, 0.75, torch.Generator().manual_seed(3))
    again = random_patch_mask(8, 64, 0.75, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert len({tuple(row.tolist()) for row in first}) == 8


def test_patch_mask_to_pixels_covers_the_patch_in_row_major_order() -> None:
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, 9] = True  # grid row 1, column 1
    mask[1, 63] = True  # grid row 7, column 7
    pixels = patch_mask_to_pixels(mask, 64)
    expected = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    expected[0, 0, 8:16, 8:16] = True
    expected[1, 0, 56:64, 56:64] = True
    assert torch.equal(pixels, expected)


def test_patch_mask_to_pixels_rejects_a_mask_of_the_wrong_grid() -> None:
    with pytest.raises(MaskingError, match="8 x 8"):
        patch_mask_to_pixels(torch.zeros(2, 16, dtype=torch.bool), 64)


def test_patchify_numbers_patches_like_the_pixel_mask_and_unpatchify_inverts_it() -> None:
    images = torch.randn(3, 1, 32, 32)
    patches = patchify(images, 4)
    assert patches.shape == (3, 64, 16)
    assert torch.equal(patches[1, 8 * 2 + 5], images[1, 0, 8:12, 20:24].reshape(-1))
    assert torch.equal(unpatchify(patches, 4), images)
    token = torch.zeros(3, 64, dtype=torch.bool)
    token[:, 8 * 2 + 5] = True
    assert torch.equal(
        images[patch_mask_to_pixels(token, 32).expand_as(images)], patches[:, 8 * 2 + 5].reshape(-1)
    )


def test_random_token_mask_index_tensors_agree_with_the_bool_mask() -> None:
    n = 49
    m = random_token_mask(4, n, 0.75, torch.Generator().manual_seed(1))
    assert m.keep.shape == (4, n - 36) and m.masked.shape == (4, 36)
    for row in range(4):
        assert not m.mask[row, m.keep[row]].any()
        assert m.mask[row, m.masked[row]].all()
        assert sorted(torch.cat([m.keep[row], m.masked[row]]).tolist()) == list(range(n))
    unshuffled = torch.cat([m.keep, m.masked], dim=1).gather(1, m.restore)
    assert torch.equal(unshuffled, torch.arange(n).expand(4, -1))


def test_keep_tokens_gathers_the_visible_tokens() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    keep = torch.tensor([[4, 0], [1, 3]])
    kept = keep_tokens(tokens, keep)
    assert torch.equal(kept, torch.stack([tokens[0, [4, 0]], tokens[1, [1, 3]]]))
