"""Labeling load: N simulated labelers drive next + submit over HTTP against gunicorn and PostgreSQL.

    python bench/labeling_load.py [--levels 16,64,256] [--duration 20] [--think-ms 200]

Each simulated labeler loops: POST next, read for ``--think-ms``, POST submit (token auth, a
fresh idempotency key). Latency is measured per request at the client, from sending the request
to the last byte of the answer. Throughput is judgments confirmed per second of the measured
window (after a warm-up). Everything runs on this machine: the load generator (one asyncio
process with keep-alive connections), gunicorn and PostgreSQL share its cores.

Writes bench/results/labeling_load.json and the section between the labeling_load markers in
docs/benchmarks.md. Needs PostgreSQL at --database-admin (a scratch database is created there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, publish, recreate_database, replace_section, utc_now  # noqa: E402
from bench._load_generator import median_of, run_level  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "labeling_load.json"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="16,64,256")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--think-ms", type=float, default=200.0, help="time a simulated labeler reads before submitting")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes (3 measured best on 2 cores: docs/benchmarks.md)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (gthread: keep-alive)")
    parser.add_argument("--comparisons", type=int, default=6000, help="comparisons per level (k=3 each)")
    parser.add_argument("--database-admin", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database-name", default="arbiter_bench")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--protocols", default="submit+next,next-submit",
        help="submit+next: submit with next:true, as the labeling page does; next-submit: two requests per judgment",
    )
    parser.add_argument(
        "--repeats", type=int, default=3,
        help="runs per protocol and level, each on a fresh pool; the figures reported are their medians",
    )
    parser.add_argument("--cpu", action="store_true", help="also report CPU seconds per judgment of gunicorn, PostgreSQL and this client")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results files alone")
    return parser.parse_args()


# --- set-up ------------------------------------------------------------------------------------


def server_env(database_url: str, var_dir: str) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "600",
        "DEBUG": "false",
        "ARBITER_DEMO": "false",
        "ARBITER_VAR_DIR": var_dir,
        "LOG_LEVEL": "WARNING",
    }


def seed(levels: list[int], comparisons: int, protocols: list[str], repeats: int = 1) -> dict:
    """One project per level, protocol and repeat (each run starts from a full pool), labelers with tokens."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from annotation.models import Comparison, Membership, Project, Prompt, Response, ResponseSource, Role
    from annotation.rendering import comparison_rendering
    from annotation.services import prompt_content_hash
    from modeling.models import CommitteeMember, MemberKind

    members = [
        CommitteeMember.objects.create(name=f"bench-{i}", kind=MemberKind.LOCAL, model_path=f"/m/{i}") for i in (0, 1)
    ]
    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"labeler{i:03d}") for i in range(max(levels))])
    tokens = Token.objects.bulk_create([Token(user=u, key=uuid.uuid4().hex[:40]) for u in users])
    text_a = "Use `xs.reverse()` to reverse in place.\n\n```python\nxs = [1, 2, 3]\nxs.reverse()\n```\n" * 2
    text_b = "You can write `xs[::-1]`, which returns a reversed copy and leaves `xs` alone. " * 3
    projects = {}
    for level, protocol, repeat in ((level, protocol, r) for protocol in protocols for level in levels for r in range(repeats)):
        slug = f"bench-{level}-{protocol.replace('+', '-')}-{repeat}"
        project = Project.objects.create(name=f"bench {level} {protocol} #{repeat}", slug=slug, overlap_k=3, gold_rate=0)
        Membership.objects.bulk_create([Membership(project=project, user=u, role=Role.LABELER) for u in users[:level]])
        prompts = Prompt.objects.bulk_create(
            [
                Prompt(project=project, messages=m, content_hash=prompt_content_hash(messages=m))
                for m in ([{"role": "user", "content": f"How do I reverse list #{i} in Python?"}] for i in range(comparisons))
            ],
            batch_size=2000,
        )
        responses = Response.objects.bulk_create(
            [
                Response(prompt=p, source=ResponseSource.MODEL, member=members[j], text=(text_a, text_b)[j])
                for p in prompts
                for j in (0, 1)
            ],
            batch_size=4000,
        )
        # Rendered up front, as the sampler does when it creates a pair (modeling/services/sampling.py).
        Comparison.objects.bulk_create(
            [
                Comparison(
                    project=project, prompt=p, response_a=responses[2 * i], response_b=responses[2 * i + 1],
                    rendered=comparison_rendering(
                        messages=p.messages, responses=[(r.pk, r.text) for r in responses[2 * i : 2 * i + 2]]
                    ),
                )
                for i, p in enumerate(prompts)
            ],
            batch_size=2000,
        )
        projects[level, protocol, repeat] = project.slug
    return {"tokens": [t.key for t in tokens], "projects": projects}


def cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds so far of gunicorn's processes, PostgreSQL's and this client (Linux /proc)."""
    groups = {"gunicorn": 0.0, "postgres": 0.0, "client": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) == os.getpid():
            groups["client"] += seconds
        elif "gunicorn" in cmdline:
            groups["gunicorn"] += seconds
        elif cmdline.startswith("postgres"):
            groups["postgres"] += seconds
    return groups


def wait_for_server(port: int, proc: subprocess.Popen, timeout: float = 60):
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("gunicorn did not answer")


def write_doc(result: dict) -> None:
    rows = "\n".join(
        f"| {r['protocol']} | {r['labelers']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['judgments_per_s']} | {r['requests_per_s']} | {r['errors']} "
        f"| {' / '.join(str(x['p95_ms']) for x in r.get('runs', []))} | {' / '.join(str(x['judgments_per_s']) for x in r.get('runs', []))} |"
        for r in result["levels"]
    )
    cfg = result["config"]
    section = (
        f"Run {result['date']} on {result['machine']}: gunicorn {cfg['workers']} workers × {cfg['threads']} threads "
        f"(gthread) on PostgreSQL, token auth, k = 3, {cfg['think_ms']:.0f} ms think time per comparison, "
        f"{cfg['duration_s']:.0f} s measured per run after {cfg['warmup_s']:.0f} s warm-up; the load generator "
        f"runs on the same machine. Each figure is the median of {cfg.get('repeats', 1)} runs, each on a fresh pool "
        "of comparisons (all runs are in `bench/results/labeling_load.json`).\n\n"
        "Protocols: **submit+next** is what the labeling page does (`submit` with `next: true` returns the "
        "next comparison: one request per judgment); **next, submit** is two requests per judgment.\n\n"
        "| protocol | labelers | p50 ms | p95 ms | p99 ms | judgments/s | requests/s | errors | p95 ms of each run | judgments/s of each run |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"Target at N = 64: p95 ≤ 50 ms and ≥ 200 judgments/s with zero errors: **{'met' if result['target_met'] else 'not met'}** "
        f"with the page's protocol (p95 {result['n64_p95_ms']} ms, {result['n64_judgments_per_s']} judgments/s, "
        f"{result['errors']} errors in all levels); with two requests per judgment: p95 {result.get('n64_next_submit_p95_ms')} ms, "
        f"{result.get('n64_next_submit_judgments_per_s')} judgments/s."
        + (f"\n\nCPU per judgment at N = 64 ({result['cpu_note']}): {result['n64_cpu_ms_per_judgment']}." if result.get("n64_cpu_ms_per_judgment") else "")
    )
    replace_section("labeling_load", "Labeling load (`bench/labeling_load.py`)", section)


def main() -> int:
    args = parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    database_url = recreate_database(args.database_admin, args.database_name)
    var_dir = tempfile.mkdtemp(prefix="arbiter-bench-")
    env = server_env(database_url, var_dir)
    os.environ.update({k: v for k, v in env.items() if k not in os.environ or os.environ[k] != v})
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    protocols = args.protocols.split(",")
    t0 = time.perf_counter()
    seeded = seed(levels, args.comparisons, protocols, args.repeats)
    print(f"seeded {len(seeded['projects'])} projects × {args.comparisons} comparisons in {time.perf_counter() - t0:.1f} s", flush=True)

    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{args.port}",
         "--workers", str(args.workers), "--worker-class", "gthread", "--threads", str(args.threads),
         "--keep-alive", "30", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    try:
        wait_for_server(args.port, gunicorn)
        results = []
        for protocol in protocols:
            for n in levels:
                runs = []
                for repeat in range(args.repeats):
                    before = cpu_seconds() if args.cpu else None
                    run = asyncio.run(run_level(n, seeded["tokens"], seeded["projects"][n, protocol, repeat], args, protocol == "submit+next"))
                    if before is not None:
                        after = cpu_seconds()
                        total = run["judgments_total"] or 1
                        run["cpu_ms_per_judgment"] = {k: round((after[k] - before[k]) * 1000 / total, 2) for k in after}
                    runs.append(run)
                    print(
                        f"{protocol:>12} N={n:>4} #{repeat}: p50 {run['p50_ms']:>7} ms  p95 {run['p95_ms']:>7} ms  p99 {run['p99_ms']:>7} ms  "
                        f"{run['judgments_per_s']:>6} judgments/s  {run['requests_per_s']:>6} req/s  errors {run['errors']}"
                        + (f"  cpu ms/judgment {run['cpu_ms_per_judgment']}" if args.cpu else ""),
                        flush=True,
                    )
                level = median_of(runs)
                results.append(level)
                print(
                    f"{protocol:>12} N={n:>4} median of {len(runs)}: p95 {level['p95_ms']} ms, {level['judgments_per_s']} judgments/s, "
                    f"errors {level['errors']}",
                    flush=True,
                )
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)

    by_key = {(r["protocol"], r["labelers"]): r for r in results}
    n64 = by_key.get(("submit+next", 64), {})
    paired = by_key.get(("next, submit", 64), {})
    result = {
        "benchmark": "labeling_load",
        "date": utc_now(),
        "machine": machine(),
        "config": {
            "workers": args.workers, "threads": args.threads, "think_ms": args.think_ms, "duration_s": args.duration,
            "warmup_s": args.warmup, "comparisons_per_level": args.comparisons, "overlap_k": 3, "protocols": protocols,
            "repeats": args.repeats,
        },
        "levels": results,
        "n64_p95_ms": n64.get("p95_ms"),
        "n64_judgments_per_s": n64.get("judgments_per_s"),
        "n64_next_submit_p95_ms": paired.get("p95_ms"),
        "n64_next_submit_judgments_per_s": paired.get("judgments_per_s"),
        "errors": sum(r["errors"] for r in results),
    }
    if n64.get("cpu_ms_per_judgment"):
        result["n64_cpu_ms_per_judgment"] = n64["cpu_ms_per_judgment"]
        result["cpu_note"] = "user+system CPU of each group of processes over the whole level, warm-up included, per judgment submitted"
    result["target_met"] = bool(
        n64 and n64["p95_ms"] <= 50 and n64["judgments_per_s"] >= 200 and n64["errors"] == 0
    )
    print(json.dumps({k: result[k] for k in ("n64_p95_ms", "n64_judgments_per_s", "errors", "target_met")}))
    return publish(RESULTS, result, write_doc, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
