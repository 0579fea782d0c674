"""Build the static HTML report of a results store (`build_site`).

The site is plain files: HTML from jinja2 templates with autoescaping on, SVG figures from
matplotlib, PNG overlays, one CSS file, and CSV + JSON downloads of every table. It has
no script libraries and no external URL, links are relative, so it works from
``file://`` and any static host. Every file name that derives from the store (methods,
groups) is a sanitised slug plus a short hash of the original string, and every write is
checked to land inside the output folder, so a method named ``../../evil`` cannot write
outside it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jinja2
import numpy as np
import pandas as pd

from cmrbench.reports import plots
from cmrbench.reports.leaderboard import (LEADERBOARD_COLUMNS, MARKERS, TEST_SET_MARK,
                                          beyond_the_study, group_title, leaderboard_table,
                                          records)
from cmrbench.reports.load import Store, load_stores, read_json, read_jsonl, read_slices
from cmrbench.reports.publish import publish
from cmrbench.reports.stats import (BASELINE, GROUP_KEYS, TEST_SET_ONLY, BootstrapConfig,
                                    Statistics, budget_order, compute_statistics, method_order,
                                    quantity_order)
from cmrbench.reports.text import csv_safe

PACKAGE_DIR = Path(__file__).parent
SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SUBFOLDERS = ("plots", "overlays", "data", "static")
DEFAULT_MAX_PLOTS = 400
OVERLAY_CELLS_PER_METHOD = 2
CLASS_COLUMNS = (("dsc_LV", "LV"), ("dsc_MYO", "MYO"), ("dsc_RV", "RV"), ("dsc_ED", "ED"),
                 ("dsc_ES", "ES"))
HD95_COLUMNS = (("hd95", "all"), ("hd95_LV", "LV"), ("hd95_MYO", "MYO"), ("hd95_RV", "RV"),
                ("hd95_ED", "ED"), ("hd95_ES", "ES"))
NAV = (("index.html", "Leaderboards"), ("details.html", "Details"), ("vendors.html", "Vendors"),
       ("clinical.html", "Clinical"), ("methods.html", "Methods"),
       ("provenance.html", "Provenance"), ("downloads.html", "Downloads"))


class SitePathError(ValueError):
    """A site file name that is not a plain name inside the output folder."""


def safe_name(kind: str, key: str | tuple[str, ...], suffix: str) -> str:
    """``<kind>-<slug>-<hash8><suffix>``: a file or anchor name unique per key.

    ``key`` is a name or a tuple of key values; the hash is over the tuple's canonical JSON,
    so keys whose joined titles happen to read alike (``("a · b", "c")``, ``("a", "b · c")``)
    still get different names.
    """
    parts = (key,) if isinstance(key, str) else tuple(str(p) for p in key)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", " ".join(parts)).strip("-").lower()[:40] or "x"
    canonical = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
    return f"{kind}-{slug}-{digest}{suffix}"


class SiteFolder:
    """Writes files under one root, refusing any path that is not ``[subfolder/]name``.

    The root is the staging folder of `publish.publish`, so a page can never land outside
    the report, and the report never writes over a user's file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, relative: str) -> Path:
        """The absolute path of ``relative`` after checking it is a safe site path."""
        parts = relative.split("/")
        if not (len(parts) == 1 or (len(parts) == 2 and parts[0] in SUBFOLDERS)) or \
                not SAFE_FILE.match(parts[-1]):
            raise SitePathError(f"refusing site path {relative!r}: expected a plain file name, "
                                f"optionally under one of {', '.join(SUBFOLDERS)}")
        target = (self.root / relative).resolve()
        if self.root not in target.parents:
            raise SitePathError(f"refusing site path {relative!r}: it resolves to {target}, "
                                f"outside {self.root}")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_text(self, relative: str, text: str) -> Path:
        target = self.path(relative)
        target.write_text(text, encoding="utf-8")
        return target


@dataclass
class Group:
    """One leaderboard: a dataset × encoder × augmentation × setting; ``beyond`` says why
    some of its cells lie beyond the study ("" when none do)."""

    keys: dict[str, str]
    title: str
    anchor: str
    beyond: str = ""

    @property
    def key(self) -> tuple[str, ...]:
        """The board's key values, in `GROUP_KEYS` order (what file names hash)."""
        return tuple(self.keys.values())


