"""Where cmrbench keeps its caches (override with ``CMRBENCH_CACHE``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$CMRBENCH_CACHE/<parts>`` (default ``~/.cache/cmrbench``), created on demand."""
    root = Path(os.environ.get("CMRBENCH_CACHE", Path.home() / ".cache" / "cmrbench"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
