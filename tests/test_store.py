"""The results store (`cmrbench.store`): typed records round-trip, name what is wrong, and
the package loads no torch; folder names, locks and logs behave as the layout promises."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmrbench.store import (
    CellResult,
    ErrorRecord,
    ExternalResult,
    JobLock,
    JsonlLog,
    PretrainResult,
    RunRecord,
    StoreError,
    StoreWriter,
    load_store,
    read_json,
)
from cmrbench.store.layout import (
    CELLS,
    PRETRAIN,
    SUBJECT_COLUMNS,
    cell_folder_name,
    pretrain_folder_name,
)
from support.synthetic_store import SyntheticGrid, write_synthetic_store

REPO = Path(__file__).resolve().parents[1]

PRETRAIN_RESULT = PretrainResult(
    key="aaaaaaaaaaaa",
    method="mim",
    encoder="unet2d_small",
    wall_time_s=12.5,
    final_loss=0.75,
    device="cpu (2 cores, 1 threads)",
    pool_slices=480,
    precision="bf16",
    precision_run="fp32",
    center="labels",
    views_centred_with_labels=True,
    threads=1,
)
CELL_RESULT = CellResult(
    key="bbbbbbbbbbbb",
    method="mim",
    encoder="unet2d_small",
    dataset="phantom",
    setting="default",
    augmentation="paper",
    budget="10",
    seed=2,
    n_labelled=10,
    pretrain_key="aaaaaaaaaaaa",
    init_weights_sha256="f" * 64,
    wall_time_s=3.0,
    device="NVIDIA H100",
    train_subjects=["P001", "P002"],
    train_slices=40,
    train_loss_final=0.5,
    val_loss_final=float("nan"),
    mean_dsc=0.8125,
    protocol_version=2,
    precision="bf16",
    precision_run="bf16",
    dice="sample",
    center="labels",
    pretrain_views_centred_with_labels=True,
    threads=8,
)
ERROR_RECORD = ErrorRecord(
    key="cccccccccccc",
    error="RuntimeError: CUDA out of memory",
    traceback="Traceback (most recent call last): ...",
)
RUN_RECORD = RunRecord(
    grid="smoke",
    grid_yaml="name: smoke\n",
    cmrbench_version="0.1.0",
    git_commit=None,
    packages={"torch": "2.5.0", "monai": None},
    python="3.11.7",
    platform="Linux",
    device="cpu (2 cores, 2 threads)",
    command="cmrbench run",
    started="2026-01-01T00:00:00",
    finished=None,
    skipped_subjects=[{"dataset": "acdc", "subject": "p1", "reason": "no ES"}],
    methods={"mim": {"doc": "MIM.", "paper": "arXiv", "source": "mim.py"}},
    planned_cells=[{"cell_key": "bbbbbbbbbbbb"}],
    grid_cells=[{"cell_key": "bbbbbbbbbbbb"}],
)


class Job:
    """A job as the writer sees it (`StoredJob`)."""

    def __init__(self, store_folder: str, key: str, folder_name: str) -> None:
        self.store_folder, self.key, self.folder_name = store_folder, key, folder_name


CELL_JOB = Job(CELLS, "bbbbbbbbbbbb", "mim_unet2d_small_b10_paper_s2_bbbbbbbbbbbb")
PRETRAIN_JOB = Job(PRETRAIN, "aaaaaaaaaaaa", "mim_unet2d_small_aaaaaaaaaaaa")


def _same(a: object, b: object) -> bool:
    """Equality of record dicts with NaN equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("job,record", [(PRETRAIN_JOB, PRETRAIN_RESULT), (CELL_JOB, CELL_RESULT)])
def test_result_records_round_trip_through_the_writer(tmp_path, job, record):
    store = StoreWriter(tmp_path)
    store.write_spec(job, {"method": "mim"})
    assert not store.is_done(job)
    store.write_result(job, record)
    path = tmp_path / job.store_folder / job.folder_name / "result.json"
    again = type(record).from_json(read_json(path), path)
    assert store.is_done(job)
    assert _same(again.to_json(), record.to_json())
    assert list(json.loads(path.read_text()))[:2] == ["key", "status"]  # the file's key order
    assert json.loads(path.read_text())["threads"] == record.threads


