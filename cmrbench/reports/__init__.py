"""Reports: statistics of a results store and the static HTML leaderboard site.

`build_site(run_dir, out_dir)` writes the site (``cmrbench report``);
`leaderboard(run_dir, fmt)` renders the leaderboards as text (``cmrbench stats``);
`export_bundle` writes a portable zip of a run's results (``cmrbench export``) and
`opened_run` reads a bundle or a run folder alike.
All of them read only the store.
"""

from cmrbench.reports.bundle import export_bundle, opened_run
from cmrbench.reports.leaderboard import FORMATS, LeaderboardFormatError, leaderboard
from cmrbench.reports.publish import PublishError
from cmrbench.reports.site import build_site
from cmrbench.reports.stats import BootstrapConfig, Statistics, compute_statistics
from cmrbench.store import Store, StoreError, load_store

__all__ = ["FORMATS", "BootstrapConfig", "LeaderboardFormatError", "PublishError", "Statistics",
           "Store", "StoreError", "build_site", "compute_statistics", "export_bundle", "leaderboard",
           "load_store", "opened_run"]
