"""Preprocessing geometry (the study's one-step affine resampling) and the slice cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrbench.datasets.base import DATASETS, DatasetAdapter
from cmrbench.datasets.preprocess import (Geometry, intensity_stats, load_slice_cache,
                                          logits_to_original, preprocess_frames,
                                          preprocess_labels, resample)
from cmrbench.datasets.subject import Subject


def _subject(spacing=(8.0, 1.5, 1.0), shape=(3, 2, 40, 60), seed=0) -> Subject:
    """A box of label 1 whose physical extent is known: rows 14..25, cols 20..39."""
    t, z, h, w = shape
    rng = np.random.default_rng(seed)
    lab = np.zeros((z, h, w), np.uint8)
    lab[:, 14:26, 20:40] = 1
    cine = (rng.random(shape) * 0.1).astype(np.float32) + 5.0
    cine[:, :, 14:26, 20:40] += 2.0
    return Subject("box", cine, spacing, {0: lab}, ed=0, es=1 if t > 1 else 0,
                   annotated={0: np.ones((4, z), bool)}, meta={"vendor": "A"})


def test_resampling_keeps_physical_size_and_centre():
    subject = _subject()
    geo = Geometry(size=32, spacing_mm=2.0)
    lab = preprocess_labels(subject, 0, geo)[0].numpy()
    rows, cols = np.nonzero(lab)
    # 12 rows × 1.5 mm = 18 mm → 9 px of 2 mm; 20 cols × 1 mm = 20 mm → 10 px of 2 mm.
    assert rows.max() - rows.min() + 1 == pytest.approx(9, abs=1)
    assert cols.max() - cols.min() + 1 == pytest.approx(10, abs=1)
    # The box centre is at row 19.5 of 40 (−0.5 px × 1.5 mm = −0.75 mm from the centre) and
    # col 29.5 of 60 (0 mm): on the 32-px grid that is row 15.5 − 0.375, col 15.5.
    assert rows.mean() == pytest.approx(15.5 - 0.375, abs=0.6)
    assert cols.mean() == pytest.approx(15.5, abs=0.6)


def test_identity_geometry_is_an_exact_copy():
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    out = resample(images, (1.0, 1.0), (5, 5), (1.0, 1.0), mode="nearest")
    assert torch.equal(out, images)


def test_zscore_uses_the_whole_4d_stack():
    subject = _subject()
    mean, std = intensity_stats(subject.cine)
    shifted = subject.cine.astype(np.float64) - subject.cine.min()
    assert mean == pytest.approx(shifted.mean()) and std == pytest.approx(shifted.std())
    same_grid = Geometry(size=60, spacing_mm=1.0)
    subject_iso = _subject(spacing=(8.0, 1.0, 1.0), shape=(3, 2, 60, 60))
    out = preprocess_frames(subject_iso, [0, 1, 2], same_grid).numpy()
    m, s = intensity_stats(subject_iso.cine)
    expected = (subject_iso.cine - subject_iso.cine.min() - m) / s
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_logits_return_to_the_original_grid_and_background_outside_the_field_of_view():
    subject = _subject()
    geo = Geometry(size=16, spacing_mm=2.0)     # 32 mm FOV: smaller than the 60 mm image
    onehot = torch.nn.functional.one_hot(preprocess_labels(subject, 0, geo).long(), 4)
    logits = onehot.permute(0, 3, 1, 2).float() * 10
    back = logits_to_original(logits, subject, geo).argmax(1).numpy()
    ref = subject.labels[0]
    inter = ((back == 1) & (ref == 1)).sum()
    assert 2 * inter / ((back == 1).sum() + (ref == 1).sum()) > 0.9
    assert (back[:, :, :10] == 0).all()           # outside the 32 mm FOV → background


@DATASETS.register("boxes-for-cache-test")
class _Boxes(DatasetAdapter):
    """Three box subjects (test-only adapter)."""

    needs_root = False

    def subject_ids(self):
        return ["b0", "b1", "b2"]

    def load(self, subject_id):
        return _subject(seed=int(subject_id[1]))

    def default_split(self):
        return {"train": ["b0", "b1"], "val": [], "test": ["b2"]}


def test_slice_cache_holds_every_frame_of_the_pool_and_labelled_frames_of_others(tmp_path, monkeypatch):
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))
    adapter = _Boxes()
    geo = Geometry(size=16, spacing_mm=4.0)
    cache = load_slice_cache(adapter, geo, ["b0", "b1"], progress=False)
    # pool: 2 subjects × 3 frames × 2 slices; b2: 1 labelled frame × 2 slices
    assert cache.images.shape == (14, 16, 16) and cache.images.dtype == np.float16
    assert cache.labels.shape == (6, 16, 16)
    assert isinstance(cache.images, np.memmap)
    rows = cache.rows(["b2"], labelled=True)
    assert list(rows["z"]) == [0, 1] and set(rows["phase"]) == {"ED"}
    expected = preprocess_frames(adapter.load("b2"), [0], geo)[0].half().numpy()
    np.testing.assert_array_equal(cache.images[rows.index.to_numpy()], expected)
    np.testing.assert_array_equal(cache.labels[rows["label_row"].to_numpy()],
                                  preprocess_labels(adapter.load("b2"), 0, geo).numpy())
    assert list(cache.index["position"][:2]) == [0.0, 0.5]
    again = load_slice_cache(adapter, geo, ["b0", "b1"], progress=False)
    assert again.folder == cache.folder       # built once, reopened