def test_error_record_round_trips_and_marks_the_job_failed(tmp_path):
    store = StoreWriter(tmp_path)
    job = Job(CELLS, ERROR_RECORD.key, f"scratch_unet2d_small_b10_none_s0_{ERROR_RECORD.key}")
    store.write_error(job, ERROR_RECORD)
    assert store.has_error(job) and not store.is_done(job)
    assert store.error(job) == ERROR_RECORD
    store.clear_error(job)
    assert not store.has_error(job)


def test_run_record_round_trips_through_run_json(tmp_path):
    StoreWriter(tmp_path).write_run(RUN_RECORD)
    path = tmp_path / "run.json"
    assert RunRecord.from_json(read_json(path), path) == RUN_RECORD


@pytest.mark.parametrize(
    "record,field",
    [
        (CELL_RESULT, "mean_dsc"),
        (PRETRAIN_RESULT, "final_loss"),
        (ERROR_RECORD, "error"),
        (RUN_RECORD, "grid_yaml"),
    ],
)
def test_a_record_missing_a_field_names_the_file_and_the_field(tmp_path, record, field):
    data = {k: v for k, v in record.to_json().items() if k != field}
    with pytest.raises(
        StoreError, match=re.escape(f"{tmp_path / 'x.json'}: missing field '{field}'")
    ):
        type(record).from_json(data, tmp_path / "x.json")


def test_a_field_of_the_wrong_type_names_the_field_and_the_expected_type(tmp_path):
    data = {**CELL_RESULT.to_json(), "seed": "two"}
    with pytest.raises(StoreError, match=r"result.json: field 'seed' is 'two'; expected int"):
        CellResult.from_json(data, tmp_path / "result.json")
    with pytest.raises(StoreError, match="expected a JSON object"):
        CellResult.from_json([1, 2], tmp_path / "result.json")


def test_results_written_before_threads_and_precision_existed_still_read(tmp_path):
    old = {
        k: v
        for k, v in CELL_RESULT.to_json().items()
        if k
        not in (
            "threads",
            "precision",
            "precision_run",
            "dice",
            "center",
            "pretrain_views_centred_with_labels",
        )
    }
    record = CellResult.from_json(old, tmp_path / "result.json")
    assert record.threads is None and record.precision is None and record.mean_dsc == 0.8125


def test_the_report_reads_an_old_store_without_threads(tmp_path):
    write_synthetic_store(
        tmp_path, SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0,))
    )
    for path in tmp_path.glob("*/*/result.json"):
        path.write_text(
            json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "threads"})
        )
    store = load_store(tmp_path)
    assert list(store.cells["status"]) == ["done", "done"]
    assert store.cells["threads"].isna().all() and store.pretrain["threads"].isna().all()


def test_rows_of_a_store_written_before_test_dataset_read_as_their_own_dataset(tmp_path):
    write_synthetic_store(
        tmp_path,
        SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0,), dataset="mnms2"),
    )
    assert all(
        "test_dataset" not in pd.read_parquet(p).columns
        for p in tmp_path.glob("cells/*/subjects.parquet")
    )
    store = load_store(tmp_path)
    assert set(store.subjects["test_dataset"]) == {"mnms2"}
    assert set(store.clinical["test_dataset"]) == {"mnms2"}
    assert store.external.empty and {*SUBJECT_COLUMNS, "test_dataset"} <= set(
        store.external.columns
    )


