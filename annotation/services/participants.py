"""Crowd hand-off: participants of a study on Prolific (or any platform) join a project through
its study link, label the project's number of items and are sent back with a completion code,
or with the screen-out code if they fail the gold items.

The link (``/p/<slug>/join/``) takes one of two sets of query parameters:

- Prolific: ``PROLIFIC_PID`` (required), ``STUDY_ID``, ``SESSION_ID``: what Prolific appends when a
  study records ids "with URL parameters".
- Any other platform: ``external_id`` (required), ``study_id``, ``session_id``.

Ids are 1 to 64 characters of ``A-Z a-z 0-9 . _ ~ : @ + -``; other parameters are ignored (platforms
add their own). Each (project, id) is one passwordless labeler with a generated name, a member of
that project only; the id itself stays on the ``ExternalParticipant`` row.

Races: two joins with the same id at once (a double click) both try to insert; the unique
(project, external_id) constraint lets one win and the other reads the winner's row. Two submits
of the last item at once both find the participant done; the outcome is written by a conditional
UPDATE on an empty outcome, so it is decided once and both answers send them to the same place.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from annotation.models import (
    PARTICIPANT_PREFIX,
    AuditAction,
    ExternalParticipant,
    Judgment,
    Membership,
    ParticipantOutcome,
    Project,
    Role,
)
from annotation.services.audit import audit_record
from annotation.services.projects import membership_set


#: What a link to a project without an open study is told, whether or not the project exists.
NO_STUDY = "There is no open study at this address."


class JoinRefused(Exception):
    """A join link the service will not honour; ``status`` is the HTTP status of its page."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JoinRequest:
    platform: str
    external_id: str
    study_id: str = ""
    session_id: str = ""


def is_participant(user) -> bool:
    """Whether ``user`` may be a study participant: a test of the name, no query."""
    return getattr(user, "username", "").startswith(PARTICIPANT_PREFIX)


def participant_join(*, project: Project, join: JoinRequest) -> tuple[ExternalParticipant, bool]:
    """The participant of ``project`` with ``join.external_id``, made on their first entry (a
    passwordless user, a labeler here and nowhere else); returns ``(participant, created)``.
    Every entry is audited, without the id."""
    if not project.study_open:
        raise JoinRefused(NO_STUDY, status=404)
    participant = _participant_find(project=project, external_id=join.external_id)
    created = participant is None
    if created:
        try:
            participant = _participant_create(project=project, join=join)
        except IntegrityError:  # the same id joined at the same moment and won: it is one person
            participant, created = _participant_find(project=project, external_id=join.external_id), False
            if participant is None:  # not that race (a generated name taken, 1 in 2**64): say so
                raise
    user = participant.user
    # A lead who revoked the participant's role or deactivated them ended their part; entering
    # again must not bring it back.
    if not user.is_active or not Membership.objects.filter(project=project, user=user).exists():
        raise JoinRefused("Your participation in this study has ended.")
    audit_record(
        action=AuditAction.PARTICIPANT_JOINED, project=project, actor=user, target=f"participant {participant.pk}",
        details={"participant": participant.pk, "platform": participant.platform, "first_entry": created},
    )
    return participant, created


def _participant_find(*, project: Project, external_id: str) -> ExternalParticipant | None:
    return ExternalParticipant.objects.select_related("user").filter(project=project, external_id=external_id).first()


@transaction.atomic
def _participant_create(*, project: Project, join: JoinRequest) -> ExternalParticipant:
    # The name is random, never derived from the id: other people see names (quality page,
    # comparisons, the audit log) and must not learn who is behind one.
    user = get_user_model()(username=f"{PARTICIPANT_PREFIX}{secrets.token_hex(8)}")
    user.set_unusable_password()
    user.save()
    membership_set(project=project, user=user, role=Role.LABELER)
    return ExternalParticipant.objects.create(
        project=project, user=user, platform=join.platform, external_id=join.external_id,
        study_id=join.study_id, session_id=join.session_id,
    )


def participant_exit_url(*, user, project_id: int) -> str | None:
    """Where a participant whose part in ``project_id`` is over goes (the completion or the
    screen-out URL with its code), or None while they still label, and for everyone who is not
    a participant: for them it costs no query, so the labeling hot path stays as it was.

    The outcome is decided the first time it is reached and kept on the participant's row.
    """
    if not is_participant(user):
        return None
    participant = ExternalParticipant.objects.select_related("project").filter(user=user, project_id=project_id).first()
    if participant is None:
        return None
    if not participant.outcome:
        outcome = _outcome(participant)
        if outcome is None:
            return None
        # Conditional: of two requests deciding at once, the first write stands.
        decided = ExternalParticipant.objects.filter(pk=participant.pk, outcome="").update(
            outcome=outcome, completed_at=timezone.now()
        )
        if decided:
            participant.outcome = outcome
        else:
            participant.refresh_from_db(fields=["outcome", "completed_at"])
    return study_exit_url(project=participant.project, outcome=participant.outcome)


def _outcome(participant: ExternalParticipant) -> ParticipantOutcome | None:
    """Screened out once enough gold judgments say so (before the count: failing the gold on the
    last item is still failing), completed at the project's number of items, else None."""
    project = participant.project
    gold = Q(comparison__is_gold=True)
    # Gold accuracy as the quality page computes it: the chosen response is the gold winner.
    counts = Judgment.objects.filter(labeler_id=participant.user_id, comparison__project_id=project.pk).aggregate(
        total=Count("id"), gold=Count("id", filter=gold),
        correct=Count("id", filter=gold & Q(chosen_response_id=F("comparison__gold_winner_id"))),
    )
    if (
        project.study_min_gold_accuracy > 0 and counts["gold"] >= project.study_gold_after
        and counts["correct"] / counts["gold"] < project.study_min_gold_accuracy
    ):
        return ParticipantOutcome.SCREENED_OUT
    if counts["total"] >= project.study_items:
        return ParticipantOutcome.COMPLETED
    return None


def study_exit_url(*, project: Project, outcome: str) -> str | None:
    """The URL for ``outcome`` with ``{code}`` replaced by its code; None if the lead left it empty."""
    url, code = (
        (project.study_screenout_url, project.study_screenout_code) if outcome == ParticipantOutcome.SCREENED_OUT
        else (project.study_completion_url, project.study_completion_code)
    )
    return url.replace("{code}", quote(code, safe="")) if url else None
