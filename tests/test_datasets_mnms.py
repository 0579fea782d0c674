"""M&Ms, M&Ms-2 and the combined mnms+mnms2 adapters on tiny fixtures in their layouts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrbench.datasets.base import DatasetError, create_dataset
from cmrbench.datasets.mnms import (
    MNMS_CSV_FRAME_BASE,
    MNMS_CSV_NAME,
    MNMS_LABEL_MAP,
    Mnms2Dataset,
    MnmsCombinedDataset,
    MnmsDataset,
    vendor_letter,
)
from cmrbench.datasets.nifti import best_matching_frame, read_nifti
from cmrbench.datasets.paper_splits import DEFAULT_SPLITS_DIR
from cmrbench.datasets.subject import LV, MYO, RV
from support.fixtures_nifti import (
    HEIGHT,
    MNMS2_CSV_HEADER,
    MNMS_CSV_HEADER,
    N_FRAMES,
    N_SLICES,
    SPACING_ZYX,
    WIDTH,
    canonical_subject,
    mnms_csv_row,
    oblique_affine,
    write_mnms2_subject,
    write_mnms_subject,
)

# code → (subject, folder, vendor name, vendor letter, centre, pathology, affine)
MNMS = {
    "A1B2C3": (
        canonical_subject(11, ed=1, es=3),
        "Training/Labeled",
        "Siemens",
        "A",
        1,
        "HCM",
        oblique_affine(False),
    ),
    "D4E5F6": (
        canonical_subject(12, ed=4, es=2),
        "Validation",
        "Philips",
        "B",
        2,
        "NOR",
        oblique_affine(True),
    ),
    "G7H8I9": (
        canonical_subject(13, ed=2, es=4),
        "Testing",
        "Canon",
        "D",
        5,
        "DCM",
        oblique_affine(False),
    ),
}
# number → (subject, VENDOR, SCANNER, FIELD, DISEASE, noise added to _SA_ED)
MNMS2 = {
    "101": (canonical_subject(21, ed=3, es=1), "SIEMENS", "Avanto", 1.5, "NOR", 0.0),
    "102": (
        canonical_subject(22, ed=2, es=4),
        "Philips Medical Systems",
        "Achieva",
        3.0,
        "LV",
        5.0,
    ),
    "103": (canonical_subject(23, ed=1, es=3), "GE MEDICAL SYSTEMS", "Signa", 1.5, "CIA", 0.0),
}


def write_mnms(root: Path, csv_name: str = MNMS_CSV_NAME) -> Path:
    rows = [MNMS_CSV_HEADER]
    for index, (code, (subject, folder, name, letter, centre, pathology, affine)) in enumerate(
        MNMS.items()
    ):
        write_mnms_subject(root / folder / code, subject, affine)
        rows.append(
            mnms_csv_row(index, code, name, letter, centre, subject.ed, subject.es, pathology)
        )
    # An unlabelled study (cine only) as in the official Training/Unlabeled folder.
    unlabelled = canonical_subject(14, ed=1, es=3)
    write_mnms_subject(root / "Training/Unlabeled/Z9Y8X7", unlabelled, oblique_affine(True))
    rows.append(mnms_csv_row(9, "Z9Y8X7", "GE", "C", 4, 1, 3, "Other"))
    (root / csv_name).write_text("\n".join(rows) + "\n")
    return root


def write_mnms2(root: Path) -> Path:
    rows = [MNMS2_CSV_HEADER]
    for number, (subject, vendor, scanner, field, disease, noise) in MNMS2.items():
        write_mnms2_subject(
            root / "dataset" / number, subject, oblique_affine(True), ed_noise=noise
        )
        rows.append(f"{int(number)},{disease},M,50,{vendor},{scanner},{field}")
    (root / "dataset_information.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def mnms_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnms(tmp_path_factory.mktemp("mnms"))


@pytest.fixture(scope="module")
def mnms2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnms2(tmp_path_factory.mktemp("mnms2"))


@pytest.fixture(scope="module")
def combined_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("combined")
    write_mnms(root / "MnM")
    write_mnms2(root / "MnM2")
    return root


# --- M&Ms -------------------------------------------------------------------------------


def test_mnms_lists_labelled_subjects_in_all_official_folders_but_not_unlabelled(
    mnms_root: Path,
) -> None:
    assert create_dataset("mnms", mnms_root).subject_ids() == ["A1B2C3", "D4E5F6", "G7H8I9"]


def test_mnms_labels_stay_canonical_lv_myo_rv(mnms_root: Path) -> None:
    assert MNMS_LABEL_MAP == {0: 0, 1: LV, 2: MYO, 3: RV}
    subject = MnmsDataset(mnms_root).load("D4E5F6")
    expected = MNMS["D4E5F6"][0]
    for frame, label in expected.labels.items():
        np.testing.assert_array_equal(subject.labels[frame], label)
    assert set(np.unique(subject.labels[4][0, 2:5, 2:10])) == {LV}
    assert set(np.unique(subject.labels[4][0, 9:11, 10:14])) == {RV}


def test_mnms_csv_ed_es_are_zero_based_frame_indices(mnms_root: Path) -> None:
    assert MNMS_CSV_FRAME_BASE == 0
    csv = (mnms_root / MNMS_CSV_NAME).read_text()
    assert "A1B2C3,Siemens,A,1,1,3," in csv
    subject = MnmsDataset(mnms_root).load("A1B2C3")
    assert (subject.ed, subject.es) == (1, 3)
    assert subject.meta["ed_es_source"] == "csv"
    assert sorted(subject.labels) == [1, 3]


def test_mnms_flips_apex_first_stacks_and_reads_spacing_from_header(mnms_root: Path) -> None:
    dataset = MnmsDataset(mnms_root)
    for code in ("A1B2C3", "D4E5F6"):
        subject = dataset.load(code)
        assert subject.shape == (N_FRAMES, N_SLICES, HEIGHT, WIDTH)
        np.testing.assert_array_equal(subject.cine, MNMS[code][0].cine)
        assert subject.spacing == pytest.approx(SPACING_ZYX)


def test_mnms_meta_comes_from_the_info_csv(mnms_root: Path) -> None:
    meta = MnmsDataset(mnms_root).subject_meta("G7H8I9")
    assert (meta["vendor"], meta["manufacturer"], meta["centre"], meta["pathology"]) == (
        "D",
        "Canon",
        "5",
        "DCM",
    )
    assert meta["official_split"] == "test"


def test_mnms_default_split_follows_the_official_folders(mnms_root: Path) -> None:
    assert MnmsDataset(mnms_root).default_split() == {
        "train": ["A1B2C3"],
        "val": ["D4E5F6"],
        "test": ["G7H8I9"],
    }


def test_mnms_finds_an_info_csv_with_another_name(tmp_path: Path) -> None:
    root = write_mnms(tmp_path, csv_name="my_info.csv")
    assert MnmsDataset(root).csv_path == root / "my_info.csv"
    assert MnmsDataset(root).load("G7H8I9").es == 4


@pytest.mark.parametrize(
    "csv_ed, csv_es",
    [
        (2, 4),  # off by one (as if 1-based): frames 2 and 4 carry no labels
        (3, 1),  # the two labelled frames, swapped
    ],
)
def test_mnms_ed_is_the_labelled_frame_with_the_larger_volume_whatever_the_csv_says(
    tmp_path: Path, csv_ed: int, csv_es: int
) -> None:
    # qcardia-data's mm1.py takes the labelled frame with more labelled voxels as ED
    # (get_ed_es_idxs) and rewrites the CSV where it differs
    subject = canonical_subject(31, ed=1, es=3)
    write_mnms_subject(tmp_path / "Q1W2E3", subject, oblique_affine(True))
    (tmp_path / "info.csv").write_text(
        MNMS_CSV_HEADER
        + "\n"
        + mnms_csv_row(0, "Q1W2E3", "Siemens", "A", 1, csv_ed, csv_es, "NOR")
        + "\n"
    )
    loaded = MnmsDataset(tmp_path).load("Q1W2E3")
    # the fixture's ES LV box is one column narrower per slice: frame 1 holds more voxels
    labelled = {f: int((lab > 0).sum()) for f, lab in subject.labels.items()}
    assert labelled[1] > labelled[3]
    assert (loaded.ed, loaded.es) == (1, 3) and loaded.meta["ed_es_source"] == "labels"
    assert f"ED {csv_ed} / ES {csv_es}" in loaded.meta["notes"][0]
    assert "ED 1, ES 3" in loaded.meta["notes"][0]


def test_mnms_labelled_frames_of_equal_volume_keep_the_csvs_ed_and_refuse_other_frames(
    tmp_path: Path,
) -> None:
    subject = canonical_subject(33, ed=1, es=3)
    subject.labels[3] = subject.labels[1].copy()  # the same volume in both frames
    write_mnms_subject(tmp_path / "E1Q2V3", subject, oblique_affine(True))
    csv = tmp_path / "info.csv"
    csv.write_text(
        MNMS_CSV_HEADER + "\n" + mnms_csv_row(0, "E1Q2V3", "Siemens", "A", 1, 3, 1, "NOR") + "\n"
    )
    loaded = MnmsDataset(tmp_path).load("E1Q2V3")
    assert (loaded.ed, loaded.es) == (3, 1) and loaded.meta["ed_es_source"] == "csv"
    csv.write_text(
        MNMS_CSV_HEADER + "\n" + mnms_csv_row(0, "E1Q2V3", "Siemens", "A", 1, 2, 4, "NOR") + "\n"
    )
    with pytest.raises(
        DatasetError,
        match=r"labelled frames \[1, 3\] hold equal volumes and "
        r"the CSV .* names frames 2 and 4",
    ):
        MnmsDataset(tmp_path).load("E1Q2V3")


def test_vendor_letters_follow_mnms_a_siemens_b_philips_c_ge_d_canon() -> None:
    assert vendor_letter("SIEMENS") == ("A", "Siemens")
    assert vendor_letter("Philips Medical Systems") == ("B", "Philips")
    assert vendor_letter("GE MEDICAL SYSTEMS") == ("C", "GE")
    assert vendor_letter("General Electric") == ("C", "GE")
    assert vendor_letter("Canon Medical Systems") == ("D", "Canon")
    assert vendor_letter("Toshiba") == ("D", "Canon")
    assert vendor_letter("Hitachi") == ("", "Hitachi")
    assert vendor_letter("Siemens Healthineers") == ("A", "Siemens")


# --- M&Ms-2 ------------------------------------------------------------------------------


def test_mnms2_locates_ed_and_es_frames_in_the_cine(mnms2_root: Path) -> None:
    dataset = create_dataset("mnms2", mnms2_root)
    assert dataset.subject_ids() == ["101", "102", "103"]
    for number, (expected, *_rest) in MNMS2.items():
        subject = dataset.load(number)
        assert (subject.ed, subject.es) == (expected.ed, expected.es)
        np.testing.assert_array_equal(subject.cine, expected.cine)
        for frame, label in expected.labels.items():
            np.testing.assert_array_equal(subject.labels[frame], label)
        assert subject.spacing == pytest.approx(SPACING_ZYX)


def test_mnms2_noisy_ed_volume_is_matched_by_correlation(mnms2_root: Path) -> None:
    folder = mnms2_root / "dataset" / "102"
    cine = read_nifti(folder / "102_SA_CINE.nii.gz")
    ed = read_nifti(folder / "102_SA_ED.nii.gz")
    frame, correlation = best_matching_frame(cine, ed)
    assert frame == 2 and 0.99 < correlation < 1.0
    exact = read_nifti(folder / "102_SA_ES.nii.gz")
    assert best_matching_frame(cine, exact) == (4, 1.0)


def test_mnms2_meta_maps_manufacturer_names_to_vendor_letters(mnms2_root: Path) -> None:
    dataset = Mnms2Dataset(mnms2_root)
    metas = {n: dataset.subject_meta(n) for n in MNMS2}
    assert [(m["vendor"], m["manufacturer"]) for m in metas.values()] == [
        ("A", "Siemens"),
        ("B", "Philips"),
        ("C", "GE"),
    ]
    assert metas["102"]["field_strength"] == 3.0 and metas["102"]["pathology"] == "LV"
    assert metas["101"]["scanner"] == "Avanto"


def test_mnms2_default_split_deals_each_vendor_in_fives(mnms2_root: Path) -> None:
    # One subject per vendor: each is position 0 of its vendor group, so all train.
    assert Mnms2Dataset(mnms2_root).default_split() == {
        "train": ["101", "102", "103"],
        "val": [],
        "test": [],
    }


# --- mnms+mnms2 --------------------------------------------------------------------------


def test_combined_ids_are_prefixed_and_load_from_the_right_dataset(combined_root: Path) -> None:
    dataset = create_dataset("mnms+mnms2", combined_root)
    assert dataset.subject_ids() == [
        "mm1:A1B2C3",
        "mm1:D4E5F6",
        "mm1:G7H8I9",
        "mm2:101",
        "mm2:102",
        "mm2:103",
    ]
    subject = dataset.load("mm2:102")
    assert subject.id == "mm2:102" and subject.ed == 2
    assert subject.meta["dataset"] == "mnms+mnms2" and subject.meta["source_dataset"] == "mnms2"
    assert dataset.subject_meta("mm1:A1B2C3")["vendor"] == "A"


def test_combined_accepts_separate_roots_as_options(mnms_root: Path, mnms2_root: Path) -> None:
    dataset = MnmsCombinedDataset(mnms_root=mnms_root, mnms2_root=mnms2_root)
    assert len(dataset.subject_ids()) == 6
    with pytest.raises(DatasetError, match="mnms_root and mnms2_root"):
        MnmsCombinedDataset(mnms_root=mnms_root)


def test_combined_default_split_is_the_union_of_both_defaults(combined_root: Path) -> None:
    assert MnmsCombinedDataset(combined_root).default_split() == {
        "train": ["mm1:A1B2C3", "mm2:101", "mm2:102", "mm2:103"],
        "val": ["mm1:D4E5F6"],
        "test": ["mm1:G7H8I9"],
    }


def _write_split_yaml(folder: Path, name: str, train: dict, valid: dict, test: dict) -> None:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump({"train": train, "valid": valid, "test": test}))


def test_combined_paper_split_reads_the_split_files_with_prefixed_ids(
    combined_root: Path, tmp_path: Path
) -> None:
    _write_split_yaml(
        tmp_path,
        "default-cine-split.yaml",
        {"mm1": ["A1B2C3"], "mm2": ["101"]},
        {"mm1": ["D4E5F6"], "mm2": ["102"]},
        {"mm1": ["G7H8I9"], "mm2": ["103"]},
    )
    _write_split_yaml(
        tmp_path,
        "default-cine-split-nr10-seed0.yaml",
        {"mm2": ["101"]},
        {"mm1": ["D4E5F6"], "mm2": ["102"]},
        {"mm1": ["G7H8I9"], "mm2": ["103"]},
    )
    paper = MnmsCombinedDataset(combined_root, split="paper", splits_dir=tmp_path)
    assert paper.default_split() == {
        "train": ["mm1:A1B2C3", "mm2:101"],
        "val": ["mm1:D4E5F6", "mm2:102"],
        "test": ["mm1:G7H8I9", "mm2:103"],
    }


def test_combined_paper_variant_split_is_refused_pointing_at_the_budget_and_setting_axes(
    combined_root: Path,
) -> None:
    # As a split, nr10-seed0's 10 training subjects would also be the whole pretraining pool.
    with pytest.raises(DatasetError, match="use split=paper") as error:
        MnmsCombinedDataset(combined_root, split="paper:nr10-seed0")
    assert "budgets 10, 15, 25, 50 with seeds 0-2" in str(error.value)
    assert "vendors=A+B" in str(error.value) and "pretraining pool" in str(error.value)
    with pytest.raises(DatasetError, match="split 'study' is not known"):
        create_dataset("mnms+mnms2", combined_root, split="study")


@pytest.mark.skipif(not DEFAULT_SPLITS_DIR.is_dir(), reason="study split files not found")
def test_combined_paper_split_names_subjects_missing_from_the_data(combined_root: Path) -> None:
    # The real study split lists 510 subjects; the fixture holds 6.
    with pytest.raises(DatasetError, match=r"split subjects are not in the dataset"):
        MnmsCombinedDataset(combined_root, split="paper").default_split()


def test_combined_paper_split_without_split_files_says_where_it_looked(
    combined_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match="splits_dir") as error:
        MnmsCombinedDataset(
            combined_root, split="paper", splits_dir=tmp_path / "nowhere"
        ).default_split()
    assert str(tmp_path / "nowhere") in str(error.value)


def test_mnms_stored_labels_on_disk_are_the_canonical_values(mnms_root: Path) -> None:
    gt = np.asarray(nib.load(mnms_root / "Validation/D4E5F6/D4E5F6_sa_gt.nii.gz").dataobj)
    # D4E5F6 is stored base-first; its ED (frame 4) LV box at the base is stored as 1.
    assert set(np.unique(gt[2:10, 2:5, 0, 4])) == {1}


def test_combined_paper_mode_serves_the_studys_subsets_and_vendor_settings(
    combined_root: Path, tmp_path: Path
) -> None:
    test_part = {"mm1": ["G7H8I9"], "mm2": ["103"]}
    _write_split_yaml(
        tmp_path,
        "default-cine-split.yaml",
        {"mm1": ["A1B2C3"], "mm2": ["101"]},
        {"mm1": ["D4E5F6"], "mm2": ["102"]},
        test_part,
    )
    _write_split_yaml(
        tmp_path,
        "default-cine-split-nr10-seed1.yaml",
        {"mm2": ["101"]},
        {"mm1": ["D4E5F6"], "mm2": ["102"]},
        test_part,
    )
    _write_split_yaml(
        tmp_path,
        "default-cine-split-Vendor-A_B.yaml",
        {"mm1": ["A1B2C3"]},
        {"mm1": ["D4E5F6"]},
        test_part,
    )
    paper = MnmsCombinedDataset(combined_root, split="paper", splits_dir=tmp_path)
    assert paper.fixed_subset(10, 1, "default") == ["mm2:101"]
    assert paper.fixed_subset(10, 1, "phase=ED") == ["mm2:101"]
    assert paper.fixed_subset(20, 1, "default") is None
    assert paper.fixed_subset(10, 1, "vendors=A+B") is None
    assert paper.setting_split("vendors=B+A") == {
        "train": ["mm1:A1B2C3"],
        "val": ["mm1:D4E5F6"],
        "test": ["mm1:G7H8I9", "mm2:103"],
    }
    assert paper.setting_split("vendors=A+C") is None
    plain = MnmsCombinedDataset(combined_root)
    assert plain.fixed_subset(10, 1, "default") is None
    assert plain.setting_split("vendors=A+B") is None
