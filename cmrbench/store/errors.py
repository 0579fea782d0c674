"""The error a results store raises when a file breaks its layout."""

from __future__ import annotations

from cmrbench.errors import CmrbenchError


class StoreError(CmrbenchError, ValueError):
    """The results store breaks its layout; the message names the file and what was expected."""
