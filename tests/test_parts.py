"""The methods' parts library (heads, momentum teacher, cosine schedule, NT-Xent), the one
optimizer step, the optimizer registry and the BYOL plugin's LARS, against values computed
by hand and against lightly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightly.loss import NTXentLoss
from lightly.models.utils import update_momentum as lightly_update_momentum
from lightly.utils.lars import LARS as LightlyLARS
from torch import nn

from cmrbench.methods import get_method
from cmrbench.methods.parts import (
    DINOHead,
    NormalizedLinear,
    byol_projection_head,
    mlp_head,
    momentum_copy,
    momentum_schedule,
    nt_xent_loss,
    simclr_projection_head,
    update_momentum,
    view_pair_mask,
)
from cmrbench.optim import OPTIMIZERS, OptimConfig, build_optimizer, cosine_schedule, optimizer_step
from cmrbench.plugins import load_plugins, unload_plugins

CPU = torch.device("cpu")
BYOL_DIR = Path(__file__).resolve().parents[1] / "plugins" / "byol"


# --------------------------------------------------------------------------- heads


def test_simclr_head_is_linear_relu_linear_relu_linear_of_the_given_sizes() -> None:
    head = simclr_projection_head(8, 16, 4)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == [
        (8, 16),
        (16, 16),
        (16, 4),
    ]
    assert head(torch.randn(5, 8)).shape == (5, 4)


def test_byol_head_is_linear_batchnorm_relu_linear() -> None:
    head = byol_projection_head(8, 32, 6)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[1].num_features == 32
    assert head(torch.randn(5, 8)).shape == (5, 6)


def test_dino_head_ends_in_unit_norm_rows_and_has_the_requested_sizes() -> None:
    head = DINOHead(8, 32, 16, 64)
    assert [type(m) for m in head.mlp] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.GELU,
        nn.Linear,
        nn.BatchNorm1d,
        nn.GELU,
        nn.Linear,
    ]
    assert head(torch.randn(5, 8)).shape == (5, 64)
    assert all(not layer.bias.any() for layer in head.mlp if isinstance(layer, nn.Linear))
    last = NormalizedLinear(2, 2)
    last.weight.data = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.allclose(last(torch.tensor([[1.0, 1.0]])), torch.tensor([[0.6 + 0.8, 1.0]]))


def test_mlp_head_rejects_fewer_than_two_sizes() -> None:
    with pytest.raises(ValueError, match=r"\(8,\)"):
        mlp_head((8,))


# --------------------------------------------------------------------------- momentum teacher


def test_momentum_copy_has_the_same_weights_no_gradient_and_its_own_storage() -> None:
    online = nn.Linear(3, 2)
    teacher = momentum_copy(online)
    assert torch.equal(teacher.weight, online.weight) and not teacher.weight.requires_grad
    online.weight.data.add_(1.0)
    assert not torch.equal(teacher.weight, online.weight)


def test_update_momentum_moves_the_teacher_a_quarter_of_the_way_at_momentum_0_75() -> None:
    online, teacher = nn.Linear(1, 1), nn.Linear(1, 1)
    online.weight.data.fill_(3.0), online.bias.data.fill_(-1.0)
    teacher.weight.data.fill_(1.0), teacher.bias.data.fill_(1.0)
    update_momentum(online, teacher, 0.75)
    assert teacher.weight.item() == 0.75 * 1.0 + 0.25 * 3.0 == 1.5
    assert teacher.bias.item() == 0.75 * 1.0 - 0.25 * 1.0 == 0.5
    assert online.weight.item() == 3.0


def test_update_momentum_equals_lightlys() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ours, theirs = momentum_copy(online), momentum_copy(online)
    for p in online.parameters():
        p.data.normal_()
    update_momentum(online, ours, 0.996)
    lightly_update_momentum(online, theirs, 0.996)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-7)


def test_momentum_schedule_rises_from_0_996_to_1_by_a_cosine() -> None:
    assert momentum_schedule(0, 100, 0.996) == pytest.approx(0.996)
    assert momentum_schedule(50, 100, 0.996) == pytest.approx(0.998)
    assert momentum_schedule(100, 100, 0.996) == 1.0
    quarter = 1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2
    assert momentum_schedule(25, 100, 0.996) == pytest.approx(quarter)


def test_cosine_schedule_endpoints_and_midpoint_in_both_directions() -> None:
    assert cosine_schedule(0, 10, 1.0, 0.0) == 1.0 and cosine_schedule(10, 10, 1.0, 0.0) == 0.0
    assert cosine_schedule(5, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert cosine_schedule(0, 10, 0.2, 0.6) == pytest.approx(0.2)
    assert cosine_schedule(10, 10, 0.2, 0.6) == pytest.approx(0.6)
    assert cosine_schedule(0, 0, 0.2, 0.6) == pytest.approx(0.2)  # 0 steps counts as 1


# --------------------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize(("n", "dim", "seed"), [(2, 3, 0), (8, 16, 1), (32, 128, 2)])
def test_nt_xent_equals_lightly_ntxentloss_at_temperature_0_1(n: int, dim: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
    ours = nt_xent_loss(z0, z1, temperature=0.1)
    reference = NTXentLoss(temperature=0.1)(z0, z1)
    assert abs(ours.item() - reference.item()) < 1e-5


def test_nt_xent_equals_the_formula_computed_by_hand_on_two_images() -> None:
    z0 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    z1 = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    tau = 0.1
    z = np.concatenate([z0, z1])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / tau
    partner = [2, 3, 0, 1]
    per_view = [
        -(sim[i, partner[i]] - np.log(sum(np.exp(sim[i, k]) for k in range(4) if k != i)))
        for i in range(4)
    ]
    expected = float(np.mean(per_view))
    ours = nt_xent_loss(torch.tensor(z0), torch.tensor(z1), temperature=tau)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


def test_view_pair_mask_pairs_row_i_with_row_i_plus_n() -> None:
    expected = torch.tensor(
        [[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(view_pair_mask(2), expected)


def test_nt_xent_rejects_a_non_positive_temperature_and_mismatched_views() -> None:
    with pytest.raises(ValueError, match="temperature 0"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=0)
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(5, 3), temperature=0.1)


# --------------------------------------------------------------------------- the optimizer step


def test_optimizer_step_scales_the_lr_then_runs_backward_the_hooks_and_the_step_in_order() -> None:
    weight = nn.Parameter(torch.tensor([1.0]))
    optimizer = build_optimizer(
        [{"params": [weight], "lr_scale": 0.5}],
        OptimConfig(lr=0.4, momentum=0.0, weight_decay=0.0),
        CPU,
    )
    seen = []
    optimizer_step(
        optimizer,
        (weight**2).sum(),
        schedule_factor=0.5,
        before_step=lambda: seen.append(("before", weight.grad.item(), weight.item())),
        after_step=lambda: seen.append(("after", weight.item())),
    )
    # lr 0.4 · 0.5 · 0.5 = 0.1; gradient 2w = 2; w ← 1 − 0.1 · 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert seen == [("before", 2.0, 1.0), ("after", pytest.approx(0.8))]
    optimizer_step(optimizer, (weight**2).sum(), schedule_factor=1.0)  # gradients were zeroed
    assert weight.item() == pytest.approx(0.8 - 0.2 * 1.6)


def test_an_unknown_optimizer_is_rejected_naming_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'.*adamw, sgd"):
        OptimConfig(optimizer="lamb")


def test_an_optimizer_is_called_with_lr_weight_decay_and_exactly_the_settings_it_reads() -> None:
    calls = []

    @OPTIMIZERS.register(reads=("betas",))
    def recording_adam_for_test(params, device, **settings):
        calls.append(settings)
        return torch.optim.Adam(params, lr=settings["lr"], betas=settings["betas"])

    try:
        optimizer = build_optimizer(
            [nn.Parameter(torch.zeros(2))],
            OptimConfig(optimizer="recording_adam_for_test", lr=0.3, weight_decay=0.01),
            CPU,
        )
        assert calls == [{"lr": 0.3, "weight_decay": 0.01, "betas": (0.9, 0.999)}]
        assert type(optimizer) is torch.optim.Adam
        assert optimizer.param_groups[0]["initial_lr"] == 0.3
    finally:
        OPTIMIZERS.remove("recording_adam_for_test")


def test_a_read_setting_left_unset_takes_its_default_and_one_not_read_stays_unset() -> None:
    sgd, adamw = OptimConfig(optimizer="sgd"), OptimConfig(optimizer="adamw")
    assert (sgd.momentum, sgd.nesterov, sgd.betas) == (0.9, False, None)
    assert (adamw.momentum, adamw.nesterov, adamw.betas) == (None, None, (0.9, 0.999))
    assert OptimConfig(optimizer="sgd", momentum=0.9) == sgd
    assert sgd.reads == ("momentum", "nesterov") and adamw.reads == ("betas",)


@pytest.mark.parametrize(
    ("optimizer", "setting", "reads"),
    [
        ("sgd", {"betas": (0.9, 0.95)}, "lr, weight_decay, momentum, nesterov"),
        ("adamw", {"momentum": 0.9}, "lr, weight_decay, betas"),
        ("adamw", {"nesterov": False}, "lr, weight_decay, betas"),
    ],
)
def test_a_setting_the_optimizer_does_not_read_is_refused_naming_what_it_reads(
    optimizer, setting, reads
) -> None:
    (name,) = setting
    with pytest.raises(
        ValueError, match=f"optimizer '{optimizer}' does not read {name}; it reads {reads} "
    ):
        OptimConfig(optimizer=optimizer, **setting)


def test_an_optimizer_must_declare_the_settings_it_reads_from_the_known_ones() -> None:
    def factory(params, device, **settings):
        return torch.optim.SGD(params, lr=settings["lr"])

    with pytest.raises(TypeError, match="must be registered with metadata reads"):
        OPTIMIZERS.register(factory)
    with pytest.raises(
        TypeError,
        match=r"reads=\('momentun',\) must be a tuple .* from "
        r"momentum, nesterov, betas",
    ):
        OPTIMIZERS.register(reads=("momentun",))(factory)
    assert "factory" not in OPTIMIZERS


# --------------------------------------------------------------------------- BYOL's LARS


@pytest.fixture
def lars():
    """The BYOL plugin loaded (it registers ``lars``), unloaded after the test."""
    load_plugins([BYOL_DIR])
    yield OPTIMIZERS.get("lars")
    unload_plugins(BYOL_DIR)


def test_lars_single_step_equals_the_hand_computed_trust_ratio_update(lars) -> None:
    layer = nn.Linear(2, 1)
    layer.weight.data = torch.tensor([[3.0, 4.0]])  # ‖w‖ = 5
    layer.bias.data = torch.tensor([2.0])
    optimizer = build_optimizer(
        list(layer.parameters()),
        OptimConfig(optimizer="lars", lr=0.1, momentum=0.9, weight_decay=0.1, schedule="constant"),
        CPU,
    )
    # gradients: weight (0.3, 0.4) with ‖g‖ = 0.5, bias 0.5
    loss = (layer.weight * torch.tensor([[0.3, 0.4]])).sum() + 0.5 * layer.bias.sum()
    optimizer_step(optimizer, loss)
    # local lr = 0.001 · 5 / (0.5 + 0.1 · 5) = 0.005;
    # update = 0.005 · (g + 0.1 · w) = (0.003, 0.004)
    assert torch.allclose(
        layer.weight, torch.tensor([[3.0 - 0.1 * 0.003, 4.0 - 0.1 * 0.004]]), atol=1e-7, rtol=0
    )
    # the bias is excluded from adaptation and decay: plain SGD, 2 − 0.1 · 0.5
    assert layer.bias.item() == pytest.approx(1.95, abs=1e-7)


def test_lars_equals_lightlys_lars_with_bias_and_norm_in_a_group_without_decay(lars) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    twin = momentum_copy(model).requires_grad_(True)
    ours = build_optimizer(
        list(model.parameters()),
        OptimConfig(optimizer="lars", lr=0.2, momentum=0.9, weight_decay=1e-2),
        CPU,
    )
    params = list(twin.parameters())
    theirs = LightlyLARS(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": 1e-2},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=0.2,
        momentum=0.9,
        trust_coefficient=0.001,
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 3, generator=gen)
        optimizer_step(ours, ((model(x) - y) ** 2).mean())
        theirs.zero_grad()
        ((twin(x) - y) ** 2).mean().backward()
        theirs.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_byol_trains_with_lars_at_the_papers_settings_on_both_families(lars) -> None:
    byol = get_method("byol")
    for family in ("cnn", "vit"):
        optim = byol.optim_for(family)
        assert (optim.optimizer, optim.lr, optim.momentum, optim.weight_decay) == (
            "lars",
            0.2 * 64 / 256,
            0.9,
            1.5e-6,
        )


def test_lars_reads_momentum_and_refuses_nesterov_and_betas(lars) -> None:
    assert OptimConfig(optimizer="lars").momentum == 0.9
    for setting in ({"nesterov": True}, {"betas": (0.9, 0.99)}):
        with pytest.raises(
            ValueError,
            match="optimizer 'lars' does not read .* it reads lr, weight_decay, momentum ",
        ):
            OptimConfig(optimizer="lars", **setting)


def test_lars_is_unknown_until_the_byol_plugin_is_loaded() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'lars'"):
        OptimConfig(optimizer="lars")
