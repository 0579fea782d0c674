"""The command line: ``cmrbench run | list | report | stats | export | data`` (the only
entry point)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import click

from cmrbench import __version__
from cmrbench.errors import CmrbenchError

DEFAULT_OUT = Path("cmrbench-runs")


class _Commands(click.Group):
    """The command group. A `CmrbenchError` (a user's mistake) from any command prints as
    ``Error: <message>`` with exit status 1; any other exception is a bug and keeps its
    traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CmrbenchError as exc:
            raise click.ClickException(str(exc)) from None


class _Planning(TypedDict):
    """What `run` hands both `plan_run` and `run_grid` to choose and scale the cells."""

    only: str | None
    epochs_scale: float
    checkpoints: tuple[str, ...]
    skip_bad_subjects: bool


class _EchoHandler(logging.Handler):
    """Prints the library's log records: information to stdout, warnings to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=record.levelno >= logging.WARNING)


@contextlib.contextmanager
def _echo_log() -> Iterator[None]:
    """Show the ``cmrbench`` logger's records (the plan line, skipped subjects) while a
    command runs."""
    logger, handler = logging.getLogger("cmrbench"), _EchoHandler()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _load_plugins(plugins: tuple[str, ...]) -> None:
    """Load the ``--plugins`` folders and those of ``CMRBENCH_PLUGINS`` into this process and
    warn about each plugin file that failed to import. The run's executor hands the folders
    to its worker processes and Slurm tasks (`cmrbench.plugins.loaded_plugin_dirs`)."""
    from cmrbench.plugins import load_plugins, plugin_errors

    load_plugins(plugins)
    for error in plugin_errors():
        click.echo(
            f"warning: {error.file}: plugin failed to import ({error.exception}); "
            f"the other plugins still work",
            err=True,
        )


def _key_values(items: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``("key=value", ...)`` → ``{key: value}``, each value read as grid YAML (``8`` is a
    number; ``1:00:00`` stays text: `grid.read_yaml`)."""
    from cmrbench.benchmark.grid import read_yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected key=value", param_hint=flag)
        out[key] = read_yaml(value)
    return out


def _devices(text: str | None) -> tuple[str, ...]:
    return tuple(d.strip() for d in text.split(",") if d.strip()) if text else ()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cmrbench")
def main() -> None:
    """cmrbench: does self-supervised pretraining beat training from scratch for cardiac MR
    cine segmentation? Run grids, then read the statistics and the HTML leaderboard."""


# --------------------------------------------------------------------------- run


DATASET_OPTION = click.option(
    "--option",
    "--dataset-option",
    "options",
    multiple=True,
    help="Dataset adapter option key=value (repeatable), e.g. split=paper.",
)


@main.command()
@click.option(
    "--grid",
    "grid_name",
    default="smoke",
    show_default=True,
    help="Built-in grid name (see `cmrbench list grids`) or a path to a YAML file.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder (default: cmrbench-runs/<grid>). A rerun resumes it.",
)
@click.option("--methods", help="Comma-separated methods (overrides the grid; '*' = all).")
@click.option("--encoders", help="Comma-separated nets (see `cmrbench list nets`).")
@click.option("--budgets", help="Comma-separated label budgets, e.g. 10,25,all.")
@click.option("--seeds", help="Comma-separated subset seeds.")
@click.option(
    "--augmentations", help="Comma-separated augmentation presets (none, paper, intended)."
)
@click.option("--settings", help="Comma-separated settings: default, vendors=A+B, phase=ED, ...")
@click.option("--dataset", help="Dataset name (see `cmrbench list datasets`).")
@click.option("--root", help="Dataset folder.")
@DATASET_OPTION
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    help="External pretrained weights as a leaderboard row (repeatable): "
    "name=path,format=timm|cmrbench[,encoder=NET][,strict=false][,parts=encoder+decoder].",
)
@click.option(
    "--skip-bad-subjects",
    is_flag=True,
    help="Skip subjects that fail to load (recorded in the provenance and report) "
    "instead of stopping.",
)
@click.option(
    "--epochs-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply every schedule's epochs (0.1 = a quick look at a big grid).",
)
@click.option("--only", help="Select cells, e.g. 'method=mim,budget=10|25'.")
@click.option("--dry-run", is_flag=True, help="Print the plan and a compute estimate; run nothing.")
@click.option(
    "--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True
)
@click.option(
    "--jobs",
    type=int,
    default=1,
    show_default=True,
    help="Local worker processes (each gets cores/jobs CPU threads).",
)
@click.option(
    "--devices",
    "--device",
    "devices",
    help="Comma-separated devices (cpu, cuda, cuda:1, or CUDA indices 0,1), one per "
    "local worker, round robin. Default: CUDA if available, else the CPU.",
)
@click.option(
    "--threads",
    type=int,
    help="CPU threads per job (default: torch's in-process, cores/jobs per worker, "
    "cpus_per_task on Slurm). Results are bit-identical only at equal threads.",
)
@click.option(
    "--slurm",
    "slurm",
    multiple=True,
    help="Slurm option key=value (repeatable), as in the grid's slurm section: "
    "partition, gpus_per_node, cpus_per_task, mem_gb, time_min, "
    "array_parallelism, account, qos, constraint.",
)
@click.option(
    "--plugins",
    multiple=True,
    help="Extra folder of plugins: methods, datasets, nets, optimizers (repeatable).",
)
@click.option(
    "--scale",
    type=click.Choice(["small"]),
    help="Run the grid at CPU size: each encoder replaced by the smallest net of its "
    "family (unet2d_xs, vit_xs) at 64 px, the field of view in mm kept; marked "
    "in every spec (new keys) and on the report.",
)
@click.option(
    "--max-memory",
    "max_memory",
    type=float,
    help="GB of memory one job may use (default: $CMRBENCH_MAX_MEMORY_GB, else what "
    "is free now: RAM, or the GPU's free memory, shared by --jobs workers).",
)
@click.option(
    "--force", is_flag=True, help="Run jobs whose estimated peak memory exceeds what they may use."
)
@click.option(
    "--keep-checkpoints",
    is_flag=True,
    help="Keep fine-tuning checkpoints and fine-tuned weights (model.pt) after a cell is done.",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="torch.compile the training steps (GPU speed-up; results unchanged).",
)
@click.option("--quiet", is_flag=True, help="No progress bars (for batch logs).")
@click.option("--no-report", is_flag=True, help="Do not build the HTML report at the end.")
def run(
    grid_name: str,
    out: Path | None,
    options: tuple[str, ...],
    checkpoints: tuple[str, ...],
    skip_bad_subjects: bool,
    epochs_scale: float,
    only: str | None,
    dry_run: bool,
    executor: str,
    jobs: int,
    devices: str | None,
    threads: int | None,
    slurm: tuple[str, ...],
    plugins: tuple[str, ...],
    scale: str | None,
    max_memory: float | None,
    force: bool,
    keep_checkpoints: bool,
    compile_: bool,
    quiet: bool,
    no_report: bool,
    **axes: str | None,
) -> None:
    """Run a grid of fine-tuning cells (and the pretraining jobs they need) into a store.

    With no arguments: the CPU `smoke` grid on the built-in phantom. Done cells are
    skipped, so a rerun resumes; the run ends with a leaderboard and an HTML report.
    Before it starts, every job's peak memory is estimated and a job that would not fit is
    refused (--force runs it anyway).
    """
    started = time.perf_counter()  # the dry-run estimate counts a run's start-up as its own
    from cmrbench.benchmark.api import plan_run, run_grid
    from cmrbench.benchmark.devices import cpu_threads
    from cmrbench.benchmark.estimate import describe_plan
    from cmrbench.benchmark.executors import default_threads
    from cmrbench.benchmark.grid import load_grid, override, scale_grid
    from cmrbench.benchmark.runner import RunOptions
    from cmrbench.store import StoreWriter

    _load_plugins(plugins)
    grid = scale_grid(
        override(load_grid(grid_name), dataset_options=_key_values(options, "--option"), **axes),
        scale,
    )
    run_dir = out or DEFAULT_OUT / grid.name
    run_options = RunOptions(
        devices=_devices(devices),
        threads=threads,
        compile=compile_,
        keep_checkpoints=keep_checkpoints,
        progress=not quiet,
    )
    planning: _Planning = {
        "only": only,
        "epochs_scale": epochs_scale,
        "checkpoints": checkpoints,
        "skip_bad_subjects": skip_bad_subjects,
    }
    with _echo_log():
        if dry_run:
            planned = plan_run(grid, progress=not quiet, **planning)
            job_threads, note = default_threads(jobs, threads)
            if note:
                click.echo(f"warning: {note}", err=True)
            with cpu_threads(job_threads):
                click.echo(
                    describe_plan(
                        planned.plan,
                        planned.cells,
                        StoreWriter(run_dir),
                        device=next(iter(run_options.devices), None),
                        calibrate=True,
                        startup_s=time.perf_counter() - started,
                        jobs=jobs,
                        max_memory_gb=max_memory,
                    )
                )
            return
        try:
            summary = run_grid(
                grid,
                run_dir,
                executor=executor,
                jobs=jobs,
                slurm=_key_values(slurm, "--slurm"),
                options=run_options,
                max_memory_gb=max_memory,
                force=force,
                **planning,
            )
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted; rerun the same command to resume (finished jobs are kept, "
                "and a job that was running goes on from its last checkpoint)",
                err=True,
            )
            raise SystemExit(130) from None
    _print_outcome(run_dir, summary, no_report)
    if summary.failures:
        raise SystemExit(1)


