"""`make run`'s supervisor brings up web, workers and beat on SQLite and a file broker."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.processes import ROOT, children, cmdline, free_port, maps, wait_until

pytestmark = pytest.mark.slow

SERVER_VARS = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "ARBITER_MODE")


def test_the_embedded_stack_serves_pages_runs_tasks_and_stops_cleanly(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
    env.update({"ARBITER_VAR_DIR": str(tmp_path / "var"), "ARTIFACTS_DIR": str(tmp_path / "artifacts")})
    log_path = tmp_path / "embedded.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "config.embedded", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        assert wait_until(lambda: b"Arbiter is running at" in log_path.read_bytes() or proc.poll() is not None, 180)
        output = log_path.read_text()
        assert f"http://127.0.0.1:{port}/" in output, output[-3000:]
        assert "password 'arbiter-demo'" in output

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=10) as response:
            assert response.status == 200 and b"Log in to Arbiter" in response.read()

        # a task sent from another process reaches the stack's worker through the file broker
        send = subprocess.run(
            [sys.executable, "-c", "import django, json; django.setup(); from modeling.tasks import ping;"
             " print(json.dumps(ping.delay().get(timeout=60)))"],
            cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
            capture_output=True, text=True, timeout=120,
        )
        assert send.returncode == 0, send.stderr
        assert json.loads(send.stdout.strip().splitlines()[-1])["queue"] == "default"

        # five supervised processes; the web one has no torch mapped into it
        kids = {pid: cmdline(pid) for pid in children(proc.pid)}
        assert len(kids) == 5, kids
        web = [pid for pid, cmd in kids.items() if "runserver" in cmd]
        assert len(web) == 1 and "libtorch" not in maps(web[0])
        assert any("beat" in cmd for cmd in kids.values())
        assert sum("worker" in cmd for cmd in kids.values()) == 3
        assert any("-Q live" in cmd and "-P threads" in cmd for cmd in kids.values())
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    # the demo landed in the stack's own SQLite file
    assert (tmp_path / "var" / "arbiter.sqlite3").exists()
