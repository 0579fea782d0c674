"""End to end on the phantom: a grid runs, resumes, survives SIGKILL and reports failures.

These run the real CLI in separate processes on the tiny grid (tests/grids/tiny.yaml).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from support.cli import REPO, TINY_GRID, run_cli

pytestmark = pytest.mark.slow
# the tiny grid's scratch and mim cells, run quietly and without a report (add --out DIR)
TINY_RUN = ["run", "--grid", str(TINY_GRID), "--methods", "scratch,mim", "--quiet", "--no-report"]
RESULT_COLUMNS = [
    "subject",
    "phase",
    "class",
    "annotated",
    "dsc",
    "hd95_mm",
    "vol_pred_ml",
    "vol_ref_ml",
]


def results(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Per-subject results of every done cell, keyed by cell folder name."""
    out = {}
    for result in sorted((run_dir / "cells").glob("*/result.json")):
        frame = pd.read_parquet(result.parent / "subjects.parquet")[RESULT_COLUMNS]
        out[result.parent.name] = frame.sort_values(["subject", "phase", "class"]).reset_index(
            drop=True
        )
    return out


def assert_same_results(a: Path, b: Path) -> None:
    ra, rb = results(a), results(b)
    assert ra.keys() == rb.keys() and ra
    for name in ra:
        pd.testing.assert_frame_equal(ra[name], rb[name], check_exact=True)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, session_cache) -> Path:
    """One uninterrupted run of the tiny grid (scratch and mim) in a fresh store."""
    out = tmp_path_factory.mktemp("reference") / "run"
    env = {**os.environ, "CMRBENCH_CACHE": str(session_cache)}
    proc = run_cli(
        ["run", "--grid", str(TINY_GRID), "--methods", "scratch,mim", "--out", str(out), "--quiet"],
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_a_grid_run_writes_every_cell_and_prints_a_leaderboard_and_report(reference_run):
    cells = sorted(p.name for p in (reference_run / "cells").iterdir())
    assert len(cells) == 4
    for cell in cells:
        folder = reference_run / "cells" / cell
        assert {
            "spec.json",
            "log.jsonl",
            "subjects.parquet",
            "clinical.parquet",
            "slices.npz",
            "result.json",
        } <= {p.name for p in folder.iterdir()}
        rows = pd.read_parquet(folder / "subjects.parquet")
        assert len(rows) == 2 * 2 * 3  # 2 test subjects × ED/ES × LV/MYO/RV
        assert rows["dsc"].between(0, 1).all()
        assert not (folder / "loop_state.pt").exists()  # fine-tuning checkpoints are removed
    mim = [c for c in cells if c.startswith("mim_")]
    transfer = json.loads((reference_run / "cells" / mim[0] / "transfer.json").read_text())
    assert transfer["parts"]["encoder"]["tensors_loaded"] > 0
    assert transfer["parts"]["decoder"]["tensors_loaded"] > 0
    assert (reference_run / "report" / "index.html").exists()
    pretrain = list((reference_run / "pretrain").glob("mim_*/checkpoint.pt"))
    assert len(pretrain) == 1


def test_rerun_skips_done_cells_and_leaves_them_untouched(reference_run, cmrbench_env):
    before = {p: p.stat().st_mtime_ns for p in reference_run.glob("cells/*/result.json")}
    proc = run_cli([*TINY_RUN, "--out", str(reference_run)], cmrbench_env)
    assert proc.returncode == 0, proc.stderr
    assert "0 jobs run, 5 already done" in proc.stdout
    assert before == {p: p.stat().st_mtime_ns for p in reference_run.glob("cells/*/result.json")}


def test_same_spec_in_two_fresh_stores_gives_identical_metrics(
    reference_run, cmrbench_env, tmp_path
):
    proc = run_cli([*TINY_RUN, "--out", str(tmp_path / "again")], cmrbench_env)
    assert proc.returncode == 0, proc.stderr
    assert_same_results(reference_run, tmp_path / "again")


KILL_BEFORE_RENAME = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst, *a, **k):
    if str(dst).endswith("result.json") and "cells" in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)
