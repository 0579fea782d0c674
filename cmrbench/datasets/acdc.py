"""ACDC adapter: the Automated Cardiac Diagnosis Challenge cine short-axis set (Bernard et al.,
IEEE TMI 2018), 100 training + 50 test patients from the University Hospital of Dijon.

Layout (``root`` is any of these): ``root/training/patientXXX/`` and ``root/testing/
patientXXX/`` (the official release), or the patient folders directly under ``root``. Each
folder holds ``Info.cfg`` (``ED``, ``ES`` as **1-based** frame numbers, ``Group``,
``NbFrame``, ``Height``, ``Weight``), ``patientXXX_4d.nii.gz`` (the cine, ``(X, Y, Z, T)``)
and ``patientXXX_frameYY.nii.gz`` / ``patientXXX_frameYY_gt.nii.gz`` for the ED and ES
frames (``YY`` is the 1-based frame number). Labels are stored as 1 = RV, 2 = MYO, 3 = LV and
remapped to the canonical 1 = LV, 2 = MYO, 3 = RV. Geometry follows `cmrbench.datasets.nifti`.

Pathology: ``meta["pathology"]`` is the ``Group`` of ``Info.cfg``, one of NOR, MINF, DCM, HCM
and ARV (abnormal right ventricle, stored as ``RV``: renamed so that reports never confuse the
group with the RV class), 20 training and 10 test patients each.

Vendor: ACDC is a single-centre Siemens dataset (1.5 T Aera and 3 T Trio Tim); it has no
M&Ms vendor letter, so ``meta["vendor"]`` is ``""`` and ``meta["manufacturer"]`` is
``"Siemens"`` (a letter "A" would claim it is one of M&Ms' Siemens centres).

Default split: the official test set (patient101–150) is ``test`` when present; of the
others, within each pathology group sorted by id, every fifth patient (the 5th, 10th, ...)
is ``val`` — 20 of the 100 training patients, 4 per group — and the rest ``train``. Without
any official test patient, every fifth (the 4th, 9th, ...) per group is ``test`` as well.
Option ``validation="none"`` keeps no validation patients (all 100 are ``train``: the
``acdc`` grid's budget 100 needs every one; the study evaluates after the last epoch, and
validation only draws loss curves). Option ``split={"train": [...], "val": [...], "test":
[...]}`` overrides both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from cmrbench.datasets.base import DATASETS, DatasetAdapter, DatasetError, SplitOptions
from cmrbench.datasets.nifti import (
    NiftiVolume,
    find_frame,
    has_files,
    read_cine,
    read_nifti,
    subject_from_nifti,
)
from cmrbench.datasets.paper_splits import holdout_split, split_option
from cmrbench.datasets.subject import BACKGROUND, LV, MYO, RV, Subject

ACDC_LABEL_MAP = {0: BACKGROUND, 1: RV, 2: MYO, 3: LV}
# Info.cfg numbers frames from 1 (patientXXX_frame01 is the cine's first frame).
ACDC_FRAME_BASE = 1
# Official split: patient001-100 training, patient101-150 test.
ACDC_FIRST_TEST_NUMBER = 101
ACDC_PARENT_FOLDERS = ("training", "testing")
ACDC_CENTRE = "University Hospital of Dijon"
_PATIENT_FOLDER = re.compile(r"^patient(\d{3})$")
_REQUIRED_INFO = ("ED", "ES", "Group", "NbFrame")
# Info.cfg calls the abnormal-right-ventricle group "RV", the name of a label class too.
ACDC_GROUP_NAMES = {"RV": "ARV"}
VALIDATION_OPTION, VALIDATION_CHOICES = "validation", ("holdout", "none")


@dataclass(frozen=True)
class ACDCOptions(SplitOptions):
    """``split``, ``stratify`` and ``validation``: ``holdout`` or ``none`` (module docstring)."""

    validation: str = "holdout"


@DATASETS.register
class ACDCDataset(DatasetAdapter):
    """ACDC in its official layout (see module docstring)."""

    options_class = ACDCOptions

    name = "acdc"

    @cached_property
    def _folders(self) -> dict[str, Path]:
        """Patient id → folder, over ``root``, ``root/training`` and ``root/testing``."""
        root = Path(str(self.root))
        parents = [root, *(root / name for name in ACDC_PARENT_FOLDERS)]
        folders: dict[str, Path] = {}
        for parent in parents:
            if not parent.is_dir():
                continue
            for folder in sorted(parent.iterdir()):
                if not (_PATIENT_FOLDER.match(folder.name) and folder.is_dir()):
                    continue
                if folder.name in folders:
                    raise DatasetError(
                        f"{folder}: patient {folder.name} also found in "
                        f"{folders[folder.name]}; expected each patient once"
                    )
                folders[folder.name] = folder
        if not folders:
            raise DatasetError(_no_patients_message(root, parents))
        return folders

    def subject_ids(self) -> list[str]:
        return sorted(self._folders)

    def _folder(self, subject_id: str) -> Path:
        try:
            return self._folders[subject_id]
        except KeyError:
            raise DatasetError(
                f"{self.root}: no ACDC patient {subject_id!r}; expected one of "
                f"{', '.join(self.subject_ids()[:5])}, ..."
            ) from None

    def info(self, subject_id: str) -> dict[str, Any]:
        """The patient's ``Info.cfg`` as a dict (ED, ES, NbFrame as ints as stored: 1-based)."""
        path = self._folder(subject_id) / "Info.cfg"
        return read_info_cfg(path)

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        info = self.info(subject_id)
        number = int(_PATIENT_FOLDER.match(subject_id).group(1))  # type: ignore[union-attr]
        return {
            "dataset": self.name,
            "vendor": "",
            "manufacturer": "Siemens",
            "centre": ACDC_CENTRE,
            "pathology": ACDC_GROUP_NAMES.get(info["Group"], info["Group"]),
            "field_strength": None,
            "height_cm": info.get("Height"),
            "weight_kg": info.get("Weight"),
            "official_split": "test" if number >= ACDC_FIRST_TEST_NUMBER else "train",
        }

    def load(self, subject_id: str) -> Subject:
        folder = self._folder(subject_id)
        info_path = folder / "Info.cfg"
        info = read_info_cfg(info_path)
        cine = read_cine(folder / f"{subject_id}_4d.nii.gz")
        n_frames = cine.data.shape[3]
        if info["NbFrame"] != n_frames:
            raise DatasetError(
                f"{info_path}: NbFrame {info['NbFrame']} but {cine.path} has "
                f"{n_frames} frames; expected them to agree"
            )
        frames = {}
        for phase in ("ED", "ES"):
            number = info[phase]
            if not ACDC_FRAME_BASE <= number < ACDC_FRAME_BASE + n_frames:
                raise DatasetError(
                    f"{info_path}: {phase} {number} is out of range; expected a "
                    f"1-based frame number 1..{n_frames}"
                )
            frames[phase] = number - ACDC_FRAME_BASE
        if frames["ED"] == frames["ES"]:
            raise DatasetError(
                f"{info_path}: ED and ES are both frame {info['ED']}; expected two different frames"
            )
        labels = {}
        for phase, frame in frames.items():
            stem = folder / f"{subject_id}_frame{frame + ACDC_FRAME_BASE:02d}"
            labels[frame] = read_nifti(Path(f"{stem}_gt.nii.gz"), f"{phase} label")
            frame_image = Path(f"{stem}.nii.gz")
            if frame_image.is_file():
                _check_frame_image(
                    cine, read_nifti(frame_image, f"{phase} frame"), frame, phase, info_path
                )
        return subject_from_nifti(
            subject_id,
            cine,
            labels,
            ACDC_LABEL_MAP,
            frames["ED"],
            frames["ES"],
            self.subject_meta(subject_id),
        )

    def default_split(self) -> dict[str, list[str]]:
        override = split_option(self.options, self.subject_ids(), self.name)
        if override is not None:
            return override
        by_group: dict[str, list[str]] = {}
        official_test = []
        for subject_id in self.subject_ids():
            meta = self.subject_meta(subject_id)
            if meta["official_split"] == "test":
                official_test.append(subject_id)
            else:
                by_group.setdefault(meta["pathology"], []).append(subject_id)
        keep_val = self._keeps_validation()
        if not official_test:
            return holdout_split(by_group, val_position=3 if keep_val else None)
        split = holdout_split(by_group, val_position=4 if keep_val else None, test_position=None)
        split["test"] = sorted(official_test)
        return split

    def _keeps_validation(self) -> bool:
        """Option ``validation``: ``"holdout"`` (default) or ``"none"`` (no val patients)."""
        choice = self.options.get(VALIDATION_OPTION, "holdout")
        if choice not in VALIDATION_CHOICES:
            raise DatasetError(
                f"dataset {self.name!r} option validation={choice!r}; expected "
                f"one of {', '.join(VALIDATION_CHOICES)}"
            )
        return choice == "holdout"


