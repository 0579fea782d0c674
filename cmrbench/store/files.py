"""Atomic file writes, the JSON reader and the append-only JSON-lines log of the store.

Every file is written to a temp file in its own folder, fsynced and renamed into place, so
a reader never sees a partial file (a killed writer leaves only a ``.<name>.*.tmp``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmrbench.store.errors import StoreError


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
    """`atomic_write_bytes` of indented JSON (values JSON cannot hold are written as text)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """`atomic_write_bytes` of a parquet file (no index column)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`atomic_write_bytes` of a compressed ``.npz`` of ``arrays``."""
    buffer = io.BytesIO()
    # mypy checks the ``**arrays`` dict against numpy's stubbed ``allow_pickle: bool``
    # keyword too (numpy >= 2.1); the values are all arrays, and numpy 1.26 (supported) has
    # no such keyword to pass explicitly instead
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    """Parse one JSON file; a missing or broken file raises `StoreError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: cannot read JSON ({err})") from err


class JsonlLog:
    """Append-only ``log.jsonl`` (one JSON object per line); each line is written whole."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

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
        """The number of lines written so far (0 when the file is absent)."""
        return len(self.path.read_text().splitlines()) if self.path.exists() else 0

    def records(self) -> list[dict[str, Any]]:
        """Every record in order; a line that is not JSON raises `StoreError` naming it."""
        if not self.path.is_file():
            return []
        rows = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise StoreError(
                    f"{self.path}:{number}: expected one JSON object per line ({err})"
                ) from err
        return rows
