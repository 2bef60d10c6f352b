"""Exports: a DatasetSnapshot row is the job; the worker streams the rows to a file.

The file is written to a temporary name while its sha256 is computed, then renamed into place,
so a download is always a finished file, byte for byte what the row's sha256 says.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.exports import (
    FORMATS,
    CardStats,
    ExportError,
    ExportFilters,
    ReadCounter,
    export_rows,
    filtered_judgments,
    reliability_fit_for,
)
from annotation.models import UNKNOWN_STRENGTH, AuditAction, DatasetSnapshot, JobState, Project, SnapshotPurpose
from annotation.services.audit import audit_record
from config.jobs import job_claim, send_after_commit

PARQUET_BATCH = 10_000
#: Columns that can be null all through a Parquet file's first batch (no edit yet, a safety bin
#: asked only from some day on, imported pairs without a strength), with the type that batch
#: alone cannot tell pyarrow: left as "null", no later value would fit the file's schema.
_NULLABLE_TYPES = {
    "strength": "string", "safety": "string", "edited": "string",
    "edited_response_id": "int64", "edit_distance": "int64", "gold_winner_id": "int64",
}
#: jsonl and parquet are for training; csv is for reading in a spreadsheet (see _write_csv).
FILE_FORMATS = ("jsonl", "parquet", "csv")
# A cell a spreadsheet would run as a formula (OWASP "CSV injection"): =, +, -, @, tab, CR.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@transaction.atomic
def export_start(
    *, project: Project, format: str, filters: dict | None = None, file_format: str | None = None, user=None
) -> DatasetSnapshot:
    """Validate and queue an export; the task is sent once the row is committed.

    ``file_format``: jsonl (default), parquet or csv.
    """
    from annotation import tasks

    if format not in FORMATS:
        raise ExportError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    file_format = file_format or "jsonl"
    if file_format not in FILE_FORMATS:
        raise ExportError(f"file_format: expected one of {', '.join(FILE_FORMATS)}, got {file_format!r}")
    parsed = ExportFilters.from_dict(filters)
    if parsed.aggregation == "reliability-weighted":
        # Refused now, not in the worker, when there is no fit; pinned, so the rows and the card
        # name one fit whatever is fitted while the export runs.
        parsed = replace(parsed, reliability_fit=reliability_fit_for(project, parsed.reliability_fit).pk)
    snapshot = DatasetSnapshot.objects.create(
        project=project, purpose=SnapshotPurpose.EXPORT, format=format, filters=parsed.as_dict(),
        state=JobState.QUEUED, file_format=file_format, created_by=user,
    )
    audit_record(
        action=AuditAction.EXPORT_STARTED, project=project, actor=user, target=f"export {snapshot.pk} ({format})",
        details={"snapshot": snapshot.pk, "format": format, "filters": snapshot.filters, "file_format": file_format},
    )
    send_after_commit(tasks.export_run, snapshot.pk)
    return snapshot


def dataset_card(*, snapshot: DatasetSnapshot, stats: CardStats) -> str:
    """A README for the file: what it holds, where it came from, how to load it."""
    project = snapshot.project
    lines = [
        f"# {_md(project.name)}: `{snapshot.format}` export #{snapshot.pk}",
        "",
        f"- rows: {stats.rows}",
        f"- file: {snapshot.file_format}, sha256 `{snapshot.sha256}`",
        f"- exported: {timezone.now():%Y-%m-%d %H:%M UTC} from Arbiter project `{project.slug}`",
        f"- judgments submitted between: {stats.first or '–'} and {stats.last or '–'}",
        f"- labelers: {len(stats.labelers)}",
        f"- margins: {project.get_margin_table_display()}",
        "",
        "## Filters",
        "",
        *[f"- {k}: {_md(str(v))}" for k, v in sorted(snapshot.filters.items())],
    ]
    if snapshot.filters.get("aggregation") == "reliability-weighted":
        fit = project.reliability_fits.filter(pk=snapshot.filters.get("reliability_fit")).first()
        if fit is not None:
            lines += ["", f"One row per comparison: the winner of the labeler-reliability model with reliability fit #{fit.pk}"
                      f" ({fit.finished_at or fit.created_at:%Y-%m-%d %H:%M UTC}, {fit.judgments} judgments); `confidence` is P(chosen is better | labels)."]
    if stats.strengths:
        lines += ["", "## Rows per strength", "", "| strength | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(stats.strengths.items())]
        if stats.strengths.get(UNKNOWN_STRENGTH):
            lines += ["", "`unknown`: the source gave no strength (imported pairs such as HH-RLHF's); such rows have"
                      " `strength` null and `margin` 0 (plain Bradley-Terry), not an invented margin."]
    if stats.pair_types:
        lines += ["", "## Rows per pair type", "", "| pair type | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(stats.pair_types.items())]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{_LOADERS.get(snapshot.file_format, "json")}", data_files="export.{snapshot.file_format}")["train"]',
        "```",
        "",
        *(
            ["This CSV is for reading in a spreadsheet: nested columns are JSON text, and cells that begin with"
             " `=`, `+`, `-`, `@`, tab or carriage return carry a leading `'` so no spreadsheet runs them as formulas."
             " Train from the JSONL or Parquet export, which hold the text exactly.", ""]
            if snapshot.file_format == "csv" else []
        ),
        "`trl-preference` rows load unchanged into TRL's RewardTrainer (with the `margin` column) and DPOTrainer;"
        " `kto` into KTOTrainer; `sft` into SFTTrainer. Edits appear as pairs edited > chosen > rejected (`pair_type`).",
        "",
        *(
            ["`safety` is the judgment's Llama 2 safety bin, about its chosen and rejected responses (both_safe,"
             " chosen_safe, rejected_safe, both_unsafe; null where it was not asked), on every pair of the judgment.", ""]
            if project.ask_safety else []
        ),
    ]
    return "\n".join(lines)


_LOADERS = {"parquet": "parquet", "csv": "csv"}
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]#|"})


def _md(text: str) -> str:
    """Text written by people (a project's name) as inert Markdown: no HTML, no markup, one line."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(escaped.translate(_MD_SPECIAL).split())


def _write_jsonl(rows, tmp: Path, stats: CardStats) -> None:
    # orjson: UTF-8 out, keys sorted (stable bytes), several times faster than json.dumps,
    # which was most of an export's time at a million rows.
    with tmp.open("wb", buffering=1 << 20) as out:
        for row in rows:
            stats.add(row)
            out.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE))


