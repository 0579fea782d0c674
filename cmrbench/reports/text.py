"""Store text made harmless for each output format: CSV cells, SVG, markdown and terminals.

Method names and other strings come from users' files. HTML escaping is jinja2's job; this
module covers the rest: a CSV cell that starts like a formula (``=``, ``+``, ``-``, ``@``) or
with a control character is prefixed with ``'`` so spreadsheets show it as text (OWASP's
CSV-injection advice; JSON downloads keep the raw string), and control characters are
removed where they would break a format (XML forbids most of them in SVG) or a terminal.
"""

from __future__ import annotations

import re

import pandas as pd

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
FORMULA_STARTS = ("=", "+", "-", "@")


def strip_controls(text: object) -> str:
    """``text`` without C0/C1 control characters (tabs and newlines included)."""
    return CONTROL_CHARACTERS.sub("", str(text))


def csv_cell(value: object) -> object:
    """A string that a spreadsheet would run as a formula, prefixed with ``'``; else as is."""
    if (
        isinstance(value, str)
        and value
        and (value.startswith(FORMULA_STARTS) or CONTROL_CHARACTERS.match(value))
    ):
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with `csv_cell` applied to every text column (numbers are left alone)."""
    text_columns = [
        c
        for c in frame.columns
        if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c].dtype)
    ]
    if not text_columns:
        return frame
    return frame.assign(**{c: frame[c].map(csv_cell) for c in text_columns})


__all__ = ["csv_cell", "csv_safe", "strip_controls"]