def _print_outcome(run_dir: Path, summary: Any, no_report: bool) -> None:
    from cmrbench.benchmark.devices import MEMORY_KNOBS
    from cmrbench.reports import build_site, leaderboard

    click.echo(
        f"\n{summary.done} jobs run, {summary.cached} already done, {summary.busy} held by "
        f"another process, {len(summary.failures)} failed."
    )
    click.echo(leaderboard(run_dir, "table"))
    if summary.failures:
        click.echo("\nFailures (error.json in each folder has the traceback):", err=True)
        for folder, error in summary.failures:
            click.echo(f"  {folder}: {error}", err=True)
    if summary.out_of_memory:
        click.echo(
            f"\nRan out of memory ({len(summary.out_of_memory)} of the failures; to use "
            f"less: {MEMORY_KNOBS}):",
            err=True,
        )
        for folder in summary.out_of_memory:
            click.echo(f"  {folder}", err=True)
    click.echo(f"\nResults: {run_dir.resolve()}")
    if not no_report:
        index = build_site(run_dir, run_dir / "report")
        click.echo(f"Report:  {Path(index).resolve()}")


# --------------------------------------------------------------------------- list


@main.command("list")
@click.argument("what", type=click.Choice(["nets", "methods", "datasets", "grids"]))
@click.option(
    "--plugins",
    multiple=True,
    help="Extra folder of plugins: methods, datasets, nets, optimizers (repeatable).",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Methods: also the version, the pretraining optimizer per encoder family "
    "and every hyper-parameter at its default. Datasets: also each adapter's "
    "options (--option key=value) with their defaults.",
)
def list_cmd(what: str, plugins: tuple[str, ...], verbose: bool) -> None:
    """List registered nets, methods, datasets or built-in grids."""
    _load_plugins(plugins)
    if what == "nets":
        from cmrbench.nets import create_net, list_nets, net_facts

        for name in list_nets():
            params = sum(p.numel() for p in create_net(name).parameters()) / 1e6
            facts = net_facts(name)
            click.echo(
                f"{name:<14} {facts.family:<4} {params:7.2f} M params  "
                f"input divisible by {facts.downsampling}"
            )
    elif what == "methods":
        from cmrbench.methods import list_methods, method_info

        for name in list_methods():
            info = method_info(name)
            transfers = "; ".join(
                f"{fam}: {'+'.join(parts) or 'nothing'}" for fam, parts in info["transfers"].items()
            )
            click.echo(
                f"{name:<10} {info['description']}\n{'':<10} transfers {transfers}\n"
                f"{'':<10} {info['paper']}\n{'':<10} {info['source']}"
            )
            if verbose:
                click.echo(_method_details(info))
    elif what == "datasets":
        from cmrbench.datasets import DATASETS, list_datasets

        for name in list_datasets():
            doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()[0]
            click.echo(f"{name:<12} {doc}")
            if verbose:
                options = DATASETS.get(name).options_class()
                settings = ", ".join(f"{k}={v!r}" for k, v in vars(options).items())
                click.echo(f"{'':<12} options: {settings or 'none'}")
    else:
        from cmrbench.benchmark.grid import builtin_grids, grid_description, load_grid

        names = builtin_grids()
        width = max(map(len, names)) + 1
        for name in names:
            click.echo(_wrapped(name, width, grid_description(load_grid(name))))


