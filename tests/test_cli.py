"""The command line: listings, clear errors for unknown names and impossible budgets."""

from __future__ import annotations

import os
import re
import stat
import zipfile

import pytest
from click.testing import CliRunner

from cmrbench.cli import main
from support.cli import TINY_GRID
from support.real_data import SUNNYBROOK, needs_sunnybrook


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_shows_nets_methods_datasets_and_grids(cmrbench_env):
    nets = invoke("list", "nets").output
    assert "unet2d " in nets and "33.47 M params" in nets and "vit_tiny" in nets
    methods = invoke("list", "methods").output
    for name in ("scratch", "simclr", "pcl", "dino", "mim", "mim_enc"):
        assert f"\n{name} " in "\n" + methods
    assert "encoder+decoder" in methods and "methods/mim.py" in methods
    assert {"phantom", "acdc", "mnms", "mnms2", "mnms+mnms2", "sunnybrook"} <= {
        line.split()[0] for line in invoke("list", "datasets").output.splitlines()
    }
    assert {"smoke", "pipeline", "paper", "full"} <= {
        line.split()[0] for line in invoke("list", "grids").output.splitlines()
    }


def test_unknown_method_fails_with_the_list_of_valid_ones(cmrbench_env):
    result = invoke("run", "--grid", str(TINY_GRID), "--methods", "simclear", "--dry-run")
    assert result.exit_code != 0
    assert "unknown method 'simclear'" in result.output and "simclr" in result.output


def test_unknown_grid_and_dataset_fail_with_valid_names(cmrbench_env):
    result = invoke("run", "--grid", "smok", "--dry-run")
    assert (
        result.exit_code != 0
        and "unknown grid 'smok'" in result.output
        and "smoke" in result.output
    )
    result = invoke("run", "--grid", str(TINY_GRID), "--dataset", "acdcc", "--dry-run")
    assert result.exit_code != 0 and "acdcc" in result.output and "sunnybrook" in result.output


def test_budget_larger_than_the_training_set_fails_before_anything_runs(cmrbench_env, tmp_path):
    result = invoke(
        "run", "--grid", str(TINY_GRID), "--budgets", "1,9", "--out", str(tmp_path / "run")
    )
    assert result.exit_code != 0
    assert "label budget 9 is larger than the 4 training subjects" in result.output
    assert not (tmp_path / "run" / "cells").exists()


def test_only_that_selects_no_cell_fails_and_leaves_run_json_untouched(cmrbench_env, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    earlier = '{"grid": "tiny", "planned_cells": [{"method": "scratch"}]}\n'
    (run_dir / "run.json").write_text(earlier)
    result = invoke("run", "--grid", str(TINY_GRID), "--only", "method=mmi", "--out", str(run_dir))
    assert result.exit_code != 0
    assert "--only 'method=mmi' selects none of the grid's 2 cells" in result.output
    assert "method: scratch" in result.output
    assert (run_dir / "run.json").read_text() == earlier
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]
    fresh = invoke(
        "run", "--grid", str(TINY_GRID), "--only", "budget=2", "--out", str(tmp_path / "fresh")
    )
    assert fresh.exit_code != 0 and "budget: 1, 3" in fresh.output
    assert not (tmp_path / "fresh").exists()


