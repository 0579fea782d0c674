"""`pretrain.pool` and `evaluate_on` in a grid: parsing, keys, and the planning check that no
test subject (by id, or by image content under another id) is in any training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cmrbench.benchmark import leakage
from cmrbench.benchmark.api import plan_run
from cmrbench.benchmark.grid import GridError, load_grid, plan_grid
from cmrbench.benchmark.leakage import LeakageError
from cmrbench.benchmark.spec import spec_from_json, to_jsonable
from support.cli import TINY_GRID
from support.fixtures_nifti import (
    NNUNET_ACDC_LABELS,
    canonical_subject,
    oblique_affine,
    write_nnunet_json,
    write_nnunet_subject,
)

TINY = yaml.safe_load(TINY_GRID.read_text())
STYLE_B = {"name": "phantom", "options": {"vendors": "B", "n_train": 3, "n_val": 1, "n_test": 1}}
STYLE_C = {
    "name": "phantom",
    "label": "phantom-C",
    "options": {"vendors": "C", "n_train": 1, "n_val": 1, "n_test": 2},
}


def grid_with(tmp_path: Path, **sections) -> Path:
    """The tiny grid (scratch and mim) with extra sections (``pool`` goes under ``pretrain``)."""
    raw = {**TINY, "methods": ["scratch", "mim"]}
    if "pool" in sections:
        raw["pretrain"] = {**raw["pretrain"], "pool": sections.pop("pool")}
    raw.update(sections)
    path = tmp_path / f"grid-{len(list(tmp_path.glob('grid-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def keys(path: Path) -> tuple[set[str], set[str], set[str]]:
    """Pretraining keys, scratch cell keys and mim cell keys of a grid file."""
    plan = plan_grid(load_grid(str(path)))
    return (
        {p.key for p in plan.pretrain},
        {c.key for c in plan.cells if c.method == "scratch"},
        {c.key for c in plan.cells if c.method == "mim"},
    )


def test_the_pool_enters_the_pretraining_key_and_the_default_pool_keeps_it(tmp_path) -> None:
    plain = keys(grid_with(tmp_path))
    assert keys(grid_with(tmp_path, pool=["dataset"])) == plain
    with_b = keys(grid_with(tmp_path, pool=["dataset", STYLE_B]))
    assert with_b[0] != plain[0] and with_b[2] != plain[2]  # new job, so new mim cells
    assert with_b[1] == plain[1]  # scratch never pretrains
    larger_b = {**STYLE_B, "options": {**STYLE_B["options"], "n_train": 4}}
    assert keys(grid_with(tmp_path, pool=["dataset", larger_b]))[0] != with_b[0]
    only_b = keys(grid_with(tmp_path, pool=[STYLE_B]))  # in place of the grid's data
    assert only_b[0] not in (plain[0], with_b[0])
    assert keys(grid_with(tmp_path, pool=[{**STYLE_B, "subjects": "all"}]))[0] != only_b[0]


def test_adding_an_external_set_keeps_every_cell_and_pretraining_key(tmp_path) -> None:
    plain = plan_grid(load_grid(str(grid_with(tmp_path))))
    external = plan_grid(load_grid(str(grid_with(tmp_path, evaluate_on=[STYLE_C]))))
    assert [c.key for c in external.cells] == [c.key for c in plain.cells]
    assert [p.key for p in external.pretrain] == [p.key for p in plain.pretrain]
    assert len(external.external) == len(external.cells) and not plain.external
    one = external.external[0]
    assert one.cell_key == external.cells[0].key and one.external.label == "phantom-C"
    assert one.store_folder == f"cells/{external.cells[0].folder_name}/external"
    assert spec_from_json(json.loads(json.dumps(to_jsonable(one)))) == one


def test_a_pretraining_spec_with_a_pool_survives_its_json(tmp_path) -> None:
    job = plan_grid(load_grid(str(grid_with(tmp_path, pool=["dataset", STYLE_B])))).pretrain[0]
    assert [(s.data.dataset, s.subjects) for s in job.pool] == [("phantom", "train")] * 2
    assert dict(job.pool[1].data.options)["vendors"] == "B"
    again = spec_from_json(json.loads(json.dumps(to_jsonable(job))))
    assert again == job and again.key == job.key
    default = plan_grid(load_grid(str(grid_with(tmp_path)))).pretrain[0]
    assert "pool" not in to_jsonable(default)  # so its key is the one it always had


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"evaluate_on": [{"name": "phantom"}]}, r"'evaluate_on\[0\]' needs a label of its own"),
        ({"evaluate_on": [STYLE_C, STYLE_C]}, r"'evaluate_on\[1\]' needs a label .*phantom-C"),
        (
            {"evaluate_on": [{**STYLE_C, "subjects": "val"}]},
            r"'evaluate_on\[0\].subjects' is 'val'",
        ),
        ({"evaluate_on": [{**STYLE_C, "name": "acdcc"}]}, r"'evaluate_on\[0\].name' is 'acdcc'"),
        ({"evaluate_on": {"name": "phantom"}}, "'evaluate_on' must be a list"),
        ({"pool": ["dataset", "dataset"]}, r"'pretrain.pool\[1\]' repeats"),
        ({"pool": ["phantom"]}, r"'pretrain.pool\[0\]' is 'phantom'; expected 'dataset'"),
        (
            {"pool": [{**STYLE_B, "weight": 2}]},
            r"'pretrain.pool\[0\]': unknown key 'weight'; valid: name, options, root, subjects",
        ),
        ({"pool": [{**STYLE_B, "subjects": "test"}]}, r"'pretrain.pool\[0\].subjects' is 'test'"),
        ({"pool": []}, "'pretrain.pool' must be a non-empty list"),
    ],
)
def test_bad_pool_and_evaluate_on_sections_name_the_file_and_key(tmp_path, sections, message):
    path = grid_with(tmp_path, **sections)
    with pytest.raises(GridError, match=message) as error:
        load_grid(str(path))
    assert str(path) in str(error.value)


def test_a_pool_holding_an_external_test_subject_by_id_fails_at_planning_naming_it(
    tmp_path, cmrbench_env, monkeypatch
) -> None:
    monkeypatch.setattr(leakage, "frame_hashes", lambda cine: pytest.fail("read an image"))
    # the full phantom's first 20 subjects hold the tiny grid's own test subjects (phantom-0005,
    # -0006) and style C's (phantom-0010, -0014)
    everyone = {"name": "phantom", "options": {"n_train": 20, "n_val": 1, "n_test": 1}}
    path = grid_with(tmp_path, pool=["dataset", everyone], evaluate_on=[STYLE_C])
    with pytest.raises(LeakageError) as error:
        plan_run(str(path), progress=False)
    message = str(error.value)
    assert "4 subject(s) a model trains on are test subjects" in message
    for subject, test_set in (
        ("phantom-0005", "phantom"),
        ("phantom-0006", "phantom"),
        ("phantom-0010", "phantom-C"),
        ("phantom-0014", "phantom-C"),
    ):
        assert (
            f"{subject} of the pretraining pool phantom (n_test=1, n_train=20, n_val=1) is "
            f"{subject} of the test set {test_set} (same dataset and id)"
        ) in message
    # another seed renders other subjects under the same ids: no collision by id (the content
    # check, which would render every subject, is left out here)
    other_seed = {**everyone, "options": {**everyone["options"], "seed": 5}}
    monkeypatch.setattr(leakage, "with_hashes", lambda resolved, progress: resolved)
    monkeypatch.setattr(leakage, "same_content", lambda training, tests: [])
    plan_run(
        str(grid_with(tmp_path, pool=["dataset", other_seed], evaluate_on=[STYLE_C])),
        progress=False,
    )


def test_the_grids_own_test_subjects_in_its_pool_fail_at_planning(tmp_path, cmrbench_env) -> None:
    own = {"name": "phantom", "subjects": "all", "options": TINY["dataset"]["options"]}
    with pytest.raises(
        LeakageError,
        match=r"phantom-0005 of the pretraining pool phantom .* is "
        r"phantom-0005 of the test set phantom",
    ):
        plan_run(str(grid_with(tmp_path, pool=["dataset", own])), progress=False)


STUDIES = {
    "a": canonical_subject(11, ed=0, es=2),
    "b": canonical_subject(12, ed=1, es=3),
    "c": canonical_subject(13, ed=0, es=4),
}


def write_studies(root: Path, cases: dict[str, tuple[str, str]]) -> Path:
    """An nnU-Net dataset: subject id → (study of `STUDIES`, "Tr" or "Ts")."""
    for subject_id, (study, folder) in cases.items():
        write_nnunet_subject(root, folder, subject_id, STUDIES[study], oblique_affine(True))
    write_nnunet_json(root, NNUNET_ACDC_LABELS)
    return root


def test_a_test_study_copied_into_the_pool_under_another_id_fails_at_planning(
    tmp_path, cmrbench_env, monkeypatch
) -> None:
    tests_root = write_studies(
        tmp_path / "Dataset600_Test", {"patient001": ("a", "Tr"), "patient101": ("c", "Ts")}
    )
    pool_root = write_studies(
        tmp_path / "Dataset601_Pool", {"case007": ("b", "Tr"), "case008": ("c", "Tr")}
    )  # c renamed
    external = [{"name": "nnunet", "root": str(tests_root), "label": "held-out"}]
    path = grid_with(
        tmp_path, pool=["dataset", {"name": "nnunet", "root": str(pool_root)}], evaluate_on=external
    )
    with pytest.raises(LeakageError) as error:
        plan_run(str(path), progress=False)
    assert "1 subject(s) a model trains on are test subjects" in str(error.value)
    assert (
        f"case008 of the pretraining pool nnunet at {pool_root} holds the images of "
        f"patient101 of the test set held-out (same frame content)"
    ) in str(error.value)

    clean_root = write_studies(tmp_path / "Dataset602_Pool", {"case007": ("b", "Tr")})
    path = grid_with(
        tmp_path,
        pool=["dataset", {"name": "nnunet", "root": str(clean_root)}],
        evaluate_on=external,
    )
    assert len(plan_run(str(path), progress=False).plan.external) == 4  # 4 cells × 1 set
    # a second planning reads the hashes from their cache: no image is hashed again
    monkeypatch.setattr(leakage, "frame_hashes", lambda cine: pytest.fail("hashed again"))
    assert len(plan_run(str(path), progress=False).plan.external) == 4
