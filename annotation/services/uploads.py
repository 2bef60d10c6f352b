"""One entry point for imported files, shared by the page, the API and the command.

All of a file or nothing, in bounded memory: the file is read as a stream
(``annotation.importers.reading.read_lines``), each valid record is written as it is read, in batches,
inside one transaction, and the transaction is rolled back if any line was bad. Once a bad line
is seen nothing more is written (the rest is still read, to list its problems). A bad file
writes nothing; memory is a batch and the limits (``ImportLimits``), never the file's size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, TypeVar

from django.db import transaction

from annotation.importers import (
    ImportLimits,
    ImportValidationError,
    LineError,
    LineErrors,
    hh_records,
    mt_bench_records,
    prompt_csv_records,
    prompt_jsonl_records,
    read_lines,
)
from annotation.models import AuditAction, Project
from annotation.services.audit import audit_record
from annotation.services.imports import preference_pairs_import
from annotation.services.prompts import prompts_create

IMPORT_FORMATS = ("jsonl", "csv", "mt-bench", "hh")
PROMPT_RECORDS = {"jsonl": prompt_jsonl_records, "csv": prompt_csv_records, "mt-bench": mt_bench_records}
T = TypeVar("T")


@dataclass
class ImportResult:
    format: str
    prompts_created: int = 0
    comparisons_created: int = 0
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)  # the first 50, with line and reason
    skipped_count: int = 0


def upload_too_large(*, size: int) -> str | None:
    """Why an upload of ``size`` bytes (as the request says) is refused before it is read, or None.
    The reader counts the bytes again: a size is a claim, not a fact."""
    limits = ImportLimits.from_settings()
    if size > limits.max_bytes:
        return f"The file is larger than {limits.max_bytes // 2**20} MiB (ARBITER_IMPORT_MAX_BYTES); nothing was imported."
    return None


def _until_error(records: Iterable[T], errors: LineErrors) -> Iterator[T]:
    """The records the writer gets: none after the first bad line (it will be rolled back)."""
    for record in records:
        if not errors:
            yield record


def import_file(
    *, project: Project, file: BinaryIO | bytes, name: str, format: str, strength: str | None = None
) -> ImportResult:
    """Validate all of ``file`` (a seekable binary stream, or bytes) while writing it in one
    transaction; or raise ``ImportValidationError``, having written nothing."""
    if format not in IMPORT_FORMATS:
        raise ImportValidationError([LineError(0, "format", f"expected one of {', '.join(IMPORT_FORMATS)}")])
    limits = ImportLimits.from_settings()
    stream = io.BytesIO(file) if isinstance(file, (bytes, bytearray)) else file
    errors = LineErrors()  # shared by the reader (lines) and the parser (records)
    lines = read_lines(stream, name=name, limits=limits, errors=errors)
    result = ImportResult(format=format)
    # Any error leaving the block rolls back what was written, the reader's too (a file past a
    # limit is refused mid-stream).
    with transaction.atomic():
        if format == "hh":
            skipped = LineErrors()
            pairs = _until_error(hh_records(lines, errors, limits, skipped), errors)
            written = preference_pairs_import(project=project, pairs=pairs, source="hh-rlhf", strength=strength)
            if errors:
                raise ImportValidationError(errors)
            if not written.comparisons_created + written.duplicates:
                if not skipped:
                    raise ImportValidationError([_NO_RECORDS])
                refusal = LineErrors()
                refusal.append(LineError(0, "(file)", f"no usable rows: all {skipped.total} were skipped"))
                refusal.extend(skipped.listed)
                refusal.total = skipped.total + 1
                raise ImportValidationError(refusal)
            result.prompts_created, result.comparisons_created = written.prompts_created, written.comparisons_created
            result.duplicates = written.duplicates
            result.skipped, result.skipped_count = [str(s) for s in skipped.listed], skipped.total
        else:
            prompts = _until_error(PROMPT_RECORDS[format](lines, errors, limits), errors)
            written = prompts_create(project=project, prompts=prompts)
            if errors:
                raise ImportValidationError(errors)
            if not written.created + written.duplicates:
                raise ImportValidationError([_NO_RECORDS])
            result.prompts_created, result.duplicates = written.created, written.duplicates
        _audit_import(project, name, result)
    return result


_NO_RECORDS = LineError(0, "(file)", "the file holds no records (it is empty or only blank lines)")


def _audit_import(project: Project, name: str, result: ImportResult) -> None:
    audit_record(
        action=AuditAction.IMPORT_WRITTEN, project=project, target=name or "(upload)",
        details={"format": result.format, "prompts": result.prompts_created, "comparisons": result.comparisons_created, "duplicates": result.duplicates},
    )
