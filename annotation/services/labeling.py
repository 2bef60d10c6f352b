"""The labeling queue: lease the next comparison, submit a judgment, skip, expire leases.

Concurrency (the races this module is written around):
- Two labelers asking for work at once must never push a comparison past ``overlap_k``
  live-or-done assignments. ``Comparison.slots_taken`` counts its leased-or-submitted
  assignments, kept in step in the same transaction as every lease, skip and expiry; it is never
  below the live-or-done count (an expired lease keeps its slot until swept). The lease takes
  a slot with one UPDATE whose pick is ``FOR UPDATE SKIP LOCKED`` and whose condition
  ``slots_taken < k`` PostgreSQL re-checks on the newest row version when it locks it, so two
  leases can never both take the last slot. On SQLite, transactions are ``BEGIN IMMEDIATE``
  (settings), so writers are serialised.
- One labeler never gets a comparison twice: the unique (comparison, labeler) constraint on
  Assignment is the guarantee; the queue's filter only keeps us from hitting it.
- A submit and a lease expiry racing: the submit locks the assignment row and checks
  ``expires_at`` itself; the expiry claims rows with SKIP LOCKED and ends them with a
  conditional UPDATE on ``state=leased``, so whichever commits first wins and the other
  changes nothing.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from rapidfuzz.distance import Levenshtein

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    Judgment,
    Project,
    Response,
    ResponseSource,
    Strength,
)
from config import db

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")  # HelpSteer2, 0-4
FLAGS = ("unsafe", "factually_wrong", "private_data", "refuses_needlessly")
SIDES = ("left", "right")
MAX_RATIONALE_CHARS = 5000
MAX_SKIP_REASON_CHARS = 200


class LabelingError(Exception):
    """A request the queue refuses; ``code`` is stable for API clients, ``status`` is HTTP."""

    code = "invalid"
    status = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class AssignmentNotFound(LabelingError):
    code, status = "not_found", 404


class LeaseExpired(LabelingError):
    code, status = "lease_expired", 409


class AlreadyEnded(LabelingError):
    code, status = "already_ended", 409


class LeaseCapReached(LabelingError):
    code, status = "lease_cap", 429


class IdempotencyKeyReused(LabelingError):
    """The key was already used for a different verdict (the IETF Idempotency-Key draft's 422)."""

    code, status = "idempotency_key_reused", 422


class InvalidVerdict(LabelingError):
    code, status = "invalid_verdict", 400


def comparison_slots_recount(*, comparison_id: int) -> int:
    """Set a comparison's ``slots_taken`` to its leased-or-submitted assignments; returns it.

    The services keep the count in step themselves; this is for data written around them
    (fixtures, repairs). Leases past their expiry count until the sweep ends them, so the count
    is never below the live-or-done assignments, which is what lets the lease trust it.
    """
    taken = Assignment.objects.filter(
        comparison_id=comparison_id, state__in=(AssignmentState.LEASED, AssignmentState.SUBMITTED)
    ).count()
    Comparison.objects.filter(pk=comparison_id).exclude(slots_taken=taken).update(slots_taken=taken)
    return taken


# The lease is one UPDATE: pick the first comparison of a kind, lock it, take a slot, return its
# responses. On PostgreSQL the pick is ``FOR UPDATE SKIP LOCKED``: a comparison another request
# is leasing right now is passed over, not waited for; a comparison whose slot count a
# committed lease changed after our snapshot is re-read when locked (READ COMMITTED re-checks
# the row's WHERE against its newest version), so ``slots_taken < k`` holds at the moment the
# slot is taken. On SQLite writers are serialised (BEGIN IMMEDIATE) and the clause is empty.
# Raw SQL because this runs on every "next" and the ORM spent more time compiling the
# Exists/OuterRef version than PostgreSQL spent answering it.
_LEASE_SQL = """
UPDATE annotation_comparison SET slots_taken = slots_taken + 1
WHERE id = (
    SELECT c.id FROM annotation_comparison c
    WHERE c.project_id = %(project)s AND c.is_gold = %(gold)s AND c.source <> %(imported)s
      AND c.slots_taken >= %(low)s AND c.slots_taken < %(high)s
      AND NOT EXISTS (
          SELECT 1 FROM annotation_assignment a WHERE a.comparison_id = c.id AND a.labeler_id = %(labeler)s
      )
    ORDER BY c.slots_taken, c.id
    LIMIT 1{lock}
)
RETURNING id, response_a_id, response_b_id
"""

_LIVE_LEASES_SQL = """
SELECT a.id, a.comparison_id, a.left_response_id, a.leased_at, a.expires_at
FROM annotation_assignment a JOIN annotation_comparison c ON c.id = a.comparison_id
WHERE a.labeler_id = %s AND a.state = 'leased' AND a.expires_at > %s AND c.project_id = %s
ORDER BY a.leased_at, a.id
"""


def _insert(model, **values):
    """``model.objects.create(**values)`` for the hot path: the same row, values prepared by the
    fields themselves (JSON, datetimes per database), without compiling an ORM INSERT each time.
    No signals are sent (nothing in Arbiter listens for these models' saves)."""
    obj = model(**values)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES ({placeholders}) RETURNING id",
            params,
        )
        obj.pk = cursor.fetchone()[0]
    obj._state.adding, obj._state.db = False, connection.alias
    return obj


