"""`run_grid`: plan a grid, record its provenance in ``run.json`` and run it (the API under
``cmrbench run``).

    import cmrbench
    summary = cmrbench.run_grid("smoke", "runs/smoke", only="method=scratch|mim")
    print(summary.done, summary.failures)

The CLI parses its options into these arguments; everything else happens here, so a
Python user gets the same checks, the same ``run.json`` and the same store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cmrbench import __version__
from cmrbench.benchmark.data import adapter_for, open_data
from cmrbench.benchmark.devices import (
    cpu_threads,
    device_description,
    gigabytes,
    memory_budget,
    resolve_device,
)
from cmrbench.benchmark.estimate import (
    check_cells_against_data,
    describe_job,
    estimate_memory,
    memory_advice,
)
from cmrbench.benchmark.executors import (
    Executor,
    LocalExecutor,
    RunSummary,
    cells_to_refit,
    todo_jobs,
)
from cmrbench.benchmark.grid import (
    Grid,
    Plan,
    add_checkpoints,
    load_grid,
    plan_grid,
    scale_grid,
    select_cells,
)
from cmrbench.benchmark.leakage import check_no_test_subject_in_training
from cmrbench.benchmark.runner import DEFAULT_RUN_OPTIONS, RunOptionError, RunOptions
from cmrbench.benchmark.spec import CellSpec
from cmrbench.datasets.base import DatasetError
from cmrbench.datasets.check import check_dataset
from cmrbench.errors import CmrbenchError
from cmrbench.methods import method_info
from cmrbench.plugins import load_plugins
from cmrbench.store import RunRecord, StoreWriter, read_run

PROVENANCE_PACKAGES = (
    "torch",
    "timm",
    "numpy",
    "scipy",
    "pandas",
    "nibabel",
    "pydicom",
    "statsmodels",
    "submitit",
    "cmrbench",
)
EXECUTORS = ("local", "slurm")
NOTHING_RUN = "nothing was run; --skip-bad-subjects skips bad subjects instead"

log = logging.getLogger("cmrbench")


@dataclass(frozen=True)
class PlannedRun:
    """A grid resolved into its plan, the selected cells and the subjects skipped as bad."""

    grid: Grid
    plan: Plan
    cells: tuple[CellSpec, ...]
    skipped: tuple[dict[str, str], ...] = ()


def plan_run(
    grid: str | Path | Grid,
    *,
    only: str | None = None,
    epochs_scale: float = 1.0,
    checkpoints: Sequence[str] = (),
    skip_bad_subjects: bool = False,
    progress: bool = True,
    scale: str | None = None,
    plugins: Sequence[str | os.PathLike[str]] = (),
) -> PlannedRun:
    """Load the ``plugins`` folders (and those of ``CMRBENCH_PLUGINS``), load ``grid`` (a
    built-in name, a YAML path or a `Grid`), shrink it to the CPU size ``scale`` names
    (`grid.scale_grid`: ``"small"``), add the external ``checkpoints``
    (``name=path,format=...``), drop bad subjects if asked, plan it and select the ``only``
    cells; every cell's subjects are resolved, so an impossible budget fails here, before
    anything is written, and no test subject may be in any training data
    (`cmrbench.benchmark.leakage`, for grids with ``pretrain.pool`` or ``evaluate_on``)."""
    load_plugins(plugins)
    if not isinstance(grid, Grid):
        grid = load_grid(str(grid))
    grid = add_checkpoints(scale_grid(grid, scale), tuple(checkpoints))
    skipped: tuple[dict[str, str], ...] = ()
    if skip_bad_subjects:
        grid, skipped = without_bad_subjects(grid, progress)
    plan = plan_grid(grid, epochs_scale)
    cells = select_cells(plan.cells, only)
    check_cells_against_data(cells)
    check_no_test_subject_in_training(plan, progress)
    return PlannedRun(grid, plan, cells, skipped)


def run_grid(
    grid: str | Path | Grid,
    out: str | Path,
    *,
    executor: str | Executor = "local",
    jobs: int = 1,
    slurm: Mapping[str, Any] | None = None,
    options: RunOptions = DEFAULT_RUN_OPTIONS,
    only: str | None = None,
    epochs_scale: float = 1.0,
    checkpoints: Sequence[str] = (),
    skip_bad_subjects: bool = False,
    scale: str | None = None,
    max_memory_gb: float | None = None,
    force: bool = False,
    plugins: Sequence[str | os.PathLike[str]] = (),
) -> RunSummary:
    """Run ``grid``'s cells (and the pretraining jobs they need) into the store ``out``.

    ``executor`` is ``"local"`` (``jobs`` worker processes) or ``"slurm"`` (the grid's
    ``slurm`` section updated by ``slurm``, `SlurmOptions` names), or an `Executor`.
    ``options`` say how every job runs (devices, CPU threads, compile, checkpoints,
    progress). ``only``, ``epochs_scale``, ``checkpoints``, ``skip_bad_subjects`` and
    ``scale`` and ``plugins`` (folders of methods, datasets, nets and optimizers, loaded here
    and in every worker process and Slurm task) are as in `plan_run`. With the local
    executor, a job whose estimated peak memory exceeds what it may use (``max_memory_gb``,
    else `devices.MAX_MEMORY_ENV`, else what is free) is refused before anything is written
    (`check_memory`) unless ``force``. Done jobs are skipped, so a second call resumes.
    Writes ``run.json`` (provenance, planned cells) before the first job and again when all
    have ended; returns the counts and the failed jobs (each failure also has its
    ``error.json``).

    With ``jobs > 1`` the workers are spawned processes that import the caller's script
    again: call it under ``if __name__ == "__main__":`` (`refuse_unguarded_call`).
    """
    refuse_unguarded_call()
    planned = plan_run(
        grid,
        only=only,
        epochs_scale=epochs_scale,
        checkpoints=checkpoints,
        skip_bad_subjects=skip_bad_subjects,
        progress=options.progress,
        scale=scale,
        plugins=plugins,
    )
    chosen = make_executor(executor, planned.grid, jobs, slurm, options)
    try:  # a bad subject stops the run here, before anything is written to the store
        open_data(planned.grid.data, show_progress=options.progress)
    except (ValueError, KeyError, OSError) as exc:
        raise DatasetError(f"{exc}\n({NOTHING_RUN})") from exc
    run_dir = Path(out)
    if isinstance(chosen, LocalExecutor):
        check_memory(planned, run_dir, chosen.jobs, options, max_memory_gb, force)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = run_info(planned, options)
    write_run_info(run_dir, info)
    log.info(
        f"grid {planned.grid.name}: {len(planned.cells)} cells, "
        f"{len({c.pretrain_key for c in planned.cells if c.pretrain})} pretraining jobs "
        f"→ {run_dir}"
    )
    refit = cells_to_refit(planned.plan, StoreWriter(run_dir), planned.cells)
    if refit:
        log.warning(refit_message(refit))
    summary = chosen.run(planned.plan, run_dir, planned.cells, options)
    write_run_info(
        run_dir, dataclasses.replace(info, finished=dt.datetime.now().isoformat(timespec="seconds"))
    )
    return summary


REFIT_SHOWN = 10


def refit_message(cells: Sequence[CellSpec]) -> str:
    """What a run says about done cells it must fine-tune again for a new external test set."""
    names = "\n  ".join(c.folder_name for c in cells[:REFIT_SHOWN])
    more = f"\n  ... and {len(cells) - REFIT_SHOWN} more" if len(cells) > REFIT_SHOWN else ""
    return (
        f"{len(cells)} done cell(s) have an external test set to score but kept no fine-tuned "
        f"weights (model.pt; --keep-checkpoints keeps them): they are fine-tuned again for it, "
        f"their in-domain scores unchanged:\n  {names}{more}"
    )


class NotEnoughMemoryError(CmrbenchError, RuntimeError):
    """A job's estimated peak memory exceeds what it may use (``run --force`` runs it anyway)."""


