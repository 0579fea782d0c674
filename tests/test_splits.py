"""Label budgets, nesting across budgets, and the generalisation settings."""

from __future__ import annotations

import pytest

from cmrbench.datasets import create_dataset
from cmrbench.datasets.splits import (
    Setting,
    SplitError,
    cell_subjects,
    check_split,
    nested_subset,
    parse_budget,
)


@pytest.fixture(scope="module")
def phantom():
    return create_dataset("phantom")  # metadata only: nothing is rendered here


def test_budgets_are_nested_within_a_seed_and_differ_across_seeds(phantom):
    train = phantom.default_split()["train"]
    subsets = {b: nested_subset(train, b, seed=0) for b in (2, 4, 8, 16)}
    assert all(set(subsets[a]) < set(subsets[b]) for a, b in ((2, 4), (4, 8), (8, 16)))
    assert len(subsets[16]) == 16 and set(subsets[16]) <= set(train)
    assert nested_subset(train, 8, seed=1) != subsets[8]
    assert nested_subset(train, 8, seed=0) == subsets[8]  # deterministic


def test_all_budget_uses_every_training_subject_and_test_set_is_fixed(phantom):
    split = phantom.default_split()
    check_split(phantom)
    who = cell_subjects(phantom, "all", 0, Setting("default"))
    assert who.labelled == sorted(split["train"]) and who.test == sorted(split["test"])
    assert who.pool == sorted(split["train"])
    assert not set(who.labelled) & set(who.test)


def test_vendor_setting_restricts_labelled_and_validation_but_not_test_or_pool(phantom):
    who = cell_subjects(phantom, "8", 0, Setting("vendors=A+B"))
    vendor = {s: phantom.subject_meta(s)["vendor"] for s in phantom.subject_ids()}
    assert {vendor[s] for s in who.labelled} <= {"A", "B"} and len(who.labelled) == 8
    assert {vendor[s] for s in who.val} <= {"A", "B"} and who.val
    assert {vendor[s] for s in who.test} == {"A", "B", "C", "D"}
    assert who.pool == sorted(phantom.default_split()["train"])  # pretraining keeps all
    assert Setting("vendors=A+B").vendors == ("A", "B")


def test_phase_setting_trains_on_one_phase():
    assert Setting("phase=ED").train_phases == ("ED",)
    assert Setting("default").train_phases == ("ED", "ES")
    with pytest.raises(SplitError, match="unknown setting 'phase=MID'"):
        Setting("phase=MID")


def test_budget_larger_than_the_training_set_names_both_numbers(phantom):
    with pytest.raises(SplitError, match="label budget 41 is larger than the 40 training subjects"):
        cell_subjects(phantom, "41", 0, Setting("default"))
    with pytest.raises(SplitError, match="larger than the 20 training subjects"):
        cell_subjects(phantom, "21", 0, Setting("vendors=A+B"))
    with pytest.raises(SplitError, match="positive whole number"):
        parse_budget("-3")
