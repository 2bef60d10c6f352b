"""Prompts: validation of chat conversations, content hashing, deduplicated writes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable

from django.db import transaction

from annotation.models import Project, Prompt

CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PromptData:
    """A validated prompt, ready to write."""

    messages: list[dict[str, str]]
    category: str = ""
    tags: list[str] = field(default_factory=list)
    source: str = ""
    metadata: dict = field(default_factory=dict)


def prompt_content_hash(*, messages: list[dict[str, str]]) -> str:
    """sha256 of the conversation's canonical JSON: same roles and texts, same hash."""
    canonical = json.dumps(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def messages_validate(messages: object) -> list[str]:
    """Problems with a chat conversation to be answered; empty when it is valid."""
    if not isinstance(messages, list) or not messages:
        return ["messages: expected a non-empty list of {role, content} objects"]
    problems = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.append(f"messages[{i}]: expected an object with role and content")
            continue
        if message.get("role") not in CHAT_ROLES:
            problems.append(f"messages[{i}].role: expected one of {', '.join(CHAT_ROLES)}, got {message.get('role')!r}")
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            problems.append(f"messages[{i}].content: expected non-empty text")
    if not problems:
        roles = [m["role"] for m in messages]
        if "system" in roles[1:]:
            problems.append("messages: a system message may only come first")
        if roles[-1] != "user":
            problems.append("messages: the last message must be the user turn to answer")
    return problems


@dataclass(frozen=True)
class PromptImportResult:
    created: int
    duplicates: int


@transaction.atomic
def prompts_create(*, project: Project, prompts: Iterable[PromptData], batch_size: int = 2000) -> PromptImportResult:
    """Write already-validated prompts; the same conversation already in the project (or earlier
    in ``prompts``) is skipped as a duplicate.

    ``prompts`` is consumed in batches, so an import's memory is one batch, whatever the file's
    length. Duplicates are detected by the database's unique (project, content_hash) constraint,
    via ``ignore_conflicts``, so two imports running at once cannot both insert the same prompt.
    """
    before = Prompt.objects.filter(project=project).count()
    total = 0
    batch: dict[str, Prompt] = {}  # by hash: one INSERT never holds the same row twice

    def flush():
        Prompt.objects.bulk_create(batch.values(), batch_size=batch_size, ignore_conflicts=True)
        batch.clear()

    for data in prompts:
        total += 1
        content_hash = prompt_content_hash(messages=data.messages)
        if content_hash in batch:
            continue  # a model instance costs more than the rest of a row's work
        batch[content_hash] = Prompt(
            project=project,
            messages=data.messages,
            category=data.category,
            tags=data.tags,
            source=data.source,
            metadata=data.metadata,
            content_hash=content_hash,
        )
        if len(batch) >= batch_size:
            flush()
    flush()
    created = Prompt.objects.filter(project=project).count() - before
    return PromptImportResult(created=created, duplicates=total - created)
