"""Tests for the static report (cmrbench.reports.site) and the text leaderboards: escaping
of hostile names in every context, safe file names, missing cells, downloads, no URLs."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmrbench.reports import build_site, leaderboard
from cmrbench.reports.leaderboard import LeaderboardFormatError
from cmrbench.reports.site import SiteFolder, SitePathError, safe_name
from cmrbench.reports.stats import BootstrapConfig
from support.synthetic_store import SyntheticGrid, write_synthetic_store

SCRIPT_NAME = "</script><script>alert(1)</script>"
QUOTE_NAME = "q\"uo'te"
TRAVERSAL_NAME = "../../evil"
HOSTILE_DOC = "<img src=x onerror=alert(2)> $x$ & </pre>"
FAST = BootstrapConfig(n_resamples=200)
EXPLORE_JS = (
    (Path(__file__).parents[1] / "cmrbench" / "reports" / "templates" / "explore.js")
    .read_text()
    .strip()
)


def hostile_grid() -> SyntheticGrid:
    return SyntheticGrid(
        methods=("scratch", "mim", SCRIPT_NAME, QUOTE_NAME, TRAVERSAL_NAME),
        budgets=("10", "all"),
        settings=("default", "vendors=A+B"),
        n_subjects=16,
        effects={"mim": 0.06},
        pending=((QUOTE_NAME, "all"),),
        failed=((TRAVERSAL_NAME, "10"),),
        unannotated_rv_every=5,
        empty_mask_every=4,
        method_docs={SCRIPT_NAME: SCRIPT_NAME + "\nmore", "mim": HOSTILE_DOC},
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(work folder, store folder, site folder, index path) for the hostile store."""
    work = tmp_path_factory.mktemp("hostile")
    store, site = work / "store", work / "nested" / "site"
    write_synthetic_store(store, hostile_grid())
    before = {p for p in work.rglob("*")}
    index = build_site(store, site, FAST)
    return work, store, site, index, before


