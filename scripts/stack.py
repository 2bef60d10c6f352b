"""A stack of Arbiter on real processes, driven over HTTP: what ``make e2e``, the first-hour
browser test and ``bench/first_hour.py`` start.

``Stack`` runs ``python -m config.embedded`` (web, ``default`` worker, ``gpu`` worker, beat;
SQLite and the file broker) in its own process group, with its own var and artifacts folders;
``Client`` is a tiny JSON client with token auth. This file imports no Django.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
#: Server settings the stack must not inherit: it runs the embedded default whatever the caller
#: (CI points DATABASE_URL at PostgreSQL and the broker at Redis).
SERVER_VARS = ("DATABASE_URL", "ARBITER_MODE", "ARBITER_DEMO", "ARBITER_VAR_DIR", "ARTIFACTS_DIR", "SECRET_KEY",
               "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")


class StackError(RuntimeError):
    """The stack, or a request to it, did not do what was expected; the message says what."""


# --- HTTP ------------------------------------------------------------------------------------------


class Client:
    """A tiny JSON client over urllib with ``Authorization: Token``."""

    def __init__(self, base: str, token: str | None = None):
        self.base, self.token = base.rstrip("/"), token

    def request(self, method: str, path: str, body=None, *, headers: dict | None = None, raw: bytes | None = None,
                expect: tuple[int, ...] = (200,)) -> tuple[int, dict, object]:
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as response:
                status, head, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, head, payload = exc.code, dict(exc.headers), exc.read()
        if status not in expect:
            raise StackError(f"{method} {path}: HTTP {status}, expected {expect}: {payload[:1000]!r}")
        content_type = head.get("Content-Type", "")
        if payload and content_type.startswith("application/json"):
            return status, head, json.loads(payload)
        return status, head, payload

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)[2]

    def post(self, path: str, body=None, **kw):
        return self.request("POST", path, body if body is not None else {}, **kw)[2]

    def all_pages(self, path: str) -> list[dict]:
        """Every row of a paginated DRF listing (or the list itself when it is not paginated)."""
        rows, page = [], self.get(path)
        while True:
            if isinstance(page, list):
                return page
            rows += page["results"]
            if not page.get("next"):
                return rows
            page = self.get(page["next"][len(self.base):])


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wait_for(what: str, predicate: Callable, timeout_s: float, interval_s: float = 1.0, stack=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if stack is not None:
            stack.check_alive()
        time.sleep(interval_s)
    raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# --- the stack -------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Users, the project and API tokens: there is no API for these (admins use the Django admin), so
# one manage.py step makes them with the app's own services.
SETUP_CODE = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from annotation.services import membership_set, project_create
spec = json.loads({spec!r})
project = project_create(name=spec["name"], slug=spec["slug"], description=spec["description"])
tokens = {{}}
for username, role in spec["users"]:
    user = get_user_model().objects.create_user(username, f"{{username}}@e2e.invalid")
    user.set_unusable_password()
    user.is_staff = user.is_superuser = role == "admin"
    user.save()
    membership_set(project=project, user=user, role=role)
    tokens[username] = Token.objects.create(user=user).key
print("TOKENS " + json.dumps(tokens))
"""


class Stack:
    """``python -m config.embedded`` in its own process group, with its own var and artifacts."""

    def __init__(self, workdir: Path, *, port: int, model_cache: Path | None):
        self.workdir, self.port = workdir, port
        self.var, self.artifacts = workdir / "var", workdir / "artifacts"
        self.log_path = workdir / "stack.log"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        if model_cache is not None:
            # The SmolLM2 GGUF is converted once into ARTIFACTS_DIR/models; share that cache
            # instead of converting again for every fresh stack.
            model_cache.mkdir(parents=True, exist_ok=True)
            (self.artifacts / "models").symlink_to(model_cache.resolve(), target_is_directory=True)
        self.env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS and not k.startswith("CELERY_")}
        self.env.update(
            ARBITER_VAR_DIR=str(self.var), ARTIFACTS_DIR=str(self.artifacts), ARBITER_DEMO="false",
            PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        )
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def manage(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise StackError(f"manage.py {args[0]} failed ({done.returncode}): {done.stderr[-3000:]}")
        return done.stdout

    def create_project(self, spec: dict) -> dict[str, str]:
        """The project and its users (``spec["users"]``: (name, role) pairs), each with an API
        token; returns name -> token."""
        output = self.manage("shell", "-c", SETUP_CODE.format(spec=json.dumps(spec)))
        return json.loads(next(line for line in output.splitlines() if line.startswith("TOKENS "))[7:])

    def start(self, timeout_s: float = 300) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "config.embedded", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for("the web server", lambda: b"Arbiter is running at" in self.log_path.read_bytes(), timeout_s, 0.5, self)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"the stack exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM the supervisor (it stops its four processes), then kill the group if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group (a stuck child)
        except ProcessLookupError:
            pass
        self.proc.wait()
        return self.proc.returncode

    def counts(self) -> dict[str, int]:
        """What the stack's database holds now (read directly: the truth the API reports on)."""
        db = sqlite3.connect(self.var / "arbiter.sqlite3", timeout=30)
        try:
            one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
            return {
                "prompts": one("SELECT COUNT(*) FROM annotation_prompt"),
                "responses": one("SELECT COUNT(*) FROM annotation_response WHERE source = 'model'"),
                "comparisons": one("SELECT COUNT(*) FROM annotation_comparison"),
                "judgments": one("SELECT COUNT(*) FROM annotation_judgment"),
                "edits": one("SELECT COUNT(*) FROM annotation_response WHERE source = 'human_edit'"),
                "members": one("SELECT COUNT(*) FROM modeling_committeemember WHERE is_active"),
            }
        finally:
            db.close()

    def responses_by_member(self) -> dict[str, int]:
        db = sqlite3.connect(self.var / "arbiter.sqlite3", timeout=30)
        try:
            rows = db.execute(
                "SELECT m.name, COUNT(*) FROM annotation_response r JOIN modeling_committeemember m ON m.id = r.member_id"
                " GROUP BY m.name ORDER BY m.name"
            ).fetchall()
        finally:
            db.close()
        return dict(rows)
