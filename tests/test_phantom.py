"""Tests for cmrbench.datasets.phantom: determinism, labels, analytic truth, realism, splits."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
from scipy import ndimage

from cmrbench.datasets import phantom
from cmrbench.datasets.base import DatasetError, create_dataset
from cmrbench.datasets.subject import LV, MYO, RV, Subject

# The first eight test subjects of the default split: two per vendor, all pathologies.
SAMPLE = tuple(range(48, 56))
TRUTH_KEYS = (
    "LV_EDV",
    "LV_ESV",
    "RV_EDV",
    "RV_ESV",
    "LV_EF",
    "RV_EF",
    "LV_MYO_ED_ml",
    "LV_MYO_ES_ml",
    "LV_MASS_ED_g",
)
RAYLEIGH_MEAN_OVER_STD = math.sqrt(math.pi / 2) / math.sqrt(2 - math.pi / 2)


@functools.cache
def rendered(index: int, seed: int = 0) -> Subject:
    return phantom.render_subject(index, seed)


def sample_subjects() -> list[Subject]:
    return [rendered(index) for index in SAMPLE]


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    total = prediction.sum() + reference.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(prediction, reference).sum() / total


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Threshold maximising the between-class variance of the histogram of ``values``."""
    counts, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    below = np.cumsum(counts)
    above = below[-1] - below
    mass = np.cumsum(counts * centres)
    mean_below = mass / np.maximum(below, 1)
    mean_above = (mass[-1] - mass) / np.maximum(above, 1)
    return float(centres[np.argmax(below * above * (mean_below - mean_above) ** 2)])


def threshold_baseline(subject: Subject, frame: int) -> np.ndarray:
    """Non-learned segmentation: Otsu + connected components + a fixed-width myocardium ring.

    Per slice: the bright component (>= 100 mm²) nearest the image centre is the LV (holes
    filled), the other bright component nearest the LV is the RV, and an 8 mm ring around
    the LV (outside both) is the myocardium.
    """
    image = subject.cine[frame]
    _, dy, dx = subject.spacing
    bright = image > otsu_threshold(image)
    centre = (np.array(image.shape[1:]) - 1) / 2
    prediction = np.zeros(image.shape, dtype=np.uint8)
    for z in range(image.shape[0]):
        components, count = ndimage.label(bright[z])
        ids = np.arange(1, count + 1)
        areas = ndimage.sum_labels(np.ones_like(components), components, ids) * dy * dx
        large = ids[areas >= 100.0]
        if large.size == 0:
            continue
        centroids = np.array(ndimage.center_of_mass(bright[z], components, large))
        lv = large[np.argmin(np.linalg.norm(centroids - centre, axis=1))]
        lv_mask = ndimage.binary_fill_holes(components == lv)
        rv_mask = np.zeros_like(lv_mask)
        others = large != lv
        if others.any():
            lv_centroid = centroids[large == lv][0]
            distance = np.linalg.norm(centroids[others] - lv_centroid, axis=1)
            rv_mask = components == large[others][np.argmin(distance)]
        ring = ndimage.binary_dilation(lv_mask, iterations=max(1, round(8.0 / dx)))
        prediction[z][ring & ~lv_mask & ~rv_mask] = MYO
        prediction[z][rv_mask] = RV
        prediction[z][lv_mask] = LV
    return prediction


def lens_area(r1: float, r2: float, distance: float) -> float:
    """Textbook area of the intersection of two disks (reference for a = b ellipses)."""
    if distance >= r1 + r2:
        return 0.0
    if distance <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    a1 = math.acos((distance**2 + r1**2 - r2**2) / (2 * distance * r1))
    a2 = math.acos((distance**2 + r2**2 - r1**2) / (2 * distance * r2))
    return r1**2 * (a1 - math.sin(2 * a1) / 2) + r2**2 * (a2 - math.sin(2 * a2) / 2)


def grid_area_outside_disk(semi_u: float, semi_v: float, offset: float, radius: float) -> float:
    """Ellipse-minus-disk area by counting points of a 0.002-spaced grid."""
    axis = np.arange(-4.0, 4.0, 0.002) + 0.001
    u, v = np.meshgrid(axis, axis, sparse=True)
    inside = ((u + offset) / semi_u) ** 2 + (v / semi_v) ** 2 < 1.0
    return float((inside & (u**2 + v**2 >= radius**2)).sum() * 0.002**2)


