"""What every page of the site shares: the `Report` it is part of, and the `Page` base class.

A `Report` holds one site's store, tables (`cmrbench.reports.stats.Statistics`), leaderboard
groups, method page names, colours, the template environment and the budget of figures, and
writes through the site's `SiteFolder`. A `Page` is one file of the site (or, for the methods,
a family of files) with its navigation label and template; ``context`` gives what the template
shows. Pages are plain HTML from jinja2 templates with autoescaping on, so every string from the
store is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, SupportsFloat

import jinja2
import numpy as np
import pandas as pd

from cmrbench.reports import plots
from cmrbench.reports.leaderboard import (
    MARKERS,
    STEP_DOWN_MARK,
    TEST_SET_MARK,
    group_title,
    labels_saved_text,
)
from cmrbench.reports.site import SiteFolder, safe_name
from cmrbench.reports.stats import (
    BASELINE,
    BLOCK_KEYS,
    CATALOGUE,
    GROUP_KEYS,
    TEST_SET_ONLY,
    BlockScores,
    Statistics,
    budget_order,
    method_order,
)
from cmrbench.reports.stats.leaderboard import (
    SINGLE_PRETRAINING,
    beyond_the_study,
    single_pretraining,
)
from cmrbench.reports.stats.merges import CELL_KEYS

if TYPE_CHECKING:
    from pandas.api.typing import NAType

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
SCALED_DOWN = (
    "A scaled-down run (cmrbench run --scale small): a smaller encoder of the same "
    "family, smaller images and batches, so a CPU runs it; its numbers check the "
    "pipeline and are not comparable with full-size results."
)


@dataclass
class Group:
    """One leaderboard: a dataset × encoder × augmentation × setting; ``beyond`` says why
    some of its cells lie beyond the study ("" when none do); ``family_size`` is the number of
    tested comparisons with scratch (its family); ``pretraining`` is `SINGLE_PRETRAINING` when
    its claims rest on one pretraining run per method, else ""; ``scaled`` is `SCALED_DOWN`
    when its cells ran scaled down (``run --scale small``), else ""."""

    keys: dict[str, str]
    title: str
    anchor: str
    beyond: str = ""
    family_size: int = 0
    pretraining: str = ""
    scaled: str = ""

    @property
    def key(self) -> tuple[str, ...]:
        """The board's key values, in `GROUP_KEYS` order (what file names hash)."""
        return tuple(self.keys.values())


