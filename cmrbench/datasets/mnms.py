"""M&Ms and M&Ms-2 adapters, and the reference study's combined ``mnms+mnms2`` set.

M&Ms (Campello et al., IEEE TMI 2021; https://www.ub.edu/mnms/): ``<ID>/<ID>_sa.nii.gz``
(cine ``(X, Y, Z, T)``) and ``<ID>/<ID>_sa_gt.nii.gz`` (labels on the cine's grid, non-zero at
ED and ES only), stored 1 = LV, 2 = MYO, 3 = RV (already canonical). Subject folders are
found anywhere under ``root`` (``Training/Labeled/``, ``Validation/``, ``Testing/``,
``dataset/`` or directly); the 25 unlabelled vendor-C studies (``Training/Unlabeled/``) are
not listed. An info CSV (``211230_M&Ms_Dataset_information_diagnosis_opendataset.csv``, or any
``*.csv`` in ``root`` or one folder below with the columns of `MNMS_CSV_COLUMNS`) gives vendor
letter, manufacturer, centre, pathology and the ED and ES frames, which are **0-based** frame
indices (`MNMS_CSV_FRAME_BASE`). Source for 0-based: the reference study's loader
(q-cardIA/qcardia-data v1.0.0, ``setup/reformat/mm1.py``) compares the CSV's ED/ES directly
with the 0-based indices of the labelled frames of ``_sa_gt`` and only rewrites subjects where
they differ; other public M&Ms loaders index ``gt[..., ED]`` directly. ED and ES are taken as
the study takes them (``get_ed_es_idxs``): of the two labelled frames of ``_sa_gt``, ED is
the one with the larger labelled volume (every class), ES the other. Where the CSV names
other frames (or the same two swapped), ``meta["notes"]`` says so and ``meta["ed_es_source"]``
is ``"labels"`` (``"csv"`` where both agree). Equal volumes fall back to the CSV; a CSV value
that is no frame of the cine, or a label file without exactly two labelled frames, is an
error naming the file.

M&Ms-2 (Martín-Isla et al., IEEE JBHI 2023; https://www.ub.edu/mnms-2/): ``<NNN>/<NNN>_SA_CINE
.nii.gz``, ``<NNN>_SA_ED.nii.gz`` + ``_SA_ED_gt``, ``<NNN>_SA_ES.nii.gz`` + ``_SA_ES_gt``, labels
1 = LV, 2 = MYO, 3 = RV, and ``dataset_information.csv`` (SUBJECT_CODE, DISEASE, VENDOR = the
manufacturer's name, SCANNER, FIELD). ED and ES are the cine frames equal to (or, failing
that, best correlated with) the ``_SA_ED`` / ``_SA_ES`` volumes.

Vendor letters are M&Ms' (`vendor_letter`): A Siemens, B Philips, C General Electric, D Canon.

Default splits: M&Ms uses its official Training / Validation / Testing folders when every
subject sits in one; otherwise (and for M&Ms-2) `holdout_split` by vendor letter (per vendor,
sorted ids dealt in fives: 4th → val, 5th → test). Option ``split={...}`` overrides.

``mnms+mnms2``: ids ``"mm1:<code>"`` and ``"mm2:<NNN>"``. Roots: options ``mnms_root`` and
``mnms2_root``, or ``root`` with subfolders ``MnM/`` and ``MnM2/`` (the reference study's
``original_data`` layout). ``split="paper"`` uses the study's split (296 / 74 / 140), read
from the split files shipped with cmrbench (or option ``splits_dir``). With it the adapter also
serves the study's own labelled subsets (``fixed_subset``: budgets 10/15/25/50, seeds 0–2) and
vendor settings (``setting_split``: ``vendors=A+B`` and ``vendors=C+D``): the study's other
split files are reached through the grid's budget and setting axes, never as a split, because
a split's training subjects are also the pretraining pool (``split="paper:nr10-seed0"`` would
pretrain on 10 subjects instead of 296, so it is rejected). Without ``split`` the default is the
union of both datasets' default splits (all subjects, including M&Ms-2 subjects the study
excluded); the ``paper`` grid sets ``split: paper`` when run with ``--dataset mnms+mnms2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from cmrbench.datasets.base import (
    DATASETS,
    DatasetAdapter,
    DatasetError,
    DatasetOptions,
    SplitOptions,
)
from cmrbench.datasets.nifti import (
    NiftiVolume,
    check_same_grid,
    find_frame,
    has_files,
    read_cine,
    read_nifti,
    subject_from_nifti,
)
from cmrbench.datasets.paper_splits import (
    MM1_PREFIX,
    MM2_PREFIX,
    PAPER_BUDGETS,
    PAPER_SEEDS,
    PAPER_SPLIT,
    PAPER_VENDOR_GROUPS,
    budget_split,
    check_split_name,
    holdout_split,
    load_paper_split,
    mm2_code,
    split_option,
    validate_split,
    vendor_split,
)
from cmrbench.datasets.subject import BACKGROUND, LV, MYO, RV, Subject

MNMS_LABEL_MAP = {0: BACKGROUND, 1: LV, 2: MYO, 3: RV}
# The M&Ms info CSV gives ED and ES as 0-based cine frame indices (see module docstring).
MNMS_CSV_FRAME_BASE = 0
MNMS_CSV_NAME = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
MNMS_CSV_COLUMNS = ("External code", "VendorName", "Vendor", "Centre", "ED", "ES")
MNMS_SPLIT_FOLDERS = {"Training": "train", "Validation": "val", "Testing": "test"}
MNMS_UNLABELLED_FOLDER = "Unlabeled"
MNMS2_CSV_NAME = "dataset_information.csv"
MNMS2_CSV_COLUMNS = ("SUBJECT_CODE", "DISEASE", "VENDOR", "SCANNER", "FIELD")
COMBINED_SUBFOLDERS = {"mnms": "MnM", "mnms2": "MnM2"}
# Manufacturer name words → (M&Ms vendor letter, short manufacturer name).
_VENDORS = (
    (("siemens",), "A", "Siemens"),
    (("philips",), "B", "Philips"),
    (("ge", "general electric"), "C", "GE"),
    (("canon", "toshiba"), "D", "Canon"),
)


def vendor_letter(manufacturer: str) -> tuple[str, str]:
    """``(letter, name)`` of a manufacturer: ``"GE MEDICAL SYSTEMS"`` → ``("C", "GE")``.

    Letters are the M&Ms challenge's: A Siemens, B Philips, C General Electric, D Canon
    (Toshiba's medical business became Canon's). Unknown names give ``("", name)``.
    """
    text = " ".join(re.findall(r"[a-z]+", str(manufacturer).lower()))
    for keys, letter, name in _VENDORS:
        if any(re.search(rf"\b{key}\b", text) for key in keys):
            return letter, name
    return "", str(manufacturer).strip()


def find_info_csv(root: Path, preferred: str, columns: tuple[str, ...]) -> Path:
    """``root/preferred``, else the first ``*.csv`` in ``root`` or a subfolder with ``columns``."""
    candidates = [root / preferred, *sorted(root.glob("*.csv")), *sorted(root.glob("*/*.csv"))]
    for path in candidates:
        if path.is_file() and set(columns) <= set(_csv_header(path)):
            return path
    raise DatasetError(
        f"{root}: no info CSV found; expected {preferred} (or any *.csv in the "
        f"root or one folder below) with columns {', '.join(columns)}"
    )


def _csv_header(path: Path) -> list[str]:
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError):
        return []


def read_info_csv(path: Path, key_column: str, key: Any) -> pd.DataFrame:
    """The CSV as strings, indexed by ``key(key_column value)``; duplicate keys are an error."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DatasetError(f"{path}: cannot read the info CSV ({err})") from err
    table.columns = [str(c).strip() for c in table.columns]
    try:
        table.index = [key(v) for v in table[key_column]]
    except ValueError as err:
        raise DatasetError(
            f"{path}: column {key_column!r} holds a value that is not a subject code ({err})"
        ) from err
    duplicated = table.index[table.index.duplicated()].tolist()
    if duplicated:
        raise DatasetError(
            f"{path}: subjects {duplicated[:5]} appear more than once; expected one row per subject"
        )
    return table


