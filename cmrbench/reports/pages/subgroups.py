"""The subgroup pages: means and Δ vs scratch per vendor and per pathology group.

One template (``subgroups.html``) for both pages: per leaderboard, budget × method rows whose
columns are the subgroups of the page's table (`cmrbench.reports.stats.subgroups`), then the
Δ vs scratch per subgroup and, on the vendor page, the unseen − seen vendor gap and the vendor
interaction (does pretraining help more on unseen vendors?).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd

from cmrbench.reports.pages.base import Group, Page
from cmrbench.reports.stats import method_order


class SubgroupPage(Page):
    """A page of one subgroup table; subclasses name the table and the page's words."""

    template = "subgroups.html"
    table: ClassVar[str]
    title: ClassVar[str]
    column_label: ClassVar[str]  # what precedes a subgroup's name in a column title
    nothing: ClassVar[str]
    lead: ClassVar[str]

    def context(self) -> dict[str, Any]:
        """Per-subgroup means and Δ of the page's table (``vendors`` or ``pathologies``),
        per leaderboard."""
        name = self.table
        sections = []
        for group in self.report.groups:
            rows_in = self.report.part(name, group.keys)
            if rows_in.empty:
                continue
            subgroups = rows_in[["kind", "subgroup", "vendors"]].drop_duplicates()
            columns = sorted(
                (
                    {"subgroup": r.subgroup, "kind": r.kind, "vendors": r.vendors}
                    for r in subgroups.itertuples()
                ),
                key=lambda c: (c["kind"] == "seen", c["subgroup"]),
            )
            table = self._subgroup_rows(group, rows_in, columns)
            for column in columns:
                mine = rows_in[
                    (rows_in["kind"] == column["kind"])
                    & (rows_in["subgroup"] == column["subgroup"])
                ]
                column["n_subjects"] = int(mine["n_subjects"].max())
            deltas = self.report.part("subgroup_comparisons", group.keys)
            sections.append(
                {
                    "group": group,
                    "columns": columns,
                    "rows": table,
                    "deltas": self._subgroup_rows(group, deltas, columns),
                    "gaps": self.report.part("vendor_gap", group.keys).to_dict(orient="records")
                    if name == "vendors"
                    else [],
                    "interactions": self.report.part("vendor_interaction", group.keys).to_dict(
                        orient="records"
                    )
                    if name == "vendors"
                    else [],
                    "restricted": any(c["kind"] == "seen" for c in columns),
                }
            )
        return {
            "sections": sections,
            "title": self.title,
            "label": self.column_label,
            "nothing": self.nothing,
            "lead": self.lead,
        }

    def _subgroup_rows(
        self, group: Group, rows_in: pd.DataFrame, columns: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Budget × method rows whose cells are the rows of ``rows_in`` for each subgroup column."""
        table: list[dict[str, Any]] = []
        for budget in self.report.budgets(group):
            in_budget = rows_in[rows_in["budget"] == budget]
            for method in method_order(set(in_budget["method"])):
                mine = in_budget[in_budget["method"] == method].set_index(["kind", "subgroup"])
                table.append(
                    {
                        "budget": budget,
                        "method": method,
                        "cells": [
                            mine.loc[(c["kind"], c["subgroup"])].to_dict()
                            if (c["kind"], c["subgroup"]) in mine.index
                            else None
                            for c in columns
                        ],
                        "first": not table or table[-1]["budget"] != budget,
                    }
                )
        return table


class VendorsPage(SubgroupPage):
    """``vendors.html``: per scanner vendor, and over the seen and unseen vendors."""

    file, label, table = "vendors.html", "Vendors", "vendors"
    title, column_label = "Per vendor", "vendor "
    nothing = "No vendor letters in these results."
    lead = (
        "Mean DSC per scanner vendor of the test subjects (A Siemens, B Philips, C General "
        "Electric, D Canon) with 95 % CIs over training runs and the vendor's test subjects "
        "(logit scale; † one run: test subjects only). Where the setting restricts the "
        "training vendors, “seen” and “unseen” pool the test subjects of the training "
        "vendors and of the others."
    )


class PathologiesPage(SubgroupPage):
    """``pathologies.html``: per pathology group of the test subjects."""

    file, label, table = "pathologies.html", "Pathologies", "pathologies"
    title, column_label = "Per pathology", ""
    nothing = "No pathology groups in these results."
    lead = (
        "Mean DSC per pathology group of the test subjects (ACDC: NOR normal, MINF previous "
        "myocardial infarction, DCM dilated and HCM hypertrophic cardiomyopathy, ARV "
        "abnormal right ventricle; other datasets name their own groups) with 95 % CIs "
        "over training runs and the group's test subjects († one run: test subjects "
        "only)."
    )
