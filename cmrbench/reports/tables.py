"""The catalogue's tables as text: ``cmrbench stats RUN --table NAME`` and ``--tables``.

`table_text` prints one table of a store (CSV and JSON as the bytes of its download on the
site, aligned text or markdown otherwise); `catalogue_text` lists every table with its pages,
downloads, description and columns (`cmrbench.reports.stats.CATALOGUE`).
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

from cmrbench.reports.leaderboard import check_format, warn_unreadable
from cmrbench.reports.stats import CATALOGUE, BootstrapConfig, Statistics
from cmrbench.reports.stats.catalogue import DOWNLOADS, table_bytes
from cmrbench.reports.text import aligned, markdown_rows, md_escape, text_cell
from cmrbench.store import load_store


def table_text(
    run_dir: Path,
    name: str,
    fmt: str = "table",
    config: BootstrapConfig = BootstrapConfig(),
    power_delta: float | None = None,
) -> str:
    """Table ``name`` of the catalogue for the store at ``run_dir``: ``csv`` and ``json`` as
    the bytes of its download (`catalogue.table_bytes`), ``table`` and ``markdown`` as text."""
    check_format(fmt)
    CATALOGUE[name]  # an unknown name fails before reading
    store = load_store(Path(run_dir))
    warn_unreadable(store)
    frame = Statistics(store, config, power_delta=power_delta)[name]
    if fmt in ("csv", "json"):
        return table_bytes(frame, fmt).decode("utf-8")
    header = [str(c) for c in frame.columns]
    body = [[text_cell(v) for v in row] for row in frame.itertuples(index=False)]
    if fmt == "markdown":
        return (
            "\n".join(
                markdown_rows(
                    [md_escape(h) for h in header], [[md_escape(c) for c in r] for r in body]
                )
            )
            + "\n"
        )
    return "\n".join(aligned([header, *body])) + "\n"


def catalogue_text(fmt: str = "table") -> str:
    """Every table of the catalogue: name, pages, downloads, description and columns (with
    their meanings in ``markdown``, ``json`` and ``csv``)."""
    check_format(fmt)
    if fmt == "json":
        return (
            json.dumps(
                [
                    {
                        "name": t.name,
                        "description": t.description,
                        "pages": list(t.pages),
                        "downloads": list(t.downloads),
                        "columns": [{"name": c.name, "meaning": c.meaning} for c in t.columns],
                    }
                    for t in CATALOGUE
                ],
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["table", "column", "meaning"])
        writer.writerows([t.name, c.name, c.meaning] for t in CATALOGUE for c in t.columns)
        return out.getvalue()
    blocks = []
    for table in CATALOGUE:
        where = ", ".join(table.pages) or "no page"
        files = ", ".join(DOWNLOADS[f] for f in table.downloads) or "command line only"
        if fmt == "markdown":
            rows = [[f"`{c.name}`", md_escape(c.meaning)] for c in table.columns]
            blocks.append(
                f"### {table.name}\n\n{table.description} (shown on: {where}; "
                f"downloads: {files})\n\n"
                + "\n".join(markdown_rows(["column", "meaning"], rows))
                + "\n"
            )
        else:
            columns = textwrap.fill(
                ", ".join(table.column_names),
                width=96,
                initial_indent="  columns: ",
                subsequent_indent=" " * 11,
            )
            blocks.append(
                f"{table.name}: {table.description}\n  shown on: {where}; downloads: "
                f"{files}\n{columns}\n"
            )
    return "\n".join(blocks)
