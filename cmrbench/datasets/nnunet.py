"""nnU-Net v2 raw datasets (Isensee et al., Nature Methods 2021): the format most labs keep
their segmentation data in.

Layout (``root`` is the dataset folder, ``DatasetXXX_Name/``): ``dataset.json``,
``imagesTr/<case>_0000<ending>`` with ``labelsTr/<case><ending>``, and optionally
``imagesTs/<case>_0000<ending>`` with ``labelsTs/<case><ending>``. ``dataset.json`` must hold
``channel_names`` (channel ``"0"`` is read; other channels, ``_0001`` ..., are ignored),
``labels`` (name → integer value, ``background`` = 0), ``numTraining`` (the number of
``imagesTr`` cases) and ``file_ending`` (``.nii.gz`` or ``.nii``: each case is one 3D frame
``(X, Y, Z)``, read with the geometry rules of `cmrbench.datasets.nifti`).

Cases → subjects and phases. Option ``case_pattern``, a regular expression matched against
the whole case identifier, with a group ``subject`` and either a group ``frame`` (digits) or
``phase`` (``ED``/``ES``, any case). Default `DEFAULT_CASE_PATTERN`, the common
``<subject>_frame<NN>`` naming (nnU-Net's ACDC conversion, Dataset027): a subject's cases are
its frames in frame order, and of its labelled frames the lower number is ED and the higher
ES. A labelled subject has exactly two labelled frames (ED and ES); the cine of a subject is
the stack of its frames (two for a typical conversion, so pretraining sees those frames).

Labels: each ``dataset.json`` label name maps to a canonical class by name, case-insensitive
(`LABEL_NAMES`: ``LV``/``LVC``/``left ventricle`` …, ``MYO``/``MLV``/``myocardium`` …,
``RV``/``RVC`` …), or explicitly with option ``label_map`` (``{name: LV | MYO | RV |
background}``). A canonical class no label maps to is not annotated (n/a, never
background). Region-based labels (a list of values) are refused.

Splits: ``train`` = the subjects of ``imagesTr``; ``test`` = the subjects of ``imagesTs`` that
have ``labelsTs`` (without any, every fifth training subject in sorted order, the 5th, 10th,
...); ``val`` is empty unless option ``validation="holdout"`` (then also every fifth training
subject: the 4th, 9th, ... beside a test split drawn from training, else the 5th, 10th,
...). Option ``split={train, val, test}`` overrides all of it. Unlabelled ``imagesTs``
subjects are listed but never trained on or scored; option
``unlabelled="pool"`` makes them pretraining material (they are often a challenge's test
images: pretraining on them is transductive, so it is opt-in).

Meta: vendor, centre, pathology are unknown ("") unless option ``subject_info`` names a CSV
(relative to ``root``) with a ``subject`` column and any of ``vendor``, ``manufacturer``,
``centre``, ``pathology``, ``field_strength``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmrbench.datasets.base import DATASETS, DatasetAdapter, DatasetError, SplitOptions
from cmrbench.datasets.nifti import NiftiVolume, check_same_grid, read_nifti, subject_from_nifti
from cmrbench.datasets.paper_splits import holdout_split, split_option
from cmrbench.datasets.subject import BACKGROUND, CLASS_NAMES, FOREGROUND, LV, MYO, RV, Subject

DATASET_JSON = "dataset.json"
REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
FILE_ENDINGS = (".nii.gz", ".nii")
CHANNEL = "0000"
DEFAULT_CASE_PATTERN = r"(?P<subject>.+)_frame(?P<frame>\d+)"
# Label names (lower case, spaces, hyphens and underscores removed) → canonical class.
LABEL_NAMES = {
    **dict.fromkeys(
        (
            "lv",
            "lvc",
            "lvcavity",
            "lvbloodpool",
            "leftventricle",
            "lvblood",
            "leftventricularcavity",
            "lvendo",
        ),
        LV,
    ),
    **dict.fromkeys(
        (
            "myo",
            "mlv",
            "myocardium",
            "lvmyo",
            "lvmyocardium",
            "lvm",
            "myocard",
            "leftventricularmyocardium",
        ),
        MYO,
    ),
    **dict.fromkeys(
        (
            "rv",
            "rvc",
            "rvcavity",
            "rvbloodpool",
            "rightventricle",
            "rvblood",
            "rightventricularcavity",
            "rvendo",
        ),
        RV,
    ),
    "background": BACKGROUND,
}
CANONICAL = {"LV": LV, "MYO": MYO, "RV": RV, "background": BACKGROUND}
UNLABELLED_CHOICES = ("ignore", "pool")
VALIDATION_CHOICES = ("none", "holdout")
INFO_COLUMNS = ("vendor", "manufacturer", "centre", "pathology", "field_strength")


@dataclass(frozen=True)
class Case:
    """One nnU-Net case: its image (channel 0) and label files, and where it sits in its
    subject (``order``: the frame number, or 0 for ED and 1 for ES)."""

    case_id: str
    image: Path
    label: Path | None
    subject: str
    order: int
    phase: str | None  # "ED" / "ES" when the case pattern names it


@dataclass(frozen=True)
class NnunetSubject:
    """A subject's cases in frame order, which of them are ED and ES, and its folder."""

    subject_id: str
    cases: tuple[Case, ...]
    ed: int
    es: int
    folder: str  # "imagesTr" or "imagesTs"

    @property
    def labelled(self) -> bool:
        return any(case.label is not None for case in self.cases)


