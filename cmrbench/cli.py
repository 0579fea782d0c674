"""The command line: ``cmrbench run | list | report | stats | export | data`` (the only entry point)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from cmrbench import __version__

DEFAULT_OUT = Path("cmrbench-runs")
PROVENANCE_PACKAGES = ("torch", "timm", "numpy", "scipy", "pandas", "nibabel", "pydicom",
                       "statsmodels", "submitit", "cmrbench")


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _load_plugins(plugins: tuple[str, ...], registry: Any) -> None:
    """Discover ``registry``'s entries (methods, datasets) with the ``--plugins`` folders
    and ``CMRBENCH_PLUGINS``.

    The folders are added to ``CMRBENCH_PLUGINS`` so that worker processes and Slurm jobs,
    which inherit the environment, discover the same methods and datasets.
    """
    from cmrbench.plugins import (PLUGINS_ENV, PluginDirError, discover, plugin_dirs_from_env,
                                  plugin_errors)
    from cmrbench.registry import DuplicateNameError

    folders = [str(Path(p).resolve()) for p in plugins]
    if folders:
        os.environ[PLUGINS_ENV] = os.pathsep.join(dict.fromkeys([*plugin_dirs_from_env(), *folders]))
    try:
        discover(registry)
    except (PluginDirError, DuplicateNameError) as exc:
        raise _fail(exc) from None
    for error in plugin_errors():
        click.echo(f"warning: {error.file}: plugin failed to import ({error.exception}); "
                   f"the other {registry.kind}s still work", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cmrbench")
def main() -> None:
    """cmrbench: does self-supervised pretraining beat training from scratch for cardiac MR
    cine segmentation? Run grids, then read the statistics and the HTML leaderboard."""


# --------------------------------------------------------------------------- run


def provenance(grid_text: str, grid_name: str, device: str) -> dict[str, Any]:
    """Versions, git commit, device and time for ``run.json``."""
    packages = {}
    for name in PROVENANCE_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"grid": grid_name, "grid_yaml": grid_text, "cmrbench_version": __version__,
            "git_commit": commit, "packages": packages, "python": platform.python_version(),
            "platform": platform.platform(), "device": device,
            "command": " ".join(sys.argv), "started": dt.datetime.now().isoformat(timespec="seconds"),
            "finished": None, "skipped_subjects": []}


@main.command()
@click.option("--grid", "grid_name", default="smoke", show_default=True,
              help="Built-in grid name (see `cmrbench list grids`) or a path to a YAML file.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: cmrbench-runs/<grid>). A rerun resumes it.")
@click.option("--methods", help="Comma-separated methods (overrides the grid; '*' = all).")
@click.option("--encoders", help="Comma-separated nets (see `cmrbench list nets`).")
@click.option("--budgets", help="Comma-separated label budgets, e.g. 10,25,all.")
@click.option("--seeds", help="Comma-separated subset seeds.")
@click.option("--augmentations",
              help="Comma-separated augmentation presets (none, paper, intended).")
@click.option("--settings", help="Comma-separated settings: default, vendors=A+B, phase=ED, ...")
@click.option("--dataset", help="Dataset name (see `cmrbench list datasets`).")
@click.option("--root", help="Dataset folder.")
@click.option("--dataset-option", "dataset_option", multiple=True,
              help="Dataset adapter option key=value (repeatable), e.g. split=paper.")
@click.option("--checkpoint", "checkpoints", multiple=True,
              help="External pretrained weights as a leaderboard row (repeatable): "
                   "name=path,format=timm|cmrbench[,encoder=NET][,strict=false][,parts=encoder+decoder].")
@click.option("--skip-bad-subjects", is_flag=True,
              help="Skip subjects that fail to load (recorded in the provenance and report) "
                   "instead of stopping.")
@click.option("--epochs-scale", type=float, default=1.0, show_default=True,
              help="Multiply every schedule's epochs (0.1 = a quick look at a big grid).")
@click.option("--only", help="Select cells, e.g. 'method=mim,budget=10|25'.")
@click.option("--dry-run", is_flag=True, help="Print the plan and a compute estimate; run nothing.")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True, help="Local worker processes.")
@click.option("--devices", help="Comma-separated CUDA device indices, one per worker (e.g. 0,1).")
@click.option("--device", help="Device for in-process runs (cpu, cuda, cuda:1). Default: CUDA if available.")
@click.option("--plugins", multiple=True,
              help="Extra folder of method or dataset plugins (repeatable).")
@click.option("--keep-checkpoints", is_flag=True, help="Keep fine-tuning checkpoints after a cell is done.")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the training steps (GPU speed-up; results unchanged).")
@click.option("--quiet", is_flag=True, help="No progress bars (for batch logs).")
@click.option("--no-report", is_flag=True, help="Do not build the HTML report at the end.")
@click.option("--slurm-partition", help="Slurm partition.")
@click.option("--slurm-gpus", type=int, help="GPUs per Slurm job.")
@click.option("--slurm-time", type=int, help="Slurm time limit per job, minutes.")
@click.option("--slurm-parallelism", type=int, help="Maximum running tasks per job array.")
def run(grid_name: str, out: Path | None, methods: str | None, encoders: str | None,
        budgets: str | None, seeds: str | None, augmentations: str | None, settings: str | None,
        dataset: str | None, root: str | None, dataset_option: tuple[str, ...],
        checkpoints: tuple[str, ...], skip_bad_subjects: bool, epochs_scale: float, only: str | None,
        dry_run: bool, executor: str, jobs: int, devices: str | None, device: str | None,
        plugins: tuple[str, ...], keep_checkpoints: bool, compile_: bool, quiet: bool,
        no_report: bool,
        slurm_partition: str | None, slurm_gpus: int | None, slurm_time: int | None,
        slurm_parallelism: int | None) -> None:
    """Run a grid of fine-tuning cells (and the pretraining jobs they need) into a store.

    With no arguments: the CPU `smoke` grid on the built-in phantom. Done cells are
    skipped, so a rerun resumes; the run ends with a leaderboard and an HTML report.
    """
    started = time.perf_counter()   # the dry-run estimate counts a run's start-up as its own
    from cmrbench.benchmark.grid import (GridError, add_checkpoints, load_grid, override, plan_grid,
                                         select_cells)
    from cmrbench.benchmark.store import Store, atomic_write_json, read_json
    from cmrbench.methods import METHODS

    _load_plugins(plugins, METHODS)
    if compile_:
        from cmrbench.benchmark.runner import COMPILE_ENV

        os.environ[COMPILE_ENV] = "1"
    skipped: list[dict[str, str]] = []
    try:
        grid = override(load_grid(grid_name), dataset_options=_dataset_options(dataset_option),
                        methods=methods, encoders=encoders, budgets=budgets, seeds=seeds,
                        augmentations=augmentations, settings=settings, dataset=dataset, root=root)
        grid = add_checkpoints(grid, checkpoints)
        if skip_bad_subjects:
            grid, skipped = _without_bad_subjects(grid, show_progress=not quiet)
        plan = plan_grid(grid, epochs_scale)
        cells = select_cells(plan.cells, only)
        from cmrbench.benchmark.plan import check_cells_against_data

        check_cells_against_data(cells)
    except (GridError, ValueError, KeyError) as exc:
        raise _fail(exc) from None
    run_dir = out or DEFAULT_OUT / grid.name
    store = Store(run_dir)
    if dry_run:
        from cmrbench.benchmark.plan import describe_plan
        click.echo(describe_plan(plan, cells, store, device=device, calibrate=True,
                                 startup_s=time.perf_counter() - started))
        return
    from cmrbench.benchmark.runner import device_description, open_data, resolve_device

    try:   # a bad subject stops the run here, before anything is written to the store
        open_data(grid.data, show_progress=not quiet)
    except (ValueError, KeyError, OSError) as exc:
        raise click.ClickException(f"{exc}\n(nothing was run; --skip-bad-subjects skips bad "
                                   f"subjects instead)") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    info_path = run_dir / "run.json"
    info = provenance(grid.text, grid.name, device_description(resolve_device(device)))
    info["skipped_subjects"] = skipped
    info["methods"] = {**_method_docs(sorted({c.method for c in cells if c.checkpoint is None})),
                       **_checkpoint_docs(cells)}
    info["planned_cells"] = [{**c.describe(), "pretrain_key": c.pretrain_key} for c in cells]
    # the report compares only the grid's cells; other folders are "not in this grid"
    info["grid_cells"] = [{**c.describe(), "pretrain_key": c.pretrain_key} for c in plan.cells]
    if info_path.exists():
        info["started"] = read_json(info_path).get("started", info["started"])
    atomic_write_json(info_path, info)
    click.echo(f"grid {grid.name}: {len(cells)} cells, "
               f"{len({c.pretrain_key for c in cells if c.pretrain})} pretraining jobs → {run_dir}")
    if executor == "slurm":
        from cmrbench.benchmark.slurm import SlurmExecutor

        slurm_opts = {**grid.slurm, **{k: v for k, v in {
            "partition": slurm_partition, "gpus_per_node": slurm_gpus, "time_min": slurm_time,
            "array_parallelism": slurm_parallelism}.items() if v is not None}}
        try:
            runner: Any = SlurmExecutor(show_progress=not quiet, keep_checkpoints=keep_checkpoints,
                                        **slurm_opts)
        except ValueError as exc:
            raise _fail(exc) from None
    else:
        from cmrbench.benchmark.executors import LocalExecutor

        runner = LocalExecutor(jobs=jobs, devices=devices.split(",") if devices else None,
                               device=device, show_progress=not quiet,
                               keep_checkpoints=keep_checkpoints)
    try:
        summary = runner.run(plan, run_dir, cells)
    except ValueError as exc:   # e.g. sbatch refused a submission: its message says why
        raise _fail(exc) from None
    info["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    atomic_write_json(info_path, info)
    _print_outcome(run_dir, summary, no_report)
    if summary.failures:
        raise SystemExit(1)


def _without_bad_subjects(grid: Any, show_progress: bool) -> tuple[Any, list[dict[str, str]]]:
    """Check every subject of the grid's dataset; return the grid without the bad ones."""
    import dataclasses

    from cmrbench.benchmark.runner import adapter_for
    from cmrbench.datasets.check import check_dataset

    adapter = adapter_for(grid.data)
    with click.progressbar(length=len(adapter.subject_ids()), label="checking subjects",
                           hidden=not show_progress) as bar:
        report_ = check_dataset(adapter, on_subject=lambda _: bar.update(1))
    whole = [p for p in report_.problems if not p.subject_id]
    if whole:
        raise click.ClickException("; ".join(p.message for p in whole))
    skipped = [{"dataset": adapter.name, "subject": p.subject_id, "reason": p.message}
               for p in report_.problems]
    for item in skipped:
        click.echo(f"skipping {item['subject']}: {item['reason']}", err=True)
    data = dataclasses.replace(grid.data, exclude=tuple(sorted({s["subject"] for s in skipped})))
    return dataclasses.replace(grid, data=data), skipped


