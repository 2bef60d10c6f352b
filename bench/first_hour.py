"""The first hour of a new user: `make run`, a labeler's first comparison, labels, a quick round.

    python bench/first_hour.py [--keep]

Starts ``python -m config.embedded`` with the demo (ARBITER_DEMO=true, as ``make run`` does) in an
empty folder: no converted model cache, a fresh SQLite file, the file broker. Once the web server
answers, ``labeler1`` logs in with a session (the login form, as a browser does) and asks for the
next comparison once a second, reading the queue status (what the labeling page shows while it
waits) each time. ``first_comparison_s`` is the time from the web answering to the first
comparison served (target, issue 12: <= 90 s on this 2-core machine).

Then, as people would: labeler1-3 label every comparison of the demo's first pass through the
labeling API (submit with ``next: true``, as the page does; each prefers the longer answer, with
strengths from a fixed cycle), and ``admin`` starts a round with the **quick** preset on the
rounds API and follows its progress until it ends. ``quick_round_s`` is from the start request
to the round's end (target <= 600 s).

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
from scripts.stack import Stack, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "first_hour.json"
DEMO_SLUG = "mt-bench-demo"
TARGET_FIRST_COMPARISON_S = 90
TARGET_QUICK_ROUND_S = 600
STRENGTHS = ("significantly_better", "better", "slightly_better", "better", "negligibly_better")


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


def _round_summary(round_: dict) -> str:
    metrics = round_.get("metrics") or {}
    rm, dpo, evaluation = metrics.get("training_rm", {}), metrics.get("training_dpo", {}), metrics.get("evaluating", {})
    files = metrics.get("snapshot", {}).get("files", {})
    return (f"RM {rm.get('steps')} steps on {files.get('rm', {}).get('rows')} pairs, held-out accuracy "
            f"{rm.get('heldout', {}).get('accuracy')} on {files.get('heldout', {}).get('rows')} pairs; DPO {dpo.get('steps')} steps on "
            f"{files.get('dpo', {}).get('rows')} pairs; head-to-head win rate {evaluation.get('win_rate')} on {evaluation.get('prompts')} prompts")


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


def wait_for_first_pass(browser: Browser, timeout_s: float) -> dict:
    """The demo's first sampling pass, once it has ended (its comparisons are all released)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        _, runs = browser.get_json(f"/api/v1/projects/{DEMO_SLUG}/sampling/")
        if runs and runs[0]["state"] in ("succeeded", "failed"):
            return runs[0]
        time.sleep(2.0)
    raise RuntimeError("the demo's first sampling pass did not end")


def label_everything(base: str, labeler: str) -> int:
    """Label every comparison open to ``labeler``, one request per judgment (submit with next)."""
    browser = Browser(base)
    browser.login(labeler, "arbiter-demo")
    status, task = browser.post_json(f"/api/v1/projects/{DEMO_SLUG}/next/", {})
    done = 0
    while status == 200 and task:
        longer = "left" if len(task["left"]["html"]) >= len(task["right"]["html"]) else "right"
        body = {"chosen": longer, "strength": STRENGTHS[done % len(STRENGTHS)], "next": True}
        status, answer = browser.post_json(f"/api/v1/assignments/{task['assignment']}/submit/", body)
        if status not in (200, 201):
            raise RuntimeError(f"{labeler}'s submit answered {status}: {answer}")
        done += 1
        task, status = answer.get("next"), 200
    return done


def quick_round(base: str, timeout_s: float) -> dict:
    admin = Browser(base)
    admin.login("admin", "arbiter-demo")
    started = time.monotonic()
    status, round_ = admin.post_json(f"/api/v1/projects/{DEMO_SLUG}/rounds/", {"preset": "quick"})
    if status != 202:
        raise RuntimeError(f"starting the round answered {status}: {round_}")
    shown = None
    while time.monotonic() - started < timeout_s:
        _, now = admin.get_json(f"/api/v1/rounds/{round_['id']}/")
        p = now.get("progress") or {}
        line = f"{now['state']}" + (f" · {p.get('phase')} {p.get('done')}/{p.get('total')} {p.get('unit')}" if p.get("total") else "")
        if p.get("loss") is not None:
            line += f" · loss {p['loss']}"
        if p.get("eta_s") is not None:
            line += f" · about {p['eta_s']:.0f} s left"
        if line != shown:
            shown = line
            print(f"  {time.monotonic() - started:6.1f} s  {line}", flush=True)
        if now["state"] in ("succeeded", "failed", "cancelled"):
            return {"seconds": time.monotonic() - started, "round": now}
        time.sleep(2.0)
    raise RuntimeError(f"the quick round did not end within {timeout_s:.0f} s")


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
        lead = Browser(stack.url)
        lead.login("lead", "arbiter-demo")
        sampling = wait_for_first_pass(lead, args.timeout)
        print(f"first pass {sampling['state']}: {sampling['pairs_created']} comparisons in {sampling['elapsed_s']} s", flush=True)
        labeled_at = time.monotonic()
        judgments = {name: label_everything(stack.url, name) for name in ("labeler1", "labeler2", "labeler3")}
        labeling_s = time.monotonic() - labeled_at
        print(f"labeled: {judgments} in {labeling_s:.1f} s", flush=True)
        quick = quick_round(stack.url, args.timeout)
        print(f"quick round {quick['round']['state']} in {quick['seconds']:.1f} s", flush=True)
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
        "first_pass": {k: sampling[k] for k in ("state", "prompts_done", "pairs_created", "elapsed_s")},
        "judgments": judgments, "labeling_s": round(labeling_s, 1),
        "quick_round_state": quick["round"]["state"],
        "quick_round_s": round(quick["seconds"], 1),
        "quick_round_target_s": TARGET_QUICK_ROUND_S,
        "quick_round_target_met": quick["round"]["state"] == "succeeded" and quick["seconds"] <= TARGET_QUICK_ROUND_S,
        "quick_round_steps_s": quick["round"]["step_timings"],
        "quick_round_metrics": _round_summary(quick["round"]),
    }
    print(json.dumps(out, indent=2))
    if not args.no_write:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        met = "met" if out["first_comparison_target_met"] else "not met"
        quick_met = "met" if out["quick_round_target_met"] else "not met"
        m = out["quick_round_metrics"]
        replace_section(
            "first_hour", "First hour (`bench/first_hour.py`)",
            f"Run {out['date']} on {out['machine']}: `python -m config.embedded` with the demo in an empty folder "
            f"(no converted model cache). The web answered {out['web_answering_s']} s after the start; **labeler1 was "
            f"served the first comparison {out['first_comparison_s']} s after that** (target ≤ 90 s: **{met}**), from "
            "the demo's own first sampling pass (its first batch is one prompt). While waiting, the queue status "
            "said, in order: " + "; ".join(f"at {t} s \"{msg}\"" for t, msg in out["queue_messages"]) + ". "
            f"The pass then finished ({out['first_pass']['pairs_created']} comparisons in {out['first_pass']['elapsed_s']} s); "
            f"labeler1-3 labeled every one through the API ({sum(out['judgments'].values())} judgments in {out['labeling_s']} s) "
            f"and admin started a **quick** round: {out['quick_round_state']} in **{out['quick_round_s']} s** "
            f"(target ≤ 600 s: **{quick_met}**); steps (s): {out['quick_round_steps_s']}; {m}.",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
