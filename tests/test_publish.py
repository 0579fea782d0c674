"""Publishing a report never loses a user's file, survives a killed build, and keeps hostile
text harmless in CSV, SVG and file names (cmrbench.reports.publish, reports.text)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from cmrbench.reports import PublishError, StoreError, build_site, export_bundle, opened_run
from cmrbench.reports.bundle import BUNDLE_MARK, JOB_FILES
from cmrbench.reports.leaderboard import group_title
from cmrbench.reports.publish import MANIFEST, STAGING_MARK, publish, read_manifest
from cmrbench.reports.site import safe_name
from cmrbench.reports.stats import BootstrapConfig
from cmrbench.reports.text import csv_cell, csv_safe, strip_controls
from cmrbench.store import load_stores
from support.cli import run_cli
from support.synthetic_store import SyntheticGrid, write_synthetic_store

FAST = BootstrapConfig(n_resamples=100)
USER_FILES = {
    "data/x.csv": "a,b\n1,2\n",
    "static/app.js": "console.log(1)\n",
    "about.html": "<p>about us</p>\n",
}
FORMULA_NAME = '=HYPERLINK("http://evil.example","x")'
CONTROL_NAME = "mim\x01v2"


def small_store(folder: Path, methods: tuple[str, ...] = ("scratch", "mim")) -> Path:
    write_synthetic_store(
        folder, SyntheticGrid(methods=methods, budgets=("10",), seeds=(0, 1), n_subjects=6)
    )
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def write_user_files(site: Path) -> None:
    for name, text in USER_FILES.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)


def test_user_files_survive_a_first_build_and_two_rebuilds(tmp_path):
    store, site = small_store(tmp_path / "store"), tmp_path / "site"
    write_user_files(site)
    build_site(store, site, FAST, force=True)
    build_site(store, site, FAST)
    build_site(store, site, FAST)
    for name, text in USER_FILES.items():
        assert (site / name).read_text() == text, name
    written = read_manifest(site)
    assert "index.html" in written and "data/leaderboard.csv" in written
    assert not set(USER_FILES) & written
    assert written == set(snapshot(site)) - set(USER_FILES) - {MANIFEST}


def test_a_non_empty_folder_without_a_report_is_refused_unless_forced(tmp_path):
    store, site = small_store(tmp_path / "store"), tmp_path / "site"
    write_user_files(site)
    before = snapshot(site)
    with pytest.raises(PublishError, match=r"not empty and holds no cmrbench report.*--force"):
        build_site(store, site, FAST)
    assert snapshot(site) == before
    assert not list(tmp_path.glob(f".site{STAGING_MARK}-*"))


def test_forcing_never_overwrites_a_users_file_with_a_report_page(tmp_path):
    store, site = small_store(tmp_path / "store"), tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("my own home page")
    with pytest.raises(PublishError, match="would overwrite files it did not write: index.html"):
        build_site(store, site, FAST, force=True)
    assert snapshot(site) == {"index.html": b"my own home page"}


def test_a_rebuild_removes_only_pages_the_previous_report_wrote(tmp_path):
    site = tmp_path / "site"
    build_site(small_store(tmp_path / "a", ("scratch", "mim", "dino")), site, FAST)
    dino_page = site / safe_name("method", "dino", ".html")
    assert dino_page.is_file()
    write_user_files(site)
    build_site(small_store(tmp_path / "b", ("scratch", "mim")), site, FAST)
    assert not dino_page.exists()
    assert (site / safe_name("method", "mim", ".html")).is_file()
    for name, text in USER_FILES.items():
        assert (site / name).read_text() == text, name


def test_a_failing_build_leaves_the_previous_site_whole(tmp_path):
    store, site = small_store(tmp_path / "store"), tmp_path / "site"
    build_site(store, site, FAST)
    before = snapshot(site)

    def failing(staging: Path) -> None:
        (staging / "index.html").write_text("half-built")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish(failing, site)
    assert snapshot(site) == before
    assert not list(tmp_path.glob(f".site{STAGING_MARK}-*"))


KILLED_BUILD = """
import sys, time
from pathlib import Path
from cmrbench.reports.publish import publish

