"""The built-in `acdc` grid on ACDC's official layout: its plan, budgets and subject pools.

The fixture has ACDC's real size (100 training patients, 20 per pathology group, and 50
test patients) but only each patient's Info.cfg: planning and splits read nothing else.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cmrbench.benchmark.data import adapter_for
from cmrbench.benchmark.estimate import check_cells_against_data
from cmrbench.benchmark.grid import builtin_grids, load_grid, override, plan_grid
from cmrbench.datasets.splits import ALL, Setting, cell_subjects
from cmrbench.methods import get_method
from support.fixtures_nifti import ACDC_INFO_GROUPS, write_acdc_official

TRAIN_PER_GROUP, TEST_PER_GROUP = 20, 10
STUDY_METHODS = {"scratch", "simclr", "pcl", "dino", "mim", "mim_enc"}


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("acdc-official")
    return root, write_acdc_official(root, TRAIN_PER_GROUP, TEST_PER_GROUP)


@pytest.fixture(scope="module")
def raw_grid() -> dict:
    """The grid file as YAML, for counts computed independently of the planner."""
    return yaml.safe_load(load_grid("acdc").text)


@pytest.fixture(scope="module")
def plan(acdc_root):
    return plan_grid(override(load_grid("acdc"), root=str(acdc_root[0])))


def group_of(groups: dict[str, str], patient: str) -> str:
    """The pathology the adapter reports for a fixture patient (Info.cfg's RV is ARV)."""
    return {"RV": "ARV"}.get(groups[patient], groups[patient])


def expected_size(raw: dict) -> tuple[int, int]:
    """Cells and pretraining jobs from the grid's axes (mim_enc reuses mim's jobs)."""
    partial = [b for b in raw["budgets"] if str(b) != ALL]
    runs = len(partial) * len(raw["seeds"]) + (
        len(raw["all_seeds"]) if ALL in raw["budgets"] else 0
    )
    cells = (
        len(raw["encoders"])
        * len(raw["methods"])
        * len(raw["augmentations"])
        * len(raw["settings"])
        * runs
    )
    jobs = {
        get_method(m).pretrain_as or m for m in raw["methods"] if get_method(m).needs_pretraining
    }
    # pretrain_seeds: tied pretrains one checkpoint per fine-tuning seed (budget all: seed 0's)
    seeds = len(raw["seeds"]) if raw.get("pretrain_seeds") == "tied" else 1
    return cells, len(jobs) * len(raw["encoders"]) * seeds


def test_acdc_grid_is_the_study_design_on_acdc(raw_grid):
    assert "acdc" in builtin_grids()
    assert set(raw_grid["methods"]) == STUDY_METHODS
    assert [str(b) for b in raw_grid["budgets"]] == ["10", "20", "50", "all"]
    assert raw_grid["seeds"] == [0, 1, 2] and raw_grid["all_seeds"] == [0]
    assert raw_grid["augmentations"] == ["none", "paper"]
    dataset = raw_grid["dataset"]
    assert dataset["name"] == "acdc" and (dataset["image_size"], dataset["spacing_mm"]) == (
        256,
        1.25,
    )
    assert dataset["options"] == {"validation": "none", "stratify": "pathology"}
    paper = yaml.safe_load(load_grid("paper").text)
    assert raw_grid["pretrain"] == paper["pretrain"]
    assert {k: v for k, v in raw_grid["finetune"].items() if k != "val_every"} == {
        k: v for k, v in paper["finetune"].items() if k != "val_every"
    }


def test_acdc_grid_plans_the_cells_and_pretraining_jobs_its_axes_give(plan, raw_grid):
    cells, jobs = expected_size(raw_grid)
    assert (len(plan.cells), len(plan.pretrain)) == (cells, jobs)
    assert {c.method for c in plan.cells} == STUDY_METHODS
    per_budget = Counter(c.budget for c in plan.cells)
    per_run = len(raw_grid["methods"]) * len(raw_grid["augmentations"])
    seeds = len(raw_grid["seeds"])
    assert per_budget == {
        "10": seeds * per_run,
        "20": seeds * per_run,
        "50": seeds * per_run,
        "all": per_run,
    }
    check_cells_against_data(plan.cells)  # every cell's subjects resolve on ACDC's size


def test_acdc_grid_first_line_states_the_planned_size(plan):
    """The grid file's first line (its header comment) states the planned size."""
    first = load_grid("acdc").text.splitlines()[0]
    numbers = re.search(r"(\d+) cells, (\d+) pretraining jobs", first)
    assert numbers and (int(numbers[1]), int(numbers[2])) == (len(plan.cells), len(plan.pretrain))


def test_acdc_budgets_are_stratified_by_pathology_and_nested_within_a_seed(plan, acdc_root):
    _, groups = acdc_root
    adapter = adapter_for(plan.grid.data)
    training = sorted(p for p in groups if int(p[-3:]) <= 100)
    drawn = {}
    for seed in (0, 1, 2):
        subsets = {
            b: cell_subjects(adapter, b, seed, Setting("default")).labelled
            for b in ("10", "20", "50")
        }
        for budget, subset in subsets.items():
            per_group = int(budget) // len(ACDC_INFO_GROUPS)
            counts = Counter(group_of(groups, p) for p in subset)
            assert counts == {
                "NOR": per_group,
                "MINF": per_group,
                "DCM": per_group,
                "HCM": per_group,
                "ARV": per_group,
            }, (seed, budget)
        assert set(subsets["10"]) < set(subsets["20"]) < set(subsets["50"]) < set(training)
        drawn[seed] = subsets["10"]
    assert len({tuple(sorted(s)) for s in drawn.values()}) == 3  # seeds draw other patients
    assert cell_subjects(adapter, "all", 0, Setting("default")).labelled == training


def test_no_test_patient_reaches_the_pretraining_pool_or_a_labelled_subset(plan, acdc_root):
    _, groups = acdc_root
    training = sorted(p for p in groups if int(p[-3:]) <= 100)
    testing = sorted(p for p in groups if int(p[-3:]) >= 101)
    assert len(training) == 100 and len(testing) == 50
    adapter = adapter_for(plan.grid.data)
    assert adapter.default_split() == {"train": training, "val": [], "test": testing}
    for budget, seed, setting in {(c.budget, c.seed, c.setting) for c in plan.cells}:
        who = cell_subjects(adapter, budget, seed, Setting(setting))
        assert who.pool == training and who.test == testing and who.val == []
        assert set(who.labelled) <= set(training)


def test_acdc_grid_never_validates(plan):
    assert {c.finetune.val_every for c in plan.cells} == {0}
