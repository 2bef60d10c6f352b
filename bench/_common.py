"""What every benchmark shares: where results go, how the machine is named, a scratch database."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def replace_section(name: str, title: str, body: str) -> None:
    """Put ``body`` between the ``<!-- name:start/end -->`` markers of docs/benchmarks.md
    (appending a titled section the first time)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = DOC.read_text()
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{section}\n"
    DOC.write_text(text)


def recreate_database(admin_url: str, name: str) -> str:
    """Drop and create a scratch PostgreSQL database; returns its URL."""
    import psycopg2

    url = urlparse(admin_url)
    conn = psycopg2.connect(host=url.hostname, port=url.port or 5432, user=url.username, dbname=url.path.lstrip("/"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return url._replace(path=f"/{name}").geturl()


def publish(results: Path, result: dict, write_doc, *, write: bool) -> int:
    """Write a benchmark's figures (``bench/results/<name>.json``) and its docs section, unless
    the run was asked not to (``--no-write``); the exit status of its ``main``."""
    if write:
        results.write_text(json.dumps(result, indent=2) + "\n")
        write_doc(result)
    return 0
