"""Generalisation: each method's DSC on its own test set and on every external test set, with
Δ vs scratch on each, and the per-vendor breakdown of the external sets (issue 24).

The same statistics as the leaderboard, one test set at a time: a block is dataset (the
fine-tuning dataset) × encoder × augmentation × setting × budget, scored on one test set; a
method's mean gets its run-level interval (`summarise_block`), and its Δ vs scratch pairs each
seed with scratch's run on the same labelled subset, with the run-level CI and test and Holm
over the block's methods (`compare_block`). A vendor row restricts the block to that vendor's
subjects of the external set (what `subgroup_comparisons` does). Only the per-subject rows
enter (`Store.subjects` and `Store.external`), so the table is rebuilt from the store alone.
"""

from __future__ import annotations

from typing import Iterator

import pandas as pd

from cmrbench.reports.stats import (GROUP_KEYS, MAIN_VIEW, VIEWS, Block, BootstrapConfig,
                                    budget_order, compare_block, method_order, restricted,
                                    subgroup_masks, subject_blocks, summarise_block)

TEST_DATASET = "test_dataset"
DSC_VIEWS = tuple(view for view in VIEWS if view.name == MAIN_VIEW)
GENERALISATION_COLUMNS = [*GROUP_KEYS, "budget", "n_labelled", "method", TEST_DATASET, "in_domain",
                          "vendor", "mean", "ci_low", "ci_high", "scope", "n_seeds", "n_subjects",
                          "delta", "delta_ci_low", "delta_ci_high", "p", "p_holm", "direction",
                          "note"]


def generalisation_table(subjects: pd.DataFrame, external: pd.DataFrame,
                         config: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """One row per board × budget × method × test set (and vendor of an external set).

    ``subjects``: the in-domain per-subject rows (`Store.subjects`); ``external``: the rows of
    the external test sets (`Store.external`, with ``test_dataset``). Columns
    (`GENERALISATION_COLUMNS`): the board (``dataset`` … ``setting``), ``budget``,
    ``n_labelled``, ``method``; ``test_dataset`` and ``in_domain`` (the cells' own test set);
    ``vendor`` ("" for the whole set, a letter for a vendor's subjects of an external set
    that holds several);
    ``mean`` DSC with ``ci_low``/``ci_high`` and their ``scope`` ("runs", "test set only"),
    ``n_seeds``, ``n_subjects``; ``delta`` vs scratch with ``delta_ci_low``/``delta_ci_high``,
    ``p``, ``p_holm`` and ``direction`` (the mark: "better", "worse" or "") and ``note``
    (NaN Δ for scratch itself).
    """
    rows: list[dict] = []
    for test_dataset, rows_of_set, in_domain in _test_sets(subjects, external):
        for block in subject_blocks(rows_of_set, DSC_VIEWS):
            rows += _set_rows(block, config, test_dataset, in_domain, "")
            vendors = [(v, mask) for kind, v, mask in subgroup_masks(block, "vendor")
                       if kind == "vendor"]
            if in_domain or len(vendors) < 2:   # one vendor: its row would repeat the set's
                continue
            for vendor, mask in vendors:
                rows += _set_rows(restricted(block, mask), config, test_dataset, False, vendor)
    table = pd.DataFrame(rows, columns=GENERALISATION_COLUMNS)
    if table.empty:
        return table
    order = method_order(table["method"].tolist())
    return table.sort_values(
        [*GROUP_KEYS, "budget", "method", "in_domain", TEST_DATASET, "vendor"],
        key=lambda column: (column.map(budget_order) if column.name == "budget" else
                            column.map(order.index) if column.name == "method" else
                            ~column if column.name == "in_domain" else column),
        kind="stable").reset_index(drop=True)


def _test_sets(subjects: pd.DataFrame, external: pd.DataFrame
               ) -> Iterator[tuple[str, pd.DataFrame, bool]]:
    """``(test_dataset, its rows, in_domain)``: the in-domain rows per dataset, then each
    external set (rows of stores written before ``test_dataset`` read as their dataset)."""
    for frame, in_domain in ((subjects, True), (external, False)):
        if frame.empty:
            continue
        if TEST_DATASET not in frame:
            frame = frame.assign(**{TEST_DATASET: frame["dataset"]})
        for name, rows in frame.groupby(frame[TEST_DATASET].astype(str), sort=True):
            yield str(name), rows, in_domain


def _set_rows(block: Block, config: BootstrapConfig, test_dataset: str, in_domain: bool,
              vendor: str) -> list[dict]:
    """Each method's mean and Δ vs scratch in one block on one test set (or vendor)."""
    summary, _ = summarise_block(block, config, DSC_VIEWS)
    compared = {row["method"]: row for row in compare_block(block, config, MAIN_VIEW,
                                                             secondary=False)}
    rows = []
    for row in summary:
        delta = compared.get(row["method"], {})
        rows.append({**{k: row[k] for k in (*GROUP_KEYS, "budget", "n_labelled", "method",
                                            "mean", "ci_low", "ci_high", "scope", "n_seeds",
                                            "n_subjects")},
                     TEST_DATASET: test_dataset, "in_domain": in_domain, "vendor": vendor,
                     "delta": delta.get("delta", float("nan")),
                     "delta_ci_low": delta.get("ci_low", float("nan")),
                     "delta_ci_high": delta.get("ci_high", float("nan")),
                     "p": delta.get("p", float("nan")), "p_holm": delta.get("p_holm", float("nan")),
                     "direction": delta.get("direction", ""), "note": delta.get("note", "")})
    return rows
