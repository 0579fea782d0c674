"""Method configurations are typed, resolved at planning time and part of the keys: a changed
default or version changes the key, a typo or a wrong type fails at planning, a method that
transfers nothing to an encoder family is refused, and the `full` grid pretrains ViTs with
AdamW."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmrbench.benchmark.grid import GridError, load_grid, override, parse_grid, plan_grid
from cmrbench.benchmark.spec import canonical_json, spec_from_json
from cmrbench.cli import main
from cmrbench.methods import get_method
from cmrbench.methods.base import MethodConfigError
from cmrbench.methods.dino import DINO, DINOConfig
from cmrbench.methods.simclr import SimCLR, SimCLRConfig

TINY = {
    "name": "tiny",
    "dataset": {"name": "phantom", "image_size": 32, "spacing_mm": 5.0},
    "encoders": ["unet2d_xs"],
    "methods": ["scratch", "simclr", "dino", "mim", "mim_enc"],
    "budgets": [2],
    "seeds": [0],
}


def _plan(grid: dict, **kw):
    return plan_grid(parse_grid(grid, "test grid"), **kw)


def _pretrain(grid: dict, method: str, encoder: str = "unet2d_xs"):
    (spec,) = [p for p in _plan(grid).pretrain if p.method == method and p.encoder == encoder]
    return spec


def _with_pretrain(settings: dict, **axes) -> dict:
    """`TINY` with ``pretrain.methods`` = ``settings`` and some axes replaced."""
    return {**TINY, **axes, "pretrain": {"methods": settings}}


def test_pretrain_spec_holds_every_resolved_hyper_parameter_net_kwargs_and_version() -> None:
    dino = _pretrain(_with_pretrain({"dino": {"hparams": {"out_dim": 512}}}), "dino")
    expected = dataclasses.asdict(DINOConfig(out_dim=512))
    assert dict(dino.hparams) == expected and len(expected) == 18
    assert dino.method_version == 1 and dino.net_kwargs == ()
    mim = _pretrain(TINY, "mim")
    assert dict(mim.net_kwargs) == {"num_classes": 1, "deep_supervision": False}
    transfers = {c.method: c.transfers for c in _plan(TINY).cells}
    assert transfers == {
        "scratch": (),
        "simclr": ("encoder",),
        "dino": ("encoder",),
        "mim": ("encoder", "decoder"),
        "mim_enc": ("encoder",),
    }


def test_changing_a_methods_default_changes_the_pretraining_and_cell_keys(monkeypatch) -> None:
    before = _plan(TINY)

    @dataclasses.dataclass(frozen=True)
    class ColderSimCLR(SimCLRConfig):
        temperature: float = 0.05

    monkeypatch.setattr(SimCLR, "config_class", ColderSimCLR)
    after = _plan(TINY)
    keys_before = {p.method: p.key for p in before.pretrain}
    keys_after = {p.method: p.key for p in after.pretrain}
    assert {m for m in keys_before if keys_before[m] != keys_after[m]} == {"simclr"}
    cells = {c.method: c.key for c in before.cells}
    assert {c.method for c in after.cells if cells[c.method] != c.key} == {"simclr"}


def test_bumping_a_methods_version_changes_its_pretraining_key(monkeypatch) -> None:
    key = _pretrain(TINY, "dino").key
    monkeypatch.setattr(DINO, "version", 2)
    spec = _pretrain(TINY, "dino")
    assert spec.method_version == 2 and spec.key != key


def test_a_hyper_parameter_typo_fails_when_the_grid_is_read_naming_method_key_and_valid_keys() -> (
    None
):
    with pytest.raises(GridError) as err:
        parse_grid(_with_pretrain({"simclr": {"hparams": {"temprature": 0.2}}}), "my.yaml")
    message = str(err.value)
    assert all(
        part in message
        for part in ("my.yaml", "'simclr'", "'temprature'", "temperature, hidden_dim, out_dim")
    )


def test_dry_run_stops_on_a_hyper_parameter_typo_before_anything_runs(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        textwrap.dedent("""
        encoders: [unet2d_xs]
        methods: [scratch, dino]
        budgets: [2]
        pretrain:
          methods:
            dino: {hparams: {n_local_crop: 2}}
        """)
    )
    result = CliRunner().invoke(
        main, ["run", "--grid", str(grid), "--dry-run", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code != 0
    assert "'dino'" in result.output and "'n_local_crop'" in result.output
    assert "n_local_crops" in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("temperature", "warm", "expected a number"),
        ("hidden_dim", 1.5, "expected a whole number"),
        ("out_dim", True, "expected a whole number"),
        ("temperature", -1, "temperature -1.0 must be > 0"),
    ],
)
def test_a_wrong_type_or_value_fails_at_planning_naming_method_and_key(
    key, value, expected
) -> None:
    with pytest.raises(GridError) as err:
        parse_grid(_with_pretrain({"simclr": {"hparams": {key: value}}}), "my.yaml")
    assert "'simclr'" in str(err.value) and key in str(err.value) and expected in str(err.value)


def test_yaml_values_are_coerced_to_the_field_types() -> None:
    # YAML 1.1 reads 1e-1 as a string and [a, b] as a list; ints are fine for floats
    spec = _pretrain(
        _with_pretrain(
            {
                "dino": {
                    "hparams": {
                        "student_temperature": "1e-1",
                        "teacher_momentum": 1,
                        "local_scale": [0.3, 0.5],
                    },
                    "optimizer": "adamw",
                    "betas": [0.9, 0.95],
                    "lr": "2e-3",
                }
            }
        ),
        "dino",
    )
    hparams = dict(spec.hparams)
    assert hparams["student_temperature"] == 0.1 and isinstance(hparams["teacher_momentum"], float)
    assert hparams["local_scale"] == (0.3, 0.5)
    assert spec.optim.betas == (0.9, 0.95) and spec.optim.lr == 0.002
    with pytest.raises(MethodConfigError, match="method 'dino': hyper-parameter 'local_scale'"):
        DINO.resolve_config({"local_scale": [0.3]})


def test_settings_for_a_method_that_reuses_another_ones_pretraining_are_refused() -> None:
    with pytest.raises(GridError, match="pretrain.methods.mim'"):
        parse_grid(_with_pretrain({"mim_enc": {"hparams": {"mask_ratio": 0.5}}}), "my.yaml")


def test_a_method_that_transfers_nothing_to_the_encoders_family_is_a_planning_error(
    monkeypatch,
) -> None:
    monkeypatch.setattr(SimCLR, "transfers", {"cnn": ("encoder",)})
    grid = {**TINY, "encoders": ["unet2d_xs", "vit_xs"], "methods": ["scratch", "simclr"]}
    with pytest.raises(GridError) as err:
        _plan(grid)
    assert all(part in str(err.value) for part in ("'simclr'", "'vit_xs'", "'vit'"))
    assert _plan({**grid, "methods": ["scratch"]}).cells  # scratch transfers nothing anyway


def test_per_family_optimiser_overrides_apply_to_that_family_only() -> None:
    grid = _with_pretrain(
        {"dino": {"weight_decay": 0.01, "families": {"vit": {"lr": 1e-4}}}},
        encoders=["unet2d_xs", "vit_xs"],
        methods=["dino"],
    )
    cnn, vit = _pretrain(grid, "dino"), _pretrain(grid, "dino", "vit_xs")
    assert (cnn.optim.optimizer, cnn.optim.lr, cnn.optim.weight_decay) == ("sgd", 0.0075, 0.01)
    assert (vit.optim.optimizer, vit.optim.lr, vit.optim.weight_decay) == ("adamw", 1e-4, 0.01)
    with pytest.raises(GridError, match="families"):
        parse_grid(_with_pretrain({"dino": {"families": {"vitt": {"lr": 1e-4}}}}), "my.yaml")
    with pytest.raises(GridError, match="unknown optimizer 'adam'"):
        parse_grid(
            _with_pretrain({"dino": {"families": {"vit": {"optimizer": "adam"}}}}), "my.yaml"
        )


def test_full_grid_pretrains_the_unet_with_sgd_and_vit_small_with_the_papers_adamw() -> None:
    grid = override(
        load_grid("full"),
        methods="scratch,simclr,pcl,dino,mim,mim_enc",
        budgets="10",
        seeds="0",
        augmentations="paper",
        settings="default",
    )
    plan = plan_grid(grid)
    assert {c.encoder for c in plan.cells} == {"unet2d", "vit_small"}
    optim = {(p.method, p.encoder): p.optim for p in plan.pretrain}
    assert {m for (m, e), o in optim.items() if e == "unet2d" and o.optimizer == "sgd"} == {
        "simclr",
        "pcl",
        "dino",
        "mim",
    }
    vit = {m: o for (m, e), o in optim.items() if e == "vit_small"}
    assert {o.optimizer for o in vit.values()} == {"adamw"} and len(vit) == 4
    assert (vit["dino"].lr, vit["dino"].weight_decay, vit["dino"].min_lr) == (
        5e-4 * 64 / 256,
        0.04,
        1e-6,
    )
    assert (vit["mim"].lr, vit["mim"].betas, vit["mim"].weight_decay) == (
        1.5e-4 * 128 / 256,
        (0.9, 0.95),
        0.05,
    )
    assert vit["simclr"].lr == pytest.approx(1.5e-4 * 224 / 256)
    assert {c.transfers for c in plan.cells if c.encoder == "vit_small" and c.method == "mim"} == {
        ("encoder",)
    }


def test_specs_with_resolved_configurations_round_trip_through_json() -> None:
    plan = _plan(_with_pretrain({"mim": {"betas": [0.9, 0.95], "optimizer": "adamw"}}))
    for spec in (*plan.pretrain, *plan.cells):
        again = spec_from_json(json.loads(canonical_json(spec)))
        assert again == spec and again.key == spec.key and hash(again) == hash(spec)


def test_list_methods_verbose_prints_each_methods_version_optimisers_and_defaults() -> None:
    result = CliRunner().invoke(main, ["list", "methods", "-v"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "warmup_teacher_temperature_fraction = 0.3" in text and "views = 'study'" in text
    assert "optim (vit): optimizer=adamw" in text and "version 1" in text
    assert "reuses the pretraining job of mim" in text
    assert get_method("mim").resolved_hparams()["mask_ratio"] == 0.75
    assert "mask_ratio = 0.75" in text
