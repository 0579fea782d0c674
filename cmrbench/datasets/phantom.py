"""Built-in cine phantom: deterministic bSSFP-like short-axis stacks with exact labels.

The phantom is cmrbench's default dataset. It needs no download, every subject is
rendered from ``(index, seed)`` alone (same inputs, same bytes), and its clinical truth
(volumes, ejection fractions, myocardial mass) is known in closed form, so a benchmark
run on it checks the pipeline that the replicated study (de Mooij, Pluim, Scannell,
arXiv 2409.18100) ran on M&Ms. A subject is a `Subject` whose cine ``(T, Z, H, W)``
float32 holds T = 20..30 frames and Z = 8..12 slices ordered base → apex, 8..10 mm
apart, integer-valued in 0..4095 like a 12-bit DICOM, labelled at ED and ES.

Anatomy. Heart lengths are mm in the heart's "round frame" ``(u, v) = (u_img / (1 + e),
v_img / (1 - e))`` (``e`` the subject's ellipticity, ``u`` pointing from the RV to the
LV), where every heart structure is an axis-aligned ellipse or a disk; in the image each
is an ellipse with ``(1 + e)(1 - e)`` times its round-frame area.

* LV cavity and LV epicardium are truncated super-ellipsoids of revolution that share
  the base plane: at depth ``d`` below the base the section is a disk of radius
  ``r(d) = R (1 - (d / L)^p)^(1/p)`` for ``0 <= d < L`` (``p`` = 2.2..3). The epicardium
  is longer (apical wall) and wider (wall thickness), so the cavity tapers to the apex
  inside a closed myocardial cap. The cavity disk is shifted away from the septum by
  ``s * r_cavity`` (``s`` <= 0.8 wall / radius, so it stays inside): a thicker septum.
* The RV blood pool is an ellipse (half-width along u, half-span along v, same profile,
  shorter ``L``) centred ``k * r_epicardium(d)`` from the LV axis on the septal side,
  minus the LV epicardial disk: a crescent wrapped around the septum that vanishes
  before the apex.
* Papillary muscles and trabeculae (dark, inside the cavity) are labelled LV, as in ACDC
  and M&Ms; a darker trabeculated band along the RV free wall is labelled RV. Not
  labelled: the RV free wall, epicardial fat touching the RV free wall and the LV, atria
  and aortic root above the base plane, a body ellipse with subcutaneous fat and
  chest-wall muscle, lungs with vessels, liver (apical slices), vertebra, spinal canal
  and descending aorta.
* Pose: the heart's middle lies within +-20 mm of the FOV centre (less for big hearts,
  so every labelled voxel stays inside the central 156 x 156 mm; option ``heart_offset_mm``
  moves it that far off-centre instead), the RV points left and up in the drawing within
  +-26 degrees, and the long axis drifts up to 1 mm per slice. The drawing sits in the
  patient as `PHANTOM_POSE` says (a double-oblique short-axis plane: rows towards posterior,
  columns towards left-and-head, slices towards the apex), and a subject is laid out from
  that pose like every dataset's (`cmrbench.datasets.layout`): in a `Subject` the drawing
  is turned by 90 degrees, the RV points down and left, the columns run posterior.

Motion. Contraction ``c(t)`` runs 0 (ED) → 1 (ES) → 0 over one cycle: a half cosine up
to ES, then fast filling. ED is frame 0, 1 or 2; ES lies 35..45 % of the cycle later.
The apex stays put while the base plane descends toward it by ``base_descent * c``;
cavity sizes shrink by ``(1 - squeeze * c)``; the epicardium follows from a constant
myocardial volume, ``R_epi(t)^2 L_epi(t) - R_cav(t)^2 L_cav(t) = const``, so the wall
thickens in systole. ``squeeze`` (LV and RV apart) is solved by bisection so that the
analytic volumes give the subject's drawn ejection fractions.

Truth (``meta["truth"]``) is analytic, not a voxel count: each slice is the slab of its
centre section, so a volume is ``sum_z area_z * dz`` with ``area = (1 + e)(1 - e) pi
r_cav^2`` for the LV cavity, ``(1 + e)(1 - e) pi (r_epi^2 - r_cav^2)`` for the
myocardium and ``(1 + e)(1 - e) * ellipse_outside_disk_area(...)`` (exact, Green's
theorem) for the RV; mass is 1.05 g/ml times the ED myocardial volume. Labels follow the
same slab model: the centre-of-voxel rule on the native grid, at the slice centre. The
image averages 2 x 2 in-plane samples per voxel and two sections at +-0.2 dz
(partial-volume edges), then takes a smooth coil bias field, a mild tissue texture and
Rician noise.

Vendor styles (``meta["vendor"]`` = "ABCD"[index mod 4]):

======  =============  =====  ========  ======  ======  =====  ===  ====  ====  =====  ====
vendor  manufacturer   field  pixel mm  matrix  FOV mm  dz mm  SNR  myo   fat   liver  bias
======  =============  =====  ========  ======  ======  =====  ===  ====  ====  =====  ====
A       PhantomScan A  1.5 T  1.25      192     240     9.0    28   0.24  0.80  0.30   0.20
B       PhantomScan B  1.5 T  1.56      176     275     8.5    18   0.34  0.95  0.38   0.40
C       PhantomScan C  3.0 T  1.44      160     230     9.5    34   0.20  0.70  0.26   0.55
D       PhantomScan D  1.5 T  1.74      144     251     9.0    13   0.38  0.90  0.42   0.30
======  =============  =====  ========  ======  ======  =====  ===  ====  ====  =====  ====

Pixel size varies +-3 % per subject and dz is nominal (8..10 mm, fitted to the heart).
SNR is blood signal over the Rician noise sigma; myo, fat and liver are signals relative
to blood (1.0) before a +-10 % per-subject jitter; bias scales the log of the smooth
multiplicative coil field. Vendors also store blood at different levels (1100, 1600,
1300, 700).

Pathology groups (``meta["pathology"]`` = groups[(index + index // 4) mod 3]), at ED:

============  =============  ========  =========  =======  =======  ============
group         cavity radius  wall mm   length mm  LV EF %  RV EF %  base descent
============  =============  ========  =========  =======  =======  ============
normal        24..28 mm      7..9.5    80..92     55..68   50..62   10..14 mm
dilated       30..35 mm      5.5..7.5  92..104    28..42   32..50   4..8 mm
hypertrophic  19..23 mm      13..18    74..86     60..72   52..65   6..10 mm
============  =============  ========  =========  =======  =======  ============
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from cmrbench.datasets.base import DATASETS, DatasetAdapter, DatasetError, DatasetOptions
from cmrbench.datasets.layout import in_network_layout
from cmrbench.datasets.subject import LV, MYO, RV, Subject
from cmrbench.paths import cache_dir

GENERATOR_VERSION = 2
MYOCARDIUM_DENSITY_G_PER_ML = 1.05
SUPERSAMPLE = 2
SLAB_SAMPLES = (-0.2, 0.2)
MAX_STORED_VALUE = 4095
CROP_HALF_MM = 78.0
MAX_HEART_OFFSET_MM = 20.0
FOV_MARGIN_MM = 2.0
PATHOLOGY_NAMES = ("normal", "dilated", "hypertrophic")
VENDOR_LETTERS = ("A", "B", "C", "D")
_SUBJECT_ID = re.compile(r"phantom-(\d+)")
# LPS directions of the drawing's rows (down), columns (right) and slices (base → apex): a
# short-axis plane whose normal points to the apex (left, anterior, inferior).
PHANTOM_POSE = (
    np.array([1.0, 2.0, -1.0]) / np.sqrt(6.0),
    np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0),
    np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0),
)

# Tissue codes of the maps each slice is painted into (AIR also means "no heart here").
(
    AIR,
    SOFT_TISSUE,
    FAT,
    MUSCLE,
    LUNG,
    LIVER,
    BONE,
    CSF,
    VESSEL_BLOOD,
    LV_BLOOD,
    LV_TRABECULAE,
    PAPILLARY,
    MYOCARDIUM,
    RV_BLOOD,
    RV_TRABECULAE,
    RV_WALL,
    ATRIAL_BLOOD,
    ATRIAL_WALL,
) = range(18)
N_TISSUES = 18
BLOOD_TISSUES = (LV_BLOOD, RV_BLOOD, ATRIAL_BLOOD)
LABEL_OF_TISSUE = np.zeros(N_TISSUES, dtype=np.uint8)
LABEL_OF_TISSUE[[LV_BLOOD, LV_TRABECULAE, PAPILLARY]] = LV
LABEL_OF_TISSUE[MYOCARDIUM] = MYO
LABEL_OF_TISSUE[[RV_BLOOD, RV_TRABECULAE]] = RV


@dataclass(frozen=True)
class VendorStyle:
    """One scanner's protocol and look (a row of the module docstring's vendor table)."""

    manufacturer: str
    field_strength_t: float
    pixel_mm: float
    matrix: int
    slice_spacing_mm: float
    snr: float
    myocardium: float
    fat: float
    liver: float
    bias_strength: float
    blood_level: float


VENDORS: dict[str, VendorStyle] = {
    "A": VendorStyle("PhantomScan A", 1.5, 1.25, 192, 9.0, 28.0, 0.24, 0.80, 0.30, 0.20, 1100.0),
    "B": VendorStyle("PhantomScan B", 1.5, 1.5625, 176, 8.5, 18.0, 0.34, 0.95, 0.38, 0.40, 1600.0),
    "C": VendorStyle("PhantomScan C", 3.0, 1.44, 160, 9.5, 34.0, 0.20, 0.70, 0.26, 0.55, 1300.0),
    "D": VendorStyle("PhantomScan D", 1.5, 1.74, 144, 9.0, 13.0, 0.38, 0.90, 0.42, 0.30, 700.0),
}


@dataclass(frozen=True)
class PathologyStyle:
    """Ranges a pathology group draws its heart from (the docstring's pathology table)."""

    cavity_radius_mm: tuple[float, float]
    wall_mm: tuple[float, float]
    length_mm: tuple[float, float]
    lv_ef: tuple[float, float]
    rv_ef: tuple[float, float]
    base_descent_mm: tuple[float, float]
    rv_width_ratio: tuple[float, float]
    rv_span_ratio: tuple[float, float]
    septal_shift: tuple[float, float]
    papillary_mm: tuple[float, float]


PATHOLOGIES: dict[str, PathologyStyle] = {
    "normal": PathologyStyle(
        (24, 28),
        (7, 9.5),
        (80, 92),
        (55, 68),
        (50, 62),
        (10, 14),
        (0.75, 0.9),
        (1.15, 1.35),
        (0.0, 0.08),
        (2.5, 3.5),
    ),
    "dilated": PathologyStyle(
        (30, 35),
        (5.5, 7.5),
        (92, 104),
        (28, 42),
        (32, 50),
        (4, 8),
        (0.65, 0.8),
        (1.05, 1.25),
        (0.0, 0.05),
        (2.5, 3.5),
    ),
    "hypertrophic": PathologyStyle(
        (19, 23),
        (13, 18),
        (74, 86),
        (60, 72),
        (52, 65),
        (6, 10),
        (0.6, 0.75),
        (1.0, 1.2),
        (0.15, 0.3),
        (3.5, 5.0),
    ),
}


@dataclass(frozen=True)
class HeartShape:
    """Closed-form heart at ED and how it contracts (round-frame mm, see module docstring).

    Radii and lengths are at the base and at ED: LV cavity and epicardium (``*_radius``,
    ``*_length`` from the base plane), RV ellipse half-width ``rv_semi_u`` and half-span
    ``rv_semi_v``, its centre ``rv_offset`` x r_epi from the LV axis and its length
    ``rv_length``. ``profile_power`` is ``p``; ``septal_shift`` is ``s``; the squeezes are
    the fractional shrink of the cavities at ES; the rest shapes unlabelled tissue
    (RV wall, epicardial fat and its offset angles, aortic root) and papillary muscles.
    """

    cavity_radius: float
    epi_radius: float
    cavity_length: float
    epi_length: float
    profile_power: float
    ellipticity: float
    septal_shift: float
    rv_semi_u: float
    rv_semi_v: float
    rv_offset: float
    rv_length: float
    rv_wall: float
    base_descent: float
    lv_squeeze: float
    rv_squeeze: float
    papillary_radius: float
    papillary_angles: tuple[float, float]
    trabecular_band: float
    rv_fat: float
    lv_fat: float
    fat_turns: tuple[float, float]
    aortic_root: float

    @property
    def apex_wall(self) -> float:
        """Myocardial thickness at the apex at ED (mm)."""
        return self.epi_length - self.cavity_length

    @property
    def area_factor(self) -> float:
        """Image area of a round-frame disk of unit area: ``(1 + e)(1 - e)``."""
        return (1.0 + self.ellipticity) * (1.0 - self.ellipticity)


@dataclass(frozen=True)
class Sections:
    """Heart cross-sections (round-frame mm) at slice depths × contraction states.

    Every field has the broadcast shape of the ``slice_depth`` and ``contraction`` given
    to `heart_sections`; ``depth`` is below the current base plane (negative: above it).
    """

    depth: np.ndarray
    cavity_radius: np.ndarray
    cavity_shift: np.ndarray
    epi_radius: np.ndarray
    rv_semi_u: np.ndarray
    rv_semi_v: np.ndarray
    rv_offset: np.ndarray
    papillary_radius: np.ndarray
    trabecular_band: np.ndarray


@dataclass(frozen=True)
class Ellipsoid:
    """A background organ: an ellipsoid (``semi_c`` = inf: a tube along z) in FOV mm.

    It is painted as ``tissue`` over the tissue map, only where the map holds ``inside``
    (None: anywhere), so organs stay inside the body and vessels inside the lungs.
    """

    tissue: int
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    angle: float
    inside: int | None = None


@dataclass(frozen=True)
class PhantomPlan:
    """Everything that defines one subject, drawn from ``(index, seed)`` without rendering."""

    index: int
    seed: int
    vendor: str
    pathology: str
    n_frames: int
    ed: int
    es: int
    pixel_mm: float
    matrix: int
    slice_spacing: float
    n_slices: int
    first_depth: float
    heart: HeartShape
    lv_centre: tuple[float, float]
    tilt_per_slice: tuple[float, float]
    heart_angle: float
    organs: tuple[Ellipsoid, ...]
    tissue_signal: tuple[float, ...]
    inflow: tuple[float, float]
    bias: tuple[float, ...]
    texture_amplitude: float

    @property
    def slice_depths(self) -> np.ndarray:
        """Depth of each slice centre below the ED base plane (mm), base → apex, ``(Z,)``."""
        return self.first_depth + self.slice_spacing * np.arange(self.n_slices)

    @property
    def fov_mm(self) -> float:
        """Side of the square field of view (mm)."""
        return self.pixel_mm * self.matrix


def phantom_id(index: int) -> str:
    """The id of subject ``index``: ``phantom-0007``."""
    return f"phantom-{index:04d}"


def vendor_of(index: int) -> str:
    """Vendor letter of subject ``index`` (round robin A, B, C, D)."""
    return VENDOR_LETTERS[index % len(VENDOR_LETTERS)]


def pathology_of(index: int) -> str:
    """Pathology group of subject ``index``; every vendor cycles through all groups."""
    return PATHOLOGY_NAMES[(index + index // len(VENDOR_LETTERS)) % len(PATHOLOGY_NAMES)]


def ellipse_outside_disk_area(
    semi_u: np.ndarray, semi_v: np.ndarray, offset: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Exact area of an ellipse minus a disk: the RV cavity section (round-frame mm²).

    The ellipse has semi-axes ``semi_u`` (along u) and ``semi_v`` and centre ``(-offset, 0)``;
    the disk has ``radius`` and centre 0. Arrays broadcast. By Green's theorem the area is
    a sum over the arcs of the ellipse ``P(t) = (-offset + a cos t, b sin t)`` that lie
    outside the disk, ``t`` in ``[t_a, t_b]`` on the upper half (the lower half mirrors
    it), of ``a b (t_b - t_a) - offset b (sin t_b - sin t_a) + r^2 (theta(t_a) -
    theta(t_b))``, where ``theta`` is the polar angle of ``P(t)`` (the circle arc that
    closes each lobe). The arc ends solve ``|P(t)|^2 = r^2``, a quadratic in ``cos t``.
    """
    a, b, d, r = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (semi_u, semi_v, offset, radius))
    )
    quad, lin, const = a**2 - b**2, -2.0 * d * a, d**2 + b**2 - r**2
    discriminant = lin**2 - 4.0 * quad * const
    root = np.sqrt(np.clip(discriminant, 0.0, None))
    pivot = -0.5 * (lin + np.where(lin >= 0, 1.0, -1.0) * root)
    with np.errstate(divide="ignore", invalid="ignore"):
        roots = [pivot / quad, const / pivot]
    candidates = [np.zeros_like(a), np.full_like(a, np.pi)]
    for x in roots:
        usable = (discriminant >= 0) & np.isfinite(x) & (np.abs(x) < 1.0)
        candidates.append(np.where(usable, np.arccos(np.clip(x, -1.0, 1.0)), 0.0))
    ends = np.sort(np.stack(candidates, axis=-1), axis=-1)

    def polar(t: np.ndarray) -> np.ndarray:
        return np.arctan2(b * np.sin(t), -d + a * np.cos(t))

    area = np.zeros_like(a)
    for t_a, t_b in zip(np.moveaxis(ends[..., :-1], -1, 0), np.moveaxis(ends[..., 1:], -1, 0)):
        middle = np.cos(0.5 * (t_a + t_b))
        outside = (quad * middle**2 + lin * middle + const > 0) & (t_b > t_a)
        arc = (
            a * b * (t_b - t_a)
            - d * b * (np.sin(t_b) - np.sin(t_a))
            + r**2 * (polar(t_a) - polar(t_b))
        )
        area += np.where(outside, arc, 0.0)
    return np.where((a > 0) & (b > 0), area, 0.0)


def _profile(depth: np.ndarray, length: np.ndarray, radius: np.ndarray, power: float) -> np.ndarray:
    """Radius ``R (1 - (d / L)^p)^(1/p)`` of a truncated super-ellipsoid; 0 outside ``[0, L)``."""
    fraction = np.clip(depth / length, 0.0, 1.0)
    radius_at = radius * (1.0 - fraction**power) ** (1.0 / power)
    return np.where((depth >= 0) & (depth < length), radius_at, 0.0)


def heart_sections(heart: HeartShape, slice_depth: np.ndarray, contraction: np.ndarray) -> Sections:
    """Cross-sections at ``slice_depth`` (mm below the ED base) and ``contraction`` (0 ED, 1 ES)."""
    slice_depth, contraction = np.broadcast_arrays(
        np.asarray(slice_depth, dtype=np.float64), np.asarray(contraction, dtype=np.float64)
    )
    descent = heart.base_descent * contraction
    depth = slice_depth - descent
    epi_length = heart.epi_length - descent
    cavity_length = epi_length - heart.apex_wall * (1.0 + 0.3 * contraction)
    cavity_base = heart.cavity_radius * (1.0 - heart.lv_squeeze * contraction)
    myocardium = (
        heart.epi_radius**2 * heart.epi_length - heart.cavity_radius**2 * heart.cavity_length
    )
    epi_base = np.sqrt((myocardium + cavity_base**2 * cavity_length) / epi_length)
    power = heart.profile_power
    cavity = _profile(depth, cavity_length, cavity_base, power)
    epi = _profile(depth, epi_length, epi_base, power)
    rv = _profile(depth, heart.rv_length - descent, 1.0 - heart.rv_squeeze * contraction, power)
    along = depth / cavity_length
    papillary_window = np.sqrt(np.clip(1.0 - ((along - 0.475) / 0.325) ** 2, 0.0, None))
    return Sections(
        depth=depth,
        cavity_radius=cavity,
        cavity_shift=heart.septal_shift * cavity,
        epi_radius=epi,
        rv_semi_u=heart.rv_semi_u * rv,
        rv_semi_v=heart.rv_semi_v * rv,
        rv_offset=heart.rv_offset * epi,
        papillary_radius=heart.papillary_radius
        * (1.0 + 0.4 * contraction)
        * papillary_window
        * (cavity > 0),
        trabecular_band=heart.trabecular_band
        * (0.3 + 0.7 * np.clip(along, 0.0, 1.0))
        * (1.0 - 0.3 * contraction),
    )


def section_area(heart: HeartShape, sections: Sections, label: int) -> np.ndarray:
    """Image area (mm²) of the LV cavity, myocardium or RV cavity (``label``) in each section."""
    if label == RV:
        round_area = ellipse_outside_disk_area(
            sections.rv_semi_u, sections.rv_semi_v, sections.rv_offset, sections.epi_radius
        )
    elif label == LV:
        round_area = np.pi * sections.cavity_radius**2
    else:
        round_area = np.pi * (sections.epi_radius**2 - sections.cavity_radius**2)
    return heart.area_factor * round_area


def _phase_volumes_ml(
    heart: HeartShape, slice_depths: np.ndarray, slice_spacing: float, label: int
) -> tuple[float, float]:
    """Slab volumes (ml) of ``label`` at ED and ES: ``sum_z area_z * dz``."""
    sections = heart_sections(heart, slice_depths[None, :], np.array([[0.0], [1.0]]))
    ed, es = section_area(heart, sections, label).sum(axis=1) * slice_spacing / 1000.0
    return float(ed), float(es)


def analytic_truth(plan: PhantomPlan) -> dict[str, float]:
    """Clinical truth from the shape parameters: volumes (ml), EF (%), mass (g)."""
    lv_ed, lv_es, rv_ed, rv_es, myo_ed, myo_es = (
        volume
        for label in (LV, RV, MYO)
        for volume in _phase_volumes_ml(plan.heart, plan.slice_depths, plan.slice_spacing, label)
    )
    return {
        "LV_EDV": lv_ed,
        "LV_ESV": lv_es,
        "RV_EDV": rv_ed,
        "RV_ESV": rv_es,
        "LV_EF": 100.0 * (lv_ed - lv_es) / lv_ed,
        "RV_EF": 100.0 * (rv_ed - rv_es) / rv_ed,
        "LV_MYO_ED_ml": myo_ed,
        "LV_MYO_ES_ml": myo_es,
        "LV_MASS_ED_g": MYOCARDIUM_DENSITY_G_PER_ML * myo_ed,
    }


def _solve_squeeze(
    heart: HeartShape,
    field: str,
    label: int,
    target_ef: float,
    slice_depths: np.ndarray,
    slice_spacing: float,
) -> HeartShape:
    """``heart`` with ``field`` (a squeeze) bisected so the slab EF of ``label`` is ``target_ef``.

    The EF grows monotonically with the squeeze; 20 halvings of [0, 0.95] pin it to 1e-6.
    """
    low, high = 0.0, 0.95
    for _ in range(20):
        middle = 0.5 * (low + high)
        ed, es = _phase_volumes_ml(
            _with_field(heart, field, middle), slice_depths, slice_spacing, label
        )
        if 100.0 * (ed - es) / ed < target_ef:
            low = middle
        else:
            high = middle
    return _with_field(heart, field, 0.5 * (low + high))


def _with_field(heart: HeartShape, field: str, value: float) -> HeartShape:
    """``heart`` with its float field ``field`` set to ``value``."""
    change: dict[str, Any] = {field: value}  # the field is named at run time
    return replace(heart, **change)


def contraction_curve(n_frames: int, ed: int, es: int) -> np.ndarray:
    """Contraction ``c(t)`` per frame, ``(T,)``: 0 at ED, 1 at ES, periodic over the cycle."""
    phase = ((np.arange(n_frames) - ed) % n_frames) / n_frames
    systole = (es - ed) / n_frames
    rising = 0.5 * (1.0 - np.cos(np.pi * np.clip(phase / systole, 0.0, 1.0)))
    after = np.clip((phase - systole) / (1.0 - systole), 0.0, 1.0)
    filling = 0.5 * (1.0 + np.cos(np.pi * (1.0 - (1.0 - after) ** 2)))
    return np.where(phase <= systole, rising, filling)


def _draw_heart(style: PathologyStyle, rng: np.random.Generator) -> tuple[HeartShape, float, float]:
    """A heart at ED from a pathology's ranges (squeezes unsolved) and its target EFs."""
    cavity_radius = rng.uniform(*style.cavity_radius_mm)
    wall = rng.uniform(*style.wall_mm)
    epi_length = rng.uniform(*style.length_mm)
    apex_wall = wall * rng.uniform(0.55, 0.8)
    epi_radius = cavity_radius + wall
    heart = HeartShape(
        cavity_radius=cavity_radius,
        epi_radius=epi_radius,
        cavity_length=epi_length - apex_wall,
        epi_length=epi_length,
        profile_power=rng.uniform(2.2, 3.0),
        ellipticity=rng.uniform(0.0, 0.12),
        septal_shift=min(rng.uniform(*style.septal_shift), 0.8 * wall / cavity_radius),
        rv_semi_u=rng.uniform(*style.rv_width_ratio) * epi_radius,
        rv_semi_v=rng.uniform(*style.rv_span_ratio) * epi_radius,
        rv_offset=rng.uniform(0.7, 0.85),
        rv_length=epi_length * rng.uniform(0.68, 0.8),
        rv_wall=rng.uniform(2.0, 3.5),
        base_descent=rng.uniform(*style.base_descent_mm),
        lv_squeeze=0.0,
        rv_squeeze=0.0,
        papillary_radius=rng.uniform(*style.papillary_mm),
        papillary_angles=(rng.uniform(0.5, 1.1), -rng.uniform(0.5, 1.1)),
        trabecular_band=rng.uniform(2.0, 4.0),
        rv_fat=rng.uniform(2.0, 10.0),
        lv_fat=rng.uniform(1.0, 6.0),
        fat_turns=(rng.uniform(0, 2 * np.pi), rng.uniform(-1.0, 1.0)),
        aortic_root=rng.uniform(11.0, 14.0),
    )
    return heart, rng.uniform(*style.lv_ef), rng.uniform(*style.rv_ef)


def _draw_stack(
    heart: HeartShape, vendor: VendorStyle, rng: np.random.Generator
) -> tuple[int, float, float]:
    """Number of slices, spacing and first slice depth so the stack spans base → apex."""
    first_depth = rng.uniform(-2.0, 5.0)
    span = heart.epi_length + rng.uniform(-4.0, 4.0) - first_depth
    n_slices = int(np.clip(round(span / vendor.slice_spacing_mm) + 1, 8, 12))
    return n_slices, float(np.clip(span / (n_slices - 1), 8.0, 10.0)), first_depth


def _rotate(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Heart-frame ``(u, v)`` → image ``(x, y)`` offsets for a heart turned by ``angle``."""
    cos, sin = math.cos(angle), math.sin(angle)
    return u * cos - v * sin, u * sin + v * cos


def _ellipse_bounds(
    heart: HeartShape,
    angle: float,
    centre_u: np.ndarray,
    centre_v: np.ndarray,
    semi_u: np.ndarray,
    semi_v: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Image bounding boxes ``(x0, x1, y0, y1)`` (mm from the LV centre) of round-frame ellipses."""
    stretch_u, stretch_v = 1.0 + heart.ellipticity, 1.0 - heart.ellipticity
    x, y = _rotate(stretch_u * centre_u, stretch_v * centre_v, angle)
    cos, sin = math.cos(angle), math.sin(angle)
    half_x = np.hypot(stretch_u * semi_u * cos, stretch_v * semi_v * sin)
    half_y = np.hypot(stretch_u * semi_u * sin, stretch_v * semi_v * cos)
    return x - half_x, x + half_x, y - half_y, y + half_y


def _labelled_bounds(
    heart: HeartShape, angle: float, slice_depths: np.ndarray, tilt: tuple[float, float]
) -> tuple[float, float, float, float]:
    """Bounding box (mm from the slice-0 LV centre) of every labelled voxel at ED and ES."""
    sections = heart_sections(heart, slice_depths[None, :], np.array([[0.0], [1.0]]))
    zero = np.zeros_like(sections.epi_radius)
    epi = _ellipse_bounds(heart, angle, zero, zero, sections.epi_radius, sections.epi_radius)
    rv = _ellipse_bounds(
        heart, angle, -sections.rv_offset, zero, sections.rv_semi_u, sections.rv_semi_v
    )
    step = np.arange(len(slice_depths))
    shift_x, shift_y = tilt[0] * step, tilt[1] * step
    return (
        float(np.min(np.minimum(epi[0], rv[0]) + shift_x)),
        float(np.max(np.maximum(epi[1], rv[1]) + shift_x)),
        float(np.min(np.minimum(epi[2], rv[2]) + shift_y)),
        float(np.max(np.maximum(epi[3], rv[3]) + shift_y)),
    )


def _place_heart(
    bounds: tuple[float, float, float, float],
    rng: np.random.Generator,
    offset_mm: float | None = None,
    half_fov_mm: float = CROP_HALF_MM,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Slice-0 LV centre and the heart's middle, both FOV mm.

    By default the middle lies within `MAX_HEART_OFFSET_MM` of the FOV centre per axis, keeping
    every label in the central crop. With ``offset_mm`` it lies ``offset_mm`` from the centre
    in the direction of the same two draws, as far as keeps every label inside ``half_fov_mm``
    of the centre (the option ``heart_offset_mm``: hearts off-centre, as in real scans).
    """
    x0, x1, y0, y1 = bounds
    halves = np.array([0.5 * (x1 - x0), 0.5 * (y1 - y0)])
    box_centres = np.array([0.5 * (x0 + x1), 0.5 * (y0 + y1)])
    draws = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0)])
    if offset_mm is None:
        middle = draws * np.clip(CROP_HALF_MM - halves, 0.0, MAX_HEART_OFFSET_MM)
    else:
        reach = np.clip(half_fov_mm - halves, 0.0, None)
        middle = np.clip(offset_mm * draws / np.linalg.norm(draws), -reach, reach)
    lv_centre = middle - box_centres
    return (float(lv_centre[0]), float(lv_centre[1])), (float(middle[0]), float(middle[1]))


def _draw_organs(
    middle: tuple[float, float], heart: HeartShape, apex_z: float, rng: np.random.Generator
) -> tuple[Ellipsoid, ...]:
    """Body, fat, muscle, lungs (+vessels), liver, vertebra, canal and aorta around the heart."""
    inf = math.inf
    hx, hy = middle
    body_a, body_b = rng.uniform(150, 185), rng.uniform(100, 120)
    top = hy - heart.epi_radius - rng.uniform(25, 45)
    body = (hx - rng.uniform(10, 35), top + body_b, 0.0)
    body_angle = rng.uniform(-0.15, 0.15)
    subcutaneous, chest_wall = rng.uniform(6, 22), rng.uniform(8, 14)

    def layer(tissue: int, inset: float, inside: int | None) -> Ellipsoid:
        return Ellipsoid(tissue, body, (body_a - inset, body_b - inset, inf), body_angle, inside)

    organs = [
        layer(FAT, 0.0, None),
        layer(MUSCLE, subcutaneous, FAT),
        layer(SOFT_TISSUE, subcutaneous + chest_wall, MUSCLE),
    ]
    lungs = [
        (
            (hx + rng.uniform(55, 75), hy + rng.uniform(0, 25), 0.0),
            (rng.uniform(35, 50), rng.uniform(55, 75), inf),
            rng.uniform(-0.3, 0.3),
        ),
        (
            (hx - rng.uniform(75, 95), hy + rng.uniform(0, 25), 0.0),
            (rng.uniform(35, 50), rng.uniform(55, 75), inf),
            rng.uniform(-0.3, 0.3),
        ),
    ]
    for centre, axes, angle in lungs:
        organs.append(Ellipsoid(LUNG, centre, axes, angle, SOFT_TISSUE))
    for centre, axes, _angle in lungs:
        for _ in range(3):
            radius, turn = rng.uniform(0.0, 0.8), rng.uniform(0, 2 * np.pi)
            spot = (
                centre[0] + radius * axes[0] * math.cos(turn),
                centre[1] + radius * axes[1] * math.sin(turn),
                0.0,
            )
            size = rng.uniform(2.0, 4.0)
            organs.append(Ellipsoid(VESSEL_BLOOD, spot, (size, size, inf), 0.0, LUNG))
    organs.append(
        Ellipsoid(
            LIVER,
            (hx - rng.uniform(20, 50), hy + rng.uniform(30, 60), apex_z + rng.uniform(0, 30)),
            (rng.uniform(70, 90), rng.uniform(45, 60), rng.uniform(40, 60)),
            rng.uniform(-0.3, 0.3),
            SOFT_TISSUE,
        )
    )
    vertebra_r = rng.uniform(14, 18)
    vertebra = (body[0] + rng.uniform(-10, 10), body[1] + body_b - rng.uniform(45, 60), 0.0)
    canal_r = rng.uniform(5, 7)
    aorta_r = rng.uniform(9, 13)
    organs += [
        Ellipsoid(BONE, vertebra, (vertebra_r, vertebra_r, inf), 0.0, SOFT_TISSUE),
        Ellipsoid(
            CSF,
            (vertebra[0], vertebra[1] + vertebra_r + canal_r + 2, 0.0),
            (canal_r, canal_r, inf),
            0.0,
            SOFT_TISSUE,
        ),
        Ellipsoid(
            VESSEL_BLOOD,
            (vertebra[0] + rng.uniform(18, 28), vertebra[1] - rng.uniform(8, 20), 0.0),
            (aorta_r, aorta_r, inf),
            0.0,
            SOFT_TISSUE,
        ),
    ]
    return tuple(organs)


def _draw_signal(vendor: VendorStyle, rng: np.random.Generator) -> tuple[float, ...]:
    """Relative signal of each tissue (blood = 1) in this vendor's bSSFP contrast."""

    def jitter() -> float:
        return rng.uniform(0.9, 1.1)

    signal = np.zeros(N_TISSUES)
    myocardium = vendor.myocardium * jitter()
    signal[[SOFT_TISSUE, FAT, MUSCLE, LUNG, LIVER, BONE, CSF, VESSEL_BLOOD]] = [
        0.42 * jitter(),
        vendor.fat * jitter(),
        0.9 * myocardium,
        0.05 * jitter(),
        vendor.liver * jitter(),
        0.5 * jitter(),
        0.9 * jitter(),
        0.85 * jitter(),
    ]
    signal[[LV_BLOOD, RV_BLOOD, ATRIAL_BLOOD]] = [
        1.0,
        rng.uniform(0.92, 1.0),
        rng.uniform(0.85, 1.0),
    ]
    signal[[PAPILLARY, MYOCARDIUM, RV_WALL, ATRIAL_WALL]] = myocardium
    lv_mix, rv_mix = rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.7)
    signal[LV_TRABECULAE] = lv_mix + (1 - lv_mix) * myocardium
    signal[RV_TRABECULAE] = rv_mix * signal[RV_BLOOD] + (1 - rv_mix) * myocardium
    return tuple(float(s) for s in signal)


@functools.lru_cache(maxsize=1024)
def plan_subject(index: int, seed: int, heart_offset_mm: float | None = None) -> PhantomPlan:
    """Draw subject ``index`` of the phantom with ``seed``: cheap (ms), renders nothing.

    ``heart_offset_mm``: place the heart's middle this far from the FOV centre (`_place_heart`)
    instead of within 20 mm of it; every other draw is the same.
    """
    rng = np.random.default_rng([seed, index, 0])
    vendor_letter, pathology = vendor_of(index), pathology_of(index)
    vendor = VENDORS[vendor_letter]
    n_frames = int(rng.integers(20, 31))
    ed = int(rng.integers(0, 3))
    es = ed + int(round(rng.uniform(0.35, 0.45) * n_frames))
    heart, lv_ef, rv_ef = _draw_heart(PATHOLOGIES[pathology], rng)
    n_slices, slice_spacing, first_depth = _draw_stack(heart, vendor, rng)
    depths = first_depth + slice_spacing * np.arange(n_slices)
    heart = _solve_squeeze(heart, "lv_squeeze", LV, lv_ef, depths, slice_spacing)
    heart = _solve_squeeze(heart, "rv_squeeze", RV, rv_ef, depths, slice_spacing)
    angle = 0.35 + rng.uniform(-0.45, 0.45)
    tilt = (rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0))
    lv_centre, middle = _place_heart(
        _labelled_bounds(heart, angle, depths, tilt),
        rng,
        heart_offset_mm,
        0.97 * vendor.matrix * vendor.pixel_mm / 2 - FOV_MARGIN_MM,
    )
    apex_z = heart.epi_length - first_depth
    return PhantomPlan(
        index=index,
        seed=seed,
        vendor=vendor_letter,
        pathology=pathology,
        n_frames=n_frames,
        ed=ed,
        es=es,
        pixel_mm=vendor.pixel_mm * rng.uniform(0.97, 1.03),
        matrix=vendor.matrix,
        slice_spacing=slice_spacing,
        n_slices=n_slices,
        first_depth=first_depth,
        heart=heart,
        lv_centre=lv_centre,
        tilt_per_slice=tilt,
        heart_angle=angle,
        organs=_draw_organs(middle, heart, apex_z, rng),
        tissue_signal=_draw_signal(vendor, rng),
        inflow=(rng.uniform(0.02, 0.06), rng.uniform(0, 2 * np.pi)),
        bias=tuple(float(g) for g in rng.standard_normal(5)),
        texture_amplitude=rng.uniform(0.03, 0.07),
    )


def subject_meta_of(plan: PhantomPlan) -> dict[str, Any]:
    """``Subject.meta`` of a planned subject, analytic truth included."""
    vendor = VENDORS[plan.vendor]
    return {
        "dataset": "phantom",
        "vendor": plan.vendor,
        "manufacturer": vendor.manufacturer,
        "centre": VENDOR_LETTERS.index(plan.vendor) + 1,
        "pathology": plan.pathology,
        "field_strength": vendor.field_strength_t,
        "generator_version": GENERATOR_VERSION,
        "seed": plan.seed,
        "truth": analytic_truth(plan),
    }


@dataclass(frozen=True)
class _Shape:
    """A round-frame ellipse per frame (arrays ``(F,)``), axis-aligned, painted as ``tissue``.

    ``semi_v`` None makes it a disk of radius ``semi_u``; ``within`` clips it to the area of
    an earlier shape. A zero size paints nothing.
    """

    name: str
    tissue: int
    centre_u: np.ndarray
    centre_v: np.ndarray
    semi_u: np.ndarray
    semi_v: np.ndarray | None = None
    within: str | None = None

    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Semi-axes along u and v, negative sizes (vanished shapes) clipped to 0."""
        semi_u = np.clip(self.semi_u, 0.0, None)
        return semi_u, semi_u if self.semi_v is None else np.clip(self.semi_v, 0.0, None)


def _heart_shapes(heart: HeartShape, sections: Sections) -> list[_Shape]:
    """The heart's shapes in painting order (later ones cover earlier ones)."""
    s = sections
    frames = s.epi_radius.shape

    def const(value: float) -> np.ndarray:
        return np.full(frames, value)

    def grown(size: np.ndarray, by: float | np.ndarray) -> np.ndarray:
        return np.where(size > 0, size + by, 0.0)

    zero = const(0.0)
    rv_turn, lv_turn = heart.fat_turns
    shapes = [
        _Shape(
            "rv_fat",
            FAT,
            -s.rv_offset + 0.6 * heart.rv_fat * math.cos(rv_turn),
            const(0.6 * heart.rv_fat * math.sin(rv_turn)),
            grown(s.rv_semi_u, heart.rv_wall + heart.rv_fat),
            grown(s.rv_semi_v, heart.rv_wall + heart.rv_fat),
        ),
        _Shape(
            "lv_fat",
            FAT,
            const(0.7 * heart.lv_fat * math.cos(lv_turn)),
            const(0.7 * heart.lv_fat * math.sin(lv_turn)),
            grown(s.epi_radius, heart.lv_fat),
        ),
    ]
    height = -s.depth
    atrial = np.sqrt(np.clip(1.0 - ((height - 20.0) / 35.0) ** 2, 0.0, None)) * (height > 0)
    chambers = [
        ((0.1 * heart.epi_radius, 0.35 * heart.epi_radius), 0.85 * heart.cavity_radius * atrial),
        (
            (-heart.rv_offset * heart.epi_radius - 0.3 * heart.rv_semi_u, 0.3 * heart.rv_semi_v),
            0.6 * heart.rv_semi_v * atrial,
        ),
        (
            (-0.35 * heart.epi_radius, -0.35 * heart.epi_radius),
            heart.aortic_root * ((height > 0) & (height < 60.0)),
        ),
    ]
    for number, ((centre_u, centre_v), radius) in enumerate(chambers):
        shapes += [
            _Shape(
                f"atrial_wall{number}",
                ATRIAL_WALL,
                const(centre_u),
                const(centre_v),
                grown(radius, 2.0),
            ),
            _Shape(f"atrium{number}", ATRIAL_BLOOD, const(centre_u), const(centre_v), radius),
        ]
    rv_band = 0.6 * s.trabecular_band
    reach = s.cavity_radius - 0.5 * s.papillary_radius
    shapes += [
        _Shape(
            "rv_wall",
            RV_WALL,
            -s.rv_offset,
            zero,
            grown(s.rv_semi_u, heart.rv_wall),
            grown(s.rv_semi_v, heart.rv_wall),
        ),
        _Shape("rv", RV_TRABECULAE, -s.rv_offset, zero, s.rv_semi_u, s.rv_semi_v),
        _Shape(
            "rv_core", RV_BLOOD, -s.rv_offset, zero, s.rv_semi_u - rv_band, s.rv_semi_v - rv_band
        ),
        _Shape("epicardium", MYOCARDIUM, zero, zero, s.epi_radius),
        _Shape("cavity", LV_TRABECULAE, s.cavity_shift, zero, s.cavity_radius),
        _Shape("cavity_core", LV_BLOOD, s.cavity_shift, zero, s.cavity_radius - s.trabecular_band),
    ]
    for number, turn in enumerate(heart.papillary_angles):
        shapes.append(
            _Shape(
                f"papillary{number}",
                PAPILLARY,
                s.cavity_shift + reach * math.cos(turn),
                reach * math.sin(turn),
                s.papillary_radius,
                within="cavity",
            )
        )
    return shapes


def _reach(u: np.ndarray, v: np.ndarray, shape: _Shape) -> tuple[slice, slice] | None:
    """Rows and columns of the ``(h, w)`` grid that a shape can cover in any frame (None: none)."""
    semi_u, semi_v = shape.sizes()
    u_low, u_high = (shape.centre_u - semi_u).min(), (shape.centre_u + semi_u).max()
    v_low, v_high = (shape.centre_v - semi_v).min(), (shape.centre_v + semi_v).max()
    near = (u >= u_low) & (u <= u_high) & (v >= v_low) & (v <= v_high)
    rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _paint_heart(shapes: list[_Shape], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Tissue codes ``(F, h, w)`` of the shapes at round-frame points ``u, v`` ``(h, w)``.

    Each shape is evaluated only on the rows and columns it can reach (`_reach`).
    """
    frames = shapes[0].semi_u.shape[0]
    r2 = u * u + v * v
    codes = np.zeros((frames,) + u.shape, dtype=np.uint8)
    clip_targets = {shape.within for shape in shapes if shape.within is not None}
    masks: dict[str, np.ndarray] = {}

    def column(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)[:, None, None]

    for shape in shapes:
        semi_u, semi_v = shape.sizes()
        if not (semi_u * semi_v).any() or (shape.within is not None and shape.within not in masks):
            continue
        window = _reach(u, v, shape)
        if window is None:
            continue
        block_u, block_v = u[window], v[window]
        if shape.semi_v is None:
            # |p - c|^2 < r^2  <=>  |p|^2 - 2 p.c < r^2 - |c|^2: disks share |p|^2.
            distance = r2[window] - column(2.0 * shape.centre_u) * block_u
            if shape.centre_v.any():
                distance -= column(2.0 * shape.centre_v) * block_v
            inside = distance < column(semi_u**2 - shape.centre_u**2 - shape.centre_v**2)
        else:
            inside = ((block_u - column(shape.centre_u)) * column(semi_v)) ** 2 + (
                (block_v - column(shape.centre_v)) * column(semi_u)
            ) ** 2 < column((semi_u * semi_v) ** 2)
        if shape.within is not None:
            inside &= masks[shape.within][(slice(None),) + window]
        if shape.name in clip_targets:
            masks[shape.name] = np.zeros(codes.shape, dtype=bool)
            masks[shape.name][(slice(None),) + window] = inside
        np.copyto(codes[(slice(None),) + window], np.uint8(shape.tissue), where=inside)
    return codes


def _heart_window(
    shapes: list[_Shape],
    heart: HeartShape,
    angle: float,
    centre: tuple[float, float],
    pixel_mm: float,
    matrix: int,
) -> tuple[slice, slice]:
    """Native-pixel rows and columns that hold every shape in every frame."""
    bounds = [
        _ellipse_bounds(heart, angle, shape.centre_u, shape.centre_v, *shape.sizes())
        for shape in shapes
    ]
    x0 = min(float(b[0].min()) for b in bounds) + centre[0]
    x1 = max(float(b[1].max()) for b in bounds) + centre[0]
    y0 = min(float(b[2].min()) for b in bounds) + centre[1]
    y1 = max(float(b[3].max()) for b in bounds) + centre[1]

    def pixels(low: float, high: float) -> slice:
        first = int(np.floor(low / pixel_mm + matrix / 2)) - 1
        last = int(np.ceil(high / pixel_mm + matrix / 2)) + 1
        return slice(max(first, 0), min(last, matrix))

    return pixels(y0, y1), pixels(x0, x1)


def _pixel_axis(matrix: int, pixel_mm: float, factor: int) -> np.ndarray:
    """Sample positions (mm from the FOV centre) of a grid supersampled ``factor`` times."""
    positions = ((np.arange(matrix * factor) + 0.5) / factor - matrix / 2.0) * pixel_mm
    return positions.astype(np.float32)


def _round_frame(
    heart: HeartShape, angle: float, centre: tuple[float, float], x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Round-frame ``(u, v)`` ``(len(y), len(x))`` of the image points ``x`` × ``y`` (mm)."""
    dx = (x - np.float32(centre[0]))[None, :]
    dy = (y - np.float32(centre[1]))[:, None]
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (dx * cos + dy * sin) / np.float32(1.0 + heart.ellipticity)
    v = (dy * cos - dx * sin) / np.float32(1.0 - heart.ellipticity)
    return u, v


def _paint_organs(organs: tuple[Ellipsoid, ...], x: np.ndarray, z: float) -> np.ndarray:
    """Background tissue codes ``(len(x), len(x))`` of the slice at height ``z`` (mm)."""
    tissue = np.zeros((len(x), len(x)), dtype=np.uint8)
    for organ in organs:
        semi_a, semi_b, semi_c = organ.semi_axes
        height = (z - organ.centre[2]) / semi_c
        if abs(height) >= 1.0:
            continue
        scale = math.sqrt(1.0 - height**2)
        cos, sin = math.cos(organ.angle), math.sin(organ.angle)
        reach_x = scale * math.hypot(semi_a * cos, semi_b * sin)
        reach_y = scale * math.hypot(semi_a * sin, semi_b * cos)
        cols = slice(*np.searchsorted(x, [organ.centre[0] - reach_x, organ.centre[0] + reach_x]))
        rows = slice(*np.searchsorted(x, [organ.centre[1] - reach_y, organ.centre[1] + reach_y]))
        dx = x[None, cols] - np.float32(organ.centre[0])
        dy = x[rows, None] - np.float32(organ.centre[1])
        cos32, sin32 = np.float32(cos), np.float32(sin)
        inside = (
            ((dx * cos32 + dy * sin32) / np.float32(semi_a * scale)) ** 2
            + ((dy * cos32 - dx * sin32) / np.float32(semi_b * scale)) ** 2
        ) < 1.0
        block = tissue[rows, cols]
        if organ.inside is not None:
            inside &= block == organ.inside
        block[inside] = organ.tissue
    return tissue


def _block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` × ``factor`` blocks of the last two axes (supersampled → native)."""
    # a sum of arrays (never empty: factor >= 1), though typeshed's sum may return its start 0
    total = cast(
        np.ndarray,
        sum(values[..., i::factor, j::factor] for i in range(factor) for j in range(factor)),
    )
    return (total * np.float32(1.0 / factor**2)).astype(np.float32)


def _frame_signal(plan: PhantomPlan) -> np.ndarray:
    """Tissue signal per frame ``(T, N_TISSUES)``: blood brightens and dims with inflow."""
    amplitude, shift = plan.inflow
    phase = 2 * np.pi * (np.arange(plan.n_frames) - plan.ed) / plan.n_frames + shift
    signal = np.tile(np.asarray(plan.tissue_signal, dtype=np.float32), (plan.n_frames, 1))
    inflow = (1.0 + amplitude * np.sin(phase)).astype(np.float32)
    signal[:, list(BLOOD_TISSUES)] *= inflow[:, None]
    return signal


def _coil_and_texture(plan: PhantomPlan, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field ``(Z, H, W)``: coil bias (1 at the LV) times tissue texture."""
    half = plan.fov_mm / 2.0
    strength = VENDORS[plan.vendor].bias_strength
    g = plan.bias

    def log_bias(px: Any, py: Any, height: float) -> Any:
        return strength * (
            g[0] * px
            + g[1] * py
            + 0.5 * g[2] * px * py
            + 0.5 * g[3] * (px**2 - py**2)
            - 0.5 * py
            + 0.3 * g[4] * height
        )

    across, down = x[None, :] / half, x[:, None] / half
    centre_x, centre_y = plan.lv_centre[0] / half, plan.lv_centre[1] / half
    field = np.empty((plan.n_slices, len(x), len(x)), dtype=np.float32)
    for k in range(plan.n_slices):
        height = (k - (plan.n_slices - 1) / 2) / plan.n_slices
        bias = np.exp(log_bias(across, down, height) - log_bias(centre_x, centre_y, height))
        wavenumber = 2 * np.pi / rng.uniform(20.0, 60.0, 6)
        turn, phase = rng.uniform(0, 2 * np.pi, 6), rng.uniform(0, 2 * np.pi, 6)
        # sum_i cos(kx_i x + ky_i y + phase_i), split into products of 1-D waves.
        along_x = np.outer(wavenumber * np.cos(turn), x) + phase[:, None]
        along_y = np.outer(wavenumber * np.sin(turn), x)
        waves = np.einsum("iy,ix->yx", np.cos(along_y), np.cos(along_x)) - np.einsum(
            "iy,ix->yx", np.sin(along_y), np.sin(along_x)
        )
        field[k] = bias * (1.0 + plan.texture_amplitude / math.sqrt(3.0) * waves)
    return field


def render_arrays(plan: PhantomPlan) -> tuple[np.ndarray, np.ndarray]:
    """Render a planned subject: cine ``(T, Z, H, W)`` uint16 and ED, ES labels ``(2, Z, H, W)``."""
    rng = np.random.default_rng([plan.seed, plan.index, 1])
    heart, matrix, pixel = plan.heart, plan.matrix, plan.pixel_mm
    contraction = contraction_curve(plan.n_frames, plan.ed, plan.es)
    signal = _frame_signal(plan)
    x_fine, x_native = _pixel_axis(matrix, pixel, SUPERSAMPLE), _pixel_axis(matrix, pixel, 1)
    image = np.empty((plan.n_frames, plan.n_slices, matrix, matrix), dtype=np.float32)
    labels = np.zeros((2, plan.n_slices, matrix, matrix), dtype=np.uint8)
    slab = np.asarray(SLAB_SAMPLES)
    frame_index = np.tile(np.arange(plan.n_frames), len(slab))[:, None, None]
    for k, depth in enumerate(plan.slice_depths):
        organs = _paint_organs(plan.organs, x_fine, k * plan.slice_spacing)
        image[:, k] = _block_mean(signal[0][organs], SUPERSAMPLE)
        centre = (
            plan.lv_centre[0] + k * plan.tilt_per_slice[0],
            plan.lv_centre[1] + k * plan.tilt_per_slice[1],
        )
        slab_depths = np.repeat(depth + plan.slice_spacing * slab, plan.n_frames)
        shapes = _heart_shapes(
            heart, heart_sections(heart, slab_depths, np.tile(contraction, len(slab)))
        )
        rows, cols = _heart_window(shapes, heart, plan.heart_angle, centre, pixel, matrix)
        fine_rows = slice(rows.start * SUPERSAMPLE, rows.stop * SUPERSAMPLE)
        fine_cols = slice(cols.start * SUPERSAMPLE, cols.stop * SUPERSAMPLE)
        u, v = _round_frame(heart, plan.heart_angle, centre, x_fine[fine_cols], x_fine[fine_rows])
        codes = _paint_heart(shapes, u, v)
        codes = np.where(codes == AIR, organs[fine_rows, fine_cols], codes)
        fine = _block_mean(signal[frame_index, codes], SUPERSAMPLE)
        image[:, k, rows, cols] = fine.reshape(len(slab), plan.n_frames, *fine.shape[1:]).mean(
            axis=0
        )
        phases = _heart_shapes(heart, heart_sections(heart, depth, np.array([0.0, 1.0])))
        u, v = _round_frame(heart, plan.heart_angle, centre, x_native[cols], x_native[rows])
        labels[:, k, rows, cols] = LABEL_OF_TISSUE[_paint_heart(phases, u, v)]
    image *= _coil_and_texture(plan, x_native, rng)[None]
    return _rician_12bit(image, plan, rng), labels


def _rician_12bit(image: np.ndarray, plan: PhantomPlan, rng: np.random.Generator) -> np.ndarray:
    """``|signal + complex Gaussian noise|`` (Rician), stored as 12-bit integers.

    The complex noise is drawn in polar form (Box–Muller): ``R^2 = -2 sigma^2 ln(1 - U1)``,
    angle ``2 pi U2``, so ``|S + n| = sqrt(S^2 + 2 S R cos(angle) + R^2)`` exactly, from two
    uniform draws per voxel (about twice as fast as two normal draws).
    """
    vendor = VENDORS[plan.vendor]
    sigma = vendor.blood_level / vendor.snr
    image *= np.float32(vendor.blood_level)
    noise_power = rng.random(image.shape, dtype=np.float32)
    np.log1p(-noise_power, out=noise_power)
    noise_power *= np.float32(-2.0 * sigma**2)
    cross = rng.random(image.shape, dtype=np.float32)
    cross *= np.float32(2.0 * np.pi)
    np.cos(cross, out=cross)
    cross *= np.sqrt(noise_power)
    cross *= image
    cross *= np.float32(2.0)
    np.square(image, out=image)
    image += cross
    image += noise_power
    np.clip(image, 0.0, None, out=image)  # rounding can dip a zero magnitude below 0
    np.sqrt(image, out=image)
    np.rint(image, out=image)
    return np.clip(image, 0, MAX_STORED_VALUE, out=image).astype(np.uint16)


def _assemble(plan: PhantomPlan, cine: np.ndarray, labels: np.ndarray) -> Subject:
    """The `Subject` of a planned subject from its rendered cine and ED, ES labels: the
    drawing posed as `PHANTOM_POSE` says, then laid out as every dataset's subjects."""
    drawn = Subject(
        id=phantom_id(plan.index),
        cine=cine.astype(np.float32),
        spacing=(float(plan.slice_spacing), float(plan.pixel_mm), float(plan.pixel_mm)),
        labels={plan.ed: labels[0], plan.es: labels[1]},
        ed=plan.ed,
        es=plan.es,
        meta=subject_meta_of(plan),
        source=f"phantom generator v{GENERATOR_VERSION}, seed {plan.seed}, "
        f"{phantom_id(plan.index)}",
    )
    return in_network_layout(drawn, *PHANTOM_POSE)


def render_subject(index: int, seed: int, heart_offset_mm: float | None = None) -> Subject:
    """Render subject ``index`` with ``seed``: pure and uncached, same inputs give same bytes."""
    plan = plan_subject(index, seed, heart_offset_mm)
    cine, labels = render_arrays(plan)
    return _assemble(plan, cine, labels)


def _subject_index(subject_id: str, indices: list[int]) -> int:
    """Index of ``phantom-NNNN``; `DatasetError` for anything else or not one of ``indices``."""
    match = _SUBJECT_ID.fullmatch(subject_id)
    index = int(match.group(1)) if match else -1
    if index not in indices or phantom_id(index) != subject_id:
        raise DatasetError(
            f"phantom: unknown subject id {subject_id!r}; expected "
            f"{phantom_id(indices[0])} .. {phantom_id(indices[-1])}"
        )
    return index


def vendor_indices(n_subjects: int, vendors: tuple[str, ...] = VENDOR_LETTERS) -> list[int]:
    """The indices of the first ``n_subjects`` subjects whose vendor (`vendor_of`) is one of
    ``vendors``: ``0 .. n - 1`` with all four, ``2, 6, 10, ...`` with ``("C",)``. A subject keeps
    its id and content whichever vendors a phantom renders."""
    letters = [v for v in VENDOR_LETTERS if v in vendors]
    per_round = len(VENDOR_LETTERS)
    return [
        per_round * (k // len(letters)) + VENDOR_LETTERS.index(letters[k % len(letters)])
        for k in range(n_subjects)
    ]


@dataclass(frozen=True)
class PhantomOptions(DatasetOptions):
    """The phantom's options: the generator's ``seed``, the sizes of the three splits,
    ``vendors`` (``"C"``, ``"A+B"``: only those vendor styles' subjects; None: all four) and
    ``heart_offset_mm`` (every heart's middle that far from the image centre; None: the
    default placement, within 20 mm)."""

    seed: int = 0
    n_train: int = 40
    n_val: int = 8
    n_test: int = 24
    vendors: str | None = None
    heart_offset_mm: float | None = None

    def __post_init__(self) -> None:
        for name, minimum in (("seed", 0), ("n_train", 1), ("n_val", 1), ("n_test", 1)):
            if getattr(self, name) < minimum:
                raise ValueError(
                    f"option {name}={getattr(self, name)!r} must be an integer >= {minimum}"
                )
        if self.vendors is not None:
            letters = self.vendors.split("+")
            if not self.vendors or not set(letters) <= set(VENDOR_LETTERS):
                raise ValueError(
                    f"option vendors={self.vendors!r}; expected vendor letters of "
                    f"{', '.join(VENDOR_LETTERS)} joined by '+', e.g. 'C' or 'A+B'"
                )
            object.__setattr__(self, "vendors", "+".join(v for v in VENDOR_LETTERS if v in letters))
        if self.heart_offset_mm is not None and not 0 <= self.heart_offset_mm < 1e4:
            raise ValueError(
                f"option heart_offset_mm={self.heart_offset_mm!r} must be a "
                f"distance in mm >= 0 (the heart's middle from the image centre)"
            )


OPTIONAL_OPTIONS = ("vendors", "heart_offset_mm")
"""Options a phantom's fingerprint names only when set, so that the default phantom kept its
slice cache when they were added."""


@DATASETS.register
class PhantomDataset(DatasetAdapter):
    """The built-in phantom: ``n_train + n_val + n_test`` generated subjects, no files needed.

    Subjects ``phantom-0000`` .. are split in index order (train, then val, then test);
    vendors go round robin A–D and pathologies cycle per vendor, so every split of four
    or more subjects holds all four vendors. Rendered subjects are cached under
    ``cache_dir("phantom", <hash of GENERATOR_VERSION, seed and heart offset>)``, one ``.npz``
    each. Option ``vendors`` (``"C"``, ``"A+B"``) keeps only the subjects of those vendor
    styles (`vendor_indices`): ``n_train + n_val + n_test`` of them, with the ids and content
    they have in the full phantom, so phantoms of other vendors never share a subject. Option
    ``heart_offset_mm`` places every heart's middle that far from the image centre (as far as
    the image allows; default: within 20 mm), as hearts lie in real scans.
    """

    name = "phantom"
    needs_root = False
    options_class = PhantomOptions

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        if root is not None:
            raise DatasetError(f"dataset 'phantom' is generated and takes no root; got {root}")
        typed = cast(PhantomOptions, self.typed_options(options))
        # every option, defaults included, so that the fingerprint (the slice cache's key)
        # names the subjects whatever the user wrote; ``vendors`` and ``heart_offset_mm`` only
        # when set, so that the default phantom keeps its cache
        super().__init__(
            None,
            **{
                k: v for k, v in asdict(typed).items() if k not in OPTIONAL_OPTIONS or v is not None
            },
        )
        self.seed, self.heart_offset_mm = typed.seed, typed.heart_offset_mm
        self.split_sizes = {"train": typed.n_train, "val": typed.n_val, "test": typed.n_test}
        self.indices = vendor_indices(
            self.n_subjects, tuple((typed.vendors or "A+B+C+D").split("+"))
        )

    @property
    def n_subjects(self) -> int:
        """Number of subjects over all splits."""
        return sum(self.split_sizes.values())

    def subject_ids(self) -> list[str]:
        """``phantom-0000`` .. in index order (which is sorted order)."""
        return [phantom_id(index) for index in self.indices]

    def default_split(self) -> dict[str, list[str]]:
        """Train, val and test in index order: the first ``n_train`` ids, then the next ones."""
        ids, split, start = self.subject_ids(), {}, 0
        for name, size in self.split_sizes.items():
            split[name] = ids[start : start + size]
            start += size
        return split

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        """Vendor, pathology, analytic truth, ... without rendering."""
        index = _subject_index(subject_id, self.indices)
        return subject_meta_of(plan_subject(index, self.seed, self.heart_offset_mm))

    def cache_folder(self) -> Path:
        """Folder of this seed's rendered subjects (keyed by generator version, seed and, when
        set, the heart offset)."""
        key: dict[str, int | float] = {"generator_version": GENERATOR_VERSION, "seed": self.seed}
        if self.heart_offset_mm is not None:
            key["heart_offset_mm"] = self.heart_offset_mm
        blob = json.dumps(key, sort_keys=True)
        return cache_dir("phantom", hashlib.sha256(blob.encode()).hexdigest()[:16])

    def load(self, subject_id: str) -> Subject:
        """The subject, from the cache or rendered (and cached atomically) on first use."""
        plan = plan_subject(
            _subject_index(subject_id, self.indices), self.seed, self.heart_offset_mm
        )
        path = self.cache_folder() / f"{subject_id}.npz"
        if not path.exists():
            cine, labels = render_arrays(plan)
            _write_atomically(path, cine=cine, labels=labels)
        with np.load(path) as stored:
            return _assemble(plan, stored["cine"], stored["labels"])

    def fingerprint(self) -> dict[str, Any]:
        """Name and options plus ``GENERATOR_VERSION``: a new generator is new data."""
        return {**super().fingerprint(), "generator_version": GENERATOR_VERSION}

    def source(self) -> dict[str, Any]:
        """The seed and generator name a subject's content (the vendors and split sizes only
        choose which subjects a phantom holds)."""
        return {"name": self.name, "seed": self.seed, "generator_version": GENERATOR_VERSION}


def _write_atomically(path: Path, cine: np.ndarray, labels: np.ndarray) -> None:
    """Write a subject's ``cine`` and ``labels`` as an ``.npz`` at ``path`` via a temp file
    and ``os.replace``.

    Uncompressed on purpose: noisy 12-bit images deflate only to about 68 % and zlib
    takes longer than rendering the subject again.
    """
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as stream:
            np.savez(stream, cine=cine, labels=labels)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
