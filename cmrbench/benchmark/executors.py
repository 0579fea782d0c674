"""Executors: the `Executor` protocol, and running a plan on this machine (``local``).

An executor runs the pretraining jobs a plan's selected cells need, then the cells, each
through `runner.run_job` with the run's `RunOptions` and the cell's external evaluations
(a done cell with an external test set not yet scored is a job to run). The local executor
runs in-process by default, or in ``jobs`` worker processes, each with one of
``RunOptions.devices`` (round robin) and its share of the CPU cores
(`devices.shared_threads`) unless ``RunOptions.threads`` says otherwise; each worker loads
the plugin folders this process has loaded (`cmrbench.plugins.loaded_plugin_dirs`) before
its first job, so a plugin's method, dataset, net or optimizer resolves there too. A cell
starts once its pretraining job has ended; a cell whose pretraining failed in this run is
not run (the failure names why). A failing job writes ``error.json`` and the grid goes on;
so does a worker process that dies (killed by the kernel's out-of-memory killer, say): its
job gets an ``error.json`` saying so, a fresh worker takes its place and the other jobs
finish. The summary lists the failures and which of them ran out of memory. The Slurm
executor lives in `cmrbench.benchmark.slurm`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from tqdm import std as tqdm_std
from tqdm.auto import tqdm

from cmrbench.benchmark.devices import (
    describe_error,
    killed_worker_error,
    ran_out_of_memory,
    shared_threads,
)
from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.runner import DEFAULT_RUN_OPTIONS, RunOptionError, RunOptions, run_job
from cmrbench.benchmark.spec import CellSpec, ExternalSpec, PretrainSpec
from cmrbench.errors import CmrbenchError
from cmrbench.plugins import load_plugins, loaded_plugin_dirs
from cmrbench.store import ErrorRecord, StoredJob, StoreWriter
from cmrbench.store.layout import FINETUNED

log = logging.getLogger("cmrbench")
Job = CellSpec | PretrainSpec


class WorkerStartError(CmrbenchError, RuntimeError):
    """A local worker process died before it could run a job."""


@dataclass
class RunSummary:
    """What a grid run did: counts and the failed jobs with their error messages."""

    done: int = 0
    cached: int = 0
    busy: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (job folder, error)

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)

    @property
    def out_of_memory(self) -> list[str]:
        """The folders of the failed jobs that ran out of memory (or whose process the
        system killed, most likely for memory)."""
        return [folder for folder, error in self.failures if ran_out_of_memory(error)]


class Executor(Protocol):
    """Runs the pretraining jobs that ``cells`` need (from ``plan``), then the cells, into
    the store at ``run_dir``, every job with ``options``; returns what it did. ``check``
    refuses options it cannot honour (`RunOptionError`) before anything is written."""

    def check(self, options: RunOptions) -> None: ...

    def run(
        self, plan: Plan, run_dir: Path, cells: tuple[CellSpec, ...], options: RunOptions
    ) -> RunSummary: ...


def todo_jobs(
    plan: Plan, store: StoreWriter, cells: tuple[CellSpec, ...]
) -> tuple[list[PretrainSpec], list[CellSpec], int]:
    """The pretraining jobs and cells still to run (a cell also while one of its external
    test sets is not scored), and how many of all needed are done."""
    needed = {c.pretrain_key for c in cells if c.pretrain}
    pretrain = [p for p in plan.pretrain if p.key in needed]
    external = [e for c in cells for e in plan.external_of(c)]
    jobs: tuple[StoredJob, ...] = (*pretrain, *cells, *external)
    for job in jobs:  # a damaged result.json: kept, and redone
        store.set_aside_unreadable(job)
    todo_pre = [p for p in pretrain if not store.is_done(p)]
    todo_cells = [
        c
        for c in cells
        if not store.is_done(c) or not all(store.is_done(e) for e in plan.external_of(c))
    ]
    return todo_pre, todo_cells, len(pretrain) - len(todo_pre) + len(cells) - len(todo_cells)


def cells_to_refit(plan: Plan, store: StoreWriter, cells: tuple[CellSpec, ...]) -> list[CellSpec]:
    """Done cells with an external test set still to score and no fine-tuned weights kept:
    they are fine-tuned again (their in-domain scores stay) before the set is scored."""
    return [
        c
        for c in cells
        if store.is_done(c)
        and not (store.job_dir(c) / FINETUNED).exists()
        and not all(store.is_done(e) for e in plan.external_of(c))
    ]


def external_of(plan: Plan, spec: Job) -> tuple[ExternalSpec, ...]:
    """A cell's external evaluations (none for a pretraining job)."""
    return plan.external_of(spec) if isinstance(spec, CellSpec) else ()