class UnguardedRunError(CmrbenchError, RuntimeError):
    """run_grid was called while a spawned worker process imported the caller's script."""


def check_memory(
    planned: PlannedRun,
    run_dir: Path,
    jobs: int = 1,
    options: RunOptions = DEFAULT_RUN_OPTIONS,
    max_memory_gb: float | None = None,
    force: bool = False,
) -> None:
    """Estimate the peak memory of every job still to do on ``options``' device
    (`estimate.estimate_memory`) and refuse the run if one exceeds what each of the ``jobs``
    concurrent jobs may use there (`devices.memory_budget`).

    Raises:
        NotEnoughMemoryError: naming the largest such job, its estimate, what is available
            and the settings that would make it fit; with ``force`` a warning instead.
    """
    devices = [resolve_device(d) for d in options.devices] or [options.device]
    per_device = -(-jobs // len(devices))
    budgets = [
        memory_budget(device, per_device, max_memory_gb) for device in dict.fromkeys(devices)
    ]
    todo_pre, todo_cells, _ = todo_jobs(planned.plan, StoreWriter(run_dir), planned.cells)
    if not todo_pre and not todo_cells:
        return
    known = [budget for budget in budgets if budget is not None]
    if len(known) < len(budgets):
        log.warning(
            "the memory available cannot be read on this system; jobs are not checked "
            "against it (--max-memory GB sets it)"
        )
        return
    budget = min(known, key=lambda b: b.bytes)
    with cpu_threads(options.threads):
        memory = estimate_memory(planned.plan, todo_cells, todo_pre, devices[0])
    over = sorted((m for m in memory if m.bytes > budget.bytes), key=lambda m: -m.bytes)
    if not over:
        return
    largest = over[0]
    where = "GPU memory" if devices[0].type == "cuda" else "RAM"
    others = f"; {len(over) - 1} more job(s) exceed it too" if len(over) > 1 else ""
    message = (
        f"{describe_job(largest.job)} needs about {gigabytes(largest.bytes)} of {where}, "
        f"but each job may use {budget}{others}. To fit it: "
        f"{memory_advice(largest, budget, jobs)}"
    )
    if not force:
        raise NotEnoughMemoryError(f"{message}. Nothing was run.")
    log.warning(f"--force: running anyway: {message}")


def refuse_unguarded_call() -> None:
    """Raise `UnguardedRunError` when called while a spawned process imports the main
    script as ``__mp_main__`` (multiprocessing's name for it there): the script called
    run_grid at its top level, so every worker would start a run of its own."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            raise UnguardedRunError(
                f"run_grid was called while a worker process imported "
                f"{frame.f_globals.get('__file__', 'your script')}: a script that runs a grid "
                f'with jobs > 1 must call run_grid under `if __name__ == "__main__":` '
                f"(worker processes are spawned, and each imports the script again)"
            )
        frame = frame.f_back


def make_executor(
    executor: str | Executor,
    grid: Grid,
    jobs: int = 1,
    slurm: Mapping[str, Any] | None = None,
    options: RunOptions = DEFAULT_RUN_OPTIONS,
) -> Executor:
    """The executor ``executor`` names (``local`` with ``jobs`` workers, or ``slurm`` with
    the grid's ``slurm`` section updated by ``slurm``) or the `Executor` given, having
    checked ``options`` against it. An option that belongs to another executor is an
    error, not ignored."""
    if not isinstance(executor, str):
        if jobs != 1 or slurm:
            raise RunOptionError(
                f"jobs and slurm configure a named executor "
                f"({', '.join(EXECUTORS)}), not the "
                f"{type(executor).__name__} given"
            )
        chosen = executor
    elif executor == "local":
        if slurm:
            raise RunOptionError(f"--slurm {_pairs(slurm)} needs --executor slurm")
        chosen = LocalExecutor(jobs)
    elif executor == "slurm":
        from cmrbench.benchmark.slurm import SlurmExecutor  # imports submitit

        if jobs != 1:
            raise RunOptionError(
                f"--jobs {jobs} is for the local executor; with --executor slurm "
                f"use --slurm array_parallelism=N to cap the running jobs"
            )
        chosen = SlurmExecutor(**{**grid.slurm, **(slurm or {})})
    else:
        raise RunOptionError(
            f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}"
        )
    chosen.check(options)
    return chosen


def _pairs(mapping: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in mapping.items())


def without_bad_subjects(
    grid: Grid, progress: bool = True
) -> tuple[Grid, tuple[dict[str, str], ...]]:
    """Check every subject of the grid's dataset; return the grid without the bad ones and
    what was skipped (each logged as a warning). A problem with the whole dataset raises."""
    adapter = adapter_for(grid.data)
    with tqdm(
        total=len(adapter.subject_ids()), desc="checking subjects", disable=not progress
    ) as bar:
        report = check_dataset(adapter, on_subject=lambda _: bar.update(1))
    whole = [p for p in report.problems if not p.subject_id]
    if whole:
        raise DatasetError("; ".join(p.message for p in whole))
    skipped = tuple(
        {"dataset": adapter.name, "subject": p.subject_id, "reason": p.message}
        for p in report.problems
    )
    for item in skipped:
        log.warning(f"skipping {item['subject']}: {item['reason']}")
    data = dataclasses.replace(grid.data, exclude=tuple(sorted({s["subject"] for s in skipped})))
    return dataclasses.replace(grid, data=data), skipped


# --------------------------------------------------------------------------- run.json


def provenance(grid_text: str, grid_name: str, device: str) -> RunRecord:
    """Versions, git commit, device and time for ``run.json`` (no cells or methods yet)."""
    packages: dict[str, str | None] = {}
    for name in PROVENANCE_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return RunRecord(
        grid=grid_name,
        grid_yaml=grid_text,
        cmrbench_version=__version__,
        git_commit=commit,
        packages=packages,
        python=platform.python_version(),
        platform=platform.platform(),
        device=device,
        command=" ".join(sys.argv),
        started=dt.datetime.now().isoformat(timespec="seconds"),
        finished=None,
        skipped_subjects=[],
        methods={},
        planned_cells=None,
        grid_cells=None,
    )


def run_info(planned: PlannedRun, options: RunOptions) -> RunRecord:
    """What ``run.json`` holds: `provenance`, the skipped subjects, the methods' and
    checkpoints' descriptions, the selected cells and all of the grid's cells."""
    cells = planned.cells
    return dataclasses.replace(
        provenance(planned.grid.text, planned.grid.name, device_description(options.device)),
        skipped_subjects=list(planned.skipped),
        # a method whose pretraining job others reuse (mim for mim_enc) gets its page too
        methods={
            **_method_docs(
                sorted(
                    {c.method for c in cells if c.checkpoint is None}
                    | {c.pretrain.method for c in cells if c.pretrain}
                )
            ),
            **_checkpoint_docs(cells),
        },
        planned_cells=[{**c.describe(), "pretrain_key": c.pretrain_key} for c in cells],
        # the report compares only the grid's cells; other folders are "not in this grid"
        grid_cells=[{**c.describe(), "pretrain_key": c.pretrain_key} for c in planned.plan.cells],
        grid_external=[
            {"key": e.key, "cell_key": e.cell_key, "test_dataset": e.external.label}
            for e in planned.plan.external
        ],
    )


def write_run_info(run_dir: Path, info: RunRecord) -> None:
    """Write ``run.json`` atomically, keeping the ``started`` time of an earlier run of
    this folder (a resumed run started then)."""
    previous = read_run(run_dir)
    StoreWriter(run_dir).write_run(
        dataclasses.replace(info, started=previous.started) if previous else info
    )


def _method_docs(names: list[str]) -> dict[str, dict[str, str]]:
    """Each method's docstring, paper and source file, for the report's method pages."""
    infos = {name: method_info(name) for name in names}
    return {
        name: {"doc": info["doc"], "paper": info["paper"], "source": info["source"]}
        for name, info in infos.items()
    }


def _checkpoint_docs(cells: tuple[CellSpec, ...]) -> dict[str, dict[str, str]]:
    """What each external checkpoint is, for its report page (as `_method_docs`)."""
    return {
        c.checkpoint.name: {
            "doc": (
                f"External checkpoint {c.checkpoint.path} (format "
                f"{c.checkpoint.format}, SHA-256 {c.checkpoint.sha256}), "
                f"seeding the {' and '.join(c.checkpoint.parts)} of "
                f"{c.checkpoint.encoder}."
            ),
            "paper": "",
            "source": c.checkpoint.path,
        }
        for c in cells
        if c.checkpoint is not None
    }
