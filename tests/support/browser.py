"""Headless Chromium for the browser tests (the report's pages, ``cmrbench data show``'s index).

Needs Debian's ``chromium`` and ``chromium-driver``; without them a test calling
`browser_or_skip` is skipped, unless ``CMRBENCH_REQUIRE_BROWSER=1`` makes it fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_SCHEMES = ("chrome", "devtools")  # the browser's own pages (chrome-untrusted, ...)
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def browser_or_skip() -> None:
    """Skip (or, with ``CMRBENCH_REQUIRE_BROWSER=1``, fail) when Chromium is not installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if not missing:
        return
    reason = (
        f"headless browser test needs {' and '.join(missing)} "
        f"(Debian packages chromium and chromium-driver)"
    )
    if os.environ.get("CMRBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; CMRBENCH_REQUIRE_BROWSER=1 makes this a failure")
    pytest.skip(reason)


def open_chromium(profile: Path) -> Any:
    """A headless Chromium WebDriver with no network (every host unresolvable), its console
    and network logs kept; ``profile`` is a fresh user-data folder. Quit it when done."""
    browser_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.set_capability("unhandledPromptBehavior", "ignore")
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    browser.set_page_load_timeout(60)
    return browser


def alert_text(driver) -> str | None:
    """The text of an open alert (accepting it), or None."""
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return None
    text = alert.text
    alert.accept()
    return text


def requested_urls(driver) -> list[str]:
    """URLs requested since the last call (DevTools network events) by documents we load.

    Requests made by the browser's own pages (documents at ``chrome://``,
    ``chrome-untrusted://`` or ``devtools://``, such as the new-tab page a fresh profile is
    still drawing when the first test page opens) are left out: a page of ours cannot load
    them, and they say nothing about what our pages fetch."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.requestWillBeSent":
            continue
        params = message["params"]
        if not urlparse(params.get("documentURL", "")).scheme.startswith(BROWSER_SCHEMES):
            urls.append(params["request"]["url"])
    return urls


def severe_messages(driver) -> list[str]:
    """The browser console's errors since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