class JobQueue:
    """The jobs of a run in order; a cell becomes ready once the pretraining job it needs has
    ended (if this run computes it), and is dropped, with a failure that says why, when that
    job failed."""

    def __init__(self, jobs: list[Job]) -> None:
        self.waiting = list(jobs)
        self.running_pretrain = {job.key for job in jobs if isinstance(job, PretrainSpec)}
        self.failed_pretrain: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def take(self) -> Job | None:
        """The next job that can start now (None: every waiting cell waits on a pretraining job)."""
        for job in self.waiting:
            if isinstance(job, PretrainSpec) or job.pretrain_key not in self.running_pretrain:
                self.waiting.remove(job)
                return job
        return None

    def ended(self, job: Job, error: str | None) -> None:
        """Record that ``job`` ended (``error``: why it failed, None if it did not)."""
        if isinstance(job, PretrainSpec):
            self.running_pretrain.discard(job.key)
            if error is not None:
                self.failed_pretrain[job.key] = (
                    f"pretrain/{job.folder_name} failed "
                    f"({error.split(':', 1)[0]}; see its error.json)"
                )

    def orphans(self) -> Iterator[tuple[CellSpec, str]]:
        """Remove and yield the waiting cells whose pretraining failed, with the reason."""
        for job in list(self.waiting):
            if isinstance(job, CellSpec) and job.pretrain_key in self.failed_pretrain:
                self.waiting.remove(job)
                yield job, f"not run: its pretraining job {self.failed_pretrain[job.pretrain_key]}"


def default_threads(jobs: int, threads: int | None = None) -> tuple[int | None, str | None]:
    """The CPU threads of each of ``jobs`` local jobs, and a note when the machine's load
    chose them: ``threads`` when given; else `devices.shared_threads`' share, except that an
    in-process job (``jobs == 1``) on a machine no other process loads keeps torch's own
    default (None)."""
    if threads is not None:
        return threads, None
    share = shared_threads(jobs)
    if jobs == 1 and share.note is None:
        return None, None
    return share.threads, share.note