def normalised_name(name: str) -> str:
    """``"LV cavity"`` → ``"lvcavity"`` (what `LABEL_NAMES` is keyed by)."""
    return re.sub(r"[\s_\-]+", "", str(name).lower())


def read_dataset_json(path: Path) -> dict[str, Any]:
    """``dataset.json`` checked against nnU-Net v2's schema; `DatasetError` naming ``path``."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: missing; expected an nnU-Net v2 raw dataset folder "
            f"(DatasetXXX_Name/) holding {DATASET_JSON}, imagesTr/ and labelsTr/"
        )
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a JSON object with {', '.join(REQUIRED_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise DatasetError(
            f"{path}: missing {', '.join(missing)}; nnU-Net v2's dataset.json "
            f"holds {', '.join(REQUIRED_KEYS)}"
        )
    channels, labels = content["channel_names"], content["labels"]
    if not isinstance(channels, dict) or "0" not in {str(k) for k in channels}:
        raise DatasetError(
            f"{path}: channel_names is {channels!r}; expected a mapping with "
            f'channel "0" (the cine, files *_{CHANNEL})'
        )
    if not isinstance(labels, dict) or labels.get("background") != 0:
        raise DatasetError(
            f"{path}: labels is {labels!r}; expected a mapping of label names to "
            f'integer values with "background": 0'
        )
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DatasetError(
                f"{path}: label {name!r} is the region {value}; region-based "
                f"labels are not supported, expected one integer per label"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DatasetError(
                f"{path}: label {name!r} has value {value!r}; expected a non-negative integer"
            )
    if isinstance(content["numTraining"], bool) or not isinstance(content["numTraining"], int):
        raise DatasetError(
            f"{path}: numTraining is {content['numTraining']!r}; expected the "
            f"number of training cases"
        )
    if content["file_ending"] not in FILE_ENDINGS:
        raise DatasetError(
            f"{path}: file_ending is {content['file_ending']!r}; cmrbench reads "
            f"NIfTI cases: expected one of {', '.join(FILE_ENDINGS)}"
        )
    return content


def label_mapping(labels: dict[str, int], explicit: Any, path: Path) -> dict[int, int]:
    """Stored value → canonical class from ``dataset.json``'s label names, or the option
    ``label_map`` (name → LV | MYO | RV | background) where it names a label."""
    if explicit is not None and not isinstance(explicit, dict):
        raise DatasetError(
            f"dataset 'nnunet' option label_map={explicit!r}; expected a mapping "
            f"of {path.name} label names to {', '.join(CANONICAL)}"
        )
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(labels))
    if unknown:
        raise DatasetError(
            f"dataset 'nnunet' option label_map names {unknown}, which {path} does "
            f"not list; its labels: {', '.join(labels)}"
        )
    mapping, unmapped = {}, []
    for name, value in labels.items():
        if name in explicit:
            if explicit[name] not in CANONICAL:
                raise DatasetError(
                    f"dataset 'nnunet' option label_map: {name!r} → "
                    f"{explicit[name]!r}; expected one of {', '.join(CANONICAL)}"
                )
            mapping[value] = CANONICAL[explicit[name]]
        elif normalised_name(name) in LABEL_NAMES:
            mapping[value] = LABEL_NAMES[normalised_name(name)]
        else:
            unmapped.append(name)
    if unmapped:
        raise DatasetError(
            f"{path}: cannot tell which canonical class the label(s) "
            f"{', '.join(map(repr, unmapped))} are; map them with the option "
            f"label_map, e.g. --option 'label_map={{{unmapped[0]}: LV}}' (LV, MYO, "
            f"RV or background)"
        )
    targets = [c for c in mapping.values() if c != BACKGROUND]
    twice = sorted({CLASS_NAMES[c] for c in targets if targets.count(c) > 1})
    if twice:
        raise DatasetError(
            f"{path}: several labels map to {', '.join(twice)}; expected one "
            f"label per class (use label_map to say which)"
        )
    return mapping


@dataclass(frozen=True)
class NnunetOptions(SplitOptions):
    """``split``, ``stratify`` and the options of the module docstring: ``label_map``,
    ``case_pattern``, ``validation`` (`VALIDATION_CHOICES`), ``unlabelled``
    (`UNLABELLED_CHOICES`) and ``subject_info``."""

    label_map: dict[str, str] | None = None
    case_pattern: str = DEFAULT_CASE_PATTERN
    validation: str = VALIDATION_CHOICES[0]
    unlabelled: str = UNLABELLED_CHOICES[0]
    subject_info: str | None = None

    def __post_init__(self) -> None:
        for name, choices in (
            ("validation", VALIDATION_CHOICES),
            ("unlabelled", UNLABELLED_CHOICES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"option {name}={getattr(self, name)!r}; expected one of {', '.join(choices)}"
                )


def _choice(options: dict[str, Any], name: str) -> str:
    """The option ``name`` as given, else its `NnunetOptions` default (checked there)."""
    return options.get(name, getattr(NnunetOptions, name))


@DATASETS.register
class NnunetDataset(DatasetAdapter):
    """An nnU-Net v2 raw dataset folder (see the module docstring)."""

    name = "nnunet"
    options_class = NnunetOptions

    @cached_property
    def description(self) -> dict[str, Any]:
        """The checked ``dataset.json``."""
        return read_dataset_json(Path(str(self.root)) / DATASET_JSON)

    @cached_property
    def label_map(self) -> dict[int, int]:
        """Stored label value → canonical class."""
        return label_mapping(
            self.description["labels"],
            self.options.get("label_map"),
            Path(str(self.root)) / DATASET_JSON,
        )

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """The compiled ``case_pattern`` (with a ``subject`` and a ``frame`` or ``phase`` group)."""
        text = self.options.get("case_pattern", DEFAULT_CASE_PATTERN)
        try:
            pattern = re.compile(str(text))
        except re.error as err:
            raise DatasetError(
                f"dataset 'nnunet' option case_pattern={text!r} is not a regular expression ({err})"
            ) from None
        groups = set(pattern.groupindex)
        if "subject" not in groups or not groups & {"frame", "phase"}:
            raise DatasetError(
                f"dataset 'nnunet' option case_pattern={text!r}: expected the "
                f"named groups (?P<subject>...) and (?P<frame>\\d+) or "
                f"(?P<phase>ED|ES)"
            )
        return pattern

    @cached_property
    def subjects(self) -> dict[str, NnunetSubject]:
        """Every subject of ``imagesTr`` and ``imagesTs``, by id."""
        root = Path(str(self.root))
        ending = self.description["file_ending"]
        training = self._cases(root / "imagesTr", root / "labelsTr", ending, required=True)
        if len(training) != self.description["numTraining"]:
            raise DatasetError(
                f"{root / DATASET_JSON}: numTraining is "
                f"{self.description['numTraining']} but {root / 'imagesTr'} holds "
                f"{len(training)} cases (*_{CHANNEL}{ending}); expected them to "
                f"agree"
            )
        testing = self._cases(root / "imagesTs", root / "labelsTs", ending, required=False)
        subjects = {**self._group(training, "imagesTr")}
        for subject_id, subject in self._group(testing, "imagesTs").items():
            if subject_id in subjects:
                raise DatasetError(
                    f"{subject.cases[0].image}: subject {subject_id!r} also has "
                    f"cases in {root / 'imagesTr'}; expected each subject in one "
                    f"of imagesTr and imagesTs"
                )
            subjects[subject_id] = subject
        if not subjects:
            raise DatasetError(
                f"{root / 'imagesTr'}: no cases (*_{CHANNEL}{ending}); expected "
                f"nnU-Net's imagesTr/<case>_{CHANNEL}{ending}"
            )
        return subjects

    def _cases(self, images: Path, labels: Path, ending: str, required: bool) -> list[Case]:
        """The cases of one image folder with their label files (required in ``labelsTr``)."""
        if not images.is_dir():
            if required:
                raise DatasetError(f"{images}: missing; expected nnU-Net's imagesTr/ folder")
            return []
        cases = []
        for image in sorted(images.glob(f"*_{CHANNEL}{ending}")):
            case_id = image.name[: -len(f"_{CHANNEL}{ending}")]
            label = labels / f"{case_id}{ending}"
            if not label.is_file() and required:
                raise DatasetError(f"{label}: missing; expected the label of training case {image}")
            cases.append(self._case(case_id, image, label if label.is_file() else None))
        return cases

    def _case(self, case_id: str, image: Path, label: Path | None) -> Case:
        match = self.pattern.fullmatch(case_id)
        if match is None:
            raise DatasetError(
                f"{image}: case {case_id!r} does not match case_pattern "
                f"{self.pattern.pattern!r}; expected <subject>_frame<NN> or set "
                f"the option case_pattern"
            )
        groups = match.groupdict()
        phase = (groups.get("phase") or "").upper() or None
        if phase is not None and phase not in ("ED", "ES"):
            raise DatasetError(
                f"{image}: case {case_id!r} has phase {groups['phase']!r}; expected ED or ES"
            )
        order = int(groups["frame"]) if groups.get("frame") else ("ED", "ES").index(phase or "ED")
        return Case(case_id, image, label, groups["subject"], order, phase)

    def _group(self, cases: list[Case], folder: str) -> dict[str, NnunetSubject]:
        """Cases → subjects, each with its frames in order and its ED and ES frames."""
        by_subject: dict[str, list[Case]] = {}
        for case in cases:
            by_subject.setdefault(case.subject, []).append(case)
        subjects = {}
        for subject_id, group in sorted(by_subject.items()):
            group.sort(key=lambda c: c.order)
            orders = [c.order for c in group]
            if len(set(orders)) != len(orders):
                raise DatasetError(
                    f"{group[0].image}: subject {subject_id!r} has two cases for "
                    f"one frame ({', '.join(c.case_id for c in group)})"
                )
            ed, es = self._phases(subject_id, group)
            subjects[subject_id] = NnunetSubject(subject_id, tuple(group), ed, es, folder)
        return subjects

    @staticmethod
    def _phases(subject_id: str, cases: list[Case]) -> tuple[int, int]:
        """ED and ES frame indices: named by the pattern's ``phase``, else the lower and the
        higher labelled frame number; an unlabelled subject without names gets 0 and 0."""
        named = {c.phase: i for i, c in enumerate(cases) if c.phase}
        if {"ED", "ES"} <= set(named):
            return named["ED"], named["ES"]
        labelled = [i for i, c in enumerate(cases) if c.label is not None]
        if not labelled:
            return 0, 0
        if len(labelled) != 2:
            names = ", ".join(cases[i].case_id for i in labelled)
            raise DatasetError(
                f"{cases[0].image}: subject {subject_id!r} has {len(labelled)} "
                f"labelled frame(s) ({names}); expected two, ED and ES (or name "
                f"them with a (?P<phase>ED|ES) group in case_pattern)"
            )
        return labelled[0], labelled[1]

    def _subject(self, subject_id: str) -> NnunetSubject:
        try:
            return self.subjects[subject_id]
        except KeyError:
            raise DatasetError(
                f"{self.root}: no nnU-Net subject {subject_id!r}; expected one of "
                f"{', '.join(list(self.subjects)[:5])}, ..."
            ) from None

    def subject_ids(self) -> list[str]:
        return sorted(self.subjects)

    def labelled_ids(self, folder: str) -> list[str]:
        """The labelled subjects of ``imagesTr`` or ``imagesTs``."""
        return sorted(
            s
            for s, subject in self.subjects.items()
            if subject.folder == folder and subject.labelled
        )

    def unlabelled_ids(self) -> list[str]:
        """The subjects without any label (unlabelled ``imagesTs`` cases)."""
        return sorted(s for s, subject in self.subjects.items() if not subject.labelled)

    @cached_property
    def subject_info(self) -> dict[str, dict[str, Any]]:
        """Option ``subject_info``: subject → its CSV row (vendor, centre, pathology, ...)."""
        name = self.options.get("subject_info")
        if name is None:
            return {}
        path = Path(str(self.root)) / str(name)
        try:
            table = pd.read_csv(path, dtype=str).fillna("")
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: cannot read the subject_info CSV ({err})") from None
        if "subject" not in table.columns:
            raise DatasetError(
                f"{path}: no 'subject' column; expected subject plus any of "
                f"{', '.join(INFO_COLUMNS)}"
            )
        columns = [c for c in INFO_COLUMNS if c in table.columns]
        return {row["subject"]: {c: row[c] for c in columns} for _, row in table.iterrows()}

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        subject = self._subject(subject_id)
        return {
            "dataset": self.name,
            "vendor": "",
            "manufacturer": "",
            "centre": "",
            "pathology": "",
            "field_strength": None,
            "nnunet_dataset": Path(str(self.root)).name,
            "nnunet_folder": subject.folder,
            "cases": [c.case_id for c in subject.cases],
            **self.subject_info.get(subject_id, {}),
        }

    def load(self, subject_id: str) -> Subject:
        subject = self._subject(subject_id)
        frames = [read_nifti(case.image, "image (channel 0)") for case in subject.cases]
        for frame in frames:
            if frame.data.ndim != 3:
                raise DatasetError(
                    f"{frame.path}: shape {frame.data.shape}; expected one 3D "
                    f"frame (X, Y, Z) per nnU-Net case"
                )
            check_same_grid(frames[0], frame)
        cine = NiftiVolume(
            frames[0].path, np.stack([f.data for f in frames], axis=3), frames[0].affine
        )
        labels = {
            index: read_nifti(case.label, "label")
            for index, case in enumerate(subject.cases)
            if case.label is not None
        }
        loaded = subject_from_nifti(
            subject_id,
            cine,
            labels,
            self.label_map,
            subject.ed,
            subject.es,
            self.subject_meta(subject_id),
        )
        missing = [c for c in FOREGROUND if c not in self.label_map.values()]
        if not missing or not loaded.labels:
            return loaded
        annotated = {}
        for index, mask in loaded.annotated.items():
            annotated[index] = mask.copy()
            annotated[index][missing] = False
        return replace(loaded, annotated=annotated)

    def default_split(self) -> dict[str, list[str]]:
        override = split_option(self.options, self.subject_ids(), self.name)
        if override is not None:
            return override
        holdout = _choice(self.options, "validation") == "holdout"
        training, testing = self.labelled_ids("imagesTr"), self.labelled_ids("imagesTs")
        val_position = (4 if testing else 3) if holdout else None
        split = holdout_split(
            {"": training}, val_position=val_position, test_position=None if testing else 4
        )
        if testing:
            split["test"] = testing
        return split

    def pretraining_pool(self) -> list[str]:
        """The training subjects, plus the unlabelled ones with option ``unlabelled="pool"``."""
        extra = self.unlabelled_ids() if _choice(self.options, "unlabelled") == "pool" else []
        return sorted(self.default_split()["train"] + extra)

    def inferred(self) -> list[str]:
        """The label mapping, the grouping of cases into subjects and phases, and counts."""
        description = self.description
        names = {value: name for name, value in description["labels"].items()}
        mapping = ", ".join(
            f"{names[v]}={v} → {CLASS_NAMES.get(c, 'background')}"
            for v, c in sorted(self.label_map.items())
            if v != BACKGROUND
        )
        missing = [CLASS_NAMES[c] for c in FOREGROUND if c not in self.label_map.values()]
        by_folder = {
            folder: [s for s in self.subjects.values() if s.folder == folder]
            for folder in ("imagesTr", "imagesTs")
        }
        order = (
            "the pattern's phase group"
            if "phase" in self.pattern.groupindex
            else "of the two labelled frames, the lower frame number is ED, the higher ES"
        )
        channels = description["channel_names"]
        lines = [
            f"{DATASET_JSON}: channel 0 ({channels.get('0', channels.get(0))!r}) read"
            + (
                f", channels {', '.join(sorted(str(k) for k in channels if str(k) != '0'))} ignored"
                if len(channels) > 1
                else ""
            )
            + f"; file ending "
            f"{description['file_ending']}",
            f"labels: {mapping}"
            + (f"; not annotated (n/a): {', '.join(missing)}" if missing else ""),
            f"cases → subjects: case_pattern {self.pattern.pattern!r}; ED/ES: {order}",
        ]
        for folder, subjects in by_folder.items():
            cases = sum(len(s.cases) for s in subjects)
            labelled = sum(s.labelled for s in subjects)
            lines.append(
                f"{folder}: {cases} cases → {len(subjects)} subjects ({labelled} "
                f"labelled, {len(subjects) - labelled} unlabelled)"
            )
        if self.unlabelled_ids():
            use = _choice(self.options, "unlabelled")
            role = "pretraining pool" if use == "pool" else "not used"
            lines.append(f"unlabelled subjects: {role} (option unlabelled={use})")
        return lines
