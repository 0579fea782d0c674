"""Pictures of what the network sees (``cmrbench data show``): one PNG montage per subject.

Each montage holds the subject's ED and ES slices (rows) from base to apex (columns) exactly
as training reads them before augmentation (`cmrbench.datasets.view.subject_view`: cropped,
laid out, resampled to the grid's size and spacing, z-scored), with the labels outlined (LV
red, MYO green, RV blue). ``index.html`` lists every subject with its layout (the nearest
patient-axis letters of the stored and of the network's rows, columns and slices), crop,
spacing, annotated classes and the adapter's notes, and shows the montages; it is plain
HTML with relative links (no script, no network), so it opens from ``file://``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from cmrbench.datasets.base import DatasetAdapter, DatasetError
from cmrbench.datasets.preprocess import Geometry
from cmrbench.datasets.subject import CLASS_NAMES, LV, MYO, RV, Subject
from cmrbench.datasets.view import PhaseViews, subject_view

CLASS_COLOURS = {MYO: ("#34c759", "green"), RV: ("#3d8bff", "blue"), LV: ("#ff3b30", "red")}
"""Outline colour (and its name) per class, in drawing order: the LV's outline, which the
myocardium's inner outline follows, is drawn last so that it shows."""
INTENSITY_PERCENTILES = (0.5, 99.5)
"""Grey levels span these percentiles of the montage's intensities (z-scored)."""
_TILE_INCHES = (1.3, 2.6)
_DPI = 100


@dataclass(frozen=True)
class Montage:
    """One subject's picture: its file (relative to the index) and what the index says."""

    subject_id: str
    file: str
    facts: dict[str, str]


def draw_montage(view: PhaseViews, title: str, path: Path) -> Path:
    """Write ``view`` (`subject_view`) as a PNG at ``path``: phases as rows, slices base →
    apex as columns, labels outlined in `CLASS_COLOURS`."""
    images = np.stack([image for image, _ in view.values()])  # (phases, Z, S, S)
    low, high = np.percentile(images, INTENSITY_PERCENTILES)
    n_slices, size = images.shape[1], images.shape[-1]
    tile = float(np.clip(size / _DPI, *_TILE_INCHES))
    figure = Figure(figsize=(tile * n_slices, tile * len(view) + 0.6), dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(view), n_slices, squeeze=False)
    for row, (phase, (image, labels)) in enumerate(view.items()):
        for z in range(n_slices):
            ax = axes[row, z]
            ax.imshow(image[z], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            for cls, (colour, _) in CLASS_COLOURS.items():
                if (labels[z] == cls).any():
                    ax.contour(labels[z] == cls, levels=[0.5], colors=[colour], linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            position = "base" if z == 0 else "apex" if z == n_slices - 1 else ""
            ax.set_title(f"{phase} z{z} {position}".rstrip(), fontsize=7)
    legend = ", ".join(f"{CLASS_NAMES[c]} {name}" for c, (_, name) in sorted(CLASS_COLOURS.items()))
    figure.suptitle(f"{title}   (outlines: {legend})", fontsize=8)
    figure.subplots_adjust(
        left=0.005,
        right=0.995,
        bottom=0.005,
        top=1 - 0.5 / figure.get_figheight(),
        wspace=0.03,
        hspace=0.12,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def subject_facts(subject: Subject, geometry: Geometry) -> dict[str, str]:
    """What the index page says of a loaded subject (all text)."""
    layout = subject.meta.get("layout", {})
    annotated = sorted(
        {
            CLASS_NAMES[c]
            for mask in subject.annotated.values()
            for c in CLASS_NAMES
            if mask[c].any()
        }
    )
    facts = {
        "vendor": str(subject.meta.get("vendor", "")),
        "frames (ED, ES)": f"{subject.shape[0]} ({subject.ed}, {subject.es})",
        "slices": str(subject.shape[1]),
        "native pixels": f"{subject.shape[2]} × {subject.shape[3]} at "
        f"{subject.spacing[1]:.2f} × {subject.spacing[2]:.2f} mm, "
        f"dz {subject.spacing[0]:.2f} mm",
        "network grid": f"{geometry.size} × {geometry.size} at {geometry.spacing_mm:g} mm",
        "annotated": ", ".join(annotated) or "none",
        "notes": "; ".join(subject.meta.get("notes", [])),
    }
    if layout:
        facts["layout"] = (
            f"stored {layout['stored']} → network {layout['network']} (rows, columns, slices)"
        )
        facts["crop"] = (
            f"rows {layout['crop_rows'][0]}–{layout['crop_rows'][1]}, columns "
            f"{layout['crop_cols'][0]}–{layout['crop_cols'][1]} of "
            f"{layout['stored_shape'][0]} × {layout['stored_shape'][1]}"
        )
    return facts


def show_subjects(
    adapter: DatasetAdapter,
    subject_ids: list[str],
    geometry: Geometry,
    out: Path,
    progress: bool = True,
) -> Path:
    """Write one montage per subject of ``subject_ids`` (all of them when empty) and
    ``index.html`` into ``out``; return the index's path. An unknown id fails before anything
    is written, naming the dataset's ids."""
    known = adapter.subject_ids()
    unknown = [s for s in subject_ids if s not in known]
    if unknown:
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise DatasetError(
            f"dataset {adapter.name!r}: no subject "
            f"{', '.join(map(repr, unknown))}; its subjects are {shown}"
        )
    montages = []
    for n, subject_id in enumerate(
        tqdm(subject_ids or known, desc="data show", unit="subject", disable=not progress)
    ):
        subject = adapter.load(subject_id)
        file = f"subject-{n:04d}.png"
        draw_montage(subject_view(subject, geometry), f"{adapter.name} {subject_id}", out / file)
        montages.append(Montage(subject_id, file, subject_facts(subject, geometry)))
    index = out / "index.html"
    index.write_text(index_page(adapter.name, geometry, montages), encoding="utf-8")
    return index


def index_page(dataset: str, geometry: Geometry, montages: list[Montage]) -> str:
    """The index: a table of the subjects, then each montage under its subject's heading."""
    esc = html.escape
    keys = list(dict.fromkeys(k for m in montages for k in m.facts))
    rows = "\n".join(
        f'<tr><td><a href="#s{n}">{esc(m.subject_id)}</a></td>'
        + "".join(f"<td>{esc(m.facts.get(k, ''))}</td>" for k in keys)
        + "</tr>"
        for n, m in enumerate(montages)
    )
    pictures = "\n".join(
        f'<h2 id="s{n}">{esc(m.subject_id)}</h2>\n<a href="{esc(m.file)}">'
        f'<img src="{esc(m.file)}" alt="ED and ES slices of {esc(m.subject_id)}"></a>'
        for n, m in enumerate(montages)
    )
    title = (
        f"What the network sees: {esc(dataset)} at {geometry.size} px of {geometry.spacing_mm:g} mm"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;font-size:90%}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}}
img{{max-width:100%;image-rendering:pixelated}}</style></head><body>
<h1>{title}</h1>
<p>Each picture shows a subject's ED (top) and ES (bottom) slices from base (left) to apex
(right), exactly as training reads them before augmentation: all-zero borders cropped, the
in-plane axes laid out from the header (columns towards the patient's back, rows towards
the right and feet), resampled and z-scored. Outlines: LV red, MYO green, RV blue; a class
the dataset does not annotate has no outline.</p>
<table><tr><th>subject</th>{"".join(f"<th>{esc(k)}</th>" for k in keys)}</tr>
{rows}
</table>
{pictures}
</body></html>
"""