class Collector(HTMLParser):
    """Collects start tags with their (unescaped) attributes, text and script contents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def parse(path: Path) -> Collector:
    collector = Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def html_pages(site: Path) -> list[Path]:
    return sorted(site.glob("*.html"))


# -- escaping ------------------------------------------------------------------------------


def test_hostile_names_never_appear_unescaped_in_any_page(built):
    _, _, site, _, _ = built
    pages = html_pages(site)
    assert len(pages) >= 8
    for page in pages:
        raw = page.read_text(encoding="utf-8")
        assert "<script>alert(1)" not in raw and "<img src=x" not in raw, page.name
        parsed = parse(page)
        scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
        code = [attrs for attrs in scripts if attrs.get("type") != "application/json"]
        assert len(code) <= 1, page.name
        assert [text.strip() for text in parsed.scripts if "use strict" in text] == [
            EXPLORE_JS
        ] * len(code), page.name
        assert not [
            t
            for t, _ in parsed.tags
            if t in ("img", "iframe", "object", "embed") and any(k.startswith("on") for k in _)
        ], page.name
        for _, attrs in parsed.tags:
            assert not any(key.startswith("on") for key in attrs), page.name


def test_hostile_names_round_trip_as_text_and_attributes(built):
    _, _, site, index, _ = built
    parsed = parse(index)
    methods_in_rows = [
        attrs["data-method"] for tag, attrs in parsed.tags if tag == "tr" and "data-method" in attrs
    ]
    assert {SCRIPT_NAME, QUOTE_NAME, TRAVERSAL_NAME} <= set(methods_in_rows)
    assert SCRIPT_NAME in "".join(parsed.text)
    raw = index.read_text(encoding="utf-8")
    assert 'data-method="q&#34;uo&#39;te"' in raw
    method_page = site / safe_name("method", "mim", ".html")
    doc = parse(method_page)
    assert HOSTILE_DOC in "".join(doc.text)


def test_inline_json_is_escaped_and_holds_the_names(built):
    _, _, _, index, _ = built
    parsed = parse(index)
    assert len(parsed.scripts) == 2 and parsed.scripts[1].strip() == EXPLORE_JS
    payload = parsed.scripts[0]
    assert "</script" not in payload.lower() and "<" not in payload
    rows = json.loads(payload)
    assert {SCRIPT_NAME, QUOTE_NAME, TRAVERSAL_NAME} <= {r["method"] for r in rows}


def test_svg_figures_hold_names_as_escaped_text_only(built):
    _, _, site, _, _ = built
    svgs = sorted((site / "plots").glob("*.svg"))
    assert svgs
    seen_script_name = False
    for svg in svgs:
        root = ElementTree.parse(svg).getroot()  # well-formed XML, so escaping held
        for element in root.iter():
            assert not element.tag.endswith("script"), svg.name
            assert not any(key.startswith("on") for key in element.attrib), svg.name
            seen_script_name |= SCRIPT_NAME[:20] in (element.text or "")
    assert seen_script_name


# -- files ---------------------------------------------------------------------------------


def test_no_file_is_written_outside_the_site_folder(built):
    work, store, site, index, before = built
    assert index == (site / "index.html").resolve()
    after = {p for p in work.rglob("*")}
    new = after - before
    site = site.resolve()
    allowed_folders = {site, *[p for p in site.parents if work.resolve() in p.parents]}
    assert new and all(p.resolve() in allowed_folders or site in p.resolve().parents for p in new)
    assert not (work / "evil").exists() and not (work / "evil.html").exists()
    assert not [
        p
        for p in work.rglob("*evil*")
        if site not in p.resolve().parents and store.resolve() not in p.resolve().parents
    ]


def test_method_pages_are_named_by_slug_and_hash(built):
    _, _, site, _, _ = built
    for name in ("scratch", "mim", SCRIPT_NAME, QUOTE_NAME, TRAVERSAL_NAME):
        page = safe_name("method", name, ".html")
        assert re.fullmatch(r"method-[a-z0-9-]+-[0-9a-f]{8}\.html", page)
        assert (site / page).is_file()
    assert safe_name("method", "a/b", ".html") != safe_name("method", "a-b", ".html")
    assert safe_name("method", TRAVERSAL_NAME, ".html").startswith("method-evil-")


def test_site_folder_refuses_paths_that_leave_it(tmp_path):
    folder = SiteFolder(tmp_path / "site")
    for bad in ("../x.html", "plots/../../x.svg", "/etc/passwd", "a/b/c.html", ".hidden", "x/../y"):
        with pytest.raises(SitePathError):
            folder.path(bad)
    assert folder.path("data/table.csv") == (tmp_path / "site" / "data" / "table.csv").resolve()


def test_links_are_relative_and_resolve_to_files(built):
    _, _, site, _, _ = built
    for page in html_pages(site):
        for _, attrs in parse(page).tags:
            for key in ("href", "src"):
                target = attrs.get(key)
                if not target:
                    continue
                assert not re.match(r"^[a-z]+:|^//", target), (page.name, target)
                path = target.split("#")[0]
                if path:
                    assert (site / path).is_file(), (page.name, target)
    css = (site / "static" / "style.css").read_text()
    assert "url(" not in css and "@import" not in css


# -- content -------------------------------------------------------------------------------


def leaderboard_cells(index: Path) -> dict[tuple[str, str, str], str]:
    """(group, method, budget) → the cell's visible text, read from index.html."""

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.cells, self.group, self.method, self.budgets, self.column, self.td = (
                {},
                "",
                "",
                [],
                0,
                None,
            )

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table" and "data-group" in attrs:
                self.group, self.budgets = attrs["data-group"], []
            elif tag == "th" and "data-budget" in attrs:
                self.budgets.append(attrs["data-budget"])
            elif tag == "tr" and "data-method" in attrs:
                self.method, self.column = attrs["data-method"], 0
            elif tag == "td" and self.method:
                self.td = []

        def handle_endtag(self, tag):
            if tag == "td" and self.td is not None:
                key = (self.group, self.method, self.budgets[self.column])
                self.cells[key] = " ".join("".join(self.td).split())
                self.column, self.td = self.column + 1, None
            elif tag == "tr":
                self.method = ""

        def handle_data(self, data):
            if self.td is not None:
                self.td.append(data)

    parser = Cells()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser.cells


