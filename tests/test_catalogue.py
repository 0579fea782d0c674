"""The table catalogue (cmrbench.reports.stats): every table declared once with its columns,
downloads and ``cmrbench stats --table`` read it, tables are computed only when asked for, and
writer and reader share one vocabulary."""

from __future__ import annotations

import html
import json
import re

import pandas as pd
import pytest
from click.testing import CliRunner

from cmrbench.cli import main
from cmrbench.reports import CATALOGUE, Statistics, UnknownTableError, build_site, load_store
from cmrbench.reports.stats import ranks
from cmrbench.reports.stats.blocks import VIEWS, quantity_order
from cmrbench.reports.stats.catalogue import (
    Analysis,
    Catalogue,
    Column,
    Table,
    records,
    table_bytes,
)
from cmrbench.reports.stats.estimates import BootstrapConfig
from cmrbench.vocabulary import CLINICAL_QUANTITIES, CLINICAL_UNITS, PHASES, STRUCTURES
from support.synthetic_store import SyntheticGrid, write_synthetic_store

FAST = BootstrapConfig(n_resamples=100, seed=0)
GRID = SyntheticGrid(
    methods=("scratch", "mim", "dino"),
    budgets=("10", "all"),
    augmentations=("none", "paper"),
    settings=("default", "vendors=A+B"),
    n_subjects=8,
    effects={"mim": 0.05},
    unannotated_rv_every=3,
    empty_mask_every=4,
    failed=(("dino", "10"),),
)
# columns a table holds only for some stores: a merged report's run, a dataset's pathology
OPTIONAL = {"run", "pathology"}
# the synthetic store's skipped subject also names its file (a key run.json may carry)
EXTRA = {"skipped_subjects": {"file"}}


@pytest.fixture(scope="module")
def store_and_site(tmp_path_factory):
    work = tmp_path_factory.mktemp("catalogue")
    write_synthetic_store(work / "run", GRID)
    build_site(work / "run", work / "site")  # as `cmrbench stats`: the default config
    return work / "run", work / "site"


def invoke(*args: str):
    return CliRunner().invoke(main, ["stats", *map(str, args)])


def test_every_table_holds_exactly_its_declared_columns_in_order(store_and_site):
    statistics = Statistics(load_store(store_and_site[0]), FAST)
    for table in CATALOGUE:
        columns = list(statistics[table.name].columns)
        declared = table.column_names
        assert [c for c in declared if c in columns] == [c for c in columns if c in declared], (
            table.name
        )
        assert set(declared) - set(columns) <= OPTIONAL, (table.name, set(declared) - set(columns))
        assert set(columns) - set(declared) <= EXTRA.get(table.name, set()), table.name


def test_every_table_and_column_is_named_once_and_says_what_it_means():
    assert len(CATALOGUE.names()) == len(set(CATALOGUE.names())) == len(CATALOGUE)
    for table in CATALOGUE:
        assert table.description and len(set(table.column_names)) == len(table.columns), table.name
        assert all(c.meaning.strip() for c in table.columns), table.name


def test_the_site_downloads_every_table_with_downloads_in_catalogue_order(store_and_site):
    _, site = store_and_site
    expected = [f"data/{t.name}.{fmt}" for t in CATALOGUE for fmt in t.downloads]
    assert sorted(expected) == sorted(str(p.relative_to(site)) for p in (site / "data").iterdir())
    page = (site / "downloads.html").read_text(encoding="utf-8")
    listed = [t.name for t in CATALOGUE if t.downloads]
    positions = [page.index(f'<th scope="row">{name}</th>') for name in listed]
    assert positions == sorted(positions)
    assert "power" not in [t.name for t in CATALOGUE if t.downloads]  # command line only


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_stats_table_prints_the_bytes_of_the_sites_download(store_and_site, fmt):
    run, site = store_and_site
    for table in CATALOGUE:
        if fmt not in table.downloads:
            continue
        result = invoke(run, "--table", table.name, "--format", fmt)
        assert result.exit_code == 0, result.output
        assert result.output.encode() == (site / "data" / f"{table.name}.{fmt}").read_bytes(), (
            table.name
        )


