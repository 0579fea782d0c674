"""`simclr`: its settings, the head, and a short pretraining run (NT-Xent itself is tested
with the other parts in test_parts.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cmrbench.methods import get_method
from cmrbench.methods.simclr import SimCLR
from support.method_checks import (
    blob_slices,
    build_method,
    first_and_last_mean,
    short_pretraining_losses,
)


def test_simclr_declares_the_studys_settings() -> None:
    cls = get_method("simclr")
    assert cls is SimCLR
    assert (
        cls.optim.optimizer,
        cls.optim.lr,
        cls.optim.momentum,
        cls.optim.weight_decay,
        cls.optim.schedule,
    ) == ("sgd", 0.1, 0.9, 1e-4, "cosine")
    assert (cls.batch_size, cls.epochs) == (224, 100)
    assert cls.resolve_config().temperature == 0.1
    assert cls.transferred_parts("cnn") == ("encoder",) == cls.transferred_parts("vit")


def test_simclr_head_is_an_mlp_of_three_linear_layers_with_relu_from_the_pooled_features() -> None:
    method = build_method(SimCLR)
    layers = list(method.projector)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    sizes = [
        (layer.in_features, layer.out_features) for layer in layers if isinstance(layer, nn.Linear)
    ]
    assert sizes == [(method.net.feature_dim, 512), (512, 512), (512, 512)]
    images = torch.randn(3, 1, 32, 32)
    method.eval()
    assert torch.equal(method.embed(images), method.projector(method.net.features(images)))


def test_simclr_rejects_unknown_and_invalid_hyper_parameters() -> None:
    with pytest.raises(ValueError, match="temprature"):
        build_method(SimCLR, temprature=0.1)
    with pytest.raises(ValueError, match="temperature -1"):
        build_method(SimCLR, temperature=-1)


def test_short_simclr_pretraining_lowers_the_loss() -> None:
    method = build_method(SimCLR, hidden_dim=64, out_dim=32)
    first, last = first_and_last_mean(short_pretraining_losses(method, blob_slices(64)))
    assert last < first