def test_leaderboard_marks_missing_partial_significant_and_the_top_set(built):
    _, _, site, index, _ = built
    cells = leaderboard_cells(index)
    group = "mnms · unet2d_small · none · default"
    assert cells[(group, QUOTE_NAME, "all")] == "missing"
    assert "2/3 seeds" in cells[(group, TRAVERSAL_NAME, "10")]
    assert "▲" in cells[(group, "mim", "10")]
    raw = index.read_text(encoding="utf-8")
    top = re.findall(
        r'<td class="cell (?:done|partial) top-set[^"]*" data-mean="[0-9.]+" '
        r'data-ci-low="[0-9.]+" data-ci-high="[0-9.]+" data-delta="([^"]*)"',
        raw,
    )
    board = pd.read_csv(site / "data" / "leaderboard.csv", dtype={"budget": str})
    in_set = board[board["top_set"]]
    assert len(top) == len(in_set) and set(in_set["budget"]) == {"10"}  # one run: no top set
    assert set(in_set["method"]) >= {"mim"} and not in_set["method"].eq("scratch").any()
    assert len(cells) == 2 * 5 * 2


def test_every_table_is_downloadable_as_csv_and_json(built):
    _, _, site, _, _ = built
    downloads = parse(site / "downloads.html")
    links = [
        attrs["href"]
        for tag, attrs in downloads.tags
        if tag == "a" and attrs.get("href", "").startswith("data/")
    ]
    names = {Path(link).stem for link in links}
    assert {
        "leaderboard",
        "summary",
        "per_seed",
        "comparisons",
        "subject_level",
        "ranks",
        "cliques",
        "pairwise",
        "vendors",
        "vendor_interaction",
        "clinical",
        "jobs",
        "skipped_subjects",
    } <= names
    for name in {Path(link).stem for link in links if link.endswith(".json")}:
        table = pd.read_csv(site / "data" / f"{name}.csv")
        rows = json.loads((site / "data" / f"{name}.json").read_text())
        assert len(table) == len(rows), name
    board = pd.read_csv(site / "data" / "leaderboard.csv")
    assert len(board) == 2 * 5 * 2 and (board["status"] == "missing").sum() == 2


def test_pages_show_vendor_clinical_provenance_and_method_details(built):
    _, _, site, _, _ = built
    vendors = "".join(parse(site / "vendors.html").text)
    assert "unseen (C+D)" in vendors and "vendor D" in vendors
    assert "Does pretraining help more on unseen vendors? Δ(unseen) − Δ(seen)" in vendors
    clinical = "".join(parse(site / "clinical.html").text)
    assert "LV_EF" in clinical and "LV_MASS" in clinical and "MAE" in clinical
    provenance = "".join(parse(site / "provenance.html").text)
    assert "0123456789abcdef0123456789abcdef01234567" in provenance
    assert "no ES label <b>" in provenance and "cpu (2 cores)" in provenance
    details = "".join(parse(site / "details.html").text)
    assert "ranks the tests allow" in details and "undefined" in details
    assert "Conditional on these trained models: subject-level tests" in details
    mim = parse(site / safe_name("method", "mim", ".html"))
    images = [attrs["src"] for tag, attrs in mim.tags if tag == "img"]
    assert any(src.startswith("overlays/") and src.endswith(".png") for src in images)
    assert any(src.startswith("plots/loss-") for src in images)
    assert "tensors loaded" in "".join(mim.text)


def test_unannotated_class_shows_as_na_never_zero(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim"), budgets=("10",), n_subjects=8, unannotated_rv_every=1
        ),
    )
    site = tmp_path / "site"
    build_site(store, site, FAST)
    summary = pd.read_csv(site / "data" / "summary.csv")
    rv = summary[summary["view"] == "dsc_RV"]
    assert rv["mean"].isna().all() and (rv["n_subjects"] == 0).all()
    details = (site / "details.html").read_text()
    per_class = details[
        details.index("Per class and per phase") : details.index("Δ vs scratch per class")
    ]
    deltas = details[details.index("Δ vs scratch per class") : details.index("HD95 (mm")]
    for table, count in ((per_class, 2), (deltas, 1)):
        rows = re.findall(
            r'<tr(?: class="group-start")?><td>(?:10)?</td>.*?</tr>', table, flags=re.S
        )
        assert len(rows) == count
        for row in rows:
            cells = re.findall(r'<td class="num">(.*?)</td>', row, flags=re.S)
            assert "n/a" in cells[2] and "0.000" not in cells[2]  # columns LV, MYO, RV, ED, ES


