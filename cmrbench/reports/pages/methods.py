"""The method pages: the list of methods, and one page per method.

A method's page shows its results on every leaderboard, the pretraining jobs its cells
fine-tuned from (by the cells' ``pretrain_key``: `mim_enc` reuses `mim`'s job) and those it ran
for other methods, with spec and loss curve, the weight-transfer report of its cells (what
loaded, what was adapted, what stayed random), qualitative overlays (image, reference,
prediction) and one cell's fine-tuning spec.
Everything comes from the store: the specs, logs, transfer reports and slices of its folders;
a file among them that cannot be read is left out, and the page says which and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from cmrbench.reports import plots
from cmrbench.reports.leaderboard import group_title, labels_saved_text
from cmrbench.reports.pages.base import Page, leaderboard_cell
from cmrbench.reports.site import safe_name
from cmrbench.reports.stats import budget_order
from cmrbench.reports.stats.leaderboard import SINGLE_PRETRAINING
from cmrbench.store import StoreError, read_json, read_jsonl, read_slices
from cmrbench.store.layout import LOG, SLICES, SPEC, TRANSFER

OVERLAY_CELLS_PER_METHOD = 2
T = TypeVar("T")


class MethodsPage(Page):
    """``methods.html`` and one ``method-<name>-<hash>.html`` per method."""

    file, label, template = "methods.html", "Methods", "methods.html"

    def build(self) -> None:
        super().build()
        for method in self.report.methods:
            self.report.render(
                "method.html",
                self.report.method_pages[method],
                self._method_context(method),
                active=self.file,
            )

    def context(self) -> dict[str, Any]:
        cells = self.report.store.cells
        listing = []
        for method in self.report.methods:
            mine = cells[cells["method"] == method]
            users = self._users(method)
            listing.append(
                {
                    "method": method,
                    "page": self.report.method_pages[method],
                    "cells_done": int((mine["status"] == "done").sum()),
                    "cells_total": len(mine),
                    "doc": self._description(method),
                    "pretrain_jobs": len(self._jobs(method)),
                    "used_by": [
                        {"method": m, "done": int((f["status"] == "done").sum()), "total": len(f)}
                        for m, f in users.items()
                    ],
                }
            )
        return {"methods": listing}

    def _jobs(self, method: str) -> pd.DataFrame:
        """The pretraining jobs the method ran or its cells fine-tuned from (`pretrain_key`)."""
        pretrain, cells = self.report.store.pretrain, self.report.store.cells
        keys = set(cells.loc[cells["method"] == method, "pretrain_key"].dropna())
        return pretrain[(pretrain["method"] == method) | pretrain["key"].isin(keys)]

    def _users(self, method: str) -> dict[str, pd.DataFrame]:
        """The cells of other methods that fine-tune from this method's pretraining jobs, by
        method (`mim_enc`'s for `mim`)."""
        pretrain, cells = self.report.store.pretrain, self.report.store.cells
        keys = set(pretrain.loc[pretrain["method"] == method, "key"])
        used = cells[cells["pretrain_key"].isin(keys) & (cells["method"] != method)]
        return {str(m): frame for m, frame in used.groupby("method", sort=True)}

    def _description(self, method: str) -> str:
        """The method's docstring from ``run.json``, or, for a method that only pretrained for
        others in a run that did not record it, what it did."""
        doc = self.report.method_doc(method)
        users = self._users(method)
        if doc or not users:
            return doc
        return (
            f"Pretraining method of {', '.join(users)}, whose cells fine-tune from its "
            f"job(s); this run's record (run.json) holds no description of it."
        )

    def _read(self, read: Callable[[Path], T], path: Path) -> T | None:
        """``read(path)``, or None when the file cannot be read: the page then says which
        file it left out and why, and the report goes on."""
        try:
            return read(path)
        except StoreError as err:
            where = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
            self.unreadable.append(f"{where}: {str(err).removeprefix(f'{path}: ')}")
            return None

    def _method_context(self, method: str) -> dict[str, Any]:
        self.unreadable: list[str] = []
        jobs, curves = [], {}
        for job in self._jobs(method).itertuples():
            folder = Path(str(job.folder))
            spec = self._read(read_json, folder / SPEC)
            log = self._read(read_jsonl, folder / LOG)
            if log is not None and not log.empty:
                curves[f"{job.encoder} ({job.key})"] = log
            jobs.append(
                {
                    "key": job.key,
                    "encoder": job.encoder,
                    "status": job.status,
                    "method": job.method,
                    "wall_time_s": job.wall_time_s,
                    "final_loss": job.final_loss,
                    "spec": "" if spec is None else json.dumps(spec, indent=2, sort_keys=True),
                }
            )
        loss_plot = None
        if curves:
            name = safe_name("loss", method, ".svg")
            plots.loss_curve_plot(
                curves, self.report.site.path(f"plots/{name}"), f"Pretraining loss: {method}"
            )
            loss_plot = f"plots/{name}"
        cells = self.report.store.cells[self.report.store.cells["method"] == method]
        done = cells[cells["status"] == "done"]
        example = self._read(read_json, Path(done["folder"].iloc[0]) / SPEC) if len(done) else None
        example_spec = json.dumps(example, indent=2, sort_keys=True) if example else ""
        results = self.report.board[self.report.board["method"] == method]
        users = self._users(method)
        return {
            "method": method,
            "doc": self._description(method),
            "jobs": jobs,
            "used_by": {m: len(frame) for m, frame in users.items()},
            "conditional": [g.title for g in self.report.groups if g.pretraining],
            "single_pretraining": SINGLE_PRETRAINING,
            "loss_plot": loss_plot,
            "example_spec": example_spec,
            "transfers": self._transfers(done),
            "overlays": self._overlays(method, done),
            "unreadable": self.unreadable,
            "results": [
                {
                    "title": group_title(r),
                    "budget": r["budget"],
                    "cell": leaderboard_cell(r, self.report.merge_note(r)),
                    "p_holm": r["p_holm"],
                    "labels_saved": labels_saved_text(r),
                }
                for _, r in results.iterrows()
            ],
        }

    def _transfers(self, done: pd.DataFrame) -> list[dict[str, Any]]:
        seen, reports = set(), []
        for cell in done.itertuples():
            path = Path(str(cell.folder)) / TRANSFER
            report = self._read(read_json, path) if path.is_file() else None
            if report is None:
                continue
            checkpoint = report.get("checkpoint") or {}  # an external checkpoint's cells
            key = str(report.get("pretrain_key") or checkpoint.get("sha256"))
            if key in seen:
                continue
            seen.add(key)
            parts = [
                {
                    "part": part,
                    "tensors_loaded": info.get("tensors_loaded"),
                    "params_loaded": info.get("params_loaded"),
                    "skipped": [str(s) for s in info.get("skipped", [])],
                    "adapted": {str(k): str(v) for k, v in (info.get("adapted") or {}).items()},
                    "random": [str(s) for s in info.get("random", [])],
                }
                for part, info in sorted(report.get("parts", {}).items())
            ]
            reports.append(
                {
                    "pretrain_key": key,
                    "encoder": cell.encoder,
                    "parts": parts,
                    "checkpoint": checkpoint,
                    "skipped": [str(s) for s in report.get("skipped", [])],
                }
            )
        return reports

    def _overlays(self, method: str, done: pd.DataFrame) -> list[dict[str, Any]]:
        if done.empty:
            return []
        ordered = done.assign(order=done["budget"].map(budget_order)).sort_values(
            ["dataset", "encoder", "augmentation", "setting", "order", "seed"]
        )
        chosen = [ordered.iloc[0]]
        largest = ordered[ordered["order"] == ordered["order"].max()]
        if len(ordered) > 1 and largest.iloc[0]["key"] != chosen[0]["key"]:
            chosen.append(largest.iloc[0])
        figures = []
        for cell in chosen[:OVERLAY_CELLS_PER_METHOD]:
            folder = Path(cell["folder"])
            slices = self._read(lambda path: read_slices(path.parent), folder / SLICES)
            if slices is None:
                continue
            name = safe_name("overlay", (method, cell["key"]), ".png")
            plots.overlay_png(slices, self.report.site.path(f"overlays/{name}"))
            rows = [
                f"{s} · {p} · slice {int(z)}"
                for s, p, z in zip(slices["subject"], slices["phase"], slices["slice"])
            ][:4]
            figures.append(
                {
                    "src": f"overlays/{name}",
                    "rows": rows,
                    "cell": {
                        k: str(cell[k])
                        for k in (
                            "dataset",
                            "encoder",
                            "augmentation",
                            "setting",
                            "budget",
                            "seed",
                            "key",
                        )
                    },
                }
            )
        return figures
