"""``cmrbench data show``: one montage of what the network sees per study, and an index page
that a browser renders from file:// (headless Chromium, as tests/test_browser.py)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from cmrbench.cli import main
from cmrbench.datasets import create_dataset
from cmrbench.datasets.show import CLASS_COLOURS
from cmrbench.datasets.subject import LV, MYO
from support.browser import alert_text, open_chromium, requested_urls, severe_messages
from support.real_data import SUNNYBROOK, needs_sunnybrook


@pytest.fixture(scope="module")
def shown(tmp_path_factory) -> Path:
    """``cmrbench data show`` on the four Sunnybrook studies at the sunnybrook grid's geometry."""
    if not (SUNNYBROOK / "link.csv").is_file():
        pytest.skip(f"Sunnybrook studies not found in {SUNNYBROOK}")
    out = tmp_path_factory.mktemp("show")
    result = CliRunner().invoke(
        main,
        [
            "data",
            "show",
            "--dataset",
            "sunnybrook",
            "--root",
            str(SUNNYBROOK),
            "--grid",
            "sunnybrook",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"Index: {(out / 'index.html').resolve()}" in result.output
    return out


def _has_colour(picture: np.ndarray, hex_colour: str) -> bool:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return bool((np.abs(picture[..., :3] - rgb).max(axis=-1) < 0.1).any())


@needs_sunnybrook
def test_data_show_writes_one_montage_per_study_with_its_slices_and_outlines(shown):
    dataset = create_dataset("sunnybrook", SUNNYBROOK)
    pictures = sorted(shown.glob("*.png"))
    assert len(pictures) == len(dataset.subject_ids()) == 4
    for path, subject_id in zip(pictures, dataset.subject_ids()):
        picture = matplotlib.image.imread(path)
        subject = dataset.load(subject_id)
        # one 64-px tile (the grid's size) of 1.3 in at 100 dpi per slice, ED and ES rows
        assert picture.shape[1] == round(1.3 * 100 * subject.shape[1])
        assert picture.shape[0] == round((1.3 * 2 + 0.6) * 100)
        # Sunnybrook outlines the LV and (at ED) the myocardium, never the RV
        assert all(_has_colour(picture, CLASS_COLOURS[c][0]) for c in (LV, MYO))


@needs_sunnybrook
def test_the_index_names_every_study_its_layout_and_links_its_montage(shown):
    page = (shown / "index.html").read_text(encoding="utf-8")
    for n, subject_id in enumerate(create_dataset("sunnybrook", SUNNYBROOK).subject_ids()):
        assert f'<img src="subject-{n:04d}.png"' in page and f">{subject_id}</h2>" in page
    # SCD0000101 is stored turned (rows R, columns I) and laid out like the other three
    assert "stored RIL → network ILL" in page and "stored ILA → network ILA" in page
    assert "64 × 64 at 2.5 mm" in page and "http" not in page


def test_an_unknown_subject_fails_naming_the_datasets_subjects_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "data",
            "show",
            "--dataset",
            "phantom",
            "--option",
            "n_train=2",
            "--option",
            "n_val=1",
            "--option",
            "n_test=1",
            "--subject",
            "phantom-0009",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1
    assert "no subject 'phantom-0009'; its subjects are phantom-0000, phantom-0001" in result.output
    assert not (tmp_path / "o").exists()


@needs_sunnybrook
@pytest.mark.browser
def test_a_browser_renders_the_index_from_file_with_every_montage(shown, tmp_path):
    driver = open_chromium(tmp_path / "profile")
    try:
        requested_urls(driver)
        driver.get((shown / "index.html").as_uri())
        assert alert_text(driver) is None and severe_messages(driver) == []
        requested = requested_urls(driver)
        assert all(urlparse(url).scheme in ("file", "data") for url in requested), requested
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src])"
        )
        assert len(sizes) == 4
        for complete, width, source in sizes:
            assert complete and width > 0, source
            assert Path(unquote(urlparse(source).path)).parent == shown.resolve()
    finally:
        driver.quit()
