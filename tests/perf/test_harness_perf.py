"""Benchmarks: harness fine-tuning and pretraining throughput against a bare step.

Run with ``pytest tests/perf --benchmark-enable -s``; each test prints and records (in
``extra_info``) the harness's images/s, the bare step's images/s and their ratio on this
device. The goal (≥ 0.9 × bare) is a benchmark figure, not a test assertion.
"""

from __future__ import annotations

import pytest
import torch

from cmrbench.benchmark.throughput import (
    bare_finetune_images_per_s,
    bare_pretrain_images_per_s,
    harness_finetune_images_per_s,
    harness_pretrain_images_per_s,
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZE, BATCH = 64, 16


def report_ratio(benchmark, what: str, bare: float, harness: float) -> None:
    """Record and print the harness's images/s against the bare step's, and their ratio."""
    benchmark.extra_info.update(
        {
            "device": str(DEVICE),
            "bare_images_per_s": bare,
            "harness_images_per_s": harness,
            "ratio": harness / bare,
        }
    )
    print(
        f"\n{what} {SIZE}px batch {BATCH} on {DEVICE}: harness {harness:.0f} img/s, "
        f"bare {bare:.0f} img/s, ratio {harness / bare:.2f}"
    )


@pytest.mark.parametrize("encoder", ["unet2d_xs", "unet2d_s"])
def test_finetune_harness_vs_bare_step(benchmark, encoder):
    bare = bare_finetune_images_per_s(encoder, SIZE, BATCH, DEVICE, steps=10, warmup=2)
    harness = benchmark.pedantic(
        harness_finetune_images_per_s,
        args=(encoder, SIZE, BATCH, DEVICE),
        kwargs={"steps": 10, "warmup": 2},
        rounds=1,
        iterations=1,
    )
    report_ratio(benchmark, f"fine-tune {encoder}", bare, harness)
    assert harness > 0 and bare > 0


@pytest.mark.parametrize("method", ["simclr", "mim"])
def test_pretrain_harness_vs_bare_step(benchmark, method):
    bare = bare_pretrain_images_per_s(method, "unet2d_xs", SIZE, BATCH, DEVICE, steps=6, warmup=2)
    harness = benchmark.pedantic(
        harness_pretrain_images_per_s,
        args=(method, "unet2d_xs", SIZE, BATCH, DEVICE),
        kwargs={"steps": 6, "warmup": 2},
        rounds=1,
        iterations=1,
    )
    report_ratio(benchmark, f"pretrain {method} unet2d_xs", bare, harness)
    assert harness > 0 and bare > 0
