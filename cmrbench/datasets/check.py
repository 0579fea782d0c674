"""Check a dataset end to end: load every subject, collect every problem, summarise the data.

``check_dataset(create_dataset(name, root, **options))`` is what ``cmrbench data check``
runs: it never stops at the first bad subject. Each problem names the subject and (through
the adapter's message) the file and what was expected. The summary gives subjects, frames,
slices, image size, spacing range, label values, vendors and pathologies, how far the heart
centres lie from the image centre (and so the smallest field of view at which heart-centred
augmentation, ``center: labels``, matches test-time centring: docs/protocol.md), the
default split's sizes, the adapters' notes (e.g. "stored slice order kept") and what an
adapter inferred from the files (the nnunet adapter's label mapping and grouping of cases).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cmrbench.datasets.base import DatasetAdapter
from cmrbench.datasets.preprocess import heart_center
from cmrbench.datasets.subject import CLASS_NAMES, Subject

# What a bad dataset raises: DatasetError and SubjectError are ValueErrors; file systems
# raise OSErrors.
_PROBLEMS = (ValueError, OSError)


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or, as a note, worth knowing) about one subject ("" = the dataset)."""

    subject_id: str
    message: str


@dataclass(frozen=True)
class SubjectSummary:
    """What `check_dataset` records of one subject that loaded."""

    subject_id: str
    frames: int
    slices: int
    height: int
    width: int
    spacing: tuple[float, float, float]
    ed: int
    es: int
    label_values: tuple[int, ...]
    annotated_classes: tuple[str, ...]
    vendor: str
    pathology: str
    heart_offset_mm: tuple[float, float] | None = None  # (x, y) of the heart centre


# Augmentation translates by up to 40 px of 256 per axis (the study's preset): under
# `center: labels` a training view holds its heart within this fraction of the field of view
# of the view centre, a test slice wherever the scan put it.
TRANSLATION_FRACTION = 40 / 256


