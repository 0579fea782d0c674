"""End to end: the `acdc` grid, scaled down, on a tiny fixture in ACDC's official layout.

The grid file is the built-in one with a CPU geometry (32 px of 1 mm around the fixture's
12 × 16 px hearts, the small U-Net); every other setting (the dataset options that drop
validation and stratify by pathology, schedules scaled by ``--epochs-scale``) is the
grid's own. Two training patients per group make budget 10 all ten.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_sunnybrook_e2e import TableParser

from cmrbench.benchmark.grid import load_grid
from support.cli import run_cli
from support.fixtures_nifti import N_FRAMES, N_SLICES, write_acdc_official

pytestmark = pytest.mark.slow
GROUP_NAMES = {"RV": "ARV"}  # Info.cfg's name → the adapter's


@pytest.fixture(scope="module")
def acdc_run(tmp_path_factory, session_cache) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("acdc-e2e")
    groups = write_acdc_official(base / "ACDC", train_per_group=2, test_per_group=1, full=True)
    grid = yaml.safe_load(load_grid("acdc").text)
    grid["dataset"].update(image_size=32, spacing_mm=1.0)
    grid["encoders"] = ["unet2d_xs"]
    (base / "acdc-cpu.yaml").write_text(yaml.safe_dump(grid))
    env = {**os.environ, "CMRBENCH_CACHE": str(session_cache)}
    proc = run_cli(
        [
            "run",
            "--grid",
            str(base / "acdc-cpu.yaml"),
            "--root",
            str(base / "ACDC"),
            "--methods",
            "scratch,mim",
            "--budgets",
            "10",
            "--seeds",
            "0",
            "--augmentations",
            "paper",
            "--epochs-scale",
            "0.01",
            "--out",
            str(base / "run"),
            "--quiet",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return base / "run", {p: GROUP_NAMES.get(g, g) for p, g in groups.items()}


def cells(run_dir: Path) -> dict[str, Path]:
    return {
        json.loads(r.read_text())["method"]: r.parent
        for r in sorted((run_dir / "cells").glob("*/result.json"))
    }


def test_budget_10_holds_two_patients_per_group_and_the_test_set_is_the_official_one(acdc_run):
    run_dir, groups = acdc_run
    folders = cells(run_dir)
    assert set(folders) == {"scratch", "mim"}
    testing = {p for p in groups if int(p[-3:]) >= 101}
    for folder in folders.values():
        trained = json.loads((folder / "result.json").read_text())["train_subjects"]
        assert Counter(groups[p] for p in trained) == {
            g: 2 for g in ("NOR", "MINF", "DCM", "HCM", "ARV")
        }
        assert set(pd.read_parquet(folder / "subjects.parquet")["subject"]) == testing


def test_result_rows_carry_each_test_patients_pathology(acdc_run):
    run_dir, groups = acdc_run
    for folder in cells(run_dir).values():
        rows = pd.read_parquet(folder / "subjects.parquet")
        assert dict(zip(rows["subject"], rows["pathology"])) == {
            p: g for p, g in groups.items() if int(p[-3:]) >= 101
        }


def test_fine_tuning_never_validates(acdc_run):
    run_dir, _ = acdc_run
    for folder in cells(run_dir).values():
        result = json.loads((folder / "result.json").read_text())
        assert math.isnan(result["val_loss_final"])
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        assert log and not any("val_loss" in record for record in log)


def test_pretraining_sees_every_frame_of_the_training_patients_and_no_test_patient(acdc_run):
    run_dir, groups = acdc_run
    (result,) = [json.loads(p.read_text()) for p in (run_dir / "pretrain").glob("*/result.json")]
    training = [p for p in groups if int(p[-3:]) <= 100]
    assert result["method"] == "mim"
    assert result["pool_slices"] == len(training) * N_FRAMES * N_SLICES  # 10 × 5 × 4


def test_report_has_a_per_pathology_table_with_each_groups_mean_dsc(acdc_run):
    run_dir, groups = acdc_run
    parser = TableParser()
    parser.feed((run_dir / "report" / "pathologies.html").read_text())
    header, *body = parser.tables[0]
    assert header[:2] == ["budget", "method"]
    columns = [re.fullmatch(r"([A-Z]+)(\d+) subjects", h).groups() for h in header[2:]]
    assert columns == [(g, "1") for g in ("ARV", "DCM", "HCM", "MINF", "NOR")]
    assert {row[1] for row in body} == {"scratch", "mim"}
    for row in body:
        rows = pd.read_parquet(cells(run_dir)[row[1]] / "subjects.parquet")
        per_group = rows[rows["annotated"]].groupby("pathology")["dsc"].mean()  # 1 subject each
        for (name, _), cell in zip(columns, row[2:]):
            assert cell.startswith(f"{per_group[name]:.3f}"), (row[1], name, cell)


def test_report_says_acdc_has_no_vendor_letters_instead_of_an_empty_vendor_column(acdc_run):
    run_dir, _ = acdc_run
    vendors = (run_dir / "report" / "vendors.html").read_text()
    assert "No vendor letters in these results." in vendors and "<table" not in vendors
