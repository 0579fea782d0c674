"""Store text made harmless for each output format: CSV cells, SVG, markdown and terminals.

Method names and other strings come from users' files. HTML escaping is jinja2's job; this
module covers the rest: a CSV cell that starts like a formula (``=``, ``+``, ``-``, ``@``) or
with a control character is prefixed with ``'`` so spreadsheets show it as text (OWASP's
CSV-injection advice; JSON downloads keep the raw string), and control characters are
removed where they would break a format (XML forbids most of them in SVG) or a terminal.
"""

from __future__ import annotations

import re

import numpy as np
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


def text_cell(value: object) -> str:
    """A table value as terminal text: NaN empty, floats to 6 significant digits."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return strip_controls(value)


def aligned(rows: list[list[str]]) -> list[str]:
    """Text rows padded to their column widths, with a rule under the first (the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    header, *body = rows
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        for r in [header, ["-" * w for w in widths], *body]
    ]


def markdown_rows(header: list[str], body: list[list[str]], rule: str | None = None) -> list[str]:
    """A markdown table of already escaped cells (``rule``: the alignment row)."""
    rule = rule or "|" + "---|" * len(header)
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in body)]


def md_escape(text: str) -> str:
    """Text safe inside a markdown table cell (pipes, HTML and emphasis characters escaped)."""
    for char in ("\\", "|", "*", "_", "`", "[", "]", "<", ">"):
        text = text.replace(char, "\\" + char)
    return text


__all__ = [
    "aligned",
    "csv_cell",
    "csv_safe",
    "markdown_rows",
    "md_escape",
    "strip_controls",
    "text_cell",
]
