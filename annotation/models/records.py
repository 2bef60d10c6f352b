"""What is kept of the work: dataset snapshots (exports and the datasets of rounds) and the
audit trail."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models.projects import Project
from config.jobs import Job, JobState


class SnapshotPurpose(models.TextChoices):
    EXPORT = "export", "Export"
    REWARD_MODEL = "reward_model", "Reward model training"
    DPO = "dpo", "DPO training"
    EVALUATION = "evaluation", "Held-out evaluation"


class DatasetSnapshot(Job):
    """An export with its filters, row count and sha256: every checkpoint traces back to its labels."""

    job_task = "annotation.tasks.export_run"
    stale_error = "worker lost: no progress for over {minutes} minutes; export again"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="snapshots")
    purpose = models.CharField(max_length=16, choices=SnapshotPurpose.choices, default=SnapshotPurpose.EXPORT)
    format = models.CharField(max_length=32)
    filters = models.JSONField(default=dict, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    path = models.CharField(max_length=500, blank=True, help_text="Relative to ARTIFACTS_DIR.")
    round = models.ForeignKey(
        "modeling.Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshots"
    )
    # Exports run on a worker: the row is the job. Round snapshots are written done.
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.SUCCEEDED)
    progress = models.JSONField(
        default=dict, blank=True, help_text="While an export writes: judgments read of total, rows written, elapsed_s, eta_s.",
    )
    file_format = models.CharField(max_length=8, default="jsonl", help_text="jsonl or parquet")
    card = models.TextField(blank=True, help_text="The dataset card (README) written with the file.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(purpose__in=SnapshotPurpose.values), name="snapshot_purpose_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.format} snapshot of {self.project} ({self.row_count} rows)"


class ReliabilityFit(Job):
    """A fit of the labeler-reliability model (``annotation/reliability.py``) over a project's human
    judgments, with each labeler's profile: run on the ``default`` worker, read by the quality
    pages and by exports aggregated "reliability-weighted"."""

    job_task = "annotation.tasks.reliability_fit"
    stale_after = timedelta(minutes=30)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reliability_fits")
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    # The newest judgment the fit read: later ones are "since the fit" on the pages.
    last_judgment_id = models.PositiveBigIntegerField(default=0)
    judgments = models.PositiveIntegerField(default=0)
    # {username: {"reliability": alpha, "bias": beta, "left_on_tie": sigmoid(beta), "labels": n}}
    labelers = models.JSONField(default=dict, blank=True)
    # {username: the profile: biases with intervals and tests, agreement, gold, time, flips, flags}
    profiles = models.JSONField(default=dict, blank=True)
    # iterations, converged, seconds, comparisons, and the project-wide figures the profiles use
    summary = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "state", "-created_at"], name="reliability_fit_latest")]

    def __str__(self) -> str:
        return f"reliability fit #{self.pk} of {self.project} ({self.state})"


class AuditAction(models.TextChoices):
    ROUND_STARTED = "round.started", "Round started"
    ROUND_CANCELLED = "round.cancelled", "Round cancelled"
    ROUND_RETRIED = "round.retried", "Round retried"
    POLICY_DECIDED = "policy.decided", "New policy admitted or kept out on labelers' verdict"
    SAMPLING_STARTED = "sampling.started", "Sampling started"
    JUDGMENT_CHANGED = "judgment.changed", "Verdict changed by its labeler"
    GOLD_SET = "comparison.gold", "Gold answer set or cleared"
    EXPORT_STARTED = "export.started", "Export started"
    SNAPSHOT_DOWNLOADED = "snapshot.downloaded", "Dataset downloaded"
    IMPORT_WRITTEN = "import.written", "File imported"
    MEMBER_ADDED = "member.added", "Committee member added"
    MEMBER_RETIRED = "member.retired", "Committee member retired"
    MEMBER_REACTIVATED = "member.reactivated", "Committee member brought back"
    MEMBER_CHANGED = "member.changed", "Committee member changed"
    MEMBER_DELETED = "member.deleted", "Committee member deleted"
    ROLE_GRANTED = "role.granted", "Role granted"
    ROLE_CHANGED = "role.changed", "Role changed"
    ROLE_REVOKED = "role.revoked", "Role revoked"
    PROJECT_CHANGED = "project.changed", "Project settings changed"
    PARTICIPANT_JOINED = "participant.joined", "Study participant joined"


class AuditEvent(models.Model):
    """Who changed data or models, when, and what. Append-only: nothing in Arbiter edits or
    deletes these rows, and the admin shows them read-only."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The name is kept as written: the log must still say who after the account is deleted.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_name = models.CharField(max_length=150, help_text="Username, or 'system' for the scheduler and workers.")
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    target = models.CharField(max_length=200, help_text="What was acted on, e.g. 'round 3', 'member smollm2'.")
    details = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["project", "-at"], name="audit_project_recent")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target}"
