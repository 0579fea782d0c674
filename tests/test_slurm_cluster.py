"""Smoke tests of the CI Slurm cluster (.ci/slurm): job arrays and afterok dependencies.

Everything is proven from Slurm's own job records (`scontrol show job -o`), which is
what cmrbench's Slurm executor relies on for pretrain → fine-tune chains.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from support.slurm_cluster import (
    parse_scontrol_record,
    require_slurm_or_skip,
    run_slurm_command,
    sbatch,
    show_job,
    show_jobs,
    wait_for_jobs,
)

# A pending dependent job, as scontrol 22.05 printed it (fields trimmed).
PENDING_DEPENDENT_LINE = (
    "JobId=2 JobName=wrap UserId=root(0) JobState=PENDING Reason=Dependency "
    "Dependency=afterok:1_*(unfulfilled) Requeue=1 ExitCode=0:0 StartTime=Unknown "
    "AllocNode:Sid=localhost:4237 NodeList= TRES=cpu=1,mem=10847M,node=1,billing=1 "
    "Socks/Node=* NtasksPerN:B:S:C=0:0:*:* Command=(null) WorkDir=/tmp Power= "
)


@pytest.fixture
def slurm() -> None:
    require_slurm_or_skip()


def _slurm_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_scontrol_record_parser_keeps_colon_slash_keys_and_equals_in_values() -> None:
    record = parse_scontrol_record(PENDING_DEPENDENT_LINE)

    assert record["JobId"] == "2"
    assert record["Dependency"] == "afterok:1_*(unfulfilled)"
    assert record["AllocNode:Sid"] == "localhost:4237"
    assert record["TRES"] == "cpu=1,mem=10847M,node=1,billing=1"
    assert record["Socks/Node"] == "*"
    assert record["NtasksPerN:B:S:C"] == "0:0:*:*"
    assert record["NodeList"] == ""
    assert record["Power"] == ""
    assert list(record) == [
        "JobId",
        "JobName",
        "UserId",
        "JobState",
        "Reason",
        "Dependency",
        "Requeue",
        "ExitCode",
        "StartTime",
        "AllocNode:Sid",
        "NodeList",
        "TRES",
        "Socks/Node",
        "NtasksPerN:B:S:C",
        "Command",
        "WorkDir",
        "Power",
    ]


@pytest.mark.slurm
def test_afterok_dependent_waits_for_both_array_tasks_then_runs(
    slurm: None, tmp_path: Path
) -> None:
    # The array is submitted held, so the dependent's pending record is read before
    # any array task can run: no race with the scheduler.
    array_id = sbatch(
        "--hold",
        "--array=0-1",
        f"--output={tmp_path}/array_%A_%a.log",
        "--wrap",
        f'sleep 1; echo "task $SLURM_ARRAY_TASK_ID" > {tmp_path}/task_$SLURM_ARRAY_TASK_ID.txt',
    )
    dependent_id = sbatch(
        f"--dependency=afterok:{array_id}",
        f"--output={tmp_path}/dependent_%j.log",
        "--wrap",
        f"cat {tmp_path}/task_0.txt {tmp_path}/task_1.txt > {tmp_path}/after_array.txt",
    )

    waiting = show_job(dependent_id)
    assert waiting["JobState"] == "PENDING"
    assert waiting["Reason"] == "Dependency"
    assert waiting["Dependency"] == f"afterok:{array_id}_*(unfulfilled)"

    run_slurm_command(["scontrol", "release", array_id])
    records = wait_for_jobs([array_id, dependent_id], timeout_s=60)

    array_tasks = records[array_id]
    assert sorted(task["ArrayTaskId"] for task in array_tasks) == ["0", "1"]
    assert {task["ArrayJobId"] for task in array_tasks} == {array_id}
    outcomes = [(task["JobState"], task["ExitCode"]) for task in array_tasks]
    assert outcomes == [("COMPLETED", "0:0"), ("COMPLETED", "0:0")]

    (dependent,) = records[dependent_id]
    assert (dependent["JobState"], dependent["ExitCode"]) == ("COMPLETED", "0:0")
    assert dependent["Dependency"] == "(null)"
    last_array_end = max(_slurm_time(task["EndTime"]) for task in array_tasks)
    assert _slurm_time(dependent["StartTime"]) >= last_array_end
    assert (tmp_path / "after_array.txt").read_text() == "task 0\ntask 1\n"


@pytest.mark.slurm
def test_afterok_dependent_of_failed_job_is_cancelled_without_running(
    slurm: None, tmp_path: Path
) -> None:
    failing_id = sbatch("--output=/dev/null", "--wrap", "sleep 1; exit 3")
    dependent_id = sbatch(
        f"--dependency=afterok:{failing_id}",
        f"--output={tmp_path}/dependent.log",
        "--wrap",
        f"touch {tmp_path}/dependent_ran",
    )

    records = wait_for_jobs([failing_id, dependent_id], timeout_s=60)

    (failing,) = records[failing_id]
    assert (failing["JobState"], failing["ExitCode"]) == ("FAILED", "3:0")
    (dependent,) = show_jobs(dependent_id)
    assert dependent["JobState"] == "CANCELLED"
    assert dependent["Reason"] == "DependencyNeverSatisfied"
    assert dependent["Dependency"] == f"afterok:{failing_id}(failed)"
    assert not (tmp_path / "dependent_ran").exists()