def test_figure_cap_leaves_every_table_complete(tmp_path, built):
    _, store, _, _, _ = built
    site = tmp_path / "capped"
    build_site(store, site, FAST, max_plots=0)
    assert not list((site / "plots").glob("cd-*.svg"))
    assert not list((site / "plots").glob("bland-altman-*.svg"))
    assert "figure cap" in (site / "details.html").read_text()
    assert len(pd.read_csv(site / "data" / "summary.csv")) > 0


def test_rebuilding_a_site_gives_identical_pages(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(
        store, SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), n_subjects=8)
    )
    first, second = tmp_path / "a", tmp_path / "b"
    build_site(store, first, FAST)
    build_site(store, second, FAST)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_a_store_without_results_still_gets_a_report(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim"), budgets=("10",), pending=(("scratch", "10"), ("mim", "10"))
        ),
    )
    index = build_site(store, tmp_path / "site", FAST)
    cells = leaderboard_cells(index)
    assert set(cells.values()) == {"missing"} and len(cells) == 2


def test_done_cell_without_its_parquet_is_listed_on_the_provenance_page(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(store, SyntheticGrid(methods=("scratch",), budgets=("10",), seeds=(0,)))
    parquet = next(store.glob("cells/*/subjects.parquet"))
    parquet.unlink()
    index = build_site(store, tmp_path / "site", FAST)
    provenance = (index.parent / "provenance.html").read_text(encoding="utf-8")
    assert f"<code>cells/{parquet.parent.name}</code>" in provenance
    assert "missing, but its cell has result.json" in provenance
    assert set(leaderboard_cells(index).values()) == {"missing"}


def test_parquet_without_a_column_is_listed_naming_the_column(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(store, SyntheticGrid(methods=("scratch",), budgets=("10",), seeds=(0,)))
    parquet = next(store.glob("cells/*/subjects.parquet"))
    pd.read_parquet(parquet).drop(columns=["hd95_mm"]).to_parquet(parquet)
    assert "missing column(s) ['hd95_mm']" in leaderboard(store, "table")


# -- text leaderboards ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown"])
def test_text_leaderboard_reports_the_same_means_in_every_format(built, fmt):
    _, store, site, _, _ = built
    board = pd.read_csv(site / "data" / "leaderboard.csv")
    text = leaderboard(store, fmt, FAST)
    done = board[board["status"] != "missing"]
    if fmt == "csv":
        from io import StringIO

        pd.testing.assert_frame_equal(pd.read_csv(StringIO(text)), board)
    elif fmt == "json":
        rows = json.loads(text)
        assert [r["mean"] for r in rows if r["status"] != "missing"] == pytest.approx(
            done["mean"].tolist()
        )
    else:
        for mean in done["mean"]:
            assert f"{mean:.3f}" in text
        assert text.count("missing") == 2
        if fmt == "markdown":
            assert "\\<" in text and "<script>" not in text
        else:
            lines = text.splitlines()
            assert all(line == line.rstrip() for line in lines)


def test_text_leaderboard_rejects_an_unknown_format(built):
    _, store, _, _, _ = built
    with pytest.raises(LeaderboardFormatError, match="table, csv, json, markdown"):
        leaderboard(store, "html")


# -- what the leaderboard must show (issue 11) --------------------------------------------------


def test_single_seed_columns_carry_no_mark_and_a_test_set_only_dagger(built):
    _, _, _, index, _ = built
    cells = leaderboard_cells(index)
    single = [
        text
        for (group, method, budget), text in cells.items()
        if budget == "all" and text != "missing"
    ]
    assert single and all("▲" not in t and "▼" not in t and "†" in t for t in single)
    assert "Δ +0.0" in cells[("mnms · unet2d_small · none · default", "mim", "10")]


def test_pvalues_below_one_in_a_thousand_print_as_less_than(built):
    _, _, site, _, _ = built
    details = "".join(parse(site / "details.html").text)
    assert "<\u00a00.001" in details and "e-0" not in details and "p = <" not in details


def test_subject_level_tests_sit_only_in_their_section_conditional_on_the_trained_models(built):
    _, _, site, index, _ = built
    raw = (site / "details.html").read_text(encoding="utf-8")
    sections = re.findall(r'<details class="conditional">.*?</details>', raw, flags=re.S)
    assert len(sections) == 2 and all(  # one per leaderboard
        "<summary>Conditional on these trained models: subject-level tests</summary>" in part
        for part in sections
    )
    outside = re.sub(r'<details class="conditional">.*?</details>', "", raw, flags=re.S)
    assert "Wilcoxon" not in outside and "Wilcoxon" not in index.read_text(encoding="utf-8")


def test_index_names_only_the_annotated_structures(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim"), budgets=("10",), n_subjects=6, unannotated_rv_every=1
        ),
    )
    index = build_site(store, tmp_path / "site", FAST)
    text = " ".join("".join(parse(index).text).split())
    assert "averaged over LV and MYO at ED and ES" in text


def test_an_edited_grid_rerun_lists_the_old_cells_as_not_in_this_grid(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim"),
            budgets=("10",),
            seeds=(0, 1),
            n_subjects=6,
            options={"split": "a"},
        ),
    )
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim"),
            budgets=("10",),
            seeds=(0,),
            n_subjects=6,
            options={"split": "b"},
        ),
    )
    index = build_site(store, tmp_path / "site", FAST)
    cells = leaderboard_cells(index)
    assert not any("seeds" in text for text in cells.values())  # never "4/2 seeds"
    assert "4 cell folder(s)" in "".join(parse(index).text)
    provenance = "".join(parse(tmp_path / "site" / "provenance.html").text)
    assert provenance.count("not in this grid") == 4
    assert len(pd.read_csv(tmp_path / "site" / "data" / "set_aside.csv")) == 4
    text = leaderboard(store, "table", FAST)
    assert "4 cell folder(s) set aside (not in this grid)" in text


