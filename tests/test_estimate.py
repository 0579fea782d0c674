"""``--dry-run`` time model: it counts the steps, slices and validation passes a run takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cmrbench.benchmark.data import adapter_for
from cmrbench.benchmark.estimate import (
    calibration_batch,
    cell_steps,
    duration,
    measure_counts,
    preparation_seconds,
    pretrain_step_count,
)
from cmrbench.benchmark.grid import load_grid, override, plan_grid
from cmrbench.benchmark.runner import RunOptions, run_cell, run_pretrain_job
from cmrbench.datasets.preprocess import Geometry
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.store import StoreWriter
from support.cli import TINY_GRID


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dry_run_counts_the_steps_slices_and_validations_of_the_real_loops(
    cmrbench_env, tmp_path
) -> None:
    grid = override(load_grid(str(TINY_GRID)), methods="scratch,mim")
    plan = plan_grid(grid)
    cell = next(c for c in plan.cells if c.method == "scratch" and c.budget == "3")
    cpu = RunOptions(devices=("cpu",), progress=False)
    assert run_cell(tmp_path, cell, cpu) == "done"
    assert run_pretrain_job(tmp_path, plan.pretrain[0], cpu) == "done"
    store = StoreWriter(tmp_path)
    adapter = adapter_for(grid.data)
    counts = measure_counts(adapter, Geometry(grid.data.image_size, grid.data.spacing_mm))
    assert counts.cache is not None and preparation_seconds(adapter, counts) == 0.0

    cell_log = _records(store.job_dir(cell) / "log.jsonl")
    result = json.loads((store.job_dir(cell) / "result.json").read_text())
    who = cell_subjects(adapter, cell.budget, cell.seed, Setting(cell.setting))
    assert counts.labelled_slices(who.labelled, ("ED", "ES")) == result["train_slices"]
    assert cell_steps(cell, adapter, counts) == (
        cell_log[-1]["step"],
        sum("val_loss" in r for r in cell_log),
    )

    pre = plan.pretrain[0]
    pre_result = json.loads((store.job_dir(pre) / "result.json").read_text())
    assert counts.pool_slices(adapter.default_split()["train"]) == pre_result["pool_slices"]
    # both results name the thread count that computed them (CPU float sums depend on it)
    assert result["threads"] == pre_result["threads"] == torch.get_num_threads()
    assert (
        pretrain_step_count(pre, counts.pool_slices(adapter.pretraining_pool()))
        == _records(store.job_dir(pre) / "log.jsonl")[-1]["step"]
    )


def test_sampled_counts_without_a_cache_price_the_data_preparation(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))  # no slice cache built here
    grid = load_grid(str(TINY_GRID))
    adapter = adapter_for(grid.data)
    counts = measure_counts(adapter, Geometry(grid.data.image_size, grid.data.spacing_mm))
    assert counts.cache is None and counts.load_s > 0 and counts.frame_s > 0
    pool = adapter.default_split()["train"]
    assert counts.pool_slices(pool) == pytest.approx(len(pool) * counts.frames * counts.slices)
    frames = len(pool) * counts.frames + (len(adapter.subject_ids()) - len(pool)) * 2
    assert preparation_seconds(adapter, counts) == pytest.approx(
        len(adapter.subject_ids()) * counts.load_s + frames * counts.frame_s
    )


def test_durations_read_in_seconds_minutes_or_hours() -> None:
    assert (duration(42.4), duration(210), duration(3 * 3600)) == ("42 s", "3.5 min", "3.00 h")


def test_cpu_calibration_caps_a_study_sized_batch_and_keeps_small_ones() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert calibration_batch(224, 256, cpu) == 8  # SimCLR at the study's size
    assert calibration_batch(32, 128, cpu) == 32  # 32 × 128² = 8 × 256² px
    assert calibration_batch(64, 128, cpu) == 32
    assert calibration_batch(16, 64, cpu) == 16  # the smoke grid: unchanged
    assert calibration_batch(1, 1024, cpu) == 1
    assert calibration_batch(224, 256, cuda) == 224  # accelerators time the real batch


# --------------------------------------------------------------------------- memory


def test_step_memory_is_the_line_through_two_measured_peaks():
    from cmrbench.benchmark.estimate import StepMemory

    line = StepMemory.fit((16, 100e6), (32, 180e6))  # 5 MB per sample over 20 MB
    assert (line.fixed, line.per_sample) == pytest.approx((20e6, 5e6))
    assert line.at(64) == pytest.approx(340e6)
    noisy = StepMemory.fit((16, 190e6), (32, 180e6))  # falling: bytes / batch per sample
    assert (noisy.fixed, noisy.per_sample) == pytest.approx((0.0, 180e6 / 32))
    steep = StepMemory.fit((16, 10e6), (32, 180e6))  # negative intercept: clipped to 0
    assert (steep.fixed, steep.per_sample) == pytest.approx((0.0, 170e6 / 16))


def test_a_cells_memory_is_its_slices_plus_the_larger_of_its_step_and_its_evaluation():
    from cmrbench.benchmark.estimate import JobMemory, StepMemory

    cell = plan_grid(load_grid(str(TINY_GRID))).cells[0]  # batch 8
    step = StepMemory(fixed=20e6, per_sample=5e6)  # 60 MB at batch 8
    assert JobMemory(cell, step, 10e6, evaluate_bytes=30e6).bytes == pytest.approx(70e6)
    assert JobMemory(cell, step, 10e6, evaluate_bytes=90e6).bytes == pytest.approx(100e6)
    assert JobMemory(cell, step, 10e6).largest_batch(80e6) == 10  # (80 − 10 − 20) / 5
    assert JobMemory(cell, step, 10e6, evaluate_bytes=90e6).largest_batch(80e6) == 0


def test_peak_memory_on_a_cpu_is_what_a_block_allocated_at_its_peak():
    from cmrbench.benchmark.devices import peak_memory

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the CPU peak is measured per block only on Linux (/proc/self/clear_refs)")
    cpu = torch.device("cpu")
    with peak_memory(cpu) as big:
        block = torch.ones(50_000_000)  # 200 MB, then freed
        del block
    with peak_memory(cpu) as small:  # after a bigger block: its own peak
        block = torch.ones(12_500_000)  # 50 MB
        del block
    # within the pages the allocator had kept from earlier blocks, and 20 MB of other growth
    assert 0.95 * 200e6 <= big.bytes < 220e6 and 0.95 * 50e6 <= small.bytes < 70e6


MEMORY_GRID = """
name: memory
dataset: {name: phantom, options: {n_train: 4, n_val: 1, n_test: 2}, image_size: 128,
          spacing_mm: 1.25}
