"""End to end on the phantom: a grid with a pretraining pool and an external test set runs,
writes rows for both test sets, and a set added later scores the finished cells without
touching their scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from cmrbench.benchmark import runner
from cmrbench.benchmark.api import run_grid
from cmrbench.benchmark.runner import RunOptions
from cmrbench.cli import main
from cmrbench.datasets import create_dataset
from cmrbench.reports import build_site
from cmrbench.reports.bundle import export_bundle, opened_run
from cmrbench.reports.stats.generalisation import generalisation_table
from cmrbench.store import load_store
from cmrbench.store.layout import SUBJECT_COLUMNS
from support.cli import TINY_GRID
from support.hand_stats import hand_estimate, logit_interval, subject_dsc

pytestmark = pytest.mark.slow
ONE_THREAD = RunOptions(threads=1, progress=False)
OWN = {"n_train": 4, "n_val": 1, "n_test": 2, "vendors": "A"}
STYLE_B = {"vendors": "B", "n_train": 3, "n_val": 1, "n_test": 1}
STYLE_C = {"vendors": "C", "n_train": 1, "n_val": 1, "n_test": 2}
STYLE_D = {"vendors": "D", "n_train": 1, "n_val": 1, "n_test": 2}


def write_grid(folder: Path, external: dict[str, dict]) -> Path:
    """The tiny grid on style A: scratch and mim, two seeds at budget 2, MIM pretrained on
    styles A and B, scored on each ``external`` set (label → phantom options)."""
    raw = yaml.safe_load(TINY_GRID.read_text())
    raw["dataset"]["options"] = OWN
    raw.update(methods=["scratch", "mim"], budgets=[2], seeds=[0, 1], augmentations=["none"])
    raw["pretrain"]["pool"] = ["dataset", {"name": "phantom", "options": STYLE_B}]
    raw["evaluate_on"] = [
        {"name": "phantom", "label": label, "options": options}
        for label, options in external.items()
    ]
    path = folder / f"grid-{'-'.join(external)}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, session_cache) -> Path:
    """A finished run of the grid with one external set, style C."""
    import os

    os.environ["CMRBENCH_CACHE"] = str(session_cache)
    folder = tmp_path_factory.mktemp("external")
    summary = run_grid(
        write_grid(folder, {"phantom-C": STYLE_C}), folder / "run", options=ONE_THREAD
    )
    assert not summary.failures and summary.done == 5  # 1 pretraining job, 4 cells
    return folder / "run"


def cell_folders(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "cells").iterdir() if p.is_dir())


def test_an_evaluate_on_grid_writes_rows_for_both_test_sets_with_test_dataset(finished) -> None:
    for cell in cell_folders(finished):
        own = pd.read_parquet(cell / "subjects.parquet")
        assert set(own["test_dataset"]) == {"phantom"}
        assert sorted(own["subject"].unique()) == ["phantom-0020", "phantom-0024"]  # A's test
        [external] = list((cell / "external").iterdir())
        rows = pd.read_parquet(external / "subjects.parquet")
        assert {*SUBJECT_COLUMNS, "test_dataset"} <= set(rows.columns)
        assert set(rows["test_dataset"]) == {"phantom-C"} and set(rows["dataset"]) == {"phantom"}
        assert sorted(rows["subject"].unique()) == ["phantom-0010", "phantom-0014"]  # C's test
        assert set(rows["vendor"]) == {"C"}
        assert len(rows) == 2 * 2 * 3  # subjects × ED/ES × LV/MYO/RV
        assert rows["dsc"].between(0, 1).all()
        cell_key = json.loads((cell / "result.json").read_text())["key"]
        result = json.loads((external / "result.json").read_text())
        assert (result["cell_key"], result["weights"], result["n_subjects"]) == (
            cell_key,
            "kept",
            2,
        )
        assert result["mean_dsc"] == pytest.approx(rows["dsc"].mean())
        assert not (cell / "model.pt").exists()  # gone once every external set is scored
    store = load_store(finished)
    assert set(store.subjects["test_dataset"]) == {"phantom"}
    assert set(store.external["test_dataset"]) == {"phantom-C"} and len(store.external) == 4 * 12
    assert len(store.external_clinical) == 4 * 2 * 7  # cells × subjects × quantities


def test_the_pretraining_pool_holds_every_frame_of_both_styles(finished) -> None:
    [job] = list((finished / "pretrain").iterdir())
    result = json.loads((job / "result.json").read_text())
    expected = 0
    for options in (OWN, STYLE_B):
        dataset = create_dataset("phantom", **options)
        for subject_id in dataset.default_split()["train"]:
            frames, slices = dataset.load(subject_id).cine.shape[:2]
            expected += frames * slices
    assert result["pool_slices"] == expected


def test_the_generalisation_table_of_the_run_equals_a_hand_computation_from_its_rows(
    finished,
) -> None:
    rows = {
        test_dataset: pd.concat(pd.read_parquet(p) for p in finished.glob(pattern))
        for test_dataset, pattern in (
            ("phantom", "cells/*/subjects.parquet"),
            ("phantom-C", "cells/*/external/*/subjects.parquet"),
        )
    }
    store = load_store(finished)
    table = generalisation_table(store.subjects, store.external)
    assert sorted(table["test_dataset"].unique()) == ["phantom", "phantom-C"]
    for test_dataset, frame in rows.items():
        scores = {
            m: subject_dsc(frame[frame["method"] == m]).to_numpy() for m in ("scratch", "mim")
        }
        for method in ("scratch", "mim"):
            got = table[(table["method"] == method) & (table["test_dataset"] == test_dataset)]
            assert len(got) == 1
            got = got.iloc[0]
            mean = hand_estimate(scores[method])
            assert (got["mean"], got["ci_low"], got["ci_high"]) == pytest.approx(
                (mean["mean"], *logit_interval(mean)), abs=1e-12
            )
            assert (got["n_seeds"], got["n_subjects"]) == (2, 2)
        delta = hand_estimate(scores["mim"] - scores["scratch"])
        # the only comparison of its family: the simultaneous interval is the unadjusted one
        got = table[(table["method"] == "mim") & (table["test_dataset"] == test_dataset)].iloc[0]
        assert (
            got["delta"],
            got["delta_ci_low"],
            got["delta_ci_high"],
            got["p_holm"],
        ) == pytest.approx((delta["mean"], delta["low"], delta["high"], delta["p"]), abs=1e-12)


def test_an_external_set_added_later_scores_the_finished_cells_and_keeps_their_scores(
    finished, tmp_path, monkeypatch
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = {p: p.read_bytes() for p in run_dir.glob("cells/*/*") if p.is_file()}
    before_c = {p: p.read_bytes() for p in run_dir.glob("cells/*/external/*/*")}
    grid = write_grid(tmp_path, {"phantom-C": STYLE_C, "phantom-D": STYLE_D})
    kept = RunOptions(threads=1, progress=False, keep_checkpoints=True)
    summary = run_grid(grid, run_dir, options=kept)
    assert not summary.failures and (summary.done, summary.cached) == (4, 1)
    for path, content in {**before, **before_c}.items():
        assert path.read_bytes() == content, path  # no earlier file is rewritten
    for cell in cell_folders(run_dir):
        [scored] = list((cell / "external").glob("phantom-D_test_*"))
        result = json.loads((scored / "result.json").read_text())
        # no weights were kept: the done cell was fine-tuned again, to the same final loss
        assert (result["weights"], result["refit_matches"]) == ("refit", True)
        assert (cell / "refit_log.jsonl").is_file() and (cell / "model.pt").is_file()
        rows = pd.read_parquet(scored / "subjects.parquet")
        assert set(rows["vendor"]) == {"D"} and set(rows["test_dataset"]) == {"phantom-D"}

    def no_refit(*args, **kwargs):
        raise AssertionError("fine-tuned again although model.pt was kept")

    monkeypatch.setattr(runner, "_fine_tune", no_refit)
    third = write_grid(tmp_path, {"phantom-C": STYLE_C, "phantom-E": {**STYLE_D, "seed": 3}})
    summary = run_grid(third, run_dir, options=ONE_THREAD)
    assert not summary.failures and summary.done == 4
    for cell in cell_folders(run_dir):
        [scored] = list((cell / "external").glob("phantom-E_test_*"))
        assert json.loads((scored / "result.json").read_text())["weights"] == "refit"
        assert not (cell / "model.pt").exists()  # without --keep-checkpoints: removed
    # the report reads the external sets of the run's grid only (C and E, not D)
    assert set(load_store(run_dir).external["test_dataset"]) == {"phantom-C", "phantom-E"}
    assert run_grid(third, run_dir, options=ONE_THREAD).done == 0
    np.testing.assert_array_equal(
        sorted(load_store(run_dir).subjects["test_dataset"].unique()), ["phantom"]
    )


def test_the_site_the_stats_command_and_a_bundle_carry_the_generalisation_table(
    finished, tmp_path
) -> None:
    expected = generalisation_table(load_store(finished).subjects, load_store(finished).external)
    bundle = export_bundle(finished, tmp_path / "run.zip")
    with opened_run(bundle) as unpacked:
        store = load_store(unpacked)
        assert len(store.external) == len(load_store(finished).external) > 0
        pd.testing.assert_frame_equal(
            generalisation_table(store.subjects, store.external), expected
        )
        build_site(unpacked, tmp_path / "site")
    details = (tmp_path / "site" / "details.html").read_text()
    assert "on each external test set" in details and "phantom-C" in details
    shown = pd.read_csv(tmp_path / "site" / "data" / "generalisation.csv")
    assert len(shown) == len(expected)
    assert shown["delta"].to_numpy() == pytest.approx(expected["delta"].to_numpy(), nan_ok=True)
    printed = CliRunner().invoke(
        main, ["stats", str(bundle), "--table", "generalisation", "--format", "csv"]
    )
    assert printed.exit_code == 0, printed.output
    assert printed.output == (tmp_path / "site" / "data" / "generalisation.csv").read_text()
