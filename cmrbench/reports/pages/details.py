"""The details page: per block, the tests, ranks and figures behind each leaderboard cell.

Per budget of each leaderboard: means with per-seed means, Δ vs scratch with the run-level test
(the leaderboard's family), the ranking figures of a challenge report drawn from the same
seed-level tests (ranks with cliques, the ranks each method can take, the pairwise significance
map, per-subject dot-and-box plot) and the rank sets; per leaderboard: DSC and Δ per class and
phase, augmentation vs SSP, HD95, and apart from all of it, in a section of its own, the
subject-level tests that are conditional on the trained models.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

import numpy as np
import pandas as pd

from cmrbench.reports import charts, plots
from cmrbench.reports.leaderboard import MARKERS
from cmrbench.reports.pages.base import Group, Page, int_or_none
from cmrbench.reports.site import safe_name
from cmrbench.reports.stats import BLOCK_KEYS, MAIN_VIEW, method_order
from cmrbench.vocabulary import PHASES, STRUCTURES

# (view, column title) of the per-class and per-phase tables
CLASS_COLUMNS = tuple((f"dsc_{name}", name) for name in (*STRUCTURES, *PHASES))
HD95_COLUMNS = (("hd95", "all"), *((f"hd95_{name}", name) for name in (*STRUCTURES, *PHASES)))


class DetailsPage(Page):
    """``details.html``: one section per leaderboard, one article per budget."""

    file, label, template = "details.html", "Details", "details.html"
    plain_tables = ("generalisation",)

    def context(self) -> dict[str, Any]:
        sections = []
        for group in self.report.groups:
            blocks = [self._block_section(group, budget) for budget in self.report.budgets(group)]
            augmentation = (
                self.report.part(
                    "augmentation_vs_ssp",
                    {k: group.keys[k] for k in ("dataset", "encoder", "setting")},
                )
                if group.keys["augmentation"] == "none"
                else self.report.statistics["augmentation_vs_ssp"].iloc[:0]
            )
            sections.append(
                {
                    "group": group,
                    "blocks": [b for b in blocks if b is not None],
                    "classes": self._view_table(group, CLASS_COLUMNS),
                    "class_deltas": self._delta_table(group),
                    "augmentation": augmentation.to_dict(orient="records"),
                    "hd95": self._view_table(group, HD95_COLUMNS, undefined=True),
                    "tables": self.board_tables(group),
                    "pretraining": group.pretraining,
                    "subject_level": self.report.part("subject_level", group.keys).to_dict(
                        orient="records"
                    ),
                }
            )
        return {
            "sections": sections,
            "class_columns": [c for _, c in CLASS_COLUMNS],
            "hd95_columns": [c for _, c in HD95_COLUMNS],
            "config": self.report.config,
        }

    def _block_section(self, group: Group, budget: str) -> dict[str, Any] | None:
        keys = {**group.keys, "budget": budget}
        summary = self.report.part("summary", keys)
        if summary.empty:
            return None
        summary = summary[summary["view"] == MAIN_VIEW].set_index("method")
        comparisons = self.report.part("comparisons", keys)
        comparisons = comparisons[comparisons["view"] == MAIN_VIEW].set_index("method")
        per_seed = self.report.part("per_seed", keys)
        per_seed = per_seed[per_seed["view"] == MAIN_VIEW]
        rows = []
        for method in method_order(set(summary.index)):
            # one row per method in a block's main view: a label selects a Series
            row = cast(pd.Series, summary.loc[method])
            seeds = per_seed[per_seed["method"] == method].sort_values("seed")
            compared = (
                cast(pd.Series, comparisons.loc[method]) if method in comparisons.index else None
            )
            rows.append(
                {
                    "method": method,
                    "mean": row["mean"],
                    "ci_low": row["ci_low"],
                    "ci_high": row["ci_high"],
                    "n_subjects": int(row["n_subjects"]),
                    "seeds": [
                        {"seed": int(s), "mean": m} for s, m in zip(seeds["seed"], seeds["mean"])
                    ],
                    "seed_sd": row["seed_sd"],
                    "scope": row["scope"],
                    "n_seeds": int(row["n_seeds"]),
                    "comparison": None
                    if compared is None
                    else {
                        **{
                            k: compared[k]
                            for k in (
                                "delta",
                                "ci_low",
                                "ci_high",
                                "ci_clipped",
                                "p",
                                "p_holm",
                                "scope",
                                "direction",
                                "note",
                                "step_down",
                            )
                        },
                        "n_seeds": int(compared["n_seeds"]),
                        "n_subjects": int(compared["n_subjects"]),
                        "marker": MARKERS[compared["direction"]],
                    },
                }
            )
        ranks = self.report.part("ranks", keys).sort_values("rank", kind="stable")
        cliques = self.report.part("cliques", keys)
        clique_lists = (
            [list(frame["method"]) for _, frame in cliques.groupby("clique")]
            if not cliques.empty
            else []
        )
        rank_rows = ranks.to_dict(orient="records")
        figures, figure_note = {}, ""
        if len(rank_rows) >= 2:
            if self.report.take_plot():
                figures = self._block_figures(group, budget, rank_rows, clique_lists)
            else:
                figure_note = (
                    "figures left out: the report's figure cap was reached "
                    "(the tables are complete)"
                )
        return {
            "budget": budget,
            "anchor": safe_name("block", (*group.key, budget), ""),
            "n_labelled": int_or_none(summary["n_labelled"].max()),
            "rows": rows,
            "figures": figures,
            "figure_note": figure_note,
            "ranks": rank_rows,
            "cliques": clique_lists,
            "rank_seeds": int(ranks["n_seeds"].max()) if not ranks.empty else 0,
        }

    def _block_figures(
        self,
        group: Group,
        budget: str,
        ranks: list[dict[Hashable, Any]],
        cliques: list[list[str]],
    ) -> dict[str, str]:
        """The block's ranking figures: rank diagram with cliques, rank sets, pairwise
        significance map and per-subject dot-and-box plot (methods ordered by rank)."""
        keys = {**group.keys, "budget": budget}
        ordered = [r["method"] for r in ranks]
        by_rank = {r["method"]: r["rank"] for r in ranks}
        where = f"budget {budget}: {group.title}"
        paths = {
            kind: self.report.site.path(f"plots/{safe_name(kind, (*group.key, budget), '.svg')}")
            for kind in ("cd", "ranks", "pairs", "subjects")
        }
        plots.cd_diagram(
            by_rank,
            cliques,
            self.report.colours,
            paths["cd"],
            f"Ranks with cliques of methods no test separates, {where}",
        )
        charts.rank_set_chart(
            ordered,
            [r["rank"] for r in ranks],
            [int(r["rank_low"]) for r in ranks],
            [int(r["rank_high"]) for r in ranks],
            self.report.colours,
            paths["ranks"],
            f"Ranks the seed-level tests allow, {where}",
        )
        pairwise = self.report.part("pairwise", keys)
        charts.significance_map(
            ordered,
            pairwise[pairwise["view"] == MAIN_VIEW],
            paths["pairs"],
            f"Pairwise seed-level tests, {where}",
        )
        block = self.report.blocks[tuple(keys[k] for k in BLOCK_KEYS)]
        scores = block.scores[MAIN_VIEW]  # (M, S, N)
        runs = np.isfinite(scores).sum(axis=1)
        seed_means = np.where(runs > 0, np.nansum(scores, axis=1) / np.maximum(runs, 1), np.nan)
        chosen = [block.methods.index(m) for m in ordered]
        charts.subject_dot_box(
            ordered,
            seed_means[chosen],
            self.report.colours,
            paths["subjects"],
            f"Per-subject DSC, {where}",
        )
        return {kind: f"plots/{path.name}" for kind, path in paths.items()}

    def _view_table(
        self, group: Group, columns: tuple[tuple[str, str], ...], undefined: bool = False
    ) -> list[dict[str, Any]]:
        summary = self.report.part("summary", group.keys)
        if summary.empty:
            return []
        summary = summary[summary["view"].isin([v for v, _ in columns])]
        rows: list[dict[str, Any]] = []
        for budget in self.report.budgets(group):
            in_budget = summary[summary["budget"] == budget]
            for method in method_order(set(in_budget["method"])):
                mine = in_budget[in_budget["method"] == method].set_index("view")
                cells = [
                    {
                        "mean": mine.loc[v, "mean"],
                        "ci_low": mine.loc[v, "ci_low"],
                        "ci_high": mine.loc[v, "ci_high"],
                        "scope": mine.loc[v, "scope"],
                    }
                    if v in mine.index
                    else None
                    for v, _ in columns
                ]
                row = {
                    "budget": budget,
                    "method": method,
                    "cells": cells,
                    "first": not rows or rows[-1]["budget"] != budget,
                }
                if undefined:
                    overall = cast(pd.Series, mine.loc[columns[0][0]])  # one row per view
                    row.update(
                        n_undefined=int(overall["n_undefined"]), n_entries=int(overall["n_entries"])
                    )
                rows.append(row)
        return rows

    def _delta_table(self, group: Group) -> list[dict[str, Any]]:
        """Δ vs scratch with CI per class and phase (`CLASS_COLUMNS` views), budget × method."""
        comparisons = self.report.part("comparisons", group.keys)
        rows: list[dict[str, Any]] = []
        for budget in self.report.budgets(group):
            in_budget = comparisons[comparisons["budget"] == budget]
            for method in method_order(set(in_budget["method"])):
                mine = in_budget[in_budget["method"] == method].set_index("view")
                rows.append(
                    {
                        "budget": budget,
                        "method": method,
                        "first": not rows or rows[-1]["budget"] != budget,
                        "cells": [
                            mine.loc[v].to_dict() if v in mine.index else None
                            for v, _ in CLASS_COLUMNS
                        ],
                    }
                )
        return rows
