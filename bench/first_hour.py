"""The first hour of a new user: how long from `make run` answering to a labeler's first comparison.

    python bench/first_hour.py [--keep]

Starts ``python -m config.embedded`` with the demo (ARBITER_DEMO=true, as ``make run`` does) in an
empty folder: no converted model cache, a fresh SQLite file, the file broker. Once the web server
answers, ``labeler1`` logs in with a session (the login form, as a browser does) and asks for the
next comparison once a second, reading the queue status (what the labeling page shows while it
waits) each time. ``first_comparison_s`` is the time from the web answering to the first
comparison served. Target (issue 12): <= 90 s on this 2-core machine.

Not measured yet: labeling about 50 comparisons and the quick round (``quick_round_s``, target <=
600 s): round presets do not exist yet; the result says so instead of a number.

Writes bench/results/first_hour.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, replace_section, utc_now  # noqa: E402
from scripts.e2e import Stack, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "first_hour.json"
DEMO_SLUG = "mt-bench-demo"
TARGET_FIRST_COMPARISON_S = 90


class Browser:
    """A session like a browser's: cookies, the login form, CSRF header on POST."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _csrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, username: str, password: str) -> None:
        self.request("GET", "/login/")
        form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": self._csrf()})
        status, _ = self.request("POST", "/login/", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
        if not any(c.name == "sessionid" for c in self.jar):
            raise RuntimeError(f"login as {username} failed ({status})")

    def post_json(self, path: str, body: dict):
        headers = {"Content-Type": "application/json", "X-CSRFToken": self._csrf()}
        status, payload = self.request("POST", path, json.dumps(body).encode(), headers)
        return status, (json.loads(payload) if payload else None)

    def get_json(self, path: str):
        status, payload = self.request("GET", path, headers={"Accept": "application/json"})
        return status, json.loads(payload)


def first_comparison(stack: Stack, timeout_s: float) -> dict:
    browser = Browser(stack.url)
    browser.login("labeler1", "arbiter-demo")
    started = time.monotonic()
    messages: list[tuple[float, str]] = []
    while time.monotonic() - started < timeout_s:
        stack.check_alive()
        status, body = browser.post_json(f"/api/v1/projects/{DEMO_SLUG}/next/", {})
        if status == 200:
            return {"seconds": time.monotonic() - started, "assignment": body["assignment"], "messages": messages}
        _, queue = browser.get_json(f"/api/v1/projects/{DEMO_SLUG}/queue/")
        if not messages or messages[-1][1] != queue["message"]:
            messages.append((round(time.monotonic() - started, 1), queue["message"]))
            print(f"  {messages[-1][0]:6.1f} s  {queue['message']}", flush=True)
        time.sleep(1.0)
    raise RuntimeError(f"no comparison within {timeout_s:.0f} s; the page said: {messages[-3:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-first-hour-"))
    stack = Stack(workdir, port=free_port(), model_cache=None)
    stack.env["ARBITER_DEMO"] = "true"  # as `make run`; Stack turns it off for the e2e script
    began = time.monotonic()
    try:
        stack.start()
        web_s = time.monotonic() - began
        print(f"web answering after {web_s:.1f} s (migrate, demo, four processes)", flush=True)
        first = first_comparison(stack, args.timeout)
        print(f"first comparison served {first['seconds']:.1f} s after the web answered", flush=True)
    except Exception:
        print(stack.log_tail(), file=sys.stderr)
        raise
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    out = {
        "benchmark": "first_hour", "date": utc_now(), "machine": machine(),
        "web_answering_s": round(web_s, 1),
        "first_comparison_s": round(first["seconds"], 1),
        "first_comparison_target_s": TARGET_FIRST_COMPARISON_S,
        "first_comparison_target_met": first["seconds"] <= TARGET_FIRST_COMPARISON_S,
        "queue_messages": first["messages"],
        "quick_round_s": None,
        "quick_round_note": "not measured: round presets (issue 12, part 3) are not built yet",
    }
    print(json.dumps(out, indent=2))
    if not args.no_write:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        met = "met" if out["first_comparison_target_met"] else "not met"
        replace_section(
            "first_hour", "First hour (`bench/first_hour.py`)",
            f"Run {out['date']} on {out['machine']}: `python -m config.embedded` with the demo in an empty folder "
            f"(no converted model cache). The web answered {out['web_answering_s']} s after the start; **labeler1 was "
            f"served the first comparison {out['first_comparison_s']} s after that** (target ≤ 90 s: **{met}**), from "
            "the demo's own first sampling pass (its first batch is two prompts). While waiting, the queue status "
            "said, in order: " + "; ".join(f"at {t} s \"{m}\"" for t, m in out["queue_messages"]) + ". "
            "The quick round is not measured yet (no round presets).",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