def test_dry_run_lists_jobs_and_estimates_compute(cmrbench_env, tmp_path):
    result = invoke(
        "run",
        "--grid",
        str(TINY_GRID),
        "--methods",
        "scratch,mim",
        "--dry-run",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "1 pretraining jobs, 4 fine-tuning cells" in out
    assert out.count("[  todo]") == 5
    assert "pretrain mim on unet2d_xs: " in out and "steps × " in out and "total: " in out
    assert len(re.findall(r"\[  todo\] \S+.*  ~\d+\.\d\d GB\n", out)) == 5  # each job's peak
    assert "peak memory per job (RAM" in out and "  largest: " in out
    assert re.search(r"each job may use: \d+\.\d\d GB \(", out)
    assert f"grid tiny ({TINY_GRID} (with command-line overrides))" in out.splitlines()
    plain = invoke("run", "--grid", str(TINY_GRID), "--dry-run", "--out", str(tmp_path / "run"))
    assert f"grid tiny ({TINY_GRID})" in plain.output.splitlines()  # no overrides, no mention


@needs_sunnybrook
def test_data_check_summarises_real_sunnybrook_and_lists_problems_by_file(cmrbench_env, tmp_path):
    root = SUNNYBROOK
    ok = invoke("data", "check", "--dataset", "sunnybrook", "--root", str(root))
    assert ok.exit_code == 0, ok.output
    for line in (
        "subjects   4 loaded of 4 listed",
        "frames     20",
        "slices     10–13",
        "spacing    dz 8.00–10.00, dy 1.29–1.37, dx 1.29–1.37 mm",
        "annotated  LV in 4, MYO in 4, RV in 0",
        "no problems",
    ):
        assert line in ok.output
    broken = tmp_path / "acdc"
    (broken / "patient001").mkdir(parents=True)
    (broken / "patient001" / "Info.cfg").write_text("ED: 1\nES: 3\nGroup: NOR\nNbFrame: 5\n")
    bad = invoke("data", "check", "--dataset", "acdc", "--root", str(broken))
    assert bad.exit_code != 0
    assert "patient001" in bad.output


@pytest.mark.parametrize("flag", ["--option", "--dataset-option"])
def test_option_and_its_alias_dataset_option_set_a_dataset_option(cmrbench_env, tmp_path, flag):
    # The tiny grid's phantom has 4 training subjects; n_train=9 makes budget 9 possible.
    args = [
        "run",
        "--grid",
        str(TINY_GRID),
        "--budgets",
        "9",
        "--dry-run",
        "--out",
        str(tmp_path / "run"),
    ]
    assert "larger than the 4 training subjects" in invoke(*args).output
    result = invoke(*args, flag, "n_train=9")
    assert result.exit_code == 0, result.output
    assert "2 fine-tuning cells" not in result.output and "1 fine-tuning cells" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "slurm", "--jobs", "2"], "--jobs 2 is for the local executor"),
        (
            ["--executor", "slurm", "--devices", "0,1"],
            "--devices 0,1 cannot be used with --executor slurm",
        ),
        (["--slurm", "partition=gpu"], "--slurm partition=gpu needs --executor slurm"),
        (
            ["--executor", "slurm", "--slurm", "nodes=2"],
            "unknown Slurm option(s) ['nodes']; allowed: account, array_parallelism, constraint, "
            "cpus_per_task, gpus_per_node, mem_gb, partition, qos, time_min",
        ),
        (
            ["--executor", "slurm", "--slurm", "time_min=1:00:00"],
            "time_min (the grid's 'slurm' section or --slurm key=value) must be a whole number "
            ">= 1, got '1:00:00'",
        ),
        (["--slurm", "partition"], "'partition': expected key=value"),
        (["--devices", "0,1"], "--devices lists 2 devices (0,1) but --jobs is 1"),
    ],
)
def test_flags_of_another_executor_fail_and_write_nothing(cmrbench_env, tmp_path, args, message):
    result = invoke(
        "run",
        "--grid",
        str(TINY_GRID),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        "--no-report",
        *args,
    )
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "run" / "cells").exists()


def test_the_cli_prints_a_user_error_but_shows_the_traceback_of_a_bug(cmrbench_env, monkeypatch):
    from cmrbench.benchmark import api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(api, "plan_run", broken)
    bug = CliRunner().invoke(main, ["run", "--grid", str(TINY_GRID), "--dry-run"])
    assert isinstance(bug.exception, ZeroDivisionError) and "Error:" not in bug.output
    user = CliRunner().invoke(main, ["run", "--grid", "smok", "--dry-run"])
    assert user.exit_code == 1 and user.output.startswith("Error: unknown grid 'smok'")


@pytest.mark.parametrize(
    "error",
    [
        "cmrbench.benchmark.grid:GridError",
        "cmrbench.datasets.base:DatasetError",
        "cmrbench.datasets.subject:SubjectError",
        "cmrbench.datasets.splits:SplitError",
        "cmrbench.benchmark.checkpoints:CheckpointError",
        "cmrbench.plugins:PluginDirError",
        "cmrbench.registry:UnknownNameError",
        "cmrbench.registry:DuplicateNameError",
        "cmrbench.typed:ConfigError",
        "cmrbench.benchmark.slurm:SlurmOptionError",
        "cmrbench.benchmark.slurm:SlurmSubmitError",
        "cmrbench.benchmark.runner:RunOptionError",
        "cmrbench.reports.publish:PublishError",
        "cmrbench.store:StoreError",
        "cmrbench.benchmark.transfer:TransferError",
        "cmrbench.benchmark.slurm:SlurmCommandError",
        "cmrbench.transforms.augment:AugmentError",
        "cmrbench.transforms.masking:MaskingError",
        "cmrbench.reports.site:SitePathError",
        "cmrbench.reports.leaderboard:LeaderboardFormatError",
        "cmrbench.benchmark.api:NotEnoughMemoryError",
        "cmrbench.benchmark.api:UnguardedRunError",
        "cmrbench.benchmark.devices:MemoryLimitError",
        "cmrbench.benchmark.executors:WorkerStartError",
    ],
)
def test_every_error_the_cli_reports_is_a_cmrbench_error(error):
    # The CLI used to catch these by name; now it catches only CmrbenchError.
    import importlib

    from cmrbench.errors import CmrbenchError

    module, name = error.split(":")
    assert issubclass(getattr(importlib.import_module(module), name), CmrbenchError)


