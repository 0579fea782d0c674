"""The repository's paths and `run_cli`, which runs ``cmrbench`` in a fresh Python process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_GRID = REPO / "tests" / "grids" / "tiny.yaml"


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``cmrbench ARGS`` in a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-m", "cmrbench.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
