"""The ``slurm`` executor: a plan's pretraining jobs and cells as Slurm job arrays (submitit).

What it submits, in this order:

1. one array of the pretraining jobs that the selected cells need and that are not done;
2. per pretraining job, one array of the cells that use it, with
   ``--dependency=afterok:<that pretraining task>`` (a cell waits only for its own job);
3. one array of the cells that wait for nothing (``scratch``, or pretraining already done).

Every array task calls `runner.run_job` with the run's `RunOptions` (its device from
``gpus_per_node``, its CPU threads from ``cpus_per_task`` unless set); jobs are
idempotent and resume from ``loop_state.pt``. The task is a submitit ``Checkpointable``,
so on preemption (or at the time limit, at most three times) submitit requeues it and
the requeued job resumes from the last checkpoint.

The store stays the source of truth: the executor waits by polling Slurm for the states
of its jobs and reads each finished job's ``result.json`` or ``error.json``. A job that
Slurm ended without a result (cancelled, out of time or memory, a node failure, or a
pretraining job it depended on failed) is a failure whose message names the Slurm job id
and its log; it gets an ``error.json`` with that message (out of memory as such, from the
OUT_OF_MEMORY state or the kernel's oom-kill line in its log), unless it never started.
Logs live in the run folder: ``RUN_DIR/slurm/<job id>/`` (submitit's
pickles, ``*_log.out`` and ``*_log.err``), and ``RUN_DIR/slurm/jobs.jsonl`` records which
Slurm job ran which store folder. The run folder and ``CMRBENCH_CACHE`` must be on a file
system that the compute nodes share (and so must the plugin folders, which each task loads
before its job); jobs inherit the submitting shell's environment (sbatch's default
``--export=ALL``) and its Python.

Job states come from ``squeue --states=all``, which needs no accounting database and
lists finished jobs for the cluster's ``MinJobAge`` (300 s by default; we poll far more
often). A job that ``squeue`` no longer lists is looked up with ``sacct`` when the
cluster keeps accounting. (submitit's own state watcher uses only ``sacct``; on a
cluster without accounting its jobs never leave the UNKNOWN state, so we do not use it.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError
from submitit.slurm.slurm import read_job_id
from tqdm.auto import tqdm

from cmrbench.benchmark.devices import MEMORY_KNOBS
from cmrbench.benchmark.executors import RunSummary, todo_jobs
from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.runner import DEFAULT_RUN_OPTIONS, RunOptionError, RunOptions, run_job
from cmrbench.benchmark.spec import CellSpec, ExternalSpec, PretrainSpec
from cmrbench.errors import CmrbenchError
from cmrbench.plugins import load_plugins, loaded_plugin_dirs
from cmrbench.store import ErrorRecord, JsonlLog, StoreWriter

DEFAULT_TIME_MIN = 24 * 60
LOG_FOLDER, MANIFEST = "slurm", "jobs.jsonl"
PRETRAIN_JOB_NAME, FINETUNE_JOB_NAME = "cmrbench-pretrain", "cmrbench-finetune"
# Terminal states. PREEMPTED is left out: a preempted Checkpointable task is requeued and
# comes back as PENDING.
FINISHED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "TIMEOUT",
    }
)
NOT_LISTED = "NOT_LISTED"  # neither squeue nor sacct knows the job any more
FIRST_POLL_S = 1.0  # then doubling up to `poll_s`, and again after a change
MAX_FAILED_QUERIES = 20  # consecutive failed squeue calls before giving up
COMMAND_TIMEOUT_S = 60
SLURM_TOOLS = ("sbatch", "srun", "squeue", "scancel")
WHERE = "(the grid's 'slurm' section or --slurm key=value)"

CommandRunner = Callable[[list[str]], subprocess.CompletedProcess]


class SlurmOptionError(CmrbenchError, ValueError):
    """A Slurm option from the grid's ``slurm`` section or the command line is invalid."""


class SlurmSubmitError(CmrbenchError, ValueError):
    """sbatch refused a job array (a bad partition, account, QOS, time or resource request)."""


