"""`simclr`: NT-Xent against lightly and by hand, the head, and a short pretraining run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.loss import NTXentLoss
from method_checks import blob_slices, build_method, first_and_last_mean, short_pretraining_losses
from torch import nn

from cmrbench.methods import get_method
from cmrbench.methods.simclr import SimCLR, nt_xent_loss, view_pair_mask


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
    per_view = [-(sim[i, partner[i]] - np.log(sum(np.exp(sim[i, k]) for k in range(4) if k != i)))
                for i in range(4)]
    expected = float(np.mean(per_view))
    ours = nt_xent_loss(torch.tensor(z0), torch.tensor(z1), temperature=tau)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


def test_view_pair_mask_pairs_row_i_with_row_i_plus_n() -> None:
    expected = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(view_pair_mask(2), expected)


def test_nt_xent_rejects_a_non_positive_temperature_and_mismatched_views() -> None:
    with pytest.raises(ValueError, match="temperature 0"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=0)
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(5, 3), temperature=0.1)


def test_simclr_declares_the_studys_settings() -> None:
    cls = get_method("simclr")
    assert cls is SimCLR
    assert (cls.optim.optimizer, cls.optim.lr, cls.optim.momentum, cls.optim.weight_decay,
            cls.optim.schedule) == ("sgd", 0.1, 0.9, 1e-4, "cosine")
    assert (cls.batch_size, cls.epochs) == (224, 100)
    assert cls.resolve_config().temperature == 0.1
    assert cls.transferred_parts("cnn") == ("encoder",) == cls.transferred_parts("vit")


def test_simclr_head_is_an_mlp_of_three_linear_layers_with_relu_from_the_pooled_features() -> None:
    method = build_method(SimCLR)
    layers = list(method.projector)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    sizes = [(layer.in_features, layer.out_features) for layer in layers if isinstance(layer, nn.Linear)]
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