def build_site(run_dir: Path | Sequence[Path], out_dir: Path,
               config: BootstrapConfig = BootstrapConfig(), max_plots: int = DEFAULT_MAX_PLOTS,
               force: bool = False) -> Path:
    """Write the static report of the store at ``run_dir`` into ``out_dir``; return index.html.

    ``run_dir`` may be a list of run folders: one site for several runs (`load.load_stores`:
    a cell done in two runs is a conflict, set aside and never averaged).

    ``max_plots`` caps the per-block figures (CD diagrams, Bland–Altman panels); tables are
    always complete, and a page says where a figure was left out. The site is built beside
    ``out_dir`` and swapped in (`publish.publish`): files cmrbench did not write are never
    touched, and ``force`` allows a non-empty folder that holds no report yet.
    """
    store = load_stores([Path(run_dir)] if isinstance(run_dir, (str, Path)) else list(run_dir))
    statistics = compute_statistics(store.subjects, store.clinical, config)
    board = leaderboard_table(store.cells, statistics)

    def build(staging: Path) -> None:
        _Builder(store, statistics, board, SiteFolder(staging), config, max_plots).build()

    return publish(build, Path(out_dir), force) / "index.html"


class _Builder:
    """Renders every page of one report (one instance per `build_site` call)."""

    def __init__(self, store: Store, statistics: Statistics, board: pd.DataFrame,
                 site: SiteFolder, config: BootstrapConfig, max_plots: int) -> None:
        self.store, self.statistics, self.board, self.site = store, statistics, board, site
        self.config, self.plots_left = config, max_plots
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["num"] = _number
        self.env.filters["pvalue"] = _pvalue
        self.env.filters["p_statement"] = _p_statement
        self.env.filters["pct"] = lambda v: "n/a" if _missing(v) else f"{100 * v:.0f} %"
        all_methods = set(store.cells["method"]) | set(store.pretrain["method"])
        self.methods = method_order(all_methods - {""})
        self.method_pages = {m: safe_name("method", m, ".html") for m in self.methods}
        self.colours = plots.method_colours(self.methods)
        self.groups = [self._group(dict(zip(GROUP_KEYS, map(str, keys))))
                       for keys in board[list(GROUP_KEYS)].drop_duplicates().itertuples(index=False)]
        self.downloads: list[dict[str, str]] = []
        self.tables = {"board": board, **statistics.tables(), "clinical_points": store.clinical}
        self.splits: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], pd.DataFrame]] = {}

    def build(self) -> Path:
        self._copy_static()
        self._write_downloads()
        self._render("index.html", "index.html", self._index_context())
        self._render("details.html", "details.html", self._details_context())
        self._render("vendors.html", "vendors.html", self._vendors_context())
        self._render("clinical.html", "clinical.html", self._clinical_context())
        self._render("methods.html", "methods.html", {"methods": self._method_list()})
        for method in self.methods:
            self._render("method.html", self.method_pages[method], self._method_context(method),
                         active="methods.html")
        self._render("provenance.html", "provenance.html", self._provenance_context())
        self._render("downloads.html", "downloads.html", {"downloads": self.downloads})
        return self.site.path("index.html")

    # -- helpers -------------------------------------------------------------------------

    def _group(self, keys: dict[str, str]) -> Group:
        title = group_title(keys)
        budgets = self.board.loc[(self.board[list(GROUP_KEYS)] == pd.Series(keys)).all(axis=1),
                                 "budget"]
        beyond = beyond_the_study(keys["encoder"], keys["setting"],
                                  sorted(set(budgets), key=budget_order))
        return Group(keys=keys, title=title, anchor=safe_name("group", tuple(keys.values()), ""),
                     beyond=beyond)

    def _render(self, template: str, target: str, context: dict[str, Any],
                active: str | None = None) -> None:
        page = self.env.get_template(template).render(
            nav=NAV, active=active or target, run=self.store.run,
            method_pages=self.method_pages, baseline=BASELINE, **context)
        self.site.write_text(target, page)

    def _copy_static(self) -> None:
        for source in sorted((PACKAGE_DIR / "static").iterdir()):
            if source.is_file():
                shutil.copyfile(source, self.site.path(f"static/{source.name}"))

    def _take_plot(self) -> bool:
        self.plots_left -= 1
        return self.plots_left >= 0

    def _part(self, name: str, keys: dict[str, str]) -> pd.DataFrame:
        """Rows of table ``name`` whose ``keys`` columns equal ``keys`` (split once, cached)."""
        columns = tuple(keys)
        table = self.tables[name]
        if (name, columns) not in self.splits:
            self.splits[(name, columns)] = {} if table.empty else {
                tuple(str(v) for v in (k if isinstance(k, tuple) else (k,))): part
                for k, part in table.groupby(list(columns), observed=True, sort=False)}
        return self.splits[(name, columns)].get(tuple(keys[c] for c in columns), table.iloc[:0])

    def _budgets(self, group: Group) -> list[str]:
        rows = self._part("board", group.keys)
        return sorted(rows["budget"].unique(), key=budget_order)

    # -- index ---------------------------------------------------------------------------

    def _index_context(self) -> dict[str, Any]:
        boards = []
        for group in self.groups:
            rows = self._part("board", group.keys)
            budgets = [{"budget": b, "n_labelled": _int_or_none(
                rows.loc[rows["budget"] == b, "n_labelled"].max())} for b in self._budgets(group)]
            body = []
            for method in method_order(set(rows["method"])):
                mine = rows[rows["method"] == method].set_index("budget")
                body.append({"method": method,
                             "cells": [_leaderboard_cell(mine.loc[b["budget"]]) for b in budgets]})
            plot = None
            if rows["mean"].notna().any():
                name = safe_name("efficiency", group.key, ".svg")
                plots.label_efficiency_plot(rows, self.colours, self.site.path(f"plots/{name}"),
                                            f"Label efficiency: {group.title}")
                plot = f"plots/{name}"
            across = self._part("across_blocks", group.keys)
            boards.append({"group": group, "budgets": budgets, "rows": body, "plot": plot,
                           "across": across.to_dict(orient="records")})
        status = self.store.cells["status"].value_counts().to_dict()
        return {"boards": boards, "status": {k: int(status.get(k, 0)) for k in
                                             ("done", "failed", "pending")},
                "structures": _listing(self.statistics.structures) or "the annotated structures",
                "test_set_mark": TEST_SET_MARK, "set_aside": len(self.store.set_aside),
                "centring": self._centring(),
                "notes": self.statistics.notes, "data": records(self.board[LEADERBOARD_COLUMNS])}

    # -- details -------------------------------------------------------------------------

    def _details_context(self) -> dict[str, Any]:
        sections = []
        for group in self.groups:
            blocks = [self._block_section(group, budget) for budget in self._budgets(group)]
            augmentation = self._part("augmentation_vs_ssp", {
                k: group.keys[k] for k in ("dataset", "encoder", "setting")}) \
                if group.keys["augmentation"] == "none" else self.tables["augmentation_vs_ssp"].iloc[:0]
            sections.append({"group": group, "blocks": [b for b in blocks if b is not None],
                             "classes": self._view_table(group, CLASS_COLUMNS),
                             "class_deltas": self._delta_table(group),
                             "augmentation": augmentation.to_dict(orient="records"),
                             "hd95": self._view_table(group, HD95_COLUMNS, undefined=True)})
        return {"sections": sections, "class_columns": [c for _, c in CLASS_COLUMNS],
                "hd95_columns": [c for _, c in HD95_COLUMNS], "config": self.config}

    def _block_section(self, group: Group, budget: str) -> dict[str, Any] | None:
        keys = {**group.keys, "budget": budget}
        summary = self._part("summary", keys)
        if summary.empty:
            return None
        summary = summary[summary["view"] == "dsc"].set_index("method")
        comparisons = self._part("comparisons", keys)
        comparisons = comparisons[comparisons["view"] == "dsc"].set_index("method")
        per_seed = self._part("per_seed", keys)
        per_seed = per_seed[per_seed["view"] == "dsc"]
        rows = []
        for method in method_order(set(summary.index)):
            row = summary.loc[method]
            seeds = per_seed[per_seed["method"] == method].sort_values("seed")
            compared = comparisons.loc[method] if method in comparisons.index else None
            rows.append({
                "method": method, "mean": row["mean"], "ci_low": row["ci_low"],
                "ci_high": row["ci_high"], "n_subjects": int(row["n_subjects"]),
                "seeds": [{"seed": int(s), "mean": m} for s, m in zip(seeds["seed"], seeds["mean"])],
                "seed_sd": row["seed_sd"],
                "scope": row["scope"], "n_seeds": int(row["n_seeds"]),
                "comparison": None if compared is None else {
                    "delta": compared["delta"], "ci_low": compared["ci_low"],
                    "ci_high": compared["ci_high"], "p": compared["p"], "p_holm": compared["p_holm"],
                    "n_seeds": int(compared["n_seeds"]), "n_subjects": int(compared["n_subjects"]),
                    "scope": compared["scope"], "direction": compared["direction"],
                    "marker": MARKERS[compared["direction"]], "note": compared["note"],
                    "wilcoxon_p_holm": compared["wilcoxon_p_holm"]}})
        friedman = self._part("friedman", keys)
        ranks = self._part("ranks", keys)
        cliques = self._part("cliques", keys)
        stability = self._part("rank_stability", keys)
        mean_ranks = dict(zip(ranks["method"], ranks["mean_rank"])) if not ranks.empty else {}
        clique_lists = [list(frame["method"]) for _, frame in cliques.groupby("clique")] \
            if not cliques.empty else []
        cd_plot, cd_note = None, ""
        if len(mean_ranks) >= 2:
            if self._take_plot():
                name = safe_name("cd", (*group.key, budget), ".svg")
                plots.cd_diagram(mean_ranks, clique_lists, self.colours,
                                 self.site.path(f"plots/{name}"),
                                 f"Mean ranks with Wilcoxon–Holm cliques, budget {budget}: "
                                 f"{group.title}")
                cd_plot = f"plots/{name}"
            else:
                cd_note = ("diagram left out: the report's figure cap was reached "
                           "(the tables are complete)")
        ordered = sorted(mean_ranks, key=mean_ranks.get)
        stability_rows = [{"method": m, "mean_rank": mean_ranks[m], "frequencies": list(
            stability[stability["method"] == m].sort_values("rank")["frequency"])} for m in ordered]
        kendall_tau = float(stability["kendall_tau"].iloc[0]) if len(stability) else np.nan
        return {"budget": budget, "anchor": safe_name("block", (*group.key, budget), ""),
                "n_labelled": _int_or_none(summary["n_labelled"].max()), "rows": rows,
                "friedman": friedman.iloc[0].to_dict() if not friedman.empty else None,
                "cd_plot": cd_plot, "cd_note": cd_note, "stability": stability_rows,
                "kendall_tau": kendall_tau, "cliques": clique_lists, "n_ranks": len(ordered),
                "rank_seeds": int(ranks["n_seeds"].max()) if not ranks.empty else 0}

    def _view_table(self, group: Group, columns: tuple[tuple[str, str], ...],
                    undefined: bool = False) -> list[dict[str, Any]]:
        summary = self._part("summary", group.keys)
        if summary.empty:
            return []
        summary = summary[summary["view"].isin([v for v, _ in columns])]
        rows = []
        for budget in self._budgets(group):
            in_budget = summary[summary["budget"] == budget]
            for method in method_order(set(in_budget["method"])):
                mine = in_budget[in_budget["method"] == method].set_index("view")
                cells = [{"mean": mine.loc[v, "mean"], "ci_low": mine.loc[v, "ci_low"],
                          "ci_high": mine.loc[v, "ci_high"], "scope": mine.loc[v, "scope"]}
                         if v in mine.index else None for v, _ in columns]
                row = {"budget": budget, "method": method, "cells": cells, "first": not rows
                       or rows[-1]["budget"] != budget}
                if undefined:
                    overall = mine.loc[columns[0][0]]
                    row.update(n_undefined=int(overall["n_undefined"]),
                               n_entries=int(overall["n_entries"]))
                rows.append(row)
        return rows

    def _delta_table(self, group: Group) -> list[dict[str, Any]]:
        """Δ vs scratch with CI per class and phase (`CLASS_COLUMNS` views), budget × method."""
        comparisons = self._part("comparisons", group.keys)
        rows = []
        for budget in self._budgets(group):
            in_budget = comparisons[comparisons["budget"] == budget]
            for method in method_order(set(in_budget["method"])):
                mine = in_budget[in_budget["method"] == method].set_index("view")
                rows.append({"budget": budget, "method": method,
                             "first": not rows or rows[-1]["budget"] != budget,
                             "cells": [mine.loc[v].to_dict() if v in mine.index else None
                                       for v, _ in CLASS_COLUMNS]})
        return rows

    # -- vendors -------------------------------------------------------------------------

    def _vendors_context(self) -> dict[str, Any]:
        sections = []
        for group in self.groups:
            rows_in = self._part("vendors", group.keys)
            if rows_in.empty:
                continue
            subgroups = rows_in[["kind", "subgroup", "vendors"]].drop_duplicates()
            columns = sorted(({"subgroup": r.subgroup, "kind": r.kind, "vendors": r.vendors}
                              for r in subgroups.itertuples()),
                             key=lambda c: (c["kind"] != "vendor", c["subgroup"]))
            table = self._subgroup_rows(group, rows_in, columns)
            for column in columns:
                mine = rows_in[(rows_in["kind"] == column["kind"])
                               & (rows_in["subgroup"] == column["subgroup"])]
                column["n_subjects"] = int(mine["n_subjects"].max())
            deltas = self._part("subgroup_comparisons", group.keys)
            sections.append({"group": group, "columns": columns, "rows": table,
                             "deltas": self._subgroup_rows(group, deltas, columns),
                             "gaps": self._part("vendor_gap", group.keys).to_dict(orient="records"),
                             "restricted": any(c["kind"] == "seen" for c in columns)})
        return {"sections": sections}

    def _subgroup_rows(self, group: Group, rows_in: pd.DataFrame,
                       columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Budget × method rows whose cells are the rows of ``rows_in`` for each subgroup column."""
        table: list[dict[str, Any]] = []
        for budget in self._budgets(group):
            in_budget = rows_in[rows_in["budget"] == budget]
            for method in method_order(set(in_budget["method"])):
                mine = in_budget[in_budget["method"] == method].set_index(["kind", "subgroup"])
                table.append({"budget": budget, "method": method, "cells": [
                    mine.loc[(c["kind"], c["subgroup"])].to_dict()
                    if (c["kind"], c["subgroup"]) in mine.index else None for c in columns],
                    "first": not table or table[-1]["budget"] != budget})
        return table

    # -- clinical ------------------------------------------------------------------------

    def _clinical_context(self) -> dict[str, Any]:
        sections = []
        for group in self.groups:
            in_group = self._part("clinical", group.keys)
            if in_group.empty:
                continue
            quantities = sorted(in_group["quantity"].unique(), key=quantity_order)
            units = dict(zip(in_group["quantity"], in_group["unit"]))
            present = sorted(in_group["budget"].unique(), key=budget_order)
            plotted = {present[0], present[-1]}
            budgets = []
            for budget in self._budgets(group):
                rows = in_group[in_group["budget"] == budget]
                if rows.empty:
                    continue
                table = []
                for method in method_order(set(rows["method"])):
                    mine = rows[rows["method"] == method].set_index("quantity")
                    table.append({"method": method, "cells": [
                        mine.loc[q].to_dict() if q in mine.index else None for q in quantities]})
                plot, note = self._bland_altman(group, budget, rows) if budget in plotted else (
                    None, "Bland–Altman plots are drawn for the smallest and the largest budget; "
                          "this table is complete")
                budgets.append({"budget": budget, "rows": table, "plot": plot, "note": note})
            sections.append({"group": group, "quantities": quantities, "units": units,
                             "budgets": budgets})
        return {"sections": sections}

    def _bland_altman(self, group: Group, budget: str,
                      agreement: pd.DataFrame) -> tuple[str | None, str]:
        if not self._take_plot():
            return None, "plot left out: the report's figure cap was reached (the table is complete)"
        points = self._part("clinical_points", {**group.keys, "budget": budget})
        points = points[points["pred"].notna() & points["ref"].notna()]
        if points.empty:
            return None, "no subject has both a prediction and a reference value"
        points = pd.DataFrame({"method": points["method"].astype(str).to_numpy(),
                               "quantity": points["quantity"].astype(str).to_numpy(),
                               "unit": points["unit"].astype(str).to_numpy(),
                               "pred": points["pred"].to_numpy(float),
                               "ref": points["ref"].to_numpy(float)})
        name = safe_name("bland-altman", (*group.key, budget), ".svg")
        plots.bland_altman_plot(points, agreement, self.colours, self.site.path(f"plots/{name}"),
                                f"Bland–Altman, budget {budget}: {group.title}")
        return f"plots/{name}", ""

    # -- methods -------------------------------------------------------------------------

    def _method_list(self) -> list[dict[str, Any]]:
        cells = self.store.cells
        listing = []
        for method in self.methods:
            mine = cells[cells["method"] == method]
            listing.append({"method": method, "page": self.method_pages[method],
                            "cells_done": int((mine["status"] == "done").sum()),
                            "cells_total": len(mine), "doc": self._method_doc(method),
                            "pretrain_jobs": int((self.store.pretrain["method"] == method).sum())})
        return listing

    def _method_doc(self, method: str) -> str:
        """The method's docstring as the run recorded it (``run.json`` → methods → doc)."""
        entry = (self.store.run.get("methods") or {}).get(method) or {}
        return str(entry.get("doc") or "")

    def _method_context(self, method: str) -> dict[str, Any]:
        pretrain = self.store.pretrain[self.store.pretrain["method"] == method]
        jobs, curves = [], {}
        for job in pretrain.itertuples():
            spec = read_json(Path(job.folder) / "spec.json")
            log = read_jsonl(Path(job.folder) / "log.jsonl")
            if not log.empty:
                curves[f"{job.encoder} ({job.key})"] = log
            jobs.append({"key": job.key, "encoder": job.encoder, "status": job.status,
                         "wall_time_s": job.wall_time_s, "final_loss": job.final_loss,
                         "spec": json.dumps(spec, indent=2, sort_keys=True)})
        loss_plot = None
        if curves:
            name = safe_name("loss", method, ".svg")
            plots.loss_curve_plot(curves, self.site.path(f"plots/{name}"), f"Pretraining loss: {method}")
            loss_plot = f"plots/{name}"
        cells = self.store.cells[self.store.cells["method"] == method]
        done = cells[cells["status"] == "done"]
        example_spec = json.dumps(read_json(Path(done["folder"].iloc[0]) / "spec.json"), indent=2,
                                  sort_keys=True) if len(done) else ""
        results = self.board[self.board["method"] == method]
        return {"method": method, "doc": self._method_doc(method), "jobs": jobs,
                "loss_plot": loss_plot, "example_spec": example_spec,
                "transfers": self._transfers(done), "overlays": self._overlays(method, done),
                "results": [{"title": group_title(r), "budget": r["budget"],
                             "cell": _leaderboard_cell(r), "p_holm": r["p_holm"],
                             "scratch_equivalent": r["scratch_equivalent"],
                             "scratch_equivalent_note": r["scratch_equivalent_note"]}
                            for _, r in results.iterrows()]}

    def _transfers(self, done: pd.DataFrame) -> list[dict[str, Any]]:
        seen, reports = set(), []
        for cell in done.itertuples():
            path = Path(cell.folder) / "transfer.json"
            if not path.is_file():
                continue
            report = read_json(path)
            key = str(report.get("pretrain_key"))
            if key in seen:
                continue
            seen.add(key)
            parts = [{"part": part, "tensors_loaded": info.get("tensors_loaded"),
                      "params_loaded": info.get("params_loaded"),
                      "skipped": [str(s) for s in info.get("skipped", [])]}
                     for part, info in sorted(report.get("parts", {}).items())]
            reports.append({"pretrain_key": key, "encoder": cell.encoder, "parts": parts,
                            "skipped": [str(s) for s in report.get("skipped", [])]})
        return reports

    def _overlays(self, method: str, done: pd.DataFrame) -> list[dict[str, Any]]:
        if done.empty:
            return []
        ordered = done.assign(order=done["budget"].map(budget_order)).sort_values(
            ["dataset", "encoder", "augmentation", "setting", "order", "seed"])
        chosen = [ordered.iloc[0]]
        largest = ordered[ordered["order"] == ordered["order"].max()]
        if len(ordered) > 1 and largest.iloc[0]["key"] != chosen[0]["key"]:
            chosen.append(largest.iloc[0])
        figures = []
        for cell in chosen[:OVERLAY_CELLS_PER_METHOD]:
            slices = read_slices(Path(cell["folder"]))
            if slices is None:
                continue
            name = safe_name("overlay", (method, cell["key"]), ".png")
            plots.overlay_png(slices, self.site.path(f"overlays/{name}"))
            rows = [f"{s} · {p} · slice {int(z)}" for s, p, z in
                    zip(slices["subject"], slices["phase"], slices["slice"])][:4]
            figures.append({"src": f"overlays/{name}", "rows": rows, "cell": {
                k: str(cell[k]) for k in ("dataset", "encoder", "augmentation", "setting", "budget",
                                          "seed", "key")}})
        return figures

    # -- provenance and downloads --------------------------------------------------------

    def _jobs(self) -> pd.DataFrame:
        cells = self.store.cells.assign(kind="fine-tune")
        pretrain = self.store.pretrain.assign(kind="pretrain")
        columns = ["run", "kind", "key", "method", "encoder", "dataset", "setting", "augmentation", "budget",
                   "seed", "status", "wall_time_s", "device", "error"]
        jobs = pd.concat([pretrain, cells], ignore_index=True).reindex(columns=columns)
        jobs["seed"] = [("" if pd.isna(s) else str(int(s))) for s in jobs["seed"]]
        text = [c for c in columns if c not in ("seed", "wall_time_s")]
        jobs[text] = jobs[text].fillna("").astype(str)
        return jobs

    def _provenance_context(self) -> dict[str, Any]:
        jobs = self._jobs()
        runs = self.store.run.get("runs") or [{"name": self.store.run_dir.name, **self.store.run}]
        return {"runs": [self._run_provenance(run) for run in runs],
                "jobs": jobs.to_dict(orient="records"),
                "total_wall_time_s": float(np.nansum(jobs["wall_time_s"].to_numpy(float))),
                "skipped": [{k: str(v) for k, v in s.items()}
                            for s in self.store.run.get("skipped_subjects") or []],
                "set_aside": self.store.set_aside.fillna("").astype(str).to_dict(orient="records"),
                "centring": self._centring(), "notes": self.statistics.notes}

    @staticmethod
    def _run_provenance(run: dict[str, Any]) -> dict[str, Any]:
        """What one run's ``run.json`` says about where and how it ran."""
        return {"name": str(run.get("name", "")), "grid_yaml": str(run.get("grid_yaml", "")),
                "packages": sorted((str(k), str(v)) for k, v in (run.get("packages") or {}).items()),
                "fields": [(label, run.get(key)) for key, label in (
                    ("grid", "grid"), ("cmrbench_version", "cmrbench version"),
                    ("git_commit", "git commit"), ("device", "device"), ("started", "started"),
                    ("finished", "finished"))]}

    def _centring(self) -> list[str]:
        """Lines saying where augmented views were centred using the labels (spec field
        ``center == "labels"``, as in the study's code: PAPER.md "Heart-centred crops")."""
        lines = []
        cells = self.store.cells
        if (self.store.pretrain["center"] == "labels").any() or \
                (cells["pretrain_center"] == "labels").any():
            lines.append("Pretraining views were centred on the heart using the reference labels "
                         "(center = labels): the pretraining saw label-derived information.")
        if (cells["center"] == "labels").any():
            lines.append("Fine-tuning views were centred on the heart using the reference labels "
                         "(center = labels).")
        return lines

    def _write_downloads(self) -> None:
        tables = {"leaderboard": self.board, **self.statistics.tables(), "jobs": self._jobs(),
                  "set_aside": self.store.set_aside,
                  "skipped_subjects": pd.DataFrame(self.store.run.get("skipped_subjects") or [])}
        descriptions = {
            "leaderboard": "mean DSC with 95 % CI per method × budget, Δ vs scratch with CI, "
                           "run-level test, labels saved",
            "summary": "mean with 95 % CI over training runs and test subjects per block × "
                       "method × view (DSC, HD95, per class and phase)",
            "per_seed": "mean per seed (labelled subset) per block × method × view",
            "comparisons": "Δ vs scratch with CI and run-level t-test (Holm), variance components; "
                           "subject-level Wilcoxon (conditional on these trained models)",
            "friedman": "Friedman test across methods per block",
            "ranks": "mean rank per block × method",
            "cliques": "cliques of mean ranks that pairwise Wilcoxon + Holm do not separate",
            "pairwise": "pairwise Wilcoxon tests between methods, Holm-adjusted",
            "rank_stability": "frequency of each rank and Kendall's τ over seed × subject "
                              "resamples",
            "vendors": "mean DSC with run-level CI per vendor and over seen / unseen vendors",
            "subgroup_comparisons": "Δ vs scratch with CI and run-level test per vendor and over "
                                    "seen / unseen vendors",
            "vendor_gap": "unseen − seen vendor gap per method with CI (vendor settings)",
            "augmentation_vs_ssp": "scratch with augmentation vs each SSP method without it: Δ "
                                   "with CI and run-level test",
            "across_blocks": "per leaderboard × method: mean rank over budgets, blocks better / "
                             "worse than scratch, area under the label-efficiency curve",
            "clinical": "MAE, bias, limits of agreement (with between-seed spread) and ΔMAE vs scratch, "
                        "each with a 95 % CI, of clinical end points",
            "jobs": "every pretraining job and fine-tuning cell with status and wall time",
            "set_aside": "cell folders not used: not in this grid, or conflicting configurations",
            "skipped_subjects": "subjects the run skipped, with the reason"}
        for name, table in tables.items():
            csv_name, json_name = f"data/{name}.csv", f"data/{name}.json"
            self.site.write_text(csv_name, csv_safe(table).to_csv(index=False))
            self.site.write_text(json_name, json.dumps(records(table), indent=1) + "\n")
            self.downloads.append({"name": name, "csv": csv_name, "json": json_name,
                                   "rows": len(table), "description": descriptions[name]})


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _number(value: object, digits: int = 3) -> str:
    """A number for a table cell; NaN and None show as ``n/a``."""
    if _missing(value):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _pvalue(value: object) -> str:
    """A p-value: three decimals, or ``< 0.001`` (with a no-break space); NaN shows as ``n/a``."""
    if _missing(value):
        return "n/a"
    return f"{float(value):.3f}" if float(value) >= 1e-3 else "<\u00a00.001"


def _p_statement(value: object) -> str:
    """``p = 0.012``, ``p < 0.001`` or ``p n/a`` for running text."""
    text = _pvalue(value)
    return f"p {text}" if text.startswith("<") or text == "n/a" else f"p = {text}"


def _listing(names: list[str]) -> str:
    """``LV, MYO and RV`` from a list of names."""
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def _int_or_none(value: object) -> int | None:
    return None if _missing(value) or pd.isna(value) else int(value)


def _leaderboard_cell(row: pd.Series) -> dict[str, Any]:
    """What the template needs for one leaderboard cell (see `leaderboard.cell_text`)."""
    status = str(row["status"])
    classes = [status]
    if bool(row["best"]):
        classes.append("best")
    if row["direction"]:
        classes.append(f"sig-{row['direction']}")
    if row["scope"] == TEST_SET_ONLY:
        classes.append("test-set-only")
    return {"status": status, "mean": row["mean"], "ci_low": row["ci_low"],
            "ci_high": row["ci_high"], "direction": row["direction"],
            "marker": MARKERS[row["direction"]], "best": bool(row["best"]),
            "seeds_done": int(row["seeds_done"]), "seeds_expected": int(row["seeds_expected"]),
            "seeds_failed": int(row["seeds_failed"]), "n_subjects": int(row["n_subjects"]),
            "delta": row["delta"], "delta_ci_low": row["delta_ci_low"],
            "delta_ci_high": row["delta_ci_high"], "p_holm": row["p_holm"], "note": row["note"],
            "test_set_only": row["scope"] == TEST_SET_ONLY, "test_set_mark": TEST_SET_MARK,
            "scratch_equivalent": row["scratch_equivalent"],
            "scratch_equivalent_note": row["scratch_equivalent_note"],
            "classes": " ".join(classes)}
