"""Export at scale: 1,000,000 judgments in PostgreSQL exported as trl-preference JSONL.

    python bench/export.py [--judgments 1000000] [--labelers 100]

Fills a scratch PostgreSQL database with SQL (generate_series: prompts, responses, comparisons,
assignments, judgments, a tenth of them with an edit) and times the app's own export job
(``export_execute``) from the first query to the renamed file, with the process's peak RSS.
Targets: <= 60 s and peak RSS <= 300 MB. Writes bench/results/export.json and docs/benchmarks.md.
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
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import machine, publish, recreate_database, replace_section, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "export.json"


FILL = """
INSERT INTO auth_user (username, password, is_superuser, first_name, last_name, email, is_staff, is_active, date_joined)
SELECT 'labeler' || g, '!', false, '', '', '', false, true, now() FROM generate_series(1, %(labelers)s) g;

INSERT INTO modeling_committeemember (name, kind, description, model_path, gguf_package, gguf_file, base_url, endpoint_model,
    api_key_env, timeout_s, max_retries, generation, weight, is_active, created_at)
VALUES ('m-a', 'local', '', '/m/a', '', '', '', '', '', 120, 2, '{}', 1, true, now()),
       ('m-b', 'local', '', '/m/b', '', '', '', '', '', 120, 2, '{}', 1, true, now());

INSERT INTO annotation_prompt (project_id, messages, category, tags, source, metadata, content_hash, created_at)
SELECT %(project)s, jsonb_build_array(jsonb_build_object('role', 'user', 'content',
       'Question ' || g || ': explain how a reward model turns pairwise preferences into a scalar score, briefly.')),
       'bench', '[]', 'bench:' || g, '{}', md5('p' || g) || md5('q' || g), now()
FROM generate_series(1, %(comparisons)s) g;

INSERT INTO annotation_response (prompt_id, source, text, member_id, sample_index, sampling, finish_reason, created_at)
SELECT p.id, 'model', CASE WHEN s = 0 THEN
       'A reward model reads the prompt and a response and outputs one number; trained on pairs, it learns to score the preferred response higher (Bradley-Terry). ' || p.id
       ELSE 'It is a model. ' || p.id END,
       (SELECT id FROM modeling_committeemember WHERE name = CASE WHEN s = 0 THEN 'm-a' ELSE 'm-b' END), 0, '{}', 'stop', now()
FROM annotation_prompt p CROSS JOIN generate_series(0, 1) s WHERE p.project_id = %(project)s;

INSERT INTO annotation_comparison (project_id, prompt_id, response_a_id, response_b_id, source, is_gold, slots_taken, created_at)
SELECT %(project)s, p.id, min(r.id), max(r.id), 'committee', false, 0, now()
FROM annotation_prompt p JOIN annotation_response r ON r.prompt_id = p.id WHERE p.project_id = %(project)s GROUP BY p.id;

INSERT INTO annotation_assignment (comparison_id, labeler_id, left_response_id, state, leased_at, expires_at, ended_at, skip_reason)
SELECT c.id, u.id, c.response_a_id, 'submitted', now() - interval '1 hour', now(), now() - interval '30 minutes', ''
FROM annotation_comparison c CROSS JOIN (SELECT id FROM auth_user WHERE username LIKE 'labeler%%' ORDER BY id LIMIT %(labelers)s) u
WHERE c.project_id = %(project)s;

INSERT INTO annotation_judgment (assignment_id, comparison_id, labeler_id, chosen_response_id, rejected_response_id, strength,
    left_response_id, both_bad, attributes, flags, rationale, leased_at, submitted_at, time_on_task_ms, idempotency_key)
SELECT a.id, a.comparison_id, a.labeler_id, c.response_a_id, c.response_b_id,
       (ARRAY['significantly_better', 'better', 'slightly_better', 'negligibly_better'])[1 + a.id %% 4],
       c.response_a_id, false, '{}', '{}', '', a.leased_at, a.ended_at, 1800000, ''
