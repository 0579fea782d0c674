"""`dino`: the loss against lightly and by hand, its schedules and hooks, the study's
crops (scale, translation, blur, solarisation, intensity probabilities), a short run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lightly.loss import DINOLoss
from torch import nn

from cmrbench.methods import get_method
from cmrbench.methods.base import Step
from cmrbench.methods.dino import (
    DINO,
    STUDY_INTENSITY_PROBABILITIES,
    dino_loss,
    solarize,
    study_crop_theta,
    teacher_temperature,
    updated_center,
)
from cmrbench.methods.parts import NormalizedLinear
from cmrbench.optim import OptimConfig, build_optimizer, optimizer_step
from cmrbench.transforms.augment import AugmentParams, intensity_augment
from support.method_checks import (
    IMAGE_SIZE,
    blob_slices,
    build_method,
    first_and_last_mean,
    make_step,
    short_pretraining_losses,
)

SMALL_HEAD = {"hidden_dim": 32, "bottleneck_dim": 16, "out_dim": 64}


def _step(index: int, total: int = 500) -> Step:
    """Step ``index`` of a run of 100 epochs of 5 steps (``total`` 500)."""
    return make_step(index, total, steps_per_epoch=5)


@pytest.mark.parametrize("temperature", [0.02, 0.0273, 0.04, 0.07])
def test_dino_loss_and_centre_equal_lightly_dinoloss(temperature: float) -> None:
    gen = torch.Generator().manual_seed(int(temperature * 1e4))
    teacher = torch.randn(2, 5, 32, generator=gen)
    student = torch.randn(8, 5, 32, generator=gen)
    center = 0.3 * torch.randn(1, 32, generator=gen)
    reference = DINOLoss(
        output_dim=32,
        warmup_teacher_temp=temperature,
        teacher_temp=temperature,
        warmup_teacher_temp_epochs=1,
        student_temp=0.1,
        center_momentum=0.9,
    )
    reference.center.copy_(center[None])
    expected = reference(list(teacher), list(student), epoch=5)
    ours = dino_loss(teacher, student, center, 0.1, temperature)
    assert abs(ours.item() - expected.item()) < 1e-5
    assert torch.allclose(updated_center(center, teacher, 0.9), reference.center[0], atol=1e-7)


def test_dino_loss_equals_the_formula_computed_by_hand() -> None:
    teacher = np.array(
        [[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]], [[0.0, 2.0, 0.0], [-1.0, 0.0, 1.0]]]
    )  # (T=2, B=2, K=3)
    student = np.array(
        [
            [[0.2, 0.1, 0.0], [0.0, 0.3, 0.1]],
            [[0.1, 0.1, 0.1], [0.4, 0.0, 0.2]],
            [[0.0, 0.0, 0.5], [0.3, 0.3, 0.0]],
        ]
    )  # (S=3, B=2, K=3)
    center = np.array([[0.1, -0.1, 0.0]])
    tau_s, tau_t = 0.1, 0.04

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max())
        return e / e.sum()

    terms = []
    for t in range(2):
        for s in range(3):
            if s == t:
                continue
            per_image = [
                -(
                    softmax((teacher[t, b] - center[0]) / tau_t)
                    * np.log(softmax(student[s, b] / tau_s))
                ).sum()
                for b in range(2)
            ]
            terms.append(np.mean(per_image))
    expected = float(np.mean(terms))
    ours = dino_loss(
        torch.tensor(teacher), torch.tensor(student), torch.tensor(center), tau_s, tau_t
    )
    assert ours.item() == pytest.approx(expected, abs=1e-5)


def test_teacher_temperature_warms_up_from_0_02_to_0_04_over_the_first_30_percent_then_stays() -> (
    None
):
    assert teacher_temperature(0.0, 0.02, 0.04, 0.3) == 0.02
    assert teacher_temperature(0.15, 0.02, 0.04, 0.3) == pytest.approx(0.03)
    assert teacher_temperature(0.29, 0.02, 0.04, 0.3) == pytest.approx(0.02 + 0.02 * 29 / 30)
    assert [teacher_temperature(f, 0.02, 0.04, 0.3) for f in (0.3, 0.31, 0.99)] == [0.04] * 3
    assert teacher_temperature(0.0, 0.02, 0.04, 0.0) == 0.04  # no warm-up


def test_dino_declares_the_studys_settings() -> None:
    cls = get_method("dino")
    assert cls is DINO
    optim = cls.optim
    assert (
        optim.optimizer,
        optim.lr,
        optim.momentum,
        optim.weight_decay,
        optim.schedule,
        optim.warmup_fraction,
        optim.min_lr,
        optim.no_decay_bias_norm,
    ) == ("sgd", 0.0075, 0.9, 1e-4, "cosine", 0.1, 1e-6, True)
    assert cls.batch_size == 64 and cls.epochs == 100
    hp = cls.resolve_config()
    assert (hp.hidden_dim, hp.bottleneck_dim, hp.out_dim) == (2048, 256, 8192)
    assert (
        hp.student_temperature,
        hp.warmup_teacher_temperature,
        hp.teacher_temperature,
        hp.warmup_teacher_temperature_fraction,
    ) == (0.1, 0.02, 0.04, 30 / 100)
    assert (
        hp.center_momentum,
        hp.teacher_momentum,
        hp.freeze_last_layer_fraction,
        hp.n_local_crops,
    ) == (0.9, 0.996, 1 / 100, 6)
    assert (
        hp.views,
        hp.global_scale,
        hp.local_scale,
        hp.global_translation_px,
        hp.local_translation_px,
    ) == ("study", (0.524, 1.4), (0.313, 0.524), 40, 160)
    assert cls.transferred_parts("cnn") == ("encoder",) == cls.transferred_parts("vit")


def test_dino_head_is_mlp_with_batchnorm_and_gelu_then_a_normalised_last_layer() -> None:
    method = build_method(DINO)
    mlp = list(method.head.mlp)
    assert [type(m) for m in mlp] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.GELU,
        nn.Linear,
        nn.BatchNorm1d,
        nn.GELU,
        nn.Linear,
    ]
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [
        (method.net.feature_dim, 2048),
        (2048, 2048),
        (2048, 256),
    ]
    last = method.head.last_layer
    assert isinstance(last, NormalizedLinear) and last.weight.shape == (8192, 256)
    x = torch.randn(4, 256)
    expected = x @ (last.weight / last.weight.norm(dim=1, keepdim=True)).T
    assert torch.allclose(last(x), expected, atol=1e-6)


def test_student_sees_2_global_and_6_local_crops_and_the_teacher_the_global_ones() -> None:
    method = build_method(DINO, **SMALL_HEAD)
    images = blob_slices(3).images
    global_crops, local_crops = method.crops(images, torch.Generator().manual_seed(0))
    assert [c.shape for c in global_crops] == [(3, 1, IMAGE_SIZE, IMAGE_SIZE)] * 2
    assert [c.shape for c in local_crops] == [(3, 1, IMAGE_SIZE // 2, IMAGE_SIZE // 2)] * 6
    assert method.student_outputs(global_crops, local_crops).shape == (8, 3, 64)
    assert method.teacher_outputs(global_crops).shape == (2, 3, 64)


def _one_step(method: DINO, step: Step, lr: float = 0.1) -> None:
    optimizer = build_optimizer(
        [p for p in method.parameters() if p.requires_grad],
        OptimConfig(lr=lr, momentum=0.0, weight_decay=0.0),
        torch.device("cpu"),
    )
    optimizer_step(
        optimizer,
        method.loss(blob_slices(4), step),
        before_step=lambda: method.before_optimizer_step(step),
        after_step=lambda: method.after_step(step),
    )


def test_teacher_gets_no_gradient_and_becomes_the_ema_of_the_student_after_a_step() -> None:
    method = build_method(DINO, **SMALL_HEAD)
    step = _step(7, total=20)
    teacher_before = [
        p.clone() for p in [*method.teacher_net.parameters(), *method.teacher_head.parameters()]
    ]
    _one_step(method, step)
    assert all(
        not p.requires_grad and p.grad is None
        for p in [*method.teacher_net.parameters(), *method.teacher_head.parameters()]
    )
    m = 1 - 0.004 * (math.cos(math.pi * 7 / 20) + 1) / 2
    students = [*method.net.parameters(), *method.head.parameters()]
    teachers = [*method.teacher_net.parameters(), *method.teacher_head.parameters()]
    assert len(students) == len(teachers) == len(teacher_before)
    for student, teacher, before in zip(students, teachers, teacher_before):
        assert torch.allclose(teacher, m * before + (1 - m) * student, atol=1e-7)
    moved = method.net.encoder.stages[0][0].weight
    assert not torch.equal(moved, teacher_before[0])


def test_centre_moves_towards_the_teacher_batch_mean_with_momentum_0_9() -> None:
    method = build_method(DINO, **SMALL_HEAD)
    method.center.fill_(0.5)
    captured = []
    method.teacher_head.register_forward_hook(
        lambda module, args, out: captured.append(out.detach())
    )
    method.loss(blob_slices(4), _step(0))
    (teacher_out,) = captured
    assert teacher_out.shape == (8, 64)  # 2 global crops x 4 images
    expected = 0.9 * 0.5 + 0.1 * teacher_out.mean(dim=0, keepdim=True)
    assert torch.allclose(method.center, expected, atol=1e-7)


def test_loss_uses_the_scheduled_teacher_temperature_of_the_step() -> None:
    method = build_method(DINO, **SMALL_HEAD)
    captured = {}
    method.teacher_head.register_forward_hook(
        lambda module, args, out: captured.update(t=out.detach())
    )
    method.head.register_forward_hook(lambda module, args, out: captured.update(s=out.detach()))
    for step, temperature in ((0, 0.02), (60, 0.02 + 0.02 * 0.12 / 0.3), (200, 0.04)):
        center = method.center.clone()
        loss = method.loss(blob_slices(4), _step(step))
        teacher, student = captured["t"].reshape(2, 4, -1), captured["s"].reshape(8, 4, -1)
        expected = dino_loss(teacher, student, center, 0.1, temperature)
        assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
        warmed_up = dino_loss(teacher, student, center, 0.1, 0.04)
        assert step >= 150 or loss.item() != pytest.approx(warmed_up.item(), abs=1e-6)


def test_last_layer_is_frozen_in_the_first_percent_of_the_run_and_trains_after() -> None:
    method = build_method(DINO, **SMALL_HEAD)
    last = method.head.last_layer.weight
    first_linear = method.head.mlp[0].weight
    before_last, before_mlp = last.clone(), first_linear.clone()
    _one_step(method, _step(4))  # 4 / 500 < 1 %: DINO's first epoch of 100
    assert torch.equal(last, before_last)
    assert not torch.equal(first_linear, before_mlp)
    _one_step(method, _step(5))  # 5 / 500 = 1 %
    assert not torch.equal(last, before_last)


def test_dino_rejects_invalid_hyper_parameters() -> None:
    with pytest.raises(ValueError, match="teacher_momentum 1.5"):
        build_method(DINO, teacher_momentum=1.5)
    with pytest.raises(ValueError, match="local_crop_scale"):
        build_method(DINO, local_crop_scale=(0.5, 0.2))


def test_short_dino_pretraining_lowers_the_loss_against_a_fixed_teacher() -> None:
    # DINO's loss is a moving target: the teacher follows the student, the centre moves
    # and the teacher sharpens as its temperature warms up. With those held fixed
    # (teacher momentum 1, centre momentum 1, constant teacher temperature) the loss is a
    # fixed objective that 30 steps with DINO's optimizer settings must lower. Two local
    # crops instead of six keep the test fast (the six are checked above).
    method = build_method(
        DINO,
        hidden_dim=64,
        bottleneck_dim=32,
        out_dim=256,
        teacher_momentum=1.0,
        center_momentum=1.0,
        n_local_crops=2,
        warmup_teacher_temperature=0.04,
        warmup_teacher_temperature_fraction=0.0,
    )
    first, last = first_and_last_mean(short_pretraining_losses(method, blob_slices(64)))
    assert last < first - 0.1


# --------------------------------------------------------------------------- the study's crops


def _grid_scale_and_shift(
    theta: torch.Tensor, size_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per matrix: the sampling-grid scale ``s`` (|det|^½ over the crop's size fraction) and
    the pre-scale translation ``t`` (``theta = fraction · L · [I | t]``), from ``(N, 2, 3)``."""
    linear = theta[:, :, :2]
    scale = linear.det().abs().sqrt() / size_fraction
    shift = torch.linalg.solve(linear, theta[:, :, 2:])[:, :, 0]
    return scale, shift


