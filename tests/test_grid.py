"""Grid files: validation errors that name the file and key, overrides, and the paper plan."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from cmrbench.benchmark.grid import (GridError, builtin_grids, grid_path, load_grid, override,
                                     parse_grid, plan_grid, select_cells)
from cmrbench.methods import get_method, list_methods
from cmrbench.nets import create_net


def test_builtin_grids_are_listed_and_valid():
    assert {"smoke", "pipeline", "paper", "full"} <= set(builtin_grids())
    for name in builtin_grids():
        assert plan_grid(load_grid(name)).cells


def test_pipeline_grid_fine_tunes_every_method_on_a_unet_and_a_vit():
    cells = plan_grid(load_grid("pipeline")).cells
    family = {name: create_net(name).family for name in {c.encoder for c in cells}}
    assert set(family.values()) == {"cnn", "vit"}
    for wanted in ("cnn", "vit"):
        assert {c.method for c in cells if family[c.encoder] == wanted} == set(list_methods())


def test_smoke_grid_pairs_at_least_three_seeds_at_its_smallest_budget_and_pretrains_mim_on_a_larger_pool():
    plan = plan_grid(load_grid("smoke"))
    budgets = sorted({int(c.budget) for c in plan.cells})
    seeds_at_smallest: dict[str, set[int]] = {}
    for cell in plan.cells:
        if int(cell.budget) == budgets[0]:
            seeds_at_smallest.setdefault(cell.method, set()).add(cell.seed)
    assert "scratch" in seeds_at_smallest and len(seeds_at_smallest) >= 2
    assert all(len(seeds) >= 3 for seeds in seeds_at_smallest.values())
    assert [job.method for job in plan.pretrain] == ["mim"]
    assert dict(plan.grid.data.options)["n_train"] >= 10 * budgets[-1]


def test_paper_grid_has_156_cells_and_4_pretraining_jobs_by_its_own_axes():
    raw = yaml.safe_load(grid_path("paper").read_text())
    n_methods = len(raw["methods"])
    numeric = [b for b in raw["budgets"] if b != "all"]
    subsets = len(numeric) * len(raw["seeds"]) + ("all" in raw["budgets"]) * len(raw["all_seeds"])
    expected_cells = n_methods * subsets * len(raw["augmentations"])
    jobs = {get_method(m).pretrain_as or m for m in raw["methods"] if get_method(m).needs_pretraining}
    assert (expected_cells, len(jobs)) == (156, 4)
    plan = plan_grid(load_grid("paper"))
    assert (len(plan.cells), len(plan.pretrain)) == (expected_cells, len(jobs))
    # one pretraining checkpoint serves every cell of its method, whatever budget/augmentation
    mim = {c.pretrain_key for c in plan.cells if c.method in ("mim", "mim_enc")}
    assert len(mim) == 1


def _pretraining(plan) -> dict[tuple[str, int], tuple[str, int]]:
    """(method, cell seed) → (pretraining method, pretraining seed) of every pretrained cell."""
    return {(c.method, c.seed): (c.pretrain.method, c.pretrain.seed) for c in plan.cells
            if c.pretrain is not None}


def test_pretrain_seeds_single_is_the_default_and_keeps_every_key():
    paper = load_grid("paper")
    assert paper.pretrain_seeds == "single"
    explicit = parse_grid({**yaml.safe_load(paper.text), "pretrain_seeds": "single"}, "paper.yaml",
                          paper.text)
    assert [c.key for c in plan_grid(explicit).cells] == [c.key for c in plan_grid(paper).cells]
    # one checkpoint, seed pretrain.seed (0), for every seed of a method
    assert set(_pretraining(plan_grid(paper)).values()) == {(m, 0) for m in
                                                           ("simclr", "pcl", "dino", "mim")}


def test_pretrain_seeds_tied_fine_tunes_seed_s_from_checkpoint_s():
    raw = yaml.safe_load(load_grid("paper").text)
    plan = plan_grid(parse_grid({**raw, "pretrain_seeds": "tied"}, "tied.yaml"))
    single = plan_grid(load_grid("paper"))
    assert len(plan.cells) == len(single.cells) == 156
    assert len(plan.pretrain) == 4 * 3                       # mim_enc reuses mim's three jobs
    pretraining = _pretraining(plan)
    assert all(seed == job_seed for (_, seed), (_, job_seed) in pretraining.items())
    assert pretraining[("mim_enc", 1)] == ("mim", 1)
    keys = {c.pretrain_key for c in plan.cells if c.method == "mim" and c.budget == "all"}
    assert keys == {c.pretrain_key for c in plan.cells if c.method == "mim" and c.seed == 0}
    # seed 0's checkpoint is the single design's: same spec, same key
    assert {p.key for p in plan.pretrain if p.seed == 0} == {p.key for p in single.pretrain}
    assert {c.key for c in plan.cells if c.method == "scratch"} == \
        {c.key for c in single.cells if c.method == "scratch"}


def test_full_and_acdc_tie_pretraining_seeds_and_paper_keeps_the_studys_design():
    assert [load_grid(g).pretrain_seeds for g in ("full", "acdc", "paper", "smoke")] == \
        ["tied", "tied", "single", "single"]


@pytest.mark.parametrize("line,fragment", [
    ("pretrain_seeds: paired", "unknown value 'paired' in 'pretrain_seeds'; allowed: single, tied"),
    ("pretrain_seeds: tied\npretrain: {seed: 3}",
     "'pretrain.seed' applies to 'pretrain_seeds: single'"),
    ("pretrain_seeds: [tied]", "'pretrain_seeds'"),
])
def test_a_wrong_pretrain_seeds_names_the_file_and_what_is_allowed(tmp_path, line, fragment):
    path = _write(tmp_path, f"encoders: [unet2d_xs]\nmethods: [scratch]\nbudgets: [2]\n{line}\n")
    with pytest.raises(GridError, match=re.escape(fragment)) as err:
        load_grid(str(path))
    assert str(path) in str(err.value)


def _write(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = _write(tmp_path, """
        encoders: [unet2d_xs]
        methods: [scratch]
        budgets: [2]
        bugdets: [3]
        """)
    with pytest.raises(GridError) as err:
        load_grid(str(path))
    message = str(err.value)
    assert str(path) in message and "bugdets" in message and "budgets" in message


@pytest.mark.parametrize("key,value,allowed", [
    ("methods", "[scratch, simclear]", "simclr"),
    ("encoders", "[unet3d]", "unet2d"),
    ("augmentations", "[heavy]", "paper"),
])
def test_unknown_value_names_file_key_and_allowed_values(tmp_path, key, value, allowed):
    base = {"encoders": "[unet2d_xs]", "methods": "[scratch]", "budgets": "[2]"}
    base[key] = value
    path = _write(tmp_path, "\n".join(f"{k}: {v}" for k, v in base.items()))
    with pytest.raises(GridError) as err:
        load_grid(str(path))
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value) and allowed in str(err.value)


def test_bad_budget_and_setting_are_rejected(tmp_path):
    for line, fragment in (("budgets: [0]", "positive whole number"),
                           ("settings: [vendors=A+E]", "vendors=A+B")):
        path = _write(tmp_path, f"encoders: [unet2d_xs]\nmethods: [scratch]\nbudgets: [2]\n{line}\n")
        with pytest.raises(GridError, match=re.escape(fragment)):
            load_grid(str(path))


def test_command_line_overrides_and_epoch_scaling():
    grid = override(load_grid("paper"), methods="scratch,mim", budgets="10,25", seeds="0")
    plan = plan_grid(grid, epochs_scale=0.1)
    assert {c.method for c in plan.cells} == {"scratch", "mim"}
    assert {c.budget for c in plan.cells} == {"10", "25"} and {c.seed for c in plan.cells} == {0}
    assert len(plan.cells) == 2 * 2 * 2 and len(plan.pretrain) == 1
    assert plan.cells[0].finetune.epochs == pytest.approx(100)
    assert plan.pretrain[0].epochs == pytest.approx(10)


def test_pretrained_cells_use_the_fine_tuning_lr_of_the_study():
    plan = plan_grid(override(load_grid("paper"), methods="scratch,simclr", budgets="10", seeds="0"))
    lrs = {c.method: c.finetune.optim.lr for c in plan.cells}
    assert lrs == {"scratch": 0.01, "simclr": 0.005}


def test_only_selects_cells():
    cells = plan_grid(load_grid("paper")).cells
    picked = select_cells(cells, "method=mim,budget=10|all")
    assert picked and all(c.method == "mim" and c.budget in ("10", "all") for c in picked)
    assert len(picked) == (3 + 1) * 2
    with pytest.raises(GridError, match="expected key=value"):
        select_cells(cells, "colour=red")


def test_only_that_matches_no_cell_is_an_error_naming_the_grids_values():
    cells = plan_grid(override(load_grid("paper"), methods="scratch,mim")).cells
    with pytest.raises(GridError, match=re.escape("selects none of the grid's 52 cells")) as error:
        select_cells(cells, "method=mim,budget=20")
    assert "method: mim, scratch; budget: 10, 15, 25, 50, all" in str(error.value)


def test_paper_grid_on_mnms_uses_the_studys_split_unless_told_otherwise():
    paper = load_grid("paper")
    on_mnms = override(paper, dataset="mnms+mnms2", root="/data/mnms-all")
    assert dict(on_mnms.data.options) == {"split": "paper"}
    assert on_mnms.data.root == "/data/mnms-all" and on_mnms.data.image_size == 256
    told = override(paper, dataset="mnms+mnms2", dataset_options={"split": {"train": ["mm1:A"]}})
    assert dict(told.data.options) == {"split": {"train": ["mm1:A"]}}
    assert dict(override(paper, dataset="acdc").data.options) == {}
    assert dict(override(load_grid("full"), dataset="mnms+mnms2").data.options) == {
        "split": "paper"}
    assert dict(override(paper, root="/elsewhere").data.options) == {
        "n_train": 296, "n_val": 74, "n_test": 140}


def test_a_new_root_alone_keeps_the_grids_dataset_options():
    grid = load_grid("sunnybrook")
    moved = override(grid, root="/data/sunnybrook")
    assert moved.data.root == "/data/sunnybrook" and moved.data.options == grid.data.options
    assert dict(moved.data.options)["split"]["test"] == ["SCD0000401"]
    assert override(grid, dataset="sunnybrook", root="/x").data.options == grid.data.options


def test_options_for_an_unknown_dataset_is_rejected(tmp_path):
    path = _write(tmp_path, "dataset:\n  name: phantom\n  options_for:\n    mnms3: {split: paper}\n"
                            "encoders: [unet2d_xs]\nmethods: [scratch]\nbudgets: [2]\n")
    with pytest.raises(GridError, match="unknown dataset 'mnms3' in 'dataset.options_for'"):
        load_grid(str(path))


def test_cell_keys_change_with_protocol_version_and_any_spec_field():
    import dataclasses

    cell = plan_grid(load_grid("pipeline")).cells[0]
    assert cell.key == plan_grid(load_grid("pipeline")).cells[0].key
    assert dataclasses.replace(cell, protocol_version=cell.protocol_version + 1).key != cell.key
    assert dataclasses.replace(cell, seed=cell.seed + 1).key != cell.key
