"""ViT segmentation nets (timm encoder + UNETR decoder), layer-decay param groups and MAE."""

from __future__ import annotations

import math

import pytest
import torch

from cmrbench.benchmark.losses import deep_supervised_loss
from cmrbench.methods.mim import MAEDecoder, mae_loss, masked_patch_loss
from cmrbench.nets import create_net, list_nets
from cmrbench.nets.vit import ViTSegNet, token_block_indices
from cmrbench.optim import OptimConfig, build_optimizer
from cmrbench.transforms.masking import num_masked, random_token_mask

CPU = torch.device("cpu")


def _xs(**kw) -> ViTSegNet:
    torch.manual_seed(0)
    return create_net("vit_xs", **kw)


def _square_batch(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, 1, size, size)`` with one bright square each, labels 1 inside it."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.1 * torch.randn(n, 1, size, size, generator=gen)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    side = size // 3
    for i in range(n):
        top, left = torch.randint(0, size - side, (2,), generator=gen).tolist()
        images[i, 0, top : top + side, left : left + side] += 2.0
        labels[i, top : top + side, left : left + side] = 1
    return images, labels


# --------------------------------------------------------------------------- the net contract


@pytest.mark.parametrize("size", [32, 64])
def test_vit_xs_returns_three_full_res_first_logits_in_training_and_one_in_eval(size):
    net = _xs().train()
    outs = net(torch.randn(2, 1, size, size))
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [
        (2, 4, size, size),
        (2, 4, size // 2, size // 2),
        (2, 4, size // 4, size // 4),
    ]
    out = net.eval()(torch.randn(2, 1, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, size, size)


def test_vit_tiny_gives_four_deep_supervision_outputs_down_to_one_eighth():
    torch.manual_seed(0)
    net = create_net("vit_tiny", img_size=64).train()
    outs = net(torch.randn(1, 1, 64, 64))
    assert [o.shape[-1] for o in outs] == [64, 32, 16, 8]


def test_without_deep_supervision_training_returns_one_tensor_with_the_asked_channels():
    net = _xs(num_classes=1, deep_supervision=False).train()
    out = net(torch.randn(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 32, 32)


def test_features_are_the_mean_of_the_final_normed_patch_tokens():
    net = _xs().eval()
    x = torch.randn(3, 1, 64, 64)
    features = net.features(x)
    assert features.shape == (3, net.feature_dim) == (3, 64)
    tokens = net.encoder.forward_features(x)  # (B, N, D) after the final norm
    assert tokens.shape == (3, 64, 64)
    torch.testing.assert_close(features, tokens.mean(dim=1))


def test_vit_family_sizes_and_registration():
    assert {"vit_tiny", "vit_small", "vit_xs"} <= set(list_nets("vit_*"))
    net = _xs()
    assert (net.family, net.patch_size, net.downsampling, net.feature_dim) == ("vit", 8, 8, 64)
    assert net.finetune_optim.optimizer == "adamw" and net.layer_decay == 0.75
    net.check_input_size(64)
    with pytest.raises(ValueError, match="not divisible by 8"):
        net.check_input_size(36)


def test_token_maps_come_from_evenly_spaced_blocks():
    assert token_block_indices(12, 4) == [2, 5, 8, 11]  # UNETR's blocks 3, 6, 9, 12
    assert token_block_indices(4, 3) == [0, 2, 3]
    with pytest.raises(ValueError, match="depth 2"):
        token_block_indices(2, 3)


def test_state_dict_splits_into_encoder_decoder_and_head():
    keys = list(_xs().state_dict())
    assert {k.split(".")[0] for k in keys} == {"encoder", "decoder", "head"}
    assert "encoder.pos_embed" in keys and "encoder.blocks.3.attn.qkv.weight" in keys
    assert "encoder.cls_token" not in keys


def test_gradients_reach_encoder_decoder_and_head():
    net = _xs().train()
    images, labels = _square_batch(2, 32, seed=0)
    deep_supervised_loss(net(images), labels, torch.ones(2, 4, dtype=torch.bool)).backward()
    for part in (
        "encoder.patch_embed.proj.weight",
        "encoder.pos_embed",
        "encoder.blocks.0.attn.qkv.weight",
        "encoder.blocks.3.mlp.fc2.weight",
        "decoder.stem.0.weight",
        "decoder.skips.0.0.weight",
        "decoder.bottleneck_up.weight",
        "head.convs.2.weight",
    ):
        grad = dict(net.named_parameters())[part].grad
        assert grad is not None and grad.abs().sum() > 0, part


def test_adamw_steps_with_layer_decay_lower_the_harness_loss_on_bright_squares():
    net = _xs().train()
    images, labels = _square_batch(4, 32, seed=1)
    annotated = torch.ones(4, 4, dtype=torch.bool)
    cfg = OptimConfig(optimizer="adamw", lr=3e-3, weight_decay=0.05)
    groups = net.param_groups(cfg.weight_decay)
    optimizer = build_optimizer(groups, cfg, CPU)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * group["lr_scale"]  # as the harness does
    losses = []
    for _ in range(12):
        loss = deep_supervised_loss(net(images), labels, annotated)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


# --------------------------------------------------------------------------- layer decay


def test_param_groups_scale_lr_by_layer_depth_and_skip_decay_on_biases_norms_pos_embed():
    net = _xs()  # 4 blocks: layers 0 .. 5
    groups = net.param_groups(weight_decay=0.05, layer_decay=0.75)
    by_id = {id(p): g for g in groups for p in g["params"]}
    names = dict(net.named_parameters())
    assert len(by_id) == sum(len(g["params"]) for g in groups) == len(names)
    expected = {
        "encoder.patch_embed.proj.weight": (0.75**5, 0.05),
        "encoder.patch_embed.proj.bias": (0.75**5, 0.0),
        "encoder.pos_embed": (0.75**5, 0.0),
        "encoder.blocks.0.attn.qkv.weight": (0.75**4, 0.05),
        "encoder.blocks.0.norm1.weight": (0.75**4, 0.0),
        "encoder.blocks.1.mlp.fc1.bias": (0.75**3, 0.0),
        "encoder.blocks.2.attn.proj.weight": (0.75**2, 0.05),
        "encoder.blocks.3.mlp.fc2.weight": (0.75, 0.05),
        "encoder.norm.weight": (1.0, 0.0),
        "decoder.stem.0.weight": (1.0, 0.05),
        "decoder.stem.1.weight": (1.0, 0.0),  # BatchNorm
        "decoder.bottleneck_up.weight": (1.0, 0.05),
        "head.convs.0.weight": (1.0, 0.05),
        "head.convs.0.bias": (1.0, 0.0),
    }
    for name, (scale, decay) in expected.items():
        group = by_id[id(names[name])]
        assert group["lr_scale"] == pytest.approx(scale), name
        assert group["weight_decay"] == decay, name
    no_decay = {n for n, p in names.items() if by_id[id(p)]["weight_decay"] == 0.0}
    assert no_decay == {n for n, p in names.items() if p.ndim == 1 or n == "encoder.pos_embed"}
    assert len(groups) == 12  # 6 layers x (decay, no decay)
    assert groups[0]["lr_scale"] == 1.0  # the lr the harness logs


def test_param_groups_default_to_the_class_layer_decay_and_one_means_no_decay():
    net = _xs()
    default = {g["lr_scale"] for g in net.param_groups(0.05)}
    assert min(default) == pytest.approx(0.75**5)
    assert {g["lr_scale"] for g in net.param_groups(0.05, layer_decay=1.0)} == {1.0}


# --------------------------------------------------------------------------- MAE


@pytest.mark.parametrize("size,ratio", [(64, 0.75), (32, 0.75), (32, 0.6)])
def test_mae_encoder_blocks_see_exactly_the_kept_tokens(size, ratio):
    net = _xs().train()
    decoder = MAEDecoder(net.feature_dim, net.patch_size)
    n_tokens = (size // 8) ** 2
    seen = []
    net.encoder.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    mae_loss(
        net,
        decoder,
        torch.randn(2, 1, size, size),
        ratio,
        generator=torch.Generator().manual_seed(0),
    )
    n_keep = n_tokens - math.floor(ratio * n_tokens)
    assert seen == [torch.Size([2, n_keep, 64])]
    assert n_keep == n_tokens - num_masked(n_tokens, ratio)


def test_mae_encoder_on_all_tokens_in_any_order_equals_the_full_forward_permuted():
    net = _xs().eval()
    x = torch.randn(2, 1, 32, 32)
    full = net.encoder.forward_features(x)  # (2, 16, 64)
    order = torch.stack(
        [torch.randperm(16, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    )
    tokens = net.forward_mae_encoder(x, order)
    torch.testing.assert_close(
        tokens, full.gather(1, order[..., None].expand(-1, -1, 64)), rtol=1e-4, atol=1e-5
    )


def test_mae_encoder_rejects_keep_indices_of_another_batch():
    net = _xs()
    with pytest.raises(ValueError, match="expected \\(B, n_keep\\)"):
        net.forward_mae_encoder(torch.randn(2, 1, 32, 32), torch.zeros(3, 4, dtype=torch.long))


def test_mae_decoder_puts_visible_tokens_and_mask_tokens_back_in_patch_order():
    torch.manual_seed(0)
    decoder = MAEDecoder(encoder_dim=8, patch_size=2, embed_dim=16, depth=0).eval()
    token_mask = random_token_mask(2, 9, 0.75, torch.Generator().manual_seed(3))
    visible = torch.randn(2, 3, 8)  # 9 - ⌊0.75 · 9⌋ = 3 kept
    out = decoder(visible, token_mask.restore, (3, 3))
    assert out.shape == (2, 9, 4)
    rows, cols = torch.arange(9.0) // 3, torch.arange(9.0) % 3  # row-major grid positions
    for b in range(2):
        for j, k in enumerate(token_mask.keep[b].tolist()):
            expected = decoder.pred(
                decoder.norm(decoder.embed(visible[b, j]) + _sincos(rows[k], cols[k], 16))
            )
            torch.testing.assert_close(out[b, k], expected)
        for k in token_mask.masked[b].tolist():
            expected = decoder.pred(
                decoder.norm(decoder.mask_token[0, 0] + _sincos(rows[k], cols[k], 16))
            )
            torch.testing.assert_close(out[b, k], expected)


def _sincos(row: torch.Tensor, col: torch.Tensor, dim: int) -> torch.Tensor:
    """The 2D sin-cos embedding of one grid position, written out: sin(row·f), sin(col·f),
    cos(row·f), cos(col·f) with ``f_i = 10000^(−i/(dim/4))`` (MAE's, up to channel order)."""
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    return torch.cat(
        [
            torch.sin(row * freqs),
            torch.sin(col * freqs),
            torch.cos(row * freqs),
            torch.cos(col * freqs),
        ]
    )


def test_masked_patch_loss_equals_hand_value_and_ignores_kept_patches():
    prediction = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 3.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False, False]])
    # masked patches: mean((1, 1)²) = 1 and mean((2, 0)²) = 2 -> 1.5
    assert masked_patch_loss(prediction, target, mask).item() == pytest.approx(1.5)
    changed = target.clone()
    changed[0, 2:] = -7.0  # kept patches only
    assert masked_patch_loss(prediction, changed, mask).item() == pytest.approx(1.5)
    changed[0, 1] = 0.0  # a masked patch
    assert masked_patch_loss(prediction, changed, mask).item() == pytest.approx(0.5)


def test_norm_pix_targets_are_normalised_per_patch_with_the_unbiased_variance():
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    var = 5.0 / 3.0  # unbiased variance of 1..4
    normalised = (target - 2.5) / math.sqrt(var + 1e-6)
    exact = masked_patch_loss(normalised, target, mask, norm_pix=True).item()
    assert exact == pytest.approx(0.0, abs=1e-8)
    zero_pred = masked_patch_loss(torch.zeros(1, 1, 4), target, mask, norm_pix=True).item()
    assert zero_pred == pytest.approx(0.75 * var / (var + 1e-6))


def test_mae_loss_is_fixed_by_its_generator():
    net = _xs()
    decoder = MAEDecoder(net.feature_dim, net.patch_size)
    images = torch.randn(2, 1, 32, 32)
    first, again, other = (
        mae_loss(net, decoder, images, generator=torch.Generator().manual_seed(seed))
        for seed in (0, 0, 1)
    )
    assert first.item() == again.item() != other.item()


def test_mae_steps_lower_the_reconstruction_loss():
    net = _xs().train()
    torch.manual_seed(1)
    decoder = MAEDecoder(net.feature_dim, net.patch_size, embed_dim=32)
    images, _ = _square_batch(4, 32, seed=2)
    params = list(net.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)
    losses = []
    for step in range(15):
        loss = mae_loss(
            net, decoder, images, norm_pix=False, generator=torch.Generator().manual_seed(step)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.6 * sum(losses[:3]), losses


# --------------------------------------------------------------------------- GPU-sized nets


def test_vit_tiny_at_224_builds_and_segments_one_image():
    torch.manual_seed(0)
    net = create_net("vit_tiny", img_size=224).eval()
    assert net.encoder.pos_embed.shape == (1, 196, 192) and len(net.encoder.blocks) == 12
    assert net.encoder.blocks[0].attn.num_heads == 3
    with torch.no_grad():
        assert net(torch.randn(1, 1, 224, 224)).shape == (1, 4, 224, 224)


def test_vit_small_at_224_builds_with_384_wide_tokens():
    torch.manual_seed(0)
    net = create_net("vit_small", img_size=224)
    heads = net.encoder.blocks[0].attn.num_heads
    assert (net.feature_dim, len(net.encoder.blocks), heads) == (384, 12, 6)
    assert net.encoder.pos_embed.shape == (1, 196, 384)
    assert net.token_blocks == [2, 5, 8, 11]
