"""Pretraining schedules follow the run length (warm-ups are fractions of the run), the lr
never falls below ``min_lr``, and ``no_decay_bias_norm`` exempts exactly the 1-D params."""

from __future__ import annotations

import math

import pytest
import torch

from cmrbench.benchmark.grid import load_grid, override, plan_grid
from cmrbench.methods.dino import DINO, teacher_temperature
from cmrbench.nets import create_net
from cmrbench.optim import OptimConfig, build_optimizer, decay_groups, lr_factor
from support.method_checks import build_method, make_step

POOL_SLICES = 90_618  # the study's pretraining pool


def _dino_spec(epochs_scale: float):
    grid = override(load_grid("paper"), methods="dino", budgets="10", seeds="0")
    (spec,) = plan_grid(grid, epochs_scale=epochs_scale).pretrain
    return spec


@pytest.mark.parametrize("epochs_scale", [1.0, 0.1])
def test_dino_warm_ups_keep_their_fractions_of_the_run_at_any_epochs_scale(epochs_scale) -> None:
    spec = _dino_spec(epochs_scale)
    steps_per_epoch = POOL_SLICES // spec.batch_size
    total = int(round(spec.epochs * steps_per_epoch))
    assert spec.epochs == pytest.approx(100 * epochs_scale)
    # lr: linear warm-up over the first 10 % of the steps (DINO's 10 of 100 epochs), then cosine
    warmup = round(0.1 * total)
    assert lr_factor(spec.optim, warmup // 2 - 1, total) == pytest.approx((warmup // 2) / warmup)
    assert lr_factor(spec.optim, warmup - 1, total) == 1.0
    midway = warmup + (total - warmup) // 2
    floor = 1e-6 / 0.0075
    assert lr_factor(spec.optim, midway, total) == pytest.approx(
        floor + (1 - floor) * 0.5, abs=1e-3
    )
    # teacher temperature: 0.02 → 0.04 over the first 30 % (DINO's 30 of 100 epochs)
    cfg = DINO.resolve_config(dict(spec.hparams))

    def temperature(step: int) -> float:
        return teacher_temperature(
            make_step(step, total, steps_per_epoch).fraction,
            cfg.warmup_teacher_temperature,
            cfg.teacher_temperature,
            cfg.warmup_teacher_temperature_fraction,
        )

    assert temperature(0) == 0.02
    assert temperature(int(0.15 * total)) == pytest.approx(0.03, abs=1e-4)
    assert temperature(int(0.3 * total) + 1) == 0.04


def test_lr_never_falls_below_min_lr_and_the_cosine_ends_there() -> None:
    optim = DINO.optim
    total = 1000
    lrs = [optim.lr * lr_factor(optim, step, total) for step in range(total)]
    assert min(lrs) >= optim.min_lr == 1e-6
    assert max(lrs) == pytest.approx(optim.lr) and lrs.index(max(lrs)) == 99
    last = 1e-6 + (0.0075 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 899 / 900))  # DINO's formula
    assert lrs[-1] == pytest.approx(last, rel=1e-9) and last - 1e-6 < 3e-8
    late_warmup = OptimConfig(lr=1.0, min_lr=0.5, warmup_fraction=0.5)
    assert lr_factor(late_warmup, 0, 100) == 0.5  # the warm-up starts no lower


def test_no_decay_groups_hold_exactly_the_bias_and_norm_parameters() -> None:
    method = build_method(DINO, hidden_dim=32, bottleneck_dim=16, out_dim=64)
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, DINO.optim, torch.device("cpu"))
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert set(by_decay) == {0.0, 1e-4}
    assert by_decay[0.0] == {id(p) for p in params if p.ndim == 1}
    assert by_decay[1e-4] == {id(p) for p in params if p.ndim >= 2}
    names = {id(p): n for n, p in method.named_parameters()}
    assert {names[i].rsplit(".", 1)[-1] for i in by_decay[0.0]} == {
        "weight",
        "bias",
    }  # norms, biases
    with_decay = build_optimizer(params, OptimConfig(weight_decay=1e-4), torch.device("cpu"))
    assert len(with_decay.param_groups) == 1


def test_no_decay_split_keeps_layer_wise_lr_scales_of_vit_groups() -> None:
    net = create_net("vit_xs", img_size=32)
    groups = decay_groups(net.param_groups(0.05, 0.75), 0.05)
    assert {(g["lr_scale"], g["weight_decay"]) for g in groups} == {
        (g["lr_scale"], g["weight_decay"]) for g in net.param_groups(0.05, 0.75)
    }
    assert all(p.ndim >= 2 for g in groups if g["weight_decay"] for p in g["params"])


def test_adamw_uses_the_configured_betas() -> None:
    optim = OptimConfig(optimizer="adamw", lr=1e-3, betas=(0.9, 0.95))
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], optim, torch.device("cpu"))
    assert optimizer.defaults["betas"] == (0.9, 0.95)
