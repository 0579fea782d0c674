"""Shared test fixtures: the tiny end-to-end grid and a private cache per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_GRID = REPO / "tests" / "grids" / "tiny.yaml"


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One phantom/slice cache for the whole session (content-addressed, so shared safely)."""
    return tmp_path_factory.mktemp("cmrbench-cache")


@pytest.fixture
def cmrbench_env(session_cache, monkeypatch) -> dict[str, str]:
    """Environment for in-process and subprocess runs: the session cache, no plugins."""
    monkeypatch.setenv("CMRBENCH_CACHE", str(session_cache))
    monkeypatch.delenv("CMRBENCH_PLUGINS", raising=False)
    return {**os.environ, "CMRBENCH_CACHE": str(session_cache)}


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cmrbench ARGS`` in a fresh Python process."""
    return subprocess.run([sys.executable, "-m", "cmrbench.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
