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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import submitit

from cmrbench.benchmark.executors import LocalExecutor, RunSummary
from cmrbench.benchmark.grid import GridError, Plan, load_grid, parse_grid, plan_grid
from cmrbench.benchmark.runner import RunOptionError, RunOptions
from cmrbench.benchmark.slurm import (
    DEFAULT_TIME_MIN,
    MANIFEST,
    NOT_LISTED,
    SlurmExecutor,
    SlurmOptionError,
    SlurmOptions,
    SlurmStates,
    SlurmSubmitError,
    SlurmTask,
    parse_state_lines,
)
from cmrbench.plugins import PLUGINS_ENV, load_plugins, unload_plugins
from support.plugin_net import PLUGIN_NET, plugin_net_grid, write_plugin_net
from support.slurm_cluster import require_slurm_or_skip, run_slurm_command, show_job, show_jobs

# Two seeds make a fine-tuning group a two-task array; `mim` needs one pretraining job.
TINY_GRID = {
    "dataset": {
        "name": "phantom",
        "options": {"n_train": 4, "n_val": 1, "n_test": 2},
        "image_size": 32,
        "spacing_mm": 5.0,
    },
    "encoders": ["unet2d_xs"],
    "methods": ["scratch", "mim"],
    "budgets": [2],
    "seeds": [0, 1],
    "augmentations": ["none"],
    "finetune": {"epochs": 1, "batch_size": 4, "val_every": 1},
    "pretrain": {"epochs": 0.02, "batch_size": 8},
}
# time_min above 10: with less, submitit counts every USR2 as a time-out, not a preemption.
CLUSTER_OPTIONS = {
    "partition": "debug",
    "cpus_per_task": 1,
    "mem_gb": 2,
    "time_min": 30,
    "array_parallelism": 2,
}
METRIC_COLUMNS = ["dsc", "hd95_mm", "vol_pred_ml"]
QUIET = RunOptions(progress=False)


def _tiny_plan() -> Plan:
    return plan_grid(parse_grid(TINY_GRID, "tiny test grid"))


# --------------------------------------------------------------------------- no cluster needed


def test_options_map_to_submitit_parameters_and_omit_unset_ones() -> None:
    options = SlurmOptions.from_mapping(
        {
            "partition": "gpu",
            "gpus_per_node": 1,
            "time_min": 90,
            "array_parallelism": 4,
            "cpus_per_task": 8,
            "mem_gb": 32,
            "account": "lab",
            "qos": None,
        }
    )

    assert options.submitit_parameters("cmrbench-finetune", after="41_2") == {
        "name": "cmrbench-finetune",
        "timeout_min": 90,
        "slurm_partition": "gpu",
        "gpus_per_node": 1,
        "slurm_array_parallelism": 4,
        "cpus_per_task": 8,
        "mem_gb": 32,
        "slurm_account": "lab",
        "slurm_dependency": "afterok:41_2",
    }
    assert options.device == "cuda"


def test_options_without_gpus_ask_for_none_and_train_on_cpu() -> None:
    for gpus in (None, 0):
        options = SlurmOptions.from_mapping({"gpus_per_node": gpus})
        assert options.submitit_parameters("cmrbench-pretrain") == {
            "name": "cmrbench-pretrain",
            "timeout_min": DEFAULT_TIME_MIN,
        }
        assert options.device == "cpu"


def test_hold_submits_held_through_an_sbatch_flag() -> None:
    parameters = SlurmOptions().submitit_parameters("cmrbench-pretrain", hold=True)

    assert parameters["slurm_additional_parameters"] == {"hold": True}


def test_cli_style_options_build_the_executor() -> None:
    # api.make_executor: SlurmExecutor(**{**grid.slurm, **--slurm key=value overrides})
    executor = SlurmExecutor(partition="debug", gpus_per_node=2, time_min=30, array_parallelism=3)

    assert executor.options == SlurmOptions(
        partition="debug", gpus_per_node=2, time_min=30, array_parallelism=3
    )


def test_tasks_run_on_the_jobs_device_with_cpus_per_task_threads_and_no_progress() -> None:
    asked = RunOptions(compile=True, keep_checkpoints=True)

    gpu = SlurmExecutor(gpus_per_node=1, cpus_per_task=8).task_options(asked)
    assert gpu == RunOptions(
        devices=("cuda",), threads=8, compile=True, keep_checkpoints=True, progress=False
    )
    cpu = SlurmExecutor().task_options(RunOptions(threads=2))
    assert (cpu.devices, cpu.threads) == (("cpu",), 2)  # a fixed thread count wins
    assert SlurmExecutor().task_options(RunOptions()).threads is None


