"""The harness: the study's loss, partial labels, schedules, the loop and its resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cmrbench.benchmark.augment import BatchAugment
from cmrbench.benchmark.nets import create_net
from cmrbench.benchmark.optim import OptimConfig, lr_factor
from cmrbench.benchmark.store import JsonlLog
from cmrbench.benchmark.train import (LabelledSlices, deep_supervised_loss,
                                      deep_supervision_weights, finetune, seg_loss)

SGD_POLY = OptimConfig(optimizer="sgd", lr=0.01, momentum=0.99, nesterov=True,
                       weight_decay=3e-5, schedule="poly")


def _hand_loss(probs: np.ndarray, target: np.ndarray, annotated: np.ndarray) -> float:
    """0.5 CE + 0.5 (1 - mean soft Dice over annotated foreground classes), in numpy.

    probs ``(B, C, N)``, target ``(B, N)``, annotated ``(B, C)``; unannotated classes are
    merged into background for the cross-entropy.
    """
    b, c, n = probs.shape
    ce = []
    for i in range(b):
        merged = probs[i, 0] + sum(probs[i, k] for k in range(1, c) if not annotated[i, k])
        for j in range(n):
            t = target[i, j]
            ce.append(-math.log(merged[j] if t == 0 else probs[i, t, j]))
    dices = []
    for k in range(1, c):
        rows = [i for i in range(b) if annotated[i, k]]
        if not rows:
            continue
        p = np.concatenate([probs[i, k] for i in rows])
        g = np.concatenate([(target[i] == k).astype(float) for i in rows])
        dices.append((2 * (p * g).sum() + 1e-5) / (p.sum() + g.sum() + 1e-5))
    return 0.5 * float(np.mean(ce)) + 0.5 * (1 - float(np.mean(dices)))


def test_seg_loss_equals_hand_computed_ce_plus_dice_on_a_tiny_batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 2, 3, generator=gen)
    target = torch.tensor([[[0, 1, 2], [3, 0, 1]], [[2, 2, 0], [0, 3, 1]]])
    annotated = torch.ones(2, 4, dtype=torch.bool)
    probs = logits.softmax(1).reshape(2, 4, 6).numpy().astype(np.float64)
    expected = _hand_loss(probs, target.reshape(2, 6).numpy(), annotated.numpy())
    assert seg_loss(logits, target, annotated).item() == pytest.approx(expected, rel=1e-5)


def test_unannotated_class_is_merged_into_background_not_counted_as_background():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, generator=gen)
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    target[:, 1, 1] = 1
    annotated = torch.tensor([[True, True, False, False], [True, True, True, False]])
    probs = logits.softmax(1).reshape(2, 4, 9).numpy().astype(np.float64)
    expected = _hand_loss(probs, target.reshape(2, 9).numpy(), annotated.numpy())
    assert seg_loss(logits, target, annotated).item() == pytest.approx(expected, rel=1e-5)
    # Predicting an unannotated class (RV) where the label says 0 costs nothing extra.
    confident_rv = torch.full((1, 4, 3, 3), -10.0)
    confident_rv[:, 3] = 10.0
    confident_rv[0, :, 1, 1] = torch.tensor([-10.0, 10.0, -10.0, -10.0])
    loss_unknown = seg_loss(confident_rv, target[:1], annotated[:1])
    loss_known = seg_loss(confident_rv, target[:1], torch.ones(1, 4, dtype=torch.bool))
    assert loss_unknown.item() < 0.01 < loss_known.item()


def test_deep_supervision_weights_halve_and_sum_to_one():
    weights = deep_supervision_weights(6)
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] == pytest.approx(1 / (2 - 2 ** -5))
    assert all(a == pytest.approx(2 * b) for a, b in zip(weights, weights[1:]))


def test_deep_supervised_loss_weights_each_scale_with_subsampled_labels():
    gen = torch.Generator().manual_seed(2)
    outs = [torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 4, 4, generator=gen)]
    target = torch.randint(0, 4, (1, 8, 8), generator=gen)
    ann = torch.ones(1, 4, dtype=torch.bool)
    expected = (2 / 3) * seg_loss(outs[0], target, ann) + (1 / 3) * seg_loss(outs[1], target[:, ::2, ::2], ann)
    assert deep_supervised_loss(outs, target, ann).item() == pytest.approx(expected.item(), rel=1e-6)


def test_poly_schedule_matches_nnunet_formula_and_cosine_warmup():
    assert lr_factor(SGD_POLY, 0, 100) == 1.0
    assert lr_factor(SGD_POLY, 50, 100) == pytest.approx(0.5 ** 0.9)
    cosine = OptimConfig(schedule="cosine", warmup_fraction=0.2)
    assert lr_factor(cosine, 0, 100) == pytest.approx(1 / 20)
    assert lr_factor(cosine, 19, 100) == pytest.approx(1.0)
    assert lr_factor(cosine, 60, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        OptimConfig(schedule="step")


def _disk_slices(n: int = 24, size: int = 32) -> LabelledSlices:
    """Bright disks (class 1) in a darker ring (class 2) on noise: a learnable toy task."""
    gen = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, labels = [], []
    for _ in range(n):
        cy, cx = torch.randint(10, size - 10, (2,), generator=gen).tolist()
        r = float(torch.randint(4, 7, (1,), generator=gen))
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).float().sqrt()
        lab = torch.zeros(size, size, dtype=torch.uint8)
        lab[d < r + 2] = 2
        lab[d < r] = 1
        img = torch.tensor([0.0, 2.0, -0.5])[lab.long()] + 0.3 * torch.randn(size, size, generator=gen)
        images.append(img)
        labels.append(lab)
    return LabelledSlices(torch.stack(images)[:, None].half(), torch.stack(labels),
                          torch.ones(n, 4, dtype=torch.bool))


def _train(tmp_path: Path, epochs: float, name: str, checkpoint: Path | None = None):
    torch.manual_seed(0)
    net = create_net("unet2d_xs")
    log = JsonlLog(tmp_path / f"{name}.jsonl")
    finetune(net, _disk_slices(), None, epochs=epochs, batch_size=8, optim=SGD_POLY,
             augment=BatchAugment("none", 32), seed=0, device=torch.device("cpu"), log=log,
             checkpoint=checkpoint, show_progress=False)
    return net, log.records()


def test_fine_tuning_loss_falls(tmp_path):
    _, records = _train(tmp_path, 34, "falls")  # 34 epochs × 3 steps = 102 steps, 4 log lines
    losses = [r["loss"] for r in records]
    assert len(losses) == 5
    assert losses[-1] < 0.6 * losses[0]
    assert all(r["images_per_s"] > 0 and r["lr"] >= 0 for r in records)


def test_resumed_loop_gives_the_same_weights_as_an_uninterrupted_one(tmp_path):
    full, _ = _train(tmp_path, 10, "full")
    ckpt = tmp_path / "state.pt"
    # Interrupt: a run that raises after its first checkpoint, then a resumed run.
    import cmrbench.benchmark.train as train_module

    original = train_module._save_checkpoint
    calls = {"n": 0}

    def save_then_crash(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        raise KeyboardInterrupt("simulated crash after a checkpoint")

    train_module._save_checkpoint = save_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            _train(tmp_path, 10, "resumed", checkpoint=ckpt)
    finally:
        train_module._save_checkpoint = original
    assert calls["n"] == 1 and ckpt.exists()
    resumed, records = _train(tmp_path, 10, "resumed", checkpoint=ckpt)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["step"] for r in records] == sorted({r["step"] for r in records})
