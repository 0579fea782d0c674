"""Preprocessing geometry (the study's one-step affine resampling) and the slice cache."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cmrbench.datasets.base import DATASETS, DatasetAdapter
from cmrbench.datasets.phantom import heart_sections, plan_subject, render_subject
from cmrbench.datasets.preprocess import (
    Geometry,
    heart_center,
    intensity_stats,
    load_slice_cache,
    logits_to_original,
    minimal_enclosing_circle,
    normalised_center,
    preprocess_frames,
    preprocess_labels,
    resample,
)
from cmrbench.datasets.subject import Subject


def _subject(spacing=(8.0, 1.5, 1.0), shape=(3, 2, 40, 60), seed=0) -> Subject:
    """A box of label 1 whose physical extent is known: rows 14..25, cols 20..39."""
    t, z, h, w = shape
    rng = np.random.default_rng(seed)
    lab = np.zeros((z, h, w), np.uint8)
    lab[:, 14:26, 20:40] = 1
    cine = (rng.random(shape) * 0.1).astype(np.float32) + 5.0
    cine[:, :, 14:26, 20:40] += 2.0
    return Subject(
        "box",
        cine,
        spacing,
        {0: lab},
        ed=0,
        es=1 if t > 1 else 0,
        annotated={0: np.ones((4, z), bool)},
        meta={"vendor": "A"},
    )


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


def test_logits_return_to_the_original_grid():
    subject = _subject()
    geo = Geometry(size=16, spacing_mm=2.0)  # 32 mm FOV: smaller than the 60 mm image
    onehot = torch.nn.functional.one_hot(preprocess_labels(subject, 0, geo).long(), 4)
    logits = onehot.permute(0, 3, 1, 2).float() * 10
    back = logits_to_original(logits, subject, geo).argmax(1).numpy()
    ref = subject.labels[0]
    inter = ((back == 1) & (ref == 1)).sum()
    assert 2 * inter / ((back == 1).sum() + (ref == 1).sum()) > 0.9
    assert (back[:, :, :10] == 0).all()  # outside the 32 mm FOV: the edge's background


def test_logits_outside_the_field_of_view_take_the_border_values_as_the_study():
    # The study inverts its resampling with border padding: a constant logit map stays
    # constant everywhere, also outside the 32 mm field of view (zero padding gives 0 there).
    subject = _subject()
    geo = Geometry(size=16, spacing_mm=2.0)
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None, None].expand(2, 4, 16, 16)
    back = logits_to_original(logits, subject, geo)
    assert back.shape == (2, 4, 40, 60)
    assert torch.allclose(
        back, torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None, None].expand_as(back), atol=1e-5
    )


def test_logits_are_resampled_bicubically_as_the_study():
    # From a 1 mm grid back to 0.5 mm (centres aligned), original pixel 4 + m samples the
    # logit grid at 2 + m/2: half-way between two logit pixels, Keys' cubic weights
    # (a = −0.75) give an impulse W(0.5) = 0.59375 and W(1.5) = −0.09375 (bilinear: 0.5, 0).
    subject = _subject(spacing=(8.0, 0.5, 0.5), shape=(1, 1, 9, 9))
    geo = Geometry(size=5, spacing_mm=1.0)
    logits = torch.zeros(1, 4, 5, 5)
    logits[0, 1, 2, 2] = 1.0  # impulse at the centre of the 5 × 5 grid
    back = logits_to_original(logits, subject, geo)[0, 1]
    assert back[4, 4].item() == pytest.approx(1.0)  # on a source pixel
    assert back[4, 5].item() == pytest.approx(0.59375, abs=1e-6)  # half-way, same row
    assert back[4, 7].item() == pytest.approx(-0.09375, abs=1e-6)  # 1.5 px away


@DATASETS.register
class _Boxes(DatasetAdapter):
    """Three box subjects (test-only adapter)."""

    name = "boxes-for-cache-test"
    needs_root = False

    def subject_ids(self):
        return ["b0", "b1", "b2"]

    def load(self, subject_id):
        return _subject(seed=int(subject_id[1]))

    def default_split(self):
        return {"train": ["b0", "b1"], "val": [], "test": ["b2"]}


def test_slice_cache_holds_every_frame_of_the_pool_and_labelled_frames_of_others(
    tmp_path, monkeypatch
):
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
    np.testing.assert_array_equal(
        cache.labels[rows["label_row"].to_numpy()],
        preprocess_labels(adapter.load("b2"), 0, geo).numpy(),
    )
    assert list(cache.index["position"][:2]) == [0.0, 0.5]
    again = load_slice_cache(adapter, geo, ["b0", "b1"], progress=False)
    assert again.folder == cache.folder  # built once, reopened


# --------------------------------------------------------------------------- heart centre


def _brute_force_circle(points: np.ndarray) -> tuple[float, float, float]:
    """Smallest of all circles through 2 (as diameter) or 3 points that hold every point."""
    best = (0.0, 0.0, math.inf)
    pts = [tuple(p) for p in points.astype(float)]
    candidates = []
    for p, q in itertools.combinations(pts, 2):
        candidates.append(((p[0] + q[0]) / 2, (p[1] + q[1]) / 2, math.dist(p, q) / 2))
    for p, q, r in itertools.combinations(pts, 3):
        (ax, ay), (bx, by), (cx, cy) = p, q, r
        det = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        if abs(det) < 1e-9:
            continue
        ux = (
            (ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)
        ) / det
        uy = (
            (ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)
        ) / det
        candidates.append((ux, uy, math.dist((ux, uy), p)))
    for x, y, radius in candidates:
        if radius < best[2] and all(math.dist((x, y), p) <= radius + 1e-9 for p in pts):
            best = (x, y, radius)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_minimal_enclosing_circle_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 40, size=(int(rng.integers(2, 25)), 2)).astype(float)
    x, y, radius = minimal_enclosing_circle(points, seed=seed)
    bx, by, bradius = _brute_force_circle(points)
    assert radius == pytest.approx(bradius, abs=1e-9)
    assert (x, y) == pytest.approx((bx, by), abs=1e-6)


def test_minimal_enclosing_circle_of_a_square_and_collinear_points():
    square = np.array([[0, 0], [4, 0], [0, 4], [4, 4], [2, 2], [1, 3]])
    assert minimal_enclosing_circle(square) == pytest.approx((2.0, 2.0, math.sqrt(8)))
    line = np.array([[0, 0], [1, 1], [5, 5], [3, 3]])
    assert minimal_enclosing_circle(line) == pytest.approx((2.5, 2.5, math.sqrt(12.5)))
    assert minimal_enclosing_circle(np.array([[7, 3]])) == (7.0, 3.0, 0.0)


def test_heart_center_is_the_enclosing_circle_centre_over_frames_and_slices():
    labels = np.zeros((2, 3, 20, 30), np.uint8)  # frames × slices × H × W
    labels[0, 0, 5, 4] = 1  # (x 4, y 5)
    labels[1, 2, 15, 24] = 3  # (x 24, y 15): with the first, a diameter
    labels[0, 1, 9:12, 12:16] = 2  # inside that circle
    assert heart_center(labels) == pytest.approx((14.0, 10.0))
    assert heart_center(np.zeros((2, 8, 8), np.uint8)) is None


def _analytic_heart_center_mm(plan) -> tuple[float, float]:
    """Centre (x, y mm from the FOV centre) of the minimal enclosing circle of the phantom's
    labelled shapes, from its shape parameters: per slice and phase, the LV epicardial disk
    and the RV ellipse (the union of LV, MYO and RV), dense points on their outlines."""
    heart, turn = plan.heart, np.linspace(0, 2 * np.pi, 720, endpoint=False)
    stretch_u, stretch_v = 1 + heart.ellipticity, 1 - heart.ellipticity
    cos, sin = math.cos(plan.heart_angle), math.sin(plan.heart_angle)
    points = []
    for k, depth in enumerate(plan.slice_depths):
        centre = (
            plan.lv_centre[0] + k * plan.tilt_per_slice[0],
            plan.lv_centre[1] + k * plan.tilt_per_slice[1],
        )
        for contraction in (0.0, 1.0):  # ED, ES
            s = heart_sections(heart, depth, contraction)
            for cu, su, sv in (
                (0.0, s.epi_radius, s.epi_radius),
                (-s.rv_offset, s.rv_semi_u, s.rv_semi_v),
            ):
                if su <= 0 or sv <= 0:
                    continue
                u = stretch_u * (cu + su * np.cos(turn))
                v = stretch_v * sv * np.sin(turn)
                points.append(
                    np.stack([centre[0] + u * cos - v * sin, centre[1] + u * sin + v * cos], axis=1)
                )
    x, y, _ = minimal_enclosing_circle(np.concatenate(points))
    return x, y


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_label_derived_centre_of_phantom_hearts_equals_the_analytic_one(index):
    geometry = Geometry(size=64, spacing_mm=2.5)
    plan = plan_subject(index, 0)
    subject = render_subject(index, 0)
    labels = np.stack(
        [preprocess_labels(subject, f, geometry).numpy() for f in sorted(subject.labels)]
    )
    measured = heart_center(labels)
    # Cached pixel j sits (j − (size − 1)/2) · spacing mm from the FOV centre. The analytic
    # centre is in the drawing; a subject's columns are the drawing's rows and its rows the
    # drawing's columns reversed (the phantom's pose, laid out as every dataset).
    x_mm, y_mm = _analytic_heart_center_mm(plan)
    expected = (y_mm / 2.5 + 31.5, -x_mm / 2.5 + 31.5)
    assert measured == pytest.approx(expected, abs=0.5)  # within half a pixel


def test_cache_index_holds_each_subjects_heart_centre_normalised_for_affine_grid(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))
    adapter = _Boxes()
    geo = Geometry(size=16, spacing_mm=4.0)
    cache = load_slice_cache(adapter, geo, ["b0", "b1"], progress=False)
    rows = cache.rows(["b2"], labelled=True)
    expected_px = heart_center(preprocess_labels(adapter.load("b2"), 0, geo).numpy())
    assert tuple(rows[["center_x", "center_y"]].iloc[0]) == pytest.approx(expected_px)
    # affine_grid normalisation (align_corners=False): pixel i → (2i + 1) / 16 − 1.
    expected = [(2 * expected_px[0] + 1) / 16 - 1, (2 * expected_px[1] + 1) / 16 - 1]
    np.testing.assert_allclose(cache.centers(rows), [expected, expected], atol=1e-6)
    # Pool frames without labels carry their subject's centre too.
    pool_rows = cache.rows(["b0"], labelled=False)
    assert pool_rows[["center_x", "center_y"]].nunique().tolist() == [1, 1]
    np.testing.assert_array_equal(
        normalised_center(np.array([[np.nan, np.nan], [7.5, 7.5]]), 16),
        np.zeros((2, 2), np.float32),
    )
