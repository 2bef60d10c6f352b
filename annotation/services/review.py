"""A labeler's second look: their own judgments of the last day, and a changed verdict within the
project's window (``Project.verdict_change_minutes``, default 10).

A change rewrites the judgment in place, so exports and rounds read the latest verdict; what it
was is kept in the audit log. If the change picks the other side, the labeler's edit improved the
answer that is no longer chosen, so it is detached (the edited response stays, unreferenced), and
its safety bin, said from the chosen response's side, turns with it.
Imported judgments (their labeler is an inactive import account) can never be changed here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from annotation.access import has_role
from annotation.models import AuditAction, Judgment, Project, Role, SafetyBin
from annotation.services.audit import audit_record
from annotation.services.labeling import AssignmentNotFound, LabelingError, Verdict, verdict_validate


class ChangeWindowPassed(LabelingError):
    code, status = "change_window_passed", 409


def change_deadline(*, judgment: Judgment, project: Project) -> datetime | None:
    """Until when ``judgment`` may be changed, or None if its project allows no changes."""
    if not project.verdict_change_minutes:
        return None
    return judgment.submitted_at + timedelta(minutes=project.verdict_change_minutes)


#: How far back "your recent judgments" go: a day, not "since midnight", so a shift that crosses
#: midnight keeps its judgments in view (and their change windows open).
RECENT = timedelta(hours=24)


def labeler_judgments_recent(*, project: Project, labeler) -> list[dict]:
    """The labeler's judgments in ``project`` of the last 24 hours, newest first, as the labeler
    saw them: which side they chose, the prompt's last turn and both answers' openings."""
    judgments = (
        Judgment.objects.filter(labeler=labeler, comparison__project=project, submitted_at__gte=timezone.now() - RECENT)
        .select_related("comparison__prompt", "chosen_response", "rejected_response", "edited_response")
        .order_by("-submitted_at")[:200]
    )
    now, rows = timezone.now(), []
    for j in judgments:
        left = j.chosen_response if j.left_response_id == j.chosen_response_id else j.rejected_response
        right = j.rejected_response if left == j.chosen_response else j.chosen_response
        deadline = change_deadline(judgment=j, project=project)
        rows.append({
            "id": j.pk, "submitted_at": j.submitted_at, "changed_at": j.changed_at,
            "prompt": j.comparison.prompt.messages[-1]["content"][:300],
            "left": left.text[:300], "right": right.text[:300],
            "chosen": "left" if j.chosen_response_id == left.pk else "right",
            "strength": j.strength, "both_bad": j.both_bad, "edited": j.edited_response_id is not None,
            "changeable_until": deadline if deadline and deadline > now else None,
        })
    return rows


#: A safety bin seen from the other response: what a change of side makes of it (the labeler said
#: which response is safe, not which side won; both-safe and both-unsafe stay).
_SAFETY_SWAPPED = {SafetyBin.CHOSEN_SAFE: SafetyBin.REJECTED_SAFE, SafetyBin.REJECTED_SAFE: SafetyBin.CHOSEN_SAFE}


@transaction.atomic
def judgment_change(*, judgment_id: int, labeler, chosen: str, strength: str, both_bad: bool = False) -> Judgment:
    """Change the side, strength or both-bad mark of the caller's own judgment, inside its
    project's window. The row is locked, so two changes (two tabs) apply one after the other."""
    judgment = (
        Judgment.objects.select_for_update(of=("self",))
        .select_related("comparison__project")
        .filter(pk=judgment_id, labeler=labeler)
        .first()
    )
    if judgment is None or not has_role(user=labeler, project=judgment.comparison.project, minimum=Role.LABELER):
        raise AssignmentNotFound("No such judgment of yours")
    project = judgment.comparison.project
    deadline = change_deadline(judgment=judgment, project=project)
    if deadline is None:
        raise ChangeWindowPassed("This project does not allow changing a verdict after it is submitted")
    if timezone.now() > deadline:
        raise ChangeWindowPassed(
            f"Verdicts can be changed for {project.verdict_change_minutes} minutes after they are submitted; "
            f"this one was submitted at {timezone.localtime(judgment.submitted_at):%H:%M}"
        )
    verdict_validate(Verdict(chosen=chosen, strength=strength, both_bad=both_bad), None)
    left = judgment.left_response_id
    right = judgment.rejected_response_id if judgment.chosen_response_id == left else judgment.chosen_response_id
    new_chosen, new_rejected = (left, right) if chosen == "left" else (right, left)
    before = {"chosen_response": judgment.chosen_response_id, "strength": judgment.strength,
              "both_bad": judgment.both_bad, "edited_response": judgment.edited_response_id, "safety": judgment.safety}
    if new_chosen != judgment.chosen_response_id:
        judgment.edited_response_id = None  # the edit improved the answer that is no longer chosen
        judgment.safety = _SAFETY_SWAPPED.get(judgment.safety, judgment.safety)
    judgment.chosen_response_id, judgment.rejected_response_id = new_chosen, new_rejected
    judgment.strength, judgment.both_bad, judgment.changed_at = strength, both_bad, timezone.now()
    judgment.save(update_fields=["chosen_response", "rejected_response", "strength", "both_bad", "edited_response", "safety", "changed_at"])
    after = {"chosen_response": new_chosen, "strength": strength, "both_bad": both_bad,
             "edited_response": judgment.edited_response_id, "safety": judgment.safety}
    audit_record(
        action=AuditAction.JUDGMENT_CHANGED, project=project, target=f"judgment {judgment.pk}", actor=labeler,
        details={"judgment": judgment.pk, "before": before, "after": after},
    )
    return judgment
