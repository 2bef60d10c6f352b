"""Run the whole app on one machine with nothing but Python: ``python -m config.embedded``.

Migrates, loads the demo on first start, then supervises five real processes: the web server,
a ``default`` worker, a ``gpu`` worker (one task at a time), a ``live`` worker (live dialogues)
and beat. SQLite and kombu's
filesystem transport mean no server to install. If any process dies, all are stopped and the
exit code says so; Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _processes(host: str, port: int) -> dict[str, list[str]]:
    py = sys.executable
    celery = [py, "-m", "celery", "-A", "config"]
    return {
        "web": [py, "manage.py", "runserver", f"{host}:{port}", "--noreload"],
        "worker": celery + ["worker", "-Q", "default", "-c", "2", "-n", "default@%h", "--loglevel", "INFO"],
        # One task at a time, in a long-lived child, so a loaded model is reused across tasks.
        "gpu-worker": celery + ["worker", "-Q", "gpu", "-c", "1", "-n", "gpu@%h", "--loglevel", "INFO"],
        # Live dialogues: a few turns at once in threads of one process that keeps the models
        # loaded, apart from the gpu worker, so a round in training never holds a labeler up.
        "live-worker": celery + ["worker", "-Q", "live", "-P", "threads", "-c", "4", "-n", "live@%h", "--loglevel", "INFO"],
        "beat": celery + ["beat", "--loglevel", "INFO"],
    }


def _wait_for_http(url: str, procs: dict[str, subprocess.Popen], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if procs["web"].poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("ARBITER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ARBITER_PORT", "8000")))
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _manage("check")
    _manage("migrate", "--noinput")
    demo = os.environ.get("ARBITER_DEMO", "true").lower() in {"1", "true", "yes", "on"}
    if demo:
        _manage("load_demo")

    procs: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in _processes(args.host, args.port).items():
        procs[name] = subprocess.Popen(command, cwd=BASE_DIR)

    url = f"http://{args.host}:{args.port}/"
    exit_code = 0
    if _wait_for_http(url + "login/", procs):
        print(
            f"\n  Arbiter is running at {url}\n"
            + ("  Log in as admin, lead or labeler1-3 with password 'arbiter-demo'.\n" if demo else "")
            + "  Web, worker (default), gpu-worker, live-worker and beat are up. Ctrl-C stops them all.\n",
            flush=True,
        )
    else:
        print(f"The web server did not answer at {url}login/", file=sys.stderr)
        stopping, exit_code = True, 1

    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping the others.", file=sys.stderr)
                stopping, exit_code = True, 1
                break
        time.sleep(0.5)

    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 20
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