def test_stats_table_in_text_shows_the_same_values(store_and_site):
    run, site = store_and_site
    result = invoke(run, "--table", "ranks")
    assert result.exit_code == 0, result.output
    header, rule, *rows = result.output.splitlines()
    ranks = pd.read_csv(site / "data" / "ranks.csv")
    assert header.split() == list(ranks.columns) and set(rule) <= {"-", " "}
    assert len(rows) == len(ranks)
    first = rows[0].split()
    assert float(first[list(ranks.columns).index("mean")]) == pytest.approx(
        ranks["mean"].iloc[0], rel=1e-5
    )


def test_stats_table_pairwise_prints_one_row_per_block_and_pair(store_and_site):
    run, site = store_and_site
    result = invoke(run, "--table", "pairwise", "--format", "json")
    rows = json.loads(result.output)
    assert rows and {
        "dataset",
        "encoder",
        "augmentation",
        "setting",
        "budget",
        "method_a",
        "method_b",
        "p",
        "p_holm",
        "separated",
    } <= set(rows[0])
    pairs = [
        (
            r["dataset"],
            r["encoder"],
            r["augmentation"],
            r["setting"],
            r["budget"],
            frozenset((r["method_a"], r["method_b"])),
        )
        for r in rows
    ]
    assert len(pairs) == len(set(pairs))
    assert all(isinstance(r["separated"], bool) for r in rows)
    csv = invoke(run, "--table", "pairwise", "--format", "csv")
    assert csv.output.encode() == (site / "data" / "pairwise.csv").read_bytes()


def test_stats_tables_lists_every_table_with_its_columns_and_meanings(store_and_site):
    run, _ = store_and_site
    text = invoke(run, "--tables")
    assert text.exit_code == 0
    for table in CATALOGUE:
        assert f"\n{table.name}: {table.description}\n" in f"\n{text.output}"
    listed = json.loads(invoke(run, "--tables", "--format", "json").output)
    assert [t["name"] for t in listed] == CATALOGUE.names()
    clinical = next(t for t in listed if t["name"] == "clinical")
    assert {"name": "bias", "meaning": "mean of prediction − reference"} in clinical["columns"]
    rows = pd.read_csv(pd.io.common.StringIO(invoke(run, "--tables", "--format", "csv").output))
    assert len(rows) == sum(len(t.columns) for t in CATALOGUE)


def test_an_unknown_table_is_an_error_that_lists_the_tables(store_and_site):
    result = invoke(store_and_site[0], "--table", "medians")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "unknown table 'medians'" in result.output and "comparisons" in result.output
    both = invoke(store_and_site[0], "--table", "summary", "--tables")
    assert both.exit_code == 2 and "give one of them" in both.output
    with pytest.raises(UnknownTableError):
        Statistics(load_store(store_and_site[0]), FAST)["medians"]


def test_a_table_is_computed_without_the_analyses_it_does_not_build_on(store_and_site, monkeypatch):
    def no_ranks(*args, **kwargs):
        raise AssertionError("the ranks were computed")

    monkeypatch.setattr(ranks, "rank_block", no_ranks)
    statistics = Statistics(load_store(store_and_site[0]), FAST)
    assert not statistics["clinical"].empty and not statistics["comparisons"].empty
    with pytest.raises(AssertionError, match="the ranks were computed"):
        statistics["leaderboard"]  # its top sets build on the pairwise tests


def test_the_power_table_takes_its_delta_from_the_command_line(store_and_site):
    result = invoke(store_and_site[0], "--table", "power", "--power", "0.05", "--format", "json")
    rows = json.loads(result.output)
    assert rows and all(r["delta"] == 0.05 and r["seeds_needed"] >= 2 for r in rows)


