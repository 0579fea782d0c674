"""Training and test geometry that agree at any field of view (issue 21, item 7).

The study centres augmented training slices on the label-derived heart centre and tests on
image-centred slices. At a field of view smaller than its 320 mm the two disagree for hearts
that lie off the image centre. On the phantom with every heart 60 mm off-centre (option
``heart_offset_mm``) at the CPU grids' 160 mm (64 px of 2.5 mm): with ``center: labels``
every training view holds its heart near the view centre while every test slice holds it
60 mm away; ``center: image`` (what the `smoke` and `sunnybrook` grids use) trains on the
positions it is tested on. The Dice of scratch trained each way is measured and reported;
at this scale it moves with the labelled subset (docs/protocol.md, "When `center: labels`
is safe").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cmrbench
from cmrbench.benchmark.data import labelled_slices, slice_centers
from cmrbench.benchmark.runner import RunOptions
from cmrbench.datasets import create_dataset
from cmrbench.datasets.preprocess import Geometry, load_slice_cache
from cmrbench.datasets.subject import LV
from cmrbench.transforms.augment import BatchAugment

GEOMETRY = Geometry(size=64, spacing_mm=2.5)
OFFSET_MM = 60.0
TRANSLATION_MM = 40 / 256 * GEOMETRY.size * GEOMETRY.spacing_mm  # 25 mm per axis


def lv_offsets_mm(labels: torch.Tensor) -> np.ndarray:
    """Distance (mm) of each slice's LV centroid from the slice's centre, ``(N,)``; NaN
    where a slice holds no LV. ``labels`` ``(N, S, S)``."""
    mask = (labels == LV).float()
    grid = torch.arange(GEOMETRY.size, dtype=torch.float32) - (GEOMETRY.size - 1) / 2
    area = mask.sum(dim=(1, 2))
    rows = (mask * grid[None, :, None]).sum(dim=(1, 2)) / area
    cols = (mask * grid[None, None, :]).sum(dim=(1, 2)) / area
    return (torch.hypot(rows, cols) * GEOMETRY.spacing_mm).numpy()


def test_label_centring_trains_on_centred_hearts_and_tests_on_off_centre_ones(cmrbench_env):
    adapter = create_dataset("phantom", n_train=6, n_val=1, n_test=1, heart_offset_mm=OFFSET_MM)
    subjects = adapter.default_split()["train"]
    cache = load_slice_cache(adapter, GEOMETRY, subjects, progress=False)
    test_view = labelled_slices(cache, subjects, ("ED", "ES"), torch.device("cpu"))
    at_test = lv_offsets_mm(test_view.labels)  # image-centred, as evaluated
    rows = cache.rows(subjects, labelled=True)
    trained = {}
    for center in ("labels", "image"):
        augment = BatchAugment("paper", GEOMETRY.size)
        views = [
            augment(
                test_view.images,
                test_view.labels.long(),
                generator=torch.Generator().manual_seed(draw),
                center=slice_centers(cache, rows, center),
            )[1]
            for draw in range(20)
        ]
        trained[center] = lv_offsets_mm(torch.cat(views))
    at_test, labels, image = (
        x[np.isfinite(x)] for x in (at_test, trained["labels"], trained["image"])
    )
    # test slices hold their hearts about 60 mm off the centre (the LV a little nearer)
    assert np.median(at_test) > 0.75 * OFFSET_MM
    # heart-centred training views: within the ±25 mm translation (and the LV's place in
    # the heart) of the centre; almost none as far out as the nearest test hearts
    assert np.percentile(labels, 95) < np.sqrt(2) * TRANSLATION_MM + 15
    assert np.mean(labels >= np.percentile(at_test, 5)) < 0.05
    # image-centred training views: the test positions, spread by the augmentation
    assert abs(np.median(image) - np.median(at_test)) < 10
    assert np.mean(image >= np.percentile(at_test, 5)) > 0.5


OFF_CENTRE_GRID = f"""
name: off-centre
description: scratch on off-centre phantom hearts, centred on the labels or on the image
dataset:
  name: phantom
  options: {{n_train: 32, n_val: 2, n_test: 8, heart_offset_mm: {OFFSET_MM}}}
  image_size: {GEOMETRY.size}
  spacing_mm: {GEOMETRY.spacing_mm}
encoders: [unet2d_xs]
methods: [scratch]
budgets: [16]
seeds: [0]
augmentations: [paper]
finetune:
  epochs: 40
  batch_size: 16
  val_every: 0
  center: {{center}}
"""
"""One grid per centring: two cells that differ only in ``center`` are one cell to a
leaderboard, so one plan may not hold both (a planning error since issue 25)."""


def mean_dsc_by_centring(run: Path) -> dict[str, dict[str, float]]:
    """``center`` → the cell's mean DSC per class and over the annotated classes."""
    scores = {}
    for result in sorted((run / "cells").glob("*/result.json")):
        spec = json.loads((result.parent / "spec.json").read_text())
        rows = pd.read_parquet(result.parent / "subjects.parquet")
        rows = rows[rows["annotated"]]
        scores[spec["finetune"]["center"]] = {
            **rows.groupby("class")["dsc"].mean().to_dict(),
            "mean": float(rows["dsc"].mean()),
        }
    return scores


@pytest.mark.slow
def test_scratch_learns_off_centre_hearts_with_either_centring(cmrbench_env, tmp_path):
    scores = {}
    for center in ("labels", "image"):
        grid = tmp_path / f"off-centre-{center}.yaml"
        grid.write_text(OFF_CENTRE_GRID.replace("{center}", center))
        summary = cmrbench.run_grid(
            str(grid), tmp_path / center, options=RunOptions(threads=1, progress=False)
        )
        assert summary.done == 1 and not summary.failures
        scores.update(mean_dsc_by_centring(tmp_path / center))
    # measured on a 2-core CPU, one thread: labels LV 0.544, mean 0.474; image LV 0.792,
    # mean 0.587 (seed 1: 0.578 / 0.480 and 0.760 / 0.547). With other subsets the order
    # can turn (all 16 training subjects labelled: labels 0.550, image 0.497): the report
    # in docs/protocol.md gives every comparison run.
    for center in ("labels", "image"):
        assert scores[center]["LV"] > 0.4, scores
