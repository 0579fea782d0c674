"""Statistics of a results store, one module per question, every table in one catalogue.

`Statistics` holds the tables of one store by name, each computed on first use by the
analysis that declares it (`catalogue.Analysis`). The analyses, in the order the downloads
list their tables:

* `leaderboard`: the leaderboards, every block's means (``summary``) and each run's mean;
* `comparisons`: each method against scratch, Δ with its simultaneous CI and the run-level test
  (one family per leaderboard), and the subject-level tests conditional on the trained models;
* `ranks`: the seed-level pairwise tests, ranks with the rank sets they allow, cliques;
* `subgroups`: per vendor, seen / unseen vendors, the vendor interaction, per pathology group;
* `generalisation`: each method on its own test set and on every external test set;
* `augmentation`: scratch with augmentation against each method without it;
* `efficiency`: labels saved and the label-efficiency curve across budgets;
* `clinical`: agreement of the clinical end points;
* `merges`: the leaderboard numbers a merge of run folders changed from a run's own;
* `provenance`: jobs, cell folders set aside, unreadable files, skipped subjects;
* `scores`: the per-subject scores and the store's rows behind every number;
* `power`: detectable Δ and the seeds a Δ needs (command line only).

`blocks` holds how scores are keyed (blocks, leaderboards, views, the baseline) and each
block's score cube; `estimates` the run-level estimate, the families' Holm marks and
simultaneous intervals, bounded intervals and the Wilcoxon test that every analysis shares.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property

import pandas as pd
from threadpoolctl import threadpool_limits

from cmrbench.reports.stats import (
    augmentation,
    clinical,
    comparisons,
    efficiency,
    generalisation,
    leaderboard,
    merges,
    power,
    provenance,
    ranks,
    scores,
    subgroups,
)
from cmrbench.reports.stats.blocks import (
    BASELINE,
    BLOCK_KEYS,
    GROUP_KEYS,
    MAIN_VIEW,
    VIEWS,
    BlockScores,
    View,
    annotated_structures,
    blocks_of,
    boards_of,
    budget_order,
    method_order,
    quantity_order,
    subject_blocks,
    subject_scores,
)
from cmrbench.reports.stats.catalogue import Catalogue, Column, Table, UnknownTableError
from cmrbench.reports.stats.comparisons import compare_block, compare_board
from cmrbench.reports.stats.estimates import (
    ALPHA,
    RUNS,
    TEST_SET_ONLY,
    BootstrapConfig,
    adjust_family,
    bounded_interval,
    complete_matrix,
    holm,
    interval_scope,
    run_level_estimates,
    wilcoxon_pvalue,
)
from cmrbench.reports.stats.leaderboard import summarise_block
from cmrbench.store import Store

CATALOGUE = Catalogue(
    [
        leaderboard.ANALYSIS,
        comparisons.ANALYSIS,
        ranks.ANALYSIS,
        subgroups.ANALYSIS,
        generalisation.ANALYSIS,
        augmentation.ANALYSIS,
        efficiency.ANALYSIS,
        clinical.ANALYSIS,
        merges.ANALYSIS,
        provenance.ANALYSIS,
        scores.ANALYSIS,
        power.ANALYSIS,
    ]
)


class Statistics(Mapping[str, pd.DataFrame]):
    """The catalogue's tables of one store, by name, each computed on first use.

    ``statistics["comparisons"]`` runs the analysis that declares the table (and those it
    builds on) once; iterating computes them all. ``views`` are the scores that get a
    ``summary`` (a leaderboard needs only `MAIN_VIEW`); ``power_delta`` is the Δ whose seeds
    the ``power`` table finds.
    """

    def __init__(
        self,
        store: Store,
        config: BootstrapConfig = BootstrapConfig(),
        views: tuple[View, ...] = VIEWS,
        power_delta: float | None = None,
    ) -> None:
        self.store, self.config, self.views, self.power_delta = store, config, views, power_delta
        self._tables: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            analysis = CATALOGUE.analysis_of(name)
            # The analyses run thousands of small array operations; BLAS worker threads only
            # add synchronisation to those, and on a busy machine make each many times slower.
            with threadpool_limits(limits=1, user_api="blas"):
                self._tables.update(analysis.compute(self))
        return self._tables[name]

    def __contains__(self, name: object) -> bool:
        return name in CATALOGUE.names()  # without computing the table

    def __iter__(self) -> Iterator[str]:
        return iter(CATALOGUE.names())

    def __len__(self) -> int:
        return len(CATALOGUE)

    def of(self, store: Store, views: tuple[View, ...]) -> Statistics:
        """The tables of another store (a merged run's own), with this one's settings."""
        return Statistics(store, self.config, views, self.power_delta)

    @cached_property
    def scores(self) -> pd.DataFrame:
        """One row per training run × test subject with each view's score (`subject_scores`)."""
        subjects = self.store.subjects
        return subject_scores(subjects, self.views) if not subjects.empty else pd.DataFrame()

    @cached_property
    def blocks(self) -> list[BlockScores]:
        """Every block's dense score cube, in group then budget order."""
        return blocks_of(self.scores, self.views) if not self.store.subjects.empty else []

    @cached_property
    def notes(self) -> list[str]:
        """What the report must say about blocks it cannot test (no scratch cells)."""
        return comparisons.untested_notes(self.blocks)

    @cached_property
    def structures(self) -> list[str]:
        """The classes annotated anywhere in the store (Sunnybrook has no RV)."""
        return annotated_structures(self.store.subjects)


__all__ = [
    "ALPHA",
    "BASELINE",
    "BLOCK_KEYS",
    "CATALOGUE",
    "GROUP_KEYS",
    "MAIN_VIEW",
    "RUNS",
    "TEST_SET_ONLY",
    "VIEWS",
    "BlockScores",
    "BootstrapConfig",
    "Catalogue",
    "Column",
    "Statistics",
    "Table",
    "UnknownTableError",
    "View",
    "adjust_family",
    "blocks_of",
    "boards_of",
    "bounded_interval",
    "budget_order",
    "compare_block",
    "compare_board",
    "complete_matrix",
    "holm",
    "interval_scope",
    "method_order",
    "quantity_order",
    "run_level_estimates",
    "subject_blocks",
    "subject_scores",
    "summarise_block",
    "wilcoxon_pvalue",
]