def test_same_index_and_seed_render_identical_bytes_and_another_seed_differs():
    first, again, other_seed = rendered(1), phantom.render_subject(1, 0), rendered(1, 1)
    assert first.cine.tobytes() == again.cine.tobytes()
    assert first.labels.keys() == again.labels.keys()
    assert all(first.labels[f].tobytes() == again.labels[f].tobytes() for f in first.labels)
    assert first.meta == again.meta
    assert first.cine.shape != other_seed.cine.shape or not np.array_equal(
        first.cine, other_seed.cine
    )
    assert first.meta["truth"] != other_seed.meta["truth"]


def test_ellipse_outside_disk_area_matches_lens_formula_for_circles():
    for r_rv, r_lv, offset in [
        (1.0, 1.0, 0.45),
        (1.3, 0.9, 0.7),
        (0.5, 1.0, 0.8),
        (0.4, 1.0, 0.2),
        (1.0, 0.5, 2.0),
    ]:
        expected = math.pi * r_rv**2 - lens_area(r_rv, r_lv, offset)
        assert phantom.ellipse_outside_disk_area(r_rv, r_rv, offset, r_lv) == pytest.approx(
            expected, abs=1e-12
        )


@pytest.mark.parametrize(
    "semi_u, semi_v, offset, radius",
    [
        (0.8, 1.2, 0.8, 1.0),  # RV-like crescent
        (0.3, 1.6, 0.0, 1.0),  # thin ellipse poking out of the disk in two lobes
        (1.5, 0.6, 0.3, 1.0),  # wide ellipse across the disk
        (0.7, 0.9, 2.5, 1.0),  # disjoint
    ],
)
def test_ellipse_outside_disk_area_matches_grid_count(semi_u, semi_v, offset, radius):
    assert phantom.ellipse_outside_disk_area(semi_u, semi_v, offset, radius) == pytest.approx(
        grid_area_outside_disk(semi_u, semi_v, offset, radius), abs=2e-4
    )


def test_ellipse_outside_disk_area_nested_cases_are_exact():
    assert phantom.ellipse_outside_disk_area(0.3, 0.4, 0.2, 1.0) == 0.0
    assert phantom.ellipse_outside_disk_area(2.0, 3.0, 0.5, 1.0) == pytest.approx(
        math.pi * 6.0 - math.pi
    )
    assert phantom.ellipse_outside_disk_area(0.0, 1.0, 0.5, 1.0) == 0.0


def test_contraction_is_zero_at_ed_one_at_es_and_periodic():
    curve = phantom.contraction_curve(25, 2, 12)
    assert curve[2] == 0.0 and curve[12] == 1.0
    assert curve.min() >= 0.0 and curve.max() <= 1.0
    assert np.all(np.diff(curve[2:13]) > 0) and np.all(np.diff(curve[12:]) < 0)
    assert curve[1] < curve[0] < 0.1


def test_stack_geometry_frames_and_spacing_fit_the_documented_ranges():
    for subject in sample_subjects():
        frames, slices, height, width = subject.shape
        dz, dy, dx = subject.spacing
        assert 20 <= frames <= 30 and 8 <= slices <= 12 and 128 <= height == width <= 192
        assert 8.0 <= dz <= 10.0 and 1.2 <= dy == dx <= 1.8
        assert 220 <= height * dy <= 300
        assert subject.ed in (0, 1, 2)
        assert 0.35 * frames - 0.5 <= subject.es - subject.ed <= 0.45 * frames + 0.5


def test_labels_are_canonical_and_only_at_ed_and_es():
    for subject in sample_subjects():
        assert sorted(subject.labels) == sorted({subject.ed, subject.es})
        for label in subject.labels.values():
            assert label.dtype == np.uint8
            assert set(np.unique(label)) == {0, LV, MYO, RV}


def test_lv_cavity_area_shrinks_from_base_to_apex():
    for subject in sample_subjects():
        areas = (subject.labels[subject.ed] == LV).sum(axis=(1, 2))
        labelled = areas[np.argmax(areas > 0) :]
        assert np.all(np.diff(labelled) <= 0.02 * labelled[:-1] + 3), subject.id
        assert labelled[-1] < 0.25 * labelled[0], subject.id