def test_devices_with_the_slurm_executor_are_refused_before_submitting(tmp_path: Path) -> None:
    plan = _tiny_plan()

    with pytest.raises(RunOptionError, match="--devices 1 cannot be used with --executor slurm"):
        SlurmExecutor().run(plan, tmp_path / "store", plan.cells, RunOptions(devices=("1",)))
    assert not (tmp_path / "store").exists()


def test_a_task_pickled_by_submitit_runs_its_cell_with_the_run_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # submitit's local cluster pickles the task into a fresh process, as sbatch does: the
    # options reach the job with the task, not through the environment.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cell = next(c for c in _tiny_plan().cells if c.method == "scratch" and c.seed == 0)
    options = RunOptions(devices=("cpu",), threads=2, progress=False)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(timeout_min=10)

    job = executor.submit(SlurmTask(str(tmp_path / "store"), options), cell)

    assert job.result() == "done"
    result = json.loads(
        (tmp_path / "store" / "cells" / cell.folder_name / "result.json").read_text()
    )
    assert result["device"].endswith(", 2 threads)")  # not the environment's 1


@pytest.fixture
def plugin_net_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plan]:
    """A one-cell plan on the plugin net, whose folder is loaded here and named nowhere in
    the environment (which submitit's local processes and sbatch pass on)."""
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path / "cache"))
    plugin_dir = tmp_path / "plugins"
    write_plugin_net(plugin_dir)
    load_plugins([plugin_dir])
    yield plan_grid(parse_grid(plugin_net_grid(seeds=[0]), "plugin net grid"))
    unload_plugins(plugin_dir)


def test_a_task_started_in_a_fresh_process_loads_the_plugin_folders_it_was_given(
    tmp_path: Path, plugin_net_plan: Plan
) -> None:
    # submitit's local cluster starts the pickled task in a fresh Python process, as sbatch
    # does: the plugin folder reaches it with the task.
    (cell,) = plugin_net_plan.cells
    task = SlurmTask(
        str(tmp_path / "store"), RunOptions(devices=("cpu",), threads=1, progress=False)
    )
    assert task.plugin_dirs == (str((tmp_path / "plugins").resolve()),)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(timeout_min=10)
    assert executor.submit(task, cell).result() == "done"
    result = json.loads(
        (tmp_path / "store" / "cells" / cell.folder_name / "result.json").read_text()
    )
    assert (result["key"], result["encoder"]) == (cell.key, PLUGIN_NET)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_min": 0}, "time_min"),
        ({"time_min": "1:00:00"}, "time_min"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"array_parallelism": True}, "array_parallelism"),
        ({"mem_gb": "8G"}, "mem_gb"),
        ({"partition": 3}, "partition"),
        ({"nodes": 2}, "unknown Slurm option"),
    ],
)
def test_invalid_options_are_rejected_naming_the_option(options: dict, message: str) -> None:
    with pytest.raises(SlurmOptionError, match=message):
        SlurmOptions.from_mapping(options)


def test_a_grid_time_written_as_hours_stays_text_and_is_rejected(tmp_path: Path) -> None:
    # YAML 1.1 reads 1:00:00 as the base-60 number 3600: 60 hours asked of Slurm for one
    tiny = (Path(__file__).parent / "grids" / "tiny.yaml").read_text()
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(tiny + "\nslurm:\n  time_min: 1:00:00\n  mem_gb: 16\n")
    with pytest.raises(
        GridError,
        match=f"{grid_file}: 'slurm': key 'time_min' is '1:00:00'; expected a whole number",
    ):
        load_grid(str(grid_file))
    with pytest.raises(SlurmOptionError, match="time_min.*'1:00:00'"):
        SlurmOptions.from_mapping({"time_min": "1:00:00", "mem_gb": 16})


def test_run_without_slurm_tools_raises_naming_the_missing_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    plan = _tiny_plan()

    with pytest.raises(SlurmSubmitError, match="missing: sbatch, srun, squeue, scancel"):
        SlurmExecutor().run(plan, tmp_path / "store", plan.cells, QUIET)
    assert not (tmp_path / "store").exists()


