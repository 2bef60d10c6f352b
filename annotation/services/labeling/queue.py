"""The queue: lease the next comparison (one UPDATE that takes a slot) or a swapped repeat of
the labeler's own earlier one (no slot), keep the slot counts true, expire leases. The races are
named in ``annotation/services/labeling/__init__.py``."""

from __future__ import annotations

import random
from collections import Counter
from contextlib import nullcontext
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Comparison, ComparisonSource, Project
from annotation.services.labeling.common import LeaseCapReached, aware, db_time, insert_row
from annotation.services.labeling.sql import LEASE_INSERT_SQL, LEASE_SQL, LIVE_LEASES_SQL, REPEAT_LEASE_SQL
from config import db


def comparison_slots_recount(*, comparison_id: int) -> int:
    """Set a comparison's ``slots_taken`` to its leased-or-submitted assignments (swapped repeats
are no labels toward k and take none); returns it.

    The services keep the count in step themselves; this is for data written around them
    (fixtures, repairs). Leases past their expiry count until the sweep ends them, so the count
    is never below the live-or-done assignments, which is what lets the lease trust it.
    """
    taken = Assignment.objects.filter(
        comparison_id=comparison_id, state__in=(AssignmentState.LEASED, AssignmentState.SUBMITTED), repeat_of__isnull=True
    ).count()
    Comparison.objects.filter(pk=comparison_id).exclude(slots_taken=taken).update(slots_taken=taken)
    return taken


def _private_source(project: Project) -> str:
    """The comparison source the queue does not serve: live dialogues' turns, unless the project
    sends them to k - 1 further labelers (``Project.live_share``)."""
    return "" if project.live_share else ComparisonSource.LIVE


def _slot_ranges(*, project: Project, gold: bool) -> list[tuple[int, int]]:
    """Slot-count ranges to try in order, each an index range scan of ``comparison_queue``.

    Regular: comparisons already started toward k, fewest labels first (breadth first), then
    new ones; oldest first within each. Gold: any gold item this labeler has not seen, since
    gold measures labelers and is shown to each of them once, whatever k is.
    """
    if gold:
        return [(0, 2**31 - 1)]
    return [(1, project.overlap_k), (0, 1)]


def _try_lease(*, project: Project, labeler, gold: bool, now) -> Assignment | None:
    """Lease one comparison of the kind asked for, or None when that pool is empty for this labeler."""
    if connection.vendor == "postgresql":
        return _try_lease_postgresql(project=project, labeler=labeler, gold=gold, now=now)
    return _try_lease_serialised(project=project, labeler=labeler, gold=gold, now=now)


