"""`pcl`: the positive mask, the supervised NT-Xent against lightly and by hand, a short run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.loss import NTXentLoss

from cmrbench.methods import get_method
from cmrbench.methods.base import PretrainBatch
from cmrbench.methods.parts import nt_xent_loss
from cmrbench.methods.pcl import PCL, position_positive_mask
from support.method_checks import (
    blob_slices,
    build_method,
    first_and_last_mean,
    make_step,
    short_pretraining_losses,
)


def test_positives_are_pairs_strictly_closer_than_0_1_plus_both_views_of_a_slice() -> None:
    # 0.0 and 0.1 are exactly the threshold apart in float32 (0.1f − 0.0f == 0.1f): not positives
    # 0.09375 = 3/32 is exact; it is within 0.1 of both 0.0 and 0.1
    position = torch.tensor([0.0, 0.1, 0.25, 0.09375])
    close = torch.tensor(
        [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool
    )  # image level; diagonal: same slice
    eye = torch.eye(4, dtype=torch.bool)
    expected = torch.cat([torch.cat([close & ~eye, close], 1), torch.cat([close, close & ~eye], 1)])
    assert torch.equal(position_positive_mask(position, 0.1), expected)


def test_two_views_of_one_slice_are_positives_whatever_the_threshold() -> None:
    mask = position_positive_mask(torch.tensor([0.0, 1e-6, 2e-6]), threshold=1e-9)
    assert torch.equal(
        mask,
        torch.tensor(
            [
                [0, 0, 0, 1, 0, 0],
                [0, 0, 0, 0, 1, 0],
                [0, 0, 0, 0, 0, 1],
                [1, 0, 0, 0, 0, 0],
                [0, 1, 0, 0, 0, 0],
                [0, 0, 1, 0, 0, 0],
            ],
            dtype=torch.bool,
        ),
    )


def test_positive_mask_rejects_a_non_positive_threshold() -> None:
    with pytest.raises(ValueError, match="threshold 0"):
        position_positive_mask(torch.tensor([0.0, 0.5]), 0)


def test_pcl_loss_equals_lightly_ntxent_when_no_two_slices_are_within_0_1() -> None:
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    positives = position_positive_mask(torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), 0.1)
    ours = nt_xent_loss(z0, z1, 0.1, positives)
    assert abs(ours.item() - NTXentLoss(temperature=0.1)(z0, z1).item()) < 1e-5


def test_pcl_loss_equals_the_supervised_formula_computed_by_hand() -> None:
    z0 = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    z1 = np.array([[0.8, 0.6], [1.0, 1.0], [-1.0, 0.5]])
    position = np.array([0.0, 0.05, 0.5])
    tau = 0.1
    z = np.concatenate([z0, z1])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / tau
    pos = np.concatenate([position, position])
    per_view = []
    for i in range(6):
        log_denominator = np.log(sum(np.exp(sim[i, k]) for k in range(6) if k != i))
        positives = [j for j in range(6) if j != i and abs(pos[i] - pos[j]) < 0.1]
        per_view.append(-np.mean([sim[i, j] - log_denominator for j in positives]))
    expected = float(np.mean(per_view))
    mask = position_positive_mask(torch.tensor(position, dtype=torch.float32), 0.1)
    ours = nt_xent_loss(torch.tensor(z0), torch.tensor(z1), tau, mask)
    assert ours.item() == pytest.approx(expected, abs=1e-5)


def test_pcl_loss_depends_on_position_but_not_on_subject_or_frame() -> None:
    method = build_method(PCL, hidden_dim=32, out_dim=16)
    pool = blob_slices(8)

    def loss_of(batch: PretrainBatch) -> float:
        return method.loss(batch, make_step(seed=5)).item()

    reference = loss_of(pool)
    relabelled = PretrainBatch(pool.images, pool.position, pool.subject.flip(0), pool.frame + 3)
    assert loss_of(relabelled) == reference
    moved = PretrainBatch(pool.images, torch.zeros(8), pool.subject, pool.frame)
    assert loss_of(moved) != pytest.approx(reference, abs=1e-3)


def test_pcl_declares_the_studys_settings() -> None:
    cls = get_method("pcl")
    assert cls is PCL
    optim = cls.optim
    assert (optim.lr, optim.momentum, optim.weight_decay, optim.schedule) == (
        0.1,
        0.9,
        1e-5,
        "cosine",
    )
    assert cls.batch_size == 64
    config = cls.resolve_config()
    assert config.temperature == 0.1 and config.position_threshold == 0.1
    assert cls.transferred_parts("cnn") == ("encoder",) == cls.transferred_parts("vit")


def test_short_pcl_pretraining_lowers_the_loss() -> None:
    method = build_method(PCL, hidden_dim=64, out_dim=32)
    first, last = first_and_last_mean(short_pretraining_losses(method, blob_slices(64)))
    assert last < first
