"""Parsing prompt files into validated ``PromptData``. Nothing here writes.

A file is parsed and validated whole; any problem raises ``ImportValidationError`` listing the
line numbers and fields, and the caller writes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable

from annotation.services.prompts import PromptData, messages_validate

MAX_ERRORS_LISTED = 50
MAX_LINE_CHARS = 200_000


@dataclass(frozen=True)
class LineError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


class ImportValidationError(Exception):
    def __init__(self, errors: list[LineError]):
        self.errors = errors[:MAX_ERRORS_LISTED]
        self.total = len(errors)
        more = f" (and {self.total - len(self.errors)} more)" if self.total > len(self.errors) else ""
        super().__init__(f"{self.total} problem(s) in the file{more}: " + "; ".join(map(str, self.errors[:5])))


def _json_lines(lines: Iterable[str], errors: list[LineError]) -> Iterable[tuple[int, dict]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            errors.append(LineError(number, "(line)", f"longer than {MAX_LINE_CHARS} characters"))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, "(json)", f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            errors.append(LineError(number, "(json)", "expected a JSON object"))
            continue
        yield number, row


def parse_mt_bench(lines: Iterable[str]) -> list[PromptData]:
    """MT-Bench question files: ``{"question_id", "category", "turns": [...], "reference"?}``.

    The first turn becomes the prompt (the second needs an answer to the first before it can be
    asked); the other turns and the reference answers are kept in ``metadata``.
    """
    errors: list[LineError] = []
    prompts = []
    for number, row in _json_lines(lines, errors):
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
        prompts.append(
            PromptData(
                messages=messages,
                category=category,
                tags=["mt-bench"],
                source=f"mt-bench:{row.get('question_id', number)}",
                metadata=metadata,
            )
        )
    if errors:
        raise ImportValidationError(errors)
    return prompts


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


def parse_hh(lines: Iterable[str]) -> tuple[list[PreferencePair], list[LineError]]:
    """Anthropic HH-RLHF transcripts (``{"chosen": "\\n\\nHuman: ...", "rejected": ...}``).

    Each row becomes the shared conversation prefix, the chosen last assistant turn and the
    rejected one. Rows that are not one conversation with two endings (their prefixes differ)
    or whose two endings are the same text are skipped, and listed; malformed rows are errors.
    """
    errors: list[LineError] = []
    skipped: list[LineError] = []
    pairs = []
    for number, row in _json_lines(lines, errors):
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
        pairs.append(PreferencePair(number, chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]))
    if errors:
        raise ImportValidationError(errors)
    return pairs, skipped


def _split_tags(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return value
    if isinstance(value, str):
        return [t.strip() for t in value.split(";") if t.strip()]
    raise ValueError("expected a list of strings or 'a;b;c'")


def _prompt_from_row(number: int, row: dict, errors: list[LineError], source_default: str) -> PromptData | None:
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


def parse_prompt_jsonl(lines: Iterable[str]) -> list[PromptData]:
    """JSONL prompts: ``{"messages": [...]}`` (chat) or ``{"prompt": "...", "system"?: "..."}``,
    with optional ``category``, ``tags``, ``source``."""
    errors: list[LineError] = []
    prompts = [p for n, row in _json_lines(lines, errors) if (p := _prompt_from_row(n, row, errors, "jsonl"))]
    if errors:
        raise ImportValidationError(errors)
    return prompts


def parse_prompt_csv(lines: Iterable[str]) -> list[PromptData]:
    """CSV with a header: ``prompt`` (required), ``system``, ``category``, ``tags`` (a;b), ``source``.
    Values are data: nothing is evaluated, and a leading '=' stays text."""
    import csv

    errors: list[LineError] = []
    reader = csv.DictReader(lines)
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        raise ImportValidationError([LineError(1, "(header)", "expected a header row with a 'prompt' column")])
    prompts = []
    try:
        for row in reader:
            number = reader.line_num
            if any(len(v or "") > MAX_LINE_CHARS for v in row.values() if isinstance(v, str)):
                errors.append(LineError(number, "(line)", f"a field is longer than {MAX_LINE_CHARS} characters"))
                continue
            if None in row:
                errors.append(LineError(number, "(row)", "more fields than the header names"))
                continue
            prompt = _prompt_from_row(number, {k: v for k, v in row.items() if v != ""}, errors, "csv")
            if prompt:
                prompts.append(prompt)
    except csv.Error as exc:
        errors.append(LineError(reader.line_num, "(csv)", str(exc)))
    if errors:
        raise ImportValidationError(errors)
    return prompts
