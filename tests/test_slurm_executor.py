"""The Slurm executor (cmrbench.benchmark.slurm): options → submitit parameters, job states
from squeue/sacct, and a tiny grid run on a real cluster.

The cluster tests prove what Slurm did from Slurm's own records (`scontrol show job -o`;
the CI cluster keeps no accounting, so no sacct), and that the results equal those of
the local executor for the same specs in a separate store.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from cmrbench.benchmark.executors import LocalExecutor, RunSummary
from cmrbench.benchmark.grid import Plan, parse_grid, plan_grid
from cmrbench.benchmark.slurm import (DEFAULT_TIME_MIN, MANIFEST, NOT_LISTED, SlurmExecutor,
                                      SlurmOptionError, SlurmOptions, SlurmStates,
                                      parse_state_lines)
from slurm_cluster import require_slurm_or_skip, run_slurm_command, show_job, show_jobs

# Two seeds make each fine-tuning group a two-task array; `mim` needs one pretraining job.
TINY_GRID = {
    "dataset": {"name": "phantom", "options": {"n_train": 4, "n_val": 1, "n_test": 2},
                "image_size": 32, "spacing_mm": 5.0},
    "encoders": ["unet2d_xs"], "methods": ["scratch", "mim"], "budgets": [2], "seeds": [0, 1],
    "augmentations": ["none"], "finetune": {"epochs": 1, "batch_size": 4, "val_every": 1},
    "pretrain": {"epochs": 0.02, "batch_size": 8},
}
CLUSTER_OPTIONS = {"partition": "debug", "cpus_per_task": 1, "mem_gb": 2, "time_min": 10,
                   "array_parallelism": 2}
METRIC_COLUMNS = ["dsc", "hd95"]


def _tiny_plan() -> Plan:
    return plan_grid(parse_grid(TINY_GRID, "tiny test grid"))


# --------------------------------------------------------------------------- no cluster needed


def test_options_map_to_submitit_parameters_and_omit_unset_ones() -> None:
    options = SlurmOptions.from_mapping({"partition": "gpu", "gpus_per_node": 1, "time_min": 90,
                                         "array_parallelism": 4, "cpus_per_task": 8,
                                         "mem_gb": 32, "account": "lab", "qos": None})

    assert options.submitit_parameters("cmrbench-finetune", after="41_2") == {
        "name": "cmrbench-finetune", "timeout_min": 90, "slurm_partition": "gpu",
        "gpus_per_node": 1, "slurm_array_parallelism": 4, "cpus_per_task": 8, "mem_gb": 32,
        "slurm_account": "lab", "slurm_dependency": "afterok:41_2"}
    assert options.device == "cuda"


def test_options_without_gpus_ask_for_none_and_train_on_cpu() -> None:
    for gpus in (None, 0):
        options = SlurmOptions.from_mapping({"gpus_per_node": gpus})
        assert options.submitit_parameters("cmrbench-pretrain") == {
            "name": "cmrbench-pretrain", "timeout_min": DEFAULT_TIME_MIN}
        assert options.device == "cpu"


def test_hold_submits_held_through_an_sbatch_flag() -> None:
    parameters = SlurmOptions().submitit_parameters("cmrbench-pretrain", hold=True)

    assert parameters["slurm_additional_parameters"] == {"hold": True}


def test_cli_style_options_build_the_executor() -> None:
    # cli.py: SlurmExecutor(show_progress=..., **{**grid.slurm, **command-line overrides})
    executor = SlurmExecutor(show_progress=False, partition="debug", gpus_per_node=2,
                             time_min=30, array_parallelism=3)

    assert executor.options == SlurmOptions(partition="debug", gpus_per_node=2, time_min=30,
                                            array_parallelism=3)


@pytest.mark.parametrize(("options", "message"), [
    ({"time_min": 0}, "time_min"),
    ({"time_min": "1:00:00"}, "time_min"),
    ({"gpus_per_node": -1}, "gpus_per_node"),
    ({"array_parallelism": True}, "array_parallelism"),
    ({"mem_gb": "8G"}, "mem_gb"),
    ({"partition": 3}, "partition"),
    ({"nodes": 2}, "unknown Slurm option"),
])
def test_invalid_options_are_rejected_naming_the_option(options: dict, message: str) -> None:
    with pytest.raises(SlurmOptionError, match=message):
        SlurmOptions.from_mapping(options)


def test_state_lines_expand_pending_ranges_and_drop_steps_and_cancelling_user() -> None:
    sacct = ("12_0|COMPLETED\n12_1|CANCELLED by 0\n12_[2-4%2]|PENDING\n12_0.batch|COMPLETED\n"
             "13|FAILED\n")

    assert parse_state_lines(sacct) == {"12_0": "COMPLETED", "12_1": "CANCELLED",
                                        "12_2": "PENDING", "12_3": "PENDING", "12_4": "PENDING",
                                        "13": "FAILED"}


class _FakeSlurm:
    """Answers squeue/sacct like a cluster that has purged job 7 from slurmctld."""

    def __init__(self, squeue: tuple[int, str, str], sacct: tuple[int, str, str]) -> None:
        self.answers = {"squeue": squeue, "sacct": sacct}
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str]) -> subprocess.CompletedProcess:
        self.commands.append(command)
        code, out, err = self.answers[command[0]]
        return subprocess.CompletedProcess(command, code, out, err)


def test_states_ask_sacct_only_for_jobs_squeue_no_longer_lists() -> None:
    fake = _FakeSlurm(squeue=(0, "9_0|RUNNING\n9_1|PENDING\n", ""),
                      sacct=(0, "7|COMPLETED\n", ""))

    states = SlurmStates(run=fake).query(["9_0", "9_1", "7", "5"])

    assert states == {"9_0": "RUNNING", "9_1": "PENDING", "7": "COMPLETED", "5": NOT_LISTED}
    assert fake.commands[0][-1] == "--jobs=5,7,9"
    assert fake.commands[1][0] == "sacct" and fake.commands[1][-1] == "--jobs=5,7"


def test_states_of_purged_jobs_without_accounting_are_not_listed() -> None:
    fake = _FakeSlurm(squeue=(1, "", "slurm_load_jobs error: Invalid job id specified"),
                      sacct=(1, "", "Slurm accounting storage is disabled"))

    assert SlurmStates(run=fake).query(["3_1"]) == {"3_1": NOT_LISTED}


# --------------------------------------------------------------------------- on a real cluster


def _manifest(run_dir: Path) -> list[dict]:
    path = run_dir / "slurm" / MANIFEST
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for_submissions(run_dir: Path, count: int, running: Future, timeout_s: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(jobs := _manifest(run_dir)) < count:
        if running.done():
            running.result()   # raises what the executor raised
            pytest.fail(f"executor returned before submitting {count} jobs: {jobs}")
        if time.monotonic() > deadline:
            pytest.fail(f"only {len(jobs)} of {count} jobs submitted after {timeout_s} s")
        time.sleep(0.2)
    return jobs


def _wait_for_state(job_id: str, state: str, timeout_s: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while (record := show_job(job_id))["JobState"] != state:
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {record['JobState']} after {timeout_s} s")
        time.sleep(0.2)
    return record


def _cancel(jobs: list[dict]) -> None:
    """Leave no held job behind when a test fails half-way."""
    if jobs:
        subprocess.run(["scancel", *{j["job_id"].split("_")[0] for j in jobs}], check=False)


def _subjects(run_dir: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for path in sorted((run_dir / "cells").glob("*/subjects.parquet")):
        frame = pd.read_parquet(path)
        frames[path.parent.name] = (frame.sort_values(["subject", "phase", "class"])
                                    .reset_index(drop=True))
    return frames


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_grid_runs_as_slurm_arrays_with_afterok_and_matches_the_local_executor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_slurm_or_skip()
    # sbatch exports the submitting environment, so the jobs share this cache.
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path / "cache"))
    plan = _tiny_plan()
    store_a, store_b = tmp_path / "slurm_store", tmp_path / "local_store"
    executor = SlurmExecutor(show_progress=False, poll_s=1.0, hold=True, **CLUSTER_OPTIONS)
    jobs: list[dict] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(executor.run, plan, store_a, plan.cells)
        try:
            jobs = _wait_for_submissions(store_a, 1 + len(plan.cells), running)
            (pretrain,) = [j for j in jobs if j["folder"].startswith("pretrain/")]
            mim = [j for j in jobs if j["folder"].startswith("cells/mim_")]
            scratch = [j for j in jobs if j["folder"].startswith("cells/scratch_")]
            pretrain_id = pretrain["job_id"]
            mim_array = {j["job_id"].split("_")[0] for j in mim}.pop()
            scratch_array = {j["job_id"].split("_")[0] for j in scratch}.pop()
            assert sorted(j["job_id"] for j in mim) == [f"{mim_array}_0", f"{mim_array}_1"]
            assert sorted(j["job_id"] for j in scratch) == [f"{scratch_array}_0", f"{scratch_array}_1"]
            assert [j["after"] for j in mim] == [pretrain_id] * 2
            assert [j["after"] for j in scratch] == [None, None]

            # Held: nothing can run yet, so these records cannot race the scheduler.
            held = show_job(pretrain_id)
            assert (held["JobState"], held["Reason"]) == ("PENDING", "JobHeldUser")
            (mim_held,) = show_jobs(mim_array)   # a pending array is one record
            assert mim_held["JobState"] == "PENDING"
            assert mim_held["ArrayTaskId"] == "0-1%2"
            assert mim_held["Dependency"] == f"afterok:{pretrain_id}(unfulfilled)"
            (scratch_held,) = show_jobs(scratch_array)
            assert scratch_held["Dependency"] == "(null)"

            run_slurm_command(["scontrol", "release", mim_array, scratch_array])
            run_slurm_command(["scontrol", "release", pretrain_id])
            running_pretrain = _wait_for_state(pretrain_id, "RUNNING")
            (mim_waiting,) = show_jobs(mim_array)
            assert (mim_waiting["JobState"], mim_waiting["Reason"]) == ("PENDING", "Dependency")
            assert mim_waiting["Dependency"] == f"afterok:{pretrain_id}(unfulfilled)"

            summary: RunSummary = running.result(timeout=300)
        finally:
            _cancel(jobs)

    assert summary.failures == []
    assert (summary.done, summary.cached, summary.busy) == (1 + len(plan.cells), 0, 0)
    assert any((tmp_path / "cache").rglob("*")), "the Slurm jobs did not use CMRBENCH_CACHE"

    # Slurm's records: every task completed, with the resources and logs we asked for.
    slurm_logs = store_a.resolve() / "slurm"
    for array_id in (mim_array, scratch_array):
        tasks = show_jobs(array_id)
        assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
        assert {t["ArrayJobId"] for t in tasks} == {array_id}
        assert [(t["JobState"], t["ExitCode"]) for t in tasks] == [("COMPLETED", "0:0")] * 2
        for task in tasks:
            assert task["JobName"] == "cmrbench-finetune"
            assert (task["Partition"], task["TimeLimit"], task["CPUs/Task"]) == ("debug", "00:10:00", "1")
            assert task["MinMemoryNode"] == "2G"
            assert "gres" not in task["TRES"]
            assert Path(task["StdErr"]).parent == slurm_logs / f"{array_id}_{task['ArrayTaskId']}"
    finished_pretrain = show_job(pretrain_id)
    assert (finished_pretrain["JobState"], finished_pretrain["ExitCode"]) == ("COMPLETED", "0:0")
    assert finished_pretrain["StartTime"] == running_pretrain["StartTime"]
    pretrain_end = datetime.fromisoformat(finished_pretrain["EndTime"])
    for task in show_jobs(mim_array):
        assert datetime.fromisoformat(task["StartTime"]) >= pretrain_end
    for job in jobs:
        assert Path(job["log"]).is_file()

    # The same specs run by the local executor give the same per-subject results.
    local = LocalExecutor(show_progress=False).run(plan, store_b, plan.cells)
    assert (local.done, local.failures) == (1 + len(plan.cells), [])
    slurm_subjects, local_subjects = _subjects(store_a), _subjects(store_b)
    assert sorted(slurm_subjects) == sorted(c.folder_name for c in plan.cells)
    assert sorted(local_subjects) == sorted(slurm_subjects)
    for cell, frame in slurm_subjects.items():
        expected = local_subjects[cell]
        assert frame[["subject", "phase", "class"]].equals(expected[["subject", "phase", "class"]])
        pd.testing.assert_frame_equal(frame[METRIC_COLUMNS], expected[METRIC_COLUMNS],
                                      check_exact=False, rtol=0, atol=1e-6)


@pytest.mark.slurm
def test_failed_pretraining_fails_its_cells_naming_the_slurm_job_and_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_slurm_or_skip()
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path / "cache"))
    plan = _tiny_plan()
    broken = dataclasses.replace(plan.pretrain[0], method="no_such_method")
    cell = dataclasses.replace(next(c for c in plan.cells if c.method == "mim"), pretrain=broken)
    run_dir = tmp_path / "store"
    executor = SlurmExecutor(show_progress=False, poll_s=1.0, **CLUSTER_OPTIONS)

    summary = executor.run(Plan(plan.grid, (broken,), (cell,)), run_dir, (cell,))

    pretrain_job, cell_job = _manifest(run_dir)
    pretrain_log = Path(pretrain_job["log"])
    assert (summary.done, summary.cached, summary.busy) == (0, 0, 0)
    (pretrain_failure, pretrain_error), (cell_failure, cell_error) = summary.failures
    assert pretrain_failure == str(run_dir.resolve() / pretrain_job["folder"])
    assert "no_such_method" in pretrain_error
    assert f"(Slurm job {pretrain_job['job_id']}; log: {pretrain_log})" in pretrain_error
    assert cell_failure == str(run_dir.resolve() / cell_job["folder"])
    assert cell_error.startswith(f"not run: its pretraining (Slurm job {pretrain_job['job_id']}) failed: ")
    assert "no_such_method" in pretrain_log.read_text()
    assert show_job(pretrain_job["job_id"])["JobState"] == "FAILED"
    assert show_job(cell_job["job_id"])["JobState"] == "CANCELLED"
    assert not (run_dir / cell_job["folder"] / "result.json").exists()
