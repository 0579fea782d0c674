"""The Python API (`cmrbench.run_grid`) and the run options every executor passes to its jobs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import cmrbench
from cmrbench.benchmark.devices import cpu_threads
from cmrbench.benchmark.grid import load_grid
from cmrbench.benchmark.runner import RunOptionError, RunOptions
from cmrbench.cli import main
from cmrbench.errors import CmrbenchError
from support.cli import TINY_GRID

ONE_THREAD = RunOptions(threads=1, progress=False)


def per_subject_results(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Each cell folder's per-subject rows, in a fixed order."""
    return {
        path.parent.name: pd.read_parquet(path)
        .sort_values(["subject", "phase", "class"])
        .reset_index(drop=True)
        for path in sorted(run_dir.glob("cells/*/subjects.parquet"))
    }


def test_import_cmrbench_loads_no_torch_until_run_grid_is_used() -> None:
    import subprocess

    probe = (
        "import sys, cmrbench; before = 'torch' in sys.modules; cmrbench.run_grid; "
        "print(before, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_run_grid_from_python_equals_the_cli_and_records_its_thread_count(cmrbench_env, tmp_path):
    summary = cmrbench.run_grid(str(TINY_GRID), tmp_path / "api", options=ONE_THREAD)

    assert (summary.done, summary.cached, summary.busy, summary.failures) == (2, 0, 0, [])
    cli = CliRunner().invoke(
        main,
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--out",
            str(tmp_path / "cli"),
            "--threads",
            "1",
            "--quiet",
            "--no-report",
        ],
        catch_exceptions=False,
    )
    assert cli.exit_code == 0, cli.output
    api_rows, cli_rows = (
        per_subject_results(tmp_path / "api"),
        per_subject_results(tmp_path / "cli"),
    )
    assert sorted(api_rows) == sorted(cli_rows) and len(api_rows) == 2
    for cell, rows in api_rows.items():
        pd.testing.assert_frame_equal(rows, cli_rows[cell], check_exact=True)
    results = [
        json.loads(path.read_text()) for path in (tmp_path / "api").glob("cells/*/result.json")
    ]
    assert len(results) == 2
    for result in results:
        assert result["threads"] == 1 and result["device"].endswith(", 1 threads)")
    info = json.loads((tmp_path / "api" / "run.json").read_text())
    assert info["grid"] == "tiny" and len(info["planned_cells"]) == 2 and info["finished"]


def test_run_grid_takes_a_loaded_grid_and_resumes_a_finished_store(cmrbench_env, tmp_path):
    grid = load_grid(str(TINY_GRID))
    first = cmrbench.run_grid(grid, tmp_path / "run", only="budget=1", options=ONE_THREAD)
    again = cmrbench.run_grid(grid, tmp_path / "run", only="budget=1", options=ONE_THREAD)

    assert (first.done, first.cached) == (1, 0)
    assert (again.done, again.cached) == (0, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"executor": "slurm", "jobs": 2}, "--jobs 2 is for the local executor"),
        (
            {"executor": "slurm", "options": RunOptions(devices=("0",))},
            "--devices 0 cannot be used",
        ),
        ({"slurm": {"partition": "gpu"}}, "--slurm partition=gpu needs --executor slurm"),
        (
            {"executor": "slurm", "slurm": {"nodes": 2}},
            r"unknown Slurm option\(s\) \['nodes'\]; allowed: "
            r"account, array_parallelism, constraint",
        ),
        ({"executor": "cloud"}, "unknown executor 'cloud'; expected one of local, slurm"),
    ],
)
def test_options_of_another_executor_are_errors_before_anything_is_written(
    cmrbench_env, tmp_path, kwargs, message
):
    with pytest.raises(CmrbenchError, match=message):
        cmrbench.run_grid(str(TINY_GRID), tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_more_devices_than_local_workers_is_an_error() -> None:
    from cmrbench.benchmark.executors import LocalExecutor

    plan = None  # refused before the plan is read
    with pytest.raises(RunOptionError, match="--devices lists 2 devices .* but --jobs is 1"):
        LocalExecutor(1).run(plan, Path("unused"), (), RunOptions(devices=("0", "1")))


def test_each_local_worker_gets_one_device_round_robin_and_a_share_of_the_cores() -> None:
    options = RunOptions(devices=("cuda:0", "cuda:1"), compile=True)

    assert [options.for_worker(i, threads=4).devices for i in range(3)] == [
        ("cuda:0",),
        ("cuda:1",),
        ("cuda:0",),
    ]
    worker = options.for_worker(0, threads=4)
    assert (worker.threads, worker.progress, worker.compile) == (4, False, True)
    assert RunOptions(threads=2).for_worker(0, threads=4).threads == 2  # fixed threads win
    assert RunOptions().for_worker(0, threads=4).devices == ()


def test_cpu_threads_holds_the_count_for_the_block_and_restores_it() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with cpu_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_a_device_index_means_that_cuda_device_and_threads_must_be_positive() -> None:
    assert RunOptions(devices=("1",)).device == torch.device("cuda", 1)
    assert RunOptions(devices=("cpu", "cuda")).device == torch.device("cpu")
    with pytest.raises(RunOptionError, match="threads must be at least 1, got 0"):
        RunOptions(threads=0)


# --------------------------------------------------------------------------- memory and threads


def test_a_job_over_the_memory_limit_is_refused_before_anything_is_written(cmrbench_env, tmp_path):
    from cmrbench.benchmark.api import NotEnoughMemoryError

    with pytest.raises(NotEnoughMemoryError) as error:
        cmrbench.run_grid(str(TINY_GRID), tmp_path / "run", options=ONE_THREAD, max_memory_gb=0.001)
    message = str(error.value)
    assert message.startswith("cell scratch on unet2d_xs, budget 3, seed 0")  # the largest job
    assert "cells/scratch_unet2d_xs_b3_paper_s0_" in message
    assert re.search(r"needs about \d+\.\d\d GB of RAM, ", message)
    assert "but each job may use 0.00 GB (--max-memory 0.001); 1 more job(s) exceed it" in message
    assert "(finetune.batch_size in a grid file)" in message and "dataset.image_size" in message
    assert message.endswith("--force to run it anyway. Nothing was run.")
    assert not (tmp_path / "run").exists()


def test_the_memory_limit_from_the_environment_refuses_and_force_runs_anyway(
    cmrbench_env, tmp_path, monkeypatch
):
    monkeypatch.setenv("CMRBENCH_MAX_MEMORY_GB", "0.001")
    args = [
        "run",
        "--grid",
        str(TINY_GRID),
        "--only",
        "budget=1",
        "--threads",
        "1",
        "--quiet",
        "--no-report",
        "--out",
        str(tmp_path / "run"),
    ]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: cell scratch on unet2d_xs, budget 1, seed 0")
    assert "(CMRBENCH_MAX_MEMORY_GB=0.001)" in refused.output and not (tmp_path / "run").exists()
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert (
        "--force: running anyway: cell scratch" in forced.output and "1 jobs run" in forced.output
    )
    monkeypatch.setenv("CMRBENCH_MAX_MEMORY_GB", "lots")
    bad = CliRunner().invoke(main, args)
    assert (
        bad.exit_code == 1
        and "CMRBENCH_MAX_MEMORY_GB='lots': expected a positive number" in bad.output
    )


def test_a_loaded_machine_gives_each_job_one_thread_and_says_so(
    cmrbench_env, tmp_path, monkeypatch, caplog
):
    import os

    from cmrbench.benchmark.devices import shared_threads
    from cmrbench.benchmark.executors import default_threads

    assert shared_threads(1, cores=4, load=3.5) == shared_threads(1, cores=4, load=0.2)
    assert shared_threads(1, cores=4, load=3.5).threads == 4
    assert shared_threads(2, cores=4, load=1.0).threads == 2
    loaded = shared_threads(2, cores=4, load=6.5)
    assert loaded.threads == 1 and "load average 6.5 on 4 cores" in loaded.note
    assert "--threads N sets it" in loaded.note
    assert default_threads(1, 3) == (3, None)  # given threads always win
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert default_threads(1) == (None, None)  # idle: torch's own default
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * os.cpu_count() + 1, 0.0, 0.0))
    with caplog.at_level("WARNING", logger="cmrbench"):
        summary = cmrbench.run_grid(
            str(TINY_GRID), tmp_path / "run", only="budget=1", options=RunOptions(progress=False)
        )
    assert summary.done == 1
    result = json.loads(next((tmp_path / "run").glob("cells/*/result.json")).read_text())
    assert result["threads"] == 1
    assert "other processes keep the cores busy, so each job runs 1 CPU thread" in caplog.text