def db_time(value: datetime):
    """An aware datetime as a raw-SQL parameter, stored as the ORM stores it (naive UTC on SQLite)."""
    return connection.ops.adapt_datetimefield_value(value)


def _slot_ranges(*, project: Project, gold: bool) -> list[tuple[int, int]]:
    """Slot-count ranges to try in order, each an index range scan of ``comparison_queue``.

    Regular: comparisons already started toward k, fewest labels first (breadth first), then
    new ones; oldest first within each. Gold: any gold item this labeler has not seen, since
    gold measures labelers and is shown to each of them once, whatever k is.
    """
    if gold:
        return [(0, 2**31 - 1)]
    return [(1, project.overlap_k), (0, 1)]


# PostgreSQL: the slot and the assignment in one statement, atomic by itself (no BEGIN/COMMIT
# round trips): the UPDATE above as a data-modifying CTE feeding the INSERT. A unique violation
# (the same labeler leasing in two tabs) fails the whole statement, slot included.
_LEASE_INSERT_SQL = """
WITH picked AS ({lease})
INSERT INTO annotation_assignment (comparison_id, labeler_id, left_response_id, state, leased_at, expires_at, skip_reason)
SELECT id, %(labeler)s, CASE WHEN %(left_is_a)s THEN response_a_id ELSE response_b_id END, 'leased', %(now)s, %(expires)s, ''
FROM picked
RETURNING id, comparison_id, left_response_id
"""


def _try_lease(*, project: Project, labeler, gold: bool, now) -> Assignment | None:
    """Lease one comparison of the kind asked for, or None when that pool is empty for this labeler."""
    if connection.vendor == "postgresql":
        return _try_lease_postgresql(project=project, labeler=labeler, gold=gold, now=now)
    return _try_lease_serialised(project=project, labeler=labeler, gold=gold, now=now)


def _try_lease_postgresql(*, project: Project, labeler, gold: bool, now) -> Assignment | None:
    sql = _LEASE_INSERT_SQL.format(lease=_LEASE_SQL.format(lock=" FOR UPDATE SKIP LOCKED"))
    expires = now + timedelta(minutes=project.lease_minutes)
    for low, high in _slot_ranges(project=project, gold=gold):
        params = {
            "project": project.pk, "gold": gold, "imported": ComparisonSource.IMPORT, "low": low, "high": high,
            "labeler": labeler.pk, "left_is_a": random.random() < 0.5, "now": now, "expires": expires,
        }
        try:
            # In autocommit (a request) the statement is its own transaction; inside an atomic
            # block (a caller's transaction, the tests') a savepoint keeps a unique violation local.
            with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
                db.execute(cursor, "arbiter_lease", sql, params)
                row = cursor.fetchone()
        except IntegrityError:
            return _try_lease_postgresql(project=project, labeler=labeler, gold=gold, now=now)  # look again
        if row is None:
            continue  # nothing of this kind for this labeler: on to the next range
        return _leased(pk=row[0], comparison_id=row[1], labeler=labeler, left_id=row[2], leased_at=now, expires_at=expires)
    return None


def _leased(*, pk, comparison_id, labeler, left_id, leased_at, expires_at) -> Assignment:
    """A live lease read by raw SQL, as the ORM would hand it back."""
    assignment = Assignment(
        id=pk, comparison_id=comparison_id, labeler_id=labeler.pk, left_response_id=left_id,
        state=AssignmentState.LEASED, leased_at=leased_at, expires_at=expires_at, skip_reason="",
    )
    assignment._state.adding, assignment._state.db = False, connection.alias
    return assignment


