"""The real data that ships beside the repository (``../shared/data``, CC0 Sunnybrook studies):
where it lies, and the mark that skips a test, saying where it looked, when it is not there."""

from __future__ import annotations

import pytest

from support.cli import REPO

SUNNYBROOK = (REPO.parent / "shared" / "data" / "sunnybrook").resolve()
needs_sunnybrook = pytest.mark.skipif(
    not (SUNNYBROOK / "link.csv").is_file(),
    reason=f"Sunnybrook studies not found at {SUNNYBROOK}; they ship beside the repository "
    f"(../shared/data/sunnybrook) in CI",
)