# --------------------------------------------------------------------------- the README's script


def _readme_python_example() -> str:
    from support.cli import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    return section[section.index("```python\n") + 10 : section.index("```\n", 10)]


@pytest.mark.slow
def test_the_readmes_python_example_runs_as_a_script_with_two_workers(cmrbench_env, tmp_path):
    import subprocess

    example = _readme_python_example()
    assert 'if __name__ == "__main__":' in example and "jobs=2" in example
    # the tiny grid for the smoke grid, and a budget it has, so that the script takes seconds
    script = example.replace('"smoke"', repr(str(TINY_GRID))).replace('budgets="8"', 'budgets="3"')
    assert script.count(repr(str(TINY_GRID))) == 2 and 'budgets="3"' in script
    (tmp_path / "example.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=cmrbench_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[0] == "2 0 []"  # done, cached, failures
    assert len(list((tmp_path / "runs" / "smoke-8").glob("cells/*/result.json"))) == 1

    head, guarded = example.split('if __name__ == "__main__":')
    unguarded = head + "\n".join(line[4:] for line in guarded.splitlines()[1:])
    unguarded = unguarded.replace('"smoke"', repr(str(TINY_GRID))).replace(
        'budgets="8"', 'budgets="3"'
    )
    (tmp_path / "fresh").mkdir()  # nothing done there yet
    (tmp_path / "fresh" / "unguarded.py").write_text(unguarded)
    failed = subprocess.run(
        [sys.executable, "unguarded.py"],
        cwd=tmp_path / "fresh",
        env=cmrbench_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert failed.returncode != 0
    assert "UnguardedRunError: run_grid was called while a worker process imported" in failed.stderr
    assert "WorkerStartError: local worker process" in failed.stderr
    assert 'under `if __name__ == "__main__":`' in failed.stderr


def test_run_json_describes_a_method_whose_pretraining_job_another_reuses(cmrbench_env):
    """mim_enc fine-tunes from mim's job: run.json records mim's description too, so the
    report's methods page can show the method behind that job (issue 22)."""
    from cmrbench.benchmark.api import plan_run, run_info
    from cmrbench.benchmark.grid import override

    planned = plan_run(
        override(load_grid(str(TINY_GRID)), methods="scratch,mim_enc"), progress=False
    )
    methods = run_info(planned, RunOptions(devices=("cpu",), progress=False)).methods
    assert set(methods) == {"scratch", "mim_enc", "mim"}
    assert methods["mim"]["doc"].startswith("MIM on the whole U-Net")
