"""``--dry-run`` time model: it counts the steps, slices and validation passes a run takes."""

from __future__ import annotations

import json

import pytest
import torch

from cmrbench.benchmark.grid import load_grid, override, plan_grid
from cmrbench.benchmark.estimate import (calibration_batch, cell_steps, duration, measure_counts,
                                     preparation_seconds, pretrain_step_count)
from cmrbench.benchmark.data import adapter_for
from cmrbench.benchmark.runner import RunOptions, run_cell, run_pretrain_job
from cmrbench.datasets.preprocess import Geometry
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.store import StoreWriter
from support.cli import TINY_GRID


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dry_run_counts_the_steps_slices_and_validations_of_the_real_loops(
        cmrbench_env, tmp_path) -> None:
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
    assert cell_steps(cell, adapter, counts) == (cell_log[-1]["step"],
                                                 sum("val_loss" in r for r in cell_log))

    pre = plan.pretrain[0]
    pre_result = json.loads((store.job_dir(pre) / "result.json").read_text())
    assert counts.pool_slices(adapter.default_split()["train"]) == pre_result["pool_slices"]
    # both results name the thread count that computed them (CPU float sums depend on it)
    assert result["threads"] == pre_result["threads"] == torch.get_num_threads()
    assert pretrain_step_count(pre, counts.pool_slices(adapter.pretraining_pool())) == \
        _records(store.job_dir(pre) / "log.jsonl")[-1]["step"]


def test_sampled_counts_without_a_cache_price_the_data_preparation(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))   # no slice cache built here
    grid = load_grid(str(TINY_GRID))
    adapter = adapter_for(grid.data)
    counts = measure_counts(adapter, Geometry(grid.data.image_size, grid.data.spacing_mm))
    assert counts.cache is None and counts.load_s > 0 and counts.frame_s > 0
    pool = adapter.default_split()["train"]
    assert counts.pool_slices(pool) == pytest.approx(len(pool) * counts.frames * counts.slices)
    frames = len(pool) * counts.frames + (len(adapter.subject_ids()) - len(pool)) * 2
    assert preparation_seconds(adapter, counts) == pytest.approx(
        len(adapter.subject_ids()) * counts.load_s + frames * counts.frame_s)


def test_durations_read_in_seconds_minutes_or_hours() -> None:
    assert (duration(42.4), duration(210), duration(3 * 3600)) == ("42 s", "3.5 min", "3.00 h")


def test_cpu_calibration_caps_a_study_sized_batch_and_keeps_small_ones() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert calibration_batch(224, 256, cpu) == 8          # SimCLR at the study's size
    assert calibration_batch(32, 128, cpu) == 32          # 32 × 128² = 8 × 256² px
    assert calibration_batch(64, 128, cpu) == 32
    assert calibration_batch(16, 64, cpu) == 16           # the smoke grid: unchanged
    assert calibration_batch(1, 1024, cpu) == 1
    assert calibration_batch(224, 256, cuda) == 224       # accelerators time the real batch


def test_dry_run_of_tied_pretraining_seeds_times_one_job_and_prices_every_seed(
        cmrbench_env, tmp_path, monkeypatch) -> None:
    from cmrbench.benchmark import estimate

    path = tmp_path / "tied.yaml"
    path.write_text(TINY_GRID.read_text().replace("seeds: [0]", "seeds: [0, 1]")
                    + "pretrain_seeds: tied\n")
    plan = plan_grid(override(load_grid(str(path)), methods="scratch,mim"))
    assert [job.seed for job in plan.pretrain] == [0, 1]
    timed = []
    real = estimate.pretrain_steps
    monkeypatch.setattr(estimate, "pretrain_steps",
                        lambda *args, **kwargs: timed.append(args[0]) or real(*args, **kwargs))
    text = estimate.describe_plan(plan, plan.cells, StoreWriter(tmp_path / "run"), "cpu")
    assert timed == ["mim"]                  # the two jobs differ only in their seed
    assert "2 pretraining jobs" in text
    assert "pretrain mim on unet2d_xs: 2 job(s) (seed 0, 1) × " in text
    assert ("pretrain_seeds: tied pretrains one checkpoint per fine-tuning seed: 1 more "
            "pretraining job(s) than single, +") in text
