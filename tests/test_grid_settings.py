"""One typed path for every grid setting, and optimizers that declare what they read.

Every section of a grid (``finetune`` and its families, blocks' ``finetune``, ``pretrain``
and its methods and their families, ``dataset`` and the adapter's options, ``checkpoints``,
``slurm``, the seeds) is typed when the grid is read: ``1e-4`` (a string in YAML 1.1) is a
number, a misspelt key or a wrong type is a `GridError` naming the file, the key and the
allowed keys. An optimizer setting the optimizer does not read is refused wherever it is
written, and never reaches a spec's JSON or key.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmrbench.benchmark.api import plan_run
from cmrbench.benchmark.grid import GridError, load_grid, override, parse_grid, plan_grid, read_yaml
from cmrbench.benchmark.spec import canonical_json
from cmrbench.cli import main
from cmrbench.datasets import DATASETS, DatasetAdapter, DatasetError, create_dataset
from cmrbench.optim import OPTIMIZER_SETTINGS, OptimConfig
from cmrbench.typed import field_names
from support.cli import TINY_GRID

PHANTOM = {
    "name": "phantom",
    "options": {"n_train": 4, "n_val": 1, "n_test": 2},
    "image_size": 32,
    "spacing_mm": 5.0,
}
GRID = {
    "dataset": PHANTOM,
    "encoders": ["unet2d_xs"],
    "methods": ["scratch", "mim"],
    "budgets": [1],
    "seeds": [0],
}
COMMON_OPTIM = {
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "warmup_fraction",
    "min_lr",
    "no_decay_bias_norm",
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- typed sections


def test_a_learning_rate_written_1e_4_is_a_number_in_every_finetune_section(tmp_path: Path) -> None:
    # YAML 1.1 needs a dot for a float: PyYAML reads 1e-4 and 5e-5 as strings
    path = _write(
        tmp_path,
        """
        dataset: {name: phantom, image_size: 32, spacing_mm: 5.0}
        encoders: [unet2d_xs, vit_xs]
        methods: [scratch, mim]
        budgets: [1]
        finetune: {lr: 1e-4, epochs: 2e1}
        blocks:
          - {name: base}
          - name: families
            budgets: [2]          # a cell comes from one block (issue 25): another budget
            finetune:
              families: {cnn: {lr_pretrained: 5e-5}, vit: {weight_decay: 1e-2}}
        """,
    )
    assert read_yaml("lr: 1e-4") == {"lr": "1e-4"}
    cells = plan_grid(load_grid(str(path))).cells
    assert {c.finetune.optim.lr for c in cells if c.method == "scratch"} == {1e-4}
    assert {c.finetune.epochs for c in cells} == {20.0}
    block_mim = {
        c.finetune.optim.lr for c in cells if (c.method, c.encoder) == ("mim", "unet2d_xs")
    }
    assert block_mim == {1e-4, 5e-5}  # block 1: the grid's lr; block 2: lr_pretrained
    vit_decay = {c.finetune.optim.weight_decay for c in cells if c.encoder == "vit_xs"}
    assert vit_decay == {0.05, 0.01}  # ViT-XS's own AdamW decay, then the block's
    assert isinstance(cells[0].finetune.optim.lr, float)


def test_plan_run_reads_1e_4_as_the_dry_run_does(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY_GRID.read_text().replace("epochs: 3", "epochs: 3\n  lr: 1e-4"))
    planned = plan_run(str(path), progress=False)
    assert {c.finetune.optim.lr for c in planned.cells} == {1e-4}


def test_a_misspelt_finetune_key_fails_naming_file_key_and_allowed_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        encoders: [unet2d_xs]
        methods: [scratch]
        budgets: [2]
        finetune: {learning_rate: 0.1}
        """,
    )
    with pytest.raises(GridError) as error:
        load_grid(str(path))
    assert str(error.value).startswith(f"{path}: 'finetune': unknown key 'learning_rate'; valid: ")
    assert ", lr, lr_pretrained, " in str(error.value)


