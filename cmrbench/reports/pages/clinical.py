"""The clinical page: agreement of the clinical end points with the reference, and Bland–Altman.

Per leaderboard and budget, a method × quantity table of MAE, ΔMAE vs scratch, bias and limits
of agreement with their CIs (`cmrbench.reports.stats.clinical`), and Bland–Altman small
multiples (one panel per method × quantity) for the smallest and the largest budget.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cmrbench.reports import agreement_charts
from cmrbench.reports.pages.base import Group, Page
from cmrbench.reports.site import safe_name
from cmrbench.reports.stats import budget_order, method_order, quantity_order


class ClinicalPage(Page):
    """``clinical.html``: the clinical end points of every leaderboard."""

    file, label, template = "clinical.html", "Clinical", "clinical.html"

    def context(self) -> dict[str, Any]:
        sections = []
        for group in self.report.groups:
            in_group = self.report.part("clinical", group.keys)
            if in_group.empty:
                continue
            quantities = sorted(in_group["quantity"].unique(), key=quantity_order)
            units = dict(zip(in_group["quantity"], in_group["unit"]))
            present = sorted(in_group["budget"].unique(), key=budget_order)
            plotted = {present[0], present[-1]}
            budgets = []
            for budget in self.report.budgets(group):
                rows = in_group[in_group["budget"] == budget]
                if rows.empty:
                    continue
                table = []
                for method in method_order(set(rows["method"])):
                    mine = rows[rows["method"] == method].set_index("quantity")
                    table.append(
                        {
                            "method": method,
                            "cells": [
                                mine.loc[q].to_dict() if q in mine.index else None
                                for q in quantities
                            ],
                        }
                    )
                plot, note = (
                    self._bland_altman(group, budget, rows)
                    if budget in plotted
                    else (
                        None,
                        "Bland–Altman plots are drawn for the smallest and the largest budget; "
                        "this table is complete",
                    )
                )
                budgets.append({"budget": budget, "rows": table, "plot": plot, "note": note})
            sections.append(
                {"group": group, "quantities": quantities, "units": units, "budgets": budgets}
            )
        return {"sections": sections}

    def _bland_altman(
        self, group: Group, budget: str, agreement: pd.DataFrame
    ) -> tuple[str | None, str]:
        if not self.report.take_plot():
            return None, (
                "plot left out: the report's figure cap was reached (the table is complete)"
            )
        points = self.report.part("clinical_points", {**group.keys, "budget": budget})
        points = points[points["pred"].notna() & points["ref"].notna()]
        if points.empty:
            return None, "no subject has both a prediction and a reference value"
        points = pd.DataFrame(
            {
                "method": points["method"].astype(str).to_numpy(),
                "quantity": points["quantity"].astype(str).to_numpy(),
                "unit": points["unit"].astype(str).to_numpy(),
                "pred": points["pred"].to_numpy(float),
                "ref": points["ref"].to_numpy(float),
            }
        )
        quantities = sorted(points["quantity"].unique(), key=quantity_order)
        ranks = {
            "method": self.report.method_rank,
            "quantity": {q: i for i, q in enumerate(quantities)},
        }
        points = points.sort_values(
            ["method", "quantity"],
            kind="stable",
            key=lambda column: column.map(ranks[str(column.name)]),
        )
        name = safe_name("bland-altman", (*group.key, budget), ".svg")
        agreement_charts.bland_altman_grid(
            points,
            agreement,
            self.report.colours,
            self.report.site.path(f"plots/{name}"),
            f"Bland–Altman, budget {budget}: {group.title}",
        )
        return f"plots/{name}", ""