def _wrapped(name: str, width: int, text: str) -> str:
    """``name`` padded to ``width``, then ``text`` wrapped to the terminal, never cut."""
    columns = max(60, shutil.get_terminal_size((100, 24)).columns)
    lines = textwrap.wrap(text, columns - width - 1) or [""]
    return "\n".join(f"{name if i == 0 else '':<{width}} {line}" for i, line in enumerate(lines))


def _method_details(info: dict[str, Any]) -> str:
    """The ``list methods -v`` lines of one method: version, pretraining, optimizers and
    resolved hyper-parameters (the values a grid's ``pretrain.methods.<name>`` overrides)."""
    pad = " " * 11
    if not info["needs_pretraining"]:
        return f"{pad}version {info['version']}; no pretraining"
    if info["pretrain_as"]:
        return (
            f"{pad}version {info['version']}; reuses the pretraining job of {info['pretrain_as']}"
        )
    lines = [
        f"{pad}version {info['version']}; pretraining {info['epochs']} epochs at batch "
        f"{info['batch_size']}"
    ]
    for family, optim in info["optim"].items():
        settings = ", ".join(f"{k}={v}" for k, v in optim.items())
        lines.append(f"{pad}optim ({family}): {settings}")
    if info["hparams"]:
        lines.append(f"{pad}hparams (override in a grid: pretrain.methods.{info['name']}.hparams):")
        lines += [f"{pad}  {key} = {value!r}" for key, value in info["hparams"].items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- report / stats


RUN_OR_BUNDLE = click.Path(exists=True, path_type=Path)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=RUN_OR_BUNDLE)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Site folder (default for one run: RUN/report, or BUNDLE-report beside a "
    "bundle; required for several).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into a non-empty folder that holds no report yet (no file there is "
    "overwritten or removed).",
)
def report(runs: tuple[Path, ...], out: Path | None, force: bool) -> None:
    """Build the static HTML leaderboard site of run folders or bundles (reads only the stores).

    Several RUNS (other datasets, encoders, or one grid split over machines) make one site;
    a cell done in two of them is a conflict, listed and never averaged. The site is built
    beside the target folder and swapped in; a rebuild removes only files an earlier report
    wrote (listed in the folder's .cmrbench-report manifest).
    """
    from cmrbench.reports import build_site, opened_run

    if out is None and len(runs) > 1:
        raise click.UsageError("--out is required when the report merges several runs")
    first = runs[0]
    default = first / "report" if first.is_dir() else first.with_name(f"{first.stem}-report")
    with contextlib.ExitStack() as stack, _echo_log():
        folders = [stack.enter_context(opened_run(run)) for run in runs]
        index = build_site(folders, out or default, force=force)
    click.echo(f"Report: {Path(index).resolve()}")


