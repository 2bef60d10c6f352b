"""The load generator of bench/labeling_load.py: simulated labelers over keep-alive HTTP/1.1
connections in one asyncio process, each looping next (or submit with ``next: true``), think,
submit; latency per request at the client, judgments per second over the measured window."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid


class Connection:
    """A minimal HTTP/1.1 keep-alive client: enough for JSON POSTs to our own server."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, token: str, body: dict) -> tuple[int, bytes]:
        payload = json.dumps(body).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Token {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n"
        ).encode() + payload
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(request)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("server closed the connection")
                status = int(status_line.split()[1])
                length, close = 0, False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "connection" and value.strip().lower() == "close":
                        close = True
                data = await self.reader.readexactly(length) if length else b""
                if close:
                    await self.close()
                return status, data
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def labeler(conn: Connection, token: str, slug: str, think_s: float, clock: dict, stats: dict, chained: bool):
    """One simulated labeler. ``chained``: what the labeling page does, ``submit`` with
    ``next: true`` (one request per judgment after the first); otherwise ``next`` then ``submit``."""
    next_path = f"/api/v1/projects/{slug}/next/"
    assignment = None
    while not clock["stop"]:
        try:
            if assignment is None:
                t0 = time.perf_counter()
                status, body = await conn.post(next_path, token, {})
                t1 = time.perf_counter()
                if clock["measuring"]:
                    stats["latencies"].append(t1 - t0)
                    stats["next"].append(t1 - t0)
                if status == 204:
                    stats["empty"] += 1
                    await asyncio.sleep(think_s)
                    continue
                if status != 200:
                    stats["errors"].append(f"next {status} {body[:120]!r}")
                    continue
                assignment = json.loads(body)["assignment"]
            await asyncio.sleep(think_s)
            verdict = {"chosen": "left", "strength": "better", "edit": None, "idempotency_key": uuid.uuid4().hex, "next": chained}
            t2 = time.perf_counter()
            status, body = await conn.post(f"/api/v1/assignments/{assignment}/submit/", token, verdict)
            t3 = time.perf_counter()
            stats["judgments_total"] += status == 201
            if clock["measuring"]:
                stats["latencies"].append(t3 - t2)
                stats["submit"].append(t3 - t2)
                if status == 201:
                    stats["judgments"] += 1
            if status != 201:
                stats["errors"].append(f"submit {status} {body[:120]!r}")
                assignment = None
                continue
            following = json.loads(body).get("next") if chained else None
            assignment = following["assignment"] if following else None
        except Exception as exc:  # counted: the benchmark's answer includes every failure
            stats["errors"].append(repr(exc))
            assignment = None
            await asyncio.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run_level(n: int, tokens: list[str], slug: str, args, chained: bool) -> dict:
    clock = {"stop": False, "measuring": False}
    stats = {"latencies": [], "next": [], "submit": [], "errors": [], "judgments": 0, "judgments_total": 0, "empty": 0}
    conns = [Connection("127.0.0.1", args.port) for _ in range(n)]
    tasks = [
        asyncio.create_task(labeler(conns[i], tokens[i], slug, args.think_ms / 1000, clock, stats, chained)) for i in range(n)
    ]
    await asyncio.sleep(args.warmup)
    stats["errors"].clear()
    clock["measuring"] = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    clock["measuring"] = False
    elapsed = time.perf_counter() - started
    clock["stop"] = True
    await asyncio.gather(*tasks)
    for conn in conns:
        await conn.close()
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    return {
        "protocol": "submit+next" if chained else "next, submit",
        "labelers": n,
        "requests": len(stats["latencies"]),
        "judgments": stats["judgments"],
        "judgments_total": stats["judgments_total"],
        "judgments_per_s": round(stats["judgments"] / elapsed, 1),
        "requests_per_s": round(len(stats["latencies"]) / elapsed, 1),
        "p50_ms": ms(percentile(stats["latencies"], 50)),
        "p95_ms": ms(percentile(stats["latencies"], 95)),
        "p99_ms": ms(percentile(stats["latencies"], 99)),
        "next_p95_ms": ms(percentile(stats["next"], 95)),
        "submit_p95_ms": ms(percentile(stats["submit"], 95)),
        "median_ms": ms(statistics.median(stats["latencies"])) if stats["latencies"] else None,
        "empty_pool_answers": stats["empty"],
        "errors": len(stats["errors"]),
        "error_samples": stats["errors"][:5],
    }


def median_of(runs: list[dict]) -> dict:
    """One level's figures: the median of each over its runs (errors: the sum), runs kept."""
    keys = ("p50_ms", "p95_ms", "p99_ms", "judgments_per_s", "requests_per_s", "next_p95_ms", "submit_p95_ms")
    level = {"protocol": runs[0]["protocol"], "labelers": runs[0]["labelers"]}
    for key in keys:
        values = [r[key] for r in runs if r[key] == r[key]]  # NaN (no next requests) left out
        level[key] = round(statistics.median(values), 2) if values else None
    level["errors"] = sum(r["errors"] for r in runs)
    if runs[0].get("cpu_ms_per_judgment"):
        level["cpu_ms_per_judgment"] = {
            k: round(statistics.median(r["cpu_ms_per_judgment"][k] for r in runs), 2) for k in runs[0]["cpu_ms_per_judgment"]
        }
    level["runs"] = runs
    return level