class Report:
    """The shared state of one site build: the store's tables, the leaderboard groups, method
    page names and colours, the templates, and how many figures may still be drawn."""

    def __init__(
        self,
        statistics: Statistics,
        site: SiteFolder,
        max_plots: int,
        nav: tuple[tuple[str, str], ...],
    ) -> None:
        self.statistics, self.site, self.plots_left, self.nav = statistics, site, max_plots, nav
        self.store, self.config = statistics.store, statistics.config
        self.board = statistics["leaderboard"]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["num"] = number
        self.env.filters["pvalue"] = pvalue
        self.env.filters["p_statement"] = p_statement
        self.env.filters["pct"] = lambda v: "n/a" if missing(v) else f"{100 * v:.0f} %"
        all_methods = set(self.store.cells["method"]) | set(self.store.pretrain["method"])
        self.methods = method_order(all_methods - {""})
        self.method_pages = {m: safe_name("method", m, ".html") for m in self.methods}
        self.method_rank = {m: i for i, m in enumerate(self.methods)}  # sorts rows for figures
        self.colours = plots.method_colours(self.methods)
        self.groups = [
            self._group(dict(zip(GROUP_KEYS, map(str, keys))))
            for keys in self.board[list(GROUP_KEYS)].drop_duplicates().itertuples(index=False)
        ]
        self.splits: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], pd.DataFrame]] = {}
        self.blocks: dict[tuple[str, ...], BlockScores] = {
            tuple(str(block.key[k]) for k in BLOCK_KEYS): block for block in statistics.blocks
        }
        self.merge_notes = merge_notes(statistics["merge_changes"])

    def merge_note(self, row: pd.Series | dict[str, Any]) -> str:
        """What the merged runs' own reports show for a leaderboard row's cell, where a merge
        changed its mean or Δ ("" otherwise; `cmrbench.reports.stats.merges`)."""
        return self.merge_notes.get(tuple(str(row[k]) for k in CELL_KEYS), "")

    def _group(self, keys: dict[str, str]) -> Group:
        title = group_title(keys)
        rows = self.board[(self.board[list(GROUP_KEYS)] == pd.Series(keys)).all(axis=1)]
        beyond = beyond_the_study(
            keys["encoder"], keys["setting"], sorted(set(rows["budget"]), key=budget_order)
        )
        cells = self.store.cells
        scaled = (cells[list(GROUP_KEYS)].astype(str) == pd.Series(keys)).all(axis=1) & (
            cells["scale"] == "small"
        )
        return Group(
            keys=keys,
            title=title,
            anchor=safe_name("group", tuple(keys.values()), ""),
            beyond=beyond,
            family_size=int(rows["family_size"].max()),
            pretraining=SINGLE_PRETRAINING if single_pretraining(rows) else "",
            scaled=SCALED_DOWN if scaled.any() else "",
        )

    def render(
        self, template: str, target: str, context: dict[str, Any], active: str | None = None
    ) -> None:
        """Render ``template`` with ``context`` (and what every page shows) into ``target``."""
        page = self.env.get_template(template).render(
            nav=self.nav,
            active=active or target,
            run=self.store.run,
            method_pages=self.method_pages,
            baseline=BASELINE,
            **context,
        )
        self.site.write_text(target, page)

    def take_plot(self) -> bool:
        """Whether one more figure may be drawn (`build_site`'s ``max_plots``)."""
        self.plots_left -= 1
        return self.plots_left >= 0

    def part(self, name: str, keys: dict[str, str]) -> pd.DataFrame:
        """Rows of table ``name`` whose ``keys`` columns equal ``keys`` (split once, cached)."""
        columns = tuple(keys)
        table = self.statistics[name]
        if (name, columns) not in self.splits:
            self.splits[(name, columns)] = (
                {}
                if table.empty
                else {
                    tuple(str(v) for v in (k if isinstance(k, tuple) else (k,))): part
                    for k, part in table.groupby(list(columns), observed=True, sort=False)
                }
            )
        return self.splits[(name, columns)].get(tuple(keys[c] for c in columns), table.iloc[:0])

    def budgets(self, group: Group) -> list[str]:
        """The budgets of a leaderboard, in budget order."""
        rows = self.part("leaderboard", group.keys)
        return sorted(rows["budget"].unique(), key=budget_order)

    def centring(self) -> list[str]:
        """Lines saying where augmented views were centred using the labels (spec field
        ``center == "labels"``, as in the study's code: PAPER.md "Heart-centred crops")."""
        lines = []
        cells = self.store.cells
        if (self.store.pretrain["center"] == "labels").any() or (
            cells["pretrain_center"] == "labels"
        ).any():
            lines.append(
                "Pretraining views were centred on the heart using the reference labels "
                "(center = labels): the pretraining saw label-derived information."
            )
        if (cells["center"] == "labels").any():
            lines.append(
                "Fine-tuning views were centred on the heart using the reference labels "
                "(center = labels)."
            )
        return lines

    def method_doc(self, method: str) -> str:
        """The method's docstring as the run recorded it (``run.json`` → methods → doc)."""
        entry = (self.store.run.get("methods") or {}).get(method) or {}
        return str(entry.get("doc") or "")


class Page:
    """One page of the site: its file, its label in the navigation and its template.

    `build` renders ``context()`` into the file; a page with several files (the method
    pages) overrides it.
    """

    file: ClassVar[str]
    label: ClassVar[str]
    template: ClassVar[str]
    # Catalogue tables the page shows for each leaderboard in the plain layout of
    # `board_tables` (their rows must carry the leaderboard's keys): naming a new table here
    # puts it on the page without touching the template.
    plain_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, report: Report) -> None:
        self.report = report

    def build(self) -> None:
        self.report.render(self.template, self.file, self.context())

    def context(self) -> dict[str, Any]:
        raise NotImplementedError

    def board_tables(self, group: Group) -> list[dict[str, Any]]:
        """The rows of each of `plain_tables` on one leaderboard, for the ``catalogue_table``
        macro: the table's description as its title, its other columns with their meanings
        (a header's tooltip), cells as text (`number`: three decimals, n/a), and its CSV."""
        shown = []
        for name in self.plain_tables:
            table, rows = CATALOGUE[name], self.report.part(name, group.keys)
            if rows.empty:
                continue
            columns = [c for c in table.columns if c.name in rows and c.name not in group.keys]
            numeric = {
                c.name: pd.api.types.is_numeric_dtype(rows[c.name])
                and not pd.api.types.is_bool_dtype(rows[c.name])
                for c in columns
            }
            shown.append(
                {
                    "title": table.description[:1].upper() + table.description[1:],
                    "columns": [
                        {"name": c.name, "meaning": c.meaning, "numeric": numeric[c.name]}
                        for c in columns
                    ],
                    "rows": [
                        [
                            {
                                "text": number(value)
                                if numeric[c.name]
                                else "n/a"
                                if missing(value)
                                else str(value),
                                "numeric": numeric[c.name],
                            }
                            for c, value in zip(columns, row)
                        ]
                        for row in rows[[c.name for c in columns]].itertuples(index=False)
                    ],
                    "download": f"data/{name}.csv" if "csv" in table.downloads else None,
                }
            )
        return shown