def _try_lease_serialised(*, project: Project, labeler, gold: bool, now) -> Assignment | None:
    """SQLite (writers serialised by BEGIN IMMEDIATE): the slot, then the assignment, in one
    transaction for all the slot ranges."""
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    sql = _LEASE_SQL.format(lock=lock)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for low, high in _slot_ranges(project=project, gold=gold):
                params = {
                    "project": project.pk, "gold": gold, "imported": ComparisonSource.IMPORT,
                    "low": low, "high": high, "labeler": labeler.pk,
                }
                cursor.execute(sql, params)
                row = cursor.fetchone()
                if row is None:
                    continue  # nothing of this kind for this labeler: on to the next range
                comparison_id, response_a_id, response_b_id = row
                assignment = _insert(
                    Assignment,
                    comparison_id=comparison_id,
                    labeler_id=labeler.pk,
                    left_response_id=random.choice((response_a_id, response_b_id)),
                    state=AssignmentState.LEASED,
                    leased_at=now,
                    expires_at=now + timedelta(minutes=project.lease_minutes),
                )
                return assignment
    except IntegrityError:
        # The same labeler leasing in two tabs at once: the unique (comparison, labeler)
        # constraint let one through and rolled this one back, slot and all; look again.
        return _try_lease_serialised(project=project, labeler=labeler, gold=gold, now=now)
    return None


def _live_leases(*, labeler, project: Project, now) -> list[Assignment]:
    with connection.cursor() as cursor:
        db.execute(cursor, "arbiter_live_leases", _LIVE_LEASES_SQL, [labeler.pk, db_time(now), project.pk])
        rows = cursor.fetchall()
    return [
        _leased(pk=pk, comparison_id=c, labeler=labeler, left_id=left, leased_at=_aware(leased), expires_at=_aware(expires))
        for pk, c, left, leased, expires in rows
    ]


def comparison_lease_next(*, project: Project, labeler, exclude: tuple[int, ...] = ()) -> Assignment | None:
    """The labeler's next assignment in ``project``, or None when there is nothing to label.

    Order: their own unexpired lease (not in ``exclude``), then gold at the project's rate, then
    comparisons already started toward k, then new ones. Raises ``LeaseCapReached`` when the
    labeler already holds ``max_live_leases`` live leases (a client prefetching too far ahead).
    """
    now = timezone.now()
    live = _live_leases(labeler=labeler, project=project, now=now)
    own = next((a for a in live if a.pk not in exclude), None)
    if own is not None:
        return own
    if len(live) >= project.max_live_leases:
        raise LeaseCapReached(f"You already hold {project.max_live_leases} open comparisons in this project")
    if project.gold_rate > 0 and random.random() < project.gold_rate:
        assignment = _try_lease(project=project, labeler=labeler, gold=True, now=now)
        if assignment is not None:
            return assignment
    assignment = _try_lease(project=project, labeler=labeler, gold=False, now=now)
    if assignment is None and assignments_expire(now=now, project=project):
        # Leases past their expiry hold their slots until swept: give them back and look once
        # more, so an expired lease never leaves a labeler idle.
        assignment = _try_lease(project=project, labeler=labeler, gold=False, now=now)
    return assignment


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


def _normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def verdict_validate(verdict: Verdict, project: Project | None) -> None:
    """Check a verdict; ``project`` (for the edit rules) is needed only when it carries an edit."""
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


# The caller's own assignment with what a submit needs of its comparison, row-locked, in a
# project where the caller still has a role (a superuser always has one). Raw SQL for the same
# reason as the lease: this runs on every submit.
_LOCKED_ASSIGNMENT_SQL = """
SELECT a.id, a.comparison_id, a.labeler_id, a.left_response_id, a.state, a.leased_at, a.expires_at,
       a.ended_at, a.skip_reason, c.project_id, c.prompt_id, c.response_a_id, c.response_b_id
FROM annotation_assignment a JOIN annotation_comparison c ON c.id = a.comparison_id
WHERE a.id = %(assignment)s AND a.labeler_id = %(labeler)s
  AND (%(superuser)s OR EXISTS (
      SELECT 1 FROM annotation_membership m WHERE m.project_id = c.project_id AND m.user_id = %(labeler)s
  )){lock}
"""


