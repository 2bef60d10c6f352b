"""Reading import files as streams and parsing them into validated records. Nothing here writes.

A file is never trusted for its size: ``read_lines`` decompresses gzip incrementally, counts the
bytes as they arrive and cuts a line off at the line limit while reading it, so memory stays
bounded by the limits (``ImportLimits``), not by what the file claims or holds. Every line is
decoded strictly as UTF-8 and refused if it holds NUL; every JSON value is checked for depth,
string length and text that PostgreSQL cannot store (``config/untrusted.py``).

A file is parsed and validated whole; any problem raises ``ImportValidationError`` listing the
line numbers and fields, and the caller writes nothing.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

from annotation.services.prompts import PromptData, messages_validate
from config.untrusted import STRICT_JSON, json_may_need_walk, json_problem

MAX_ERRORS_LISTED = 50
CHUNK_BYTES = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ImportLimits:
    """What one import may hold; ``settings.IMPORT_LIMITS`` (README, Configuration) sets them."""

    max_bytes: int = 200 * 2**20  # the file as sent (compressed, for .gz)
    max_decompressed_bytes: int = 200 * 2**20
    max_line_bytes: int = 2**20
    max_field_chars: int = 200_000  # one JSON string or CSV field
    max_depth: int = 32  # nesting of JSON arrays and objects
    max_lines: int = 1_000_000

    @classmethod
    def from_settings(cls) -> ImportLimits:
        from django.conf import settings

        return cls(**getattr(settings, "IMPORT_LIMITS", {}))


# The environment variable behind each limit, named in the error that hits it.
LIMIT_SETTINGS = {
    "max_bytes": "ARBITER_IMPORT_MAX_BYTES",
    "max_decompressed_bytes": "ARBITER_IMPORT_MAX_DECOMPRESSED_BYTES",
    "max_line_bytes": "ARBITER_IMPORT_MAX_LINE_BYTES",
    "max_field_chars": "ARBITER_IMPORT_MAX_FIELD_CHARS",
    "max_depth": "ARBITER_IMPORT_MAX_DEPTH",
    "max_lines": "ARBITER_IMPORT_MAX_LINES",
}


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n:,} bytes"


@dataclass(frozen=True)
class LineError:
    line: int  # 0: the file as a whole
    field: str
    message: str

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.field}: {self.message}"
        return f"line {self.line}: {self.field}: {self.message}"


class LineErrors:
    """The problems found in a file: the first ``MAX_ERRORS_LISTED`` kept, all counted, so a file
    of a million bad lines costs no more memory than a file of fifty."""

    def __init__(self) -> None:
        self.listed: list[LineError] = []
        self.total = 0

    def append(self, error: LineError) -> None:
        self.total += 1
        if len(self.listed) < MAX_ERRORS_LISTED:
            self.listed.append(error)

    def extend(self, errors: Iterable[LineError]) -> None:
        for error in errors:
            self.append(error)

    def __bool__(self) -> bool:
        return self.total > 0


class ImportValidationError(Exception):
    def __init__(self, errors: list[LineError] | LineErrors):
        if isinstance(errors, LineErrors):
            self.errors, self.total = errors.listed, errors.total
        else:
            self.errors, self.total = errors[:MAX_ERRORS_LISTED], len(errors)
        more = f" (and {self.total - len(self.errors)} more)" if self.total > len(self.errors) else ""
        super().__init__(f"{self.total} problem(s) in the file{more}: " + "; ".join(map(str, self.errors[:5])))


def _file_error(message: str) -> ImportValidationError:
    return ImportValidationError([LineError(0, "(file)", message)])


class _CountingReader:
    """The upload as read: refuses to go past ``limit`` bytes, whatever the file's size said."""

    def __init__(self, stream: BinaryIO, limit: int):
        self.stream, self.limit, self.count = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(CHUNK_BYTES if size is None or size < 0 else size)
        self.count += len(data)
        if self.count > self.limit:
            raise _file_error(f"larger than {_size(self.limit)} ({LIMIT_SETTINGS['max_bytes']})")
        return data