def _method_docs(names: list[str]) -> dict[str, dict[str, str]]:
    """Each method's docstring, paper and source file, for the report's method pages."""
    from cmrbench.methods import get_method, method_info

    return {name: {"doc": (get_method(name).__doc__ or "").strip(),
                   "paper": method_info(name)["paper"], "source": method_info(name)["source"]}
            for name in names}


def _checkpoint_docs(cells: Any) -> dict[str, dict[str, str]]:
    """What each external checkpoint is, for its report page (as `_method_docs`)."""
    return {c.checkpoint.name: {"doc": (f"External checkpoint {c.checkpoint.path} (format "
                                        f"{c.checkpoint.format}, SHA-256 {c.checkpoint.sha256}), "
                                        f"seeding the {' and '.join(c.checkpoint.parts)} of "
                                        f"{c.checkpoint.encoder}."),
                                "paper": "", "source": c.checkpoint.path}
            for c in cells if c.checkpoint is not None}


def _print_outcome(run_dir: Path, summary: Any, no_report: bool) -> None:
    from cmrbench.reports import PublishError, build_site, leaderboard

    click.echo(f"\n{summary.done} jobs run, {summary.cached} already done, {summary.busy} held by "
               f"another process, {len(summary.failures)} failed.")
    click.echo(leaderboard(run_dir, "table"))
    if summary.failures:
        click.echo("\nFailures (error.json in each folder has the traceback):", err=True)
        for folder, error in summary.failures:
            click.echo(f"  {folder}: {error}", err=True)
    click.echo(f"\nResults: {run_dir.resolve()}")
    if not no_report:
        try:
            index = build_site(run_dir, run_dir / "report")
        except PublishError as exc:
            raise _fail(exc) from None
        click.echo(f"Report:  {Path(index).resolve()}")


