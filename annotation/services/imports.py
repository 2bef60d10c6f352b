"""Writing validated imports: all of a file or nothing."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import astuple, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Iterable

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    Judgment,
    Project,
    Prompt,
    Response,
    ResponseSource,
    Strength,
    imported_account_name,
)
from annotation.services.prompts import prompt_content_hash

if TYPE_CHECKING:  # importers import services; services only need the type
    from annotation.importers import PreferencePair


@dataclass(frozen=True)
class PairImportResult:
    prompts_created: int
    comparisons_created: int
    duplicates: int

    def __add__(self, other: PairImportResult) -> PairImportResult:
        return PairImportResult(*(a + b for a, b in zip(astuple(self), astuple(other))))


def import_user(*, source: str):
    """The account imported judgments are recorded under: inactive, no password, no project role."""
    User = get_user_model()
    user, created = User.objects.get_or_create(username=imported_account_name(source), defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _pair_key(content_hash: str, chosen: str, rejected: str) -> bytes:
    """A pair's identity in 32 bytes: the texts themselves may be 200,000 characters each."""
    return hashlib.sha256("\x00".join((content_hash, chosen, rejected)).encode()).digest()


@transaction.atomic
def preference_pairs_import(
    *, project: Project, pairs: Iterable[PreferencePair], source: str, strength: str | None = None, batch_size: int = 1000
) -> PairImportResult:
    """Prompts plus pre-labelled comparisons (chosen > rejected), one judgment each by the import
    account. A pair already imported into the project (same conversation, same endings) is
    skipped as a duplicate. ``pairs`` is consumed ``batch_size`` at a time: an import's memory is
    one batch plus 32 bytes per pair, whatever the file's length.
    Imported comparisons are training data, not labeling tasks: the queue never offers them.
    ``strength``: None (the default) when the source gives none, as HH-RLHF does: the pairs then
    carry no strength and margin 0 in exports, instead of an invented one."""
    if strength is not None and strength not in Strength.values:
        raise ValueError(f"strength must be one of {', '.join(Strength.values)} or None")
    user, now = import_user(source=source), timezone.now()
    seen: set[bytes] = set()  # pairs of this file and the project's earlier imports, as _pair_key
    totals = PairImportResult(prompts_created=0, comparisons_created=0, duplicates=0)
    batch: list[PreferencePair] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) >= batch_size:
            totals = totals + _pairs_write(project=project, pairs=batch, source=source, strength=strength, user=user, now=now, seen=seen)
            batch = []
    if batch:
        totals = totals + _pairs_write(project=project, pairs=batch, source=source, strength=strength, user=user, now=now, seen=seen)
    return totals


def _pairs_write(*, project, pairs, source, strength, user, now, seen: set[bytes]) -> PairImportResult:
    hashes = [prompt_content_hash(messages=p.messages) for p in pairs]
    existing = dict(Prompt.objects.filter(project=project, content_hash__in=set(hashes)).values_list("content_hash", "id"))
    # The same conversation may come with several pairs of endings (HH-RLHF has such rows): the
    # prompt is stored once, and a pair is a duplicate only if its two endings were seen already.
    seen.update(
        _pair_key(*row)
        for row in Comparison.objects.filter(prompt_id__in=existing.values(), source=ComparisonSource.IMPORT).values_list(
            "prompt__content_hash", "response_a__text", "response_b__text"
        )
    )
    new_prompts, keep = {}, []
    for pair, content_hash in zip(pairs, hashes):
        key = _pair_key(content_hash, pair.chosen, pair.rejected)
        if key in seen:
            continue
        seen.add(key)
        keep.append((pair, content_hash))
        if content_hash not in existing and content_hash not in new_prompts:
            new_prompts[content_hash] = Prompt(
                project=project, messages=pair.messages, content_hash=content_hash, source=f"{source}:{pair.line}", tags=[source]
            )
    for prompt in Prompt.objects.bulk_create(new_prompts.values(), batch_size=1000):
        existing[prompt.content_hash] = prompt.pk
    responses = Response.objects.bulk_create(
        [
            Response(prompt_id=existing[h], source=ResponseSource.IMPORT, text=text)
            for pair, h in keep
            for text in (pair.chosen, pair.rejected)
        ],
        batch_size=2000,
    )
    comparisons = Comparison.objects.bulk_create(
        [
            Comparison(
                project=project, prompt_id=existing[h], response_a=responses[2 * i], response_b=responses[2 * i + 1],
                source=ComparisonSource.IMPORT, slots_taken=1,
            )
            for i, (pair, h) in enumerate(keep)
        ],
        batch_size=1000,
    )
    assignments = Assignment.objects.bulk_create(
        [
            Assignment(
                comparison=c, labeler=user, left_response=c.response_a, state=AssignmentState.SUBMITTED,
                leased_at=now, expires_at=now + timedelta(seconds=1), ended_at=now,
            )
            for c in comparisons
        ],
        batch_size=1000,
    )
    Judgment.objects.bulk_create(
        [
            Judgment(
                assignment=a, comparison=c, labeler=user, chosen_response=c.response_a, rejected_response=c.response_b,
                left_response=c.response_a, strength=strength, leased_at=now, submitted_at=now, time_on_task_ms=0,
                idempotency_key=f"import-{uuid.uuid4().hex}",
            )
            for a, c in zip(assignments, comparisons)
        ],
        batch_size=1000,
    )
    return PairImportResult(
        prompts_created=len(new_prompts), comparisons_created=len(comparisons), duplicates=len(pairs) - len(keep)
    )