class SlurmCommandError(CmrbenchError, RuntimeError):
    """A Slurm client command failed; the message holds the command and its stderr."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of every job: the grid's ``slurm`` section, overridden by ``--slurm key=value``.

    ``gpus_per_node`` of 0 or None asks for no GPU (jobs then run on the CPU);
    ``array_parallelism`` caps the running tasks of each array (Slurm's ``%N``);
    ``time_min`` is 24 h unless set (submitit's own default, 5 min, would cut jobs short).
    """

    partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = DEFAULT_TIME_MIN
    array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> SlurmOptions:
        """Validate ``options`` (names as in the grid's ``slurm`` section); None means unset."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise SlurmOptionError(
                f"unknown Slurm option(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
            )
        given = {k: v for k, v in options.items() if v is not None}
        for name in ("cpus_per_task", "time_min", "array_parallelism"):
            if name in given:
                given[name] = _whole_number(name, given[name], 1)
        if "gpus_per_node" in given:
            given["gpus_per_node"] = _whole_number("gpus_per_node", given["gpus_per_node"], 0)
        if "mem_gb" in given and not _is_positive_number(given["mem_gb"]):
            raise SlurmOptionError(
                f"Slurm option mem_gb {WHERE} must be a positive number of GB, "
                f"got {given['mem_gb']!r}"
            )
        for name in ("partition", "account", "qos", "constraint"):
            if name in given and not isinstance(given[name], str):
                raise SlurmOptionError(
                    f"Slurm option {name} {WHERE} must be a string, got {given[name]!r}"
                )
        return cls(**given)

    @property
    def device(self) -> str:
        """The device a job trains on: the first GPU Slurm gives it, or the CPU."""
        return "cuda" if self.gpus_per_node else "cpu"

    def submitit_parameters(
        self, name: str, after: str | None = None, hold: bool = False
    ) -> dict[str, Any]:
        """Keyword arguments of submitit's ``AutoExecutor.update_parameters`` for one array.

        ``after`` is a Slurm job id the array waits for (``afterok``); ``hold`` submits it
        held (``scontrol release`` starts it).
        """
        optional = {
            "slurm_partition": self.partition,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
            "gpus_per_node": self.gpus_per_node or None,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_account": self.account,
            "slurm_qos": self.qos,
            "slurm_constraint": self.constraint,
            "slurm_dependency": f"afterok:{after}" if after else None,
        }
        parameters: dict[str, Any] = {
            "name": name,
            "timeout_min": self.time_min,
            **{k: v for k, v in optional.items() if v is not None},
        }
        if hold:
            parameters["slurm_additional_parameters"] = {"hold": True}
        return parameters


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _whole_number(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SlurmOptionError(
            f"Slurm option {name} {WHERE} must be a whole number >= {minimum}, got {value!r}"
        )
    return value


# --------------------------------------------------------------------------- job states


def _run_command(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)


def parse_state_lines(text: str) -> dict[str, str]:
    """``JOBID|STATE`` lines (squeue or sacct) → ``{"<array>_<task>" or "<job>": state}``.

    Expands sacct's pending ranges (``12_[0-3%2]``) and drops the user after
    ``CANCELLED by 1000``.
    """
    states: dict[str, str] = {}
    for line in text.splitlines():
        job_id, sep, state = line.strip().partition("|")
        if not sep or "." in job_id:
            continue
        state = state.split("|")[0].split(" ")[0]
        for parts in read_job_id(job_id):
            if len(parts) == 3:
                for task in range(int(parts[1]), int(parts[2]) + 1):
                    states[f"{parts[0]}_{task}"] = state
            else:
                states["_".join(parts)] = state
    return states


class SlurmStates:
    """Slurm's states of submitted jobs: ``squeue`` first, ``sacct`` for jobs it forgot."""

    def __init__(self, run: CommandRunner = _run_command) -> None:
        self._run = run

    def query(self, job_ids: Iterable[str]) -> dict[str, str]:
        """``{job id: state}`` for ``job_ids`` (``"12"`` or ``"12_3"``); NOT_LISTED if unknown."""
        job_ids = list(job_ids)
        states = self._squeue(job_ids)
        forgotten = [j for j in job_ids if j not in states]
        if forgotten:
            states.update(self._sacct(forgotten))
        return {j: states.get(j, NOT_LISTED) for j in job_ids}

    def _squeue(self, job_ids: list[str]) -> dict[str, str]:
        command = [
            "squeue",
            "--noheader",
            "--states=all",
            "--array",
            "--format=%i|%T",
            f"--jobs={_array_ids(job_ids)}",
        ]
        done = self._run(command)
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:  # every one of them has left slurmctld
                return {}
            raise SlurmCommandError(
                f"`{' '.join(command)}` exited with {done.returncode}: {done.stderr.strip()}"
            )
        return parse_state_lines(done.stdout)

    def _sacct(self, job_ids: list[str]) -> dict[str, str]:
        """States from accounting; empty where the cluster keeps none."""
        done = self._run(
            [
                "sacct",
                "--noheader",
                "--parsable2",
                "--allocations",
                "--format=JobID,State",
                f"--jobs={_array_ids(job_ids)}",
            ]
        )
        return parse_state_lines(done.stdout) if done.returncode == 0 else {}


