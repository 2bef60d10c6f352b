"""The labeling queue: lease the next comparison, submit a judgment, skip, expire leases.

Concurrency (the races this module is written around):
- Two labelers asking for work at once must never push a comparison past ``overlap_k``
  live-or-done assignments. On PostgreSQL the candidate comparisons are locked with
  ``SELECT ... FOR UPDATE SKIP LOCKED``: a comparison another request is leasing right now is
  skipped, not waited for. After the lock, the slots are counted again in a fresh statement,
  because the candidate query's snapshot may predate a lease committed a moment ago.
  On SQLite, transactions are ``BEGIN IMMEDIATE`` (settings), so writers are serialised.
- One labeler never gets a comparison twice: the unique (comparison, labeler) constraint on
  Assignment is the guarantee; the queue's filter only keeps us from hitting it.
- A submit and a lease expiry racing: the submit locks the assignment row and checks
  ``expires_at`` itself; the expiry claims rows with SKIP LOCKED and ends them with a
  conditional UPDATE on ``state=leased``, so whichever commits first wins and the other
  changes nothing.
- ``Comparison.slots_taken`` is a hint kept in step in the same transactions as the leases; it
  only chooses candidates. The recount under the lock is what decides.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from rapidfuzz.distance import Levenshtein

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    Judgment,
    Membership,
    Project,
    Response,
    ResponseSource,
    Strength,
)

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")  # HelpSteer2, 0-4
FLAGS = ("unsafe", "factually_wrong", "private_data", "refuses_needlessly")
SIDES = ("left", "right")
MAX_RATIONALE_CHARS = 5000
MAX_SKIP_REASON_CHARS = 200
CANDIDATES_PER_TRY = 8


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


class InvalidVerdict(LabelingError):
    code, status = "invalid_verdict", 400


def _live_or_done(now) -> Q:
    return Q(state=AssignmentState.SUBMITTED) | Q(state=AssignmentState.LEASED, expires_at__gt=now)


def comparison_slots_recount(*, comparison_id: int, now=None) -> int:
    """Count a comparison's live-or-done assignments and store the count as its hint."""
    taken = Assignment.objects.filter(_live_or_done(now or timezone.now()), comparison_id=comparison_id).count()
    Comparison.objects.filter(pk=comparison_id).exclude(slots_taken=taken).update(slots_taken=taken)
    return taken


def _candidate_batches(*, project: Project, labeler, gold: bool):
    """Querysets to try in order, each answerable from the ``comparison_queue`` index.

    Regular: comparisons already started toward k, fewest labels first (breadth first), then
    new ones; oldest first within each. Gold: any gold item this labeler has not seen, since
    gold measures labelers and is shown to each of them once, whatever k is.
    """
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), labeler=labeler)
    # Imported pre-labelled comparisons are training data, not labeling tasks.
    base = Comparison.objects.filter(project=project, is_gold=gold).exclude(source=ComparisonSource.IMPORT).exclude(Exists(seen))
    if gold:
        return [base.order_by("id")]
    return [
        base.filter(slots_taken__gte=1, slots_taken__lt=project.overlap_k).order_by("slots_taken", "id"),
        base.filter(slots_taken=0).order_by("id"),
    ]


def _live_leases(*, project: Project, labeler, now):
    return Assignment.objects.filter(
        comparison__project=project, labeler=labeler, state=AssignmentState.LEASED, expires_at__gt=now
    )


def _lease_one(*, project: Project, labeler, candidates, gold: bool, now) -> Assignment | None | bool:
    """Lock a few candidates and lease the first that still has a slot, in one transaction.

    Returns the assignment, None when ``candidates`` is empty, or False when every locked
    candidate turned out to be full (the caller looks again with a fresh snapshot).
    """
    with transaction.atomic():
        # SKIP LOCKED: comparisons another request is leasing right now are passed over.
        locked = list(
            candidates.select_for_update(skip_locked=True, of=("self",)).only(
                "id", "response_a_id", "response_b_id", "slots_taken"
            )[:CANDIDATES_PER_TRY]
        )
        if not locked:
            return None
        for comparison in locked:
            # Count again in a new statement: the candidate query's snapshot can predate a lease
            # committed just before we took the lock, and the hint can count expired leases.
            taken = Assignment.objects.filter(_live_or_done(now), comparison_id=comparison.pk).count()
            if not gold and taken >= project.overlap_k:
                if taken != comparison.slots_taken:
                    Comparison.objects.filter(pk=comparison.pk).update(slots_taken=taken)  # heal the hint
                continue
            assignment = Assignment.objects.create(
                comparison_id=comparison.pk,
                labeler=labeler,
                left_response_id=random.choice((comparison.response_a_id, comparison.response_b_id)),
                leased_at=now,
                expires_at=now + timedelta(minutes=project.lease_minutes),
            )
            Comparison.objects.filter(pk=comparison.pk).update(slots_taken=taken + 1)
            return assignment
    return False