def _aware(value):
    """A datetime from a raw cursor as Django's ORM would give it (SQLite hands back naive UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, dt_timezone.utc)


def _locked_assignment(*, assignment_id: int, labeler) -> Assignment:
    """The caller's own assignment, row-locked, with its comparison (ids only) attached."""
    lock = " FOR UPDATE OF a" if connection.features.has_select_for_update_of else ""
    with connection.cursor() as cursor:
        cursor.execute(
            _LOCKED_ASSIGNMENT_SQL.format(lock=lock),
            {"assignment": assignment_id, "labeler": labeler.pk, "superuser": labeler.is_superuser},
        )
        row = cursor.fetchone()
    if row is None:
        # Someone else's lease reads as "not found": its existence is none of this labeler's business.
        raise AssignmentNotFound("No such assignment for you")
    pk, comparison_id, labeler_id, left_id, state, leased_at, expires_at, ended_at, skip_reason, project_id, prompt_id, a_id, b_id = row
    assignment = Assignment(
        id=pk, comparison_id=comparison_id, labeler_id=labeler_id, left_response_id=left_id, state=state,
        leased_at=_aware(leased_at), expires_at=_aware(expires_at),
        ended_at=ended_at and _aware(ended_at), skip_reason=skip_reason,
    )
    assignment._state.adding, assignment._state.db = False, connection.alias
    assignment.comparison = Comparison(
        id=comparison_id, project_id=project_id, prompt_id=prompt_id, response_a_id=a_id, response_b_id=b_id
    )
    return assignment


# PostgreSQL, a verdict without an edit (most submits): end the lease and write the judgment in
# one statement, atomic by itself. It matches only the caller's own live lease in a project they
# belong to; anything else (replay, expired, foreign, unknown) matches nothing and takes the
# locked path below, which says exactly why.
_SUBMIT_SQL = """
WITH ended AS (
    UPDATE annotation_assignment AS a SET state = 'submitted', ended_at = %(now)s
    FROM annotation_comparison c
    WHERE a.id = %(assignment)s AND a.labeler_id = %(labeler)s AND a.state = 'leased' AND a.expires_at > %(now)s
      AND c.id = a.comparison_id
      AND (%(superuser)s OR EXISTS (
          SELECT 1 FROM annotation_membership m WHERE m.project_id = c.project_id AND m.user_id = %(labeler)s
      ))
    RETURNING a.id, a.comparison_id, a.left_response_id, a.leased_at, c.project_id,
              CASE WHEN a.left_response_id = c.response_a_id THEN c.response_b_id ELSE c.response_a_id END AS right_id
), counted AS (  -- "done today" (LabelerDay), in the same statement as the judgment
    INSERT INTO annotation_labelerday (labeler_id, project_id, day, judgments)
    SELECT %(labeler)s, project_id, %(day)s, 1 FROM ended
    ON CONFLICT (labeler_id, project_id, day) DO UPDATE SET judgments = annotation_labelerday.judgments + 1
)
INSERT INTO annotation_judgment (
    assignment_id, comparison_id, labeler_id, chosen_response_id, rejected_response_id, strength,
    left_response_id, both_bad, edited_response_id, attributes, flags, rationale, leased_at,
    submitted_at, time_on_task_ms, idempotency_key
)
SELECT id, comparison_id, %(labeler)s,
       CASE WHEN %(chosen_left)s THEN left_response_id ELSE right_id END,
       CASE WHEN %(chosen_left)s THEN right_id ELSE left_response_id END,
       %(strength)s, left_response_id, %(both_bad)s, NULL,
       jsonb_strip_nulls(jsonb_build_object(left_response_id::text, %(attributes_left)s::jsonb, right_id::text, %(attributes_right)s::jsonb)),
       jsonb_strip_nulls(jsonb_build_object(left_response_id::text, %(flags_left)s::jsonb, right_id::text, %(flags_right)s::jsonb)),
       %(rationale)s, leased_at, %(now)s, floor(extract(epoch FROM (%(now)s - leased_at)) * 1000)::int, %(key)s
FROM ended
RETURNING id, assignment_id, comparison_id, chosen_response_id, rejected_response_id, left_response_id,
          attributes, flags, leased_at, time_on_task_ms, (SELECT project_id FROM ended)
"""