def find_subject_folders(
    root: Path, image_suffix: str, skip_folder: str | None = None, what: str = ""
) -> dict[str, Path]:
    """Subject id → folder, for every ``<ID>/<ID><image_suffix>`` file under ``root``."""
    folders: dict[str, Path] = {}
    for image in sorted(root.rglob(f"*{image_suffix}")):
        subject_id = image.name[: -len(image_suffix)]
        if image.parent.name != subject_id or (skip_folder and skip_folder in image.parts):
            continue
        if subject_id in folders:
            raise DatasetError(
                f"{image.parent}: subject {subject_id} also found in "
                f"{folders[subject_id]}; expected each subject once"
            )
        folders[subject_id] = image.parent
    if not folders:
        state = "holds no subjects" if has_files(root) else "is empty"
        raise DatasetError(
            f"{what} root {root} {state}; expected subject folders <ID>/<ID>{image_suffix} under it"
        )
    return folders


def _row(table: pd.DataFrame, subject_id: str, csv_path: Path) -> pd.Series:
    if subject_id not in table.index:
        raise DatasetError(
            f"{csv_path}: no row for subject {subject_id}; expected one row per subject folder"
        )
    return cast(pd.Series, table.loc[subject_id])  # one row: read_info_csv refuses duplicates


@DATASETS.register
class MnmsDataset(DatasetAdapter):
    """M&Ms (see module docstring)."""

    name = "mnms"
    options_class = SplitOptions

    @cached_property
    def _folders(self) -> dict[str, Path]:
        return find_subject_folders(
            Path(str(self.root)), "_sa.nii.gz", MNMS_UNLABELLED_FOLDER, "M&Ms"
        )

    @cached_property
    def csv_path(self) -> Path:
        """The info CSV in use."""
        return find_info_csv(Path(str(self.root)), MNMS_CSV_NAME, MNMS_CSV_COLUMNS)

    @cached_property
    def _table(self) -> pd.DataFrame:
        return read_info_csv(self.csv_path, "External code", lambda v: str(v).strip())

    def subject_ids(self) -> list[str]:
        return sorted(self._folders)

    def _folder(self, subject_id: str) -> Path:
        if subject_id not in self._folders:
            raise DatasetError(f"{self.root}: no M&Ms subject {subject_id!r}")
        return self._folders[subject_id]

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        folder = self._folder(subject_id)
        row = _row(self._table, subject_id, self.csv_path)
        _, manufacturer = vendor_letter(row["VendorName"])
        official = [
            MNMS_SPLIT_FOLDERS[p]
            for p in folder.relative_to(str(self.root)).parts
            if p in MNMS_SPLIT_FOLDERS
        ]
        return {
            "dataset": self.name,
            "vendor": row["Vendor"].strip(),
            "manufacturer": manufacturer,
            "centre": row["Centre"].strip(),
            "pathology": row.get("Pathology", "").strip(),
            "field_strength": None,
            "official_split": official[-1] if official else "",
        }

    def load(self, subject_id: str) -> Subject:
        folder = self._folder(subject_id)
        row = _row(self._table, subject_id, self.csv_path)
        cine = read_cine(folder / f"{subject_id}_sa.nii.gz")
        gt = read_nifti(folder / f"{subject_id}_sa_gt.nii.gz", "4D label")
        if gt.data.shape != cine.data.shape:
            raise DatasetError(
                f"{gt.path}: label has shape {gt.data.shape} but cine "
                f"{cine.path} has {cine.data.shape}; expected the same "
                f"(X, Y, Z, T)"
            )
        ed, es, note = self._ed_es(subject_id, row, cine, gt)
        meta = {**self.subject_meta(subject_id), "ed_es_source": "labels" if note else "csv"}
        if note:
            meta["notes"] = [note]
        labels = {f: NiftiVolume(gt.path, gt.data[..., f], gt.affine) for f in (ed, es)}
        return subject_from_nifti(subject_id, cine, labels, MNMS_LABEL_MAP, ed, es, meta)

    def _ed_es(
        self, subject_id: str, row: pd.Series, cine: NiftiVolume, gt: NiftiVolume
    ) -> tuple[int, int, str | None]:
        """0-based ``(ed, es, note)`` as the study takes them: of the two labelled frames, ED
        has the larger labelled volume (``note`` says so when the CSV disagrees)."""
        n_frames = cine.data.shape[3]
        csv = {phase: self._csv_frame(subject_id, row, phase, cine) for phase in ("ED", "ES")}
        labelled = np.flatnonzero(gt.data.reshape(-1, n_frames).any(axis=0)).tolist()
        if len(labelled) != 2:
            raise DatasetError(
                f"{gt.path}: labelled frames {labelled}; expected exactly two "
                f"(ED and ES; the CSV {self.csv_path} says {csv['ED']} and "
                f"{csv['ES']})"
            )
        volumes = [int((gt.data[..., f] > 0).sum()) for f in labelled]
        if volumes[0] == volumes[1]:
            if set(csv.values()) != set(labelled):
                raise DatasetError(
                    f"{gt.path}: labelled frames {labelled} hold equal volumes "
                    f"and the CSV {self.csv_path} names frames {csv['ED']} and "
                    f"{csv['ES']}; expected the larger volume at ED"
                )
            return csv["ED"], csv["ES"], None
        ed, es = (
            (labelled[0], labelled[1]) if volumes[0] > volumes[1] else (labelled[1], labelled[0])
        )
        if (ed, es) == (csv["ED"], csv["ES"]):
            return ed, es, None
        return (
            ed,
            es,
            (
                f"{self.csv_path}: ED {row['ED']} / ES {row['ES']} of {subject_id}; "
                f"used the labelled frames of {gt.path} as the study does (the larger "
                f"labelled volume is ED): ED {ed}, ES {es}"
            ),
        )

    def _csv_frame(self, subject_id: str, row: pd.Series, phase: str, cine: NiftiVolume) -> int:
        """The CSV's 0-based ``phase`` frame, or `DatasetError` naming the CSV."""
        n_frames = cine.data.shape[3]
        try:
            frame = int(float(row[phase])) - MNMS_CSV_FRAME_BASE
        except ValueError:
            raise DatasetError(
                f"{self.csv_path}: {phase} of {subject_id} is "
                f"{row[phase]!r}; expected a frame index"
            ) from None
        if not 0 <= frame < n_frames:
            raise DatasetError(
                f"{self.csv_path}: {phase} {row[phase]} of {subject_id} is "
                f"out of range; expected a 0-based frame index "
                f"0..{n_frames - 1} of {cine.path} ({n_frames} frames)"
            )
        return frame

    def default_split(self) -> dict[str, list[str]]:
        override = split_option(self.options, self.subject_ids(), self.name)
        if override is not None:
            return override
        metas = {s: self.subject_meta(s) for s in self.subject_ids()}
        if all(m["official_split"] for m in metas.values()):
            official = {
                name: [s for s, m in metas.items() if m["official_split"] == name]
                for name in ("train", "val", "test")
            }
            return validate_split(official, str(self.root))
        return holdout_split(_by_vendor(metas))


