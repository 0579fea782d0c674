"""The words the writer and the reader of results share: classes, phases, clinical quantities.

The evaluation writes rows named with these words (`cmrbench.benchmark.evaluate`: a row's
``class`` and ``phase``, a clinical row's ``quantity`` and ``unit``), the dataset adapters
label voxels with these values (`cmrbench.datasets.subject`), and the reports read them back
(`cmrbench.reports`). They are defined here once; this module imports nothing from cmrbench,
so every layer may use it (torch-free).

One canonical label convention everywhere inside cmrbench (DESIGN.md, "Subject"):
0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool.
"""

from __future__ import annotations

BACKGROUND, LV, MYO, RV = 0, 1, 2, 3
NUM_CLASSES = 4
CLASS_NAMES: dict[int, str] = {LV: "LV", MYO: "MYO", RV: "RV"}
FOREGROUND = (LV, MYO, RV)
# The foreground classes by name, in label order: what a result row's ``class`` holds.
STRUCTURES: tuple[str, ...] = tuple(CLASS_NAMES[c] for c in FOREGROUND)
# The cardiac phases a test subject is scored at (end-diastole, end-systole).
PHASES: tuple[str, ...] = ("ED", "ES")
# Clinical end points and their units, LV before RV (the order reports show them in):
# end-diastolic and end-systolic volumes, ejection fraction, and LV mass from the ED myocardium.
CLINICAL_UNITS: dict[str, str] = {
    "LV_EDV": "ml",
    "LV_ESV": "ml",
    "LV_EF": "%",
    "LV_MASS": "g",
    "RV_EDV": "ml",
    "RV_ESV": "ml",
    "RV_EF": "%",
}
CLINICAL_QUANTITIES: tuple[str, ...] = tuple(CLINICAL_UNITS)

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "CLINICAL_QUANTITIES",
    "CLINICAL_UNITS",
    "FOREGROUND",
    "LV",
    "MYO",
    "NUM_CLASSES",
    "PHASES",
    "RV",
    "STRUCTURES",
]
