"""The static checks `.ci/run` runs before the tests (`.ci/static`: ruff lint, import order and
format check, then mypy, as pyproject.toml configures them), on a copy of the package: clean
as it is, and failing, naming the file and the rule, once a violation is seeded into it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / ".ci" / "static"


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The package and its configuration, copied (no virtual environment, no caches)."""
    folder = tmp_path_factory.mktemp("static") / "repo"
    folder.mkdir()
    shutil.copy(ROOT / "pyproject.toml", folder)
    shutil.copytree(
        ROOT / "cmrbench", folder / "cmrbench", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def static_checks(folder: Path) -> subprocess.CompletedProcess:
    """`.ci/static` on ``folder``, with this interpreter's ruff and mypy."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(STATIC), str(folder)], capture_output=True, text=True, env=env, timeout=600
    )


@contextmanager
def seeded(path: Path, code: str) -> Iterator[None]:
    """``code`` appended to ``path`` for the duration of the block."""
    original = path.read_text()
    path.write_text(original + code)
    try:
        yield
    finally:
        path.write_text(original)


def test_the_package_passes_the_static_checks(copy):
    result = static_checks(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_an_unused_import_fails_the_lint_naming_file_and_rule(copy):
    with seeded(copy / "cmrbench" / "errors.py", "\nimport os\n"):
        result = static_checks(copy)
    assert result.returncode != 0
    assert "cmrbench/errors.py" in result.stdout and "F401" in result.stdout


def test_unformatted_code_fails_the_format_check(copy):
    with seeded(copy / "cmrbench" / "errors.py", "\n\nSEEDED = [1,2]\n"):
        result = static_checks(copy)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "would be reformatted" in output and "cmrbench/errors.py" in output


def test_a_type_error_fails_mypy_naming_file_and_error(copy):
    code = '\n\ndef seeded() -> int:\n    return "not an int"\n'
    with seeded(copy / "cmrbench" / "errors.py", code):
        result = static_checks(copy)
    assert result.returncode != 0
    assert "cmrbench/errors.py" in result.stdout and "[return-value]" in result.stdout
