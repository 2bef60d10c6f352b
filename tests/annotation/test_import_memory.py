"""An import's memory does not grow with a hostile file: each file is imported by a fresh process
(the import service, on the test database), which reports its own peak RSS growth.

The bound is 150 MB above the process's start; what was measured is in docs/reliability.md.
"""

import json
import os
import subprocess
import sys
import zlib

import pytest

from annotation.models import Prompt
from tests.factories import ProjectFactory
from tests.processes import ROOT, database_url_for_workers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_GROWTH_MB = 150

IMPORT_AND_MEASURE = """
import json, resource, sys, time
import django
django.setup()
from annotation.importers import ImportValidationError
from annotation.models import Project, Prompt
from annotation.services.uploads import import_file

path, name, format, slug = sys.argv[1:5]
project = Project.objects.get(slug=slug)
peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start, started = peak_mb(), time.perf_counter()
try:
    with open(path, "rb") as stream:
        import_file(project=project, file=stream, name=name, format=format)
    outcome = "imported"
except ImportValidationError as exc:
    outcome = str(exc)
print(json.dumps({"growth_mb": peak_mb() - start, "seconds": time.perf_counter() - started, "outcome": outcome}))
"""


def gzip_bomb(path, unit: bytes, size: int = 2**30):
    """``size`` bytes of ``unit`` repeated, gzip-compressed as it is generated (~1-2 MB on disk)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = unit * (2**20 // len(unit))
    with open(path, "wb") as out:
        for _ in range(size // len(block) + 1):
            out.write(packer.compress(block))
        out.write(packer.flush())
    return path


def import_in_a_fresh_process(path, name: str, format: str) -> dict:
    project = ProjectFactory()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url_for_workers()}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_MEASURE, str(path), name, format, project.slug],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name}: peak RSS +{report['growth_mb']:.1f} MB in {report['seconds']:.1f} s: {report['outcome'][:120]}")  # shown with -s
    assert not Prompt.objects.filter(project=project).exists()  # refused whole
    return report


@pytest.mark.parametrize(
    ("unit", "refusal"),
    [
        (b"\0", "larger than 200 MiB once decompressed (ARBITER_IMPORT_MAX_DECOMPRESSED_BYTES)"),
        # Valid, identical rows: every line parses; the writer must not hold them all.
        (b'{"prompt": "x"}\n', "more than 1,000,000 lines (ARBITER_IMPORT_MAX_LINES)"),
    ],
    ids=["zeros", "valid-lines"],
)
def test_a_one_gib_gzip_bomb_is_refused_in_bounded_memory(tmp_path, unit, refusal):
    bomb = gzip_bomb(tmp_path / "bomb.jsonl.gz", unit)
    assert bomb.stat().st_size < 4 * 2**20
    report = import_in_a_fresh_process(bomb, "bomb.jsonl.gz", "jsonl")
    assert refusal in report["outcome"]
    assert report["growth_mb"] < MAX_GROWTH_MB, report


def test_a_100_mb_single_line_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "line.jsonl"
    with open(path, "wb") as out:
        out.write(b'{"prompt": "ok"}\n{"prompt": "')
        for _ in range(100):
            out.write(b"x" * 2**20)
        out.write(b'"}\n{"prompt": "also ok"}\n')
    report = import_in_a_fresh_process(path, "line.jsonl", "jsonl")
    assert "line 2: (line): longer than 1 MiB (ARBITER_IMPORT_MAX_LINE_BYTES)" in report["outcome"]
    assert report["growth_mb"] < MAX_GROWTH_MB, report
