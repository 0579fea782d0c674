"""The provenance page: where and how each run ran, and what the report left out.

Each run's ``run.json`` (grid, cmrbench version, git commit, device, times, packages), how
many pretraining runs each leaderboard's claims rest on, the total wall time, the subjects the
run skipped, the cell folders the report does not use, the files it could not read, and every
job with its status (`cmrbench.reports.stats.provenance`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cmrbench.reports.pages.base import Page
from cmrbench.reports.stats import GROUP_KEYS
from cmrbench.reports.stats.leaderboard import SINGLE_PRETRAINING


class ProvenancePage(Page):
    """``provenance.html``: the runs behind the site."""

    file, label, template = "provenance.html", "Provenance", "provenance.html"

    def context(self) -> dict[str, Any]:
        jobs, store = self.report.statistics["jobs"], self.report.store
        runs = store.run.get("runs") or [{"name": store.run_dir.name, **store.run}]
        return {
            "runs": [self._run_provenance(run) for run in runs],
            "jobs": jobs.to_dict(orient="records"),
            "total_wall_time_s": float(np.nansum(jobs["wall_time_s"].to_numpy(float))),
            "skipped": [
                {k: str(v) for k, v in s.items()} for s in store.run.get("skipped_subjects") or []
            ],
            "set_aside": store.set_aside.fillna("").astype(str).to_dict(orient="records"),
            "unreadable": self.report.statistics["unreadable"]
            .fillna("")
            .astype(str)
            .to_dict(orient="records"),
            "centring": self.report.centring(),
            "notes": self.report.statistics.notes,
            "pretraining": self._pretraining(),
        }

    def _pretraining(self) -> list[str]:
        """How many pretraining runs the leaderboards' claims rest on, per leaderboard."""
        board = self.report.board
        single = [g.title for g in self.report.groups if g.pretraining]
        tied = (
            sorted(
                set(
                    board.loc[board["pretrain_runs"] > 1, list(GROUP_KEYS)].apply(
                        lambda r: " · ".join(map(str, r)), axis=1
                    )
                )
            )
            if len(board)
            else []
        )
        lines = [f"{', '.join(single)}: {SINGLE_PRETRAINING}."] if single else []
        if tied:
            lines.append(
                f"{', '.join(tied)}: one pretraining run per fine-tuning seed "
                f"(pretrain_seeds: tied), so the run-level variance of every Δ "
                f"includes the pretraining run's."
            )
        return lines

    @staticmethod
    def _run_provenance(run: dict[str, Any]) -> dict[str, Any]:
        """What one run's ``run.json`` says about where and how it ran."""
        return {
            "name": str(run.get("name", "")),
            "grid_yaml": str(run.get("grid_yaml", "")),
            "packages": sorted((str(k), str(v)) for k, v in (run.get("packages") or {}).items()),
            "fields": [
                (label, run.get(key))
                for key, label in (
                    ("grid", "grid"),
                    ("cmrbench_version", "cmrbench version"),
                    ("git_commit", "git commit"),
                    ("device", "device"),
                    ("started", "started"),
                    ("finished", "finished"),
                )
            ],
        }
