"""Live dialogues: a labeler writes a prompt, two committee members answer as they watch, the
labeler judges and edits, and the conversation goes on with the winner (Llama 2, HH-RLHF).

Each judged turn is an ordinary Prompt (``dialogue``, ``turn_index``), two Responses, a
Comparison (source ``live``) and its author's Judgment, so exports, quality, the leaderboard and
rounds read live data with no special case. The answers being generated live on
``modeling.LiveTurn`` until both are done."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models.projects import Project


class DialogueState(models.TextChoices):
    OPEN = "open", "Open"
    ENDED = "ended", "Ended"


class Dialogue(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dialogues")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dialogues")
    state = models.CharField(max_length=8, choices=DialogueState.choices, default=DialogueState.OPEN)
    system_prompt = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=DialogueState.values), name="dialogue_state_valid"),
            # One open dialogue per labeler and project: the live page always knows which to resume.
            models.UniqueConstraint(
                fields=["project", "labeler"], condition=Q(state="open"), name="dialogue_one_open_per_labeler"
            ),
            models.CheckConstraint(
                condition=Q(state="open", ended_at__isnull=True) | Q(state="ended", ended_at__isnull=False),
                name="dialogue_ended_iff_ended_at",
            ),
        ]

    def __str__(self) -> str:
        return f"Dialogue #{self.pk} by {self.labeler_id} in {self.project_id} ({self.state})"
