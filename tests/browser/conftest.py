import os
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def browser_page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in the test thread; the ORM calls the test makes
    # between page actions are still synchronous, so Django's async-safety guard is lifted for
    # these tests only (and never leaks into subprocesses of other tests).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.js_errors = errors
        yield page
        browser.close()


@pytest.fixture
def output_dir(tmp_path) -> Path:
    """Where screenshots go: $ARBITER_TEST_OUTPUT in CI (kept as artifacts), else the test's tmp dir."""
    path = Path(os.environ.get("ARBITER_TEST_OUTPUT") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path
