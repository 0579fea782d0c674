"""`mim` / `mim_enc`: masking of the net's input, the masked loss, settings, a short run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrbench.methods import get_method
from cmrbench.methods.base import PretrainBatch
from cmrbench.methods.mim import MIM, MIMEncoder, masked_mse
from cmrbench.nets import create_net
from cmrbench.optim import OptimConfig, build_optimizer, optimizer_step
from cmrbench.transforms.augment import BatchAugment
from cmrbench.transforms.masking import patchify
from support.method_checks import (
    blob_slices,
    build_method,
    first_and_last_mean,
    make_step,
    short_pretraining_losses,
)


def _unaugmented_mim(image_size: int = 32) -> MIM:
    """A `mim` whose augmentation is the identity, so the target is the batch itself."""
    torch.manual_seed(0)
    return MIM(
        create_net("unet2d_xs", **MIM.net_kwargs), image_size, BatchAugment("none", image_size)
    )


def _random_batch(n: int, size: int) -> PretrainBatch:
    images = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(1))
    return PretrainBatch(
        images, torch.rand(n), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    )


def _zeroed_patches(net_input: torch.Tensor, patch: int) -> torch.Tensor:
    """Bool ``(B, 64)``: which patches of the input are entirely 0."""
    return (patchify(net_input, patch) == 0).all(dim=2)


def test_net_receives_the_image_with_48_of_64_patches_zeroed_and_the_rest_intact() -> None:
    method = _unaugmented_mim()
    batch = _random_batch(4, 32)
    seen = []
    method.net.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    method.loss(batch, make_step())
    (net_input,) = seen
    zeroed = _zeroed_patches(net_input, 4)
    assert zeroed.sum(dim=1).tolist() == [48] * 4
    visible = patchify(net_input, 4)[~zeroed]
    assert torch.equal(visible, patchify(batch.images, 4)[~zeroed])


@pytest.mark.parametrize("image_size", [64, 128, 256])
def test_48_of_64_patches_are_masked_at_every_image_size(image_size: int) -> None:
    method = _unaugmented_mim(image_size)
    images = _random_batch(3, image_size).images
    masked, pixels = method.mask_images(images, torch.Generator().manual_seed(0))
    patch = image_size // 8
    assert (patchify(pixels.float(), patch).all(dim=2)).sum(dim=1).tolist() == [48] * 3
    assert pixels.sum().item() == 3 * 48 * patch * patch
    assert torch.equal(masked[pixels], torch.zeros(int(pixels.sum())))
    assert torch.equal(masked[~pixels], images[~pixels])


def test_changing_predictions_outside_the_mask_leaves_the_loss_unchanged() -> None:
    method = _unaugmented_mim()
    batch = _random_batch(4, 32)
    outside = {}

    def remember_mask(module: torch.nn.Module, args: tuple[torch.Tensor]) -> None:
        zeroed = _zeroed_patches(args[0], 4)
        outside["mask"] = ~zeroed.reshape(-1, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(
            4, 3
        )

    def perturb_outside(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out + 100.0 * torch.randn_like(out) * outside["mask"]

    method.net.register_forward_pre_hook(remember_mask)
    reference = method.loss(batch, make_step(seed=7)).item()
    method.net.register_forward_hook(perturb_outside)
    assert method.loss(batch, make_step(seed=7)).item() == pytest.approx(reference, rel=1e-6)


def test_masked_mse_is_the_mean_squared_error_over_masked_pixels_only() -> None:
    prediction = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    target = np.array([0.0, 0.0, 1.0, 10.0]).reshape(1, 1, 2, 2)
    mask = np.array([True, False, True, False]).reshape(1, 1, 2, 2)
    expected = ((1.0 - 0.0) ** 2 + (3.0 - 1.0) ** 2) / 2
    ours = masked_mse(torch.tensor(prediction), torch.tensor(target), torch.tensor(mask))
    assert ours.item() == pytest.approx(expected)


def test_mim_reconstructs_with_a_one_channel_net_without_deep_supervision() -> None:
    method = build_method(MIM)
    method.train()
    out = method.net(torch.randn(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 32, 32)


def test_mim_declares_the_studys_settings_and_mim_enc_differs_only_in_transfers() -> None:
    mim, mim_enc = get_method("mim"), get_method("mim_enc")
    assert (mim, mim_enc) == (MIM, MIMEncoder)
    assert (
        mim.optim.optimizer,
        mim.optim.lr,
        mim.optim.momentum,
        mim.optim.nesterov,
        mim.optim.weight_decay,
    ) == ("sgd", 0.01, 0.99, True, 3e-5)
    assert mim.batch_size == 128
    assert mim.resolved_hparams() == {"mask_ratio": 0.75, "patches_per_side": 8, "norm_pix": False}
    assert mim.transferred_parts("cnn") == ("encoder", "decoder")
    assert mim_enc.transferred_parts("cnn") == ("encoder",)
    assert mim.transferred_parts("vit") == mim_enc.transferred_parts("vit") == ("encoder",)
    for attribute in (
        "optim",
        "optim_by_family",
        "batch_size",
        "epochs",
        "config_class",
        "net_kwargs",
        "paper",
        "version",
    ):
        assert getattr(mim_enc, attribute) == getattr(mim, attribute)
    assert mim_enc.pretrain_as == "mim" and mim.pretrain_as == ""  # one shared pretraining job


def test_mim_rejects_an_image_size_the_patch_grid_does_not_tile_and_a_bad_ratio() -> None:
    with pytest.raises(ValueError, match="36"):
        MIM(create_net("unet2d_xs", **MIM.net_kwargs), 36, BatchAugment("none", 36))
    with pytest.raises(ValueError, match="1.2"):
        build_method(MIM, mask_ratio=1.2)


def test_short_mim_pretraining_lowers_the_loss() -> None:
    method = build_method(MIM)
    first, last = first_and_last_mean(short_pretraining_losses(method, blob_slices(64)))
    assert last < first


def test_mim_on_a_vit_is_mae_and_lowers_its_loss() -> None:
    from cmrbench.methods.mim import MAEDecoder

    torch.manual_seed(0)
    net = create_net("vit_xs", img_size=32, **MIM.net_kwargs)
    method = MIM(net, 32, BatchAugment("none", 32))
    assert isinstance(method.mae_decoder, MAEDecoder)
    images = torch.randn(8, 1, 32, 32).cumsum(-1) / 8  # smooth, learnable rows
    batch = PretrainBatch(
        images=images,
        position=torch.zeros(8),
        subject=torch.zeros(8, dtype=torch.long),
        frame=torch.zeros(8, dtype=torch.long),
    )
    optimizer = build_optimizer(
        list(method.parameters()),
        OptimConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01),
        torch.device("cpu"),
    )
    losses = []
    for index in range(30):
        loss = method.loss(batch, make_step(index, total=30, steps_per_epoch=30))
        optimizer_step(optimizer, loss)
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
