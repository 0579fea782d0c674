"""One bad file never stops a report: a file the store cannot read (a truncated result.json
after a disk fault, a broken parquet file, a folder without its spec) is listed with its folder,
file and reason, its cell is left out of every number, the rest is reported; ``cmrbench run``
keeps a damaged result.json aside and computes the cell again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cmrbench
from cmrbench.benchmark.runner import RunOptions
from cmrbench.cli import main
from cmrbench.reports import BootstrapConfig, Statistics, build_site, load_store
from cmrbench.store import CellResult, StoreWriter, load_stores
from cmrbench.store.layout import CELLS
from support.cli import TINY_GRID
from support.synthetic_store import SyntheticGrid, write_synthetic_store

FAST = BootstrapConfig(n_resamples=50, seed=0)
GRID = SyntheticGrid(
    methods=("scratch", "mim"),
    budgets=("10",),
    seeds=(0, 1, 2),
    n_subjects=8,
    effects={"mim": 0.05},
)


def cell_folder(run_dir: Path, method: str, seed: int) -> Path:
    return next((run_dir / CELLS).glob(f"{method}_*_s{seed}_*"))


def truncate(path: Path) -> bytes:
    """Cut a file in half, as a disk fault might; return its first half."""
    half = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(half)
    return half


@pytest.fixture()
def damaged(tmp_path) -> tuple[Path, Path]:
    """A store whose mim seed-1 cell has a truncated result.json: (run folder, that cell)."""
    write_synthetic_store(tmp_path / "run", GRID)
    folder = cell_folder(tmp_path / "run", "mim", 1)
    truncate(folder / "result.json")
    return tmp_path / "run", folder


def test_a_truncated_result_is_listed_and_its_cell_left_out_of_every_number(damaged):
    run, folder = damaged
    store = load_store(run)
    [problem] = store.unreadable.to_dict(orient="records")
    assert problem["folder"] == f"cells/{folder.name}" and problem["file"] == "result.json"
    assert problem["kind"] == "cell" and problem["key"] == folder.name.rsplit("_", 1)[1]
    assert problem["reason"].startswith("cannot read JSON")
    assert store.cells.set_index("folder").loc[str(folder), "status"] == "unreadable"
    assert set(store.cells["status"]) == {"done", "unreadable"}
    assert problem["key"] not in set(store.subjects["cell_key"].astype(str))
    # the mean is over the two readable mim runs only: per subject over the annotated
    # entries, then over seeds and subjects (computed here from their own files)
    rows = pd.concat(
        pd.read_parquet(cell_folder(run, "mim", seed) / "subjects.parquet") for seed in (0, 2)
    )
    expected = rows[rows["annotated"]].groupby(["seed", "subject"])["dsc"].mean().mean()
    summary = Statistics(store, FAST)["summary"].set_index(["method", "view"])
    assert summary.loc[("mim", "dsc"), "mean"] == pytest.approx(expected, rel=1e-12)
    assert summary.loc[("mim", "dsc"), "n_seeds"] == 2
    board = Statistics(store, FAST)["leaderboard"].set_index("method")
    assert (board.loc["mim", "seeds_done"], board.loc["mim", "seeds_expected"]) == (2, 3)
    assert board.loc["mim", "status"] == "partial"


def test_stats_reports_the_other_cells_and_names_the_bad_file(damaged):
    run, folder = damaged
    result = CliRunner().invoke(main, ["stats", str(run)])
    assert result.exit_code == 0, result.output
    assert "(2/3 seeds)" in result.output and "scratch" in result.output
    assert "1 unreadable file(s); their cells are left out of every number" in result.output
    assert f"cells/{folder.name}/result.json: cannot read JSON" in result.output
    table = CliRunner().invoke(
        main, ["stats", str(run), "--table", "unreadable", "--format", "json"]
    )
    assert [(r["folder"], r["file"]) for r in json.loads(table.stdout)] == [
        (f"cells/{folder.name}", "result.json")
    ]


def test_the_site_lists_the_bad_file_on_the_provenance_page_and_reports_the_rest(damaged, tmp_path):
    run, folder = damaged
    index = build_site(run, tmp_path / "site", FAST)
    site = index.parent
    provenance = (site / "provenance.html").read_text(encoding="utf-8")
    section = provenance[provenance.index('id="unreadable"') : provenance.index("<h2>Jobs</h2>")]
    assert f"<code>cells/{folder.name}</code>" in section and "<code>result.json</code>" in section
    assert "cannot read JSON" in section
    front = index.read_text(encoding="utf-8")
    assert "<strong>1</strong> unreadable" in front and "could not be read" in front
    jobs = pd.read_csv(site / "data" / "jobs.csv")
    key = folder.name.rsplit("_", 1)[1]
    assert jobs.loc[jobs["key"] == key, "status"].tolist() == ["unreadable"]
    board = pd.read_csv(site / "data" / "leaderboard.csv").set_index("method")
    assert board.loc["mim", "seeds_done"] == 2 and not np.isnan(board.loc["mim", "mean"])


def damage_spec(run: Path) -> tuple[Path, str]:
    folder = cell_folder(run, "scratch", 2)
    truncate(folder / "spec.json")
    return folder, "spec.json"


def damage_subjects(run: Path) -> tuple[Path, str]:
    folder = cell_folder(run, "mim", 0)
    (folder / "subjects.parquet").write_bytes(b"PAR1 not a parquet file")
    return folder, "subjects.parquet"


def damage_clinical(run: Path) -> tuple[Path, str]:
    folder = cell_folder(run, "mim", 2)
    (folder / "clinical.parquet").unlink()
    return folder, "clinical.parquet"


def damage_pretraining(run: Path) -> tuple[Path, str]:
    folder = next((run / "pretrain").iterdir())
    truncate(folder / "result.json")
    return folder, "result.json"


def damage_run_json(run: Path) -> tuple[Path, str]:
    truncate(run / "run.json")
    return run, "run.json"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (damage_spec, "cannot read JSON"),
        (damage_subjects, "cannot read parquet"),
        (damage_clinical, "missing, but its cell has result.json"),
        (damage_pretraining, "cannot read JSON"),
        (damage_run_json, "cannot read JSON"),
    ],
)
def test_each_kind_of_bad_file_is_listed_and_the_report_still_builds(tmp_path, damage, reason):
    write_synthetic_store(tmp_path / "run", GRID)
    folder, file = damage(tmp_path / "run")
    store = load_store(tmp_path / "run")
    [problem] = store.unreadable.to_dict(orient="records")
    assert problem["file"] == file and problem["reason"].startswith(reason), problem
    where = "." if file == "run.json" else f"{folder.parent.name}/{folder.name}"
    assert problem["folder"] == where
    if folder.parent.name == CELLS:
        key = folder.name.rsplit("_", 1)[1]
        assert key not in set(store.subjects["cell_key"].astype(str)) | set(
            store.clinical["cell_key"].astype(str)
        )
        assert store.cells.set_index("key").loc[key, "status"] == "unreadable"  # from run.json
    assert build_site(tmp_path / "run", tmp_path / "site", FAST).is_file()


def test_a_merged_report_names_the_run_of_the_bad_file(damaged, tmp_path):
    run, folder = damaged
    other = tmp_path / "other"
    write_synthetic_store(other, SyntheticGrid(methods=("scratch",), budgets=("25",), n_subjects=8))
    merged = load_stores([run, other])
    assert merged.unreadable[["run", "file"]].values.tolist() == [["run", "result.json"]]
    assert "unreadable" in set(merged.cells["status"])


def test_an_unreadable_training_log_leaves_only_its_curve_out_of_the_method_page(tmp_path):
    write_synthetic_store(tmp_path / "run", GRID)
    log = next((tmp_path / "run" / "pretrain").iterdir()) / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 200, "loss": ')
    site = build_site(tmp_path / "run", tmp_path / "site", FAST).parent
    page = next(site.glob("method-mim-*.html")).read_text(encoding="utf-8")
    assert f"{log.parent.name}/log.jsonl:" in page and "expected one JSON object per line" in page
    assert "Pretraining loss" not in page


def test_the_writer_keeps_a_damaged_result_aside_and_the_job_is_no_longer_done(damaged):
    run, folder = damaged
    damaged_bytes = (folder / "result.json").read_bytes()
    writer = StoreWriter(run)
    job = next(j for j in jobs_of(run) if j.folder_name == folder.name)
    assert not writer.is_done(job) and "cannot read JSON" in writer.unreadable_result(job)
    kept = writer.set_aside_unreadable(job)
    assert kept.parent == folder and kept.name.startswith("result.unreadable-")
    assert kept.read_bytes() == damaged_bytes and not (folder / "result.json").exists()
    assert writer.set_aside_unreadable(job) is None and not writer.is_done(job)
    readable = next(j for j in jobs_of(run) if j.folder_name != folder.name)
    assert writer.is_done(readable) and writer.set_aside_unreadable(readable) is None
    started = set((run / CELLS).iterdir())
    never_started = type(job)(job.store_folder, "0" * 12, "scratch_x_b1_none_s9_000000000000")
    assert writer.set_aside_unreadable(never_started) is None
    assert set((run / CELLS).iterdir()) == started  # no folder made for it


def jobs_of(run: Path) -> list:
    """The synthetic store's cells as `StoredJob`s (store folder, key, folder name)."""
    from support.synthetic_store import SyntheticJob

    return [
        SyntheticJob(CELLS, f.name.rsplit("_", 1)[1], f.name)
        for f in sorted((run / CELLS).iterdir())
    ]


def test_a_rerun_keeps_the_damaged_result_and_computes_the_cell_again(cmrbench_env, tmp_path):
    options = RunOptions(threads=1, progress=False)
    first = cmrbench.run_grid(str(TINY_GRID), tmp_path / "run", options=options)
    assert (first.done, first.failures) == (2, [])
    folder = next((tmp_path / "run" / CELLS).glob("*_b3_*"))
    before = pd.read_parquet(folder / "subjects.parquet")
    damaged_bytes = truncate(folder / "result.json")
    assert "result.json" in set(load_store(tmp_path / "run").unreadable["file"])

    again = cmrbench.run_grid(str(TINY_GRID), tmp_path / "run", options=options)
    assert (again.done, again.cached, again.failures) == (1, 1, [])
    [kept] = folder.glob("result.unreadable-*.json")
    assert kept.read_bytes() == damaged_bytes
    CellResult.from_json(json.loads((folder / "result.json").read_text()), folder)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "subjects.parquet"), before)
    store = load_store(tmp_path / "run")
    assert store.unreadable.empty and set(store.cells["status"]) == {"done"}