def test_state_lines_expand_pending_ranges_and_drop_steps_and_cancelling_user() -> None:
    sacct = (
        "12_0|COMPLETED\n12_1|CANCELLED by 0\n12_[2-4%2]|PENDING\n12_0.batch|COMPLETED\n13|FAILED\n"
    )

    assert parse_state_lines(sacct) == {
        "12_0": "COMPLETED",
        "12_1": "CANCELLED",
        "12_2": "PENDING",
        "12_3": "PENDING",
        "12_4": "PENDING",
        "13": "FAILED",
    }


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
    fake = _FakeSlurm(squeue=(0, "9_0|RUNNING\n9_1|PENDING\n", ""), sacct=(0, "7|COMPLETED\n", ""))

    states = SlurmStates(run=fake).query(["9_0", "9_1", "7", "5"])

    assert states == {"9_0": "RUNNING", "9_1": "PENDING", "7": "COMPLETED", "5": NOT_LISTED}
    assert fake.commands[0][-1] == "--jobs=5,7,9"
    assert fake.commands[1][0] == "sacct" and fake.commands[1][-1] == "--jobs=5,7"


def test_states_of_purged_jobs_without_accounting_are_not_listed() -> None:
    fake = _FakeSlurm(
        squeue=(1, "", "slurm_load_jobs error: Invalid job id specified"),
        sacct=(1, "", "Slurm accounting storage is disabled"),
    )

    assert SlurmStates(run=fake).query(["3_1"]) == {"3_1": NOT_LISTED}


# --------------------------------------------------------------------------- on a real cluster


def _manifest(run_dir: Path) -> list[dict]:
    path = run_dir / "slurm" / MANIFEST
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for_submissions(
    run_dir: Path, count: int, running: Future, timeout_s: float = 90
) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(jobs := _manifest(run_dir)) < count:
        if running.done():
            running.result()  # raises what the executor raised
            pytest.fail(f"executor returned before submitting {count} jobs: {jobs}")
        if time.monotonic() > deadline:
            pytest.fail(f"only {len(jobs)} of {count} jobs submitted after {timeout_s} s")
        time.sleep(0.2)
    return jobs


def _wait_for_file(path: Path, running: Future, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if running.done():
            pytest.fail(f"executor returned before {path} appeared: {running.result()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.1)


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
        frames[path.parent.name] = frame.sort_values(["subject", "phase", "class"]).reset_index(
            drop=True
        )
    return frames


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_grid_runs_as_slurm_arrays_with_afterok_and_matches_the_local_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_slurm_or_skip()
    # sbatch exports the submitting environment, so the jobs share this cache.
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path / "cache"))
    plan = _tiny_plan()
    # Both mim seeds (a two-task array after the pretraining job) and one scratch cell (a
    # lone job that waits for nothing): every kind of submission, in few jobs.
    cells = tuple(c for c in plan.cells if c.method == "mim" or c.seed == 0)
    store_a, store_b = tmp_path / "slurm_store", tmp_path / "local_store"
    executor = SlurmExecutor(poll_s=1.0, hold=True, **CLUSTER_OPTIONS)
    jobs: list[dict] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(executor.run, plan, store_a, cells, QUIET)
        try:  # cancel before the pool waits for the executor's thread
            jobs = _wait_for_submissions(store_a, 1 + len(cells), running)
            pretrain, scratch, *mim = jobs
            assert pretrain["folder"].startswith("pretrain/mim_")
            assert scratch["folder"].startswith("cells/scratch_")
            assert [j["folder"][:10] for j in mim] == ["cells/mim_"] * 2
            pretrain_id, scratch_id = pretrain["job_id"], scratch["job_id"]
            mim_array = mim[0]["job_id"].split("_")[0]
            assert [j["job_id"] for j in mim] == [f"{mim_array}_0", f"{mim_array}_1"]
            assert [j["after"] for j in jobs] == [None, None, pretrain_id, pretrain_id]

            # Held: nothing can run yet, so these records cannot race the scheduler.
            held = show_job(pretrain_id)
            assert (held["JobState"], held["Reason"]) == ("PENDING", "JobHeldUser")
            (mim_held,) = show_jobs(mim_array)  # a pending array is one record
            assert mim_held["JobState"] == "PENDING"
            assert mim_held["ArrayTaskId"] == "0-1%2"
            assert mim_held["Dependency"] == f"afterok:{pretrain_id}(unfulfilled)"
            assert show_job(scratch_id)["Dependency"] == "(null)"

            run_slurm_command(["scontrol", "release", mim_array, scratch_id])
            run_slurm_command(["scontrol", "release", pretrain_id])
            running_pretrain = _wait_for_state(pretrain_id, "RUNNING")
            (mim_waiting,) = show_jobs(mim_array)
            assert (mim_waiting["JobState"], mim_waiting["Reason"]) == ("PENDING", "Dependency")
            assert mim_waiting["Dependency"] == f"afterok:{pretrain_id}(unfulfilled)"

            summary: RunSummary = running.result(timeout=300)
        finally:
            _cancel(jobs)

    assert summary.failures == []
    assert (summary.done, summary.cached, summary.busy) == (1 + len(cells), 0, 0)
    assert any((tmp_path / "cache").rglob("*")), "the Slurm jobs did not use CMRBENCH_CACHE"

    # Slurm's records: every job completed, with the resources and logs we asked for.
    slurm_logs = store_a.resolve() / "slurm"
    mim_tasks = show_jobs(mim_array)
    assert sorted(t["ArrayTaskId"] for t in mim_tasks) == ["0", "1"]
    assert {t["ArrayJobId"] for t in mim_tasks} == {mim_array}
    finished = {
        "pretrain": show_job(pretrain_id),
        "scratch": show_job(scratch_id),
        **{f"{mim_array}_{t['ArrayTaskId']}": t for t in mim_tasks},
    }
    for name, record in finished.items():
        assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), name
        assert record["JobName"] == f"cmrbench-{'pretrain' if name == 'pretrain' else 'finetune'}"
        assert (record["Partition"], record["TimeLimit"]) == ("debug", "00:30:00")
        assert record["CPUs/Task"] == "1"
        assert record["MinMemoryNode"] == "2G"
        assert "gres" not in record["TRES"]
        assert Path(record["StdErr"]).parent.parent == slurm_logs
    assert finished["pretrain"]["StartTime"] == running_pretrain["StartTime"]
    pretrain_end = datetime.fromisoformat(finished["pretrain"]["EndTime"])
    for task in mim_tasks:
        assert task["Dependency"] == "(null)"
        assert datetime.fromisoformat(task["StartTime"]) >= pretrain_end
    for job in jobs:
        assert Path(job["log"]).is_file()

    # The same specs run by the local executor with the Slurm tasks' thread count
    # (cpus_per_task) give the same per-subject results, bit for bit.
    same_threads = RunOptions(progress=False, threads=CLUSTER_OPTIONS["cpus_per_task"])
    local = LocalExecutor().run(plan, store_b, cells, same_threads)
    assert (local.done, local.failures) == (1 + len(cells), [])
    slurm_subjects, local_subjects = _subjects(store_a), _subjects(store_b)
    assert sorted(slurm_subjects) == sorted(local_subjects) == sorted(c.folder_name for c in cells)
    for cell, frame in slurm_subjects.items():
        expected = local_subjects[cell]
        assert frame[["subject", "phase", "class"]].equals(expected[["subject", "phase", "class"]])
        pd.testing.assert_frame_equal(
            frame[METRIC_COLUMNS], expected[METRIC_COLUMNS], check_exact=True
        )