def read_info_cfg(path: Path) -> dict[str, Any]:
    """Parse an ACDC ``Info.cfg`` (``Key: value`` lines) into a dict with typed values."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing; expected ACDC's Info.cfg with ED, ES, Group, NbFrame")
    info: dict[str, Any] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DatasetError(f"{path}:{number}: {line!r} is not a 'Key: value' line")
        info[key.strip()] = value.strip()
    missing = [key for key in _REQUIRED_INFO if key not in info]
    if missing:
        raise DatasetError(
            f"{path}: missing {', '.join(missing)}; expected keys {', '.join(_REQUIRED_INFO)}"
        )
    for key in ("ED", "ES", "NbFrame"):
        try:
            info[key] = int(float(info[key]))
        except ValueError:
            raise DatasetError(f"{path}: {key} is {info[key]!r}; expected a frame number") from None
    for key in ("Height", "Weight"):
        if key in info:
            try:
                info[key] = float(info[key])
            except ValueError:
                info[key] = None
    return info


def _check_frame_image(
    cine: NiftiVolume, frame_volume: NiftiVolume, frame: int, phase: str, info_path: Path
) -> None:
    """Prove the 1-based convention: ``patientXXX_frameYY`` must be cine frame ``YY - 1``."""
    matched = find_frame(cine, frame_volume, phase)
    if matched != frame:
        raise DatasetError(
            f"{frame_volume.path}: is cine frame {matched} (0-based) of "
            f"{cine.path}, but {info_path} says {phase} is frame "
            f"{frame + ACDC_FRAME_BASE} (1-based, i.e. {frame}); expected them "
            f"to agree"
        )


def _no_patients_message(root: Path, parents: list[Path]) -> str:
    """`DatasetError` text for a root without patient folders: unknown layout or empty."""
    searched = ", ".join(str(p) for p in parents if p.is_dir())
    if has_files(root):
        return (
            f"ACDC root {root}: no patientXXX/ folders found in {searched}; expected the "
            f"ACDC layout training/patient001/Info.cfg (or patientXXX/ folders directly "
            f"under the root)"
        )
    return (
        f"ACDC root {root}: the dataset is empty (no files in {searched}); expected "
        f"training/patientXXX/ folders"
    )
