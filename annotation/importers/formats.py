"""The import formats: MT-Bench questions, Anthropic HH-RLHF pairs, prompt JSONL and prompt CSV,
each parsed line by line into validated records (``*_records``, streamed by
annotation/services/uploads.py) or whole (``parse_*``). Nothing here writes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from annotation.importers.reading import (
    LIMIT_SETTINGS,
    ImportLimits,
    LineError,
    LineErrors,
    collect,
    errors_and_limits,
    json_lines,
)
from annotation.services.prompts import PromptData, messages_validate


def mt_bench_records(lines: Iterable[str], errors: LineErrors, limits: ImportLimits) -> Iterator[PromptData]:
    """MT-Bench question files: ``{"question_id", "category", "turns": [...], "reference"?}``.

    The first turn becomes the prompt (the second needs an answer to the first before it can be
    asked); the other turns and the reference answers are kept in ``metadata``.
    """
    for number, row in json_lines(lines, errors, limits):
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
    errors, limits = errors_and_limits(errors, limits)
    return collect(mt_bench_records(lines, errors, limits), errors)


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
    for number, row in json_lines(lines, errors, limits):
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
    errors, limits = errors_and_limits(errors, limits)
    skipped = LineErrors()
    return collect(hh_records(lines, errors, limits, skipped), errors), skipped.listed


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
    for number, row in json_lines(lines, errors, limits):
        prompt = _prompt_from_row(number, row, errors, "jsonl")
        if prompt:
            yield prompt


def parse_prompt_jsonl(lines: Iterable[str], *, errors: LineErrors | None = None, limits: ImportLimits | None = None) -> list[PromptData]:
    errors, limits = errors_and_limits(errors, limits)
    return collect(prompt_jsonl_records(lines, errors, limits), errors)


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
    errors, limits = errors_and_limits(errors, limits)
    return collect(prompt_csv_records(lines, errors, limits), errors)
