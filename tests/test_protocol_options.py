"""The study's protocol options in specs and grids (``dice``, ``center``, ``precision``): the
`paper` grid gets the study's choices, the variants are settable from a grid's YAML, they
change the cell key, bad values fail at planning, and every result records them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cmrbench.benchmark.data import labelled_slices, open_data, pool_slices
from cmrbench.benchmark.grid import GridError, load_grid, plan_grid, pretrain_spec
from cmrbench.benchmark.runner import RunOptions, run_cell, run_pretrain_job
from cmrbench.benchmark.spec import FinetuneConfig, PretrainSpec
from cmrbench.methods import dino as dino_module
from cmrbench.methods import get_method
from cmrbench.methods.base import PretrainBatch, Step
from cmrbench.nets import create_net
from cmrbench.transforms.augment import BatchAugment
from support.cli import TINY_GRID


def _load(tmp_path, finetune: str = "", pretrain: str = ""):
    """The tiny grid with extra lines in its ``finetune:`` and ``pretrain:`` sections."""
    text = TINY_GRID.read_text()
    text = text.replace("finetune:\n", "finetune:\n" + finetune).replace(
        "pretrain:\n", "pretrain:\n" + pretrain
    )
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return load_grid(str(path))


def test_paper_grid_uses_the_studys_dice_heart_centring_and_precision_per_stage():
    plan = plan_grid(load_grid("paper"))
    # the study fine-tuned and evaluated in fp32 (TF32 convolutions), pretrained PCL likewise
    # and SimCLR, DINO and MIM in fp16 with a GradScaler (configs/*.yaml: mixed_precision)
    assert {(c.finetune.dice, c.finetune.center, c.finetune.precision) for c in plan.cells} == {
        ("sample", "labels", "tf32")
    }
    assert {(p.method, p.center, p.precision) for p in plan.pretrain} == {
        ("simclr", "labels", "fp16"),
        ("pcl", "labels", "tf32"),
        ("dino", "labels", "fp16"),
        ("mim", "labels", "fp16"),
    }
    assert {c.augmentation for c in plan.cells} == {"none", "paper"}
    assert {p.precision for p in plan_grid(load_grid("full")).pretrain} == {"bf16"}


def test_protocol_options_are_set_from_the_grid_and_change_the_keys(tmp_path):
    default = plan_grid(_load(tmp_path))
    variant = plan_grid(
        _load(
            tmp_path,
            finetune="  dice: batch\n  center: image\n  precision: fp32\n",
            pretrain="  center: image\n  precision: tf32\n",
        )
    )
    assert {(c.finetune.dice, c.finetune.center, c.finetune.precision) for c in variant.cells} == {
        ("batch", "image", "fp32")
    }
    assert not {c.key for c in default.cells} & {c.key for c in variant.cells}
    spec = pretrain_spec(variant.grid, "mim", "unet2d_xs")
    assert (spec.center, spec.precision) == ("image", "tf32")
    assert spec.key != pretrain_spec(default.grid, "mim", "unet2d_xs").key


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        (
            "finetune",
            "  dice: pixel\n",
            r"'finetune'.*dice: unknown value 'pixel'; allowed: sample, batch",
        ),
        (
            "finetune",
            "  center: heart\n",
            r"'finetune'.*center: unknown value 'heart'; allowed: labels, image",
        ),
        (
            "finetune",
            "  precision: fp8\n",
            r"'finetune'.*precision: unknown value 'fp8'; allowed: bf16, tf32, fp32, fp16",
        ),
        ("pretrain", "  precision: half\n", r"'pretrain'.*precision: unknown value 'half'"),
    ],
)
def test_unknown_protocol_option_values_fail_at_loading_naming_file_key_and_choices(
    tmp_path, section, line, message
):
    with pytest.raises(GridError, match=rf"grid.yaml.*{message}"):
        _load(tmp_path, **{section: line})


def test_specs_reject_unknown_protocol_option_values():
    with pytest.raises(ValueError, match="dice: unknown value 'soft'"):
        FinetuneConfig(dice="soft")
    with pytest.raises(ValueError, match="center: unknown value 'heart'"):
        FinetuneConfig(center="heart")
    base = plan_grid(load_grid(str(TINY_GRID))).cells[0]
    with pytest.raises(ValueError, match="precision: unknown value 'fp8'"):
        PretrainSpec(
            method="mim",
            encoder="unet2d_xs",
            data=base.data,
            epochs=1,
            batch_size=2,
            optim=base.finetune.optim,
            precision="fp8",
        )


def test_results_record_precision_centring_and_dice(cmrbench_env, tmp_path):
    plan = plan_grid(_load(tmp_path, pretrain="  precision: fp32\n"), epochs_scale=1 / 3)
    cell = next(c for c in plan.cells if c.budget == "1")
    assert run_cell(tmp_path / "run", cell, RunOptions(progress=False)) == "done"
    result = json.loads(next((tmp_path / "run").glob("cells/*/result.json")).read_text())
    assert (result["precision"], result["precision_run"]) == ("bf16", "fp32")  # CPU: no autocast
    assert (result["dice"], result["center"]) == ("sample", "labels")
    assert result["pretrain_views_centred_with_labels"] is False  # scratch


def test_pretraining_result_says_whether_views_were_centred_with_labels(cmrbench_env, tmp_path):
    spec = pretrain_spec(_load(tmp_path), "mim", "unet2d_xs", epochs_scale=0.05)
    assert run_pretrain_job(tmp_path / "run", spec, RunOptions(progress=False)) == "done"
    result = json.loads(next((tmp_path / "run").glob("pretrain/*/result.json")).read_text())
    assert (result["center"], result["views_centred_with_labels"]) == ("labels", True)
    assert (result["precision"], result["precision_run"]) == ("bf16", "fp32")


def test_runner_centres_slices_on_heart_centres_or_on_the_image(cmrbench_env, tmp_path):
    ctx = open_data(plan_grid(_load(tmp_path)).grid.data, show_progress=False)
    train = ctx.adapter.default_split()["train"]
    rows = ctx.cache.rows(train[:2], labelled=True)
    by_labels = labelled_slices(ctx.cache, train[:2], ("ED", "ES"), torch.device("cpu"), "labels")
    np.testing.assert_array_equal(by_labels.center.numpy(), ctx.cache.centers(rows))
    assert by_labels.center.abs().sum() > 0  # phantom hearts sit off-centre
    by_image = labelled_slices(ctx.cache, train[:2], ("ED", "ES"), torch.device("cpu"), "image")
    assert torch.equal(by_image.center, torch.zeros(len(rows), 2))
    pool = pool_slices(ctx.cache, train, torch.device("cpu"), "labels")
    np.testing.assert_array_equal(
        pool.center.numpy(), ctx.cache.centers(ctx.cache.rows(train, labelled=False))
    )
    assert torch.equal(pool.batch(torch.arange(3), torch.device("cpu")).center, pool.center[:3])


class _CentreSpy(BatchAugment):
    """The "paper" augmentation, remembering the centres it was given."""

    def __init__(self, image_size: int) -> None:
        super().__init__("paper", image_size)
        self.centres: list[torch.Tensor | None] = []

    def __call__(self, images, labels=None, generator=None, center=None):
        self.centres.append(center)
        return super().__call__(images, labels, generator, center)


def _loss_on_centred_batch(method: str, augment: BatchAugment, **hparams) -> torch.Tensor:
    """One pretraining loss of ``method`` on a batch of 4 whose heart centres are random;
    returns those centres ``(4, 2)``."""
    cls = get_method(method)
    model = cls(create_net("unet2d_xs", img_size=32, **cls.net_kwargs), 32, augment, **hparams)
    center = torch.rand(4, 2) - 0.5
    batch = PretrainBatch(
        images=torch.randn(4, 1, 32, 32),
        position=torch.rand(4),
        subject=torch.arange(4),
        frame=torch.zeros(4, dtype=torch.long),
        center=center,
    )
    model.loss(
        batch,
        Step(
            index=0,
            total=10,
            epoch=0,
            total_epochs=1,
            steps_per_epoch=10,
            generator=torch.Generator().manual_seed(0),
        ),
    )
    return center


@pytest.mark.parametrize(
    "method, hparams", [("simclr", {}), ("pcl", {}), ("mim", {}), ("dino", {"views": "crops"})]
)
def test_every_pretraining_method_centres_its_views_on_the_batch_centres(method, hparams):
    spy = _CentreSpy(32)
    center = _loss_on_centred_batch(method, spy, **hparams)
    assert spy.centres and all(c is not None and torch.equal(c, center) for c in spy.centres)


def test_dino_study_views_move_every_crop_to_the_batch_centres(monkeypatch):
    seen: list[torch.Tensor | None] = []
    original = dino_module.study_crop_theta

    def spy(*args, **kwargs):
        seen.append(kwargs.get("center", args[4] if len(args) > 4 else None))
        return original(*args, **kwargs)

    monkeypatch.setattr(dino_module, "study_crop_theta", spy)
    center = _loss_on_centred_batch("dino", BatchAugment("paper", 32), views="study")
    n_local = get_method("dino").resolve_config({}).n_local_crops
    assert len(seen) == 2 + n_local
    assert all(c is not None and torch.equal(c, center) for c in seen)