def test_dry_run_stops_on_a_misspelt_finetune_key_with_an_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path, TINY_GRID.read_text().replace("epochs: 3", "epochs: 3\n  learning_rate: 0.1")
    )
    result = CliRunner().invoke(
        main, ["run", "--grid", str(path), "--dry-run", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 1 and result.exc_info[0] is SystemExit
    assert f"Error: {path}: 'finetune': unknown key 'learning_rate'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"finetune": {"epochs": "many"}}, "'finetune': key 'epochs' is 'many'; expected a number"),
        (
            {"finetune": {"nesterov": "yes"}},
            "'finetune': key 'nesterov' is 'yes'; expected true or false",
        ),
        (
            {"finetune": {"families": {"cnn": {"batch_size": 1.5}}}},
            "'finetune.families.cnn': key 'batch_size' is 1.5; expected a whole number",
        ),
        (
            {"finetune": {"families": {"vitt": {"lr": 0.1}}}},
            "'finetune.families': unknown key 'vitt'; valid: cnn, vit",
        ),
        (
            {"blocks": [{"finetune": {"val_every": "often"}}]},
            "'blocks[0].finetune': key 'val_every' is 'often'; expected a whole number",
        ),
        (
            {"blocks": [{"finetune": {"dice": "soft"}}]},
            "in 'blocks[0].finetune': dice: unknown value 'soft'; allowed: sample, batch",
        ),
        ({"pretrain": {"seed": "one"}}, "'pretrain': key 'seed' is 'one'; expected a whole number"),
        (
            {"pretrain": {"epoch": 3}},
            "'pretrain': unknown key 'epoch'; valid: batch_size, center, "
            "epochs, methods, pool, precision, seed",
        ),
        (
            {"pretrain": {"methods": {"mim": {"epochs": [1]}}}},
            "'pretrain.methods.mim': key 'epochs' is [1]; expected a number",
        ),
        (
            {"pretrain": {"methods": {"mim": {"families": {"cnn": {"batch_size": "big"}}}}}},
            "'pretrain.methods.mim.families.cnn': key 'batch_size' is 'big'; "
            "expected a whole number",
        ),
        (
            {"pretrain": {"methods": {"mim": {"hparams": {"mask_ratio": "most"}}}}},
            "'pretrain.methods.mim.hparams': method 'mim': hyper-parameter 'mask_ratio' is 'most'; "
            "expected a number",
        ),
        (
            {"dataset": {**PHANTOM, "image_size": "big"}},
            "'dataset': key 'image_size' is 'big'; expected a whole number",
        ),
        (
            {"dataset": {**PHANTOM, "spacing": 5.0}},
            "'dataset': unknown key 'spacing'; valid: "
            "image_size, name, options, options_for, root, scale, "
            "spacing_mm",
        ),
        (
            {"dataset": {**PHANTOM, "options": {"n_trian": 3}}},
            "'dataset.options': dataset 'phantom': unknown option 'n_trian'; valid: seed, n_train, "
            "n_val, n_test, vendors, heart_offset_mm",
        ),
        (
            {"dataset": {**PHANTOM, "options": {"n_train": "four"}}},
            "'dataset.options': dataset 'phantom': option 'n_train' is 'four'; "
            "expected a whole number",
        ),
        (
            {"dataset": {**PHANTOM, "options_for": {"acdc": {"valdation": "none"}}}},
            "'dataset.options_for.acdc': dataset 'acdc': unknown option 'valdation'; valid: split, "
            "stratify, validation",
        ),
        (
            {"checkpoints": {"ext": {"path": "w.pt", "format": "timm", "strict": "yes"}}},
            "'checkpoints.ext': key 'strict' is 'yes'; expected true or false",
        ),
        ({"slurm": {"mem_gb": "8G"}}, "'slurm': key 'mem_gb' is '8G'; expected a number"),
        (
            {"slurm": {"nodes": 2}},
            "'slurm': unknown key 'nodes'; valid: account, array_parallelism, "
            "constraint, cpus_per_task, gpus_per_node, mem_gb, partition, qos, "
            "time_min",
        ),
        ({"seeds": [0, "a"]}, "'seeds' value is 'a'; expected a whole number"),
        ({"name": 3}, "'top level': key 'name' is 3; expected a string"),
    ],
)
def test_a_wrong_key_or_type_in_any_section_names_file_section_key_and_what_is_allowed(
    section: dict, message: str
) -> None:
    with pytest.raises(GridError) as error:
        parse_grid({**GRID, **section}, "my.yaml")
    assert str(error.value) == f"my.yaml: {message}"


