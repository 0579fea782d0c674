"""The table catalogue: every table the reports compute, declared once.

A `Table` names a table, says what each of its columns means and what the table is for, which
pages of the site show it and which downloads it has. An `Analysis` (one module of
`cmrbench.reports.stats`, one question) declares its tables and computes them together from a
`Context`: the store, the settings, the blocks' score cubes and the tables it builds on. The
package's ``CATALOGUE`` holds every table in the order the downloads page lists them; the
downloads, ``cmrbench stats --tables`` and ``cmrbench stats --table NAME`` all read it, and a
table printed on the command line has the bytes of its download (`table_bytes`).

Adding a statistic: declare its `Table` in the analysis module that answers its question and
return its rows from that module's ``compute`` (the downloads and ``cmrbench stats`` then have
it), and name it in a page's ``plain_tables`` (`cmrbench.reports.pages.base.Page`) to show it
on that page for each leaderboard, or give it a layout of its own in a page module and its
template.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from cmrbench.errors import CmrbenchError
from cmrbench.reports.stats.blocks import BLOCK_KEYS, BlockScores, View
from cmrbench.reports.stats.estimates import BootstrapConfig
from cmrbench.reports.text import csv_safe
from cmrbench.store import Store

# download format → the label the downloads page shows
DOWNLOADS = {"csv": "CSV", "json": "JSON", "parquet": "parquet"}


class UnknownTableError(CmrbenchError, KeyError):
    """A table name the catalogue does not hold (a `KeyError`, so the tables are a mapping)."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError's own str() would quote the message


@dataclass(frozen=True)
class Column:
    """One column of a table and what it holds."""

    name: str
    meaning: str


@dataclass(frozen=True)
class Table:
    """One table the reports compute.

    Attributes:
        name: the table's name (its download files are ``data/<name>.<format>``).
        description: what a row holds, as the downloads page and ``--tables`` say it.
        columns: the columns in order, each with its meaning.
        pages: the site pages that show it (none: downloads or the command line only).
        downloads: its download formats (`DOWNLOADS`); none: the command line only.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    pages: tuple[str, ...] = ()
    downloads: tuple[str, ...] = ("csv", "json")

    def __post_init__(self) -> None:
        unknown = [f for f in self.downloads if f not in DOWNLOADS]
        if unknown:
            raise ValueError(
                f"table {self.name}: unknown download format(s) {unknown}; "
                f"expected {', '.join(DOWNLOADS)}"
            )

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def frame(self, rows: Iterable[dict] = ()) -> pd.DataFrame:
        """``rows`` as a data frame with exactly this table's columns, in order."""
        return pd.DataFrame(list(rows), columns=self.column_names)


class Context(Protocol):
    """What an analysis computes its tables from (`cmrbench.reports.stats.Statistics`)."""

    store: Store
    config: BootstrapConfig
    views: tuple[View, ...]
    power_delta: float | None

    @property
    def scores(self) -> pd.DataFrame: ...

    @property
    def blocks(self) -> list[BlockScores]: ...

    def __getitem__(self, name: str) -> pd.DataFrame: ...

    def of(self, store: Store, views: tuple[View, ...]) -> Context:
        """The same analyses, with the same settings, of another store."""
        ...


@dataclass(frozen=True)
class Analysis:
    """One question the reports answer: its tables, and ``compute``, which returns every one of
    them by name from a `Context` (an analysis computes its tables together: the ranks of a
    block give five tables in one pass)."""

    tables: tuple[Table, ...]
    compute: Callable[[Context], dict[str, pd.DataFrame]]


class Catalogue:
    """Every table of the analyses, in order, by name."""

    def __init__(self, analyses: Sequence[Analysis]) -> None:
        self.analyses = tuple(analyses)
        self._tables: dict[str, Table] = {}
        self._analysis: dict[str, Analysis] = {}
        for analysis in self.analyses:
            for table in analysis.tables:
                if table.name in self._tables:
                    raise ValueError(f"table {table.name!r} is declared twice")
                self._tables[table.name] = table
                self._analysis[table.name] = analysis

    def __getitem__(self, name: str) -> Table:
        if name not in self._tables:
            raise UnknownTableError(
                f"unknown table {name!r}; the tables are "
                f"{', '.join(self._tables)} (cmrbench stats RUN --tables)"
            )
        return self._tables[name]

    def __iter__(self) -> Iterator[Table]:
        return iter(self._tables.values())

    def __len__(self) -> int:
        return len(self._tables)

    def names(self) -> list[str]:
        return list(self._tables)

    def analysis_of(self, name: str) -> Analysis:
        """The analysis that computes table ``name``."""
        return self._analysis[self[name].name]


# What the columns many tables share hold (`shared_columns`).
SHARED_MEANINGS = {
    "dataset": "dataset of the test subjects and the labelled training subjects",
    "encoder": "segmentation net (its encoder is pretrained, then the net is fine-tuned)",
    "augmentation": "fine-tuning augmentation preset (none, paper, ...)",
    "setting": "default, or a generalisation setting: training vendors (vendors=A+B) or phase "
    "(phase=ED)",
    "budget": "label budget: labelled training subjects (or all of them)",
    "n_labelled": "labelled training subjects of the budget",
    "method": "pretraining method (scratch: none) or external checkpoint",
    "view": "the score: dsc or hd95 over every annotated class and phase, or one class "
    "(_LV, _MYO, _RV) or phase (_ED, _ES)",
    "seed": "seed of the training run: draws the labelled subset and seeds the training",
    "subject": "test subject",
}


def shared_columns(names: Sequence[str] = BLOCK_KEYS) -> tuple[Column, ...]:
    """Columns many tables share, by name (default: the block's keys, which say which block a
    row belongs to)."""
    return tuple(Column(name, SHARED_MEANINGS[name]) for name in names)


def interval(name: str, what: str, bounds: str = "ci") -> tuple[Column, Column, Column]:
    """An estimate and its 95 % interval: ``name``, ``<bounds>_low`` and ``<bounds>_high``."""
    return (
        Column(name, what),
        Column(f"{bounds}_low", f"lower end of the 95 % CI of {name}"),
        Column(f"{bounds}_high", f"upper end of the 95 % CI of {name}"),
    )


METHOD, VIEW = shared_columns(("method", "view"))
N_SEEDS = Column("n_seeds", "training runs (seeds) in the estimate")
N_SUBJECTS = Column("n_subjects", "test subjects in the estimate (those scored in every run)")
SCOPE = Column(
    "scope",
    "what the interval covers: runs (training runs and test subjects), "
    "test set only (one run: the test subjects only), or empty (none)",
)


def records(table: pd.DataFrame) -> list[dict]:
    """Table rows as JSON-ready dicts (NaN → None, numpy scalars → Python)."""
    out = []
    for row in table.to_dict(orient="records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(value: object) -> object:
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def table_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """A table as one download file: CSV (formula-like text cells quoted, `csv_safe`), JSON
    (one object per row, NaN as null) or parquet."""
    if fmt == "csv":
        return csv_safe(frame).to_csv(index=False).encode("utf-8")
    if fmt == "json":
        return (json.dumps(records(frame), indent=1) + "\n").encode("utf-8")
    if fmt == "parquet":
        return frame.to_parquet(index=False)
    raise ValueError(f"unknown table format {fmt!r}; expected {', '.join(DOWNLOADS)}")