class LocalExecutor:
    """Runs a plan on this machine, in-process (``jobs=1``) or in worker processes."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise RunOptionError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def check(self, options: RunOptions) -> None:
        """Refuse more ``options.devices`` than worker processes (one device each)."""
        if len(options.devices) > self.jobs:
            raise RunOptionError(
                f"--devices lists {len(options.devices)} devices "
                f"({','.join(options.devices)}) but --jobs is {self.jobs}: "
                f"each worker process uses one device"
            )

    def run(
        self,
        plan: Plan,
        run_dir: Path,
        cells: tuple[CellSpec, ...],
        options: RunOptions = DEFAULT_RUN_OPTIONS,
    ) -> RunSummary:
        """Run the pretraining jobs the ``cells`` need, then the cells."""
        self.check(options)
        store = StoreWriter(run_dir)
        todo_pre, todo_cells, cached = todo_jobs(plan, store, cells)
        summary = RunSummary(cached=cached)
        threads, note = default_threads(self.jobs, options.threads)
        if note and (todo_pre or todo_cells):
            log.warning(note)
        bar = tqdm(
            total=cached + len(todo_pre) + len(todo_cells),
            initial=cached,
            desc="grid",
            unit="job",
            disable=not options.progress,
            dynamic_ncols=True,
            position=0,
        )
        progress = _Progress(plan, store, summary, bar, JobQueue([*todo_pre, *todo_cells]))
        try:
            if self.jobs == 1:
                self._run_inline(progress, run_dir, dataclasses.replace(options, threads=threads))
            else:
                self._run_pool(progress, run_dir, options, threads or 1)
        finally:
            bar.close()
        return summary

    def _run_inline(self, progress: _Progress, run_dir: Path, options: RunOptions) -> None:
        while (job := progress.next()) is not None:
            try:
                progress.ended(
                    job, run_job(str(run_dir), job, options, external_of(progress.plan, job)), None
                )
            except Exception as exc:  # the grid goes on; error.json has the traceback
                progress.ended(job, None, describe_error(exc))

    def _run_pool(
        self, progress: _Progress, run_dir: Path, options: RunOptions, threads: int
    ) -> None:
        """Run the jobs in ``self.jobs`` worker processes (spawned: CUDA cannot fork); a
        worker that dies is replaced while jobs remain, and its job recorded as failed."""
        spawn = mp.get_context("spawn")
        workers = {
            index: _Worker(spawn, index, options, threads)
            for index in range(min(self.jobs, len(progress.queue.waiting)))
        }
        try:
            while True:
                for worker in workers.values():
                    if worker.ready and worker.job is None and (job := progress.next()) is not None:
                        worker.start(str(run_dir), job, external_of(progress.plan, job))
                busy = [w for w in workers.values() if w.job is not None or not w.ready]
                if not busy:
                    return  # idle workers and no job left to start
                ended = wait(
                    [w.connection for w in busy] + [w.process.sentinel for w in workers.values()]
                )
                for index, worker in list(workers.items()):
                    message = worker.receive() if worker.connection in ended else None
                    if message is not None:
                        worker.handle(message, progress)
                    elif worker.dead or worker.process.sentinel in ended:
                        self._bury(worker, progress)
                        del workers[index]
                        if progress.queue:
                            workers[index] = _Worker(spawn, index, options, threads)
        finally:
            for worker in workers.values():
                worker.stop()

    @staticmethod
    def _bury(worker: _Worker, progress: _Progress) -> None:
        """Record why a dead worker's job failed, in its ``error.json`` and the summary.

        Raises:
            WorkerStartError: the worker died before it could take a job (every worker
                would: typically a script that calls run_grid without a main guard).
        """
        worker.process.join()
        code = worker.process.exitcode
        if not worker.ready:
            raise WorkerStartError(
                f"local worker process {worker.index} exited with code {code} before it could "
                f"run a job (its own error is printed above). A script that calls run_grid "
                f'with jobs > 1 must call it under `if __name__ == "__main__":`: each '
                f"spawned worker imports the script again"
            )
        if worker.job is None:
            log.warning(
                f"local worker process {worker.index} exited with code {code} between "
                f"jobs; another takes its place"
            )
            return
        job, error = worker.job, killed_worker_error(code)
        progress.store.write_error(job, ErrorRecord(key=job.key, error=error, traceback=""))
        progress.ended(job, None, error)


@dataclass
class _Progress:
    """The bookkeeping both local modes share: the plan, the queue, the summary and the
    progress bar."""

    plan: Plan
    store: StoreWriter
    summary: RunSummary
    bar: tqdm
    queue: JobQueue

    def next(self) -> Job | None:
        """The next job to start, after recording the cells whose pretraining failed."""
        for cell, error in self.queue.orphans():
            self._record(cell, error)
        return self.queue.take()

    def ended(self, job: Job, status: str | None, error: str | None) -> None:
        self.queue.ended(job, error)
        if error is None:
            self.summary.add(status or "done")
            self.bar.update(1)
        else:
            self._record(job, error)

    def _record(self, job: Job, error: str) -> None:
        self.summary.failures.append((str(self.store.job_dir(job)), error))
        self.bar.update(1)
        self.bar.set_postfix(failed=len(self.summary.failures))


class _Worker:
    """One spawned worker process, its end of a pipe, and the job it runs (None: idle)."""

    def __init__(self, spawn: Any, index: int, options: RunOptions, threads: int) -> None:
        self.index = index
        self.connection, child = spawn.Pipe()
        self.process = spawn.Process(
            target=_worker_main,
            name=f"cmrbench-worker-{index}",
            args=(child, options.for_worker(index, threads), loaded_plugin_dirs()),
        )
        with _ctrl_c_ignored():
            self.process.start()
        child.close()
        self.job: Job | None = None
        self.ready = False
        self.dead = False

    def start(self, run_dir: str, job: Job, external: tuple[ExternalSpec, ...]) -> None:
        self.job = job
        self.connection.send((run_dir, job, external))

    def receive(self) -> tuple[str, Any] | None:
        """The worker's next message, or None when its pipe closed (it died)."""
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            self.dead = True
            return None

    def handle(self, message: tuple[str, Any], progress: _Progress) -> None:
        kind, value = message
        if kind == "ready":
            self.ready = True
            return
        job, self.job = self.job, None
        if job is not None:
            progress.ended(
                job, value if kind == "done" else None, value if kind == "error" else None
            )

    def stop(self) -> None:
        """Ask an idle worker to exit; end a busy one (Ctrl-C, an error): its job's lock dies
        with it and its last checkpoint stays for the next run."""
        if self.process.is_alive() and self.job is None and not self.dead:
            try:
                self.connection.send(None)
                self.process.join(timeout=10)
            except (BrokenPipeError, OSError):
                pass
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        self.connection.close()


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT in this block, so that a process spawned in it starts ignoring it (an
    ignored signal stays ignored across exec): Ctrl-C reaches the whole process group, and
    the parent alone handles it, ending its workers, with no traceback from each of them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_main(connection: Connection, options: RunOptions, plugin_dirs: tuple[str, ...]) -> None:
    """A worker process: load the run's plugin folders (a spawned process starts with none),
    then run each job the parent sends until it sends None (started with Ctrl-C ignored,
    `_ctrl_c_ignored`)."""
    # tqdm's default lock is a multiprocessing semaphore: a worker killed holding one makes
    # the resource tracker warn of a leak at exit. Workers show no bars; a thread lock does.
    tqdm_std.tqdm.set_lock(threading.RLock())
    load_plugins(plugin_dirs)
    connection.send(("ready", None))
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        run_dir, job, external = task
        try:
            connection.send(("done", run_job(run_dir, job, options, external)))
        except Exception as exc:  # the job's error.json has the traceback
            connection.send(("error", describe_error(exc)))
