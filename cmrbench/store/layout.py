"""The results-store layout: folder names, file names and the columns of its tables.

One run folder (HELM-style: runs write plain files, reports read only these)::

    RUN_DIR/run.json                           provenance of the run (`RunRecord`)
    RUN_DIR/pretrain/<method>_<encoder>_<key>/ spec.json log.jsonl checkpoint.pt
        result.json (`PretrainResult`, written last: the job is done) | error.json
    RUN_DIR/cells/<method>_<encoder>_b<budget>_<aug>[_<setting>]_s<seed>_<key>/
        spec.json log.jsonl transfer.json subjects.parquet clinical.parquet slices.npz
        result.json (`CellResult`, written last: the cell is done) | error.json (`ErrorRecord`)
        model.pt (the fine-tuned weights: kept with --keep-checkpoints, and until every
        external test set planned for the cell is scored)
    RUN_DIR/cells/<cell>/external/<label>_<subjects>_<key>/   one external test set
        spec.json subjects.parquet clinical.parquet (rows with `test_dataset` = label)
        result.json (`ExternalResult`, written last) | error.json

Folder names are built here and only here (the specs' ``folder_name`` and the synthetic
test store call these functions), as nnU-Net keeps its run-folder naming in one module.
"""

from __future__ import annotations

import re

RUN = "run.json"
CELLS, PRETRAIN = "cells", "pretrain"
SPEC, LOG, RESULT, ERROR = "spec.json", "log.jsonl", "result.json", "error.json"
TRANSFER = "transfer.json"
SUBJECTS, CLINICAL, SLICES = "subjects.parquet", "clinical.parquet", "slices.npz"
CHECKPOINT, LOOP_STATE = "checkpoint.pt", "loop_state.pt"
FINETUNED = "model.pt"
EXTERNAL = "external"
# A done cell fine-tuned again for its fine-tuned weights keeps its own log and loop state.
REFIT_LOG, REFIT_LOOP_STATE = "refit_log.jsonl", "refit_loop_state.pt"
LOCK = ".lock"

ID_COLUMNS = (
    "cell_key",
    "method",
    "encoder",
    "dataset",
    "setting",
    "augmentation",
    "budget",
    "n_labelled",
    "seed",
    "subject",
    "vendor",
    "seen_vendor",
)
SUBJECT_COLUMNS = ID_COLUMNS + (
    "phase",
    "class",
    "annotated",
    "dsc",
    "hd95_mm",
    "vol_pred_ml",
    "vol_ref_ml",
)
CLINICAL_COLUMNS = ID_COLUMNS + ("quantity", "unit", "pred", "ref")
# Read when every cell's file holds them (stores written before they existed do not).
OPTIONAL_SUBJECT_COLUMNS = ("pathology",)
# The test set a row scores: the cell's own dataset or an external set's label. Rows of stores
# written before external test sets lack it and read as their own dataset.
TEST_DATASET = "test_dataset"
EXTERNAL_SUBJECT_COLUMNS = SUBJECT_COLUMNS + (TEST_DATASET,)
EXTERNAL_CLINICAL_COLUMNS = CLINICAL_COLUMNS + (TEST_DATASET,)
# Repeated strings the reader turns into pandas categories (memory: ~10^6 rows per grid).
CATEGORY_COLUMNS = (
    "cell_key",
    "method",
    "encoder",
    "dataset",
    "setting",
    "augmentation",
    "budget",
    "subject",
    "vendor",
    "pathology",
    "phase",
    "class",
    "quantity",
    "unit",
    TEST_DATASET,
)
# slices.npz: image float32 (K, H, W), reference and prediction uint8 (K, H, W),
# subject, phase, slice (K,).
SLICE_ARRAYS = ("image", "reference", "prediction", "subject", "phase", "slice")


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-``), at most 40 chars."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-") or "x")[:40]


def pretrain_folder_name(method: str, encoder: str, key: str) -> str:
    """``<method>_<encoder>_<key>``: the folder of one pretraining job under ``pretrain/``."""
    return f"{slug(method)}_{slug(encoder)}_{key}"


def cell_folder_name(
    method: str, encoder: str, budget: str, augmentation: str, setting: str, seed: int, key: str
) -> str:
    """``<method>_<encoder>_b<budget>_<aug>[_<setting>]_s<seed>_<key>``: the folder of one
    cell under ``cells/`` (the setting is left out when it is "default")."""
    setting_part = "" if setting == "default" else f"_{slug(setting)}"
    return f"{slug(method)}_{slug(encoder)}_b{budget}_{augmentation}{setting_part}_s{seed}_{key}"


def external_folder_name(label: str, subjects: str, key: str) -> str:
    """``<label>_<subjects>_<key>``: one external test set's folder under a cell's
    ``external/``."""
    return f"{slug(label)}_{slug(subjects)}_{key}"
