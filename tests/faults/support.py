"""Real processes for the fault tests: a gunicorn web process, a private redis-server, a model
endpoint that holds one request so a worker can be killed at a known point, and the counts
every fault test ends on."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

from annotation.models import Assignment, AssignmentState, Comparison, Judgment, Response
from tests.modeling.chat_server import ChatServer
from tests.processes import ROOT, database_url_for_workers, free_port, stop, wait_until


def counts() -> dict[str, int]:
    """The rows a fault could lose or duplicate."""
    return {
        "judgments": Judgment.objects.count(),
        "responses": Response.objects.count(),
        "comparisons": Comparison.objects.count(),
        "submitted_assignments": Assignment.objects.filter(state=AssignmentState.SUBMITTED).count(),
    }


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group: no shutdown handler runs, nothing is acknowledged or restored."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)


# --- web -------------------------------------------------------------------------------------


class WebServer:
    """gunicorn serving config.wsgi against the test database, like the compose ``web`` service."""

    def __init__(self, *, tmp_path: Path, env: dict | None = None, workers: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        self.env = {
            "DATABASE_URL": database_url_for_workers(),
            "DATABASE_CONN_MAX_AGE": "60",  # persistent connections, as in production
            **(env or {}),
        }
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> WebServer:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--timeout", "60", "--graceful-timeout", "5",
             "--access-logfile", "-", "--error-logfile", "-"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

        def answers():
            try:
                return requests.get(f"{self.url}/login/", timeout=2).status_code == 200
            except requests.Timeout:  # a worker still importing the app on a busy machine: ask again
                return False
            except requests.ConnectionError:
                return self.proc.poll() is not None  # died: stop waiting, fail below

        wait_until(answers, 60, 0.2)
        assert self.proc.poll() is None, self.log()
        return self

    def __exit__(self, *exc):
        stop(self.proc, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def http_client(*, token: str | None = None, sessionid: str | None = None) -> requests.Session:
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Token {token}"
    if sessionid:
        session.cookies.set("sessionid", sessionid)
    return session


# --- redis -------------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server on a free port, never the shared one: it can be killed and restarted."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.dir / f"redis-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        assert wait_until(self.answers, 20, 0.1), (self.dir / f"redis-{self.starts}.log").read_text()

    def answers(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        kill(self.proc)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            kill(self.proc)


# --- PostgreSQL --------------------------------------------------------------------------------


def backends_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # pg_stat_activity is cached per transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def terminate_other_backends() -> int:
    """Drop every connection to the test database but this one (never another database's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


# --- Celery ------------------------------------------------------------------------------------


def start_beat(tmp_path: Path, env: dict) -> subprocess.Popen:
    """A real ``celery beat`` on CELERY_BEAT_SCHEDULE, its schedule file in ``tmp_path``."""
    log = open(tmp_path / "beat.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
         "--schedule", str(tmp_path / "celerybeat-schedule")],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def broker_is_redis() -> bool:
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))


def redeliver_unacked(*, task: str, args: tuple) -> int:
    """What Redis does for a message a dead worker never acknowledged once the visibility
    timeout has passed: put it back on its queue. Done now, and only for this task's message
    (the shared broker may hold other tests' messages)."""
    from config.celery import app

    restored = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        for tag, raw in client.hgetall(channel.unacked_key).items():
            message = json.loads(raw)[0]
            headers = message.get("headers") or {}
            if headers.get("task") == task and headers.get("argsrepr") == repr(args):
                channel.qos.restore_by_tag(tag, client)
                restored += 1
    return restored


# --- a model endpoint that holds one request -----------------------------------------------------


@contextmanager
def endpoint_holding_request(number: int):
    """An OpenAI-compatible endpoint (tests/modeling/chat_server.py) that answers at once, except
    request ``number``, which it holds until ``server.release`` is set: a worker sampling from it
    is then known to be mid-run, with exactly ``number - 1`` answers behind it."""
    with ChatServer() as server:
        server.calls = 0
        server.held = threading.Event()
        server.release = threading.Event()
        ticket = itertools.count(1)
        base = server.httpd.RequestHandlerClass

        class Holding(base):
            def do_POST(self):
                n = next(ticket)
                server.calls = max(server.calls, n)
                if n == number:
                    server.held.set()
                    server.release.wait(120)
                try:
                    super().do_POST()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker that asked was killed meanwhile

        server.httpd.RequestHandlerClass = Holding
        try:
            yield server
        finally:
            server.release.set()


def wait_for(predicate, timeout: float, what: str, log=lambda: "") -> None:
    started = time.monotonic()
    if not wait_until(predicate, timeout, 0.1):
        raise AssertionError(f"{what}: not within {timeout} s (waited {time.monotonic() - started:.0f} s)\n{log()}")