def test_external_result_records_round_trip_and_need_every_field(tmp_path):
    record = ExternalResult(
        key="dddddddddddd",
        cell_key="bbbbbbbbbbbb",
        test_dataset="mnms2-C",
        dataset="mnms2",
        subjects="test",
        n_subjects=12,
        mean_dsc=0.75,
        wall_time_s=2.0,
        device="cpu",
        threads=1,
        weights="refit",
        refit_matches=True,
        protocol_version=3,
    )
    job = Job(f"{CELLS}/{CELL_JOB.folder_name}/external", record.key, f"mnms2-C_test_{record.key}")
    StoreWriter(tmp_path).write_result(job, record)
    path = tmp_path / CELLS / CELL_JOB.folder_name / "external" / job.folder_name / "result.json"
    assert ExternalResult.from_json(read_json(path), path) == record
    with pytest.raises(StoreError, match="missing field 'weights'"):
        ExternalResult.from_json(
            {k: v for k, v in record.to_json().items() if k != "weights"}, path
        )


def test_the_report_reads_the_threads_the_writer_recorded(tmp_path):
    write_synthetic_store(
        tmp_path, SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0,))
    )
    store = load_store(tmp_path)
    assert list(store.cells["threads"]) == [1.0, 1.0] and list(store.pretrain["threads"]) == [1.0]


def test_a_result_without_a_field_is_listed_as_unreadable_naming_the_field(tmp_path):
    write_synthetic_store(
        tmp_path, SyntheticGrid(methods=("scratch",), budgets=("10",), seeds=(0, 1))
    )
    path = sorted(tmp_path.glob("cells/*/result.json"))[0]
    path.write_text(
        json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "wall_time_s"})
    )
    store = load_store(tmp_path)
    assert store.unreadable[["folder", "file"]].values.tolist() == [
        [f"cells/{path.parent.name}", "result.json"]
    ]
    assert store.unreadable["reason"].iloc[0].startswith("missing field 'wall_time_s'")
    assert store.cells["status"].tolist().count("done") == 1


def test_importing_the_store_loads_no_torch():
    code = "import sys, cmrbench.store; assert 'torch' not in sys.modules, 'torch loaded'"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_folder_names_follow_the_layout():
    assert (
        cell_folder_name("mim", "vit/tiny", "10", "paper", "vendors=A+B", 1, "abc")
        == "mim_vit-tiny_b10_paper_vendors-A-B_s1_abc"
    )
    assert (
        cell_folder_name("scratch", "unet2d", "all", "none", "default", 0, "k")
        == "scratch_unet2d_ball_none_s0_k"
    )
    assert pretrain_folder_name("my method", "unet2d", "k") == "my-method_unet2d_k"


def test_the_writer_refuses_tables_the_reader_could_not_read(tmp_path):
    subjects = pd.DataFrame({c: [0] for c in SUBJECT_COLUMNS if c != "dsc"})
    clinical = pd.DataFrame()
    with pytest.raises(StoreError, match=r"subjects.parquet: rows lack column\(s\) \['dsc'\]"):
        StoreWriter(tmp_path).write_tables(CELL_JOB, subjects, clinical, {})
    slices = {"image": np.zeros((1, 2, 2), np.float32)}
    full = pd.DataFrame({c: [0] for c in SUBJECT_COLUMNS})
    clinical = pd.DataFrame({c: [0] for c in ("quantity", "unit", "pred", "ref", *SUBJECT_COLUMNS)})
    with pytest.raises(StoreError, match="slices.npz: expected arrays"):
        StoreWriter(tmp_path).write_tables(CELL_JOB, full, clinical, slices)


def test_a_job_lock_dies_with_a_killed_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from cmrbench.store import JobLock; lock = JobLock(Path(sys.argv[1])); "
            "assert lock.acquire(); "
            "print('held', flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert JobLock(tmp_path).acquire() is False
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = JobLock(tmp_path)
    assert lock.acquire() is True
    lock.release()


def test_a_log_line_that_is_not_json_is_named(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    log.write({"step": 1, "loss": 0.5})
    with open(log.path, "a") as f:
        f.write("{not json\n")
    with pytest.raises(StoreError, match=r"log.jsonl:2: expected one JSON object per line"):
        log.records()
    log.truncate_to(1)
    assert log.records() == [{"step": 1, "loss": 0.5}] and log.count() == 1
