"""Find, drive and read a running Slurm cluster for the tests marked ``slurm``.

CI starts a one-node cluster on localhost with ``.ci/slurm/start-cluster.sh``. That
cluster keeps no accounting database, so there is no ``sacct``: everything here reads
Slurm's live records with ``scontrol show job -o``, which keep finished jobs for
``MinJobAge`` (3600 s in the CI config).

Tests call :func:`require_slurm_or_skip` first. Without a cluster they skip with the
reason, unless ``CMRBENCH_REQUIRE_SLURM=1`` (set by CI), where a missing cluster fails.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable

import pytest

from cmrbench.benchmark.slurm import FINISHED_STATES

REQUIRE_SLURM_ENV = "CMRBENCH_REQUIRE_SLURM"
START_HINT = (
    "install it with `apt-get install -y --no-install-recommends slurm-wlm munge` "
    "and start it with `.ci/slurm/start-cluster.sh` (as root)"
)
CLIENT_TOOLS = ("sinfo", "sbatch", "scontrol", "scancel")
NODE_UP_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
COMMAND_TIMEOUT_S = 30
SINFO_TIMEOUT_S = 5

# `scontrol -o` prints `Key=value` pairs separated by single spaces; keys may hold `/`
# and `:` (`Socks/Node`, `AllocNode:Sid`) and values may hold `=` (`TRES=cpu=1,...`).
_NEXT_KEY = re.compile(r" (?=[A-Za-z][A-Za-z0-9_/:]*=)")


class SlurmCommandError(RuntimeError):
    """A Slurm client command failed; the message holds the command and its stderr."""


@functools.lru_cache(maxsize=1)
def slurm_available() -> tuple[bool, str]:
    """Say whether a Slurm cluster answers here with at least one usable node.

    Returns ``(True, "")`` or ``(False, reason)``, the reason naming what is missing.
    Asked once per test session: `sinfo` takes seconds to give up on a stopped slurmctld.
    """
    missing = [tool for tool in CLIENT_TOOLS if shutil.which(tool) is None]
    if missing:
        return False, f"Slurm client tools not on PATH: {', '.join(missing)}; {START_HINT}"
    try:
        answer = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=SINFO_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False, (
            f"`sinfo` did not answer within {SINFO_TIMEOUT_S} s (is slurmctld "
            f"running?); {START_HINT}"
        )
    if answer.returncode != 0:
        return False, f"`sinfo` failed: {answer.stderr.strip()}; {START_HINT}"
    states = answer.stdout.split()
    if not NODE_UP_STATES.intersection(states):
        return False, (
            f"no Slurm node is up (node states: {states or 'none'}); see "
            f"/var/log/cmrbench-slurm/slurmd.log; {START_HINT}"
        )
    return True, ""


def require_slurm_or_skip() -> None:
    """Skip the calling test without a cluster, or fail it when CI requires one."""
    available, reason = slurm_available()
    if available:
        return
    if os.environ.get(REQUIRE_SLURM_ENV) == "1":
        pytest.fail(f"{REQUIRE_SLURM_ENV}=1 but no Slurm cluster: {reason}")
    pytest.skip(reason)


def run_slurm_command(args: Iterable[str]) -> str:
    """Run one Slurm client command and return its stdout; raise SlurmCommandError on failure."""
    command = list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise SlurmCommandError(
            f"`{' '.join(command)}` exited with {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


def sbatch(*args: str) -> str:
    """Submit a batch job with ``sbatch --parsable ARGS`` and return its job id (a string)."""
    return run_slurm_command(["sbatch", "--parsable", *args]).strip().split(";")[0]


def parse_scontrol_record(line: str) -> dict[str, str]:
    """Read one line of ``scontrol show ... -o`` into ``{key: value}``.

    A value that itself holds a space followed by ``word=`` would be cut there; job
    records only do that in free text such as ``Comment``.
    """
    record: dict[str, str] = {}
    for field in _NEXT_KEY.split(line.strip()):
        key, _, value = field.partition("=")
        record[key] = value
    return record


def show_jobs(job_id: str) -> list[dict[str, str]]:
    """Return Slurm's records for a job: one per array task for an array job id."""
    output = run_slurm_command(["scontrol", "show", "job", "-o", job_id])
    return [parse_scontrol_record(line) for line in output.splitlines() if line.strip()]


def show_job(job_id: str) -> dict[str, str]:
    """Return the single record of a job that is not an array."""
    records = show_jobs(job_id)
    if len(records) != 1:
        raise SlurmCommandError(f"expected one record for job {job_id}, got {len(records)}")
    return records[0]


JobRecords = dict[str, list[dict[str, str]]]


def wait_for_jobs(job_ids: Iterable[str], timeout_s: float = 60.0) -> JobRecords:
    """Poll until every record of every job has a finished state; return the records by id.

    Raises TimeoutError listing the unfinished records after ``timeout_s`` seconds.
    """
    job_ids = list(job_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        records = {job_id: show_jobs(job_id) for job_id in job_ids}
        unfinished = [
            f"{record['JobId']}={record['JobState']}"
            for job_records in records.values()
            for record in job_records
            if record["JobState"] not in FINISHED_STATES
        ]
        if not unfinished:
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Slurm jobs still unfinished after {timeout_s} s: {', '.join(unfinished)}"
            )
        time.sleep(0.5)