FROM annotation_assignment a JOIN annotation_comparison c ON c.id = a.comparison_id WHERE c.project_id = %(project)s;
"""

EDITS = """
WITH edited AS (
  INSERT INTO annotation_response (prompt_id, source, text, parent_id, author_id, edit_distance, sample_index, sampling, finish_reason, created_at)
  SELECT c.prompt_id, 'human_edit', r.text || ' (edited)', r.id, j.labeler_id, 9, 0, '{}', '', now()
  FROM annotation_judgment j JOIN annotation_comparison c ON c.id = j.comparison_id JOIN annotation_response r ON r.id = j.chosen_response_id
  WHERE j.id %% 10 = 0 AND c.project_id = %(project)s
  RETURNING id, parent_id, author_id
)
UPDATE annotation_judgment j SET edited_response_id = e.id FROM edited e
WHERE j.chosen_response_id = e.parent_id AND j.labeler_id = e.author_id AND j.id %% 10 = 0;
"""


def write_doc(r: dict) -> None:
    section = (
        f"Run {r['date']} on {r['machine']}, PostgreSQL: {r['judgments']:,} judgments ({r['edited']:,} with an edit) "
        f"→ `trl-preference` JSONL through the app's export job: **{r['rows']:,} rows in {r['seconds']} s** "
        f"({r['rows_per_s']:,} rows/s), peak RSS **{r['peak_rss_mb']} MB**, file {r['file_mb']} MB. "
        f"Targets ≤ 60 s and ≤ 300 MB: **{'met' if r['seconds'] <= 60 and r['peak_rss_mb'] <= 300 else 'not met'}**. "
        + (f"(Filling the database with SQL took {r['fill_seconds']} s, not counted.)" if r["fill_seconds"] is not None
           else "(The database was filled by an earlier run of this script: --reuse.)")
    )
    replace_section("export", "Export (`bench/export.py`)", section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--labelers", type=int, default=100)
    parser.add_argument("--database-admin", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="export the database a previous run filled")
    args = parser.parse_args()
    comparisons = args.judgments // args.labelers
    admin = urlparse(args.database_admin)
    url = admin._replace(path="/arbiter_bench_export").geturl() if args.reuse else recreate_database(args.database_admin, "arbiter_bench_export")
    scratch = tempfile.mkdtemp(prefix="arbiter-export-bench-")
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": url, "ARBITER_VAR_DIR": scratch,
                       "ARTIFACTS_DIR": scratch + "/artifacts", "ARBITER_DEMO": "false", "DEBUG": "false", "LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from annotation.models import Judgment, Project
    from annotation.services.exports import export_execute, export_start

    call_command("migrate", verbosity=0)
    project = Project.objects.filter(slug="export-bench").first() if args.reuse else None
    started = time.perf_counter()
    if project is None:
        project = Project.objects.create(name="export bench", slug="export-bench")
        with connection.cursor() as cursor:
            cursor.execute(FILL, {"labelers": args.labelers, "comparisons": comparisons, "project": project.pk})
            cursor.execute(EDITS, {"project": project.pk})
            cursor.execute("ANALYZE")
    fill = time.perf_counter() - started
    judgments = Judgment.objects.count()
    edited = Judgment.objects.filter(edited_response__isnull=False).count()
    print(f"filled {judgments:,} judgments ({edited:,} edited) in {fill:.0f} s", flush=True)

    snapshot = export_start(project=project, format="trl-preference")
    started = time.perf_counter()
    snapshot = export_execute(snapshot_id=snapshot.pk)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert snapshot.state == "succeeded", snapshot.error
    result = {
        "benchmark": "export",
        "date": utc_now(),
        "machine": machine(),
        "judgments": judgments, "edited": edited, "rows": snapshot.row_count, "seconds": round(seconds, 1),
        "rows_per_s": int(snapshot.row_count / seconds), "peak_rss_mb": round(peak, 1),
        "file_mb": round(snapshot.size_bytes / 2**20, 1), "fill_seconds": None if args.reuse and fill < 1 else round(fill, 1),
        "target_met": seconds <= 60 and peak <= 300,
    }
    print(json.dumps(result, indent=2))
    return publish(RESULTS, result, write_doc, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
