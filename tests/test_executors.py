"""The local executor's job order and its worker processes: a worker killed mid-job (as by the
kernel's out-of-memory killer) leaves an ``error.json`` saying so and the other jobs finish;
out-of-memory errors say what happened, and Slurm's OUT_OF_MEMORY is recorded the same way."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from cmrbench.benchmark.devices import (
    MEMORY_KNOBS,
    describe_error,
    killed_worker_error,
    ran_out_of_memory,
)
from cmrbench.benchmark.executors import JobQueue, RunSummary
from cmrbench.benchmark.grid import load_grid, override, plan_grid
from cmrbench.store import StoreWriter
from support.cli import TINY_GRID, run_cli

# `mim` whose worker process SIGKILLs itself at its second pretraining step, as the kernel's
# out-of-memory killer would; the run's own process (which measures each job's memory on
# synthetic steps before the run) is left alone.
KILLED_MIM_PLUGIN = '''
import multiprocessing, os, signal
from cmrbench.methods import METHODS
from cmrbench.methods.mim import MIM


@METHODS.register
class KilledMIM(MIM):
    """MIM whose worker process is killed at its second step."""

    name = "killed_mim"

    def loss(self, batch, step):
        if step.index == 1 and multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().loss(batch, step)
'''


@pytest.mark.slow
def test_a_worker_killed_mid_job_leaves_an_error_json_saying_so_and_the_other_jobs_finish(
    cmrbench_env, tmp_path
):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "killed_mim.py").write_text(KILLED_MIM_PLUGIN)
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--plugins",
            str(plugins),
            "--methods",
            "killed_mim,scratch",
            "--jobs",
            "2",
            "--threads",
            "1",
            "--out",
            str(run_dir),
            "--quiet",
            "--no-report",
        ],
        cmrbench_env,
    )
    assert proc.returncode == 1, proc.stderr
    assert "2 jobs run, 0 already done, 0 held by another process, 3 failed." in proc.stdout
    assert len(list(run_dir.glob("cells/scratch_*/result.json"))) == 2  # the others finished
    [killed] = run_dir.glob("pretrain/killed_mim_*")
    assert (killed / "spec.json").exists() and not (killed / "result.json").exists()
    error = json.loads((killed / "error.json").read_text())["error"]
    assert error.startswith(
        "WorkerKilledError: the worker process running this job was killed "
        "by SIGKILL, most likely by the kernel's out-of-memory killer"
    )
    assert "--scale small" in error
    # its cells were not run: no folder of theirs holds a result or an error
    assert not list(run_dir.glob("cells/killed_mim_*/result.json"))
    assert not list(run_dir.glob("cells/killed_mim_*/error.json"))
    assert (
        proc.stderr.count(
            f"not run: its pretraining job pretrain/{killed.name} failed "
            f"(WorkerKilledError; see its error.json)"
        )
        == 2
    )
    assert "leaked semaphore" not in proc.stderr
    oom = proc.stderr[proc.stderr.index("Ran out of memory (1 of the failures") :]
    assert str(killed) in oom and "killed_mim_unet2d_xs_b" not in oom


def test_a_cell_waits_for_its_pretraining_job_and_is_dropped_when_that_failed():
    plan = plan_grid(override(load_grid(str(TINY_GRID)), methods="mim,scratch"))
    [pretrain] = plan.pretrain
    mim = [c for c in plan.cells if c.method == "mim"]
    scratch = [c for c in plan.cells if c.method == "scratch"]
    queue = JobQueue([pretrain, *mim, *scratch])
    assert queue.take() is pretrain
    assert [queue.take(), queue.take(), queue.take()] == [*scratch, None]  # mim cells wait
    queue.ended(pretrain, "WorkerKilledError: the worker process was killed")
    orphans = list(queue.orphans())
    assert [cell for cell, _ in orphans] == mim and not queue
    assert orphans[0][1] == (
        f"not run: its pretraining job pretrain/{pretrain.folder_name} "
        f"failed (WorkerKilledError; see its error.json)"
    )

    again = JobQueue([pretrain, *mim])
    again.take()
    again.ended(pretrain, None)
    assert [again.take(), again.take(), again.take()] == [*mim, None]


def test_out_of_memory_errors_explain_themselves_and_the_summary_finds_them():
    cpu = describe_error(MemoryError())
    gpu = describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert cpu == f"MemoryError:  (the job ran out of CPU RAM; to use less: {MEMORY_KNOBS})"
    assert gpu.startswith(
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB (the job "
        "ran out of GPU memory; to use less: --scale small"
    )
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    killed = killed_worker_error(-signal.SIGKILL)
    assert killed_worker_error(-signal.SIGSEGV) == (
        "WorkerDiedError: the worker process running this job was ended by SIGSEGV"
    )
    assert killed_worker_error(3) == (
        "WorkerDiedError: the worker process running this job exited with code 3"
    )
    summary = RunSummary(
        failures=[
            ("a", cpu),
            ("b", gpu),
            ("c", killed),
            ("d", "ValueError: bad"),
            ("e", killed_worker_error(-signal.SIGSEGV)),
        ]
    )
    assert summary.out_of_memory == ["a", "b", "c"]
    assert not ran_out_of_memory("NonFiniteLossError: fine-tune: loss became nan at step 3")


@pytest.mark.parametrize(
    ("state", "log_text", "error_start"),
    [
        ("OUT_OF_MEMORY", "", "OutOfMemoryError: Slurm job 41_2 ended OUT_OF_MEMORY"),
        (
            "FAILED",
            "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=41.batch.",
            "OutOfMemoryError: Slurm job 41_2 ended FAILED",
        ),
        ("TIMEOUT", "", "Slurm job 41_2 ended TIMEOUT without writing result.json"),
    ],
)
def test_a_slurm_job_ended_without_a_result_gets_an_error_json_saying_why(
    tmp_path, state, log_text, error_start
):
    from cmrbench.benchmark.slurm import SubmittedJob, _record

    cell = plan_grid(load_grid(str(TINY_GRID))).cells[0]
    store = StoreWriter(tmp_path)
    store.write_spec(cell, {})
    log = tmp_path / "41_2_0_log.err"
    log.write_text(log_text)
    summary = RunSummary()
    _record(SubmittedJob("41_2", cell, log), state, store, summary, {})
    [(folder, error)] = summary.failures
    assert folder == str(store.job_dir(cell)) and error.startswith(error_start)
    assert error.endswith(f"log: {log}")
    assert store.error(cell).error == error
    assert summary.out_of_memory == ([folder] if error_start.startswith("OutOfMemory") else [])
    if state != "TIMEOUT":
        assert "--slurm mem_gb=N asks for more" in error and "--scale small" in error


def test_a_cell_of_a_failed_slurm_pretraining_job_gets_no_error_json(tmp_path):
    from cmrbench.benchmark.slurm import SubmittedJob, _record

    cell = plan_grid(override(load_grid(str(TINY_GRID)), methods="mim")).cells[0]
    store = StoreWriter(tmp_path)
    summary = RunSummary()
    _record(
        SubmittedJob("42_0", cell, tmp_path / "log", after="41_0"),
        "CANCELLED",
        store,
        summary,
        {"41_0": "OutOfMemoryError: ..."},
    )
    assert summary.failures == [
        (
            str(store.job_dir(cell)),
            "not run: its pretraining (Slurm job 41_0) failed: OutOfMemoryError: ...",
        )
    ]
    assert not store.has_error(cell)
