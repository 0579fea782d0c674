"""The results store: one folder per pretraining job and per cell, written atomically.

Layout (HELM-style: runs write plain files, reports read only these)::

    RUN_DIR/run.json                          provenance of the run
    RUN_DIR/pretrain/<method>_<encoder>_<key>/ spec.json log.jsonl checkpoint.pt result.json
    RUN_DIR/cells/<method>_<encoder>_b<budget>_<aug>_s<seed>_<key>/
        spec.json log.jsonl transfer.json subjects.parquet clinical.parquet slices.npz
        result.json (written last: the cell is done) | error.json (the cell failed)

Every file is written to a temp file in the same folder and renamed into place, so a
reader never sees a partial file. Locks are ``flock`` locks on a ``.lock`` file: the
kernel drops them when the holding process dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from cmrbench.benchmark.spec import CellSpec, PretrainSpec, spec_from_json, to_jsonable

RESULT, ERROR, SPEC, LOG = "result.json", "error.json", "spec.json", "log.jsonl"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename (all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """`atomic_write_bytes` of indented JSON."""
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """`atomic_write_bytes` of a parquet file."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


class JobLock:
    """A non-blocking or blocking ``flock`` on ``folder/.lock`` that dies with its process."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".lock"
        self._file: Any = None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock; False if another process holds it and ``blocking`` is False."""
        self._file = open(self.path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._file.close()
            self._file = None
            return False
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @contextlib.contextmanager
    def held(self, blocking: bool = False) -> Iterator[bool]:
        """Context manager around `acquire`/`release`; yields whether it was acquired."""
        got = self.acquire(blocking)
        try:
            yield got
        finally:
            if got:
                self.release()


class JsonlLog:
    """Append-only ``log.jsonl``; each line is flushed whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def truncate_to(self, n_lines: int) -> None:
        """Keep the first ``n_lines`` lines (resume after a crash rewinds the log)."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)[:n_lines]
        atomic_write_bytes(self.path, "".join(lines).encode())

    def count(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.exists() else 0

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class Store:
    """A run folder: where each job's files live and which jobs are done."""

    def __init__(self, run_dir: Path | str) -> None:
        self.root = Path(run_dir)

    def cell_dir(self, spec: CellSpec) -> Path:
        return self.root / "cells" / spec.folder_name

    def pretrain_dir(self, spec: PretrainSpec) -> Path:
        return self.root / "pretrain" / spec.folder_name

    def job_dir(self, spec: CellSpec | PretrainSpec) -> Path:
        return self.cell_dir(spec) if isinstance(spec, CellSpec) else self.pretrain_dir(spec)

    def is_done(self, spec: CellSpec | PretrainSpec) -> bool:
        """Done = ``result.json`` exists (it is written last, atomically)."""
        return (self.job_dir(spec) / RESULT).exists()

    def has_error(self, spec: CellSpec | PretrainSpec) -> bool:
        return (self.job_dir(spec) / ERROR).exists()

    def write_spec(self, spec: CellSpec | PretrainSpec) -> Path:
        """Create the job folder with its ``spec.json`` (idempotent)."""
        folder = self.job_dir(spec)
        if not (folder / SPEC).exists():
            extra = ({"pretrain_key": spec.pretrain_key, "dataset": spec.data.dataset}
                     if isinstance(spec, CellSpec) else {})
            atomic_write_json(folder / SPEC, {"key": spec.key, **extra, **to_jsonable(spec)})
        return folder

    def cell_specs(self) -> list[CellSpec]:
        """Specs of every cell folder in the store (done or not)."""
        specs = []
        for path in sorted((self.root / "cells").glob(f"*/{SPEC}")):
            specs.append(spec_from_json(read_json(path)))
        return specs  # type: ignore[return-value]