# --------------------------------------------------------------------------- list


@main.command("list")
@click.argument("what", type=click.Choice(["nets", "methods", "datasets", "grids"]))
@click.option("--plugins", multiple=True,
              help="Extra folder of method or dataset plugins (repeatable).")
@click.option("-v", "--verbose", is_flag=True,
              help="Methods: also the version, the pretraining optimizer per encoder family "
                   "and every hyper-parameter at its default.")
def list_cmd(what: str, plugins: tuple[str, ...], verbose: bool) -> None:
    """List registered nets, methods, datasets or built-in grids."""
    if what == "nets":
        from cmrbench.nets import create_net, list_nets, net_facts

        for name in list_nets():
            params = sum(p.numel() for p in create_net(name).parameters()) / 1e6
            facts = net_facts(name)
            click.echo(f"{name:<14} {facts.family:<4} {params:7.2f} M params  "
                       f"input divisible by {facts.downsampling}")
    elif what == "methods":
        from cmrbench.methods import METHODS, list_methods, method_info

        _load_plugins(plugins, METHODS)
        for name in list_methods():
            info = method_info(name)
            transfers = "; ".join(f"{fam}: {'+'.join(parts) or 'nothing'}"
                                  for fam, parts in info["transfers"].items())
            click.echo(f"{name:<10} transfers {transfers}\n{'':<10} {info['paper']}\n"
                       f"{'':<10} {info['source']}")
            if verbose:
                click.echo(_method_details(info))
    elif what == "datasets":
        from cmrbench.datasets import DATASETS, list_datasets

        _load_plugins(plugins, DATASETS)
        for name in list_datasets():
            doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()[0]
            click.echo(f"{name:<12} {doc}")
    else:
        from cmrbench.benchmark.grid import builtin_grids, load_grid

        for name in builtin_grids():
            click.echo(f"{name:<11} {load_grid(name).text.splitlines()[0].lstrip('# ')}")