# The locked path's "done today" (LabelerDay), in the submit's transaction; SQLite and
# PostgreSQL both take ON CONFLICT ... DO UPDATE.
_COUNT_SQL = """
INSERT INTO annotation_labelerday (labeler_id, project_id, day, judgments) VALUES (%s, %s, %s, 1)
ON CONFLICT (labeler_id, project_id, day) DO UPDATE SET judgments = annotation_labelerday.judgments + 1
"""


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
    }
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        db.execute(cursor, "arbiter_submit", _SUBMIT_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    pk, assignment_pk, comparison_id, chosen_id, rejected_id, left_id, attributes, flags, leased_at, ms, project_id = row
    # Django has psycopg hand jsonb back as text (JSONField decodes it); so do we.
    attributes, flags = (json.loads(v) if isinstance(v, str) else v for v in (attributes, flags))
    judgment = Judgment(
        id=pk, assignment_id=assignment_pk, comparison_id=comparison_id, labeler_id=labeler.pk,
        chosen_response_id=chosen_id, rejected_response_id=rejected_id, strength=verdict.strength,
        left_response_id=left_id, both_bad=verdict.both_bad, edited_response_id=None, attributes=attributes,
        flags=flags, rationale=verdict.rationale, leased_at=leased_at, submitted_at=now, time_on_task_ms=ms,
        idempotency_key=verdict.idempotency_key,
    )
    judgment._state.adding, judgment._state.db = False, connection.alias
    judgment.comparison = Comparison(id=comparison_id, project_id=project_id)
    return judgment


def judgment_submit(*, assignment_id: int, labeler, verdict: Verdict) -> tuple[Judgment, bool]:
    """Record the verdict, the edit and the end of the lease together, or nothing.

    Returns ``(judgment, created)``; a retry with the same idempotency key returns the first
    judgment with ``created=False``. A different second verdict is refused.
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
        and judgment.rationale == verdict.rationale
        and (judgment.attributes, judgment.flags) == _by_response(verdict, by_side)
    )


@transaction.atomic
def _judgment_submit_locked(*, assignment_id: int, labeler, verdict: Verdict) -> tuple[Judgment, bool]:
    """The general path: lock the assignment, say why a submit cannot be taken, write an edit."""
    assignment = _locked_assignment(assignment_id=assignment_id, labeler=labeler)
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

    # The project's settings matter only to an edit: don't read the project row for every submit.
    verdict_validate(verdict, Project.objects.get(pk=assignment.comparison.project_id) if verdict.edit is not None else None)
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

    judgment = _insert(
        Judgment,
        assignment=assignment,
        comparison=comparison,
        labeler=labeler,
        chosen_response_id=chosen_id,
        rejected_response_id=rejected_id,
        strength=verdict.strength,
        left_response_id=left_id,
        both_bad=verdict.both_bad,
        edited_response=edited,
        attributes=attributes,
        flags=flags,
        rationale=verdict.rationale,
        leased_at=assignment.leased_at,
        submitted_at=now,
        time_on_task_ms=int((now - assignment.leased_at).total_seconds() * 1000),
        idempotency_key=verdict.idempotency_key,
    )
    assignment.state = AssignmentState.SUBMITTED
    assignment.ended_at = now
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE annotation_assignment SET state = %s, ended_at = %s WHERE id = %s",
            [assignment.state, db_time(now), assignment.pk],
        )
        cursor.execute(_COUNT_SQL, [labeler.pk, comparison.project_id, connection.ops.adapt_datefield_value(timezone.localdate(now))])
    return judgment, True


@transaction.atomic
def assignment_skip(*, assignment_id: int, labeler, reason: str) -> Assignment:
    """End a lease without a verdict; the comparison returns to the pool for other labelers."""
    reason = reason.strip()
    if not reason:
        raise InvalidVerdict("reason: say why you skip (e.g. 'cannot judge code', 'prompt unclear')")
    if len(reason) > MAX_SKIP_REASON_CHARS:
        raise InvalidVerdict(f"reason: at most {MAX_SKIP_REASON_CHARS} characters")
    assignment = _locked_assignment(assignment_id=assignment_id, labeler=labeler)
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
    Comparison.objects.filter(pk=assignment.comparison_id, slots_taken__gt=0).update(slots_taken=F("slots_taken") - 1)
    return assignment


def assignments_expire(*, now=None, project: Project | None = None, batch_size: int = 1000) -> int:
    """End leases past their expiry and give their slots back; returns how many. Safe to run
    twice or concurrently, and beside submits.

    Rows are claimed with SKIP LOCKED (a lease being submitted right now is locked by the submit
    and left alone), then ended with a conditional UPDATE on ``state=leased``, so this can never
    overwrite a submit or end a lease twice.
    """
    now = now or timezone.now()
    ended = 0
    while True:
        with transaction.atomic():
            expired = Assignment.objects.filter(state=AssignmentState.LEASED, expires_at__lte=now)
            if project is not None:
                expired = expired.filter(comparison__project=project)
            ids = list(
                expired.select_for_update(skip_locked=True, of=("self",))
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                return ended
            per_comparison = Counter(
                Assignment.objects.filter(pk__in=ids).values_list("comparison_id", flat=True)
            )
            count = Assignment.objects.filter(pk__in=ids, state=AssignmentState.LEASED).update(
                state=AssignmentState.EXPIRED, ended_at=now
            )
            for comparison_id, n in per_comparison.items():
                Comparison.objects.filter(pk=comparison_id, slots_taken__gte=n).update(slots_taken=F("slots_taken") - n)
            ended += count
