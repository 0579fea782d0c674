"""Reports: statistics of a results store and the static HTML leaderboard site.

`build_site(run_dir, out_dir)` writes the site (``cmrbench report``); `Statistics(store)`
holds every table of the catalogue (`stats.CATALOGUE`), computed on first use;
`leaderboard(run_dir, fmt)` renders the leaderboards as text and `table_text` /
`catalogue_text` one table or the list of them (``cmrbench stats``); `export_bundle` writes a
portable zip of a run's results (``cmrbench export``) and `opened_run` reads a bundle or a run
folder alike. All of them read only the store.
"""

from cmrbench.reports.bundle import export_bundle, opened_run
from cmrbench.reports.leaderboard import FORMATS, LeaderboardFormatError, leaderboard
from cmrbench.reports.pages import build_site
from cmrbench.reports.publish import PublishError
from cmrbench.reports.stats import CATALOGUE, BootstrapConfig, Statistics, UnknownTableError
from cmrbench.reports.tables import catalogue_text, table_text
from cmrbench.store import Store, StoreError, load_store

__all__ = [
    "CATALOGUE",
    "FORMATS",
    "BootstrapConfig",
    "LeaderboardFormatError",
    "PublishError",
    "Statistics",
    "Store",
    "StoreError",
    "UnknownTableError",
    "build_site",
    "catalogue_text",
    "export_bundle",
    "leaderboard",
    "load_store",
    "opened_run",
    "table_text",
]