def _method_details(info: dict[str, Any]) -> str:
    """The ``list methods -v`` lines of one method: version, pretraining, optimizers and
    resolved hyper-parameters (the values a grid's ``pretrain.methods.<name>`` overrides)."""
    pad = " " * 11
    if not info["needs_pretraining"]:
        return f"{pad}version {info['version']}; no pretraining"
    if info["pretrain_as"]:
        return f"{pad}version {info['version']}; reuses the pretraining job of {info['pretrain_as']}"
    lines = [f"{pad}version {info['version']}; pretraining {info['epochs']} epochs at batch "
             f"{info['batch_size']}"]
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
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Site folder (default for one run: RUN/report, or BUNDLE-report beside a "
                   "bundle; required for several).")
@click.option("--force", is_flag=True,
              help="Write into a non-empty folder that holds no report yet (no file there is "
                   "overwritten or removed).")
def report(runs: tuple[Path, ...], out: Path | None, force: bool) -> None:
    """Build the static HTML leaderboard site of run folders or bundles (reads only the stores).

    Several RUNS (other datasets, encoders, or one grid split over machines) make one site;
    a cell done in two of them is a conflict, listed and never averaged. The site is built
    beside the target folder and swapped in; a rebuild removes only files an earlier report
    wrote (listed in the folder's .cmrbench-report manifest).
    """
    from cmrbench.reports import PublishError, StoreError, build_site, opened_run

    if out is None and len(runs) > 1:
        raise click.UsageError("--out is required when the report merges several runs")
    first = runs[0]
    default = first / "report" if first.is_dir() else first.with_name(f"{first.stem}-report")
    try:
        with contextlib.ExitStack() as stack:
            folders = [stack.enter_context(opened_run(run)) for run in runs]
            index = build_site(folders, out or default, force=force)
    except (PublishError, StoreError) as exc:
        raise _fail(exc) from None
    click.echo(f"Report: {Path(index).resolve()}")