@DATASETS.register
class Mnms2Dataset(DatasetAdapter):
    """M&Ms-2 (see module docstring)."""

    name = "mnms2"
    options_class = SplitOptions

    @cached_property
    def _folders(self) -> dict[str, Path]:
        return find_subject_folders(Path(str(self.root)), "_SA_CINE.nii.gz", None, "M&Ms-2")

    @cached_property
    def csv_path(self) -> Path:
        """The info CSV in use."""
        return find_info_csv(Path(str(self.root)), MNMS2_CSV_NAME, MNMS2_CSV_COLUMNS)

    @cached_property
    def _table(self) -> pd.DataFrame:
        return read_info_csv(self.csv_path, "SUBJECT_CODE", mm2_code)

    def subject_ids(self) -> list[str]:
        return sorted(self._folders)

    def _folder(self, subject_id: str) -> Path:
        if subject_id not in self._folders:
            raise DatasetError(f"{self.root}: no M&Ms-2 subject {subject_id!r}")
        return self._folders[subject_id]

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        self._folder(subject_id)
        row = _row(self._table, subject_id, self.csv_path)
        letter, manufacturer = vendor_letter(row["VENDOR"])
        try:
            field = float(row["FIELD"])
        except ValueError:
            field = None
        return {
            "dataset": self.name,
            "vendor": letter,
            "manufacturer": manufacturer,
            "scanner": row["SCANNER"].strip(),
            "centre": "",
            "pathology": row["DISEASE"].strip(),
            "field_strength": field,
        }

    def load(self, subject_id: str) -> Subject:
        folder = self._folder(subject_id)
        stem = folder / subject_id
        cine = read_cine(Path(f"{stem}_SA_CINE.nii.gz"))
        frames, labels = {}, {}
        for phase in ("ED", "ES"):
            image = read_nifti(Path(f"{stem}_SA_{phase}.nii.gz"), f"{phase} image")
            check_same_grid(cine, image)
            frames[phase] = find_frame(cine, image, phase)
            labels[frames[phase]] = read_nifti(
                Path(f"{stem}_SA_{phase}_gt.nii.gz"), f"{phase} label"
            )
        if frames["ED"] == frames["ES"]:
            raise DatasetError(
                f"{stem}_SA_ED.nii.gz and {stem}_SA_ES.nii.gz both match cine "
                f"frame {frames['ED']}; expected two different frames"
            )
        meta = {**self.subject_meta(subject_id), "ed_es_source": "frame match"}
        return subject_from_nifti(
            subject_id, cine, labels, MNMS_LABEL_MAP, frames["ED"], frames["ES"], meta
        )

    def default_split(self) -> dict[str, list[str]]:
        override = split_option(self.options, self.subject_ids(), self.name)
        if override is not None:
            return override
        return holdout_split(_by_vendor({s: self.subject_meta(s) for s in self.subject_ids()}))


