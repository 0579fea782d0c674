"""The report rendered in a real headless Chromium from file://, with no network.

Checks that a browser finds no console error and no alert (a method is named
``</script><script>alert(1)</script>``), that the leaderboard it shows equals means
recomputed here from the parquet files, that every link and image resolves to a file of
the site, and that the index screenshot is not blank. Needs Debian's ``chromium`` and
``chromium-driver`` packages; without them the test is skipped, unless
``CMRBENCH_REQUIRE_BROWSER=1`` makes it fail.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from cmrbench.reports import build_site
from cmrbench.reports.stats import BootstrapConfig
from support.browser import alert_text, open_chromium, requested_urls, severe_messages
from support.synthetic_store import SyntheticGrid, write_synthetic_store

SCRIPT_NAME = "</script><script>alert(1)</script>"
QUOTE_NAME = "q\"uo'te"
TRAVERSAL_NAME = "../../evil"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    browser = open_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("browser")
    store = work / "store"
    write_synthetic_store(
        store,
        SyntheticGrid(
            methods=("scratch", "mim", SCRIPT_NAME, QUOTE_NAME, TRAVERSAL_NAME),
            budgets=("10", "all"),
            n_subjects=16,
            effects={"mim": 0.06},
            pending=((QUOTE_NAME, "all"),),
            failed=((TRAVERSAL_NAME, "10"),),
            unannotated_rv_every=5,
            empty_mask_every=4,
            method_docs={SCRIPT_NAME: SCRIPT_NAME},
        ),
    )
    index = build_site(store, work / "site", BootstrapConfig(n_resamples=200))
    return store, index.parent


def test_the_checks_see_an_alert_and_a_console_error_when_there_is_one(driver, tmp_path):
    control = tmp_path / "control.html"
    control.write_text(
        "<!DOCTYPE html><title>c</title><img src='absent.png'><script>alert('control')</script>"
    )
    driver.get(control.as_uri())
    assert alert_text(driver) == "control"
    assert any("absent.png" in message for message in severe_messages(driver))


def test_every_page_loads_without_alert_console_error_or_network(driver, site):
    _, root = site
    pages = sorted(root.glob("*.html"))
    assert len(pages) >= 8
    for page in pages:
        requested_urls(driver)
        driver.get(page.as_uri())
        assert alert_text(driver) is None, page.name
        assert severe_messages(driver) == [], page.name
        requested = requested_urls(driver)
        assert any(url.endswith("/static/style.css") for url in requested), page.name
        assert all(urlparse(url).scheme in ("file", "data") for url in requested), (
            page.name,
            requested,
        )
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.src)"
        )
        assert broken == [], (page.name, broken)
        assert driver.execute_script("return typeof window.alert") == "function"


def test_every_link_and_image_resolves_to_a_site_file(driver, site):
    _, root = site
    for page in sorted(root.glob("*.html")):
        driver.get(page.as_uri())
        targets = driver.execute_script(
            "return Array.from(document.querySelectorAll('[href],[src]'))"
            ".map(e => e.getAttribute('href') !== null ? e.href : e.src)"
        )
        assert targets, page.name
        for target in targets:
            url = urlparse(target)
            assert url.scheme == "file", (page.name, target)
            path = Path(unquote(url.path))
            assert path.is_file(), (page.name, target)
            assert root.resolve() in path.resolve().parents, (page.name, target)
            if url.fragment and path.suffix == ".html":
                assert f'id="{url.fragment}"' in path.read_text(encoding="utf-8"), (
                    page.name,
                    target,
                )


def recomputed_means(store: Path) -> dict[tuple[str, str, str], float]:
    """(leaderboard title, method, budget) → mean DSC, straight from the parquet files:
    per subject the mean over annotated classes and phases, then over seeds, then subjects."""
    frames = [
        pd.read_parquet(folder / "subjects.parquet")
        for folder in sorted((store / "cells").iterdir())
        if (folder / "result.json").is_file()
    ]
    rows = pd.concat(frames)
    rows = rows[rows["annotated"]]
    keys = ["dataset", "encoder", "augmentation", "setting", "method", "budget"]
    per_seed = rows.groupby([*keys, "seed", "subject"])["dsc"].mean()
    per_subject = per_seed.groupby([*keys, "subject"]).mean()
    means = per_subject.groupby(keys).mean()
    return {(" · ".join(k[:4]), k[4], k[5]): float(v) for k, v in means.items()}


def test_rendered_leaderboard_equals_means_recomputed_from_the_store(driver, site):
    from selenium.webdriver.common.by import By

    store, root = site
    driver.get((root / "index.html").as_uri())
    expected = recomputed_means(store)
    shown = {}
    for table in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard[data-group]"):
        group = table.get_attribute("data-group")
        budgets = [
            th.get_attribute("data-budget")
            for th in table.find_elements(By.CSS_SELECTOR, "th[data-budget]")
        ]
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr[data-method]"):
            method = row.get_attribute("data-method")
            for budget, cell in zip(budgets, row.find_elements(By.CSS_SELECTOR, "td")):
                shown[(group, method, budget)] = cell
    assert {SCRIPT_NAME, QUOTE_NAME, TRAVERSAL_NAME} <= {method for _, method, _ in shown}
    assert len(shown) == 5 * 2
    for key, cell in shown.items():
        if key not in expected:
            assert cell.text.strip() == "missing", key
            continue
        assert cell.find_element(By.CSS_SELECTOR, ".mean").text == f"{expected[key]:.3f}", key
        assert float(cell.get_attribute("data-mean")) == pytest.approx(expected[key], abs=1e-12), (
            key
        )
    assert sum(cell.text.strip() == "missing" for cell in shown.values()) == 1
    data = json.loads(driver.find_element(By.ID, "leaderboard-data").get_attribute("textContent"))
    assert {r["method"] for r in data} >= {SCRIPT_NAME, QUOTE_NAME, TRAVERSAL_NAME}


def test_index_screenshot_is_not_blank(driver, site):
    import matplotlib.image

    _, root = site
    driver.get((root / "index.html").as_uri())
    png = driver.get_screenshot_as_png()
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    not_white = (pixels < 0.97).any(axis=-1).mean()
    assert len(colours) > 100 and not_white > 0.08, (len(colours), not_white)


@pytest.fixture(scope="module")
def merged_site(tmp_path_factory):
    """One site from two runs: different datasets, two encoders, three methods."""
    work = tmp_path_factory.mktemp("browser-merged")
    for name, dataset in (("run-a", "mnms"), ("run-b", "acdc")):
        write_synthetic_store(
            work / name,
            SyntheticGrid(
                methods=("scratch", "mim", "dino"),
                encoders=("unet2d_small", "vit_tiny"),
                budgets=("10", "all"),
                seeds=(0, 1),
                n_subjects=8,
                dataset=dataset,
                effects={"mim": 0.05, "dino": -0.04},
            ),
        )
    index = build_site(
        [work / "run-a", work / "run-b"], work / "site", BootstrapConfig(n_resamples=100)
    )
    return index.parent


def visible_boards(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('section.board'))"
        ".filter(s => !s.hidden).map(s => s.querySelector('table').dataset.group)"
    )


def test_clicking_a_header_sorts_and_a_filter_hides_boards(driver, merged_site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get((merged_site / "index.html").as_uri())
    assert len(visible_boards(driver)) == 4
    Select(
        driver.find_element(By.CSS_SELECTOR, "#board-filters select[name=encoder]")
    ).select_by_visible_text("vit_tiny")
    assert sorted(visible_boards(driver)) == [
        "acdc · vit_tiny · none · default",
        "mnms · vit_tiny · none · default",
    ]
    table = next(
        t for t in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard") if t.is_displayed()
    )
    header = table.find_element(By.CSS_SELECTOR, "th[data-budget='10'] button.sort")

    def column() -> list[tuple[str, float]]:
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        return [
            (
                r.get_attribute("data-method"),
                float(r.find_elements(By.CSS_SELECTOR, "td")[0].get_attribute("data-mean")),
            )
            for r in rows
        ]

    header.click()
    descending = column()
    assert [m for m, _ in descending] == ["mim", "scratch", "dino"]
    assert [v for _, v in descending] == sorted((v for _, v in descending), reverse=True)
    header.click()
    assert [m for m, _ in column()] == ["dino", "scratch", "mim"]
    Select(
        driver.find_element(By.CSS_SELECTOR, "#board-filters select[name=budget]")
    ).select_by_visible_text("all")
    assert not header.is_displayed()
    assert severe_messages(driver) == []
    assert alert_text(driver) is None


def test_every_link_resolves_in_a_merged_site(driver, merged_site):
    for page in sorted(merged_site.glob("*.html")):
        requested_urls(driver)
        driver.get(page.as_uri())
        assert severe_messages(driver) == [], page.name
        targets = driver.execute_script(
            "return Array.from(document.querySelectorAll('[href],[src]'))"
            ".map(e => e.getAttribute('href') !== null ? e.href : e.src)"
        )
        for target in targets:
            url = urlparse(target)
            path = Path(unquote(url.path))
            assert url.scheme == "file" and path.is_file(), (page.name, target)
            if url.fragment and path.suffix == ".html":
                assert f'id="{url.fragment}"' in path.read_text(encoding="utf-8"), (
                    page.name,
                    target,
                )
        assert all(urlparse(u).scheme in ("file", "data") for u in requested_urls(driver))