def test_rv_is_absent_on_the_most_apical_slice_but_present_mid_ventricle():
    for subject in sample_subjects():
        for frame in (subject.ed, subject.es):
            rv_per_slice = (subject.labels[frame] == RV).sum(axis=(1, 2))
            assert rv_per_slice[-1] == 0, subject.id
            assert rv_per_slice[subject.shape[1] // 3] > 0, subject.id


def mean_wall_thickness_mm(label: np.ndarray, slices: list[int], pixel_mm: float) -> float:
    """Mean of r_epi - r_endo over ``slices``, radii of disks with the labelled areas."""
    cavity = (label[slices] == LV).sum(axis=(1, 2))
    epicardium = cavity + (label[slices] == MYO).sum(axis=(1, 2))
    return float(np.mean(np.sqrt(epicardium / np.pi) - np.sqrt(cavity / np.pi)) * pixel_mm)


def test_myocardium_is_thicker_at_es_than_at_ed():
    for subject in sample_subjects():
        ed, es = subject.labels[subject.ed], subject.labels[subject.es]
        both = [z for z in range(subject.shape[1]) if (ed[z] == LV).any() and (es[z] == LV).any()]
        thickness_ed = mean_wall_thickness_mm(ed, both, subject.spacing[1])
        thickness_es = mean_wall_thickness_mm(es, both, subject.spacing[1])
        assert thickness_es > 1.1 * thickness_ed, subject.id


def test_rasterised_label_volumes_match_the_analytic_truth():
    keys = {
        ("ED", LV): "LV_EDV",
        ("ES", LV): "LV_ESV",
        ("ED", RV): "RV_EDV",
        ("ES", RV): "RV_ESV",
        ("ED", MYO): "LV_MYO_ED_ml",
        ("ES", MYO): "LV_MYO_ES_ml",
    }
    vendors = set()
    for subject in sample_subjects():
        truth = subject.meta["truth"]
        vendors.add(subject.meta["vendor"])
        for (phase, label), key in keys.items():
            counted = (subject.labels[subject.phases[phase]] == label).sum() * subject.voxel_ml
            assert counted == pytest.approx(truth[key], rel=0.03), (subject.id, key)
        assert tuple(truth) == TRUTH_KEYS
        assert truth["LV_MASS_ED_g"] == pytest.approx(1.05 * truth["LV_MYO_ED_ml"])
    assert vendors == {"A", "B", "C", "D"}


def test_ejection_fractions_from_labels_match_the_truth():
    for subject in sample_subjects():
        ed, es = subject.labels[subject.ed], subject.labels[subject.es]
        for label, key in ((LV, "LV_EF"), (RV, "RV_EF")):
            ef = 100.0 * (1.0 - (es == label).sum() / (ed == label).sum())
            assert ef == pytest.approx(subject.meta["truth"][key], abs=3.0), (subject.id, key)


def test_pathology_groups_set_ejection_fraction_size_and_wall_as_documented():
    dataset = create_dataset("phantom")
    metas = [dataset.subject_meta(i) for i in dataset.subject_ids()]
    efs = [meta["truth"]["LV_EF"] for meta in metas]
    assert min(efs) < 35.0 and max(efs) > 65.0
    by_group: dict[str, list[dict]] = {}
    for meta in metas:
        style = phantom.PATHOLOGIES[meta["pathology"]]
        assert style.lv_ef[0] - 0.1 <= meta["truth"]["LV_EF"] <= style.lv_ef[1] + 0.1
        assert style.rv_ef[0] - 0.1 <= meta["truth"]["RV_EF"] <= style.rv_ef[1] + 0.1
        by_group.setdefault(meta["pathology"], []).append(meta["truth"])

    def mean(group: str, quantity) -> float:
        return float(np.mean([quantity(truth) for truth in by_group[group]]))

    def edv(truth):
        return truth["LV_EDV"]

    def mass_per_volume(truth):
        return truth["LV_MASS_ED_g"] / truth["LV_EDV"]

    assert mean("dilated", edv) > 1.4 * mean("normal", edv) > 1.4 * mean("hypertrophic", edv)
    assert mean("hypertrophic", mass_per_volume) > 2.0 * mean("normal", mass_per_volume)


def test_blood_is_brighter_than_myocardium_like_bssfp():
    for subject in sample_subjects():
        image, label = subject.cine[subject.ed], subject.labels[subject.ed]
        assert image[label == LV].mean() > 1.6 * image[label == MYO].mean(), subject.id


def test_background_air_holds_rician_noise():
    for subject in sample_subjects():
        # the air in front of the chest: the columns run posterior, so the first columns
        corners = np.concatenate(
            [subject.cine[:, :, :8, :8].ravel(), subject.cine[:, :, -8:, :8].ravel()]
        )
        assert corners.mean() > 0.0
        assert corners.mean() / corners.std() == pytest.approx(RAYLEIGH_MEAN_OVER_STD, rel=0.03)


def test_labels_stay_inside_the_central_160_mm_crop():
    for subject in sample_subjects():
        _, _, height, width = subject.shape
        any_label = np.zeros((height, width), dtype=bool)
        for label in subject.labels.values():
            any_label |= (label > 0).any(axis=0)
        rows, cols = np.nonzero(any_label)
        pixel = subject.spacing[1]
        assert np.abs(rows - (height - 1) / 2).max() * pixel < 80.0, subject.id
        assert np.abs(cols - (width - 1) / 2).max() * pixel < 80.0, subject.id


def test_threshold_baseline_is_far_from_solving_the_phantom():
    scores = []
    for subject in sample_subjects():
        prediction = threshold_baseline(subject, subject.ed)
        reference = subject.labels[subject.ed]
        scores.append(np.mean([dice(prediction == c, reference == c) for c in (LV, MYO, RV)]))
    assert np.mean(scores) <= 0.5


def test_default_split_is_disjoint_with_every_vendor_in_every_split():
    dataset = create_dataset("phantom")
    split = dataset.default_split()
    assert [len(split[name]) for name in ("train", "val", "test")] == [40, 8, 24]
    everyone = split["train"] + split["val"] + split["test"]
    assert sorted(everyone) == dataset.subject_ids() and len(set(everyone)) == 72
    assert dataset.subject_ids()[7] == "phantom-0007"
    for ids in split.values():
        metas = [dataset.subject_meta(i) for i in ids]
        assert {meta["vendor"] for meta in metas} == {"A", "B", "C", "D"}
        assert {meta["pathology"] for meta in metas} == set(phantom.PATHOLOGY_NAMES)


def test_create_dataset_needs_no_root_and_load_caches_the_render(tmp_path, monkeypatch):
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))
    dataset = create_dataset("phantom")
    assert isinstance(dataset, phantom.PhantomDataset) and dataset.root is None
    loaded = dataset.load("phantom-0048")
    reference = rendered(48)
    assert loaded.cine.tobytes() == reference.cine.tobytes()
    assert all(np.array_equal(loaded.labels[f], reference.labels[f]) for f in reference.labels)
    assert loaded.spacing == reference.spacing and loaded.meta == reference.meta
    # the cheap metadata is all but the layout, which loading records
    assert dataset.subject_meta("phantom-0048") == {
        k: v for k, v in reference.meta.items() if k != "layout"
    }
    cached = list(tmp_path.rglob("phantom-0048.npz"))
    assert len(cached) == 1 and not list(tmp_path.rglob("*.tmp"))
    plain_file = tmp_path / "plain"
    plain_file.write_bytes(b"")
    assert cached[0].stat().st_mode == plain_file.stat().st_mode  # umask applies, not 0600

    def no_render(plan):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(phantom, "render_arrays", no_render)
    assert dataset.load("phantom-0048").cine.tobytes() == reference.cine.tobytes()