def _chunks(stream: BinaryIO, *, name: str, limits: ImportLimits) -> Iterator[bytes]:
    """The file's bytes, gunzipped as they are read when it is gzip, in chunks of at most
    ``CHUNK_BYTES``; raises as soon as the decompressed total passes the limit."""
    head = stream.read(2)
    stream.seek(0)
    raw = _CountingReader(stream, limits.max_bytes)
    compressed = name.endswith(".gz") or head == GZIP_MAGIC
    # GzipFile.read(n) inflates at most n bytes per call (zlib's max_length): a bomb is read a
    # chunk at a time like any other file, and stops at the limit below.
    source = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    total = 0
    while True:
        try:
            chunk = source.read(CHUNK_BYTES)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut file is EOFError
            raise _file_error(f"not a valid gzip file ({exc})") from None
        if not chunk:
            return
        total += len(chunk)
        if total > limits.max_decompressed_bytes:
            setting = LIMIT_SETTINGS["max_decompressed_bytes" if compressed else "max_bytes"]
            limit = limits.max_decompressed_bytes
            raise _file_error(f"larger than {_size(limit)}{' once decompressed' if compressed else ''} ({setting})")
        yield chunk


def read_lines(stream: BinaryIO, *, name: str, limits: ImportLimits, errors: LineErrors) -> Iterator[str]:
    """The file's lines as text (with their line ending), numbered from 1 by position.

    A line that cannot be used (longer than the line limit, not UTF-8, holding NUL) is recorded in
    ``errors`` and yielded as ``""``, so the parsers' line numbers stay right and they skip it.
    A too-long line is dropped while it is read: at most ``max_line_bytes`` of it is ever held.
    The whole file is refused at once when it passes the size or line-count limits.
    """
    number = 0  # lines finished
    line_start = 0  # byte offset of the current line in the (decompressed) file
    consumed = 0
    buffer = bytearray()
    too_long = False

    def finish() -> str:
        if too_long:
            return ""
        data = bytes(buffer)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(LineError(number, "(text)", f"not UTF-8 ({exc.reason} at byte offset {line_start + exc.start} of the file)"))
            return ""
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark
        nul = text.find("\x00")
        if nul >= 0:
            errors.append(LineError(number, "(text)", f"NUL characters are not allowed (character {nul + 1} of the line)"))
            return ""
        return text

    for chunk in _chunks(stream, name=name, limits=limits):
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end + 1
            if not too_long:
                if len(buffer) + stop - start > limits.max_line_bytes:
                    too_long = True
                    buffer.clear()
                    errors.append(LineError(
                        number + 1, "(line)",
                        f"longer than {_size(limits.max_line_bytes)} ({LIMIT_SETTINGS['max_line_bytes']})",
                    ))
                else:
                    buffer += chunk[start:stop]
            consumed += stop - start
            start = stop
            if end >= 0:
                number += 1
                if number > limits.max_lines:
                    raise _file_error(f"more than {limits.max_lines:,} lines ({LIMIT_SETTINGS['max_lines']})")
                yield finish()
                buffer.clear()
                too_long = False
                line_start = consumed
    if buffer or too_long:  # a last line without a line ending
        number += 1
        if number > limits.max_lines:
            raise _file_error(f"more than {limits.max_lines:,} lines ({LIMIT_SETTINGS['max_lines']})")
        yield finish()


def _json_lines(lines: Iterable[str], errors: LineErrors, limits: ImportLimits) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = STRICT_JSON.decode(line)  # NaN, Infinity, 1e400: refused, jsonb cannot hold them
        except RecursionError:
            errors.append(LineError(number, "(json)", f"nested deeper than {limits.max_depth} levels ({LIMIT_SETTINGS['max_depth']})"))
            continue
        except ValueError as exc:  # JSONDecodeError, and ints past Python's 4,300-digit limit
            errors.append(LineError(number, "(json)", f"not valid JSON ({getattr(exc, 'msg', str(exc))})"))
            continue
        if not isinstance(row, dict):
            errors.append(LineError(number, "(json)", "expected a JSON object"))
            continue
        if json_may_need_walk(line, max_depth=limits.max_depth, max_chars=limits.max_field_chars):
            found = json_problem(row, max_depth=limits.max_depth, max_chars=limits.max_field_chars)
            if found:
                path, reason = found
                if "nested deeper" in reason:
                    reason += f" ({LIMIT_SETTINGS['max_depth']})"
                elif reason.startswith("longer than"):
                    reason += f" ({LIMIT_SETTINGS['max_field_chars']})"
                errors.append(LineError(number, path, reason))
                continue
        yield number, row


