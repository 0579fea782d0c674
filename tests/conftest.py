"""Shared test fixtures: a private cache per test session and the environment that uses it
(helpers live in `tests/support`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
