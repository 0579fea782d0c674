"""Augmentation vs SSP: does augmentation alone matter more than pretraining?

The study's question (de Mooij et al., arXiv 2409.18100): scratch trained with augmentation
against each SSP method trained without it, on the same dataset, encoder, setting and budget,
paired by seed (labelled subset) and subject, with the run-level estimate and test of
`comparisons`; the comparisons of one leaderboard (every method × budget against one augmented
scratch) are one family: Holm, simultaneous intervals (`estimates.adjust_family`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmrbench.reports.stats.blocks import (
    BASELINE,
    BLOCK_KEYS,
    GROUP_KEYS,
    MAIN_VIEW,
    BlockScores,
    difference_limit,
)
from cmrbench.reports.stats.catalogue import (
    METHOD,
    SCOPE,
    Analysis,
    Column,
    Context,
    Table,
    shared_columns,
)
from cmrbench.reports.stats.comparisons import ONE_RUN_NOTE, PAIRED, SIMULTANEOUS, TESTED
from cmrbench.reports.stats.estimates import (
    RUNS,
    BootstrapConfig,
    adjust_family,
    complete_matrix,
    run_level_estimates,
)

AUGMENTATION_VS_SSP = Table(
    "augmentation_vs_ssp",
    "scratch with augmentation vs each SSP method without it: Δ with CI and run-level test",
    (
        *shared_columns(("dataset", "encoder")),
        Column("augmentation", "the comparison: scratch <preset> vs <method> none"),
        *shared_columns(("setting", "budget")),
        METHOD,
        *PAIRED,
        *SIMULTANEOUS,
        *TESTED,
        SCOPE,
        Column("note", "why the comparison is not tested"),
    ),
    pages=("details.html",),
)


def augmentation_vs_ssp(
    blocks: list[BlockScores], config: BootstrapConfig, view: str = MAIN_VIEW
) -> list[dict]:
    """The study's question "does augmentation matter more than SSP?": scratch trained with
    augmentation against each SSP method trained without it (augmentation ``none``), on the
    same dataset, encoder, setting and budget; Δ = scratch(augmented) − method(none), paired
    by seed and subject, with `run_level_estimates`; Holm and simultaneous intervals over each
    leaderboard's comparisons (every method × budget against one augmented scratch)."""
    rows = []
    for block in blocks:
        if block.key["augmentation"] != "none":
            continue
        for augmented in blocks:
            same = all(augmented.key[k] == block.key[k] for k in BLOCK_KEYS if k != "augmentation")
            if not same or augmented is block or BASELINE not in augmented.methods:
                continue
            rows += _scratch_augmented_rows(block, augmented, config, view)
    families: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        key = (*(row[k] for k in GROUP_KEYS if k != "augmentation"), row["preset"])
        families.setdefault(key, []).append(row)
    for family in families.values():
        adjust_family(family, config.confidence, difference_limit(view))
    keep = AUGMENTATION_VS_SSP.column_names
    return [{k: row[k] for k in keep if k in row} for row in rows]


def _scratch_augmented_rows(
    plain: BlockScores, augmented: BlockScores, config: BootstrapConfig, view: str
) -> list[dict]:
    subjects = np.intersect1d(plain.subjects, augmented.subjects)
    seeds = sorted(set(plain.seeds) & set(augmented.seeds))
    plain_index = [list(plain.subjects).index(s) for s in subjects]
    augmented_index = [list(augmented.subjects).index(s) for s in subjects]
    scratch = augmented.scores[view][augmented.methods.index(BASELINE)]
    scratch = scratch[[augmented.seeds.index(s) for s in seeds]][:, augmented_index]
    rows = []
    for i, method in enumerate(plain.methods):
        if method == BASELINE:
            continue
        scores = plain.scores[view][i][[plain.seeds.index(s) for s in seeds]][:, plain_index]
        shared = ~np.isnan(scores).all(axis=1) & ~np.isnan(scratch).all(axis=1)
        differences = complete_matrix(scratch - scores, shared)
        estimate = {
            k: float(v) for k, v in run_level_estimates(differences, config.confidence).items()
        }
        n_seeds, n_subjects = differences.shape
        tested = n_seeds >= 2 and n_subjects >= 2
        rows.append(
            {
                **{k: plain.key[k] for k in GROUP_KEYS if k != "augmentation"},
                "augmentation": f"{BASELINE} {augmented.key['augmentation']} vs {method} none",
                "preset": augmented.key["augmentation"],
                "budget": plain.key["budget"],
                "method": method,
                "n_seeds": n_seeds,
                "n_subjects": n_subjects,
                "delta": estimate["estimate"],
                "standard_error": estimate["standard_error"],
                "df": estimate["df"],
                "p": estimate["p"] if tested else np.nan,
                "scope": RUNS if tested else "",
                "note": "" if tested else ONE_RUN_NOTE if n_seeds == 1 else "not tested",
            }
        )
    return rows


def compute(context: Context) -> dict[str, pd.DataFrame]:
    return {
        "augmentation_vs_ssp": AUGMENTATION_VS_SSP.frame(
            augmentation_vs_ssp(context.blocks, context.config)
        )
    }


ANALYSIS = Analysis((AUGMENTATION_VS_SSP,), compute)
