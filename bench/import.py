"""Import at scale: 100,000 prompts from a JSONL file through the app's import service.

    python bench/import.py [--prompts 100000]

Times ``import_file`` (read as a stream, each valid row written in batches in one transaction
that a bad line would roll back) into a scratch PostgreSQL database, and the process's peak RSS
growth while it runs. Target: <= 30 s. Writes bench/results/import.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, recreate_database, replace_section, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "import.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--database-admin", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    url = recreate_database(args.database_admin, "arbiter_bench_import")
    scratch = tempfile.mkdtemp(prefix="arbiter-import-bench-")
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": url, "ARBITER_VAR_DIR": scratch,
                       "ARBITER_DEMO": "false", "DEBUG": "false", "LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    from django.core.management import call_command

    from annotation.models import Project, Prompt
    from annotation.services.uploads import import_file

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="import bench", slug="import-bench")
    # Written to disk a line at a time and imported from the open file, as the command does: the
    # benchmark's own peak memory stays below the import's, so the growth measured is the import's.
    path = Path(scratch) / "bench.jsonl"
    with path.open("w") as out:
        for i in range(args.prompts):
            if i % 2:
                row = {"prompt": f"Question {i}: summarise the trade-offs of LoRA versus full fine-tuning for a 135M model.", "category": "stem", "tags": ["bench"]}
            else:
                row = {"messages": [{"role": "system", "content": "Be concise."}, {"role": "user", "content": f"Task {i}: write a haiku about gradient descent."}], "category": "writing"}
            out.write(json.dumps(row) + "\n")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with path.open("rb") as stream:
        result = import_file(project=project, file=stream, name="bench.jsonl", format="jsonl")
    seconds = time.perf_counter() - started
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    assert Prompt.objects.filter(project=project).count() == args.prompts == result.prompts_created
    out = {
        "benchmark": "import", "date": utc_now(), "machine": machine(),
        "rows": args.prompts, "seconds": round(seconds, 1), "rows_per_s": int(args.prompts / seconds),
        "file_mb": round(path.stat().st_size / 2**20, 1), "peak_rss_growth_mb": round(rss_growth, 1), "target_met": seconds <= 30,
    }
    print(json.dumps(out, indent=2))
    if not args.no_write:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        replace_section(
            "import", "Import (`bench/import.py`)",
            f"Run {out['date']} on {out['machine']}, PostgreSQL: {out['rows']:,} prompts ({out['file_mb']} MB JSONL, "
            f"half chat messages with a system turn) read as a stream and written in batches in one transaction "
            f"(rolled back if any line is bad): **{out['seconds']} s** ({out['rows_per_s']:,} rows/s), peak RSS growth of the "
            f"importing process {out['peak_rss_growth_mb']} MB. Target ≤ 30 s: "
            f"**{'met' if out['target_met'] else 'not met'}**.",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
