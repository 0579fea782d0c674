"""External pretrained checkpoints as grid rows (cmrbench.benchmark.checkpoints, issue 15).

A random timm ViT-S/16 saved to disk fine-tunes at 64 px with one channel; its transfer
report accounts for every encoder tensor and its adapted tensors equal timm's own
adaptation (and a hand computation). Bad files fail at planning, naming file and keys.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import yaml
from timm.layers import resample_abs_pos_embed
from timm.models._manipulate import adapt_input_conv

from cmrbench.benchmark.checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint
from cmrbench.benchmark.grid import (
    GridError,
    add_checkpoints,
    load_grid,
    parse_checkpoint_option,
    plan_grid,
)
from cmrbench.benchmark.runner import RunOptions, build_finetune_net, run_cell
from cmrbench.benchmark.spec import spec_from_json, to_jsonable
from cmrbench.benchmark.transfer import state_dict_sha256
from cmrbench.nets import create_net
from cmrbench.reports import build_site
from support.cli import TINY_GRID, run_cli


def vit_grid(folder: Path, checkpoints: dict, methods: list[str] | None = None) -> Path:
    """A one-cell phantom grid at 64 px declaring ``checkpoints``; returns its YAML path."""
    grid = {
        "name": "ext",
        "dataset": {
            "name": "phantom",
            "image_size": 64,
            "spacing_mm": 2.5,
            "options": {"n_train": 2, "n_val": 1, "n_test": 1},
        },
        "encoders": ["vit_small"],
        "methods": methods or ["scratch"],
        "budgets": [1],
        "seeds": [0],
        "finetune": {"epochs": 1, "batch_size": 4, "val_every": 1, "warmup_fraction": 0},
        "checkpoints": checkpoints,
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def timm_vit_s16(path: Path, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    """A randomly initialised timm ViT-S/16 (3 channels, 224 px) saved at ``path``."""
    torch.manual_seed(seed)
    state = timm.create_model("vit_small_patch16_224", pretrained=False, **kwargs).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def checkpoint_cells(grid_path: Path) -> list:
    return [c for c in plan_grid(load_grid(str(grid_path))).cells if c.checkpoint is not None]


def test_a_timm_vit_s16_fine_tunes_at_64px_with_every_encoder_tensor_loaded_or_adapted(
    tmp_path, cmrbench_env
):
    state = timm_vit_s16(tmp_path / "weights" / "vit_s16.pt")
    grid = vit_grid(
        tmp_path,
        {"imagenet_vit": {"path": "weights/vit_s16.pt", "format": "timm", "encoder": "vit_small"}},
    )
    (cell,) = checkpoint_cells(grid)
    assert cell.method == "imagenet_vit" and cell.pretrain is None
    assert cell.checkpoint.path == str(tmp_path / "weights" / "vit_s16.pt")  # relative to the grid
    assert cell.finetune.optim.optimizer == "adamw"  # the ViT recipe

    assert run_cell(tmp_path / "run", cell, RunOptions(devices=("cpu",), progress=False)) == "done"
    folder = next((tmp_path / "run" / "cells").glob("imagenet_vit_*"))
    report = json.loads((folder / "transfer.json").read_text())
    encoder = report["parts"]["encoder"]
    net, _ = build_finetune_net(
        tmp_path / "run", cell, RunOptions(devices=("cpu",), progress=False)
    )
    every = {f"encoder.{k}" for k in net.encoder.state_dict()}
    assert set(encoder["loaded"]) | set(encoder["adapted"]) == every
    assert encoder["random"] == [] and encoder["tensors_loaded"] == len(every)
    assert set(encoder["adapted"]) == {"encoder.pos_embed", "encoder.patch_embed.proj.weight"}
    assert "resampled from a 14x14 to a 4x4" in encoder["adapted"]["encoder.pos_embed"]
    assert report["skipped"] == ["cls_token", "head.bias", "head.weight"]
    assert report["checkpoint"]["sha256"] == cell.checkpoint.sha256

    weights = net.state_dict()
    proj = state["patch_embed.proj.weight"]
    assert torch.equal(weights["encoder.patch_embed.proj.weight"], adapt_input_conv(1, proj))
    torch.testing.assert_close(
        weights["encoder.patch_embed.proj.weight"][5, 0, 2, 3],
        proj[5, 0, 2, 3] + proj[5, 1, 2, 3] + proj[5, 2, 2, 3],
    )
    timm_pos = resample_abs_pos_embed(state["pos_embed"], [4, 4], num_prefix_tokens=1)[:, 1:]
    assert torch.equal(weights["encoder.pos_embed"], timm_pos)
    assert weights["encoder.pos_embed"].shape == (1, 16, 384)
    assert torch.equal(weights["encoder.blocks.7.mlp.fc1.weight"], state["blocks.7.mlp.fc1.weight"])
    result = json.loads((folder / "result.json").read_text())
    assert result["method"] == "imagenet_vit" and 0.0 <= result["mean_dsc"] <= 1.0

    build_site(tmp_path / "run", tmp_path / "site")
    (page,) = [
        p
        for p in (tmp_path / "site").rglob("*.html")
        if "Method <code>imagenet_vit</code>" in p.read_text()
    ]
    html = page.read_text()
    assert cell.checkpoint.sha256 in html and "resampled from a 14x14 to a 4x4" in html
    assert "summed over the checkpoint&#39;s 3 (timm adapt_input_conv)" in html


def test_prefixed_and_mae_style_checkpoints_load_the_same_encoder(tmp_path):
    state = timm_vit_s16(tmp_path / "plain.pt")
    mae = {
        "model": {
            **{f"module.{k}": v for k, v in state.items()},
            "mask_token": torch.zeros(1, 1, 512),
            "decoder_embed.weight": torch.zeros(512, 384),
        }
    }
    torch.save(mae, tmp_path / "mae.pt")
    nets = []
    for name in ("plain", "mae"):
        spec = resolve_checkpoint(
            name,
            {"path": str(tmp_path / f"{name}.pt"), "format": "timm", "encoder": "vit_small"},
            64,
        )
        torch.manual_seed(0)
        net = create_net("vit_small", img_size=64)
        report = load_checkpoint(net, spec)
        nets.append(state_dict_sha256(net.encoder))
    assert nets[0] == nets[1]
    assert {"decoder_embed.weight", "mask_token", "module.cls_token"} <= set(report.skipped)


def test_unmatched_keys_fail_at_planning_naming_the_file_and_keys(tmp_path):
    state = timm_vit_s16(tmp_path / "w.pt")
    state["blocks.3.extra_scale"] = torch.ones(384)
    state["reg_token"] = torch.zeros(1, 4, 384)
    torch.save(state, tmp_path / "w.pt")
    grid = vit_grid(tmp_path, {"ext": {"path": "w.pt", "format": "timm", "encoder": "vit_small"}})
    with pytest.raises(GridError, match=r"w\.pt.*blocks\.3\.extra_scale.*reg_token.*strict: false"):
        plan_grid(load_grid(str(grid)))


def test_strict_false_skips_unmatched_keys_and_reports_missing_tensors_as_random(tmp_path):
    state = timm_vit_s16(tmp_path / "w.pt")
    state["reg_token"] = torch.zeros(1, 4, 384)
    del state["blocks.11.mlp.fc2.weight"]
    torch.save(state, tmp_path / "w.pt")
    spec = resolve_checkpoint(
        "ext",
        {"path": str(tmp_path / "w.pt"), "format": "timm", "encoder": "vit_small", "strict": False},
        64,
    )
    torch.manual_seed(0)
    net = create_net("vit_small", img_size=64)
    before = net.state_dict()["encoder.blocks.11.mlp.fc2.weight"].clone()
    report = load_checkpoint(net, spec).to_json()["parts"]["encoder"]
    assert report["random"] == ["encoder.blocks.11.mlp.fc2.weight"]
    assert report["skipped"] == ["reg_token"]
    assert torch.equal(net.state_dict()["encoder.blocks.11.mlp.fc2.weight"], before)


def test_a_shape_mismatch_fails_at_planning_naming_the_keys(tmp_path):
    torch.manual_seed(0)
    torch.save(
        timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), tmp_path / "t.pt"
    )
    grid = vit_grid(tmp_path, {"tiny": {"path": "t.pt", "format": "timm", "encoder": "vit_small"}})
    with pytest.raises(
        GridError,
        match=r"t\.pt.*encoder\.blocks\.0\.attn\.qkv\.weight: "
        r"checkpoint \(576, 192\) vs net \(1152, 384\)",
    ):
        plan_grid(load_grid(str(grid)))


def test_a_pickle_that_needs_code_is_refused_with_how_to_resave_it(tmp_path):
    state = timm_vit_s16(tmp_path / "w.pt")
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-3)}, tmp_path / "w.pt")
    grid = vit_grid(tmp_path, {"ext": {"path": "w.pt", "format": "timm", "encoder": "vit_small"}})
    with pytest.raises(
        GridError,
        match=r"w\.pt.*argparse\.Namespace.*"
        r"torch\.save\(model\.state_dict\(\), path\)",
    ):
        plan_grid(load_grid(str(grid)))


def test_replacing_the_file_bytes_changes_the_cell_key_and_a_stale_plan_refuses_to_load(tmp_path):
    timm_vit_s16(tmp_path / "w.pt", seed=0)
    grid = vit_grid(tmp_path, {"ext": {"path": "w.pt", "format": "timm", "encoder": "vit_small"}})
    (first,) = checkpoint_cells(grid)
    timm_vit_s16(tmp_path / "w.pt", seed=1)
    (second,) = checkpoint_cells(grid)
    assert first.key != second.key
    assert first.checkpoint.sha256 != second.checkpoint.sha256
    with pytest.raises(CheckpointError, match=r"w\.pt.*changed since the grid was planned"):
        load_checkpoint(create_net("vit_small", img_size=64), first.checkpoint)


def test_a_checkpoint_cell_spec_round_trips_through_json(tmp_path):
    timm_vit_s16(tmp_path / "w.pt")
    grid = vit_grid(tmp_path, {"ext": {"path": "w.pt", "format": "timm", "encoder": "vit_small"}})
    (cell,) = checkpoint_cells(grid)
    again = spec_from_json(json.loads(json.dumps(to_jsonable(cell))))
    assert again == cell and again.key == cell.key


def test_the_command_line_declaration_adds_a_checkpoint_with_its_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, entry = parse_checkpoint_option(
        "mine=w.pt,format=timm,encoder=vit_small,strict=false,parts=encoder"
    )
    assert name == "mine"
    assert entry == {
        "path": str(tmp_path / "w.pt"),
        "format": "timm",
        "encoder": "vit_small",
        "strict": False,
        "parts": ["encoder"],
    }
    grid = add_checkpoints(load_grid(str(vit_grid(tmp_path, {}))), ("other=x.pt,format=cmrbench",))
    assert grid.checkpoints["other"] == {"path": str(tmp_path / "x.pt"), "format": "cmrbench"}
    with pytest.raises(GridError, match="expected name=path"):
        parse_checkpoint_option("just-a-path.pt")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"path": "w.pt", "format": "onnx"}, "format' must be one of cmrbench, timm"),
        ({"format": "timm"}, "path' is required"),
        (
            {"path": "w.pt", "format": "timm", "strict": "no"},
            "'checkpoints.ext': key 'strict' is 'no'; expected true or false",
        ),
        (
            {"path": "w.pt", "format": "timm", "parts": ["head"]},
            "parts' must be a list of encoder, decoder",
        ),
    ],
)
def test_invalid_checkpoint_declarations_name_the_grid_and_key(tmp_path, entry, message):
    with pytest.raises(GridError, match=message):
        load_grid(str(vit_grid(tmp_path, {"ext": entry})))


def test_a_checkpoint_may_not_take_a_method_name(tmp_path):
    with pytest.raises(GridError, match="'mim' must differ from every method name"):
        load_grid(str(vit_grid(tmp_path, {"mim": {"path": "w.pt", "format": "timm"}})))


def test_timm_weights_need_a_vit_encoder(tmp_path):
    timm_vit_s16(tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="'unet2d_xs' is a cnn net"):
        resolve_checkpoint(
            "ext", {"path": str(tmp_path / "w.pt"), "format": "timm", "encoder": "unet2d_xs"}, 64
        )


def test_a_cmrbench_checkpoint_takes_encoder_and_parts_from_its_job_spec(tmp_path):
    torch.manual_seed(0)
    net = create_net("unet2d_xs", num_classes=1, deep_supervision=False)
    torch.save({"net": net.state_dict()}, tmp_path / "checkpoint.pt")
    (tmp_path / "spec.json").write_text(json.dumps({"method": "mim", "encoder": "unet2d_xs"}))
    spec = resolve_checkpoint(
        "mine", {"path": str(tmp_path / "checkpoint.pt"), "format": "cmrbench"}, 32
    )
    assert (spec.encoder, spec.parts) == ("unet2d_xs", ("encoder", "decoder"))
    with pytest.raises(CheckpointError, match="declares encoder 'unet2d_s'.*used 'unet2d_xs'"):
        resolve_checkpoint(
            "mine",
            {"path": str(tmp_path / "checkpoint.pt"), "format": "cmrbench", "encoder": "unet2d_s"},
            32,
        )


@pytest.mark.slow
def test_an_exported_mim_checkpoint_reproduces_the_mim_cells_of_its_run(tmp_path, cmrbench_env):
    first, second = tmp_path / "first", tmp_path / "second"
    proc = run_cli(
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--methods",
            "mim",
            "--budgets",
            "1",
            "--out",
            str(first),
            "--quiet",
            "--no-report",
        ],
        cmrbench_env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (job,) = (first / "pretrain").glob("mim_*/checkpoint.pt")
    exported = tmp_path / "export" / "mim_unet.pt"
    exported.parent.mkdir()
    shutil.copy(job, exported)
    proc = run_cli(
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--budgets",
            "1",
            "--out",
            str(second),
            "--checkpoint",
            f"mim_export={exported},format=cmrbench,encoder=unet2d_xs,parts=encoder+decoder",
            "--only",
            "method=mim_export",
            "--quiet",
            "--no-report",
        ],
        cmrbench_env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (mim_cell,) = (first / "cells").glob("mim_*")
    (ext_cell,) = (second / "cells").glob("mim_export_*")
    columns = [
        "subject",
        "phase",
        "class",
        "annotated",
        "dsc",
        "hd95_mm",
        "vol_pred_ml",
        "vol_ref_ml",
    ]
    frames = [
        pd.read_parquet(c / "subjects.parquet")[columns]
        .sort_values(columns[:3])
        .reset_index(drop=True)
        for c in (mim_cell, ext_cell)
    ]
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
    results = [json.loads((c / "result.json").read_text()) for c in (mim_cell, ext_cell)]
    assert results[0]["init_weights_sha256"] == results[1]["init_weights_sha256"]
    assert results[1]["method"] == "mim_export"
    transfers = [
        json.loads((c / "transfer.json").read_text())["parts"] for c in (mim_cell, ext_cell)
    ]
    assert transfers[0] == transfers[1]


def test_checkpoint_cells_use_the_pretrained_fine_tuning_lr_of_their_encoder_family(tmp_path):
    timm_vit_s16(tmp_path / "w.pt")
    grid = vit_grid(tmp_path, {"ext": {"path": "w.pt", "format": "timm", "encoder": "vit_small"}})
    raw = yaml.safe_load(grid.read_text())
    raw["finetune"]["families"] = {"vit": {"lr": 3e-4, "lr_pretrained": 1e-4}}
    grid.write_text(yaml.safe_dump(raw))
    cells = plan_grid(load_grid(str(grid))).cells
    lrs = {c.method: c.finetune.optim.lr for c in cells}
    assert lrs == {"scratch": 3e-4, "ext": 1e-4}
