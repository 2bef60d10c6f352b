"""Labeling: lease the next comparison (``queue``), submit or skip it (``submit``), expire leases;
the SQL of this hot path in ``sql``, what they share in ``common``.

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
  Assignment is the guarantee; the queue's filter only keeps us from hitting it. The one
  exception is a swapped repeat of their own judgment, at most one per judgment (``repeat_of``
  is unique: two tabs racing for the same repeat get one lease), and it takes no slot.
- A submit and a lease expiry racing: the submit locks the assignment row and checks
  ``expires_at`` itself; the expiry claims rows with SKIP LOCKED and ends them with a
  conditional UPDATE on ``state=leased``, so whichever commits first wins and the other
  changes nothing.
"""

from annotation.services.labeling.common import (
    ATTRIBUTES,
    FLAGS,
    MAX_RATIONALE_CHARS,
    MAX_SKIP_REASON_CHARS,
    SIDES,
    AlreadyEnded,
    AssignmentNotFound,
    IdempotencyKeyReused,
    InvalidVerdict,
    LabelingError,
    LeaseCapReached,
    LeaseExpired,
    db_time,
)
from annotation.services.labeling.queue import assignments_expire, comparison_lease_next, comparison_slots_recount
from annotation.services.labeling.submit import (
    Verdict,
    _judgment_submit_locked,
    _submit_postgresql,
    assignment_skip,
    judgment_submit,
    verdict_validate,
)

__all__ = [
    "ATTRIBUTES", "FLAGS", "MAX_RATIONALE_CHARS", "MAX_SKIP_REASON_CHARS", "SIDES", "AlreadyEnded", "AssignmentNotFound",
    "IdempotencyKeyReused", "InvalidVerdict", "LabelingError", "LeaseCapReached", "LeaseExpired", "Verdict",
    "_judgment_submit_locked", "_submit_postgresql", "assignment_skip", "assignments_expire", "comparison_lease_next",
    "comparison_slots_recount", "db_time", "judgment_submit", "verdict_validate",
]
