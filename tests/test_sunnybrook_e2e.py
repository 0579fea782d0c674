"""End to end on real data: the built-in `sunnybrook` grid on CPU, through the CLI.

The grid fine-tunes `scratch` and `mim` on three Sunnybrook studies and tests on the fourth
(``cmrbench/benchmark/grids/sunnybrook.yaml``). Sunnybrook annotates the LV at ED and ES and
the myocardium at ED only; these tests pin that the held-out study stays out of training,
that exactly those structures are scored, and that RV and ES myocardium reach the store,
the leaderboard and the HTML report as n/a, never as background or 0. The DSC the grid
reaches is measured and reported, not asserted here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cmrbench.benchmark.data import adapter_for
from cmrbench.benchmark.grid import builtin_grids, load_grid
from cmrbench.datasets import create_dataset
from cmrbench.datasets.splits import Setting, cell_subjects
from cmrbench.datasets.subject import LV, MYO
from support.cli import REPO, run_cli
from support.real_data import SUNNYBROOK, needs_sunnybrook

pytestmark = [pytest.mark.slow, needs_sunnybrook]
SCORED = {("ED", "LV"), ("ES", "LV"), ("ED", "MYO")}
NOT_ANNOTATED = {("ED", "RV"), ("ES", "RV"), ("ES", "MYO")}


@pytest.fixture(scope="module")
def sunnybrook_run(tmp_path_factory, session_cache) -> Path:
    """One run of the built-in grid from the repository root (its relative root resolves)."""
    out = tmp_path_factory.mktemp("sunnybrook") / "run"
    env = {**os.environ, "CMRBENCH_CACHE": str(session_cache)}
    proc = run_cli(["run", "--grid", "sunnybrook", "--out", str(out), "--quiet"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def cell_folders(run_dir: Path) -> dict[str, Path]:
    """Method name → its (single) cell folder."""
    folders = {}
    for result in sorted((run_dir / "cells").glob("*/result.json")):
        folders[json.loads(result.read_text())["method"]] = result.parent
    return folders


def by_phase_and_class(folder: Path) -> pd.DataFrame:
    """The cell's subjects.parquet indexed by (phase, class); one test subject."""
    rows = pd.read_parquet(folder / "subjects.parquet")
    return rows.set_index(["phase", "class"]).sort_index()