def _array_ids(job_ids: Iterable[str]) -> str:
    return ",".join(sorted({j.split("_")[0] for j in job_ids}, key=int))


# --------------------------------------------------------------------------- the task


class SlurmTask(submitit.helpers.Checkpointable):
    """What one Slurm array task runs: one pretraining job or cell into the store.

    The task carries the plugin folders of the submitting process (``plugin_dirs``,
    default `loaded_plugin_dirs`) and loads them before its job, so a plugin's method,
    dataset, net or optimizer resolves on the node as it did at submission.
    Checkpointable: on preemption or at the time limit submitit resubmits the same call
    (``checkpoint`` returns it unchanged); the runner then resumes from ``loop_state.pt``.
    """

    def __init__(
        self,
        run_dir: str,
        options: RunOptions,
        plugin_dirs: tuple[str, ...] | None = None,
        external: dict[str, tuple[ExternalSpec, ...]] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.options = options
        self.plugin_dirs = loaded_plugin_dirs() if plugin_dirs is None else plugin_dirs
        self.external = external or {}  # cell key → its external evaluations

    def __call__(self, spec: CellSpec | PretrainSpec) -> str:
        load_plugins(self.plugin_dirs)
        return run_job(self.run_dir, spec, self.options, self.external.get(spec.key, ()))


# --------------------------------------------------------------------------- the executor


@dataclass(frozen=True)
class SubmittedJob:
    """One Slurm job (an array task, or a lone job) and the store job it computes."""

    job_id: str
    spec: CellSpec | PretrainSpec
    log: Path
    after: str | None = None  # the pretraining job id it waits for (afterok)


class SlurmExecutor:
    """Runs a plan as Slurm job arrays and waits for them (see the module docstring).

    ``options`` are the `SlurmOptions` fields. ``hold`` submits every job held, so that
    nothing starts before ``scontrol release`` (tests read Slurm's records that way).
    Interrupting the wait leaves the jobs queued; their results land in the store.
    """

    def __init__(self, *, poll_s: float = 15.0, hold: bool = False, **options: Any) -> None:
        self.options = SlurmOptions.from_mapping(options)
        self.poll_s = poll_s
        self.hold = hold
        self.states = SlurmStates()

    def run(
        self,
        plan: Plan,
        run_dir: Path,
        cells: tuple[CellSpec, ...],
        options: RunOptions = DEFAULT_RUN_OPTIONS,
    ) -> RunSummary:
        """Submit the pretraining jobs the ``cells`` need and the cells, then wait for all."""
        self.check(options)
        run_dir = Path(run_dir).resolve()
        store = StoreWriter(run_dir)
        todo_pre, todo_cells, cached = todo_jobs(plan, store, cells)
        summary = RunSummary(cached=cached)
        if not todo_pre and not todo_cells:
            return summary
        missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
        if missing:
            raise SlurmSubmitError(
                f"--executor slurm needs the Slurm client tools on PATH; "
                f"missing: {', '.join(missing)}"
            )
        external = {c.key: plan.external_of(c) for c in todo_cells if plan.external_of(c)}
        jobs = self._submit(run_dir, todo_pre, todo_cells, self.task_options(options), external)
        bar = tqdm(
            total=cached + len(jobs),
            initial=cached,
            desc="grid (slurm)",
            unit="job",
            disable=not options.progress,
            dynamic_ncols=True,
        )
        try:
            self._wait(jobs, store, summary, bar)
        finally:
            bar.close()
        return summary

    def check(self, options: RunOptions) -> None:
        """Refuse ``options.devices``: Slurm gives each job its device (``gpus_per_node``)."""
        if options.devices:
            raise RunOptionError(
                f"--devices {','.join(options.devices)} cannot be used with "
                f"--executor slurm: Slurm gives each job its GPU "
                f"(--slurm gpus_per_node=N)"
            )

    def task_options(self, options: RunOptions) -> RunOptions:
        """What every task runs with: the device the Slurm job gets, ``cpus_per_task``
        threads unless ``options`` fix them (without CPU binding torch would take every
        core of the node), no progress bars."""
        return dataclasses.replace(
            options,
            devices=(self.options.device,),
            threads=options.threads or self.options.cpus_per_task,
            progress=False,
        )

    def _submit(
        self,
        run_dir: Path,
        pretrain: list[PretrainSpec],
        cells: list[CellSpec],
        options: RunOptions,
        external: dict[str, tuple[ExternalSpec, ...]] | None = None,
    ) -> list[SubmittedJob]:
        """Submit the pretraining array, then one cell array per pretraining job waited for.

        If sbatch refuses an array, cancel what was submitted and raise SlurmSubmitError.
        """
        submitted: list[SubmittedJob] = []
        try:
            submitted += self._submit_array(run_dir, PRETRAIN_JOB_NAME, pretrain, None, options)
            pretrain_job = {job.spec.key: job.job_id for job in submitted}
            groups: dict[str | None, list[CellSpec]] = {}
            for cell in cells:
                after = pretrain_job.get(cell.pretrain_key) if cell.pretrain_key else None
                groups.setdefault(after, []).append(cell)
            for after, group in groups.items():
                submitted += self._submit_array(
                    run_dir, FINETUNE_JOB_NAME, group, after, options, external
                )
        except (FailedJobError, FailedSubmissionError) as exc:
            _cancel([job.job_id for job in submitted])
            raise SlurmSubmitError(
                f"sbatch refused a job array of {run_dir} ({str(exc).strip()}); "
                f"check the Slurm options {WHERE}: {self.options}"
            ) from None
        return submitted

    def _submit_array(
        self,
        run_dir: Path,
        name: str,
        specs: list,
        after: str | None,
        options: RunOptions,
        external: dict[str, tuple[ExternalSpec, ...]] | None = None,
    ) -> list[SubmittedJob]:
        if not specs:
            return []
        # A fresh submitit executor per array: its parameters (the dependency) are sticky.
        executor = submitit.AutoExecutor(folder=run_dir / LOG_FOLDER / "%j", cluster="slurm")
        executor.update_parameters(**self.options.submitit_parameters(name, after, self.hold))
        task = SlurmTask(str(run_dir), options, external=external)
        handles = executor.map_array(task, specs)
        manifest = JsonlLog(run_dir / LOG_FOLDER / MANIFEST)
        store = StoreWriter(run_dir)
        jobs = []
        for spec, handle in zip(specs, handles):
            job = SubmittedJob(str(handle.job_id), spec, Path(handle.paths.stderr), after)
            manifest.write(
                {
                    "job_id": job.job_id,
                    "after": after,
                    "folder": str(store.job_dir(spec).relative_to(run_dir)),
                    "log": str(job.log),
                    "submitted": dt.datetime.now().isoformat(timespec="seconds"),
                }
            )
            jobs.append(job)
        return jobs

    def _wait(
        self, jobs: list[SubmittedJob], store: StoreWriter, summary: RunSummary, bar: tqdm
    ) -> None:
        """Poll Slurm until every job has finished; record each outcome as it finishes."""
        # Pretraining jobs first, so that their failures are known when their cells end.
        ordered = sorted(jobs, key=lambda job: isinstance(job.spec, CellSpec))
        pending = {job.job_id: job for job in ordered}
        failed_pretrain: dict[str, str] = {}
        failed_queries, delay = 0, FIRST_POLL_S
        while pending:
            try:
                states = self.states.query(list(pending))
                failed_queries = 0
            except (SlurmCommandError, subprocess.TimeoutExpired):
                failed_queries += 1
                if failed_queries >= MAX_FAILED_QUERIES:
                    raise
                time.sleep(self.poll_s)
                continue
            finished = [j for j in pending if states[j] in FINISHED_STATES | {NOT_LISTED}]
            for job_id in finished:
                _record(pending.pop(job_id), states[job_id], store, summary, failed_pretrain)
                if job_id in failed_pretrain:
                    _cancel([j.job_id for j in pending.values() if j.after == job_id])
                bar.update(1)
            running = sum(states[j] == "RUNNING" for j in pending)
            bar.set_postfix(
                running=running, queued=len(pending) - running, failed=len(summary.failures)
            )
            # Poll soon after a change (dependents start, neighbours end), then back off.
            delay = FIRST_POLL_S if finished else 2 * delay
            if pending:
                time.sleep(min(delay, self.poll_s))


def _record(
    job: SubmittedJob,
    state: str,
    store: StoreWriter,
    summary: RunSummary,
    failed_pretrain: dict[str, str],
) -> None:
    """Add a finished job to the summary (and a failed pretraining job to ``failed_pretrain``).

    A job that Slurm ended without ``result.json`` or ``error.json`` (out of memory, out of
    time, killed, cancelled) gets an ``error.json`` that says so; a cell of a failed
    pretraining job, which never started, gets none."""
    error = _failure(job, state, store, failed_pretrain)
    if error is None:
        summary.add("done" if store.is_done(job.spec) else "busy")
        return
    if job.after not in failed_pretrain and not store.has_error(job.spec):
        store.write_error(job.spec, ErrorRecord(key=job.spec.key, error=error, traceback=""))
    summary.failures.append((str(store.job_dir(job.spec)), error))
    if isinstance(job.spec, PretrainSpec):
        failed_pretrain[job.job_id] = error


OOM_LOG_MARKS = ("oom-kill", "out-of-memory", "out of memory")
"""What slurmstepd writes into a task's log when the kernel killed it for memory."""


def _failure(
    job: SubmittedJob, state: str, store: StoreWriter, failed_pretrain: Mapping[str, str]
) -> str | None:
    """Why a finished job left no result, naming its Slurm job and log; None if it has one.

    A job that COMPLETED without a result returned "busy" (another process holds it): no
    failure. A job that Slurm ended OUT_OF_MEMORY, or whose log shows the kernel's
    out-of-memory killer, is an ``OutOfMemoryError`` with the settings that use less.
    """
    if store.is_done(job.spec) or state == "COMPLETED":
        return None
    if job.after is not None and job.after in failed_pretrain:
        return (
            f"not run: its pretraining (Slurm job {job.after}) failed: {failed_pretrain[job.after]}"
        )
    if state == NOT_LISTED:
        return (
            f"Slurm no longer lists job {job.job_id} (nor does sacct) and it wrote no "
            f"result.json; log: {job.log}"
        )
    if state == "FAILED" and store.has_error(job.spec):  # run_cell/run_pretrain_job wrote it
        return f"{store.error(job.spec).error} (Slurm job {job.job_id}; log: {job.log})"
    if state == "OUT_OF_MEMORY" or _log_shows_oom_kill(job.log):
        return (
            f"OutOfMemoryError: Slurm job {job.job_id} ended {state}: the kernel killed it "
            f"for using more memory than it was given (--slurm mem_gb=N asks for more); "
            f"to use less: {MEMORY_KNOBS}; log: {job.log}"
        )
    return f"Slurm job {job.job_id} ended {state} without writing result.json; log: {job.log}"


def _log_shows_oom_kill(log: Path) -> bool:
    try:
        tail = log.read_text(errors="replace")[-20_000:].lower()
    except OSError:
        return False
    return any(mark in tail for mark in OOM_LOG_MARKS)


def _cancel(job_ids: list[str]) -> None:
    """``scancel`` jobs: the cells of a failed pretraining job (clusters without
    ``kill_invalid_depend`` would keep them pending for ever), or a half-submitted run."""
    if not job_ids:
        return
    command = ["scancel", *job_ids]
    done = _run_command(command)
    if done.returncode != 0:
        raise SlurmCommandError(
            f"`{' '.join(command)}` exited with {done.returncode}: {done.stderr.strip()}"
        )
