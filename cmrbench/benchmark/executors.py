"""Executors: run a plan's pretraining jobs and cells on this machine (``local``).

The local executor runs in-process by default, or in ``--jobs N`` worker processes with
``--devices 0,1`` giving one GPU per worker. Pretraining jobs run first; a cell whose
pretraining is still running elsewhere waits for it (see `runner.load_pretrained`). A
failing job writes ``error.json`` and the grid goes on; the summary lists the failures.
The Slurm executor lives in `cmrbench.benchmark.slurm`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from cmrbench.benchmark.grid import Plan
from cmrbench.benchmark.runner import run_cell, run_pretrain_job
from cmrbench.benchmark.spec import CellSpec, PretrainSpec
from cmrbench.store import StoreWriter


@dataclass
class RunSummary:
    """What a grid run did: counts and the failed jobs with their error messages."""

    done: int = 0
    cached: int = 0
    busy: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)   # (job folder, error)

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)


def run_job(run_dir: str, spec: CellSpec | PretrainSpec, device: str | None, show_progress: bool,
             keep_checkpoints: bool) -> str:
    """Run one job (cell or pretraining) in this process and return its status; the
    entry point of every executor's workers."""
    if isinstance(spec, CellSpec):
        return run_cell(run_dir, spec, device, show_progress, keep_checkpoints)  # type: ignore[arg-type]
    return run_pretrain_job(run_dir, spec, device, show_progress)  # type: ignore[arg-type]


def _worker_init(devices: list[str], counter: "mp.Value", jobs: int) -> None:  # type: ignore[name-defined]
    """Pin each worker process to one device (round-robin over ``--devices``) and give it
    an equal share of the CPU cores (oversubscribed OpenMP threads slow everyone down)."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if devices:
        os.environ["CMRBENCH_DEVICE"] = devices[index % len(devices)]
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


class LocalExecutor:
    """Runs a plan on this machine, in-process (``jobs=1``) or in worker processes."""

    def __init__(self, jobs: int = 1, devices: list[str] | None = None, device: str | None = None,
                 show_progress: bool = True, keep_checkpoints: bool = False) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs
        self.devices = devices or []
        self.device = device
        self.show_progress = show_progress
        self.keep_checkpoints = keep_checkpoints

    def run(self, plan: Plan, run_dir: Path, cells: tuple[CellSpec, ...]) -> RunSummary:
        """Run the pretraining jobs the ``cells`` need, then the cells."""
        store = StoreWriter(run_dir)
        needed = {c.pretrain_key for c in cells if c.pretrain}
        pretrain = [p for p in plan.pretrain if p.key in needed]
        summary = RunSummary()
        todo_pre = [p for p in pretrain if not store.is_done(p)]
        todo_cells = [c for c in cells if not store.is_done(c)]
        summary.cached = len(pretrain) - len(todo_pre) + len(cells) - len(todo_cells)
        bar = tqdm(total=len(pretrain) + len(cells), initial=summary.cached, desc="grid",
                   unit="job", disable=not self.show_progress, dynamic_ncols=True, position=0)
        jobs: list[CellSpec | PretrainSpec] = [*todo_pre, *todo_cells]
        if self.jobs == 1:
            self._run_inline(jobs, run_dir, store, summary, bar)
        else:
            self._run_pool(jobs, run_dir, store, summary, bar)
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

    def _run_inline(self, jobs: list, run_dir: Path, store: StoreWriter, summary: RunSummary, bar: tqdm) -> None:
        device = self.device or os.environ.get("CMRBENCH_DEVICE")
        for spec in jobs:
            try:
                status = run_job(str(run_dir), spec, device, self.show_progress, self.keep_checkpoints)
                self._record(spec, store, summary, bar, status, None)
            except Exception as exc:  # the grid goes on; error.json has the traceback
                self._record(spec, store, summary, bar, None, exc)

    def _run_pool(self, jobs: list, run_dir: Path, store: StoreWriter, summary: RunSummary, bar: tqdm) -> None:
        ctx = mp.get_context("spawn")
        counter = ctx.Value("i", 0)
        with ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(self.devices, counter, self.jobs)) as pool:
            pending = {pool.submit(_run_one_in_worker, str(run_dir), spec, self.keep_checkpoints): spec
                       for spec in jobs}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    spec = pending.pop(future)
                    error = future.exception()
                    self._record(spec, store, summary, bar, None if error else future.result(), error)


def _run_one_in_worker(run_dir: str, spec: CellSpec | PretrainSpec, keep_checkpoints: bool) -> str:
    return run_job(run_dir, spec, os.environ.get("CMRBENCH_DEVICE"), False, keep_checkpoints)
