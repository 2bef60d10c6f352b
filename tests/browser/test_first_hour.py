"""The first minute of `make run`: a fresh demo stack (``python -m config.embedded`` in an empty
folder: SQLite, the file broker, real web, default and gpu workers and beat, SmolLM2 with no
converted-model cache) and a labeler in headless Chromium who opens the labeling page as soon as
the web answers. The page explains the wait and picks up the first comparison by itself.

The issue's target is 90 s from the web answering on a 2-core machine (measured by
bench/first_hour.py and recorded in docs/benchmarks.md); this test's own limit is looser, since CI
shares its cores with other jobs. The time it saw is printed and written to the test output."""

import json
import shutil
import time

import pytest

from scripts.stack import Stack, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TARGET_S = 90
LIMIT_S = 300


def test_a_labeler_gets_the_first_comparison_in_the_browser_soon_after_make_run(browser_page, output_dir, tmp_path):
    stack = Stack(tmp_path / "stack", port=free_port(), model_cache=None)
    stack.env["ARBITER_DEMO"] = "true"  # as `make run`
    page = browser_page
    try:
        stack.start()
        answered = time.monotonic()
        page.goto(f"{stack.url}/login/")
        page.fill("#id_username", "labeler1")
        page.fill("#id_password", "arbiter-demo")
        page.press("#id_password", "Enter")
        page.wait_for_url(f"{stack.url}/")
        page.goto(f"{stack.url}/p/mt-bench-demo/label/")
        # While the committee answers, the page says so (not "everything is labeled").
        page.wait_for_function(
            "!document.querySelector('#task').hidden"
            " || !document.querySelector('#empty-reason').textContent.startsWith('Looking')"
        )
        waiting = page.text_content("#empty-reason") if page.is_visible("#empty") else ""
        page.screenshot(path=str(output_dir / "first-hour-waiting.png"), full_page=True)
        page.wait_for_selector("#task:not([hidden])", timeout=LIMIT_S * 1000)
        seconds = time.monotonic() - answered
    except Exception:
        print(stack.log_tail())
        raise
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)
    page.screenshot(path=str(output_dir / "first-hour-first-comparison.png"), full_page=True)
    print(f"first comparison on the labeling page {seconds:.1f} s after the web answered (target {TARGET_S} s)")
    (output_dir / "first-hour-browser.json").write_text(json.dumps({"first_comparison_s": round(seconds, 1), "target_s": TARGET_S}))
    if waiting:
        assert "The committee is" in waiting and "Every open comparison" not in waiting, waiting
    assert page.is_visible("#verdict") and page.text_content("#response-left").strip()
    assert not page.js_errors
