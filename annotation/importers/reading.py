"""Reading import files as streams: the limits, the line reader and the errors it collects.
Nothing here writes.

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
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

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


def json_lines(lines: Iterable[str], errors: LineErrors, limits: ImportLimits) -> Iterator[tuple[int, dict]]:
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


def errors_and_limits(errors: LineErrors | None, limits: ImportLimits | None) -> tuple[LineErrors, ImportLimits]:
    return (LineErrors() if errors is None else errors), (limits or ImportLimits.from_settings())


def collect(records: Iterator, errors: LineErrors) -> list:
    """All of a record stream, or ``ImportValidationError`` if any line was bad."""
    rows = list(records)
    if errors:
        raise ImportValidationError(errors)
    return rows


# Each format has a record stream (``*_records``: yields valid records, appends problems to
# ``errors``, keeps nothing else) for the import service, which writes as it reads and rolls
# back when ``errors`` is not empty at the end; and ``parse_*``, the same as a list or an error.
