"""Crowd participants: people sent by Prolific (or any platform that passes an id in the link)
through a project's study link, each a passwordless labeler of that one project."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models.projects import Project

#: Every participant's generated username starts so; the labeling hot path asks only such users
#: whether they are done (a string test, no query for everyone else).
PARTICIPANT_PREFIX = "participant-"
#: The longest id, study id or session id a link may carry (Prolific's are 24 characters).
MAX_EXTERNAL_ID_CHARS = 64


class ParticipantPlatform(models.TextChoices):
    PROLIFIC = "prolific", "Prolific"
    EXTERNAL = "external", "Another platform"


class ParticipantOutcome(models.TextChoices):
    COMPLETED = "completed", "Completed: sent to the completion URL"
    SCREENED_OUT = "screened_out", "Screened out: gold accuracy under the minimum"


class ExternalParticipant(models.Model):
    """One participant of a project's study: their platform id, kept here and nowhere else (the
    user's name is generated and says nothing of it), and how their part ended."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="participants")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_participant")
    platform = models.CharField(max_length=10, choices=ParticipantPlatform.choices)
    external_id = models.CharField(max_length=MAX_EXTERNAL_ID_CHARS)
    study_id = models.CharField(max_length=MAX_EXTERNAL_ID_CHARS, blank=True)
    session_id = models.CharField(max_length=MAX_EXTERNAL_ID_CHARS, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=ParticipantOutcome.choices, blank=True)

    class Meta:
        constraints = [
            # Entering twice (or two tabs at once) is one participant: the database decides.
            models.UniqueConstraint(fields=["project", "external_id"], name="participant_unique_per_project"),
            models.CheckConstraint(condition=Q(platform__in=ParticipantPlatform.values), name="participant_platform_valid"),
            models.CheckConstraint(
                condition=(Q(outcome="") & Q(completed_at__isnull=True))
                | (Q(outcome__in=ParticipantOutcome.values) & Q(completed_at__isnull=False)),
                name="participant_outcome_with_time",
            ),
        ]

    def __str__(self) -> str:
        return f"participant {self.pk} of {self.project}"