@main.command()
@click.argument("run_dir", type=RUN_OR_BUNDLE)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]),
              default="table", show_default=True)
@click.option("--power", "power_delta", type=float, default=None,
              help="Instead of the leaderboard: per block, the Δ DSC detectable at 80 % power and "
                   "the seeds needed to detect this Δ (e.g. 0.02).")
def stats(run_dir: Path, fmt: str, power_delta: float | None) -> None:
    """Print the leaderboard of a run folder or bundle in the terminal."""
    from cmrbench.reports import StoreError, leaderboard, opened_run

    if power_delta is not None and not power_delta > 0:
        raise click.BadParameter(f"expected a positive DSC difference, got {power_delta}",
                                 param_hint="--power")
    try:
        with opened_run(run_dir) as folder:
            click.echo(leaderboard(folder, fmt, power_delta=power_delta))
    except StoreError as exc:
        raise _fail(exc) from None


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The bundle to write (a .zip file).")
def export(run_dir: Path, out: Path) -> None:
    """Write a portable bundle of a run's results: specs, per-subject and clinical tables,
    logs, transfer reports, provenance and qualitative slices; no checkpoints."""
    from cmrbench.reports import StoreError, export_bundle

    try:
        path = export_bundle(run_dir, out)
    except StoreError as exc:
        raise _fail(exc) from None
    click.echo(f"Bundle: {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB)")


# --------------------------------------------------------------------------- data


@main.group()
def data() -> None:
    """Check a dataset layout or build its preprocessing cache."""


def _dataset_options(option: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.ClickException(f"--option {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


@data.command("check")
@click.option("--dataset", required=True, help="Dataset name (see `cmrbench list datasets`).")
@click.option("--root", help="Dataset folder.")
@click.option("--option", multiple=True, help="Adapter option key=value (repeatable).")
@click.option("--plugins", multiple=True, help="Extra folder of dataset plugins (repeatable).")
def data_check(dataset: str, root: str | None, option: tuple[str, ...],
               plugins: tuple[str, ...]) -> None:
    """Validate a dataset layout: a summary, or every problem found, naming each file."""
    from cmrbench.datasets import DATASETS, create_dataset
    from cmrbench.datasets.check import check_dataset, format_report

    _load_plugins(plugins, DATASETS)
    try:
        report_ = check_dataset(create_dataset(dataset, root, **_dataset_options(option)))
    except (ValueError, KeyError) as exc:
        raise _fail(exc) from None
    click.echo(format_report(report_))
    if report_.problems:
        raise SystemExit(1)


@data.command("prepare")
@click.option("--dataset", required=True)
@click.option("--root")
@click.option("--option", multiple=True, help="Adapter option key=value (repeatable).")
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--spacing", type=float, default=1.25, show_default=True, help="In-plane mm.")
@click.option("--plugins", multiple=True, help="Extra folder of dataset plugins (repeatable).")
def data_prepare(dataset: str, root: str | None, option: tuple[str, ...], image_size: int,
                 spacing: float, plugins: tuple[str, ...]) -> None:
    """Build the preprocessing cache (resampled, z-scored float16 slices) with a progress bar."""
    from cmrbench.datasets import DATASETS, create_dataset
    from cmrbench.datasets.preprocess import Geometry, load_slice_cache

    _load_plugins(plugins, DATASETS)
    try:
        adapter = create_dataset(dataset, root, **_dataset_options(option))
        cache = load_slice_cache(adapter, Geometry(image_size, spacing), adapter.default_split()["train"])
    except (ValueError, KeyError) as exc:
        raise _fail(exc) from None
    click.echo(f"{len(cache.images)} slices ({len(cache.labels)} labelled) in {cache.folder}")


if __name__ == "__main__":
    main()