def test_cells_beyond_the_study_are_labelled_per_board(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim"),
            encoders=("unet2d_small", "vit_small"),
            budgets=("10", "all"),
            settings=("default", "vendors=A+B"),
            seeds=(0,),
            n_subjects=6,
        ),
    )
    index = build_site(store, tmp_path / "site", FAST)
    labels = re.findall(
        r'<h2>([^<]*)</h2>\s*(?:<p class="beyond-study">([^<]*)</p>)?',
        index.read_text(encoding="utf-8"),
    )
    found = {title: label for title, label in labels}
    assert found["mnms · unet2d_small · none · default"] == ""
    assert "encoder vit_small" in found["mnms · vit_small · none · default"]
    assert (
        found["mnms · unet2d_small · none · vendors=A+B"]
        == "beyond the study: budget 10 under vendors=A+B"
    )


def test_label_centred_pretraining_is_stated_in_the_provenance(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim"), budgets=("10",), seeds=(0,), n_subjects=6, center="labels"
        ),
    )
    site = tmp_path / "site"
    build_site(store, site, FAST)
    assert "Pretraining views were centred on the heart using the reference labels" in "".join(
        parse(site / "provenance.html").text
    )
    plain = tmp_path / "plain"
    write_synthetic_store(
        plain, SyntheticGrid(methods=("scratch", "mim"), budgets=("10",), seeds=(0,), n_subjects=6)
    )
    build_site(plain, tmp_path / "plain-site", FAST)
    assert "centred" not in (tmp_path / "plain-site" / "provenance.html").read_text()


@pytest.mark.parametrize("command", ["stats", "report"])
def test_a_folder_that_is_not_a_run_gets_one_line_and_no_traceback(tmp_path, command):
    from click.testing import CliRunner

    from cmrbench.cli import main

    result = CliRunner().invoke(main, [command, str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path}: not a results store (expected run.json and a cells/ folder)"
    ]