def _by_vendor(metas: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for subject_id, meta in metas.items():
        groups.setdefault(meta["vendor"], []).append(subject_id)
    return groups


@dataclass(frozen=True)
class MnmsCombinedOptions(DatasetOptions):
    """`SplitOptions` whose ``split`` may also be ``"paper"`` (so not a subclass: its
    ``split`` is wider); the two datasets' roots, and ``splits_dir`` (a folder of the study's
    split files) (module docstring)."""

    split: str | dict[str, list[Any]] | None = None
    stratify: str | None = None
    mnms_root: str | None = None
    mnms2_root: str | None = None
    splits_dir: str | None = None


@DATASETS.register
class MnmsCombinedDataset(DatasetAdapter):
    """M&Ms + M&Ms-2 as one dataset with prefixed ids (see module docstring)."""

    name = "mnms+mnms2"
    needs_root = False
    options_class = MnmsCombinedOptions

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        if root is not None and not Path(root).is_dir():
            raise DatasetError(
                f"dataset {self.name!r}: root {root} does not exist or is not a folder"
            )
        roots = {}
        for part, folder in COMBINED_SUBFOLDERS.items():
            given = options.get(f"{part}_root")
            if given is not None:
                roots[part] = Path(given)
            elif root is not None:
                roots[part] = Path(root) / folder
            else:
                raise DatasetError(
                    f"dataset {self.name!r} needs --root DIR holding "
                    f"{'/ and '.join(COMBINED_SUBFOLDERS.values())}/, or the "
                    f"options mnms_root and mnms2_root"
                )
        check_split_name(options.get("split"), self.name)
        # Paths as text, so that `fingerprint()` stays JSON-serialisable.
        super().__init__(
            root, **{k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
        )
        self.parts: dict[str, DatasetAdapter] = {
            MM1_PREFIX: MnmsDataset(roots["mnms"]),
            MM2_PREFIX: Mnms2Dataset(roots["mnms2"]),
        }

    def _part(self, subject_id: str) -> tuple[DatasetAdapter, str]:
        for prefix, part in self.parts.items():
            if subject_id.startswith(prefix):
                return part, subject_id[len(prefix) :]
        raise DatasetError(
            f"dataset {self.name!r}: subject id {subject_id!r} has no "
            f"{MM1_PREFIX!r} or {MM2_PREFIX!r} prefix"
        )

    def subject_ids(self) -> list[str]:
        return sorted(prefix + s for prefix, part in self.parts.items() for s in part.subject_ids())

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        part, code = self._part(subject_id)
        return {**part.subject_meta(code), "dataset": self.name, "source_dataset": part.name}

    def load(self, subject_id: str) -> Subject:
        part, code = self._part(subject_id)
        subject = part.load(code)
        subject.id = subject_id
        subject.meta = {**subject.meta, "dataset": self.name, "source_dataset": part.name}
        return subject

    def default_split(self) -> dict[str, list[str]]:
        if self._uses_paper_split():
            paper = load_paper_split("default", self.options.get("splits_dir"))
            return validate_split(
                paper, f"dataset {self.name!r} split 'paper'", known_ids=self.subject_ids()
            )
        override = split_option(self.options, self.subject_ids(), self.name)
        if override is not None:
            return override
        union: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for prefix, part in self.parts.items():
            for name, ids in part.default_split().items():
                union[name].extend(prefix + s for s in ids)
        return validate_split(union, self.name)

    def fixed_subset(self, budget: int, seed: int, setting: str) -> list[str] | None:
        """With ``split="paper"``: the study's labelled subset (budgets 10/15/25/50, seeds
        0–2) for the default and phase settings; None otherwise (cmrbench draws one)."""
        if (
            not self._uses_paper_split()
            or setting.startswith("vendors=")
            or budget not in PAPER_BUDGETS
            or seed not in PAPER_SEEDS
        ):
            return None
        subset = budget_split(budget, seed, self.options.get("splits_dir"))
        where = f"dataset {self.name!r} paper subset nr{budget}-seed{seed}"
        return validate_split(subset, where, known_ids=self.subject_ids())["train"]

    def setting_split(self, setting: str) -> dict[str, list[str]] | None:
        """With ``split="paper"``: the study's Vendor-A_B / Vendor-C_D train and val lists for
        ``vendors=A+B`` / ``vendors=C+D``; None otherwise (cmrbench filters by vendor)."""
        if not self._uses_paper_split() or not setting.startswith("vendors="):
            return None
        group = "_".join(sorted(setting.split("=", 1)[1].split("+")))
        if group not in PAPER_VENDOR_GROUPS:
            return None
        split = vendor_split(group, self.options.get("splits_dir"))
        return validate_split(
            split, f"dataset {self.name!r} paper split Vendor-{group}", known_ids=self.subject_ids()
        )

    def _uses_paper_split(self) -> bool:
        return self.options.get("split") == PAPER_SPLIT