@dataclass
class CheckReport:
    """Result of `check_dataset`: per-subject summaries, problems and notes."""

    dataset: str
    root: str
    subject_ids: list[str] = field(default_factory=list)
    subjects: list[SubjectSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every listed subject loaded and nothing else failed."""
        return not self.problems

    def value_range(self, attribute: str) -> tuple[float, float] | None:
        """``(min, max)`` of a numeric `SubjectSummary` attribute over loaded subjects."""
        values = [getattr(s, attribute) for s in self.subjects]
        return (min(values), max(values)) if values else None

    def spacing_range(self) -> list[tuple[float, float]]:
        """``[(min, max)]`` of dz, dy, dx in mm over loaded subjects ([] if none)."""
        if not self.subjects:
            return []
        spacing = np.array([s.spacing for s in self.subjects])
        return [(float(lo), float(hi)) for lo, hi in zip(spacing.min(0), spacing.max(0))]

    def label_values(self) -> list[int]:
        """Sorted canonical label values seen in any labelled frame."""
        return sorted({v for s in self.subjects for v in s.label_values})

    def vendors(self) -> Counter:
        """Subjects per vendor letter ("" = none)."""
        return Counter(s.vendor for s in self.subjects)

    def pathologies(self) -> Counter:
        """Subjects per pathology."""
        return Counter(s.pathology for s in self.subjects)

    def largest_heart_offset(self) -> float | None:
        """The largest distance (mm, per axis) of a heart centre from its image centre."""
        offsets = [max(map(abs, s.heart_offset_mm)) for s in self.subjects if s.heart_offset_mm]
        return max(offsets) if offsets else None


def check_dataset(
    adapter: DatasetAdapter, on_subject: Callable[[str], object] | None = None
) -> CheckReport:
    """Load every subject of ``adapter``; return a `CheckReport` with all problems found.

    ``on_subject(subject_id)`` is called before each subject loads (for progress output).
    """
    report = CheckReport(dataset=adapter.name, root=str(adapter.root or ""))
    try:
        report.subject_ids = adapter.subject_ids()
    except _PROBLEMS as err:
        report.problems.append(Problem("", str(err)))
        return report
    if not report.subject_ids:
        report.problems.append(
            Problem(
                "",
                f"dataset {adapter.name!r} at {adapter.root} lists "
                f"no subjects; expected at least one",
            )
        )
        return report
    for subject_id in report.subject_ids:
        if on_subject is not None:
            on_subject(subject_id)
        try:
            subject = adapter.load(subject_id)
        except _PROBLEMS as err:
            report.problems.append(Problem(subject_id, str(err)))
            continue
        report.subjects.append(_summarise(subject))
        report.notes.extend(Problem(subject_id, note) for note in subject.meta.get("notes", []))
    try:
        report.split_sizes = {name: len(ids) for name, ids in adapter.default_split().items()}
    except _PROBLEMS as err:
        report.problems.append(Problem("", f"default split: {err}"))
    try:
        report.inferred = adapter.inferred()
    except _PROBLEMS as err:
        report.problems.append(Problem("", str(err)))
    return report


def _summarise(subject: Subject) -> SubjectSummary:
    t, z, h, w = subject.shape
    dz, dy, dx = (float(s) for s in subject.spacing)
    values = sorted({int(v) for lab in subject.labels.values() for v in np.unique(lab)})
    centre = heart_center(np.stack(list(subject.labels.values()))) if subject.labels else None
    offset = (
        None
        if centre is None
        else (
            float((centre[0] - (w - 1) / 2) * subject.spacing[2]),
            float((centre[1] - (h - 1) / 2) * subject.spacing[1]),
        )
    )
    annotated = sorted(
        {
            CLASS_NAMES[c]
            for mask in subject.annotated.values()
            for c in CLASS_NAMES
            if mask[c].any()
        }
    )
    return SubjectSummary(
        subject_id=subject.id,
        frames=t,
        slices=z,
        height=h,
        width=w,
        spacing=(dz, dy, dx),
        ed=subject.ed,
        es=subject.es,
        label_values=tuple(values),
        annotated_classes=tuple(annotated),
        vendor=str(subject.meta.get("vendor", "")),
        pathology=str(subject.meta.get("pathology", "")),
        heart_offset_mm=offset,
    )


def format_report(report: CheckReport) -> str:
    """The report as plain text for the terminal: summary, notes, then every problem."""
    loaded, listed = len(report.subjects), len(report.subject_ids)
    lines = [
        f"dataset {report.dataset} at {report.root or '(no root folder)'}",
        f"  subjects   {loaded} loaded of {listed} listed",
    ]
    if report.subjects:
        for label, attribute in (
            ("frames", "frames"),
            ("slices", "slices"),
            ("height", "height"),
            ("width", "width"),
        ):
            lo, hi = report.value_range(attribute)  # type: ignore[misc]
            lines.append(f"  {label:<10} {lo}–{hi}" if lo != hi else f"  {label:<10} {lo}")
        spacing = ", ".join(
            f"{name} {lo:.2f}–{hi:.2f}"
            for name, (lo, hi) in zip(("dz", "dy", "dx"), report.spacing_range())
        )
        lines.append(f"  spacing    {spacing} mm")
        lines.append(f"  labels     {', '.join(str(v) for v in report.label_values())}")
        annotated = Counter(c for s in report.subjects for c in s.annotated_classes)
        lines.append(
            "  annotated  " + ", ".join(f"{c} in {annotated[c]}" for c in CLASS_NAMES.values())
        )
        lines.append("  vendors    " + _counts(report.vendors()))
        lines.append("  pathology  " + _counts(report.pathologies()))
        offset = report.largest_heart_offset()
        if offset is not None:
            lines.append(
                f"  heart      centres up to {offset:.1f} mm (per axis) from the image "
                f"centre: center: labels matches test-time centring at a field of view "
                f"of {offset / TRANSLATION_FRACTION:.0f} mm or more"
            )
    if report.split_sizes:
        lines.append("  split      " + ", ".join(f"{k} {v}" for k, v in report.split_sizes.items()))
    if report.inferred:
        lines.append("inferred from the files:")
        lines.extend(f"  {line}" for line in report.inferred)
    if report.notes:
        lines.append(f"notes ({len(report.notes)}):")
        lines.extend(f"  {n.subject_id or '(dataset)'}: {n.message}" for n in report.notes)
    lines.append(f"problems ({len(report.problems)}):" if report.problems else "no problems")
    lines.extend(f"  {p.subject_id or '(dataset)'}: {p.message}" for p in report.problems)
    return "\n".join(lines)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key or '(none)'} {n}" for key, n in sorted(counter.items()))