def test_stats_power_prints_the_detectable_difference_and_seeds_needed(built):
    from click.testing import CliRunner

    from cmrbench.cli import main

    _, store, _, _, _ = built
    result = CliRunner().invoke(main, ["stats", str(store), "--power", "0.02", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["budget"] for r in rows} == {"10"}  # "all" has one seed: no power estimate
    for row in rows:
        assert row["n_seeds"] == 3 and row["delta"] == 0.02 and row["detectable_delta"] > 0
        assert row["seeds_needed"] is None or row["seeds_needed"] >= 2
        # 4 methods against scratch at the one tested budget: the leaderboard's family
        assert row["family_size"] == 4 and row["alpha_per_test"] == pytest.approx(0.05 / 4)
        assert row["sd_seed_mean_upper"] > row["sd_seed_mean"]
    table = CliRunner().invoke(main, ["stats", str(store), "--power", "0.02"])
    assert "detectable Δ (80 %)" in table.output and "seeds for Δ 0.02" in table.output
    assert "No mark at 3 seeds is not evidence of no gain" in " ".join(table.output.split())
    bad = CliRunner().invoke(main, ["stats", str(store), "--power", "-1"])
    assert bad.exit_code == 2 and "positive" in bad.output


# -- one unit everywhere (issue 22) ----------------------------------------------------------


def map_verdicts(site: Path, group: tuple[str, ...], budget: str) -> dict[tuple[str, str], str]:
    """(row method, column method) → "better", "worse" or "" as the block's pairwise map
    colours it, read from the SVG's tooltips."""
    path = site / "plots" / safe_name("pairs", (*group, budget), ".svg")
    verdicts = {}
    for element in ElementTree.parse(path).getroot().iter("{http://www.w3.org/2000/svg}rect"):
        title = element.find("{http://www.w3.org/2000/svg}title")
        found = (
            re.match(
                r"(.+) (is better than|is worse than|is not separated from) (.+) \(",
                title.text or "",
            )
            if title is not None
            else None
        )
        if found:
            verdicts[(found[1], found[3])] = {
                "is better than": "better",
                "is worse than": "worse",
            }.get(found[2], "")
    return verdicts


@pytest.mark.parametrize("effects", [{"mim": 0.1, "dino": -0.1}, {}])
def test_the_details_page_separates_from_scratch_exactly_what_the_index_marks(tmp_path, effects):
    store, site = tmp_path / "store", tmp_path / "site"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim", "dino", "simclr"),
            budgets=("10", "25", "all"),
            n_subjects=40,
            effects=effects,
            run_noise_sd=0.01,
            seed=5,
        ),
    )
    index = build_site(store, site, FAST)
    cells = leaderboard_cells(index)
    board = pd.read_csv(site / "data" / "leaderboard.csv", dtype={"budget": str})
    pairwise = pd.read_csv(site / "data" / "pairwise.csv", dtype={"budget": str})
    group = ("mnms", "unet2d_small", "none", "default")
    for budget in ("10", "25", "all"):
        verdicts = map_verdicts(site, group, budget)
        for method in ("mim", "dino", "simclr"):
            text = cells[(" · ".join(group), method, budget)]
            mark = "better" if "▲" in text else "worse" if "▼" in text else ""
            assert verdicts[(method, "scratch")] == mark, (budget, method)
            direction = board.set_index(["method", "budget"]).loc[(method, budget), "direction"]
            assert (direction if isinstance(direction, str) else "") == mark
        in_block = pairwise[pairwise["budget"] == budget]
        shown = {(a, b) for (a, b), v in verdicts.items() if v}
        table = {(r.method_a, r.method_b) for r in in_block.itertuples() if r.separated}
        assert shown == table | {(b, a) for a, b in table}  # the map is the table
    if not effects:  # a complete null: nothing marked, nothing separated
        assert not any("▲" in t or "▼" in t for t in cells.values())
        assert not pairwise["separated"].any()
    else:
        assert "▲" in cells[(" · ".join(group), "mim", "10")]
        assert "▼" in cells[(" · ".join(group), "dino", "10")]


