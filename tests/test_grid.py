"""Grid files: validation errors that name the file and key, overrides, and the paper plan."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from cmrbench.benchmark.grid import (
    GridError,
    builtin_grids,
    grid_path,
    load_grid,
    override,
    parse_grid,
    plan_grid,
    select_cells,
)
from cmrbench.methods import get_method, list_methods
from cmrbench.nets import create_net, net_facts


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


def test_smoke_grid_pairs_three_seeds_at_its_smallest_budget_and_pretrains_mim_on_a_larger_pool():
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


def test_the_readme_and_list_grids_give_the_paper_grids_cells_and_jobs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    claimed = re.search(r"--grid paper --dry-run +# (\d+) cells, (\d+) pretraining jobs", readme)
    plan = plan_grid(load_grid("paper"))
    assert claimed and (int(claimed[1]), int(claimed[2])) == (len(plan.cells), len(plan.pretrain))
    first_line = grid_path("paper").read_text().splitlines()[0]
    assert f"{len(plan.cells)} cells, {len(plan.pretrain)} pretraining jobs" in first_line
    assert "vendors=A+B`, `vendors=C+D`,\n  `phase=ED`, `phase=ES`" in readme


@pytest.mark.parametrize("name", ["smoke", "sunnybrook"])
def test_cpu_grids_below_the_studys_field_of_view_centre_training_as_they_test(name):
    plan = plan_grid(load_grid(name))
    data = plan.grid.data
    assert data.image_size * data.spacing_mm < 320  # the study's 256 px of 1.25 mm
    assert {c.finetune.center for c in plan.cells} == {"image"}
    assert {p.center for p in plan.pretrain} == {"image"}


def test_paper_grid_has_156_budget_cells_48_generalisation_cells_and_4_pretraining_jobs():
    raw = yaml.safe_load(grid_path("paper").read_text())
    n_methods = len(raw["methods"])
    blocks = {block["name"]: block for block in raw["blocks"]}
    numeric = [b for b in blocks["budgets"]["budgets"] if b != "all"]
    subsets = len(numeric) * len(raw["seeds"]) + len(raw["all_seeds"])
    expected_budgets = n_methods * subsets * len(raw["augmentations"])
    # the study's vendor and phase experiments, at budget "all" only
    settings = blocks["generalisation"]["settings"]
    assert blocks["generalisation"]["budgets"] == ["all"]
    assert sorted(settings) == ["phase=ED", "phase=ES", "vendors=A+B", "vendors=C+D"]
    expected_settings = n_methods * len(settings) * len(raw["augmentations"])
    jobs = {
        get_method(m).pretrain_as or m for m in raw["methods"] if get_method(m).needs_pretraining
    }
    assert (expected_budgets, expected_settings, len(jobs)) == (156, 48, 4)
    plan = plan_grid(load_grid("paper"))
    assert len(plan.cells) == expected_budgets + expected_settings
    assert len(plan.pretrain) == len(jobs)
    by_setting = {
        setting: {(c.budget, c.seed) for c in plan.cells if c.setting == setting}
        for setting in settings
    }
    assert all(cells == {("all", 0)} for cells in by_setting.values())
    # one pretraining checkpoint serves every cell of its method, whatever budget/augmentation
    # or setting (pretraining uses every training subject, as the study)
    mim = {c.pretrain_key for c in plan.cells if c.method in ("mim", "mim_enc")}
    assert len(mim) == 1


def _pretraining(plan) -> dict[tuple[str, int], tuple[str, int]]:
    """(method, cell seed) → (pretraining method, pretraining seed) of every pretrained cell."""
    return {
        (c.method, c.seed): (c.pretrain.method, c.pretrain.seed)
        for c in plan.cells
        if c.pretrain is not None
    }


def test_pretrain_seeds_single_is_the_default_and_keeps_every_key():
    paper = load_grid("paper")
    assert paper.pretrain_seeds == "single"
    explicit = parse_grid(
        {**yaml.safe_load(paper.text), "pretrain_seeds": "single"}, "paper.yaml", paper.text
    )
    assert [c.key for c in plan_grid(explicit).cells] == [c.key for c in plan_grid(paper).cells]
    # one checkpoint, seed pretrain.seed (0), for every seed of a method
    assert set(_pretraining(plan_grid(paper)).values()) == {
        (m, 0) for m in ("simclr", "pcl", "dino", "mim")
    }


def test_pretrain_seeds_tied_fine_tunes_seed_s_from_checkpoint_s():
    raw = yaml.safe_load(load_grid("paper").text)
    plan = plan_grid(parse_grid({**raw, "pretrain_seeds": "tied"}, "tied.yaml"))
    single = plan_grid(load_grid("paper"))
    # the study's 156 cells and its 48 generalisation cells
    assert len(plan.cells) == len(single.cells) == 204
    assert len(plan.pretrain) == 4 * 3  # mim_enc reuses mim's three jobs
    pretraining = _pretraining(plan)
    assert all(seed == job_seed for (_, seed), (_, job_seed) in pretraining.items())
    assert pretraining[("mim_enc", 1)] == ("mim", 1)
    keys = {c.pretrain_key for c in plan.cells if c.method == "mim" and c.budget == "all"}
    assert keys == {c.pretrain_key for c in plan.cells if c.method == "mim" and c.seed == 0}
    # seed 0's checkpoint is the single design's: same spec, same key
    assert {p.key for p in plan.pretrain if p.seed == 0} == {p.key for p in single.pretrain}
    assert {c.key for c in plan.cells if c.method == "scratch"} == {
        c.key for c in single.cells if c.method == "scratch"
    }


def test_full_and_acdc_tie_pretraining_seeds_and_paper_keeps_the_studys_design():
    assert [load_grid(g).pretrain_seeds for g in ("full", "acdc", "paper", "smoke")] == [
        "tied",
        "tied",
        "single",
        "single",
    ]


@pytest.mark.parametrize(
    "line,fragment",
    [
        (
            "pretrain_seeds: paired",
            "unknown value 'paired' in 'pretrain_seeds'; allowed: single, tied",
        ),
        (
            "pretrain_seeds: tied\npretrain: {seed: 3}",
            "'pretrain.seed' applies to 'pretrain_seeds: single'",
        ),
        ("pretrain_seeds: [tied]", "'pretrain_seeds'"),
    ],
)
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
    path = _write(
        tmp_path,
        """
        encoders: [unet2d_xs]
        methods: [scratch]
        budgets: [2]
        bugdets: [3]
        """,
    )
    with pytest.raises(GridError) as err:
        load_grid(str(path))
    message = str(err.value)
    assert str(path) in message and "bugdets" in message and "budgets" in message


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("methods", "[scratch, simclear]", "simclr"),
        ("encoders", "[unet3d]", "unet2d"),
        ("augmentations", "[heavy]", "paper"),
    ],
)
def test_unknown_value_names_file_key_and_allowed_values(tmp_path, key, value, allowed):
    base = {"encoders": "[unet2d_xs]", "methods": "[scratch]", "budgets": "[2]"}
    base[key] = value
    path = _write(tmp_path, "\n".join(f"{k}: {v}" for k, v in base.items()))
    with pytest.raises(GridError) as err:
        load_grid(str(path))
    assert (
        str(path) in str(err.value) and f"'{key}'" in str(err.value) and allowed in str(err.value)
    )


def test_bad_budget_and_setting_are_rejected(tmp_path):
    for line, fragment in (
        ("budgets: [0]", "positive whole number"),
        ("settings: [vendors=A+E]", "vendors=A+B"),
    ):
        path = _write(
            tmp_path, f"encoders: [unet2d_xs]\nmethods: [scratch]\nbudgets: [2]\n{line}\n"
        )
        with pytest.raises(GridError, match=re.escape(fragment)):
            load_grid(str(path))


def test_command_line_overrides_and_epoch_scaling():
    grid = override(
        load_grid("paper"), methods="scratch,mim", budgets="10,25", seeds="0", settings="default"
    )
    plan = plan_grid(grid, epochs_scale=0.1)
    assert {c.method for c in plan.cells} == {"scratch", "mim"}
    assert {c.budget for c in plan.cells} == {"10", "25"} and {c.seed for c in plan.cells} == {0}
    assert len(plan.cells) == 2 * 2 * 2 and len(plan.pretrain) == 1
    assert plan.cells[0].finetune.epochs == pytest.approx(100)
    assert plan.pretrain[0].epochs == pytest.approx(10)


def test_pretrained_cells_use_the_fine_tuning_lr_of_the_study():
    plan = plan_grid(
        override(load_grid("paper"), methods="scratch,simclr", budgets="10", seeds="0")
    )
    lrs = {c.method: c.finetune.optim.lr for c in plan.cells}
    assert lrs == {"scratch": 0.01, "simclr": 0.005}


def test_only_selects_cells():
    cells = plan_grid(load_grid("paper")).cells
    picked = select_cells(cells, "method=mim,budget=10|all")
    assert picked and all(c.method == "mim" and c.budget in ("10", "all") for c in picked)
    # seeds 0-2 at 10 and seed 0 at all, in the default and the four generalisation settings
    assert len(picked) == (3 + 1 + 4) * 2
    with pytest.raises(GridError, match="expected key=value"):
        select_cells(cells, "colour=red")


def test_only_that_matches_no_cell_is_an_error_naming_the_grids_values():
    cells = plan_grid(override(load_grid("paper"), methods="scratch,mim")).cells
    with pytest.raises(GridError, match=re.escape("selects none of the grid's 68 cells")) as error:
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
        "split": "paper"
    }
    assert dict(override(paper, root="/elsewhere").data.options) == {
        "n_train": 296,
        "n_val": 74,
        "n_test": 140,
    }


def test_a_new_root_alone_keeps_the_grids_dataset_options():
    grid = load_grid("sunnybrook")
    moved = override(grid, root="/data/sunnybrook")
    assert moved.data.root == "/data/sunnybrook" and moved.data.options == grid.data.options
    assert dict(moved.data.options)["split"]["test"] == ["SCD0000401"]
    assert override(grid, dataset="sunnybrook", root="/x").data.options == grid.data.options


def test_options_for_an_unknown_dataset_is_rejected(tmp_path):
    path = _write(
        tmp_path,
        "dataset:\n  name: phantom\n  options_for:\n    mnms3: {split: paper}\n"
        "encoders: [unet2d_xs]\nmethods: [scratch]\nbudgets: [2]\n",
    )
    with pytest.raises(GridError, match="unknown dataset 'mnms3' in 'dataset.options_for'"):
        load_grid(str(path))


def test_cell_keys_change_with_protocol_version_and_any_spec_field():
    import dataclasses

    cell = plan_grid(load_grid("pipeline")).cells[0]
    assert cell.key == plan_grid(load_grid("pipeline")).cells[0].key
    assert dataclasses.replace(cell, protocol_version=cell.protocol_version + 1).key != cell.key
    assert dataclasses.replace(cell, seed=cell.seed + 1).key != cell.key


# --------------------------------------------------------------------------- overrides and blocks


def _identities(plan) -> list[tuple]:
    return sorted((c.method, c.budget, c.seed, c.finetune.epochs) for c in plan.cells)


def test_overrides_on_the_smoke_grid_plan_one_cell_per_method_in_the_block_that_holds_them():
    # `cmrbench run --methods mim_enc,scratch --budgets 2 --seeds 0 --epochs-scale 0.1`
    grid = override(load_grid("smoke"), methods="mim_enc,scratch", budgets="2", seeds="0")
    plan = plan_grid(grid, epochs_scale=0.1)
    assert _identities(plan) == [
        ("mim_enc", "2", 0, pytest.approx(20.0)),
        ("scratch", "2", 0, pytest.approx(20.0)),
    ]  # small: 200 epochs
    assert [block["name"] for block in yaml.safe_load(grid.text)["blocks"]] == ["small"]


def test_the_readmes_override_example_plans_budget_8_once_per_seed_at_its_blocks_schedule():
    from support.cli import REPO

    readme = (REPO / "README.md").read_text()
    expression = re.search(r'override\(load_grid\("smoke"\)[^)]*\)', readme).group(0)
    plan = plan_grid(eval(expression, {"override": override, "load_grid": load_grid}))
    assert _identities(plan) == [("scratch", "8", 0, pytest.approx(60.0))]  # the large block


def test_an_override_value_no_block_holds_goes_to_every_block():
    plan = plan_grid(override(load_grid("smoke"), seeds="7"))
    assert sorted({(c.budget, c.seed) for c in plan.cells}) == [("2", 7), ("8", 7)]
    both = plan_grid(override(load_grid("smoke"), seeds="0,1"))
    assert sorted({(c.budget, c.seed) for c in both.cells}) == [("2", 0), ("2", 1), ("8", 0)]


def test_two_blocks_that_plan_one_cell_with_different_specs_fail_naming_both(tmp_path):
    with pytest.raises(GridError) as error:
        plan_grid(override(load_grid("smoke"), budgets="4"))  # neither block holds 4
    message = str(error.value)
    assert (
        "block 'small' and block 'large' both plan scratch on unet2d_xs, budget 4, seed 0"
        in message
    )
    assert (
        "finetune.epochs: 200.0 vs 60.0" in message and "finetune.val_every: 100 vs 20" in message
    )
    path = _write(
        tmp_path,
        """
        encoders: [unet2d_xs]
        methods: [scratch]
        budgets: [2]
        blocks:
          - {name: short, finetune: {epochs: 10}}
          - {name: long, seeds: [0, 1], finetune: {epochs: 20}}
        """,
    )
    with pytest.raises(
        GridError,
        match=re.escape(
            "block 'short' and block 'long' both plan scratch on unet2d_xs, budget 2, seed 0"
        ),
    ):
        plan_grid(load_grid(str(path)))


def test_cells_two_blocks_share_with_equal_specs_are_planned_once(tmp_path):
    path = _write(
        tmp_path,
        """
        encoders: [unet2d_xs]
        methods: [scratch]
        budgets: [2]
        blocks:
          - {seeds: [0, 1]}
          - {seeds: [1, 2]}
        """,
    )
    assert sorted(c.seed for c in plan_grid(load_grid(str(path))).cells) == [0, 1, 2]


def test_a_grid_without_overrides_is_returned_as_it_is():
    grid = load_grid("smoke")
    assert override(grid, methods=None, budgets=None) is grid
    assert "command-line overrides" not in grid.source
    assert override(grid, seeds="0").source.endswith("(with command-line overrides)")


# --------------------------------------------------------------------------- --scale small


@pytest.mark.parametrize("name", ["paper", "acdc", "full"])
def test_scale_small_keeps_the_field_of_view_and_the_design_on_the_smallest_nets(name):
    from cmrbench.benchmark.grid import SCALES, scale_grid
    from cmrbench.benchmark.spec import canonical_json

    grid = load_grid(name)
    small = scale_grid(grid, "small")
    assert (small.name, small.data.image_size, small.data.scale) == (f"{name}-small", 64, "small")
    assert small.data.image_size * small.data.spacing_mm == pytest.approx(256 * 1.25)  # 320 mm
    full_plan, small_plan = plan_grid(grid), plan_grid(small)
    families = {net_facts(e).family: e for e in {c.encoder for c in small_plan.cells}}
    assert families == {f: SCALES["small"].nets[f] for f in families}
    assert set(families) == {net_facts(e).family for e in {c.encoder for c in full_plan.cells}}

    def design(plan):  # everything but the net: methods, budgets, seeds, schedules, batches
        return sorted(
            (
                c.method,
                c.budget,
                c.seed,
                c.augmentation,
                c.setting,
                c.finetune.epochs,
                c.finetune.batch_size,
                net_facts(c.encoder).family,
            )
            for c in plan.cells
        )

    assert design(small_plan) == design(full_plan)
    assert sorted((p.method, p.epochs, p.batch_size) for p in small_plan.pretrain) == sorted(
        (p.method, p.epochs, p.batch_size) for p in full_plan.pretrain
    )
    assert all(
        '"scale":"small"' in canonical_json(job.data)
        for job in (*small_plan.cells, *small_plan.pretrain)
    )
    assert not any("scale" in canonical_json(job.data) for job in full_plan.cells)
    assert not {c.key for c in small_plan.cells} & {c.key for c in full_plan.cells}


def test_scale_small_leaves_a_grid_already_at_cpu_size_and_refuses_unknown_scales():
    from cmrbench.benchmark.grid import SCALES, scale_grid
    from cmrbench.cli import run

    smoke = load_grid("smoke")
    assert scale_grid(smoke, "small") is smoke and scale_grid(smoke, None) is smoke
    with pytest.raises(GridError, match="unknown scale 'tiny'; allowed: small"):
        scale_grid(smoke, "tiny")
    choices = next(p for p in run.params if p.name == "scale").type.choices
    assert list(choices) == list(SCALES)


def test_a_folder_named_like_a_builtin_grid_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acdc").mkdir()  # e.g. the ACDC data folder, in the working directory
    assert load_grid("acdc").name == "acdc"
    (tmp_path / "mine").mkdir()
    with pytest.raises(GridError, match=r"unknown grid 'mine'; .*; mine is a folder\)"):
        load_grid("mine")