def test_list_grids_shows_every_description_whole(cmrbench_env):
    from cmrbench.benchmark.grid import builtin_grids, grid_description, load_grid

    output = invoke("list", "grids").output
    words = " ".join(output.split())
    for name in builtin_grids():
        description = grid_description(load_grid(name))
        assert f"{name} {' '.join(description.split())}" in words
    assert "(CPU, about 10 min)" in words  # the end of smoke's long one


def test_list_methods_describes_each_method_from_its_class_docstring(cmrbench_env, tmp_path):
    from cmrbench.plugins import unload_plugins

    lines = invoke("list", "methods").output.splitlines()
    assert lines[lines.index(next(line for line in lines if line.startswith("scratch ")))] == (
        "scratch    No pretraining: fine-tuning starts from random weights (the study's baseline)."
    )
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "quiet.py").write_text(
        '"""`quiet`: a plugin whose class has no docstring."""\n'
        "from cmrbench.methods import METHODS\nfrom cmrbench.methods.scratch import Scratch\n\n\n"
        "@METHODS.register\nclass Quiet(Scratch):\n    name = 'quiet'\n"
    )
    (plugins / "told.py").write_text(
        "from cmrbench.methods import METHODS\nfrom cmrbench.methods.scratch import Scratch\n\n\n"
        '@METHODS.register\nclass Told(Scratch):\n    """Told: the class docstring\'s first\n'
        '    paragraph, on one line.\n\n    Not this one.\n    """\n\n    name = \'told\'\n'
    )
    try:
        output = invoke("list", "methods", "--plugins", str(plugins)).output
    finally:
        unload_plugins(plugins)
    assert "\ntold       Told: the class docstring's first paragraph, on one line.\n" in output
    assert "\nquiet      `quiet`: a plugin whose class has no docstring.\n" in output
    assert "Not this one" not in output


def test_export_refuses_an_existing_file_without_force_and_writes_the_usual_permissions(tmp_path):
    from support.synthetic_store import write_synthetic_store

    write_synthetic_store(tmp_path / "run")
    out = tmp_path / "results.zip"
    out.write_text("someone's file")
    refused = invoke("export", str(tmp_path / "run"), "--out", str(out))
    assert refused.exit_code == 1
    assert f"{out} already exists (a file); choose another --out, or pass --force" in refused.output
    assert out.read_text() == "someone's file"
    mask = os.umask(0o022)
    try:
        forced = invoke("export", str(tmp_path / "run"), "--out", str(out), "--force")
        fresh = invoke("export", str(tmp_path / "run"), "--out", str(tmp_path / "fresh.zip"))
    finally:
        os.umask(mask)
    assert forced.exit_code == 0 and fresh.exit_code == 0, forced.output + fresh.output
    assert zipfile.is_zipfile(out)
    for path in (out, tmp_path / "fresh.zip"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # 0o666 under umask 022, not 0o600
    folder = invoke("export", str(tmp_path / "run"), "--out", str(tmp_path))
    assert (
        folder.exit_code == 1 and "already exists (a folder); choose another --out" in folder.output
    )


def test_a_missing_sunnybrook_root_says_where_the_data_come_from(cmrbench_env, tmp_path):
    result = invoke("run", "--grid", "sunnybrook", "--root", str(tmp_path / "nowhere"), "--dry-run")
    assert result.exit_code == 1
    assert f"root {tmp_path / 'nowhere'} does not exist or is not a folder" in result.output
    assert "Cardiac Atlas Project" in result.output and "images/<SCD id>/*.dcm" in result.output
    assert "link.csv" in result.output
