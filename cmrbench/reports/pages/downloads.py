"""The downloads page: every table of the catalogue that has downloads, as files under ``data/``.

Each table of `cmrbench.reports.stats.CATALOGUE` with download formats is written as
``data/<name>.<format>`` (`catalogue.table_bytes`: CSV with formula-like text quoted, JSON with
NaN as null, or parquet), and listed with its description and row count, in catalogue order.
"""

from __future__ import annotations

from typing import Any

from cmrbench.reports.pages.base import Page
from cmrbench.reports.stats import CATALOGUE
from cmrbench.reports.stats.catalogue import DOWNLOADS, table_bytes


class DownloadsPage(Page):
    """``downloads.html`` and the files it links to."""

    file, label, template = "downloads.html", "Downloads", "downloads.html"

    def context(self) -> dict[str, Any]:
        downloads = []
        for table in CATALOGUE:
            if not table.downloads:
                continue
            frame = self.report.statistics[table.name]
            files = []
            for fmt in table.downloads:
                name = f"data/{table.name}.{fmt}"
                self.report.site.write_bytes(name, table_bytes(frame, fmt))
                files.append((DOWNLOADS[fmt], name))
            downloads.append(
                {
                    "name": table.name,
                    "files": files,
                    "rows": len(frame),
                    "description": table.description,
                }
            )
        return {"downloads": downloads}
