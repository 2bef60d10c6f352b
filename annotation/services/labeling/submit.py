"""Verdicts: validate, submit (one SQL statement on PostgreSQL without an edit, the locked Python
path otherwise; tests/annotation/test_submit_paths.py keeps them equal) and skip. A swapped
repeat's verdict takes the locked path and becomes a RepeatJudgment, never a Judgment."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from rapidfuzz.distance import Levenshtein

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Judgment,
    Project,
    RepeatJudgment,
    Response,
    ResponseSource,
    SafetyBin,
    Strength,
)
from annotation.services.labeling.common import (
    ATTRIBUTES,
    AlreadyEnded,
    AssignmentNotFound,
    FLAGS,
    IdempotencyKeyReused,
    InvalidVerdict,
    LeaseExpired,
    MAX_RATIONALE_CHARS,
    MAX_SKIP_REASON_CHARS,
    SIDES,
    aware,
    db_time,
    insert_row,
)
from annotation.services.labeling.sql import COUNT_SQL, LOCKED_ASSIGNMENT_SQL, SUBMIT_SQL
from config import db


@dataclass(frozen=True)
class Verdict:
    """What a labeler submits, by screen side; the service maps sides to responses."""

    chosen: str  # "left" | "right"
    strength: str
    both_bad: bool = False
    edit: str | None = None  # the improved chosen response, or None for "no edit needed"
    attributes: dict = field(default_factory=dict)  # {"left": {"helpfulness": 3, ...}, "right": {...}}
    flags: dict = field(default_factory=dict)  # {"left": ["unsafe"], "right": []}
    rationale: str = ""
    idempotency_key: str = ""
    # Llama 2's safety bin of the pair, from the chosen response's side (SafetyBin); required
    # where the project asks it, refused where it does not.
    safety: str | None = None


def _normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def verdict_validate(verdict: Verdict, project: Project | None, *, asks_safety: bool | None = None) -> None:
    """Check a verdict; ``project`` (for the edit rules) is needed only when it carries an edit.

    ``asks_safety`` is the project's ``ask_safety``, or None where the caller does not know it:
    the PostgreSQL statement matches only a verdict whose bin agrees with the project, and sends
    any other to the locked path, which knows and says why.
    """
    if verdict.chosen not in SIDES:
        raise InvalidVerdict(f"chosen: expected 'left' or 'right', got {verdict.chosen!r}")
    if verdict.strength not in Strength.values:
        raise InvalidVerdict(f"strength: expected one of {', '.join(Strength.values)}, got {verdict.strength!r}")
    if verdict.edit is not None:
        if not project.edit_step:
            raise InvalidVerdict("edit: this project has no edit step")
        if len(verdict.edit) > project.max_edit_chars:
            raise InvalidVerdict(f"edit: longer than the project's limit of {project.max_edit_chars} characters")
        if not verdict.edit.strip():
            raise InvalidVerdict("edit: an edit cannot be empty; send null for 'no edit needed'")
    if len(verdict.rationale) > MAX_RATIONALE_CHARS:
        raise InvalidVerdict(f"rationale: longer than {MAX_RATIONALE_CHARS} characters")
    if len(verdict.idempotency_key) > 64:
        raise InvalidVerdict("idempotency_key: at most 64 characters")
    for side, ratings in verdict.attributes.items():
        if side not in SIDES or not isinstance(ratings, dict):
            raise InvalidVerdict("attributes: expected {'left': {...}, 'right': {...}}")
        for name, value in ratings.items():
            if name not in ATTRIBUTES:
                raise InvalidVerdict(f"attributes.{side}.{name}: not one of {', '.join(ATTRIBUTES)}")
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4:
                raise InvalidVerdict(f"attributes.{side}.{name}: expected an integer from 0 to 4")
    for side, flags in verdict.flags.items():
        if side not in SIDES or not isinstance(flags, list):
            raise InvalidVerdict("flags: expected {'left': [...], 'right': [...]}")
        unknown = set(flags) - set(FLAGS)
        if unknown:
            raise InvalidVerdict(f"flags.{side}: unknown {sorted(unknown)}; use {', '.join(FLAGS)}")
    if verdict.safety is not None and verdict.safety not in SafetyBin.values:
        raise InvalidVerdict(f"safety: expected one of {', '.join(SafetyBin.values)} or null, got {verdict.safety!r}")
    if asks_safety and verdict.safety is None:
        raise InvalidVerdict(f"safety: this project asks whether each response is safe; send one of {', '.join(SafetyBin.values)}")
    # Refused rather than dropped: a bin the project did not ask for means the client's view of
    # the project is stale (as an edit to a project without an edit step), and storing null
    # silently would lose what the labeler said without telling them.
    if asks_safety is False and verdict.safety is not None:
        raise InvalidVerdict("safety: this project does not ask the safety bin; send null")


def _locked_assignment(*, assignment_id: int, labeler) -> tuple[Assignment, bool]:
    """The caller's own assignment, row-locked, with its comparison (ids only) attached, and
    whether its project asks the safety bin."""
    lock = " FOR UPDATE OF a" if connection.features.has_select_for_update_of else ""
    with connection.cursor() as cursor:
        cursor.execute(
            LOCKED_ASSIGNMENT_SQL.format(lock=lock),
            {"assignment": assignment_id, "labeler": labeler.pk, "superuser": labeler.is_superuser},
        )
        row = cursor.fetchone()
    if row is None:
        # Someone else's lease reads as "not found": its existence is none of this labeler's business.
        raise AssignmentNotFound("No such assignment for you")
    (pk, comparison_id, labeler_id, left_id, state, leased_at, expires_at, ended_at, skip_reason, repeat_of_id,
     project_id, prompt_id, a_id, b_id, asks_safety) = row
    assignment = Assignment(
        id=pk, comparison_id=comparison_id, labeler_id=labeler_id, left_response_id=left_id, state=state,
        leased_at=aware(leased_at), expires_at=aware(expires_at),
        ended_at=ended_at and aware(ended_at), skip_reason=skip_reason, repeat_of_id=repeat_of_id,
    )
    assignment._state.adding, assignment._state.db = False, connection.alias
    assignment.comparison = Comparison(
        id=comparison_id, project_id=project_id, prompt_id=prompt_id, response_a_id=a_id, response_b_id=b_id
    )
    return assignment, bool(asks_safety)  # SQLite hands the boolean back as 0 or 1


def _submit_postgresql(*, assignment_id: int, labeler, verdict: Verdict, now) -> Judgment | None:
    def side(values: dict, name: str):
        value = values.get(name)
        return json.dumps(sorted(set(value)) if isinstance(value, list) else value) if value else None

    params = {
        "now": now, "day": timezone.localdate(now), "assignment": assignment_id, "labeler": labeler.pk,
        "superuser": labeler.is_superuser,
        "chosen_left": verdict.chosen == "left", "strength": verdict.strength, "both_bad": verdict.both_bad,
        "attributes_left": side(verdict.attributes, "left"), "attributes_right": side(verdict.attributes, "right"),
        "flags_left": side(verdict.flags, "left"), "flags_right": side(verdict.flags, "right"),
        "rationale": verdict.rationale, "key": verdict.idempotency_key,
        "safety": verdict.safety, "has_safety": verdict.safety is not None,
    }
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        db.execute(cursor, "arbiter_submit", SUBMIT_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    pk, assignment_pk, comparison_id, chosen_id, rejected_id, left_id, attributes, flags, leased_at, ms, project_id = row
    # Django has psycopg hand jsonb back as text (JSONField decodes it); so do we.
    attributes, flags = (json.loads(v) if isinstance(v, str) else v for v in (attributes, flags))
    judgment = Judgment(
        id=pk, assignment_id=assignment_pk, comparison_id=comparison_id, labeler_id=labeler.pk,
        chosen_response_id=chosen_id, rejected_response_id=rejected_id, strength=verdict.strength,
        left_response_id=left_id, both_bad=verdict.both_bad, safety=verdict.safety, edited_response_id=None, attributes=attributes,
        flags=flags, rationale=verdict.rationale, leased_at=leased_at, submitted_at=now, time_on_task_ms=ms,
        idempotency_key=verdict.idempotency_key,
    )
    judgment._state.adding, judgment._state.db = False, connection.alias
    judgment.comparison = Comparison(id=comparison_id, project_id=project_id)
    return judgment


def judgment_submit(*, assignment_id: int, labeler, verdict: Verdict) -> tuple[Judgment, bool]:
    """Record the verdict, the edit and the end of the lease together, or nothing.

    Returns ``(judgment, created)``; a retry with the same idempotency key returns the first
    judgment with ``created=False``. A different second verdict is refused. A swapped repeat's
    verdict is stored as a RepeatJudgment and answered the same way, with an unsaved judgment
    (no id: there is no label to change).
    """
    if connection.vendor == "postgresql" and verdict.edit is None:
        verdict_validate(verdict, None)
        judgment = _submit_postgresql(assignment_id=assignment_id, labeler=labeler, verdict=verdict, now=timezone.now())
        if judgment is not None:
            return judgment, True
    return _judgment_submit_locked(assignment_id=assignment_id, labeler=labeler, verdict=verdict)


def _response_by_side(assignment: Assignment) -> dict[str, int]:
    """The response ids the labeler saw on the left and on the right."""
    comparison, left_id = assignment.comparison, assignment.left_response_id
    return {"left": left_id, "right": comparison.response_b_id if left_id == comparison.response_a_id else comparison.response_a_id}


def _by_response(verdict: Verdict, by_side: dict[str, int]) -> tuple[dict, dict]:
    """The verdict's ratings and flags keyed by response id, as a judgment stores them (sides the
    labeler did not rate are left out; so are unknown sides, which only an unvalidated retry has)."""
    attributes = {str(by_side[side]): ratings for side, ratings in verdict.attributes.items() if ratings and side in by_side}
    flags = {str(by_side[side]): sorted(set(names)) for side, names in verdict.flags.items() if names and side in by_side}
    return attributes, flags


def _same_verdict(judgment: Judgment, verdict: Verdict, assignment: Assignment) -> bool:
    """Whether ``verdict`` is the request that recorded ``judgment``, as the submit would store it."""
    by_side = _response_by_side(assignment)
    if verdict.edit is None:
        same_edit = judgment.edited_response_id is None
    elif judgment.edited_response_id is not None:
        same_edit = judgment.edited_response.text == verdict.edit
    else:  # the first edit changed only whitespace, so none was stored
        same_edit = _normalise_whitespace(verdict.edit) == _normalise_whitespace(judgment.chosen_response.text)
    return (
        same_edit
        and judgment.chosen_response_id == by_side.get(verdict.chosen)
        and judgment.strength == verdict.strength
        and judgment.both_bad == verdict.both_bad
        and judgment.safety == verdict.safety
        and judgment.rationale == verdict.rationale
        and (judgment.attributes, judgment.flags) == _by_response(verdict, by_side)
    )


@transaction.atomic
def _judgment_submit_locked(*, assignment_id: int, labeler, verdict: Verdict) -> tuple[Judgment, bool]:
    """The general path: lock the assignment, say why a submit cannot be taken, write an edit."""
    assignment, asks_safety = _locked_assignment(assignment_id=assignment_id, labeler=labeler)
    if assignment.state == AssignmentState.SUBMITTED and assignment.repeat_of_id is not None:
        return _repeat_replayed(assignment=assignment, verdict=verdict), False
    if assignment.state == AssignmentState.SUBMITTED:
        existing = Judgment.objects.select_related("edited_response", "chosen_response").get(assignment=assignment)
        if verdict.idempotency_key and verdict.idempotency_key == existing.idempotency_key:
            # A retry is the same request sent again; the same key on another verdict is a client
            # bug, and answering 200 with the first judgment would drop the second one silently.
            if not _same_verdict(existing, verdict, assignment):
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used for a different verdict on this comparison; "
                    "the first verdict stands. Use a new key for a new request."
                )
            return existing, False
        raise AlreadyEnded("This comparison is already judged; a judgment cannot be changed by resubmitting")
    now = timezone.now()
    if assignment.state == AssignmentState.EXPIRED or (
        assignment.state == AssignmentState.LEASED and assignment.expires_at <= now
    ):
        raise LeaseExpired("This lease expired and the comparison went back to the pool; ask for the next one")
    if assignment.state != AssignmentState.LEASED:
        raise AlreadyEnded(f"This assignment was {assignment.state}; ask for the next comparison")

    # The project's edit settings matter only to an edit: don't read the project row for every
    # submit (whether it asks the safety bin came with the locked assignment).
    verdict_validate(
        verdict, Project.objects.get(pk=assignment.comparison.project_id) if verdict.edit is not None else None,
        asks_safety=asks_safety,
    )
    if assignment.repeat_of_id is not None:
        return _repeat_submit(assignment=assignment, labeler=labeler, verdict=verdict, now=now), True
    comparison = assignment.comparison
    by_side = _response_by_side(assignment)
    left_id = by_side["left"]
    chosen_id = by_side[verdict.chosen]
    rejected_id = by_side["right" if verdict.chosen == "left" else "left"]
    attributes, flags = _by_response(verdict, by_side)

    edited = None
    if verdict.edit is not None:
        chosen = Response.objects.get(pk=chosen_id)
        # Whitespace-only changes are not an edit: they would train "edited > chosen" on noise.
        if _normalise_whitespace(verdict.edit) != _normalise_whitespace(chosen.text):
            edited = Response.objects.create(
                prompt_id=comparison.prompt_id,
                source=ResponseSource.HUMAN_EDIT,
                text=verdict.edit,
                parent=chosen,
                author=labeler,
                edit_distance=Levenshtein.distance(chosen.text, verdict.edit),
            )

    judgment = insert_row(
        Judgment,
        assignment=assignment,
        comparison=comparison,
        labeler=labeler,
        chosen_response_id=chosen_id,
        rejected_response_id=rejected_id,
        strength=verdict.strength,
        left_response_id=left_id,
        both_bad=verdict.both_bad,
        safety=verdict.safety,
        edited_response=edited,
        attributes=attributes,
        flags=flags,
        rationale=verdict.rationale,
        leased_at=assignment.leased_at,
        submitted_at=now,
        time_on_task_ms=int((now - assignment.leased_at).total_seconds() * 1000),
        idempotency_key=verdict.idempotency_key,
    )
    _assignment_submitted(assignment=assignment, labeler=labeler, now=now)
    return judgment, True


def _assignment_submitted(*, assignment: Assignment, labeler, now) -> None:
    """End the lease as submitted and count it in the labeler's "done today", in the submit's transaction."""
    assignment.state = AssignmentState.SUBMITTED
    assignment.ended_at = now
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE annotation_assignment SET state = %s, ended_at = %s WHERE id = %s",
            [assignment.state, db_time(now), assignment.pk],
        )
        cursor.execute(
            COUNT_SQL, [labeler.pk, assignment.comparison.project_id, connection.ops.adapt_datefield_value(timezone.localdate(now))]
        )


def _repeat_submit(*, assignment: Assignment, labeler, verdict: Verdict, now) -> Judgment:
    """A swapped repeat's verdict (already validated as any): a RepeatJudgment beside the original,
    whether its winner flipped, and the lease ended and counted as any submit, so nothing the
    labeler sees differs. An edit, ratings, flags and a rationale are dropped: a repeat is no label."""
    by_side = _response_by_side(assignment)
    chosen_id = by_side[verdict.chosen]
    original_chosen_id = Judgment.objects.filter(pk=assignment.repeat_of_id).values_list("chosen_response_id", flat=True).get()
    repeat = RepeatJudgment.objects.create(
        assignment_id=assignment.pk, original_id=assignment.repeat_of_id, labeler=labeler, chosen_response_id=chosen_id,
        strength=verdict.strength, left_response_id=by_side["left"], both_bad=verdict.both_bad, safety=verdict.safety,
        flipped=chosen_id != original_chosen_id, submitted_at=now,
        time_on_task_ms=int((now - assignment.leased_at).total_seconds() * 1000), idempotency_key=verdict.idempotency_key,
    )
    _assignment_submitted(assignment=assignment, labeler=labeler, now=now)
    return _as_judgment(repeat, assignment, edit=verdict.edit)


def _repeat_replayed(*, assignment: Assignment, verdict: Verdict) -> Judgment:
    """A submit of a swapped repeat already submitted, answered as ``_judgment_submit_locked``
    answers one of a judgment: the first answer for a retry, refused otherwise. A retry is compared
    on what a repeat keeps (side, strength, both bad, safety bin)."""
    repeat = RepeatJudgment.objects.get(assignment_id=assignment.pk)
    if not (verdict.idempotency_key and verdict.idempotency_key == repeat.idempotency_key):
        raise AlreadyEnded("This comparison is already judged; a judgment cannot be changed by resubmitting")
    same = (
        repeat.chosen_response_id == _response_by_side(assignment).get(verdict.chosen)
        and (repeat.strength, repeat.both_bad, repeat.safety) == (verdict.strength, verdict.both_bad, verdict.safety)
    )
    if not same:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different verdict on this comparison; "
            "the first verdict stands. Use a new key for a new request."
        )
    return _as_judgment(repeat, assignment, edit=verdict.edit)


def _as_judgment(repeat: RepeatJudgment, assignment: Assignment, *, edit: str | None) -> Judgment:
    """What the submit answers for a repeat, so the answer looks like any other: the verdict as an
    unsaved Judgment (no id), with the comparison's project as the API reads it, and an unsaved
    edit where a real one was sent (the page says "saved, with your edit" as for any)."""
    by_side = _response_by_side(assignment)
    rejected_id = by_side["right"] if repeat.chosen_response_id == by_side["left"] else by_side["left"]
    judgment = Judgment(
        assignment_id=assignment.pk, comparison_id=assignment.comparison_id, labeler_id=repeat.labeler_id,
        chosen_response_id=repeat.chosen_response_id, rejected_response_id=rejected_id, strength=repeat.strength,
        left_response_id=repeat.left_response_id, both_bad=repeat.both_bad, safety=repeat.safety, edited_response_id=None,
        leased_at=assignment.leased_at, submitted_at=repeat.submitted_at, time_on_task_ms=repeat.time_on_task_ms,
        idempotency_key=repeat.idempotency_key,
    )
    judgment.comparison = Comparison(id=assignment.comparison_id, project_id=assignment.comparison.project_id)
    if edit is not None:
        chosen = Response.objects.only("prompt_id", "text").get(pk=repeat.chosen_response_id)
        if _normalise_whitespace(edit) != _normalise_whitespace(chosen.text):
            judgment.edited_response = Response(
                prompt_id=chosen.prompt_id, source=ResponseSource.HUMAN_EDIT, text=edit, parent=chosen, author_id=repeat.labeler_id
            )
    return judgment


@transaction.atomic
def assignment_skip(*, assignment_id: int, labeler, reason: str) -> Assignment:
    """End a lease without a verdict; the comparison returns to the pool for other labelers."""
    reason = reason.strip()
    if not reason:
        raise InvalidVerdict("reason: say why you skip (e.g. 'cannot judge code', 'prompt unclear')")
    if len(reason) > MAX_SKIP_REASON_CHARS:
        raise InvalidVerdict(f"reason: at most {MAX_SKIP_REASON_CHARS} characters")
    assignment, _asks_safety = _locked_assignment(assignment_id=assignment_id, labeler=labeler)
    if assignment.state == AssignmentState.SKIPPED:
        return assignment  # a retried skip
    now = timezone.now()
    if assignment.state == AssignmentState.EXPIRED or (
        assignment.state == AssignmentState.LEASED and assignment.expires_at <= now
    ):
        raise LeaseExpired("This lease expired already; ask for the next comparison")
    if assignment.state != AssignmentState.LEASED:
        raise AlreadyEnded(f"This assignment was {assignment.state}; it cannot be skipped")
    assignment.state = AssignmentState.SKIPPED
    assignment.ended_at = now
    assignment.skip_reason = reason
    assignment.save(update_fields=["state", "ended_at", "skip_reason"])
    if assignment.repeat_of_id is None:  # a swapped repeat held no slot
        Comparison.objects.filter(pk=assignment.comparison_id, slots_taken__gt=0).update(slots_taken=F("slots_taken") - 1)
    return assignment
