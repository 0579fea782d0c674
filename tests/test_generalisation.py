"""The generalisation table against a hand computation from per-subject rows: subject scores
averaged by hand, the two-way seed × subject ANOVA written out, t quantiles from scipy, Holm from
statsmodels over each row's family, Bonferroni simultaneous intervals and logit-scale means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cmrbench.reports.stats.generalisation import GENERALISATION_COLUMNS, generalisation_table
from support.hand_stats import hand_estimate, logit_interval

BOARD = {
    "dataset": "phantom",
    "encoder": "unet2d_xs",
    "augmentation": "paper",
    "setting": "default",
    "budget": "2",
    "n_labelled": 2,
}


def rows_of(
    test_dataset: str | None, scores: dict[str, np.ndarray], vendors: list[str], subjects: list[str]
) -> pd.DataFrame:
    """Per-subject rows as the store gives them: method → ``(S, N)`` subject DSCs, spread over
    ED/ES × LV/MYO/RV (RV at ES not annotated, its DSC NaN) so that their mean is the score."""
    rows = []
    for method, matrix in scores.items():
        for seed, per_subject in enumerate(matrix):
            for subject, vendor, score in zip(subjects, vendors, per_subject):
                # five annotated entries whose mean is `score`, one n/a entry
                parts = score + np.array([0.02, -0.02, 0.01, -0.01, 0.0])
                entries = [("ED", "LV"), ("ED", "MYO"), ("ED", "RV"), ("ES", "LV"), ("ES", "MYO")]
                for (phase, cls), dsc in zip(entries, parts):
                    rows.append(
                        {
                            **BOARD,
                            "cell_key": f"{method}{seed}",
                            "method": method,
                            "seed": seed,
                            "subject": subject,
                            "vendor": vendor,
                            "seen_vendor": True,
                            "phase": phase,
                            "class": cls,
                            "annotated": True,
                            "dsc": dsc,
                            "hd95_mm": 1.0,
                        }
                    )
                rows.append(
                    {
                        **BOARD,
                        "cell_key": f"{method}{seed}",
                        "method": method,
                        "seed": seed,
                        "subject": subject,
                        "vendor": vendor,
                        "seen_vendor": True,
                        "phase": "ES",
                        "class": "RV",
                        "annotated": False,
                        "dsc": np.nan,
                        "hd95_mm": np.nan,
                    }
                )
    frame = pd.DataFrame(rows)
    return frame if test_dataset is None else frame.assign(test_dataset=test_dataset)


RNG = np.random.default_rng(7)
IN_DOMAIN = {
    "scratch": 0.70 + RNG.normal(0, 0.05, (3, 4)),
    "mim": 0.74 + RNG.normal(0, 0.05, (3, 4)),
    "simclr": 0.69 + RNG.normal(0, 0.05, (3, 4)),
}
EXTERNAL_SCRATCH = 0.50 + RNG.normal(0, 0.05, (3, 6))
EXTERNAL = {
    "scratch": EXTERNAL_SCRATCH,
    "mim": EXTERNAL_SCRATCH + 0.10 + RNG.normal(0, 0.01, (3, 6)),  # a clear gain
    "simclr": 0.52 + RNG.normal(0, 0.05, (3, 6)),
}
EXTERNAL_VENDORS = ["C", "D", "C", "D", "C", "D"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    own = rows_of(None, IN_DOMAIN, ["A"] * 4, [f"own{i}" for i in range(4)])  # an older store
    external = rows_of("mnms2", EXTERNAL, EXTERNAL_VENDORS, [f"ext{i}" for i in range(6)])
    return generalisation_table(own, external)


def row(table: pd.DataFrame, method: str, test_dataset: str, vendor: str = "") -> pd.Series:
    found = table[
        (table["method"] == method)
        & (table["test_dataset"] == test_dataset)
        & (table["vendor"] == vendor)
    ]
    assert len(found) == 1
    return found.iloc[0]


def test_generalisation_table_has_a_row_per_method_test_set_and_external_vendor(table) -> None:
    assert list(table.columns) == GENERALISATION_COLUMNS
    assert len(table) == 3 * (1 + 1 + 2)  # methods × (own, external, its two vendors)
    assert table["method"].tolist()[:4] == ["scratch"] * 4  # scratch first, own set first
    assert row(table, "mim", "phantom")["in_domain"]  # rows without test_dataset: own
    assert not row(table, "mim", "mnms2")["in_domain"]
    assert set(table.loc[table["test_dataset"] == "phantom", "vendor"]) == {""}


def family_pvalues(scores: dict[str, np.ndarray], vendor: str) -> list[float]:
    """Hand-computed p of every comparison in a row's family: the set's two methods, or both
    methods on every vendor of the set (a set's vendors are one family)."""
    masks = (
        [np.array(EXTERNAL_VENDORS) == v for v in ("C", "D")]
        if vendor
        else [np.ones(scores["scratch"].shape[1], bool)]
    )
    return [
        hand_estimate(scores[m][:, k] - scores["scratch"][:, k])["p"]
        for k in masks
        for m in ("mim", "simclr")
    ]


@pytest.mark.parametrize(
    "test_dataset, scores, vendor",
    [("phantom", IN_DOMAIN, ""), ("mnms2", EXTERNAL, ""), ("mnms2", EXTERNAL, "D")],
)
def test_means_and_deltas_equal_the_hand_computed_run_level_estimates(
    table, test_dataset, scores, vendor
) -> None:
    keep = (
        np.array(EXTERNAL_VENDORS) == vendor
        if vendor
        else np.ones(scores["scratch"].shape[1], bool)
    )
    t975 = stats.t.ppf(0.975, 2)
    family = family_pvalues(scores, vendor)
    adjusted = dict(zip(family, multipletests(family, method="holm")[1]))
    bonferroni = stats.t.ppf(1 - 0.05 / (2 * len(family)), 2)
    for method in ("mim", "simclr"):
        got = row(table, method, test_dataset, vendor)
        mean = hand_estimate(scores[method][:, keep])
        assert (got["mean"], got["ci_low"], got["ci_high"]) == pytest.approx(
            (mean["mean"], *logit_interval(mean)), abs=1e-12
        )
        delta = hand_estimate(scores[method][:, keep] - scores["scratch"][:, keep])
        half = bonferroni * (delta["mean"] - delta["low"]) / t975  # simultaneous over m
        assert (got["delta"], got["delta_ci_low"], got["delta_ci_high"], got["p"]) == pytest.approx(
            (delta["mean"], delta["mean"] - half, delta["mean"] + half, delta["p"]), abs=1e-12
        )
        assert (got["n_seeds"], got["n_subjects"], got["scope"]) == (3, int(keep.sum()), "runs")
        assert got["p_holm"] == pytest.approx(adjusted[delta["p"]], abs=1e-12)
        significant = adjusted[delta["p"]] < 0.05
        assert got["direction"] == (
            ("better" if got["delta"] > 0 else "worse") if significant else ""
        )
    scratch = row(table, "scratch", test_dataset, vendor)
    assert np.isnan(scratch["delta"]) and scratch["mean"] == pytest.approx(
        hand_estimate(scores["scratch"][:, keep])["mean"], abs=1e-12
    )


def test_external_mim_gain_is_marked_better(table) -> None:
    got = row(table, "mim", "mnms2")
    assert got["delta"] > 0.05 and got["direction"] == "better"


def test_no_rows_give_an_empty_table_with_the_columns() -> None:
    empty = rows_of("x", {}, [], []).reindex(columns=["test_dataset"])
    table = generalisation_table(rows_of(None, {}, [], []), empty)
    assert table.empty and list(table.columns) == GENERALISATION_COLUMNS
