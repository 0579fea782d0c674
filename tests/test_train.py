"""The harness: the study's loss, partial labels, schedules, the loop and its resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cmrbench.benchmark.losses import (
    deep_supervised_loss,
    deep_supervision_weights,
    marginal_cross_entropy,
    seg_loss,
    soft_dice_loss,
)
from cmrbench.benchmark.train import (
    LabelledSlices,
    SliceBatches,
    autocast,
    finetune,
    grad_scaler,
    precision_ran,
    pretrain,
    steps_per_epoch,
)
from cmrbench.methods import get_method
from cmrbench.nets import create_net
from cmrbench.optim import OptimConfig, build_optimizer, lr_factor, optimizer_step
from cmrbench.store import JsonlLog
from cmrbench.transforms.augment import BatchAugment

SGD_POLY = OptimConfig(
    optimizer="sgd", lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5, schedule="poly"
)


def _hand_loss(
    probs: np.ndarray, target: np.ndarray, annotated: np.ndarray, dice: str = "sample"
) -> float:
    """0.5 CE + 0.5 soft Dice loss over annotated foreground classes, in numpy loops.

    probs ``(B, C, N)``, target ``(B, N)``, annotated ``(B, C)``; unannotated classes are
    merged into background for the cross-entropy. ``sample``: 1 − Dice per image and class,
    averaged over each image's annotated classes, then over images; ``batch``: one Dice per
    class over the batch's annotated slices, averaged over classes.
    """
    b, c, n = probs.shape
    ce = []
    for i in range(b):
        merged = probs[i, 0] + sum(probs[i, k] for k in range(1, c) if not annotated[i, k])
        for j in range(n):
            t = target[i, j]
            ce.append(-math.log(merged[j] if t == 0 else probs[i, t, j]))

    def dice_of(p: np.ndarray, g: np.ndarray) -> float:
        return (2 * (p * g).sum() + 1e-5) / (p.sum() + g.sum() + 1e-5)

    if dice == "sample":
        losses = [
            np.mean(
                [
                    1 - dice_of(probs[i, k], (target[i] == k).astype(float))
                    for k in range(1, c)
                    if annotated[i, k]
                ]
            )
            for i in range(b)
        ]
        return 0.5 * float(np.mean(ce)) + 0.5 * float(np.mean(losses))
    dices = []
    for k in range(1, c):
        rows = [i for i in range(b) if annotated[i, k]]
        if rows:
            dices.append(
                dice_of(
                    np.concatenate([probs[i, k] for i in rows]),
                    np.concatenate([(target[i] == k).astype(float) for i in rows]),
                )
            )
    return 0.5 * float(np.mean(ce)) + 0.5 * (1 - float(np.mean(dices)))


@pytest.mark.parametrize("dice", ["sample", "batch"])
def test_seg_loss_equals_hand_computed_ce_plus_dice_on_a_tiny_batch(dice):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 2, 3, generator=gen)
    target = torch.tensor([[[0, 1, 2], [3, 0, 1]], [[2, 2, 0], [0, 3, 1]]])
    annotated = torch.ones(2, 4, dtype=torch.bool)
    probs = logits.softmax(1).reshape(2, 4, 6).numpy().astype(np.float64)
    expected = _hand_loss(probs, target.reshape(2, 6).numpy(), annotated.numpy(), dice)
    assert seg_loss(logits, target, annotated, dice).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dice", ["sample", "batch"])
def test_unannotated_class_is_merged_into_background_not_counted_as_background(dice):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, generator=gen)
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    target[:, 1, 1] = 1
    annotated = torch.tensor([[True, True, False, False], [True, True, True, False]])
    probs = logits.softmax(1).reshape(2, 4, 9).numpy().astype(np.float64)
    expected = _hand_loss(probs, target.reshape(2, 9).numpy(), annotated.numpy(), dice)
    assert seg_loss(logits, target, annotated, dice).item() == pytest.approx(expected, rel=1e-5)
    # Predicting an unannotated class (RV) where the label says 0 costs nothing extra.
    confident_rv = torch.full((1, 4, 3, 3), -10.0)
    confident_rv[:, 3] = 10.0
    confident_rv[0, :, 1, 1] = torch.tensor([-10.0, 10.0, -10.0, -10.0])
    loss_unknown = seg_loss(confident_rv, target[:1], annotated[:1], dice)
    loss_known = seg_loss(confident_rv, target[:1], torch.ones(1, 4, dtype=torch.bool), dice)
    assert loss_unknown.item() < 0.01 < loss_known.item()


def _ce_logit_gradient(logits: list[float], target: int, annotated: list[bool]) -> torch.Tensor:
    """d CE / d logits of one pixel (a 1 × 1 image)."""
    z = torch.tensor(logits)[None, :, None, None].requires_grad_(True)
    marginal_cross_entropy(z, torch.tensor([[[target]]]), torch.tensor([annotated])).backward()
    return z.grad[0, :, 0, 0]


def test_cross_entropy_gradient_of_a_confidently_wrong_pixel_is_minus_one_and_plus_one():
    # Background pixel predicted LV with p ≈ 1 − 4e−9: dCE/dz = p − onehot = (−1, +1, 0, 0).
    # A probability clamp at 1e−8 (log(max(p, 1e−8))) would give a zero gradient here.
    grad = _ce_logit_gradient([-10.0, 10.0, -10.0, -10.0], 0, [True] * 4)
    assert torch.allclose(grad, torch.tensor([-1.0, 1.0, 0.0, 0.0]), atol=1e-6)


def test_cross_entropy_gradient_with_a_merged_unannotated_class_splits_minus_one():
    # RV not annotated: the target "background" means background or RV, p_bg+rv = 2e / (1 + 3e)
    # with e = exp(−20); dCE/dz_k = p_k − p_k / p_bg+rv for k in {bg, RV}: −1/2 each, LV +1.
    grad = _ce_logit_gradient([-10.0, 10.0, -10.0, -10.0], 0, [True, True, True, False])
    assert torch.allclose(grad, torch.tensor([-0.5, 1.0, 0.0, -0.5]), atol=1e-6)


def test_sample_dice_equals_hand_computation_on_two_images():
    # Three classes, equal logits: every probability is 1/3. Two 1 × 2 images; s = 1e−5.
    # Image A (all annotated), target [1, 2]: LV and MYO each I = 1/3, ΣP = 2/3, ΣG = 1,
    #   Dice = (2/3 + s) / (5/3 + s).
    # Image B (MYO not annotated), target [1, 0]: LV as in A; MYO is left out (counted, its
    #   Dice would be s / (2/3 + s) ≈ 0, pulling the loss towards 0.8).
    s = 1e-5
    logits = torch.zeros(2, 3, 1, 2)
    target = torch.tensor([[[1, 2]], [[1, 0]]])
    annotated = torch.tensor([[True, True, True], [True, True, False]])
    lv = 1 - (2 / 3 + s) / (5 / 3 + s)
    assert soft_dice_loss(logits, target, annotated, "sample").item() == pytest.approx(lv, rel=1e-6)
    # Pooled over the batch instead: LV I = 2/3, ΣP = 4/3, ΣG = 2; MYO (image A only) as above.
    batch = 1 - ((4 / 3 + s) / (10 / 3 + s) + (2 / 3 + s) / (5 / 3 + s)) / 2
    assert soft_dice_loss(logits, target, annotated, "batch").item() == pytest.approx(
        batch, rel=1e-6
    )


def test_sample_dice_charges_a_class_absent_from_an_image_as_the_study_does():
    # Two classes, p = 1/2 everywhere. Image A target [1, 0]: Dice (1 + s) / (2 + s) ≈ 1/2.
    # Image B target [0, 0]: LV absent, Dice = s / (1 + s) ≈ 0, loss ≈ 1 (qcardia DiceLoss).
    s = 1e-5
    logits = torch.zeros(2, 2, 1, 2)
    target = torch.tensor([[[1, 0]], [[0, 0]]])
    annotated = torch.ones(2, 2, dtype=torch.bool)
    expected = ((1 - (1 + s) / (2 + s)) + (1 - s / (1 + s))) / 2
    assert soft_dice_loss(logits, target, annotated, "sample").item() == pytest.approx(
        expected, rel=1e-6
    )
    pooled = 1 - (1 + s) / (3 + s)  # I = 1/2, ΣP = 2, ΣG = 1
    assert soft_dice_loss(logits, target, annotated, "batch").item() == pytest.approx(
        pooled, rel=1e-6
    )


def test_deep_supervision_weights_halve_and_sum_to_one():
    weights = deep_supervision_weights(6)
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] == pytest.approx(1 / (2 - 2**-5))
    assert all(a == pytest.approx(2 * b) for a, b in zip(weights, weights[1:]))


def test_deep_supervised_targets_are_nearest_exact_odd_pixels_at_stride_two():
    # nearest-exact samples source pixel ⌊(i + 0.5) · 2⌋ = 2i + 1 (strided [::2] took 2i).
    gen = torch.Generator().manual_seed(2)
    outs = [torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 4, 4, generator=gen)]
    target = torch.randint(0, 4, (1, 8, 8), generator=gen)
    ann = torch.ones(1, 4, dtype=torch.bool)
    expected = (2 / 3) * seg_loss(outs[0], target, ann) + (1 / 3) * seg_loss(
        outs[1], target[:, 1::2, 1::2], ann
    )
    assert deep_supervised_loss(outs, target, ann).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_poly_schedule_matches_nnunet_formula_and_cosine_warmup():
    assert lr_factor(SGD_POLY, 0, 100) == 1.0
    assert lr_factor(SGD_POLY, 50, 100) == pytest.approx(0.5**0.9)
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
        img = torch.tensor([0.0, 2.0, -0.5])[lab.long()] + 0.3 * torch.randn(
            size, size, generator=gen
        )
        images.append(img)
        labels.append(lab)
    return LabelledSlices(
        torch.stack(images)[:, None].half(), torch.stack(labels), torch.ones(n, 4, dtype=torch.bool)
    )


def _train(tmp_path: Path, epochs: float, name: str, checkpoint: Path | None = None):
    torch.manual_seed(0)
    net = create_net("unet2d_xs")
    log = JsonlLog(tmp_path / f"{name}.jsonl")
    finetune(
        net,
        _disk_slices(),
        None,
        epochs=epochs,
        batch_size=8,
        optim=SGD_POLY,
        augment=BatchAugment("none", 32),
        seed=0,
        device=torch.device("cpu"),
        log=log,
        checkpoint=checkpoint,
        show_progress=False,
    )
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


def _pretraining_losses_after_global_seed(tmp_path: Path, global_seed: int) -> list[float]:
    """Losses of 3 SimCLR pretraining steps (one log line each), the method built from seed 0,
    the global RNG then seeded with ``global_seed``; asserts the loop leaves that RNG alone."""
    torch.manual_seed(0)
    cls = get_method("simclr")
    method = cls(create_net("unet2d_xs"), 32, BatchAugment("paper", 32), hidden_dim=16, out_dim=8)
    zeros = torch.zeros(12, dtype=torch.long)
    pool = SliceBatches(
        images=_disk_slices(n=12).images,
        position=torch.linspace(0, 1, 12),
        subject=zeros,
        frame=zeros,
    )
    torch.manual_seed(global_seed)
    global_state = torch.get_rng_state()
    log = JsonlLog(tmp_path / f"pretrain_{global_seed}.jsonl")
    import cmrbench.benchmark.train as train_module

    every_step = pytest.MonkeyPatch()
    every_step.setattr(train_module, "LOG_EVERY", 1)
    try:
        pretrain(
            method,
            pool,
            epochs=1,
            batch_size=4,
            optim=cls.optim,
            seed=0,
            device=torch.device("cpu"),
            log=log,
            show_progress=False,
        )
    finally:
        every_step.undo()
    assert torch.equal(torch.get_rng_state(), global_state)
    return [r["loss"] for r in log.records()]


def test_pretraining_draws_only_from_the_step_generator_never_the_global_rng(tmp_path):
    losses = _pretraining_losses_after_global_seed(tmp_path, 1)
    assert len(losses) == 3 and len(set(losses)) == 3
    assert _pretraining_losses_after_global_seed(tmp_path, 2) == losses


def test_an_epoch_is_floor_n_over_batch_steps_as_the_studys_drop_last_loaders():
    assert steps_per_epoch(231, 32) == 7  # budget 10 of the study: 231 slices
    assert steps_per_epoch(64, 32) == 2 and steps_per_epoch(63, 32) == 1
    assert steps_per_epoch(5, 32) == 1  # at least one step


def test_fine_tuning_steps_are_full_batches_of_distinct_slices(tmp_path):
    # 24 slices at batch 10: 2 steps per epoch (4 slices sit out), 3 epochs = 6 steps.
    seen: list[torch.Tensor] = []

    def spy(images, labels, generator=None, center=None):
        seen.append(images.flatten(1).sum(1))
        return images, labels

    net = create_net("unet2d_xs")
    log = JsonlLog(tmp_path / "log.jsonl")
    finetune(
        net,
        _disk_slices(),
        None,
        epochs=3,
        batch_size=10,
        optim=SGD_POLY,
        augment=spy,
        seed=0,
        device=torch.device("cpu"),
        log=log,
        show_progress=False,
    )
    assert [len(batch) for batch in seen] == [10] * 6
    assert all(len(set(batch.tolist())) == 10 for batch in seen)
    assert log.records()[-1]["step"] == 6 and log.records()[-1]["epoch"] == 2


def test_fine_tuning_passes_each_slices_heart_centre_to_augmentation(tmp_path):
    data = _disk_slices(n=8)
    data.center = torch.arange(16, dtype=torch.float32).reshape(8, 2) / 16
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(images, labels, generator=None, center=None):
        pairs.append((images.flatten(1).sum(1), center))
        return images, labels

    finetune(
        create_net("unet2d_xs"),
        data,
        None,
        epochs=1,
        batch_size=4,
        optim=SGD_POLY,
        augment=spy,
        seed=0,
        device=torch.device("cpu"),
        log=JsonlLog(tmp_path / "l.jsonl"),
        show_progress=False,
    )
    sums = data.images.float().flatten(1).sum(1)
    for image_sums, center in pairs:
        idx = [int((sums - s).abs().argmin()) for s in image_sums]
        assert torch.equal(center, data.center[idx])


def test_slices_without_centres_are_centred_on_the_image():
    data = _disk_slices(n=3)
    assert torch.equal(data.center, torch.zeros(3, 2))


def test_precision_off_cuda_runs_fp32_and_says_so():
    cpu = torch.device("cpu")
    assert [precision_ran(cpu, p) for p in ("bf16", "tf32", "fp32", "fp16")] == ["fp32"] * 4
    for precision in ("bf16", "fp16"):
        with autocast(cpu, precision):
            out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
        assert out.dtype == torch.float32
    assert grad_scaler(cpu, "fp16") is None


def test_a_scaled_optimizer_step_equals_the_plain_step_and_skips_overflowing_gradients():
    # SGD lr 0.1 on loss = w² at w = 3: w ← 3 − 0.1 · 2 · 3 = 2.4, scaled by 2¹⁰ or not
    w = torch.nn.Parameter(torch.tensor([3.0]))
    plain_sgd = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0)
    optimizer = build_optimizer([w], plain_sgd, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer_step(optimizer, (w**2).sum(), scaler=scaler)
    assert w.item() == pytest.approx(2.4) and scaler.get_scale() == 1024.0
    # an infinite gradient: the step is skipped and the scale halves (torch.amp's rule)
    optimizer_step(optimizer, (w * torch.tensor([float("inf")])).sum(), scaler=scaler)
    assert w.item() == pytest.approx(2.4) and scaler.get_scale() == 512.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_precision_on_cuda_sets_autocast_and_tf32_and_restores_the_flags():
    cuda = torch.device("cuda")
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    layer = torch.nn.Linear(4, 4).to(cuda)
    with autocast(cuda, "bf16"):
        assert layer(torch.randn(2, 4, device=cuda)).dtype == torch.bfloat16
    with autocast(cuda, "fp32"):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert layer(torch.randn(2, 4, device=cuda)).dtype == torch.float32
    with autocast(cuda, "tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with autocast(cuda, "fp16"):
        assert layer(torch.randn(2, 4, device=cuda)).dtype == torch.float16
    assert isinstance(grad_scaler(cuda, "fp16"), torch.amp.GradScaler)
    assert grad_scaler(cuda, "bf16") is None
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags


def _toy_loop(tmp_path: Path, name: str, checkpoint: Path | None, stop_at: int | None = None):
    """80 SGD steps of a linear model on fixed data through `run_loop`, with no step-based
    checkpoints (``checkpoint_every=0``); ``stop_at`` raises KeyboardInterrupt there, as Ctrl-C."""
    from cmrbench.benchmark.train import LoopConfig, run_loop

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    inputs, targets = torch.randn(80, 4), torch.randn(80, 1)

    def loss_fn(step):
        if step.index == stop_at:
            raise KeyboardInterrupt(f"simulated Ctrl-C at step {stop_at}")
        x, y = inputs[step.index : step.index + 1], targets[step.index : step.index + 1]
        return torch.nn.functional.mse_loss(model(x), y)

    log = JsonlLog(tmp_path / f"{name}.jsonl")
    cfg = LoopConfig(
        optim=OptimConfig(optimizer="sgd", lr=0.05, schedule="constant"),
        total_steps=80,
        steps_per_epoch=80,
        batch_size=1,
        seed=0,
        log=log,
        checkpoint=checkpoint,
        checkpoint_every=0,
        show_progress=False,
    )
    run_loop(model, list(model.parameters()), cfg, torch.device("cpu"), loss_fn)
    return model, log.records()


def test_a_loop_without_step_checkpoints_saves_one_at_a_log_step_once_the_time_has_passed(
    tmp_path, monkeypatch
):
    import cmrbench.benchmark.train as train_module

    full, full_log = _toy_loop(tmp_path, "full", None)
    monkeypatch.setattr(train_module, "CHECKPOINT_EVERY_S", 0.0)  # "5 minutes" have passed
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _toy_loop(tmp_path, "resumed", state, stop_at=60)
    saved = torch.load(state, weights_only=True)
    assert (saved["step"], saved["log_lines"]) == (50, 2)  # the last log step (25, 50) before 60
    resumed, resumed_log = _toy_loop(tmp_path, "resumed", state)
    assert torch.equal(full.weight, resumed.weight) and torch.equal(full.bias, resumed.bias)
    assert [(r["step"], r["loss"]) for r in resumed_log] == [
        (r["step"], r["loss"]) for r in full_log
    ]

    monkeypatch.setattr(train_module, "CHECKPOINT_EVERY_S", 3600.0)  # an hour has not passed
    state.unlink()
    with pytest.raises(KeyboardInterrupt):
        _toy_loop(tmp_path, "early", state, stop_at=60)
    assert not state.exists()