def test_every_value_of_a_section_is_stored_as_its_type() -> None:
    grid = parse_grid(
        {
            **GRID,
            "dataset": {
                **PHANTOM,
                "image_size": 32.0,
                "spacing_mm": 5,
                "options": {"n_train": 4.0, "n_val": 1.0},
            },
            "seeds": ["0", 1.0],
            "finetune": {"batch_size": 8.0, "lr": "2e-2"},
            "pretrain": {"seed": 2.0, "methods": {"mim": {"lr": "1e-3"}}},
            "slurm": {"time_min": 30.0},
        },
        "my.yaml",
    )
    assert (grid.data.image_size, grid.data.spacing_mm) == (32, 5.0)
    assert dict(grid.data.options) == {"n_train": 4, "n_val": 1}
    assert all(type(v) is int for v in dict(grid.data.options).values())
    assert grid.blocks[0].seeds == (0, 1) and grid.slurm == {"time_min": 30}
    plan = plan_grid(grid)
    assert {(c.finetune.batch_size, c.finetune.optim.lr) for c in plan.cells} == {(8, 0.02)}
    (mim,) = plan.pretrain
    assert (mim.seed, mim.optim.lr) == (2, 0.001)


def test_an_unknown_dataset_option_on_the_command_line_fails_naming_adapter_key_and_valid_keys(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    run = runner.invoke(
        main,
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--option",
            "n_trian=8",
            "--dry-run",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert run.exit_code == 1 and "Traceback" not in run.output
    assert (
        "'dataset.options': dataset 'phantom': unknown option 'n_trian'; valid: seed, "
        "n_train, n_val, n_test, vendors, heart_offset_mm"
    ) in run.output
    check = runner.invoke(
        main,
        [
            "data",
            "check",
            "--dataset",
            "acdc",
            "--root",
            str(tmp_path),
            "--option",
            "valdation=none",
        ],
    )
    assert check.exit_code == 1
    assert (
        "Error: dataset 'acdc': unknown option 'valdation'; valid: split, stratify, validation"
    ) in check.output
    assert dict(
        override(load_grid(str(TINY_GRID)), dataset_options={"n_train": 6.0}).data.options
    ) == {"n_train": 6, "n_val": 1, "n_test": 2}


def test_list_datasets_verbose_shows_each_adapters_options_and_defaults() -> None:
    listed = CliRunner().invoke(main, ["list", "datasets", "-v"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    acdc, phantom = (
        next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
        for name in ("acdc", "phantom")
    )
    assert lines[acdc + 1] == f"{'':<12} options: split=None, stratify=None, validation='holdout'"
    assert lines[phantom + 1] == (
        f"{'':<12} options: seed=0, n_train=40, n_val=8, n_test=24, "
        f"vendors=None, heart_offset_mm=None"
    )


def test_an_adapter_that_declares_no_options_takes_none() -> None:
    @DATASETS.register
    class Optionless(DatasetAdapter):
        """An adapter with no options (for this test)."""

        name = "optionless_for_test"
        needs_root = False

        def subject_ids(self) -> list[str]:
            return []

        def load(self, subject_id):
            raise NotImplementedError

        def default_split(self) -> dict[str, list[str]]:
            return {"train": [], "val": [], "test": []}

    try:
        assert create_dataset("optionless_for_test").options == {}
        with pytest.raises(
            DatasetError,
            match="dataset 'optionless_for_test': unknown option 'split'; valid: \\(none\\)",
        ):
            create_dataset("optionless_for_test", split={"train": []})
    finally:
        DATASETS.remove("optionless_for_test")


# --------------------------------------------------------------------------- optimizer reads


def test_an_sgd_setting_of_betas_is_refused_in_finetune_and_pretrain_sections() -> None:
    with pytest.raises(GridError) as error:
        parse_grid({**GRID, "finetune": {"betas": [0.9, 0.95]}}, "my.yaml")
    assert str(error.value).startswith(
        "my.yaml: 'finetune' for encoder 'unet2d_xs' of family "
        "'cnn' (a setting for one family goes under "
        "'finetune.families.<family>'): optimizer 'sgd' does not "
        "read betas; it reads lr, weight_decay, momentum, nesterov"
    )
    with pytest.raises(
        GridError, match="my.yaml: 'pretrain.methods.mim': optimizer 'sgd' does not read betas"
    ):
        parse_grid({**GRID, "pretrain": {"methods": {"mim": {"betas": [0.9, 0.95]}}}}, "my.yaml")
    with pytest.raises(
        GridError, match="'pretrain.methods.mim': optimizer 'adamw' does not read momentum"
    ):
        parse_grid(
            {
                **GRID,
                "encoders": ["vit_xs"],
                "pretrain": {"methods": {"mim": {"families": {"vit": {"momentum": 0.9}}}}},
            },
            "my.yaml",
        )


def test_switching_optimizer_keeps_the_schedule_and_drops_the_old_optimizers_settings() -> None:
    grid = parse_grid(
        {**GRID, "methods": ["scratch"], "finetune": {"optimizer": "adamw"}}, "my.yaml"
    )
    (cell,) = plan_grid(grid).cells
    optim = cell.finetune.optim
    # U-Net's SGD: lr 0.01, weight decay 3e-5, poly; momentum 0.99 and Nesterov do not carry over
    assert (optim.optimizer, optim.lr, optim.weight_decay, optim.schedule) == (
        "adamw",
        0.01,
        3e-5,
        "poly",
    )
    assert (optim.momentum, optim.nesterov, optim.betas) == (None, None, (0.9, 0.999))


def test_only_the_settings_an_optimizer_reads_enter_a_specs_json_and_key() -> None:
    grid = {**GRID, "encoders": ["unet2d_xs", "vit_xs"], "methods": ["scratch"]}
    cells = {c.encoder: c for c in plan_grid(parse_grid(grid, "my.yaml")).cells}
    settings = {
        enc: set(json.loads(canonical_json(c))["finetune"]["optim"]) for enc, c in cells.items()
    }
    assert settings == {
        "unet2d_xs": COMMON_OPTIM | {"momentum", "nesterov"},
        "vit_xs": COMMON_OPTIM | {"betas"},
    }
    assert set(field_names(OptimConfig)) == COMMON_OPTIM | set(OPTIMIZER_SETTINGS)
    assert "betas" not in canonical_json(cells["unet2d_xs"])
    unet = cells["unet2d_xs"]
    assert unet.key == hashlib.sha256(canonical_json(unet).encode()).hexdigest()[:12]
    # a ViT-only setting changes the ViT cell's key and leaves the U-Net cell's alone
    tuned = {**grid, "finetune": {"families": {"vit": {"betas": [0.9, 0.95]}}}}
    tuned_cells = {c.encoder: c for c in plan_grid(parse_grid(tuned, "my.yaml")).cells}
    assert tuned_cells["unet2d_xs"].key == unet.key
    assert tuned_cells["vit_xs"].key != cells["vit_xs"].key
    assert tuned_cells["vit_xs"].finetune.optim.betas == (0.9, 0.95)
