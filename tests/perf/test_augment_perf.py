"""Throughput of the study's augmentation (``BatchAugment("paper")``) on a 32 × 1 × 128² batch.

Run with ``pytest tests/perf --benchmark-enable``; images/s lands in the benchmark's
``extra_info``. With the project's default ``--benchmark-disable`` the batch runs once, as a
smoke test. No timing is asserted.
"""

from __future__ import annotations

import torch

from cmrbench.transforms.augment import BatchAugment

BATCH, SIZE = 32, 128


def test_paper_augmentation_throughput_at_32_by_128px(benchmark) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images = torch.randn(BATCH, 1, SIZE, SIZE, device=device)
    labels = torch.randint(0, 4, (BATCH, SIZE, SIZE), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    augment = BatchAugment("paper", SIZE)

    def run() -> tuple[torch.Tensor, torch.Tensor | None]:
        out = augment(images, labels, generator)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    out_images, out_labels = benchmark(run)
    assert out_images.shape == images.shape and out_labels.shape == labels.shape
    benchmark.extra_info["device"] = device
    if benchmark.stats is not None:
        benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.mean