def test_a_catalogue_refuses_a_table_declared_twice_and_an_unknown_download():
    table = Table("medians", "median DSC", (Column("median", "median DSC"),))
    with pytest.raises(ValueError, match="declared twice"):
        Catalogue([Analysis((table,), dict), Analysis((table,), dict)])
    with pytest.raises(ValueError, match="unknown download format"):
        Table("medians", "median DSC", (Column("median", "median DSC"),), downloads=("xlsx",))


def test_download_bytes_quote_formulas_in_csv_and_write_nan_as_null_in_json():
    frame = pd.DataFrame({"method": ["=cmd", "mim"], "p": [float("nan"), 0.25]})
    assert table_bytes(frame, "csv").decode() == "method,p\n'=cmd,\nmim,0.25\n"
    assert json.loads(table_bytes(frame, "json")) == [
        {"method": "=cmd", "p": None},
        {"method": "mim", "p": 0.25},
    ]
    assert records(frame)[0]["p"] is None
    assert pd.read_parquet(pd.io.common.BytesIO(table_bytes(frame, "parquet"))).equals(frame)


def test_writer_and_reader_share_one_vocabulary():
    from cmrbench.benchmark import evaluate, metrics
    from cmrbench.datasets import subject

    assert evaluate.CLINICAL_UNITS is CLINICAL_UNITS
    assert metrics.CLINICAL_KEYS == CLINICAL_QUANTITIES
    assert set(
        metrics.clinical_values(
            {"ED": {1: 100.0, 2: 50.0, 3: 120.0}, "ES": {1: 40.0, 2: 50.0, 3: 60.0}}
        )
    ) == set(CLINICAL_UNITS)
    assert tuple(subject.CLASS_NAMES[c] for c in subject.FOREGROUND) == STRUCTURES
    assert [v.name for v in VIEWS] == [
        f"{metric}{suffix}"
        for metric in ("dsc", "hd95")
        for suffix in ("", *(f"_{n}" for n in (*STRUCTURES, *PHASES)))
    ]
    assert sorted(CLINICAL_UNITS, key=quantity_order) == list(CLINICAL_QUANTITIES)
    assert sorted(["XX", "RV_EF", "LV_MASS"], key=quantity_order) == ["LV_MASS", "RV_EF", "XX"]


def test_a_page_shows_a_catalogue_table_it_names_per_leaderboard(tmp_path, monkeypatch):
    from cmrbench.reports.pages.details import DetailsPage

    write_synthetic_store(
        tmp_path / "run", SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), n_subjects=6)
    )
    monkeypatch.setattr(DetailsPage, "plain_tables", ("per_seed",))
    build_site(tmp_path / "run", tmp_path / "site", FAST)
    page = (tmp_path / "site" / "details.html").read_text(encoding="utf-8")
    title = "<h3>Mean per seed (labelled subset) per block × method × view</h3>"
    assert page.count(title) == 1
    shown = page[page.index(title) :]
    shown = shown[: shown.index("</table>")]
    meanings = {c.name: c.meaning for c in CATALOGUE["per_seed"].columns}
    head = [
        (html.unescape(m), name)
        for m, name in re.findall(r'<th[^>]* title="([^"]*)">([^<]*)', shown)
    ]
    assert head == [
        (meanings[name], name)
        for name in ("budget", "method", "view", "seed", "mean", "n_subjects")
    ]
    rows = [
        re.findall(r"<td[^>]*>([^<]*)</td>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", shown.split("<tbody>")[1])
    ]
    expected = pd.read_csv(tmp_path / "site" / "data" / "per_seed.csv", dtype={"budget": str})
    assert rows == [
        [r.budget, r.method, r.view, str(r.seed), f"{r.mean:.3f}", str(r.n_subjects)]
        for r in expected.itertuples()
    ]
    assert 'href="data/per_seed.csv"' in page[page.index(title) :]