@pytest.mark.parametrize(
    "kind,scale,translation_px,size_fraction",
    [("global", (0.524, 1.4), 40.0, 1.0), ("local", (0.313, 0.524), 160.0, 0.5)],
)
def test_study_crops_draw_the_studys_scales_and_translations(
    kind, scale, translation_px, size_fraction
) -> None:
    theta = study_crop_theta(
        20_000, scale, translation_px, size_fraction, generator=torch.Generator().manual_seed(0)
    )
    measured, shift = _grid_scale_and_shift(theta.double(), size_fraction)
    low, high = scale
    assert measured.min() >= low - 1e-5 and measured.max() <= high + 1e-5
    assert measured.min() < low + 0.005 and measured.max() > high - 0.005
    # the study's resampler: ±translation px of the crop's own grid (256 px global, 128 local)
    bound = 2 * translation_px / (256 * size_fraction)
    assert shift.abs().max() <= bound + 1e-5 and shift.abs().max() > 0.99 * bound
    # rotation covers ±180° and each axis flips about half the time
    flips = (theta[:, 0, 0] * theta[:, 1, 1] - theta[:, 0, 1] * theta[:, 1, 0]) < 0
    assert 0.45 < flips.float().mean() < 0.55


def test_study_crops_are_centred_on_the_given_heart_centre() -> None:
    center = torch.tensor([[0.2, -0.1], [-0.3, 0.05]])
    plain = study_crop_theta(
        2, (0.313, 0.524), 160.0, 0.5, generator=torch.Generator().manual_seed(3)
    )
    centred = study_crop_theta(
        2, (0.313, 0.524), 160.0, 0.5, center, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(centred[:, :, :2], plain[:, :, :2])
    assert torch.allclose(centred[:, :, 2] - plain[:, :, 2], center)


def test_study_views_blur_only_global_crop_1_and_solarise_only_global_crop_2(monkeypatch) -> None:
    import cmrbench.methods.dino as dino

    intensity_calls, solarize_calls = [], []
    real_intensity, real_solarize = dino.intensity_augment, dino.solarize

    def record_intensity(images, params, image_size, generator, probabilities):
        intensity_calls.append((images.shape[-1], params, probabilities))
        return real_intensity(images, params, image_size, generator, probabilities)

    def record_solarize(images, p, threshold, generator, maximum):
        solarize_calls.append((len(intensity_calls), p, threshold))
        return real_solarize(images, p, threshold, generator, maximum)

    monkeypatch.setattr(dino, "intensity_augment", record_intensity)
    monkeypatch.setattr(dino, "solarize", record_solarize)
    method = build_method(DINO, **SMALL_HEAD)
    global_crops, local_crops = method.crops(
        blob_slices(3).images, torch.Generator().manual_seed(0)
    )
    assert len(global_crops) == 2 and len(local_crops) == 6
    sizes = [size for size, _, _ in intensity_calls]
    assert sizes == [IMAGE_SIZE] * 2 + [IMAGE_SIZE // 2] * 6
    smoothing = [(params.smooth_p, params.smooth_sigma_px) for _, params, _ in intensity_calls]
    assert smoothing == [(1.0, (0.1, 2.0))] + [(0.1, (0.5, 1.5))] * 7
    for _, params, probabilities in intensity_calls:
        assert (params.noise_p, params.noise_std) == (0.15, 0.2)
        assert probabilities == (0.2, 0.15, 0.15)  # scaling, shift, gamma
        assert (params.intensity_scale, params.intensity_shift, params.gamma) == (
            (1.6, 2.5),
            0.4,
            (0.7, 1.5),
        )
    assert solarize_calls == [(2, 0.2, 0.0)]  # after global crop 2, only there


def test_solarisation_maps_values_above_the_threshold_to_the_subject_maximum_minus_x() -> None:
    # qcardia-data RandSolarized: x > t → max − x, max the subject's saved (z-scored) maximum
    images = torch.tensor([[-1.0, 0.0], [0.5, 2.0]]).reshape(1, 1, 2, 2).repeat(20_000, 1, 1, 1)
    maximum = torch.full((20_000,), 3.5)
    out = solarize(images, 0.2, 0.0, torch.Generator().manual_seed(0), maximum)
    changed = (out != images).flatten(1).any(dim=1)
    assert abs(changed.float().mean().item() - 0.2) < 0.015
    # -1 and 0 are not above the threshold; 0.5 → 3.5 − 0.5 = 3.0, 2.0 → 3.5 − 2.0 = 1.5
    assert torch.equal(out[changed][0].flatten(), torch.tensor([-1.0, 0.0, 3.0, 1.5]))
    assert torch.equal(out[~changed], images[~changed])
    # without a subject maximum: each image's own maximum (2.0): 0.5 → 1.5, 2.0 → 0.0
    own = solarize(images[:1], 1.0, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(own.flatten(), torch.tensor([-1.0, 0.0, 1.5, 0.0]))


def test_pretraining_batches_carry_each_subjects_z_scored_maximum(cmrbench_env, tmp_path):
    from cmrbench.benchmark.data import pool_slices
    from cmrbench.datasets import create_dataset
    from cmrbench.datasets.preprocess import Geometry, load_slice_cache

    adapter = create_dataset("phantom", n_train=2, n_val=1, n_test=1)
    cache = load_slice_cache(
        adapter, Geometry(32, 5.0), ["phantom-0000", "phantom-0001"], progress=False
    )
    pool = pool_slices(cache, ["phantom-0000", "phantom-0001"], torch.device("cpu"))
    for index, subject_id in enumerate(["phantom-0000", "phantom-0001"]):
        cine = adapter.load(subject_id).cine.astype(np.float64)
        expected = (cine.max() - cine.mean()) / cine.std()  # the z-scored maximum
        assert pool.intensity_max[pool.subject == index].unique().tolist() == pytest.approx(
            [expected], rel=1e-5
        )
    batch = pool.batch(torch.arange(3), torch.device("cpu"))
    assert batch.intensity_max.shape == (3,)


@pytest.mark.parametrize("operation", ["scale", "shift", "gamma"])
def test_intensity_operations_of_study_crops_apply_with_their_probabilities(operation) -> None:
    # one operation at a time, on images whose pixels 0 and 1 (1.0 and 2.0) show whether it
    # ran: scaling by 1.6–2.5, a shift of ±0.4 (never 0) or a gamma of 0.5 changes them
    params = AugmentParams(
        intensity_scale=(1.6, 2.5) if operation == "scale" else (1.0, 1.0),
        intensity_shift=0.4 if operation == "shift" else 0.0,
        gamma=(0.5, 0.5) if operation == "gamma" else (1.0, 1.0),
    )
    images = torch.tensor([1.0, 2.0, 3.0, 0.0]).reshape(1, 1, 2, 2).repeat(20_000, 1, 1, 1)
    out = intensity_augment(
        images, params, IMAGE_SIZE, torch.Generator().manual_seed(1), STUDY_INTENSITY_PROBABILITIES
    )
    changed = (out - images).abs().flatten(1).amax(dim=1) > 1e-4
    expected = dict(zip(("scale", "shift", "gamma"), STUDY_INTENSITY_PROBABILITIES))[operation]
    assert abs(changed.float().mean().item() - expected) < 0.015
    # a gamma of exactly 1 (when the others run) changes values only by rounding
    assert torch.allclose(out[~changed], images[~changed], atol=1e-4)


def test_crops_variant_keeps_the_augment_then_random_resized_crop_pipeline() -> None:
    method = build_method(DINO, views="crops", **SMALL_HEAD)
    global_crops, local_crops = method.crops(
        blob_slices(3).images, torch.Generator().manual_seed(0)
    )
    assert [c.shape for c in global_crops + local_crops] == [(3, 1, IMAGE_SIZE, IMAGE_SIZE)] * 2 + [
        (3, 1, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
    ] * 6
    with pytest.raises(ValueError, match="views 'multi' must be one of study, crops"):
        build_method(DINO, views="multi")
