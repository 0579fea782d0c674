"""The scores behind every number, for re-analysis: per training run and test subject, and raw.

``subject_scores`` holds each training run's score of each test subject in every view (the unit
of every test and interval, `blocks.subject_scores`), ``subject_scores_combined`` the same
averaged over a method's seeds, and ``clinical_points`` and ``subjects`` the store's own rows.
These tables are large, so they are downloads in CSV or parquet only.
"""

from __future__ import annotations

import pandas as pd

from cmrbench.reports.stats.blocks import BLOCK_KEYS, VIEWS
from cmrbench.reports.stats.catalogue import (
    METHOD,
    Analysis,
    Column,
    Context,
    Table,
    shared_columns,
)
from cmrbench.store.layout import TEST_DATASET

CELL_KEY = Column("cell_key", "key of the cell (training run) the row comes from")
SUBJECT_IDENTITY = (
    CELL_KEY,
    METHOD,
    *shared_columns(
        ("encoder", "dataset", "setting", "augmentation", "budget", "n_labelled", "seed", "subject")
    ),
)
VENDOR = (
    Column("vendor", "scanner vendor letter of the test subject (A–D; empty: unknown)"),
    Column("seen_vendor", "the training saw the subject's vendor (vendor settings)"),
)
PATHOLOGY = Column("pathology", "pathology group of the test subject (when the dataset has one)")
VIEW_COLUMNS = tuple(
    Column(
        view.name,
        f"{view.metric} averaged over the annotated "
        f"{view.class_name or 'classes'} at "
        f"{view.phase or 'ED and ES'}",
    )
    for view in VIEWS
)

SUBJECT_SCORES = Table(
    "subject_scores",
    "score per training run (seed) × test subject and view: the unit of every test and interval",
    (*SUBJECT_IDENTITY, VENDOR[1], VENDOR[0], PATHOLOGY, *VIEW_COLUMNS),
    downloads=("csv",),
)
SUBJECT_SCORES_COMBINED = Table(
    "subject_scores_combined",
    "score per test subject and view, averaged over the seeds "
    "(labelled subsets) of a method × block",
    (
        *shared_columns((*BLOCK_KEYS, "method", "subject")),
        Column("n_seeds", "seeds averaged"),
        *VIEW_COLUMNS,
    ),
    downloads=("csv",),
)
TEST_SET = Column(
    TEST_DATASET,
    "the test set the row scores: the cell's own dataset here "
    "(external test sets are in the generalisation table)",
)
CLINICAL_POINTS = Table(
    "clinical_points",
    "predicted and reference clinical values per training run × test subject × quantity",
    (
        *SUBJECT_IDENTITY,
        *VENDOR,
        Column("quantity", "clinical end point (LV_EDV, ..., RV_EF)"),
        Column("unit", "ml, % or g"),
        Column("pred", "value from the predicted segmentation"),
        Column("ref", "value from the reference segmentation"),
        TEST_SET,
    ),
    pages=("clinical.html",),
    downloads=("parquet",),
)
SUBJECTS = Table(
    "subjects",
    "every stored row: cell × subject × phase × class (DSC, HD95, volumes, annotated)",
    (
        *SUBJECT_IDENTITY,
        *VENDOR,
        Column("phase", "ED or ES"),
        Column("class", "LV, MYO or RV"),
        Column("annotated", "the class is annotated on the subject's slices (else n/a)"),
        Column("dsc", "3D Dice (both masks empty: 1, one empty: 0)"),
        Column("hd95_mm", "95th-percentile Hausdorff distance in mm (one mask empty: undefined)"),
        Column("vol_pred_ml", "predicted volume in ml"),
        Column("vol_ref_ml", "reference volume in ml"),
        PATHOLOGY,
        TEST_SET,
        Column(
            "hd95_worst_mm", "the cell's field-of-view diagonal: what an undefined HD95 counts as"
        ),
    ),
    downloads=("parquet",),
)


def per_run_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """`blocks.subject_scores` without its per-view undefined / entry counts."""
    if scores.empty:
        return pd.DataFrame(columns=[*BLOCK_KEYS, "method", "seed", "subject"])
    return scores[[c for c in scores.columns if "__" not in c]]


def compute(context: Context) -> dict[str, pd.DataFrame]:
    per_run = per_run_scores(context.scores)
    views = [v.name for v in context.views]
    combined = (
        (
            per_run.groupby([*BLOCK_KEYS, "method", "subject"], observed=True, sort=False)
            .agg(n_seeds=("seed", "nunique"), **{v: (v, "mean") for v in views})
            .reset_index()
        )
        if not per_run.empty
        else per_run
    )
    return {
        "subject_scores": per_run,
        "subject_scores_combined": combined,
        "clinical_points": context.store.clinical,
        "subjects": context.store.subjects,
    }


ANALYSIS = Analysis((SUBJECT_SCORES, SUBJECT_SCORES_COMBINED, CLINICAL_POINTS, SUBJECTS), compute)
