"""The nnunet adapter on nnU-Net v2 raw folders written here with nibabel (labels numbered as
nnU-Net's ACDC conversion does: 1 RV, 2 MLV, 3 LVC), compared with the canonical arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmrbench.datasets.base import DatasetError, create_dataset
from cmrbench.datasets.check import check_dataset, format_report
from cmrbench.datasets.nnunet import NnunetDataset
from cmrbench.datasets.subject import LV, MYO, RV
from support.fixtures_nifti import (
    NNUNET_ACDC_LABELS,
    SPACING_ZYX,
    CanonicalSubject,
    canonical_subject,
    diagonal_affine,
    oblique_affine,
    write_nnunet_json,
    write_nnunet_subject,
)

ACDC_LABELS = NNUNET_ACDC_LABELS
# subject → (canonical subject, affine, folder, labelled); frames are written as frameNN with
# NN = the 1-based cine frame, so ED (the lower number) and ES must come out right.
SUBJECTS = {
    "patient001": (canonical_subject(1, ed=1, es=3), oblique_affine(False), "Tr", True),
    "patient002": (canonical_subject(2, ed=0, es=2), oblique_affine(True), "Tr", True),
    "patient101": (canonical_subject(3, ed=0, es=4), diagonal_affine(), "Ts", True),
    "patient102": (canonical_subject(4, ed=1, es=2), oblique_affine(True), "Ts", False),
}


def write_nnunet(root: Path, subjects: dict, labels: dict[str, int], naming: str = "frame") -> Path:
    """An nnU-Net raw folder holding each subject's ED and ES frames as two cases."""
    for subject_id, (subject, affine, folder, labelled) in subjects.items():
        write_nnunet_subject(root, folder, subject_id, subject, affine, labelled, naming)
    write_nnunet_json(root, labels)
    return root


@pytest.fixture(scope="module")
def nnunet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nnunet(tmp_path_factory.mktemp("Dataset027_ACDC"), SUBJECTS, ACDC_LABELS)


