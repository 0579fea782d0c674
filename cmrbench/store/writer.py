"""The writer side of the store: where each job's files live, and writing them.

The store knows jobs only by what `StoredJob` asks of them (their key, folder name and
whether they are a cell or a pretraining job), so it imports nothing from the harness:
`cmrbench.benchmark`'s frozen specs satisfy it, and so does the synthetic test store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from cmrbench.store.errors import StoreError
from cmrbench.store.files import (
    atomic_write_json,
    atomic_write_npz,
    atomic_write_parquet,
    read_json,
)
from cmrbench.store.layout import (
    CELLS,
    CLINICAL,
    CLINICAL_COLUMNS,
    ERROR,
    PRETRAIN,
    RESULT,
    RUN,
    SLICE_ARRAYS,
    SLICES,
    SPEC,
    SUBJECT_COLUMNS,
    SUBJECTS,
    TRANSFER,
)
from cmrbench.store.locks import JobLock
from cmrbench.store.records import (
    CellResult,
    ErrorRecord,
    ExternalResult,
    PretrainResult,
    RunRecord,
)

log = logging.getLogger(__name__)


class StoredJob(Protocol):
    """A job the store holds: ``store_folder`` is `layout.CELLS`, `layout.PRETRAIN`, or a
    cell's ``external`` folder (``cells/<cell>/external``) for an external test set."""

    @property
    def store_folder(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def folder_name(self) -> str: ...


def result_record(job: StoredJob) -> type[CellResult] | type[PretrainResult] | type[ExternalResult]:
    """The record a job's ``result.json`` holds: a cell's, a pretraining job's, or an external
    evaluation's (in a cell's ``external`` folder)."""
    if job.store_folder == CELLS:
        return CellResult
    if job.store_folder == PRETRAIN:
        return PretrainResult
    return ExternalResult


class StoreWriter:
    """A run folder as the runner, the executors and the CLI write it."""

    def __init__(self, run_dir: Path | str) -> None:
        self.root = Path(run_dir)

    def job_dir(self, job: StoredJob) -> Path:
        """``RUN_DIR/cells/<folder_name>`` or ``RUN_DIR/pretrain/<folder_name>``."""
        return self.root / job.store_folder / job.folder_name

    def is_done(self, job: StoredJob) -> bool:
        """Done = ``result.json`` exists (it is written last, atomically) and reads as the
        job's record; a damaged one (a disk fault) is not done (`set_aside_unreadable`)."""
        return (self.job_dir(job) / RESULT).exists() and self.unreadable_result(job) is None

    def unreadable_result(self, job: StoredJob) -> str | None:
        """Why the job's ``result.json`` cannot be read, or None (absent or readable)."""
        path = self.job_dir(job) / RESULT
        record = result_record(job)
        try:
            if path.exists():
                record.from_json(read_json(path), path)
        except StoreError as err:
            return str(err)
        return None

    def set_aside_unreadable(self, job: StoredJob) -> Path | None:
        """Move a ``result.json`` that cannot be read to ``result.unreadable-<UTC time>.json``
        beside it (kept for inspection; the job is then not done and is computed again) and
        return where it went; None when the result is absent or readable, or another
        process holds the job (it is computing it)."""
        if self.unreadable_result(job) is None:
            return None
        folder = self.job_dir(job)
        lock = JobLock(folder)
        if not lock.acquire():
            return None
        try:
            reason = self.unreadable_result(job)  # again, now that no one else writes it
            if reason is None:
                return None
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            kept = folder / f"result.unreadable-{stamp}.json"
            n = 2
            while kept.exists():
                kept, n = folder / f"result.unreadable-{stamp}-{n}.json", n + 1
            os.replace(folder / RESULT, kept)
        finally:
            lock.release()
        log.warning(f"{reason}: moved to {kept.name}; the job is computed again")
        return kept

    def has_error(self, job: StoredJob) -> bool:
        """Whether the job's last attempt failed (``error.json`` exists)."""
        return (self.job_dir(job) / ERROR).exists()

    def error(self, job: StoredJob) -> ErrorRecord:
        """The job's ``error.json``."""
        path = self.job_dir(job) / ERROR
        return ErrorRecord.from_json(read_json(path), path)

    def write_spec(self, job: StoredJob, spec_json: Mapping[str, Any], **index: Any) -> Path:
        """Create the job folder with its ``spec.json`` (idempotent) and return the folder.

        ``spec_json`` is the spec already turned into plain JSON values; the file holds
        ``{"key": job.key, **index, **spec_json}`` (``index``: fields the reader finds at the
        top, e.g. a cell's ``pretrain_key`` and ``dataset``).
        """
        folder = self.job_dir(job)
        if not (folder / SPEC).exists():
            atomic_write_json(folder / SPEC, {"key": job.key, **index, **spec_json})
        return folder

    def write_transfer(self, job: StoredJob, transfer: Mapping[str, Any]) -> None:
        """``transfer.json``: which pretrained tensors seeded the cell's net."""
        atomic_write_json(self.job_dir(job) / TRANSFER, dict(transfer))

    def write_tables(
        self,
        job: StoredJob,
        subjects: pd.DataFrame,
        clinical: pd.DataFrame,
        slices: Mapping[str, np.ndarray],
    ) -> None:
        """A cell's ``subjects.parquet``, ``clinical.parquet`` and ``slices.npz`` (the last
        only when there are slices), after checking they hold the columns and arrays the
        reader expects (`layout.SUBJECT_COLUMNS`, `CLINICAL_COLUMNS`, `SLICE_ARRAYS`)."""
        folder = self.job_dir(job)
        for name, frame, columns in (
            (SUBJECTS, subjects, SUBJECT_COLUMNS),
            (CLINICAL, clinical, CLINICAL_COLUMNS),
        ):
            absent = [c for c in columns if c not in frame.columns]
            if absent:
                raise StoreError(f"{folder / name}: rows lack column(s) {absent}")
        if slices and set(slices) != set(SLICE_ARRAYS):
            raise StoreError(
                f"{folder / SLICES}: expected arrays {list(SLICE_ARRAYS)}, got {sorted(slices)}"
            )
        atomic_write_parquet(folder / SUBJECTS, subjects)
        atomic_write_parquet(folder / CLINICAL, clinical)
        if slices:
            atomic_write_npz(folder / SLICES, dict(slices))

    def result(self, job: StoredJob) -> dict[str, Any]:
        """The job's ``result.json`` as parsed JSON (check it with its record's ``from_json``)."""
        return read_json(self.job_dir(job) / RESULT)

    def write_result(
        self, job: StoredJob, result: CellResult | PretrainResult | ExternalResult
    ) -> None:
        """``result.json``: the job is done (call it last)."""
        atomic_write_json(self.job_dir(job) / RESULT, result.to_json())

    def write_error(self, job: StoredJob, error: ErrorRecord) -> None:
        """``error.json``: the job failed."""
        atomic_write_json(self.job_dir(job) / ERROR, error.to_json())

    def clear_error(self, job: StoredJob) -> None:
        """Remove a previous attempt's ``error.json`` (a retry starts clean)."""
        (self.job_dir(job) / ERROR).unlink(missing_ok=True)

    def write_run(self, run: RunRecord) -> None:
        """``run.json``: the run's provenance (rewritten when the run ends)."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / RUN, run.to_json())
