"""Generalisation: each method's DSC on its own test set and on every external test set, with
Δ vs scratch on each, and the per-vendor breakdown of the external sets (issue 24).

The same statistics as the leaderboard, one test set at a time: a block is dataset (the
fine-tuning dataset) × encoder × augmentation × setting × budget, scored on one test set; a
method's mean gets its run-level interval (`summarise_block`), and its Δ vs scratch pairs each
seed with scratch's run on the same labelled subset, with the run-level test, Holm over the
leaderboard's comparisons on that test set and the simultaneous interval (one family). A vendor
row restricts the leaderboard to that vendor's subjects of the external set (what
`subgroup_comparisons` does); a set's vendors are one more family. Only the per-subject rows
enter (`Store.subjects` and `Store.external`), so the table is rebuilt from the store alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from cmrbench.reports.stats.blocks import (
    GROUP_KEYS,
    MAIN_VIEW,
    VIEWS,
    BlockScores,
    boards_of,
    budget_order,
    difference_limit,
    method_order,
    restricted,
    subject_blocks,
)
from cmrbench.reports.stats.catalogue import (
    METHOD,
    N_SEEDS,
    N_SUBJECTS,
    SCOPE,
    Analysis,
    Column,
    Context,
    Table,
    interval,
    shared_columns,
)
from cmrbench.reports.stats.comparisons import compare_block
from cmrbench.reports.stats.estimates import BootstrapConfig, adjust_family
from cmrbench.reports.stats.leaderboard import summarise_block
from cmrbench.reports.stats.subgroups import subgroup_masks
from cmrbench.store.layout import TEST_DATASET

DSC_VIEWS = tuple(view for view in VIEWS if view.name == MAIN_VIEW)
GENERALISATION = Table(
    "generalisation",
    "mean DSC on the cells' own test set and on each external test set "
    "(evaluate_on), with Δ vs scratch and its run-level test on each",
    (
        *shared_columns((*GROUP_KEYS, "budget", "n_labelled")),
        METHOD,
        Column(TEST_DATASET, "the test set: the cells' own dataset, or an external set's label"),
        Column("in_domain", "true for the cells' own test set"),
        Column(
            "vendor",
            "empty for the whole test set; a vendor letter for that vendor's subjects "
            "of an external set holding several",
        ),
        *interval("mean", "mean DSC over the test set's subjects and the training runs"),
        SCOPE,
        N_SEEDS,
        N_SUBJECTS,
        *interval(
            "delta",
            "Δ: mean paired difference to scratch on this test set; simultaneous "
            "interval over the leaderboard on this test set",
            "delta_ci",
        ),
        Column("p", "run-level t-test of delta on S − 1 df (empty for one run)"),
        Column(
            "p_holm",
            "p Holm-adjusted over the leaderboard's comparisons on this test set (or "
            "on its vendors, all of them)",
        ),
        Column("direction", "better or worse when significant (the sign of delta), else empty"),
        Column("note", "why Δ is not tested"),
    ),
    pages=("details.html",),
)
GENERALISATION_COLUMNS = GENERALISATION.column_names


def generalisation_table(
    subjects: pd.DataFrame, external: pd.DataFrame, config: BootstrapConfig = BootstrapConfig()
) -> pd.DataFrame:
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
        for board in boards_of(subject_blocks(rows_of_set, DSC_VIEWS)):
            rows += _set_rows({"": board}, config, test_dataset, in_domain)
            if not in_domain:
                rows += _set_rows(_vendor_boards(board), config, test_dataset, False)
    table = GENERALISATION.frame(rows)
    if table.empty:
        return table
    order = method_order(table["method"].tolist())
    return table.sort_values(
        [*GROUP_KEYS, "budget", "method", "in_domain", TEST_DATASET, "vendor"],
        key=lambda column: (
            column.map(budget_order)
            if column.name == "budget"
            else column.map(order.index)
            if column.name == "method"
            else ~column
            if column.name == "in_domain"
            else column
        ),
        kind="stable",
    ).reset_index(drop=True)


def _test_sets(
    subjects: pd.DataFrame, external: pd.DataFrame
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


def _vendor_boards(board: list[BlockScores]) -> dict[str, list[BlockScores]]:
    """The leaderboard restricted to each vendor's subjects, for a test set holding several
    vendors (with one, its row would repeat the set's)."""
    vendors: dict[str, list[BlockScores]] = {}
    for block in board:
        masks = [(v, mask) for kind, v, mask in subgroup_masks(block, "vendor") if kind == "vendor"]
        if len(masks) >= 2:
            for vendor, mask in masks:
                vendors.setdefault(vendor, []).append(restricted(block, mask))
    return vendors


def _set_rows(
    boards: dict[str, list[BlockScores]],
    config: BootstrapConfig,
    test_dataset: str,
    in_domain: bool,
) -> list[dict]:
    """Each method's mean and Δ vs scratch in every block of one leaderboard on one test set
    (``{"": blocks}``) or on each of its vendors (``{vendor: blocks}``): one family, Holm and
    simultaneous intervals over all of them (`estimates.adjust_family`)."""
    compared = [
        {**row, "vendor": vendor}
        for vendor, blocks in boards.items()
        for block in blocks
        for row in compare_block(block, config)
    ]
    adjust_family(compared, config.confidence, difference_limit(MAIN_VIEW))
    deltas = {(row["vendor"], row["budget"], row["method"]): row for row in compared}
    rows = []
    for vendor, blocks in boards.items():
        for block in blocks:
            summary, _ = summarise_block(block, config, DSC_VIEWS)
            for row in summary:
                delta = deltas.get((vendor, row["budget"], row["method"]), {})
                rows.append(
                    {
                        **{
                            k: row[k]
                            for k in (
                                *GROUP_KEYS,
                                "budget",
                                "n_labelled",
                                "method",
                                "mean",
                                "ci_low",
                                "ci_high",
                                "scope",
                                "n_seeds",
                                "n_subjects",
                            )
                        },
                        TEST_DATASET: test_dataset,
                        "in_domain": in_domain,
                        "vendor": vendor,
                        "delta": delta.get("delta", float("nan")),
                        "delta_ci_low": delta.get("ci_low", float("nan")),
                        "delta_ci_high": delta.get("ci_high", float("nan")),
                        "p": delta.get("p", float("nan")),
                        "p_holm": delta.get("p_holm", float("nan")),
                        "direction": delta.get("direction", ""),
                        "note": delta.get("note", ""),
                    }
                )
    return rows


def compute(context: Context) -> dict[str, pd.DataFrame]:
    """The table when the store has external test sets (without any it would only repeat the
    leaderboard)."""
    store = context.store
    if store.external.empty:
        return {"generalisation": GENERALISATION.frame()}
    return {"generalisation": generalisation_table(store.subjects, store.external, context.config)}


ANALYSIS = Analysis((GENERALISATION,), compute)
