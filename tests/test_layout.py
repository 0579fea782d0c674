"""One anatomical layout for every stack (`cmrbench.datasets.layout`): the same heart stored in
different layouts reaches the network identically, the layout is the study's for the layouts
M&Ms stores, all-zero borders are cropped before the z-score, and scores stay exact."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cmrbench.benchmark.metrics import subject_metrics
from cmrbench.datasets import create_dataset, network_view
from cmrbench.datasets.layout import InPlaneLayout, in_plane_layout, zero_border_crop
from cmrbench.datasets.mnms import MnmsDataset
from cmrbench.datasets.phantom import render_subject
from cmrbench.datasets.preprocess import Geometry, logits_to_original, preprocess_frames
from cmrbench.datasets.subject import LV, MYO, NUM_CLASSES, RV
from support.fixtures_nifti import (
    MNMS_CSV_HEADER,
    POSED_LAYOUTS,
    CanonicalSubject,
    canonical_subject,
    mnms_csv_row,
    oblique_affine,
    rotate_sunnybrook_study,
    write_mnms_subject,
    write_posed_mnms_subject,
)
from support.real_data import SUNNYBROOK, needs_sunnybrook

L, P, INF = np.eye(3)[0], np.eye(3)[1], -np.eye(3)[2]  # LPS: left, posterior, inferior


# --- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "network"),
    [
        # stored rows, columns, slices (base → apex)   network rows, columns
        ((P, L, INF), (-L, P)),  # an LPS file (H = j = P, W = i = L): rows R, columns P
        ((INF, P, L), (INF, P)),  # a PIR or PIL file: rows I, columns P (already the layout)
    ],
)
def test_the_layout_is_the_studys_for_the_layouts_mnms_stores(stored, network):
    # qcardia-data mm1.py turns LPS into RPI and PIR/PIL into IPL (rows, columns, slices)
    layout = in_plane_layout(*stored)
    rows, cols = layout.directions(stored[0], stored[1])
    np.testing.assert_array_equal(rows, network[0])
    np.testing.assert_array_equal(cols, network[1])


def test_every_storage_of_one_oblique_plane_gets_the_same_world_layout():
    rows, cols = np.array([-0.7, 0.1, -0.7]), np.array([0.5, 0.8, -0.3])
    rows -= (rows @ cols) * cols / (cols @ cols)
    apex = np.cross(rows, cols)
    results = []
    for transpose, flip_rows, flip_cols in itertools.product((False, True), repeat=3):
        stored = InPlaneLayout(transpose, flip_rows, flip_cols).directions(rows, cols)
        results.append(in_plane_layout(stored[0], stored[1], apex).directions(*stored))
    for result in results:  # all eight storages give the first one's directions
        np.testing.assert_allclose(result[0], results[0][0])
        np.testing.assert_allclose(result[1], results[0][1])
    # ... which is right-handed about the apex, columns the most posterior candidate
    assert np.cross(*results[0]) @ apex > 0 and results[0][1] @ P > 0.5


def test_a_layout_moves_arrays_and_spacing_together():
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    layout = InPlaneLayout(transpose=True, flip_rows=True)
    moved = layout.apply(array)
    assert moved.shape == (2, 4, 3) and layout.spacing((8.0, 1.5, 1.25)) == (8.0, 1.25, 1.5)
    # new pixel (r, c) = old (c, W - 1 - r)
    assert moved[1, 0, 2] == array[1, 2, 3] and moved[0, 3, 0] == array[0, 0, 0]


# --- one phantom heart in three files ------------------------------------------------------


@pytest.fixture(scope="module")
def posed_hearts(tmp_path_factory) -> tuple[Path, CanonicalSubject, tuple[float, float, float]]:
    """One phantom heart (ED and ES, cropped around the heart) written as an M&Ms subject in
    each of `POSED_LAYOUTS` (LPS, mirrored RPS, PIR): ids ``HLPS``, ``HRPS``, ``HPIR``."""
    subject = render_subject(2, 0)
    labels = np.stack([subject.labels[subject.ed], subject.labels[subject.es]])
    rows, cols = np.nonzero(labels.any(axis=(0, 1)))
    top, left = int(rows.mean()) - 48, int(cols.mean()) - 48  # 96 x 96 px on the heart
    box = (slice(top, top + 96), slice(left, left + 96))
    heart = CanonicalSubject(
        cine=np.ascontiguousarray(subject.cine[[subject.ed, subject.es]][(..., *box)]),
        labels={0: labels[0][(..., *box)], 1: labels[1][(..., *box)]},
        ed=0,
        es=1,
    )
    root = tmp_path_factory.mktemp("posed")
    rows_csv = [MNMS_CSV_HEADER]
    for n, layout in enumerate(POSED_LAYOUTS):
        write_posed_mnms_subject(root / f"H{layout}", heart, subject.spacing, layout)
        rows_csv.append(mnms_csv_row(n, f"H{layout}", "Siemens", "A", 1, 0, 1, "NOR"))
    (root / "info.csv").write_text("\n".join(rows_csv) + "\n")
    return root, heart, subject.spacing


def _lv_to_rv_degrees(labels: np.ndarray) -> float:
    """Direction from the LV centroid to the RV centroid on the mid slice of ``(Z, H, W)``
    labels, as ``atan2(Δrow, Δcolumn)`` in degrees."""
    mid = labels[labels.shape[0] // 2]
    lv, rv = np.argwhere(mid == LV).mean(axis=0), np.argwhere(mid == RV).mean(axis=0)
    return float(np.degrees(np.arctan2(*(rv - lv))))


def test_the_fixture_files_are_stored_lps_pir_and_mirrored(posed_hearts):
    root = posed_hearts[0]
    for layout in POSED_LAYOUTS:
        affine = nib.load(root / f"H{layout}" / f"H{layout}_sa.nii.gz").affine
        assert "".join(nib.aff2axcodes(affine)) == layout


def test_one_heart_stored_lps_pir_and_mirrored_reaches_the_network_the_same(posed_hearts):
    root, heart, spacing = posed_hearts
    views = {
        layout: network_view("mnms", root, f"H{layout}", image_size=64, spacing_mm=2.5)
        for layout in POSED_LAYOUTS
    }
    angles = {layout: _lv_to_rv_degrees(view["ED"][1]) for layout, view in views.items()}
    assert max(angles.values()) - min(angles.values()) < 5.0, angles
    # the RV lies anterior to the LV and the columns run posterior: the RV is to the left
    assert all(np.cos(np.radians(a)) < -0.3 for a in angles.values()), angles
    native_ml = {c: (heart.labels[0] == c).sum() * np.prod(spacing) / 1000 for c in (LV, MYO, RV)}
    for layout, view in views.items():
        subject = MnmsDataset(root).load(f"H{layout}")
        for c in (LV, MYO, RV):  # native voxels: exactly the heart's
            assert (subject.labels[0] == c).sum() * subject.voxel_ml == pytest.approx(
                native_ml[c], rel=1e-6
            )
            grid_ml = (view["ED"][1] == c).sum() * 2.5 * 2.5 * spacing[0] / 1000
            reference = (views["LPS"]["ED"][1] == c).sum() * 2.5 * 2.5 * spacing[0] / 1000
            assert grid_ml == pytest.approx(reference, rel=1e-3), (layout, c)


def _study_mm1_orientation(path: Path) -> np.ndarray:
    """The study's re-orientation of an M&Ms file, as qcardia-data 1.0.0 does it
    (``reformat_sa_cine_scans`` with ``fix_orientation_mm1``; read from its code): nearest
    world axes, the slice axis kept third, the in-plane axes swapped, every axis mirrored, the
    slice axis flipped when the determinant is negative, and PLI stacks turned once more."""
    image = nib.load(path)
    ornt = nib.orientations.io_orientation(image.affine)
    if ornt[2, 0] == 0:
        ornt[:2, 0] -= 1
        ornt[2, 0] = 2
    elif ornt[2, 0] == 1:
        ornt[ornt[:, 0] == 2, 0] = 1
        ornt[2, 0] = 2
    ornt[:2, 0] = ornt[:2, 0][::-1]
    ornt[:, 1] *= -1
    if image.as_reoriented(ornt).header["pixdim"][0] < 0:
        ornt[2, 1] *= -1
    if "".join(nib.aff2axcodes(image.as_reoriented(ornt).affine)) == "PLI":
        ornt[[0, 1], :] = ornt[[1, 0], :]
        ornt[0, 1] *= -1
    return np.asarray(image.as_reoriented(ornt).dataobj)


def test_lps_and_pir_files_get_the_studys_arrays_and_a_mirrored_file_does_not(posed_hearts):
    root = posed_hearts[0]
    dataset = MnmsDataset(root)
    for layout in POSED_LAYOUTS:
        study = _study_mm1_orientation(root / f"H{layout}" / f"H{layout}_sa_gt.nii.gz")
        study_ed = study[..., 0].transpose(2, 0, 1)  # (H, W, Z) → (Z, H, W), as qcardia
        ours = dataset.load(f"H{layout}").labels[0]
        if layout == "RPS":
            # mm1.py turns a mirrored LPS file by 180 degrees; cmrbench's rule does not care
            np.testing.assert_array_equal(study_ed[:, ::-1, ::-1], ours)
        else:
            np.testing.assert_array_equal(study_ed, ours)


# --- DICOM stored turned -----------------------------------------------------------------


@needs_sunnybrook
def test_a_sunnybrook_study_stored_turned_by_90_degrees_reaches_the_network_the_same(tmp_path):
    contour = "SC-HF-I-2"
    shutil.copytree(SUNNYBROOK / "images" / "SCD0000201", tmp_path / "images" / "SCD0000201")
    shutil.copytree(SUNNYBROOK / "contours" / contour, tmp_path / "contours" / contour)
    (tmp_path / "link.csv").write_text(f"patient_id,original_id\nSCD0000201,{contour}\n")
    before = network_view("sunnybrook", tmp_path, "SCD0000201", image_size=96, spacing_mm=2.5)
    rotate_sunnybrook_study(tmp_path, "SCD0000201")
    after = network_view("sunnybrook", tmp_path, "SCD0000201", image_size=96, spacing_mm=2.5)
    import pydicom

    turned = pydicom.dcmread(next((tmp_path / "images" / "SCD0000201").glob("*.dcm")))
    original = pydicom.dcmread(next((SUNNYBROOK / "images" / "SCD0000201").glob("*.dcm")))
    assert not np.allclose(turned.ImageOrientationPatient, original.ImageOrientationPatient)
    for phase in ("ED", "ES"):
        np.testing.assert_array_equal(after[phase][0], before[phase][0])
        np.testing.assert_array_equal(after[phase][1], before[phase][1])
        assert (after[phase][1] == LV).sum() > 1000


@needs_sunnybrook
def test_the_four_real_studies_share_one_layout_though_one_is_stored_turned():
    dataset = create_dataset("sunnybrook", SUNNYBROOK)
    layouts = {s: dataset.load(s).meta["layout"] for s in dataset.subject_ids()}
    # SCD0000101's images are stored with rows and columns swapped against the others'
    assert layouts["SCD0000101"]["stored"][:2] == "RI"
    assert {layout["stored"][:2] for s, layout in layouts.items() if s != "SCD0000101"} == {"IL"}
    assert {layout["network"][:2] for layout in layouts.values()} == {"IL"}


# --- zero borders and the z-score -------------------------------------------------------------


def test_zero_borders_are_cropped_before_the_z_score(tmp_path):
    heart = canonical_subject(7, ed=1, es=3)
    padded = CanonicalSubject(
        cine=np.pad(heart.cine, ((0, 0), (0, 0), (2, 3), (1, 4))),
        labels={f: np.pad(lab, ((0, 0), (2, 3), (1, 4))) for f, lab in heart.labels.items()},
        ed=heart.ed,
        es=heart.es,
    )
    write_mnms_subject(tmp_path / "Z1", padded, oblique_affine(True, (10.0, 1.25, 1.25)))
    (tmp_path / "info.csv").write_text(
        MNMS_CSV_HEADER + "\n" + mnms_csv_row(0, "Z1", "Siemens", "A", 1, 1, 3, "NOR") + "\n"
    )
    subject = MnmsDataset(tmp_path).load("Z1")
    np.testing.assert_array_equal(subject.cine, heart.cine)  # the borders are gone
    assert subject.meta["layout"]["crop_rows"] == [2, 14]
    assert subject.meta["layout"]["crop_cols"] == [1, 17]
    # the z-score uses the cropped 4D stack: mean and std by hand, over 5 x 4 x 12 x 16 voxels
    values = heart.cine.astype(np.float64)
    mean, std = values.sum() / values.size, np.sqrt(((values - values.mean()) ** 2).mean())
    # at the native pixel size, on a 16 px grid: rows 2..13 of the grid are the image's 12 rows
    slices = preprocess_frames(subject, [1], Geometry(16, 1.25)).numpy()[0]
    np.testing.assert_allclose(slices[:, 2:14], (heart.cine[1] - mean) / std, atol=1e-4)


def test_a_labelled_pixel_is_never_cropped():
    cine = np.zeros((1, 1, 6, 6), dtype=np.float32)
    cine[0, 0, 2:4, 2:4] = 1.0
    label = np.zeros((1, 6, 6), dtype=np.uint8)
    label[0, 5, 0] = LV
    assert zero_border_crop(cine, {0: label}) == (slice(2, 6), slice(0, 4))


# --- exact scores through the whole path -------------------------------------------------


def test_a_perfect_prediction_scores_dice_1_and_exact_volumes_from_a_turned_file(posed_hearts):
    root, heart, spacing = posed_hearts
    subject = MnmsDataset(root).load("HPIR")
    _, dy, dx = subject.spacing
    # the native grid itself (square pixels), with an even margin: sampling is exact
    size = max(subject.shape[-2:]) + 2 + max(subject.shape[-2:]) % 2
    geometry = Geometry(size, dy)
    assert dy == pytest.approx(dx, rel=1e-6)
    for frame in (subject.ed, subject.es):
        labels = torch.from_numpy(subject.labels[frame]).long()
        padded = torch.nn.functional.pad(labels, _centred_padding(labels.shape[-2:], size))
        logits = torch.nn.functional.one_hot(padded, NUM_CLASSES).permute(0, 3, 1, 2).float()
        predicted = logits_to_original(logits * 10.0, subject, geometry).argmax(dim=1).numpy()
        reference = nib.load(root / "HPIR" / "HPIR_sa_gt.nii.gz").get_fdata()[..., frame]
        metrics = subject_metrics(
            predicted.astype(np.uint8),
            subject.labels[frame],
            subject.spacing,
            subject.annotated[frame],
        )
        for c in (LV, MYO, RV):
            assert metrics[c].dsc == 1.0 and metrics[c].hd95_mm == 0.0
            # the reference volume counted in the stored file, with its own voxel size
            stored_ml = (reference == c).sum() * np.prod(spacing) / 1000
            assert metrics[c].vol_ref_ml == pytest.approx(stored_ml, rel=1e-6)
            assert metrics[c].vol_pred_ml == pytest.approx(stored_ml, rel=1e-6)


def _centred_padding(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """``F.pad`` widths (left, right, top, bottom) that centre ``shape`` in ``size``²."""
    (height, width) = shape
    return (
        (size - width) // 2,
        (size - width + 1) // 2,
        (size - height) // 2,
        (size - height + 1) // 2,
    )