def _write_parquet(rows, tmp: Path, stats: CardStats) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, batch = None, []

    def flush() -> None:
        nonlocal writer
        if writer is None:  # the first batch sets the file's schema
            table = pa.Table.from_pylist(batch)
            schema = pa.schema([
                pa.field(f.name, _NULLABLE_TYPES[f.name]) if pa.types.is_null(f.type) and f.name in _NULLABLE_TYPES else f
                for f in table.schema
            ])
            table, writer = table.cast(schema), pq.ParquetWriter(tmp, schema)
        else:
            table = pa.Table.from_pylist(batch, schema=writer.schema)
        writer.write_table(table)

    try:
        for row in rows:
            stats.add(row)
            batch.append({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
            if len(batch) >= PARQUET_BATCH:
                flush()
                batch = []
        if batch or writer is None:
            flush()
    finally:
        if writer is not None:
            writer.close()


def csv_cell(value):
    """A value as a CSV cell: nested values as JSON text, and text a spreadsheet would evaluate as
    a formula prefixed with a quote, so it shows as text (model output and edits are untrusted)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _write_csv(rows, tmp: Path, stats: CardStats) -> None:
    with tmp.open("w", newline="", encoding="utf-8") as out:
        writer = None
        for row in rows:
            stats.add(row)
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row))
                writer.writeheader()
            writer.writerow({k: csv_cell(v) for k, v in row.items()})


#: Seconds between two progress writes while an export writes (the exports table polls every 2 s).
REPORT_EVERY_S = 2.0


def _reporting(rows, *, counter: ReadCounter, total: int, stats: CardStats, report):
    """``rows``, passed through, calling ``report(progress)`` every ``REPORT_EVERY_S``: judgments
    read of ``total`` (the unit every format shares), rows written, time spent and an ETA from
    the pace so far."""
    started = last = time.monotonic()
    for row in rows:
        yield row
        now = time.monotonic()
        if now - last >= REPORT_EVERY_S:
            last = now
            elapsed, read = now - started, counter.read
            eta = elapsed / read * max(0, total - read) if read else None
            report({
                "done": read, "total": total, "unit": "judgments", "rows": stats.rows,
                "elapsed_s": round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1),
            })


@dataclass
class Written:
    """What ``dataset_write`` wrote: the file's sha256 and size, and the rows' statistics."""

    sha256: str
    size_bytes: int
    stats: CardStats


def dataset_write(*, project: Project, format: str, filters: ExportFilters, final: Path, file_format: str = "jsonl",
                  report=None) -> Written:
    """The one dataset writer, for a lead's export and a round's snapshot files alike: the rows of
    ``format`` under ``filters``, streamed into a temporary file beside ``final`` (bounded memory
    whatever the number of judgments), hashed, then renamed into place; nothing is left behind on
    an error. ``report(progress)``: judgments read of the total, rows written, time and ETA."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    stats, counter = CardStats(), ReadCounter()
    try:
        rows = export_rows(project=project, format=format, filters=filters, counter=counter)
        if report is not None:
            total = filtered_judgments(project=project, filters=filters).count()
            rows = _reporting(rows, counter=counter, total=total, stats=stats, report=report)
        {"parquet": _write_parquet, "csv": _write_csv}.get(file_format, _write_jsonl)(rows, tmp, stats)
        digest = hashlib.sha256()
        with tmp.open("rb") as written:
            for block in iter(lambda: written.read(1 << 20), b""):
                digest.update(block)
        tmp.rename(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Written(sha256=digest.hexdigest(), size_bytes=final.stat().st_size, stats=stats)


def export_execute(*, snapshot_id: int) -> DatasetSnapshot:
    """Write a queued export's file. A second delivery of its message (or a second worker on it)
    loses the claim and leaves the export to the first; a finished export is left alone."""
    claimed = job_claim(DatasetSnapshot, snapshot_id)
    snapshot = DatasetSnapshot.objects.select_related("project").get(pk=snapshot_id)
    if not claimed:
        return snapshot
    folder = Path(settings.ARTIFACTS_DIR) / snapshot.project.slug / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"export-{snapshot.pk}-{snapshot.format}.{snapshot.file_format}"

    def report(progress: dict) -> None:
        DatasetSnapshot.objects.filter(pk=snapshot_id).update(progress=progress, heartbeat_at=timezone.now())

    try:
        written = dataset_write(
            project=snapshot.project, format=snapshot.format, filters=ExportFilters.from_dict(snapshot.filters),
            final=final, file_format=snapshot.file_format, report=report,
        )
        snapshot.sha256, snapshot.row_count, snapshot.size_bytes = written.sha256, written.stats.rows, written.size_bytes
        snapshot.path = str(final.relative_to(settings.ARTIFACTS_DIR))
        snapshot.card = dataset_card(snapshot=snapshot, stats=written.stats)
        snapshot.state, snapshot.finished_at, snapshot.progress = JobState.SUCCEEDED, timezone.now(), {}
        snapshot.save(update_fields=["sha256", "row_count", "size_bytes", "path", "card", "state", "finished_at", "progress"])
        final.with_suffix(".README.md").write_text(snapshot.card)
    except Exception as exc:
        DatasetSnapshot.objects.filter(pk=snapshot_id).update(
            state=JobState.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
        )
        snapshot.refresh_from_db()
    return snapshot