def missing(value: object) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def number(value: SupportsFloat | None, digits: int = 3) -> str:
    """A number for a table cell; NaN and None show as ``n/a``."""
    if value is None or missing(value):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def pvalue(value: SupportsFloat | None) -> str:
    """A p-value: three decimals, or ``< 0.001`` (with a no-break space); NaN shows as ``n/a``."""
    if value is None or missing(value):
        return "n/a"
    return f"{float(value):.3f}" if float(value) >= 1e-3 else "<\u00a00.001"


def p_statement(value: SupportsFloat | None) -> str:
    """``p = 0.012``, ``p < 0.001`` or ``p n/a`` for running text."""
    text = pvalue(value)
    return f"p {text}" if text.startswith("<") or text == "n/a" else f"p = {text}"


def listing(names: list[str]) -> str:
    """``LV, MYO and RV`` from a list of names."""
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def int_or_none(value: float | np.integer | np.floating | NAType | None) -> int | None:
    """``value`` as an int; None when it is missing (None, NaN or ``pd.NA``)."""
    return None if value is None or pd.isna(value) else int(value)


def merge_notes(changes: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """Per changed leaderboard cell (its `CELL_KEYS` values), the numbers of the merged runs'
    own reports: "run-a alone: 0.812, Δ +0.075" (``merge_changes`` rows)."""
    notes: dict[tuple[str, ...], list[str]] = {}
    for row in changes.to_dict("records"):
        delta = "no Δ" if missing(row["delta_alone"]) else f"Δ {row['delta_alone']:+.3f}"
        notes.setdefault(tuple(str(row[k]) for k in CELL_KEYS), []).append(
            f"{row['run']} alone: {number(row['mean_alone'])}, {delta}"
        )
    return {key: "; ".join(texts) for key, texts in notes.items()}


def leaderboard_cell(row: pd.Series, merge_note: str = "") -> dict[str, Any]:
    """What the template needs for one leaderboard cell (see `leaderboard.cell_text`);
    ``merge_note`` what the merged runs' own reports show where a merge changed it."""
    status = str(row["status"])
    classes = [status]
    if bool(row["top_set"]):
        classes.append("top-set")
    if row["direction"]:
        classes.append(f"sig-{row['direction']}")
    if row["scope"] == TEST_SET_ONLY:
        classes.append("test-set-only")
    tested = not missing(row["p_holm"])
    return {
        "status": status,
        "mean": row["mean"],
        "ci_low": row["ci_low"],
        "ci_high": row["ci_high"],
        "direction": row["direction"],
        "marker": MARKERS[row["direction"]],
        "top_set": bool(row["top_set"]),
        "seeds_done": int(row["seeds_done"]),
        "seeds_expected": int(row["seeds_expected"]),
        "seeds_failed": int(row["seeds_failed"]),
        "n_subjects": int(row["n_subjects"]),
        "delta": row["delta"],
        "delta_ci_low": row["delta_ci_low"],
        "delta_ci_high": row["delta_ci_high"],
        "p_holm": row["p_holm"],
        "note": row["note"],
        "tested": tested,
        "step_down": bool(row["step_down"]),
        "step_down_mark": STEP_DOWN_MARK,
        "verdict": "" if not tested or row["direction"] else "n.s.",
        "test_set_only": row["scope"] == TEST_SET_ONLY,
        "test_set_mark": TEST_SET_MARK,
        "labels_saved": labels_saved_text(row),
        "classes": " ".join(classes),
        "merge_note": merge_note,
    }
