"""One entry point for imported files, shared by the page, the API and the command.

The whole file is read and validated before anything is written; a bad file writes nothing.
"""

from __future__ import annotations

import codecs
import gzip
import io
from dataclasses import dataclass, field

from django.db import transaction

from annotation.importers import (
    ImportValidationError,
    LineError,
    parse_hh,
    parse_mt_bench,
    parse_prompt_csv,
    parse_prompt_jsonl,
)
from annotation.models import AuditAction, Project, Strength
from annotation.services.audit import audit_record
from annotation.services.imports import preference_pairs_import
from annotation.services.prompts import prompts_create

IMPORT_FORMATS = ("jsonl", "csv", "mt-bench", "hh")
MAX_IMPORT_BYTES = 200 * 1024 * 1024


@dataclass
class ImportResult:
    format: str
    prompts_created: int = 0
    comparisons_created: int = 0
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)


def _text_lines(raw: bytes, name: str) -> io.StringIO:
    if name.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise ImportValidationError([LineError(0, "(file)", f"not a valid gzip file ({exc})")]) from None
    if len(raw) > MAX_IMPORT_BYTES:
        raise ImportValidationError([LineError(0, "(file)", f"larger than {MAX_IMPORT_BYTES // 2**20} MiB")])
    try:
        text = codecs.decode(raw, "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportValidationError([LineError(0, "(file)", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    return io.StringIO(text, newline="")


def import_file(*, project: Project, raw: bytes, name: str, format: str, strength: str = Strength.BETTER) -> ImportResult:
    """Parse and validate all of ``raw``, then write it in one transaction (or raise, writing nothing)."""
    if format not in IMPORT_FORMATS:
        raise ImportValidationError([LineError(0, "format", f"expected one of {', '.join(IMPORT_FORMATS)}")])
    if len(raw) > MAX_IMPORT_BYTES:
        raise ImportValidationError([LineError(0, "(file)", f"larger than {MAX_IMPORT_BYTES // 2**20} MiB")])
    lines = _text_lines(raw, name)
    result = ImportResult(format=format)
    if format == "hh":
        pairs, skipped = parse_hh(lines)
        with transaction.atomic():
            written = preference_pairs_import(project=project, pairs=pairs, source="hh-rlhf", strength=strength)
        result.prompts_created, result.comparisons_created = written.prompts_created, written.comparisons_created
        result.duplicates, result.skipped = written.duplicates, [str(s) for s in skipped]
        _audit_import(project, name, result)
        return result
    parse = {"jsonl": parse_prompt_jsonl, "csv": parse_prompt_csv, "mt-bench": parse_mt_bench}[format]
    prompts = parse(lines)
    written = prompts_create(project=project, prompts=prompts)
    result.prompts_created, result.duplicates = written.created, written.duplicates
    _audit_import(project, name, result)
    return result


def _audit_import(project: Project, name: str, result: ImportResult) -> None:
    audit_record(
        action=AuditAction.IMPORT_WRITTEN, project=project, target=name or "(upload)",
        details={"format": result.format, "prompts": result.prompts_created, "comparisons": result.comparisons_created, "duplicates": result.duplicates},
    )