class TableParser(HTMLParser):
    """Every ``<table>`` of a page as a list of rows of cell texts (th and td)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_after(page: Path, heading: str) -> list[list[list[str]]]:
    """The tables of ``page`` that follow the first ``<h3>heading</h3>``."""
    html = page.read_text()
    start = html.index(f"<h3>{heading}</h3>")
    parser = TableParser()
    parser.feed(html[start:])
    return parser.tables


def test_the_grid_is_built_in_and_holds_the_test_study_out_of_training_and_pretraining():
    assert "sunnybrook" in builtin_grids()
    grid = load_grid("sunnybrook")
    assert {m for block in grid.blocks for m in block.methods} == {"scratch", "mim"}
    adapter = adapter_for(dataclasses.replace(grid.data, root=str(SUNNYBROOK)))
    who = cell_subjects(adapter, "all", 0, Setting("default"))
    assert len(who.labelled) == 3 and len(who.test) == 1 and who.val == []
    assert not set(who.test) & set(who.labelled)
    assert not set(who.test) & set(who.pool)
    assert set(who.labelled) | set(who.test) == set(adapter.subject_ids())


def test_the_test_study_is_not_among_the_training_subjects(sunnybrook_run):
    folders = cell_folders(sunnybrook_run)
    assert set(folders) == {"scratch", "mim"}
    all_ids = set(create_dataset("sunnybrook", SUNNYBROOK).subject_ids())
    for folder in folders.values():
        trained = json.loads((folder / "result.json").read_text())["train_subjects"]
        tested = set(pd.read_parquet(folder / "subjects.parquet")["subject"])
        assert len(trained) == 3 and len(tested) == 1
        assert not tested & set(trained)
        assert tested | set(trained) == all_ids


def test_lv_at_ed_and_es_and_myo_at_ed_are_scored_and_rv_and_es_myo_are_not(sunnybrook_run):
    for folder in cell_folders(sunnybrook_run).values():
        rows = by_phase_and_class(folder)
        assert set(rows.index) == SCORED | NOT_ANNOTATED
        for key in SCORED:
            assert bool(rows.loc[key, "annotated"]), key
            assert 0.0 <= rows.loc[key, "dsc"] <= 1.0, key
            assert rows.loc[key, "vol_ref_ml"] > 0, key
        for key in NOT_ANNOTATED:
            assert not bool(rows.loc[key, "annotated"]), key
            for column in ("dsc", "hd95_mm", "vol_pred_ml", "vol_ref_ml"):
                assert math.isnan(rows.loc[key, column]), (key, column)


def test_reference_volumes_are_the_contoured_voxels_at_the_original_resolution(sunnybrook_run):
    folder = cell_folders(sunnybrook_run)["scratch"]
    rows = by_phase_and_class(folder)
    subject = create_dataset("sunnybrook", SUNNYBROOK).load(rows["subject"].iloc[0])
    voxel_ml = float(np.prod(subject.spacing)) / 1000.0
    expected = {("ED", LV, subject.ed), ("ES", LV, subject.es), ("ED", MYO, subject.ed)}
    for phase, label, frame in expected:
        name = "LV" if label == LV else "MYO"
        count = int((subject.labels[frame] == label).sum())
        assert rows.loc[(phase, name), "vol_ref_ml"] == pytest.approx(count * voxel_ml, rel=1e-9)


def test_clinical_rv_end_points_are_nan_and_lv_end_points_are_finite(sunnybrook_run):
    for folder in cell_folders(sunnybrook_run).values():
        clinical = pd.read_parquet(folder / "clinical.parquet").set_index("quantity")
        for quantity in ("RV_EDV", "RV_ESV", "RV_EF"):
            assert math.isnan(clinical.loc[quantity, "pred"]), quantity
            assert math.isnan(clinical.loc[quantity, "ref"]), quantity
        for quantity in ("LV_EDV", "LV_ESV", "LV_EF", "LV_MASS"):
            assert np.isfinite(clinical.loc[quantity, ["pred", "ref"]].to_numpy(float)).all()
        edv, esv = clinical.loc["LV_EDV", "ref"], clinical.loc["LV_ESV", "ref"]
        assert clinical.loc["LV_EF", "ref"] == pytest.approx(100 * (edv - esv) / edv)


def test_mim_cell_loads_pretrained_encoder_and_decoder_tensors(sunnybrook_run):
    transfer = json.loads((cell_folders(sunnybrook_run)["mim"] / "transfer.json").read_text())
    assert transfer["parts"]["encoder"]["tensors_loaded"] > 0
    assert transfer["parts"]["decoder"]["tensors_loaded"] > 0


def test_leaderboard_mean_averages_only_the_annotated_structures(sunnybrook_run, cmrbench_env):
    proc = run_cli(["stats", str(sunnybrook_run), "--format", "json"], cmrbench_env)
    assert proc.returncode == 0, proc.stderr
    board = {row["method"]: row for row in json.loads(proc.stdout)}
    for method, folder in cell_folders(sunnybrook_run).items():
        rows = by_phase_and_class(folder)
        expected = float(np.mean([rows.loc[key, "dsc"] for key in SCORED]))
        assert board[method]["mean"] == pytest.approx(expected, abs=1e-9)
        assert board[method]["n_subjects"] == 1


def test_report_shows_rv_as_na_and_lv_and_myo_with_their_dsc(sunnybrook_run):
    details = sunnybrook_run / "report" / "details.html"
    header, *body = tables_after(details, "Per class and per phase (DSC)")[0]
    columns = header[2:]
    assert columns == ["LV", "MYO", "RV", "ED", "ES"]
    assert {row[1] for row in body} == {"scratch", "mim"}
    for row in body:
        method, cells = row[1], dict(zip(columns, row[2:]))
        rows = by_phase_and_class(cell_folders(sunnybrook_run)[method])
        assert cells["RV"] == "n/a"
        lv = np.mean([rows.loc[("ED", "LV"), "dsc"], rows.loc[("ES", "LV"), "dsc"]])
        assert cells["LV"].startswith(f"{lv:.3f} ")
        assert cells["MYO"].startswith(f"{rows.loc[('ED', 'MYO'), 'dsc']:.3f} ")
        assert cells["ES"].startswith(f"{rows.loc[('ES', 'LV'), 'dsc']:.3f} ")


def test_report_downloads_leave_rv_out_of_every_number(sunnybrook_run):
    data = sunnybrook_run / "report" / "data"
    summary = pd.DataFrame(json.loads((data / "summary.json").read_text()))
    rv = summary[summary["view"] == "dsc_RV"]
    assert set(rv["method"]) == {"scratch", "mim"}
    assert rv["mean"].isna().all() and (rv["n_entries"] == 0).all()
    clinical = pd.DataFrame(json.loads((data / "clinical.json").read_text()))
    assert set(clinical["quantity"]) == {"LV_EDV", "LV_ESV", "LV_EF", "LV_MASS"}
    header = tables_after(sunnybrook_run / "report" / "clinical.html", "Budget all")[0][0]
    assert [h.split()[0] for h in header[1:]] == ["LV_EDV", "LV_ESV", "LV_EF", "LV_MASS"]


# --- studies without o-contours: LV scored, MYO n/a everywhere ------------------------------


@pytest.fixture(scope="module")
def lv_only_run(tmp_path_factory, session_cache) -> Path:
    """The four studies with their o-contours deleted, scratch trained on three (a short
    schedule), tested on the fourth, through the CLI with its report."""
    work = tmp_path_factory.mktemp("lv-only")
    shutil.copytree(SUNNYBROOK, work / "data", ignore=shutil.ignore_patterns("o-contours"))
    grid = yaml.safe_load((REPO / "cmrbench/benchmark/grids/sunnybrook.yaml").read_text())
    grid.update(methods=["scratch"], name="lv-only")
    grid["dataset"]["root"] = str(work / "data")
    grid["finetune"]["epochs"] = 30
    (work / "grid.yaml").write_text(yaml.safe_dump(grid))
    env = {**os.environ, "CMRBENCH_CACHE": str(session_cache)}
    proc = run_cli(
        [
            "run",
            "--grid",
            str(work / "grid.yaml"),
            "--out",
            str(work / "run"),
            "--quiet",
            "--threads",
            "1",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "run"


def test_studies_without_o_contours_train_and_score_lv_with_myo_na_in_every_table(lv_only_run):
    assert not list((lv_only_run.parent / "data").rglob("o-contours"))
    folder = cell_folders(lv_only_run)["scratch"]
    rows = by_phase_and_class(folder)
    for key in (("ED", "LV"), ("ES", "LV")):
        assert bool(rows.loc[key, "annotated"]) and 0.0 <= rows.loc[key, "dsc"] <= 1.0, key
    for key in (("ED", "MYO"), ("ES", "MYO"), ("ED", "RV"), ("ES", "RV")):
        assert not bool(rows.loc[key, "annotated"]), key
        assert rows.loc[key, ["dsc", "hd95_mm", "vol_pred_ml", "vol_ref_ml"]].isna().all(), key
    clinical = pd.read_parquet(folder / "clinical.parquet").set_index("quantity")
    assert clinical.loc["LV_MASS", ["pred", "ref"]].isna().all()  # mass needs MYO
    assert np.isfinite(clinical.loc["LV_EF", ["pred", "ref"]].to_numpy(float)).all()
    # the leaderboard's mean is the LV's alone
    board = json.loads(
        run_cli(["stats", str(lv_only_run), "--format", "json"], dict(os.environ)).stdout
    )
    lv = np.mean([rows.loc[("ED", "LV"), "dsc"], rows.loc[("ES", "LV"), "dsc"]])
    assert board[0]["mean"] == pytest.approx(lv, abs=1e-9)
    # the report: MYO and RV are n/a in the per-class table, out of every download
    header, *body = tables_after(
        lv_only_run / "report" / "details.html", "Per class and per phase (DSC)"
    )[0]
    cells = dict(zip(header[2:], body[0][2:]))
    assert (cells["MYO"], cells["RV"]) == ("n/a", "n/a") and cells["LV"].startswith(f"{lv:.3f} ")
    summary = pd.DataFrame(json.loads((lv_only_run / "report/data/summary.json").read_text()))
    myo = summary[summary["view"] == "dsc_MYO"]
    assert len(myo) and myo["mean"].isna().all() and (myo["n_entries"] == 0).all()
    clinical_download = pd.DataFrame(
        json.loads((lv_only_run / "report/data/clinical.json").read_text())
    )
    assert set(clinical_download["quantity"]) == {"LV_EDV", "LV_ESV", "LV_EF"}