@pytest.mark.slurm
def test_failed_pretraining_fails_its_cells_naming_the_slurm_job_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_slurm_or_skip()
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path / "cache"))
    plan = _tiny_plan()
    broken = dataclasses.replace(plan.pretrain[0], method="no_such_method")
    cell = dataclasses.replace(next(c for c in plan.cells if c.method == "mim"), pretrain=broken)
    run_dir = tmp_path / "store"
    executor = SlurmExecutor(poll_s=1.0, **CLUSTER_OPTIONS)

    summary = executor.run(Plan(plan.grid, (broken,), (cell,)), run_dir, (cell,), QUIET)

    pretrain_job, cell_job = _manifest(run_dir)
    pretrain_log = Path(pretrain_job["log"])
    assert (summary.done, summary.cached, summary.busy) == (0, 0, 0)
    (pretrain_failure, pretrain_error), (cell_failure, cell_error) = summary.failures
    assert pretrain_failure == str(run_dir.resolve() / pretrain_job["folder"])
    assert "no_such_method" in pretrain_error
    assert f"(Slurm job {pretrain_job['job_id']}; log: {pretrain_log})" in pretrain_error
    assert cell_failure == str(run_dir.resolve() / cell_job["folder"])
    assert cell_error.startswith(
        f"not run: its pretraining (Slurm job {pretrain_job['job_id']}) failed: "
    )
    assert "no_such_method" in pretrain_log.read_text()
    assert show_job(pretrain_job["job_id"])["JobState"] == "FAILED"
    assert show_job(cell_job["job_id"])["JobState"] == "CANCELLED"
    assert not (run_dir / cell_job["folder"] / "result.json").exists()