@pytest.mark.parametrize("pretrain_seeds", ["single", "tied"])
def test_every_legend_says_when_claims_rest_on_one_pretraining_run(tmp_path, pretrain_seeds):
    store, site = tmp_path / "store", tmp_path / "site"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim", "mim_enc"),
            budgets=("10", "all"),
            n_subjects=8,
            pretrain_seeds=pretrain_seeds,
            pretrain_as={"mim_enc": "mim"},
        ),
    )
    build_site(store, site, FAST)
    phrase = "conditional on one pretraining run per method"
    pages = (
        "index.html",
        "details.html",
        "provenance.html",
        "vendors.html",
        "clinical.html",
        safe_name("method", "mim_enc", ".html"),
    )
    for page in pages:
        text = " ".join("".join(parse(site / page).text).split())
        assert (phrase in text) == (pretrain_seeds == "single"), page
    assert (phrase in leaderboard(store, "table", FAST).replace("\n", " ")) == (
        pretrain_seeds == "single"
    )
    provenance = " ".join("".join(parse(site / "provenance.html").text).split())
    assert ("one pretraining run per fine-tuning seed (pretrain_seeds: tied)" in provenance) == (
        pretrain_seeds == "tied"
    )


def test_a_method_that_reuses_a_pretraining_job_shows_it_and_the_job_shows_its_users(tmp_path):
    store, site = tmp_path / "store", tmp_path / "site"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim_enc"),
            budgets=("10",),
            n_subjects=6,
            pretrain_as={"mim_enc": "mim"},
            method_docs={"mim_enc": "`mim` with only the encoder."},
        ),
    )
    build_site(store, site, FAST)
    page = " ".join("".join(parse(site / safe_name("method", "mim_enc", ".html")).text).split())
    assert "No pretraining job" not in page
    assert "Fine-tunes from the pretraining job" in page and "of mim (the same checkpoint" in page
    assert "tensors loaded" in page
    rows = {}
    for row in re.findall(
        r"<tr><th scope=\"row\">(.*?)</tr>", (site / "methods.html").read_text(), flags=re.S
    ):
        cells = [
            " ".join(re.sub(r"<[^>]+>", " ", c).split())
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", "<th>" + row, flags=re.S)
        ]
        rows[cells[0]] = cells[1:]
    assert rows["mim"][0].startswith("Pretraining method of mim_enc")
    assert rows["mim"][1:] == ["1", "3 / 3 as mim_enc"]
    assert rows["mim_enc"][1:] == ["1", "3 / 3"]
    mim = " ".join("".join(parse(site / safe_name("method", "mim", ".html")).text).split())
    assert "Its pretraining job(s) serve the cells of mim_enc (3 cells)" in mim


def test_the_terminal_table_prints_holms_p_and_the_verdict_beside_each_delta():
    from cmrbench.reports.leaderboard import cell_text

    base = {
        "status": "done",
        "mean": 0.80,
        "ci_low": 0.78,
        "ci_high": 0.82,
        "scope": "runs",
        "delta": 0.03,
        "delta_ci_low": 0.01,
        "delta_ci_high": 0.05,
        "p_holm": 0.0004,
        "direction": "better",
        "step_down": False,
        "top_set": True,
        "seeds_done": 3,
        "seeds_expected": 3,
    }
    assert (
        cell_text(base, ascii_only=True)
        == "0.800 [0.780, 0.820] +0.030 [+0.010, +0.050] p<0.001 + *"
    )
    quiet = {**base, "p_holm": 0.216, "direction": "", "delta_ci_low": -0.01, "top_set": False}
    assert cell_text(quiet) == "0.800 [0.780, 0.820] +0.030 [-0.010, +0.050] p=0.216 n.s."
    stepped = {**base, "p_holm": 0.03, "delta_ci_low": -0.002, "step_down": True}
    assert cell_text(stepped).endswith("p=0.030 ▲ ‡")
    one_run = {
        **base,
        "scope": "test set only",
        "delta_ci_low": np.nan,
        "delta_ci_high": np.nan,
        "p_holm": np.nan,
        "direction": "",
        "top_set": False,
    }
    assert cell_text(one_run, ascii_only=True) == "0.800 [0.780, 0.820] (t) +0.030 (t) not tested"