def test_cache_folder_depends_on_seed_and_fingerprint_names_the_generator(tmp_path, monkeypatch):
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))
    seed0, seed1 = create_dataset("phantom"), create_dataset("phantom", seed=1)
    assert seed0.cache_folder() != seed1.cache_folder()
    assert seed0.cache_folder() == create_dataset("phantom", n_test=30).cache_folder()
    assert seed0.fingerprint()["generator_version"] == phantom.GENERATOR_VERSION
    assert seed0.fingerprint()["options"]["seed"] == 0


def test_vendors_option_keeps_the_subjects_of_those_styles_with_their_ids_and_content(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))
    only_c = create_dataset("phantom", n_train=3, n_val=1, n_test=2, vendors="C")
    # vendor_of is round robin A, B, C, D: C is every index 2 mod 4
    assert only_c.subject_ids() == [f"phantom-{i:04d}" for i in (2, 6, 10, 14, 18, 22)]
    assert only_c.default_split()["test"] == ["phantom-0018", "phantom-0022"]
    assert {only_c.subject_meta(s)["vendor"] for s in only_c.subject_ids()} == {"C"}
    assert {only_c.subject_meta(s)["pathology"] for s in only_c.subject_ids()} == set(
        phantom.PATHOLOGY_NAMES
    )
    assert only_c.load("phantom-0006").cine.tobytes() == rendered(6).cine.tobytes()
    two = create_dataset("phantom", n_train=2, n_val=1, n_test=1, vendors="B+A")
    assert two.subject_ids() == ["phantom-0000", "phantom-0001", "phantom-0004", "phantom-0005"]
    assert two.options["vendors"] == "A+B"
    assert "vendors" not in create_dataset("phantom").options  # the default keeps its cache key
    assert (
        only_c.source()
        == create_dataset("phantom").source()
        != create_dataset("phantom", seed=1).source()
    )
    with pytest.raises(DatasetError, match="phantom-0002 .. phantom-0022"):
        only_c.subject_meta("phantom-0003")