# A method plugin for the requeue test: `mim` whose step 1 waits while GATE/closed exists,
# and which logs "<Slurm restart count>:<step>" for every step it computes.
GATED_MIM_PLUGIN = """
import os, time
from pathlib import Path
from cmrbench.methods import METHODS
from cmrbench.methods.mim import MIM


@METHODS.register
class GatedMIM(MIM):
    name = "gated_mim"

    def loss(self, batch, step):
        gate = Path(os.environ["CMRBENCH_TEST_GATE"])
        with open(gate / "steps.txt", "a") as log:
            log.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')}:{step.index}\\n")
        while step.index == 1 and (gate / "closed").exists():
            time.sleep(0.05)
        return super().loss(batch, step)
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_from_its_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_slurm_or_skip()
    plugin_dir, gate = tmp_path / "plugins", tmp_path / "gate"
    plugin_dir.mkdir()
    gate.mkdir()
    (plugin_dir / "gated_mim.py").write_text(GATED_MIM_PLUGIN)
    (gate / "closed").touch()
    for name, value in (
        ("CMRBENCH_CACHE", tmp_path / "cache"),
        ("CMRBENCH_PLUGINS", plugin_dir),
        ("CMRBENCH_TEST_GATE", gate),
    ):
        monkeypatch.setenv(name, str(value))
    plan = _tiny_plan()
    gated = dataclasses.replace(plan.pretrain[0], method="gated_mim")
    cell = dataclasses.replace(next(c for c in plan.cells if c.method == "mim"), pretrain=gated)
    run_dir = tmp_path / "store"
    executor = SlurmExecutor(poll_s=1.0, **CLUSTER_OPTIONS)
    jobs: list[dict] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(
                executor.run, Plan(plan.grid, (gated,), (cell,)), run_dir, (cell,), QUIET
            )
            try:
                jobs = _wait_for_submissions(run_dir, 2, running)
                pretrain_id, cell_id = (j["job_id"] for j in jobs)
                # Step 0 is checkpointed and step 1 waits for the gate.
                _wait_for_file(run_dir / jobs[0]["folder"] / "loop_state.pt", running)
                run_slurm_command(["scancel", "--signal=USR2", pretrain_id])  # as on preemption
                deadline = time.monotonic() + 60
                while show_job(pretrain_id)["Restarts"] != "1":
                    assert time.monotonic() < deadline, "the preempted job was not requeued"
                    time.sleep(0.2)
                assert show_job(cell_id)["Dependency"] == f"afterok:{pretrain_id}(unfulfilled)"
                (gate / "closed").unlink()
                summary = running.result(timeout=180)
            finally:
                _cancel(jobs)  # before the pool waits for the executor's thread
    finally:
        unload_plugins(plugin_dir)

    assert (summary.done, summary.failures) == (2, [])
    record = show_job(pretrain_id)
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "1")
    steps = [tuple(map(int, line.split(":"))) for line in (gate / "steps.txt").read_text().split()]
    first_run = [step for restart, step in steps if restart == 0]
    requeued_run = [step for restart, step in steps if restart == 1]
    assert first_run == [0, 1]  # blocked in step 1 when preempted
    assert requeued_run == list(range(1, requeued_run[-1] + 1))  # resumed at step 1, not 0
    assert len(requeued_run) >= 2
    pretrain_log = Path(jobs[0]["log"]).read_text()
    assert "this job is preempted" in pretrain_log and "DUE TO JOB REQUEUE" in pretrain_log


@pytest.mark.slurm
def test_a_plugin_net_resolves_in_a_slurm_task(tmp_path: Path, plugin_net_plan: Plan) -> None:
    require_slurm_or_skip()
    plan = plugin_net_plan
    summary = SlurmExecutor(poll_s=1.0, **CLUSTER_OPTIONS).run(
        plan, tmp_path / "store", plan.cells, QUIET
    )

    assert (summary.done, summary.failures) == (1, [])
    (job,) = _manifest(tmp_path / "store")
    assert show_job(job["job_id"])["JobState"] == "COMPLETED"
    result = json.loads((tmp_path / "store" / job["folder"] / "result.json").read_text())
    assert (result["key"], result["encoder"]) == (plan.cells[0].key, PLUGIN_NET)


@pytest.mark.slurm
def test_refused_submission_raises_naming_the_slurm_error(tmp_path: Path) -> None:
    require_slurm_or_skip()
    plan = _tiny_plan()
    options = {**CLUSTER_OPTIONS, "partition": "no_such_partition"}
    executor = SlurmExecutor(**options)

    with pytest.raises(SlurmSubmitError, match="invalid partition specified: no_such_partition"):
        executor.run(plan, tmp_path / "store", plan.cells, QUIET)
    assert not (tmp_path / "store" / "slurm" / MANIFEST).exists()