def slow(staging):
    (staging / "index.html").write_text("new, half-built")
    Path(sys.argv[2]).write_text("building")
    time.sleep(60)

publish(slow, Path(sys.argv[1]))
"""


def test_a_killed_build_leaves_the_previous_site_and_the_next_build_cleans_up(tmp_path):
    store, site = small_store(tmp_path / "store"), tmp_path / "site"
    build_site(store, site, FAST)
    before = snapshot(site)
    flag = tmp_path / "flag"
    process = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(site), str(flag)])
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the build never started"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert snapshot(site) == before
    assert len(list(tmp_path.glob(f".site{STAGING_MARK}-*"))) == 1
    build_site(store, site, FAST)
    assert not list(tmp_path.glob(f".site{STAGING_MARK}-*"))
    assert snapshot(site) == before


def test_a_swap_interrupted_halfway_is_completed_by_the_next_build(tmp_path, monkeypatch):
    site = tmp_path / "site"
    build_site(small_store(tmp_path / "a", ("scratch", "mim")), site, FAST)
    write_user_files(site)
    real_replace, moved = os.replace, []

    def flaky_replace(source, target):
        if str(source).endswith(".html") and len(moved) >= 2:
            raise OSError("interrupted")
        moved.append(target)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", flaky_replace)
    second = small_store(tmp_path / "b", ("scratch", "mim", "dino"))
    with pytest.raises(OSError, match="interrupted"):
        build_site(second, site, FAST)
    monkeypatch.setattr(os, "replace", real_replace)
    build_site(second, site, FAST)
    assert (site / safe_name("method", "dino", ".html")).is_file()
    for name, text in USER_FILES.items():
        assert (site / name).read_text() == text, name


def test_csv_cells_that_look_like_formulas_are_neutralised_by_hand():
    assert csv_cell("=1+1") == "'=1+1"
    assert csv_cell("+cmd") == "'+cmd"
    assert csv_cell("-2+3") == "'-2+3"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("\tx") == "'\tx"
    assert csv_cell("mim") == "mim"
    assert csv_cell(-0.5) == -0.5
    frame = pd.DataFrame({"method": ["=x", "ok"], "mean": [-0.25, 0.5]})
    assert csv_safe(frame).to_csv(index=False) == "method,mean\n'=x,-0.25\nok,0.5\n"


def test_control_characters_are_stripped_by_hand():
    assert strip_controls("a\x01b\x1fc\x7fd\x9fe\nf\tg") == "abcdefg"
    assert strip_controls("scratch · unet") == "scratch · unet"


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile-publish")
    store = work / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", FORMULA_NAME, CONTROL_NAME),
            budgets=("10",),
            seeds=(0, 1),
            n_subjects=6,
        ),
    )
    build_site(store, work / "site", FAST)
    return work / "site"


def test_a_formula_method_name_is_neutralised_in_csv_and_raw_in_json(hostile_site):
    csv_methods = pd.read_csv(hostile_site / "data" / "leaderboard.csv")["method"].tolist()
    assert "'" + FORMULA_NAME in csv_methods and FORMULA_NAME not in csv_methods
    json_methods = [
        row["method"]
        for row in json.loads((hostile_site / "data" / "leaderboard.json").read_text())
    ]
    assert FORMULA_NAME in json_methods


def test_a_control_character_in_a_method_name_gives_well_formed_svg(hostile_site):
    figures = list(hostile_site.rglob("*.svg"))
    assert figures
    for figure in figures:
        ElementTree.parse(figure)  # raises on a control character
        assert "\x01" not in figure.read_text(encoding="utf-8")


def test_keys_whose_joined_titles_collide_get_different_names():
    first = {"dataset": "a · b", "encoder": "c", "augmentation": "paper", "setting": "default"}
    second = {"dataset": "a", "encoder": "b · c", "augmentation": "paper", "setting": "default"}
    assert group_title(first) == group_title(second)
    names = {
        safe_name(kind, tuple(keys.values()), ".svg")
        for kind in ("group", "cd")
        for keys in (first, second)
    }
    assert len(names) == 4
    canonical = json.dumps(list(first.values()), ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
    assert safe_name("group", tuple(first.values()), "") == f"group-a-b-c-paper-default-{digest}"


def test_a_bundle_round_trips_to_the_same_tables_as_the_run_folder(tmp_path):
    store = small_store(tmp_path / "store")
    (store / "cells").joinpath(
        next(p.name for p in (store / "cells").iterdir()), "checkpoint.pt"
    ).write_bytes(b"weights")
    bundle = export_bundle(store, tmp_path / "results.zip")
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
    assert BUNDLE_MARK in names and "run.json" in names
    assert not [n for n in names if n.endswith(".pt")]
    assert {n.rsplit("/", 1)[-1] for n in names} <= {BUNDLE_MARK, "run.json", *JOB_FILES}
    from_folder = build_site(store, tmp_path / "site-folder", FAST).parent
    with opened_run(bundle) as folder:
        from_bundle = build_site(folder, tmp_path / "site-bundle", FAST).parent
    tables = sorted(p.name for p in (from_folder / "data").iterdir())
    assert tables == sorted(p.name for p in (from_bundle / "data").iterdir())
    for name in tables:
        assert (from_folder / "data" / name).read_bytes() == (
            from_bundle / "data" / name
        ).read_bytes(), name
    assert export_bundle(store, tmp_path / "again.zip").read_bytes() == bundle.read_bytes()


def test_a_bundle_with_a_member_outside_the_layout_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr(BUNDLE_MARK, "{}")
        archive.writestr("../../outside.txt", "x")
    with pytest.raises(StoreError, match=r"member '\.\./\.\./outside\.txt' is not part"):
        with opened_run(evil):
            pass
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("run.json", "{}")
    with pytest.raises(StoreError, match="neither a run folder nor a cmrbench bundle"):
        with opened_run(plain_zip):
            pass


def test_export_and_report_of_a_bundle_from_the_command_line(tmp_path, cmrbench_env):
    store = small_store(tmp_path / "store")
    exported = run_cli(["export", str(store), "--out", str(tmp_path / "b.zip")], cmrbench_env)
    assert exported.returncode == 0, exported.stderr
    assert "Bundle:" in exported.stdout
    built = run_cli(["report", str(tmp_path / "b.zip")], cmrbench_env)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "b-report" / "index.html").is_file()
    (tmp_path / "notes.txt").write_text("not a run")
    refused = run_cli(["report", str(tmp_path / "notes.txt")], cmrbench_env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'notes.txt'}: neither a run folder nor a cmrbench bundle (a zip "
        f"written by `cmrbench export`, with {BUNDLE_MARK} inside)"
    ]


def leaderboard_rows(site: Path) -> pd.DataFrame:
    return pd.read_csv(site / "data" / "leaderboard.csv")


def runs_on_two_datasets(
    first: Path, second: Path, second_methods: tuple[str, ...] = ("scratch", "mim")
) -> None:
    """An M&Ms run in ``first`` and an ACDC run in ``second`` (2 seeds, 6 test subjects)."""
    for folder, dataset, methods in (
        (first, "mnms", ("scratch", "mim")),
        (second, "acdc", second_methods),
    ):
        write_synthetic_store(
            folder,
            SyntheticGrid(
                methods=methods, budgets=("10",), seeds=(0, 1), n_subjects=6, dataset=dataset
            ),
        )


def test_two_runs_on_different_datasets_merge_into_one_site(tmp_path):
    first, second = tmp_path / "mnms-run", tmp_path / "acdc-run"
    runs_on_two_datasets(first, second)
    site = build_site([first, second], tmp_path / "site", FAST).parent
    board = leaderboard_rows(site)
    assert set(board["dataset"]) == {"mnms", "acdc"}
    assert (board["seeds_done"] == 2).all()
    index = (site / "index.html").read_text()
    assert "mnms · unet2d_small" in index and "acdc · unet2d_small" in index
    provenance = (site / "provenance.html").read_text()
    assert "This site merges 2 runs" in provenance
    assert "<code>mnms-run</code>" in provenance and "<code>acdc-run</code>" in provenance
    jobs = pd.read_csv(site / "data" / "jobs.csv")
    assert set(jobs["run"]) == {"mnms-run", "acdc-run"}


def test_one_grid_split_over_two_machines_merges_without_loss(tmp_path):
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    write_synthetic_store(
        first, SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0,), n_subjects=6)
    )
    write_synthetic_store(
        second,
        SyntheticGrid(
            methods=("scratch", "mim"), budgets=("10",), seeds=(1,), n_subjects=6, seed=1
        ),
    )
    merged = load_stores([first, second])
    assert len(merged.cells) == 4 and merged.set_aside.empty
    assert sorted(merged.cells["seed"]) == [0, 0, 1, 1]
    single = [load_stores([folder]) for folder in (first, second)]
    assert len(merged.subjects) == sum(len(s.subjects) for s in single)


def test_a_cell_done_in_two_runs_with_two_specs_is_a_conflict_never_averaged(tmp_path):
    first, second = tmp_path / "run-a", tmp_path / "run-b"
    grid = SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0, 1), n_subjects=6)
    write_synthetic_store(first, grid)
    # the same cells under another data option: same identities, other keys
    write_synthetic_store(
        second, SyntheticGrid(**{**grid.__dict__, "seed": 7, "options": {"split": "other"}})
    )
    merged = load_stores([first, second])
    assert merged.cells.empty and merged.subjects.empty
    assert len(merged.set_aside) == 8
    assert set(merged.set_aside["reason"]) == {
        "done in more than one run (same method, encoder, dataset, setting, augmentation, "
        "budget and seed): a conflict, not averaged (run-a, run-b)"
    }
    site = build_site([first, second], tmp_path / "site", FAST).parent
    assert "run-a, run-b" in (site / "provenance.html").read_text()


def test_a_merge_that_sets_a_cell_aside_shows_the_numbers_it_changed(tmp_path):
    # run-b repeats run-a's scratch cells under another spec: both copies are set aside, so
    # mim's Δ, which run-a's own report shows, has no scratch to pair with in the merged report
    first, second = tmp_path / "run-a", tmp_path / "run-b"
    grid = SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0, 1), n_subjects=6)
    write_synthetic_store(first, grid)
    other = {"methods": ("scratch", "dino"), "seed": 7, "options": {"split": "other"}}
    write_synthetic_store(second, SyntheticGrid(**{**grid.__dict__, **other}))
    alone = leaderboard_rows(build_site([first], tmp_path / "alone", FAST).parent)
    alone = alone.set_index("method")
    assert alone.loc["mim", "delta"] == alone.loc["mim", "delta"]  # a number, not NaN
    site = build_site([first, second], tmp_path / "site", FAST).parent
    changes = pd.read_csv(site / "data" / "merge_changes.csv")
    assert set(zip(changes["run"], changes["method"])) == {
        ("run-a", "scratch"),
        ("run-a", "mim"),
        ("run-b", "scratch"),
        ("run-b", "dino"),
    }
    mim = changes.set_index("method").loc["mim"]
    assert mim["mean_alone"] == pytest.approx(alone.loc["mim", "mean"], abs=1e-12)
    assert mim["delta_alone"] == pytest.approx(alone.loc["mim", "delta"], abs=1e-12)
    assert mim["mean"] == pytest.approx(alone.loc["mim", "mean"], abs=1e-12)  # its cells stay
    assert pd.isna(mim["delta"])
    index = (site / "index.html").read_text()
    assert "Merging the runs changed 4 number(s) on this leaderboard" in index
    shown = f"run-a alone: {alone.loc['mim', 'mean']:.3f}, Δ {alone.loc['mim', 'delta']:+.3f}"
    assert index.count(shown) == 1
    method_page = (site / safe_name("method", "mim", ".html")).read_text()
    assert shown in method_page


def test_a_cell_done_in_two_runs_with_one_key_is_used_from_the_first_and_the_change_shown(
    tmp_path,
):
    # run-b repeats run-a's scratch cells with the same spec (same keys, other results): the
    # merge uses run-a's copy, sets run-b's aside, and dino's Δ now pairs with run-a's scratch
    first, second = tmp_path / "run-a", tmp_path / "run-b"
    grid = SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0, 1), n_subjects=6)
    write_synthetic_store(first, grid)
    write_synthetic_store(
        second, SyntheticGrid(**{**grid.__dict__, "methods": ("scratch", "dino"), "seed": 7})
    )
    merged = load_stores([first, second])
    alone = [load_stores([folder]) for folder in (first, second)]
    assert sorted(merged.cells["method"]) == ["dino", "dino", "mim", "mim", "scratch", "scratch"]
    assert set(merged.cells.loc[merged.cells["method"] == "scratch", "run"]) == {"run-a"}
    assert sorted(merged.set_aside["method"]) == ["scratch", "scratch"]
    assert set(merged.set_aside["run"]) == {"run-b"}
    assert set(merged.set_aside["reason"]) == {
        "done in more than one run with the same key (the same spec): the copy of run run-a "
        "is used, this one set aside, not averaged"
    }
    # each used cell's rows once, from the run it is used from
    dino_rows = alone[1].subjects["method"].astype(str) == "dino"
    assert len(merged.subjects) == len(alone[0].subjects) + int(dino_rows.sum())
    site = build_site([first, second], tmp_path / "site", FAST).parent
    changes = pd.read_csv(site / "data" / "merge_changes.csv")
    assert set(zip(changes["run"], changes["method"])) == {("run-b", "scratch"), ("run-b", "dino")}
    own_a = leaderboard_rows(build_site([first], tmp_path / "alone", FAST).parent)
    scratch = changes.set_index("method").loc["scratch"]
    assert scratch["mean"] == pytest.approx(own_a.set_index("method").loc["scratch", "mean"])
    assert scratch["mean_alone"] != pytest.approx(scratch["mean"])


def test_a_merge_without_conflicts_changes_no_number(tmp_path):
    first, second = tmp_path / "mnms-run", tmp_path / "acdc-run"
    runs_on_two_datasets(first, second)
    site = build_site([first, second], tmp_path / "site", FAST).parent
    assert pd.read_csv(site / "data" / "merge_changes.csv").empty
    assert "merge-note" not in (site / "index.html").read_text()


def test_a_scaled_down_run_is_marked_on_its_leaderboard_and_details(tmp_path):
    small, full = tmp_path / "small", tmp_path / "full"
    write_synthetic_store(
        small,
        SyntheticGrid(
            methods=("scratch", "mim"),
            budgets=("10",),
            seeds=(0, 1),
            n_subjects=6,
            scale="small",
            encoders=("unet2d_xs",),
        ),
    )
    write_synthetic_store(
        full, SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0, 1), n_subjects=6)
    )
    site = build_site([small, full], tmp_path / "site", FAST).parent
    index = (site / "index.html").read_text()
    assert index.count("A scaled-down run (cmrbench run --scale small)") == 1
    boards = index.split('<section class="board"')[1:]
    assert ["scaled-down" in board for board in boards] == [
        "unet2d_xs" in board for board in boards
    ]
    assert (site / "details.html").read_text().count("A scaled-down run") == 1


def test_a_merged_site_has_no_broken_link(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    runs_on_two_datasets(first, second, ("scratch", "dino"))
    site = build_site([first, second], tmp_path / "site", FAST).parent
    pages = list(site.glob("*.html"))
    assert len(pages) >= 8
    for page in pages:
        for target in re.findall(r'(?:href|src)="([^"#]+)', page.read_text()):
            assert (site / target).is_file(), f"{page.name} links to missing {target}"


def test_report_merges_run_folders_and_bundles_from_the_command_line(tmp_path, cmrbench_env):
    first, second = tmp_path / "one", tmp_path / "two"
    runs_on_two_datasets(first, second)
    export_bundle(second, tmp_path / "two.zip")
    no_out = run_cli(["report", str(first), str(tmp_path / "two.zip")], cmrbench_env)
    assert no_out.returncode == 2 and "--out is required" in no_out.stderr
    merged = run_cli(
        ["report", str(first), str(tmp_path / "two.zip"), "--out", str(tmp_path / "site")],
        cmrbench_env,
    )
    assert merged.returncode == 0, merged.stderr
    assert set(leaderboard_rows(tmp_path / "site")["dataset"]) == {"mnms", "acdc"}
    assert "<code>two</code>" in (tmp_path / "site" / "provenance.html").read_text()


def test_the_per_subject_scores_behind_every_number_are_downloadable(tmp_path):
    store = small_store(tmp_path / "store")
    site = build_site(store, tmp_path / "site", FAST).parent
    rows = pd.read_parquet(site / "data" / "subjects.parquet")
    rows = rows.assign(cell_key=rows["cell_key"].astype(str), subject=rows["subject"].astype(str))
    per_run = pd.read_csv(site / "data" / "subject_scores.csv")
    by_hand = rows[rows["annotated"]].groupby(["cell_key", "subject"], observed=True)["dsc"].mean()
    got = per_run.set_index(["cell_key", "subject"])["dsc"]
    assert len(got) == len(by_hand) == 2 * 2 * 6
    pd.testing.assert_series_equal(
        got.sort_index(), by_hand.sort_index(), check_names=False, check_index_type=False
    )
    combined = pd.read_csv(site / "data" / "subject_scores_combined.csv")
    assert (combined["n_seeds"] == 2).all() and len(combined) == 2 * 6
    mim = combined[combined["method"] == "mim"].set_index("subject")["dsc"]
    mim_by_hand = per_run[per_run["method"] == "mim"].groupby("subject")["dsc"].mean()
    pd.testing.assert_series_equal(mim.sort_index(), mim_by_hand.sort_index(), check_names=False)
    board = pd.read_csv(site / "data" / "leaderboard.csv").set_index("method")
    assert board.loc["mim", "mean"] == pytest.approx(mim.mean(), abs=1e-12)
    clinical = pd.read_parquet(site / "data" / "clinical_points.parquet")
    assert len(clinical) == len(load_stores([store]).clinical) > 0


def test_the_index_says_how_to_cite_the_results(tmp_path):
    store = small_store(tmp_path / "store")
    run = json.loads((store / "run.json").read_text())
    (store / "run.json").write_text(
        json.dumps({**run, "cmrbench_version": "9.8.7", "git_commit": "abc1234"})
    )
    index = build_site(store, tmp_path / "site", FAST).read_text()
    cite = index[index.index('<section id="cite">') :]
    protocols = {
        json.loads(p.read_text()).get("protocol_version")
        for p in (store / "cells").glob("*/spec.json")
    }
    assert "<code>9.8.7</code>" in cite and "<code>abc1234</code>" in cite
    assert f"<code>{', '.join(sorted(map(str, protocols)))}</code>" in cite
    assert "version = {9.8.7}" in cite and "eprint        = {2409.18100}" in cite
    assert "95 % intervals and run-level paired t-tests" in cite
