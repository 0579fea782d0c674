"""Executors: the `Executor` protocol, and running a plan on this machine (``local``).

An executor runs the pretraining jobs a plan's selected cells need, then the cells, each
through `runner.run_job` with the run's `RunOptions` and the cell's external evaluations
(a done cell with an external test set not yet scored is a job to run). The local executor
runs in-process by default, or in ``jobs`` worker processes, each with ``cores // jobs`` CPU
threads (unless ``RunOptions.threads`` says otherwise) and one of ``RunOptions.devices``
(round robin). A cell whose pretraining is still running elsewhere waits for it (see
`runner.load_pretrained`). A failing job writes ``error.json`` and the grid goes on; the
summary lists the failures. Each worker process loads the plugin folders this process has
loaded (`cmrbench.plugins.loaded_plugin_dirs`) before its first job, so a plugin's method,
dataset, net or optimizer resolves there too. The Slurm executor lives in
`cmrbench.benchmark.slurm`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.runner import RunOptionError, RunOptions, run_job
from cmrbench.benchmark.spec import CellSpec, ExternalSpec, PretrainSpec
from cmrbench.plugins import load_plugins, loaded_plugin_dirs
from cmrbench.store import StoreWriter
from cmrbench.store.layout import FINETUNED


@dataclass
class RunSummary:
    """What a grid run did: counts and the failed jobs with their error messages."""

    done: int = 0
    cached: int = 0
    busy: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)   # (job folder, error)

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)


class Executor(Protocol):
    """Runs the pretraining jobs that ``cells`` need (from ``plan``), then the cells, into
    the store at ``run_dir``, every job with ``options``; returns what it did. ``check``
    refuses options it cannot honour (`RunOptionError`) before anything is written."""

    def check(self, options: RunOptions) -> None: ...

    def run(self, plan: Plan, run_dir: Path, cells: tuple[CellSpec, ...],
            options: RunOptions) -> RunSummary: ...


def todo_jobs(plan: Plan, store: StoreWriter, cells: tuple[CellSpec, ...]
              ) -> tuple[list[PretrainSpec], list[CellSpec], int]:
    """The pretraining jobs and cells still to run (a cell also while one of its external
    test sets is not scored), and how many of all needed are done."""
    needed = {c.pretrain_key for c in cells if c.pretrain}
    pretrain = [p for p in plan.pretrain if p.key in needed]
    for job in (*pretrain, *cells):      # a result.json a disk fault damaged: kept, and redone
        store.set_aside_unreadable(job)
    todo_pre = [p for p in pretrain if not store.is_done(p)]
    todo_cells = [c for c in cells if not store.is_done(c)
                  or not all(store.is_done(e) for e in plan.external_of(c))]
    return todo_pre, todo_cells, len(pretrain) - len(todo_pre) + len(cells) - len(todo_cells)


def cells_to_refit(plan: Plan, store: StoreWriter, cells: tuple[CellSpec, ...]) -> list[CellSpec]:
    """Done cells with an external test set still to score and no fine-tuned weights kept:
    they are fine-tuned again (their in-domain scores stay) before the set is scored."""
    return [c for c in cells if store.is_done(c) and not (store.job_dir(c) / FINETUNED).exists()
            and not all(store.is_done(e) for e in plan.external_of(c))]


_worker_options = RunOptions()   # replaced once per worker process by `_worker_init`


def _worker_init(options: RunOptions, counter: "mp.Value",  # type: ignore[name-defined]
                 threads: int, plugin_dirs: tuple[str, ...]) -> None:
    """Give this worker process its options: one device (round robin over ``devices``)
    and an equal share of the CPU cores (oversubscribed OpenMP threads slow everyone down);
    and load the run's plugin folders (a spawned process starts with none)."""
    global _worker_options
    load_plugins(plugin_dirs)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _worker_options = options.for_worker(index, threads)


def _run_in_worker(run_dir: str, spec: CellSpec | PretrainSpec,
                   external: tuple[ExternalSpec, ...]) -> str:
    return run_job(run_dir, spec, _worker_options, external)


def external_of(plan: Plan, spec: CellSpec | PretrainSpec) -> tuple[ExternalSpec, ...]:
    """A cell's external evaluations (none for a pretraining job)."""
    return plan.external_of(spec) if isinstance(spec, CellSpec) else ()


class LocalExecutor:
    """Runs a plan on this machine, in-process (``jobs=1``) or in worker processes."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise RunOptionError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def check(self, options: RunOptions) -> None:
        """Refuse more ``options.devices`` than worker processes (one device each)."""
        if len(options.devices) > self.jobs:
            raise RunOptionError(f"--devices lists {len(options.devices)} devices "
                                 f"({','.join(options.devices)}) but --jobs is {self.jobs}: "
                                 f"each worker process uses one device")

    def run(self, plan: Plan, run_dir: Path, cells: tuple[CellSpec, ...],
            options: RunOptions = RunOptions()) -> RunSummary:
        """Run the pretraining jobs the ``cells`` need, then the cells."""
        self.check(options)
        store = StoreWriter(run_dir)
        todo_pre, todo_cells, cached = todo_jobs(plan, store, cells)
        summary = RunSummary(cached=cached)
        bar = tqdm(total=cached + len(todo_pre) + len(todo_cells), initial=cached, desc="grid",
                   unit="job", disable=not options.progress, dynamic_ncols=True, position=0)
        jobs: list[CellSpec | PretrainSpec] = [*todo_pre, *todo_cells]
        if self.jobs == 1:
            self._run_inline(plan, jobs, run_dir, store, summary, bar, options)
        else:
            self._run_pool(plan, jobs, run_dir, store, summary, bar, options)
        bar.close()
        return summary

    def _record(self, spec: CellSpec | PretrainSpec, store: StoreWriter, summary: RunSummary,
                bar: tqdm, status: str | None, error: BaseException | None) -> None:
        if error is not None:
            summary.failures.append((str(store.job_dir(spec)), f"{type(error).__name__}: {error}"))
        else:
            summary.add(status or "done")
        bar.update(1)
        bar.set_postfix(failed=len(summary.failures))

    def _run_inline(self, plan: Plan, jobs: list, run_dir: Path, store: StoreWriter,
                    summary: RunSummary, bar: tqdm, options: RunOptions) -> None:
        for spec in jobs:
            try:
                status = run_job(str(run_dir), spec, options, external_of(plan, spec))
                self._record(spec, store, summary, bar, status, None)
            except Exception as exc:  # the grid goes on; error.json has the traceback
                self._record(spec, store, summary, bar, None, exc)

    def _run_pool(self, plan: Plan, jobs: list, run_dir: Path, store: StoreWriter,
                  summary: RunSummary, bar: tqdm, options: RunOptions) -> None:
        ctx = mp.get_context("spawn")
        counter = ctx.Value("i", 0)
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        with ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(options, counter, threads,
                                           loaded_plugin_dirs())) as pool:
            pending = {pool.submit(_run_in_worker, str(run_dir), spec,
                                   external_of(plan, spec)): spec for spec in jobs}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    spec = pending.pop(future)
                    error = future.exception()
                    self._record(spec, store, summary, bar, None if error else future.result(), error)