@main.command()
@click.argument("run_dir", type=RUN_OR_BUNDLE)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option(
    "--power",
    "power_delta",
    type=float,
    default=None,
    help="Instead of the leaderboard: per block, the Δ DSC detectable at 80 % power "
    "(at 0.05 / m, m the comparisons of its leaderboard, with an upper bound on "
    "the run variance) and the seeds needed to detect this Δ (e.g. 0.02).",
)
@click.option(
    "--tables",
    "list_tables",
    is_flag=True,
    help="List every table of the report (name, description, columns) instead.",
)
@click.option(
    "--table",
    "table",
    default=None,
    metavar="NAME",
    help="Print one table of the report instead (csv and json: the bytes of its "
    "download on the site).",
)
def stats(
    run_dir: Path, fmt: str, power_delta: float | None, list_tables: bool, table: str | None
) -> None:
    """Print the leaderboard of a run folder or bundle in the terminal, or any of its tables."""
    from cmrbench.reports import catalogue_text, leaderboard, opened_run, table_text

    if power_delta is not None and not power_delta > 0:
        raise click.BadParameter(
            f"expected a positive DSC difference, got {power_delta}", param_hint="--power"
        )
    if list_tables and table is not None:
        raise click.UsageError("--tables lists the tables and --table prints one: give one of them")
    if list_tables:
        click.echo(catalogue_text(fmt), nl=False)
        return
    with opened_run(run_dir) as folder, _echo_log():
        if table is not None:
            click.echo(table_text(folder, table, fmt, power_delta=power_delta), nl=False)
        else:
            click.echo(leaderboard(folder, fmt, power_delta=power_delta))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="The bundle to write (a .zip file).",
)
@click.option("--force", is_flag=True, help="Replace the bundle if the file already exists.")
def export(run_dir: Path, out: Path, force: bool) -> None:
    """Write a portable bundle of a run's results: specs, per-subject and clinical tables,
    logs, transfer reports, provenance and qualitative slices; no checkpoints. An existing
    file is not replaced without --force."""
    from cmrbench.reports import export_bundle

    path = export_bundle(run_dir, out, force=force)
    click.echo(f"Bundle: {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB)")