def _try_lease_postgresql(*, project: Project, labeler, gold: bool, now) -> Assignment | None:
    sql = LEASE_INSERT_SQL.format(lease=LEASE_SQL.format(lock=" FOR UPDATE SKIP LOCKED"))
    expires = now + timedelta(minutes=project.lease_minutes)
    for low, high in _slot_ranges(project=project, gold=gold):
        params = {
            "project": project.pk, "gold": gold, "imported": ComparisonSource.IMPORT, "private": _private_source(project), "low": low, "high": high,
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


def _leased(*, pk, comparison_id, labeler, left_id, leased_at, expires_at, repeat_of_id=None) -> Assignment:
    """A live lease read by raw SQL, as the ORM would hand it back."""
    assignment = Assignment(
        id=pk, comparison_id=comparison_id, labeler_id=labeler.pk, left_response_id=left_id,
        state=AssignmentState.LEASED, leased_at=leased_at, expires_at=expires_at, skip_reason="", repeat_of_id=repeat_of_id,
    )
    assignment._state.adding, assignment._state.db = False, connection.alias
    return assignment


def _try_lease_serialised(*, project: Project, labeler, gold: bool, now) -> Assignment | None:
    """SQLite (writers serialised by BEGIN IMMEDIATE): the slot, then the assignment, in one
    transaction for all the slot ranges."""
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    sql = LEASE_SQL.format(lock=lock)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for low, high in _slot_ranges(project=project, gold=gold):
                params = {
                    "project": project.pk, "gold": gold, "imported": ComparisonSource.IMPORT, "private": _private_source(project),
                    "low": low, "high": high, "labeler": labeler.pk,
                }
                cursor.execute(sql, params)
                row = cursor.fetchone()
                if row is None:
                    continue  # nothing of this kind for this labeler: on to the next range
                comparison_id, response_a_id, response_b_id = row
                assignment = insert_row(
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


def _try_lease_repeat(*, project: Project, labeler, now) -> Assignment | None:
    """A swapped repeat of the labeler's newest judgment that may come back (``REPEAT_LEASE_SQL``),
    or None when none may yet."""
    expires = now + timedelta(minutes=project.lease_minutes)
    params = {
        "project": project.pk, "labeler": labeler.pk, "false": False, "imported": ComparisonSource.IMPORT,
        "live": ComparisonSource.LIVE, "newer": project.repeat_min_gap - 1, "now": db_time(now), "expires": db_time(expires),
    }
    try:
        # A savepoint inside a caller's transaction keeps a unique violation local (as the lease).
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(REPEAT_LEASE_SQL, params)  # a few percent of leases: not worth a prepared statement
            row = cursor.fetchone()
    except IntegrityError:
        return None  # another tab of this labeler took this repeat just now: lease normally
    if row is None:
        return None
    pk, comparison_id, left_id, repeat_of_id = row
    return _leased(pk=pk, comparison_id=comparison_id, labeler=labeler, left_id=left_id, leased_at=now, expires_at=expires,
                   repeat_of_id=repeat_of_id)


def _live_leases(*, labeler, project: Project, now) -> list[Assignment]:
    with connection.cursor() as cursor:
        db.execute(cursor, "arbiter_live_leases", LIVE_LEASES_SQL, [labeler.pk, db_time(now), project.pk])
        rows = cursor.fetchall()
    return [
        _leased(pk=pk, comparison_id=c, labeler=labeler, left_id=left, leased_at=aware(leased), expires_at=aware(expires),
                repeat_of_id=repeat_of)
        for pk, c, left, leased, expires, repeat_of in rows
    ]


def comparison_lease_next(*, project: Project, labeler, exclude: tuple[int, ...] = ()) -> Assignment | None:
    """The labeler's next assignment in ``project``, or None when there is nothing to label.

    Order: their own unexpired lease (not in ``exclude``), then a swapped repeat of their own
    earlier judgment and gold, each at the project's rate, then comparisons already started toward
    k, then new ones. Nothing tells a repeat apart in what the labeler is served. Raises
    ``LeaseCapReached`` when the labeler already holds ``max_live_leases`` live leases (a client
    prefetching too far ahead).
    """
    now = timezone.now()
    live = _live_leases(labeler=labeler, project=project, now=now)
    own = next((a for a in live if a.pk not in exclude), None)
    if own is not None:
        return own
    if len(live) >= project.max_live_leases:
        raise LeaseCapReached(f"You already hold {project.max_live_leases} open comparisons in this project")
    if project.repeat_rate > 0 and random.random() < project.repeat_rate:
        assignment = _try_lease_repeat(project=project, labeler=labeler, now=now)
        if assignment is not None:
            return assignment
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
            # A swapped repeat held no slot, so it gives none back.
            per_comparison = Counter(
                Assignment.objects.filter(pk__in=ids, repeat_of__isnull=True).values_list("comparison_id", flat=True)
            )
            count = Assignment.objects.filter(pk__in=ids, state=AssignmentState.LEASED).update(
                state=AssignmentState.EXPIRED, ended_at=now
            )
            for comparison_id, n in per_comparison.items():
                Comparison.objects.filter(pk=comparison_id, slots_taken__gte=n).update(slots_taken=F("slots_taken") - n)
            ended += count
