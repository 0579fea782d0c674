"""The static HTML report of a results store, one module per page (`build_site`).

The site is plain files: HTML from jinja2 templates with autoescaping on, SVG figures, PNG
overlays, one CSS file, and the downloads of every table. It has no script libraries and no
external URL, links are relative, so it works from ``file://`` and any static host. Pages are
built in the order of `PAGES` (which is also the navigation's order), all over one `Report`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from cmrbench.reports.leaderboard import warn_unreadable
from cmrbench.reports.pages.base import TEMPLATES, Page, Report
from cmrbench.reports.pages.clinical import ClinicalPage
from cmrbench.reports.pages.details import DetailsPage
from cmrbench.reports.pages.downloads import DownloadsPage
from cmrbench.reports.pages.index import IndexPage
from cmrbench.reports.pages.methods import MethodsPage
from cmrbench.reports.pages.provenance import ProvenancePage
from cmrbench.reports.pages.subgroups import PathologiesPage, VendorsPage
from cmrbench.reports.publish import publish
from cmrbench.reports.site import SiteFolder
from cmrbench.reports.stats import BootstrapConfig, Statistics
from cmrbench.store import load_stores

# the details page draws its figures first, so a figure cap leaves out clinical plots first
PAGES: tuple[type[Page], ...] = (
    IndexPage,
    DetailsPage,
    VendorsPage,
    PathologiesPage,
    ClinicalPage,
    MethodsPage,
    ProvenancePage,
    DownloadsPage,
)
STATIC = TEMPLATES.parent / "static"
DEFAULT_MAX_PLOTS = 400


def build_site(
    run_dir: Path | Sequence[Path],
    out_dir: Path,
    config: BootstrapConfig = BootstrapConfig(),
    max_plots: int = DEFAULT_MAX_PLOTS,
    force: bool = False,
) -> Path:
    """Write the static report of the store at ``run_dir`` into ``out_dir``; return index.html.

    ``run_dir`` may be a list of run folders: one site for several runs
    (`cmrbench.store.load_stores`: a cell done in two runs is a conflict, set aside and never
    averaged).

    ``max_plots`` caps the per-block figures (CD diagrams, Bland–Altman panels); tables are
    always complete, and a page says where a figure was left out. Files the store could not
    read are logged as a warning and listed on the provenance page; their cells are left out.
    The site is built beside ``out_dir`` and swapped in (`publish.publish`): files cmrbench
    did not write are never touched, and ``force`` allows a non-empty folder that holds no
    report yet.
    """
    store = load_stores([Path(run_dir)] if isinstance(run_dir, (str, Path)) else list(run_dir))
    warn_unreadable(store)
    statistics = Statistics(store, config)
    nav = tuple((page.file, page.label) for page in PAGES)

    def build(staging: Path) -> None:
        site = SiteFolder(staging)
        for source in sorted(STATIC.iterdir()):
            if source.is_file():
                shutil.copyfile(source, site.path(f"static/{source.name}"))
        report = Report(statistics, site, max_plots, nav)
        for page in PAGES:
            page(report).build()

    return publish(build, Path(out_dir), force) / "index.html"