# --------------------------------------------------------------------------- data


@main.group()
def data() -> None:
    """Check a dataset layout, build its preprocessing cache or look at what the network sees."""


@data.command("check")
@click.option("--dataset", required=True, help="Dataset name (see `cmrbench list datasets`).")
@click.option("--root", help="Dataset folder.")
@DATASET_OPTION
@click.option("--plugins", multiple=True, help="Extra folder of dataset plugins (repeatable).")
def data_check(
    dataset: str, root: str | None, options: tuple[str, ...], plugins: tuple[str, ...]
) -> None:
    """Validate a dataset layout: a summary, or every problem found, naming each file."""
    from cmrbench.datasets import create_dataset
    from cmrbench.datasets.check import check_dataset, format_report

    _load_plugins(plugins)
    report_ = check_dataset(create_dataset(dataset, root, **_key_values(options, "--option")))
    click.echo(format_report(report_))
    if report_.problems:
        raise SystemExit(1)


@data.command("prepare")
@click.option("--dataset", required=True)
@click.option("--root")
@DATASET_OPTION
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--spacing", type=float, default=1.25, show_default=True, help="In-plane mm.")
@click.option("--plugins", multiple=True, help="Extra folder of dataset plugins (repeatable).")
def data_prepare(
    dataset: str,
    root: str | None,
    options: tuple[str, ...],
    image_size: int,
    spacing: float,
    plugins: tuple[str, ...],
) -> None:
    """Build the preprocessing cache (resampled, z-scored float16 slices) with a progress bar."""
    from cmrbench.datasets import create_dataset
    from cmrbench.datasets.preprocess import Geometry, load_slice_cache

    _load_plugins(plugins)
    adapter = create_dataset(dataset, root, **_key_values(options, "--option"))
    cache = load_slice_cache(adapter, Geometry(image_size, spacing), adapter.pretraining_pool())
    click.echo(f"{len(cache.images)} slices ({len(cache.labels)} labelled) in {cache.folder}")


@data.command("show")
@click.option("--dataset", required=True, help="Dataset name (see `cmrbench list datasets`).")
@click.option("--root", help="Dataset folder.")
@DATASET_OPTION
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    help="Subject id (repeatable; default: every subject of the dataset).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the montages and index.html.",
)
@click.option(
    "--grid",
    "grid_name",
    help="Take the image size and spacing from this grid (built-in name or YAML file).",
)
@click.option("--image-size", type=int, help="Pixels per side (default: the grid's, else 256).")
@click.option("--spacing", type=float, help="In-plane mm (default: the grid's, else 1.25).")
@click.option("--plugins", multiple=True, help="Extra folder of dataset plugins (repeatable).")
def data_show(
    dataset: str,
    root: str | None,
    options: tuple[str, ...],
    subjects: tuple[str, ...],
    out: Path,
    grid_name: str | None,
    image_size: int | None,
    spacing: float | None,
    plugins: tuple[str, ...],
) -> None:
    """See what the network sees: per subject a PNG of its ED and ES slices (base → apex, labels
    outlined) as training reads them, and an index page."""
    from cmrbench.datasets import create_dataset
    from cmrbench.datasets.show import show_subjects

    _load_plugins(plugins)
    adapter = create_dataset(dataset, root, **_key_values(options, "--option"))
    index = show_subjects(
        adapter, list(subjects), _show_geometry(grid_name, image_size, spacing), out
    )
    click.echo(f"Index: {index.resolve()}")


def _show_geometry(grid_name: str | None, image_size: int | None, spacing: float | None) -> Any:
    """The `Geometry` of ``data show``: the flags, else the grid's, else the study's."""
    from cmrbench.datasets.preprocess import Geometry

    size, mm = 256, 1.25
    if grid_name is not None:
        from cmrbench.benchmark.grid import load_grid

        data = load_grid(grid_name).data
        size, mm = data.image_size, data.spacing_mm
    return Geometry(image_size or size, spacing or mm)


if __name__ == "__main__":
    main()
