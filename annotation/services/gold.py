"""Gold items: a lead marks a comparison whose better answer is known, from the comparison's page.

The queue then shows it to every labeler at the project's gold rate (annotation/services/labeling/queue.py)
and the quality page scores labelers on it. Clearing the mark makes it an ordinary comparison again;
judgments already given on it stay.
"""

from __future__ import annotations

from django.db import transaction

from annotation.models import AuditAction, Comparison, ComparisonSource
from annotation.services.audit import audit_record


class GoldError(Exception):
    pass


@transaction.atomic
def comparison_set_gold(*, comparison: Comparison, winner: str | None, user) -> Comparison:
    """``winner``: "a" or "b" (that response is the known better one), or None to clear the mark."""
    if comparison.source == ComparisonSource.IMPORT:
        raise GoldError("Imported comparisons are training data, never shown to labelers: they cannot be gold")
    if winner not in ("a", "b", None):
        raise GoldError("winner: expected a, b or none")
    before = {"is_gold": comparison.is_gold, "gold_winner": comparison.gold_winner_id}
    comparison.is_gold = winner is not None
    comparison.gold_winner_id = {"a": comparison.response_a_id, "b": comparison.response_b_id}.get(winner)
    comparison.save(update_fields=["is_gold", "gold_winner"])
    audit_record(
        action=AuditAction.GOLD_SET, project=comparison.project, target=f"comparison {comparison.pk}", actor=user,
        details={"comparison": comparison.pk, "before": before, "after": {"is_gold": comparison.is_gold, "gold_winner": comparison.gold_winner_id}},
    )
    return comparison