def _start(errors: LineErrors | None, limits: ImportLimits | None) -> tuple[LineErrors, ImportLimits]:
    return (LineErrors() if errors is None else errors), (limits or ImportLimits.from_settings())


def _whole(records: Iterator, errors: LineErrors) -> list:
    """All of a record stream, or ``ImportValidationError`` if any line was bad."""
    rows = list(records)
    if errors:
        raise ImportValidationError(errors)
    return rows


# Each format has a record stream (``*_records``: yields valid records, appends problems to
# ``errors``, keeps nothing else) for the import service, which writes as it reads and rolls
# back when ``errors`` is not empty at the end; and ``parse_*``, the same as a list or an error.


def mt_bench_records(lines: Iterable[str], errors: LineErrors, limits: ImportLimits) -> Iterator[PromptData]:
    """MT-Bench question files: ``{"question_id", "category", "turns": [...], "reference"?}``.

    The first turn becomes the prompt (the second needs an answer to the first before it can be
    asked); the other turns and the reference answers are kept in ``metadata``.
    """
    for number, row in _json_lines(lines, errors, limits):
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            errors.append(LineError(number, "turns", "expected a non-empty list of non-empty strings"))
            continue
        messages = [{"role": "user", "content": turns[0]}]
        problems = messages_validate(messages)
        if problems:
            errors.extend(LineError(number, "turns", p) for p in problems)
            continue
        category = row.get("category", "")
        if not isinstance(category, str):
            errors.append(LineError(number, "category", "expected a string"))
            continue
        metadata = {"question_id": row.get("question_id"), "later_turns": turns[1:]}
        if "reference" in row:
            metadata["reference"] = row["reference"]
        yield PromptData(
            messages=messages,
            category=category[:100],
            tags=["mt-bench"],
            source=f"mt-bench:{row.get('question_id', number)}"[:200],
            metadata=metadata,
        )


def parse_mt_bench(lines: Iterable[str], *, errors: LineErrors | None = None, limits: ImportLimits | None = None) -> list[PromptData]:
    errors, limits = _start(errors, limits)
    return _whole(mt_bench_records(lines, errors, limits), errors)


