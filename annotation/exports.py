"""Judgments as training rows. The preference rows here feed both exports and rounds' snapshots.

A judgment with an edit yields up to three pairs, edited > chosen > rejected (Llama 3):
``chosen_rejected`` with the labeler's strength and its margin; ``edited_rejected`` with the
same strength (the edit improves on the winner, so it beats the loser at least as clearly);
``edited_chosen`` as ``slightly_better`` (an edit is a targeted fix, not a different answer).
"both are bad" judgments are left out of preference pairs.
"""

from __future__ import annotations

from typing import Iterator

from django.db.models import QuerySet

from annotation.models import Judgment, Project, Strength

EDIT_OVER_CHOSEN_STRENGTH = Strength.SLIGHTLY_BETTER


def judgments_for_training(*, project: Project) -> QuerySet[Judgment]:
    return (
        Judgment.objects.filter(comparison__project=project, both_bad=False)
        .select_related("comparison__prompt", "chosen_response", "rejected_response", "edited_response", "labeler")
        .order_by("id")
    )


def _pair(judgment: Judgment, project: Project, better, worse, strength: str, pair_type: str) -> dict:
    prompt = judgment.comparison.prompt
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt.messages],
        "chosen": [{"role": "assistant", "content": better.text}],
        "rejected": [{"role": "assistant", "content": worse.text}],
        "margin": project.margin_for(strength),
        "strength": strength,
        "pair_type": pair_type,
        "judgment_id": judgment.pk,
        "comparison_id": judgment.comparison_id,
        "prompt_id": prompt.pk,
        "prompt_hash": prompt.content_hash,
        "chosen_response_id": better.pk,
        "rejected_response_id": worse.pk,
        "labeler": judgment.labeler.username,
        "submitted_at": judgment.submitted_at.isoformat(),
    }


def preference_rows(*, project: Project, judgments) -> Iterator[dict]:
    """TRL conversational preference rows (prompt/chosen/rejected/margin) with provenance."""
    for judgment in judgments.iterator(chunk_size=2000):
        chosen, rejected, edited = judgment.chosen_response, judgment.rejected_response, judgment.edited_response
        yield _pair(judgment, project, chosen, rejected, judgment.strength, "chosen_rejected")
        if edited is not None:
            yield _pair(judgment, project, edited, chosen, EDIT_OVER_CHOSEN_STRENGTH, "edited_chosen")
            yield _pair(judgment, project, edited, rejected, judgment.strength, "edited_rejected")


def is_heldout(prompt_hash: str, percent: int) -> bool:
    """A stable split by prompt: the same prompt is held out in every round and every export."""
    return int(prompt_hash[:8], 16) % 100 < percent