encoders: [unet2d_xs]
methods: [scratch, mim]
budgets: [4]
seeds: [0]
augmentations: [paper]
finetune: {epochs: 0.2, batch_size: 64, val_every: 0}
pretrain: {epochs: 0.06, batch_size: 64}
"""
# Runs one job in a fresh process and prints the memory it took at its peak, measured without
# cmrbench's help: on a CPU the process's peak resident set (ru_maxrss, kB on Linux) above its
# resident set before the job; on CUDA torch.cuda.max_memory_allocated above the start.
RUN_ONE_JOB = """
import json, resource, sys
from pathlib import Path
import torch
from cmrbench.benchmark.data import open_data
from cmrbench.benchmark.runner import RunOptions, run_job
from cmrbench.benchmark.spec import spec_from_json
spec, device = spec_from_json(json.loads(sys.argv[2])), sys.argv[3]
open_data(spec.data, False)
if device == "cuda":
    before = torch.cuda.memory_allocated()
else:
    before = float(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
run_job(sys.argv[1], spec, RunOptions(devices=(device,), threads=1, progress=False))
peak = (torch.cuda.max_memory_allocated() if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"before": before, "peak": peak}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_dry_runs_memory_estimate_is_within_2x_of_the_jobs_measured_peak(
    cmrbench_env, tmp_path, device
):
    import subprocess
    import sys

    import yaml

    from cmrbench.benchmark.data import open_data
    from cmrbench.benchmark.devices import cpu_threads
    from cmrbench.benchmark.estimate import CPU_CALIBRATION_PIXELS, estimate_memory
    from cmrbench.benchmark.grid import parse_grid
    from cmrbench.benchmark.spec import to_jsonable

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU estimate is checked where one exists")
    if device == "cpu" and not Path("/proc/self/status").exists():
        pytest.skip("the job's resident set is read from /proc (Linux)")
    plan = plan_grid(parse_grid(yaml.safe_load(MEMORY_GRID), "memory grid"))
    open_data(plan.grid.data, False)  # the slice cache, built once
    # at 128 px the CPU calibration caps the batch of 64 at 32: the estimate is extrapolated
    assert CPU_CALIBRATION_PIXELS // 128**2 == 32
    jobs = [plan.pretrain[0], next(c for c in plan.cells if c.method == "scratch")]
    with cpu_threads(1):
        estimates = estimate_memory(plan, jobs[1:], jobs[:1], torch.device(device))
    for estimate in estimates:
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                RUN_ONE_JOB,
                str(tmp_path / "run"),
                json.dumps(to_jsonable(estimate.job)),
                device,
            ],
            env=cmrbench_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        peak = measured["peak"] - measured["before"]
        assert device == "cuda" or peak > 300e6, peak  # the step dominates Python's noise
        assert peak / 2 <= estimate.bytes <= 2 * peak, (
            type(estimate.job).__name__,
            estimate.bytes,
            peak,
        )


def test_dry_run_of_tied_pretraining_seeds_times_one_job_and_prices_every_seed(
    cmrbench_env, tmp_path, monkeypatch
) -> None:
    from cmrbench.benchmark import estimate

    path = tmp_path / "tied.yaml"
    path.write_text(
        TINY_GRID.read_text().replace("seeds: [0]", "seeds: [0, 1]") + "pretrain_seeds: tied\n"
    )
    plan = plan_grid(override(load_grid(str(path)), methods="scratch,mim"))
    assert [job.seed for job in plan.pretrain] == [0, 1]
    timed = []
    real = estimate.pretrain_steps
    monkeypatch.setattr(
        estimate,
        "pretrain_steps",
        lambda *args, **kwargs: timed.append(args[0]) or real(*args, **kwargs),
    )
    text = estimate.describe_plan(plan, plan.cells, StoreWriter(tmp_path / "run"), "cpu")
    # the two jobs differ only in their seed: one is measured (at two batches, for the line
    # of its memory), not one per seed (four runs)
    assert timed == ["mim", "mim"]
    assert "2 pretraining jobs" in text
    assert "pretrain mim on unet2d_xs: 2 job(s) (seed 0, 1) × " in text
    assert (
        "pretrain_seeds: tied pretrains one checkpoint per fine-tuning seed: 1 more "
        "pretraining job(s) than single, +"
    ) in text