def test_the_heart_offset_option_moves_hearts_off_centre_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path))
    dataset = create_dataset("phantom", n_train=4, n_val=1, n_test=1, heart_offset_mm=50)
    assert dataset.cache_folder() != create_dataset("phantom").cache_folder()
    assert dataset.fingerprint()["options"]["heart_offset_mm"] == 50.0
    for index in range(4):
        moved, default = phantom.plan_subject(index, 0, 50.0), phantom.plan_subject(index, 0)
        # every other draw is the same: heart, stack, contrast, noise; the body follows the heart
        assert (
            dataclasses.replace(moved, lv_centre=default.lv_centre, organs=default.organs)
            == default
        )
        subject = dataset.load(phantom.phantom_id(index))
        labelled = np.stack(list(subject.labels.values())).any(axis=(0, 1))
        rows, cols = np.nonzero(labelled)
        _, _, height, width = subject.shape
        pixel = subject.spacing[1]
        # the middle of the labelled box (the heart's, within a pixel or two) sits 50 mm off
        middle = np.array([rows.min() + rows.max(), cols.min() + cols.max()]) / 2
        offset = np.hypot(*(middle - (np.array([height, width]) - 1) / 2)) * pixel
        assert offset == pytest.approx(50.0, abs=2.5 * pixel), index
        # and every label stays inside the image (2 mm from its edge)
        assert rows.min() > 0 and cols.min() > 0
        assert rows.max() < height - 1 and cols.max() < width - 1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_test": 0}, "n_test=0"),
        ({"seed": -1}, "seed=-1"),
        ({"n_train": "40"}, "option 'n_train' is '40'; expected a whole number"),
        ({"vendors": "E"}, "vendors='E'"),
        ({"vendors": ""}, "vendors=''"),
        ({"heart_offset_mm": -5}, "heart_offset_mm=-5.0 must be a distance in mm >= 0"),
        ({"heart_offset_mm": "far"}, "option 'heart_offset_mm' is 'far'"),
    ],
)
def test_bad_options_are_rejected_with_the_option_named(options, message):
    with pytest.raises(DatasetError, match=message):
        create_dataset("phantom", **options)


def test_unknown_subject_ids_and_a_root_are_rejected():
    dataset = create_dataset("phantom", n_train=4, n_val=4, n_test=4)
    for bad in ("phantom-0012", "phantom-7", "phantom-00001", "patient001"):
        with pytest.raises(DatasetError, match="phantom-0000 .. phantom-0011"):
            dataset.subject_meta(bad)
    with pytest.raises(DatasetError, match="takes no root"):
        create_dataset("phantom", root="/data")
