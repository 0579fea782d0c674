"""Label budgets drawn stratified by a subject meta field (dataset option ``stratify``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cmrbench.datasets import create_dataset
from cmrbench.datasets.base import DatasetAdapter, DatasetError
from cmrbench.datasets.splits import Setting, SplitError, cell_subjects, draw_order, nested_subset
from cmrbench.datasets.subject import Subject
from support.fixtures_nifti import write_acdc_official

# Strata of 6, 3 and 1 subjects. Quota positions (k + ½) / n in twelfths: a at 1, 3, 5, 7,
# 9, 11; b at 2, 6, 10; c at 6. Merged: a b a a {b c} a a b a — b and c tie at 6/12.
GROUPS = {**{f"a{i}": "a" for i in range(6)}, **{f"b{i}": "b" for i in range(3)}, "c0": "c"}


def counts(subset: list[str]) -> dict[str, int]:
    return dict(Counter(GROUPS[s] for s in subset))


def test_every_prefix_holds_each_stratum_in_proportion_to_its_size():
    ids = sorted(GROUPS)
    for seed in range(5):
        order = draw_order(ids, seed, GROUPS)
        assert sorted(order) == ids
        assert counts(order[:1]) == {"a": 1}
        assert counts(order[:4]) == {"a": 3, "b": 1}
        assert counts(order[:6]) == {"a": 3, "b": 2, "c": 1}
        assert counts(order[:9]) == {"a": 5, "b": 3, "c": 1}
        for budget in range(1, len(ids) + 1):  # never a whole subject off its quota
            for group, size in Counter(GROUPS.values()).items():
                share = budget * size / len(ids)
                assert abs(counts(order[:budget]).get(group, 0) - share) < 1, (seed, budget)


def test_strata_tied_at_a_quota_position_come_in_a_seeded_order():
    fifth = {
        tuple(sorted(counts(nested_subset(sorted(GROUPS), 5, seed, GROUPS)).items()))
        for seed in range(20)
    }
    assert fifth == {(("a", 3), ("b", 2)), (("a", 3), ("b", 1), ("c", 1))}


def test_stratified_budgets_are_nested_and_deterministic_within_a_seed():
    ids = sorted(GROUPS)
    for seed in range(3):
        subsets = [set(nested_subset(ids, b, seed, GROUPS)) for b in (2, 5, 8)]
        assert subsets[0] < subsets[1] < subsets[2]
        assert nested_subset(ids, 5, seed, GROUPS) == nested_subset(
            list(reversed(ids)), 5, seed, GROUPS
        )
    assert len({tuple(sorted(nested_subset(ids, 5, seed, GROUPS))) for seed in range(3)}) > 1


def test_without_strata_the_draw_is_the_seeded_permutation_of_the_sorted_ids():
    """Unstratified subsets are what they were before stratification existed."""
    ids = [f"s{i:02d}" for i in range(30)][::-1]
    for seed in (0, 1, 2):
        permutation = np.random.default_rng(seed).permutation(len(ids))
        assert nested_subset(ids, 10, seed) == [sorted(ids)[i] for i in permutation[:10]]


def test_acdc_option_stratify_draws_budgets_per_pathology(tmp_path: Path):
    groups = write_acdc_official(tmp_path, train_per_group=4, test_per_group=1)
    training = sorted(p for p in groups if int(p[-3:]) <= 100)
    acdc = create_dataset("acdc", tmp_path, validation="none", stratify="pathology")
    labelled = cell_subjects(acdc, "10", 0, Setting("default")).labelled
    assert Counter(acdc.subject_meta(s)["pathology"] for s in labelled) == {
        "NOR": 2,
        "MINF": 2,
        "DCM": 2,
        "HCM": 2,
        "ARV": 2,
    }
    assert set(labelled) <= set(training)


def test_stratify_on_a_missing_meta_field_names_the_field_and_the_fields_there_are(tmp_path: Path):
    write_acdc_official(tmp_path, train_per_group=2, test_per_group=1)
    acdc = create_dataset("acdc", tmp_path, stratify="vendor")
    with pytest.raises(
        SplitError, match=r"stratify='vendor'.*patient001 has no 'vendor'.*pathology"
    ):
        cell_subjects(acdc, "2", 0, Setting("default"))
    with pytest.raises(
        DatasetError, match="dataset 'acdc': option 'stratify' is 3; expected a string"
    ):
        create_dataset("acdc", tmp_path, stratify=3)


class FixedSubsets(DatasetAdapter):
    """An adapter with its own published subsets (as M&Ms with the study's split files)."""

    name = "fixed"
    needs_root = False

    def subject_ids(self) -> list[str]:
        return ["s1", "s2", "s3"]

    def load(self, subject_id: str) -> Subject:
        raise NotImplementedError

    def subject_meta(self, subject_id: str) -> dict[str, Any]:
        return {"pathology": "NOR"}

    def default_split(self) -> dict[str, list[str]]:
        return {"train": ["s1", "s2"], "val": [], "test": ["s3"]}

    def fixed_subset(self, budget: int, seed: int, setting: str) -> list[str] | None:
        return ["s2"]


def test_stratify_is_refused_where_the_dataset_serves_published_subsets():
    assert cell_subjects(FixedSubsets(), "1", 0, Setting("default")).labelled == ["s2"]
    with pytest.raises(SplitError, match="stratify does not apply to the study's own"):
        cell_subjects(FixedSubsets(stratify="pathology"), "1", 0, Setting("default"))