def _try_lease(*, project: Project, labeler, gold: bool, now) -> Assignment | None:
    """Lease one comparison of the kind asked for, or None when that pool is empty for this labeler."""
    for candidates in _candidate_batches(project=project, labeler=labeler, gold=gold):
        while True:
            try:
                assignment = _lease_one(project=project, labeler=labeler, candidates=candidates, gold=gold, now=now)
            except IntegrityError:
                # The same labeler leasing in two tabs at once: the unique (comparison, labeler)
                # constraint let one through and rolled this transaction back; look again.
                continue
            if assignment is None:
                break  # this batch is empty: on to the next kind of candidate
            if assignment is not False:
                return assignment
            # every locked candidate filled up meanwhile: look again (new snapshot)
    return None


def comparison_lease_next(*, project: Project, labeler, exclude: tuple[int, ...] = ()) -> Assignment | None:
    """The labeler's next assignment in ``project``, or None when there is nothing to label.

    Order: their own unexpired lease (not in ``exclude``), then gold at the project's rate, then
    comparisons already started toward k, then new ones. Raises ``LeaseCapReached`` when the
    labeler already holds ``max_live_leases`` live leases (a client prefetching too far ahead).
    """
    now = timezone.now()
    live = list(_live_leases(project=project, labeler=labeler, now=now).order_by("leased_at", "id"))
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
        # Leases that ran out since the last sweep hold slots in the hint: give them back and
        # look once more, so an expired lease never leaves a labeler idle.
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


def _validate(verdict: Verdict, project: Project) -> None:
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


def _locked_assignment(*, assignment_id: int, labeler) -> Assignment:
    """The caller's own assignment, row-locked, in a project where the caller still has a role."""
    query = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("comparison__project")
        .filter(pk=assignment_id, labeler=labeler)
    )
    if not labeler.is_superuser:
        query = query.filter(Exists(Membership.objects.filter(project=OuterRef("comparison__project"), user=labeler)))
    assignment = query.first()
    if assignment is None:
        # Someone else's lease reads as "not found": its existence is none of this labeler's business.
        raise AssignmentNotFound("No such assignment for you")
    return assignment


@transaction.atomic
def judgment_submit(*, assignment_id: int, labeler, verdict: Verdict) -> tuple[Judgment, bool]:
    """Record the verdict, the edit and the end of the lease together, or nothing.

    Returns ``(judgment, created)``; a retry with the same idempotency key returns the first
    judgment with ``created=False``. A different second verdict is refused.
    """
    assignment = _locked_assignment(assignment_id=assignment_id, labeler=labeler)
    if assignment.state == AssignmentState.SUBMITTED:
        existing = Judgment.objects.get(assignment=assignment)
        if verdict.idempotency_key and verdict.idempotency_key == existing.idempotency_key:
            return existing, False
        raise AlreadyEnded("This comparison is already judged; a judgment cannot be changed by resubmitting")
    now = timezone.now()
    if assignment.state == AssignmentState.EXPIRED or (
        assignment.state == AssignmentState.LEASED and assignment.expires_at <= now
    ):
        raise LeaseExpired("This lease expired and the comparison went back to the pool; ask for the next one")
    if assignment.state != AssignmentState.LEASED:
        raise AlreadyEnded(f"This assignment was {assignment.state}; ask for the next comparison")

    project = assignment.comparison.project
    _validate(verdict, project)
    comparison = assignment.comparison
    left_id = assignment.left_response_id
    right_id = comparison.response_b_id if left_id == comparison.response_a_id else comparison.response_a_id
    by_side = {"left": left_id, "right": right_id}
    chosen_id = by_side[verdict.chosen]
    rejected_id = by_side["right" if verdict.chosen == "left" else "left"]

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

    judgment = Judgment.objects.create(
        assignment=assignment,
        comparison=comparison,
        labeler=labeler,
        chosen_response_id=chosen_id,
        rejected_response_id=rejected_id,
        strength=verdict.strength,
        left_response_id=left_id,
        both_bad=verdict.both_bad,
        edited_response=edited,
        attributes={str(by_side[side]): ratings for side, ratings in verdict.attributes.items() if ratings},
        flags={str(by_side[side]): sorted(set(flags)) for side, flags in verdict.flags.items() if flags},
        rationale=verdict.rationale,
        leased_at=assignment.leased_at,
        submitted_at=now,
        time_on_task_ms=int((now - assignment.leased_at).total_seconds() * 1000),
        idempotency_key=verdict.idempotency_key,
    )
    assignment.state = AssignmentState.SUBMITTED
    assignment.ended_at = now
    assignment.save(update_fields=["state", "ended_at"])
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