def in_network_axes(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A canonical array as the network sees it: unchanged for an oblique affine, whose axes are
    already the network's; for a diagonal RAS one (columns right, rows anterior) the in-plane
    axes swapped and both reversed (columns posterior, rows left), as every adapter lays out."""
    if np.abs(affine[:3, :3] - np.diag(np.diag(affine[:3, :3]))).max() > 0:
        return array
    return array.swapaxes(-1, -2)[..., ::-1, ::-1]


def assert_is(loaded, expected: CanonicalSubject, affine: np.ndarray) -> None:
    """The loaded subject holds the ED and ES frames of ``expected`` in canonical labels, in the
    network's layout."""
    assert (loaded.ed, loaded.es) == (0, 1)
    for index, frame in ((0, expected.ed), (1, expected.es)):
        np.testing.assert_array_equal(
            loaded.cine[index], in_network_axes(expected.cine[frame], affine)
        )
        np.testing.assert_array_equal(
            loaded.labels[index], in_network_axes(expected.labels[frame], affine)
        )


def test_nnunet_cases_load_with_canonical_labels_ed_es_and_spacing(nnunet_root: Path) -> None:
    dataset = create_dataset("nnunet", nnunet_root)
    assert isinstance(dataset, NnunetDataset)
    assert dataset.subject_ids() == ["patient001", "patient002", "patient101", "patient102"]
    dz, dy, dx = SPACING_ZYX
    for subject_id in ("patient001", "patient002", "patient101"):
        loaded = dataset.load(subject_id)
        subject, affine, _, _ = SUBJECTS[subject_id]
        assert_is(loaded, subject, affine)
        # patient101's diagonal affine has its in-plane axes swapped by the layout
        assert loaded.spacing == pytest.approx(
            (dz, dx, dy) if subject_id == "patient101" else SPACING_ZYX
        )
    # On disk the base slice's LV box is 3 (LVC) and the RV box 1; loaded, LV is 1 and RV 3.
    loaded = dataset.load("patient002")
    assert set(np.unique(loaded.labels[0][0, 2:5, 2:10])) == {LV}
    assert set(np.unique(loaded.labels[0][0, 6:8, 3:9])) == {MYO}
    assert set(np.unique(loaded.labels[0][0, 9:11, 10:14])) == {RV}
    assert dataset.label_map == {0: 0, 1: RV, 2: MYO, 3: LV}


def test_nnunet_splits_test_from_labelled_imagests_and_pools_unlabelled_only_when_asked(
    nnunet_root: Path,
) -> None:
    dataset = create_dataset("nnunet", nnunet_root)
    assert dataset.default_split() == {
        "train": ["patient001", "patient002"],
        "val": [],
        "test": ["patient101"],
    }
    assert dataset.pretraining_pool() == ["patient001", "patient002"]
    pooled = create_dataset("nnunet", nnunet_root, unlabelled="pool")
    assert pooled.pretraining_pool() == ["patient001", "patient002", "patient102"]
    unlabelled = pooled.load("patient102")
    assert unlabelled.labels == {} and unlabelled.cine.shape[0] == 2


def test_nnunet_data_check_explains_the_label_mapping_grouping_and_counts(
    nnunet_root: Path,
) -> None:
    report = check_dataset(create_dataset("nnunet", nnunet_root))
    text = format_report(report)
    assert report.ok, text
    assert "labels: RV=1 → RV, MLV=2 → MYO, LVC=3 → LV" in text
    assert "imagesTr: 4 cases → 2 subjects (2 labelled, 0 unlabelled)" in text
    assert "imagesTs: 4 cases → 2 subjects (1 labelled, 1 unlabelled)" in text
    assert "the lower frame number is ED, the higher ES" in text
    assert "unlabelled subjects: not used (option unlabelled=ignore)" in text


def test_nnunet_maps_unknown_label_names_only_explicitly_and_marks_absent_classes_na(
    tmp_path: Path,
) -> None:
    # an LV-only dataset: LV stored 3 as "cavity", MYO stored 2 as "muscle", no RV label
    labels = {"background": 0, "muscle": 2, "cavity": 3}
    root = tmp_path / "Dataset500_LV"
    expected = {}
    for subject_id in ("patient001", "patient002"):
        subject, affine, _, _ = SUBJECTS[subject_id]
        without_rv = {
            f: np.where(label == RV, 0, label).astype(np.uint8)
            for f, label in subject.labels.items()
        }
        expected[subject_id] = CanonicalSubject(subject.cine, without_rv, subject.ed, subject.es)
        write_nnunet_subject(root, "Tr", subject_id, expected[subject_id], affine)
    write_nnunet_json(root, labels)
    with pytest.raises(DatasetError, match=r"dataset\.json.*'muscle', 'cavity'.*label_map"):
        create_dataset("nnunet", root).load("patient001")
    dataset = create_dataset("nnunet", root, label_map={"cavity": "LV", "muscle": "MYO"})
    loaded = dataset.load("patient002")
    assert_is(loaded, expected["patient002"], SUBJECTS["patient002"][1])
    assert not loaded.annotated[0][RV].any() and loaded.annotated[0][LV].all()
    assert "labels: muscle=2 → MYO, cavity=3 → LV; not annotated (n/a): RV" in "\n".join(
        dataset.inferred()
    )


def test_nnunet_case_pattern_with_a_phase_group(tmp_path: Path) -> None:
    subjects = {"patient001": SUBJECTS["patient001"]}
    root = write_nnunet(tmp_path / "Dataset501", subjects, ACDC_LABELS, naming="phase")
    with pytest.raises(DatasetError, match=r"patient001_ED_0000\.nii\.gz.*does not match"):
        create_dataset("nnunet", root).subject_ids()
    dataset = create_dataset("nnunet", root, case_pattern=r"(?P<subject>.+)_(?P<phase>ED|ES)")
    assert_is(dataset.load("patient001"), *SUBJECTS["patient001"][:2])


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (
            json.dumps({"channel_names": {"0": "cine"}, "labels": ACDC_LABELS, "numTraining": 4}),
            "missing file_ending",
        ),
        (
            json.dumps(
                {
                    "channel_names": {"0": "cine"},
                    "labels": ACDC_LABELS,
                    "numTraining": 3,
                    "file_ending": ".nii.gz",
                }
            ),
            "numTraining is 3 but .* holds 4 cases",
        ),
        (
            json.dumps(
                {
                    "channel_names": {"0": "cine"},
                    "numTraining": 4,
                    "file_ending": ".nii.gz",
                    "labels": {"background": 0, "LV": [1, 2]},
                }
            ),
            "region-based labels",
        ),
        (
            json.dumps(
                {
                    "channel_names": {"0": "cine"},
                    "labels": ACDC_LABELS,
                    "numTraining": 4,
                    "file_ending": ".png",
                }
            ),
            "file_ending is '.png'",
        ),
    ],
)
def test_a_malformed_dataset_json_is_an_error_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    subjects = {k: v for k, v in SUBJECTS.items() if k in ("patient001", "patient002")}
    root = write_nnunet(tmp_path / "Dataset502", subjects, ACDC_LABELS)
    (root / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match=message) as error:
        create_dataset("nnunet", root).load("patient001")
    assert str(root / "dataset.json") in str(error.value)


def test_a_subject_with_one_labelled_frame_names_its_cases(tmp_path: Path) -> None:
    subjects = {"patient001": SUBJECTS["patient001"]}
    root = write_nnunet(tmp_path / "Dataset503", subjects, ACDC_LABELS)
    (root / "labelsTr" / "patient001_frame04.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"labelsTr/patient001_frame04\.nii\.gz: missing"):
        create_dataset("nnunet", root).subject_ids()


def test_nnunet_subject_info_gives_vendor_centre_and_pathology(nnunet_root: Path) -> None:
    (nnunet_root / "info.csv").write_text(
        "subject,vendor,centre,pathology\npatient001,B,Philips site,DCM\npatient101,C,,NOR\n"
    )
    dataset = create_dataset("nnunet", nnunet_root, subject_info="info.csv")
    assert dataset.load("patient001").meta["vendor"] == "B"
    assert {
        k: dataset.subject_meta("patient101")[k] for k in ("vendor", "centre", "pathology")
    } == {"vendor": "C", "centre": "", "pathology": "NOR"}
    assert dataset.subject_meta("patient002")["vendor"] == ""  # not in the CSV
    (nnunet_root / "bad.csv").write_text("id,vendor\npatient001,A\n")
    with pytest.raises(DatasetError, match=r"bad\.csv: no 'subject' column"):
        create_dataset("nnunet", nnunet_root, subject_info="bad.csv").subject_meta("patient001")