@dataclass(frozen=True)
class PreferencePair:
    """A pre-labelled comparison from a file: the conversation, then the preferred and the other answer."""

    line: int
    messages: list[dict]
    chosen: str
    rejected: str


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_turns(transcript: str) -> list[dict] | None:
    parts = _HH_TURN.split(transcript)
    if parts[0].strip() or len(parts) < 5:
        return None
    return [{"role": _HH_ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def hh_records(lines: Iterable[str], errors: LineErrors, limits: ImportLimits, skipped: LineErrors) -> Iterator[PreferencePair]:
    """Anthropic HH-RLHF transcripts (``{"chosen": "\\n\\nHuman: ...", "rejected": ...}``).

    Each row becomes the shared conversation prefix, the chosen last assistant turn and the
    rejected one. Rows that are not one conversation with two endings (their prefixes differ)
    or whose two endings are the same text are skipped, and listed in ``skipped``; malformed
    rows are errors.
    """
    for number, row in _json_lines(lines, errors, limits):
        if not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
            errors.append(LineError(number, "chosen/rejected", "expected two transcript strings"))
            continue
        chosen, rejected = _hh_turns(row["chosen"]), _hh_turns(row["rejected"])
        if chosen is None or rejected is None:
            errors.append(LineError(number, "chosen/rejected", "expected '\\n\\nHuman: ... \\n\\nAssistant: ...' turns"))
            continue
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            errors.append(LineError(number, "chosen/rejected", "a transcript must end with an Assistant turn"))
            continue
        if chosen[:-1] != rejected[:-1]:
            skipped.append(LineError(number, "chosen/rejected", "the two transcripts are different conversations"))
            continue
        if chosen[-1]["content"] == rejected[-1]["content"] or not chosen[-1]["content"] or not rejected[-1]["content"]:
            skipped.append(LineError(number, "chosen/rejected", "the two endings are identical or empty"))
            continue
        problems = messages_validate(chosen[:-1])
        if problems:
            errors.extend(LineError(number, "chosen", p) for p in problems)
            continue
        yield PreferencePair(number, chosen[:-1], chosen[-1]["content"], rejected[-1]["content"])


def parse_hh(
    lines: Iterable[str], *, errors: LineErrors | None = None, limits: ImportLimits | None = None
) -> tuple[list[PreferencePair], list[LineError]]:
    errors, limits = _start(errors, limits)
    skipped = LineErrors()
    return _whole(hh_records(lines, errors, limits, skipped), errors), skipped.listed


def _split_tags(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return value
    if isinstance(value, str):
        return [t.strip() for t in value.split(";") if t.strip()]
    raise ValueError("expected a list of strings or 'a;b;c'")


def _prompt_from_row(number: int, row: dict, errors: LineErrors, source_default: str) -> PromptData | None:
    if "messages" in row:
        messages = row["messages"]
        problems = messages_validate(messages)
        if problems:
            errors.extend(LineError(number, "messages", p) for p in problems)
            return None
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
        messages = [{"role": "user", "content": row["prompt"]}]
        system = row.get("system")
        if system:
            if not isinstance(system, str):
                errors.append(LineError(number, "system", "expected text"))
                return None
            messages.insert(0, {"role": "system", "content": system})
    else:
        errors.append(LineError(number, "messages/prompt", "expected chat 'messages' or a non-empty 'prompt' string"))
        return None
    category = row.get("category") or ""
    if not isinstance(category, str):
        errors.append(LineError(number, "category", "expected a string"))
        return None
    try:
        tags = _split_tags(row.get("tags"))
    except ValueError as exc:
        errors.append(LineError(number, "tags", str(exc)))
        return None
    source = row.get("source") or f"{source_default}:{number}"
    return PromptData(messages=messages, category=category[:100], tags=tags, source=str(source)[:200])


def prompt_jsonl_records(lines: Iterable[str], errors: LineErrors, limits: ImportLimits) -> Iterator[PromptData]:
    """JSONL prompts: ``{"messages": [...]}`` (chat) or ``{"prompt": "...", "system"?: "..."}``,
    with optional ``category``, ``tags``, ``source``."""
    for number, row in _json_lines(lines, errors, limits):
        prompt = _prompt_from_row(number, row, errors, "jsonl")
        if prompt:
            yield prompt


def parse_prompt_jsonl(lines: Iterable[str], *, errors: LineErrors | None = None, limits: ImportLimits | None = None) -> list[PromptData]:
    errors, limits = _start(errors, limits)
    return _whole(prompt_jsonl_records(lines, errors, limits), errors)


def _csv_message(exc: Exception, limits: ImportLimits) -> str:
    text = str(exc)
    if text.startswith("field larger than field limit"):
        return f"a field is longer than {limits.max_field_chars:,} characters ({LIMIT_SETTINGS['max_field_chars']})"
    if text == "unexpected end of data":
        return "a quoted field in the row starting on this line is never closed"
    return text


def prompt_csv_records(lines: Iterable[str], errors: LineErrors, limits: ImportLimits) -> Iterator[PromptData]:
    """CSV with a header: ``prompt`` (required), ``system``, ``category``, ``tags`` (a;b), ``source``.
    Values are data: nothing is evaluated, and a leading '=' stays text.

    Read strictly: a quote that is never closed is an error (not a field holding the rest of the
    file), and a field is cut off at the app's field limit while it is read (the csv module's
    limit is process-wide; every import sets it to the same setting).
    """
    import csv

    csv.field_size_limit(limits.max_field_chars)
    reader = csv.DictReader(lines, strict=True)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        errors.append(LineError(1, "(header)", _csv_message(exc, limits)))
        return
    if not fieldnames or "prompt" not in fieldnames:
        errors.append(LineError(1, "(header)", "expected a header row with a 'prompt' column"))
        return
    while True:
        # A row can span lines (a quoted field with line breaks): name the line it starts on.
        first_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader's place in the file is unknown after this: stop at the first such error.
            errors.append(LineError(first_line, "(csv)", _csv_message(exc, limits)))
            return
        if None in row:
            errors.append(LineError(first_line, "(row)", "more fields than the header names"))
            continue
        prompt = _prompt_from_row(first_line, {k: v for k, v in row.items() if v != ""}, errors, "csv")
        if prompt:
            yield prompt


def parse_prompt_csv(lines: Iterable[str], *, errors: LineErrors | None = None, limits: ImportLimits | None = None) -> list[PromptData]:
    errors, limits = _start(errors, limits)
    return _whole(prompt_csv_records(lines, errors, limits), errors)