os.replace = replace
from cmrbench.cli import main
sys.argv = ["cmrbench"] + sys.argv[1:]
main()
"""


def test_kill_inside_the_atomic_write_leaves_no_result_and_the_rerun_completes(
    cmrbench_env, tmp_path
):
    out = tmp_path / "run"
    args = [
        "run",
        "--grid",
        str(TINY_GRID),
        "--only",
        "budget=1",
        "--out",
        str(out),
        "--quiet",
        "--no-report",
    ]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE_RENAME, *args],
        env=cmrbench_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL
    cell = next((out / "cells").iterdir())
    assert not (cell / "result.json").exists()
    assert list(cell.glob(".result.json.*.tmp"))  # the temp file never became a result
    assert (cell / "subjects.parquet").exists()  # written before result.json
    proc = run_cli(args, cmrbench_env)
    assert proc.returncode == 0, proc.stderr
    assert "1 jobs run, 0 already done" in proc.stdout
    assert json.loads((cell / "result.json").read_text())["status"] == "done"


def test_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run(
    reference_run, cmrbench_env, tmp_path
):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "cmrbench.cli", *TINY_RUN, "--out", str(out)]
    rng = random.Random(0)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            args, env=cmrbench_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(2.0, 8.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        for result in out.glob("cells/*/result.json"):  # never a partial result
            json.loads(result.read_text())
    assert kills >= 1
    final = run_cli(args[3:], cmrbench_env)
    assert final.returncode == 0, final.stderr
    assert_same_results(reference_run, out)


def test_a_failing_cell_writes_error_json_and_the_grid_goes_on(cmrbench_env, tmp_path):
    raw = yaml.safe_load(TINY_GRID.read_text())
    raw["finetune"]["families"] = {"cnn": {"lr": 1.0e12}}  # diverges to NaN at once
    grid = tmp_path / "nan.yaml"
    grid.write_text(yaml.safe_dump(raw))
    proc = run_cli(
        ["run", "--grid", str(grid), "--out", str(tmp_path / "run"), "--quiet", "--no-report"],
        cmrbench_env,
    )
    assert proc.returncode == 1
    errors = list((tmp_path / "run").glob("cells/*/error.json"))
    assert len(errors) == 2  # both cells ran and failed
    error = json.loads(errors[0].read_text())
    assert "NonFiniteLossError" in error["error"] and "Traceback" in error["traceback"]
    assert "2 failed" in proc.stdout and "error.json" in proc.stderr


def test_two_processes_on_one_store_never_run_a_cell_twice(cmrbench_env, tmp_path):
    out = tmp_path / "shared"
    args = [
        sys.executable,
        "-m",
        "cmrbench.cli",
        "run",
        "--grid",
        str(TINY_GRID),
        "--out",
        str(out),
        "--quiet",
        "--no-report",
    ]
    env = {**cmrbench_env, "OMP_NUM_THREADS": "1"}  # two processes share two cores
    procs = [
        subprocess.Popen(
            args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    run_counts = [int(o[0].split(" jobs run")[0].split()[-1]) for o in outputs]
    assert sum(run_counts) == 2  # each of the 2 cells ran once
    for log in out.glob("cells/*/log.jsonl"):
        steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
        assert steps == sorted(set(steps))  # one writer per cell


def test_fine_tuning_starts_from_the_pretrained_checkpoint(reference_run):
    import torch

    from cmrbench.benchmark.spec import spec_from_json
    from cmrbench.benchmark.transfer import state_dict_sha256, transfer_weights
    from cmrbench.nets import create_net

    mim_cell = next(p for p in (reference_run / "cells").iterdir() if p.name.startswith("mim_"))
    result = json.loads((mim_cell / "result.json").read_text())
    spec = spec_from_json(json.loads((mim_cell / "spec.json").read_text()))
    pretrain_dir = next((reference_run / "pretrain").glob(f"*_{result['pretrain_key']}"))
    checkpoint = torch.load(pretrain_dir / "checkpoint.pt", weights_only=True)["net"]
    torch.manual_seed(spec.seed)
    net = create_net(spec.encoder, img_size=spec.data.image_size)
    report = transfer_weights(net, checkpoint, ("encoder", "decoder"))
    assert state_dict_sha256(net) == result["init_weights_sha256"]
    for key, value in net.state_dict().items():
        if key.startswith(("encoder.", "decoder.")):
            assert torch.equal(value, checkpoint[key]), key
    stored = json.loads((mim_cell / "transfer.json").read_text())
    assert stored["pretrain_key"] == result["pretrain_key"] == spec.pretrain_key
    assert stored["parts"] == report.to_json()["parts"]
    scratch_cell = next(
        p
        for p in (reference_run / "cells").iterdir()
        if p.name.startswith(f"scratch_{spec.encoder}_b{spec.budget}_")
    )
    assert (
        json.loads((scratch_cell / "result.json").read_text())["init_weights_sha256"]
        != result["init_weights_sha256"]
    )


def test_worker_processes_give_the_same_results(cmrbench_env, tmp_path):
    # Each of 2 workers gets 1 of the 2 cores; CPU float sums depend on the thread count,
    # so the in-process run it is compared with uses 1 thread too.
    proc = run_cli([*TINY_RUN, "--jobs", "2", "--out", str(tmp_path / "jobs")], cmrbench_env)
    assert proc.returncode == 0, proc.stderr
    assert "5 jobs run" in proc.stdout
    single = run_cli(
        [*TINY_RUN, "--out", str(tmp_path / "single")], {**cmrbench_env, "OMP_NUM_THREADS": "1"}
    )
    assert single.returncode == 0, single.stderr
    assert_same_results(tmp_path / "single", tmp_path / "jobs")


def test_a_plugin_method_file_runs_in_a_grid_with_no_other_edit(cmrbench_env, tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    source = (REPO / "cmrbench" / "methods" / "simclr.py").read_text()
    (plugin_dir / "simclr_copy.py").write_text(
        source.replace('name = "simclr"', 'name = "simclr_copy"')
    )
    listed = run_cli(["list", "methods", "--plugins", str(plugin_dir)], cmrbench_env)
    assert listed.returncode == 0 and "simclr_copy" in listed.stdout
    assert str(plugin_dir / "simclr_copy.py") in listed.stdout
    proc = run_cli(
        [
            "run",
            "--grid",
            str(TINY_GRID),
            "--plugins",
            str(plugin_dir),
            "--methods",
            "simclr_copy",
            "--budgets",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            "--no-report",
        ],
        cmrbench_env,
    )
    assert proc.returncode == 0, proc.stderr
    cells = list((tmp_path / "run" / "cells").glob("simclr_copy_*/result.json"))
    assert len(cells) == 1
    assert list((tmp_path / "run" / "pretrain").glob("simclr_copy_*/checkpoint.pt"))
