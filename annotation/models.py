"""Projects, prompts, responses, comparisons, assignments, judgments, dataset snapshots.

Models hold data and the invariants the database can enforce; every write that means something
goes through ``annotation.services``. Vocabulary: ``../shared/SPEC.md``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from config.jobs import Job, JobState  # JobState: annotation code reads it from here too

class Role(models.TextChoices):
    LABELER = "labeler", "Labeler"
    LEAD = "lead", "Project lead"
    ADMIN = "admin", "Admin"


#: Each role can do what the roles before it can.
ROLE_RANK = {Role.LABELER: 1, Role.LEAD: 2, Role.ADMIN: 3}


class Strength(models.TextChoices):
    """The four-level scale of Llama 2 and Llama 3, strongest first."""

    SIGNIFICANTLY_BETTER = "significantly_better", "Significantly better"
    BETTER = "better", "Better"
    SLIGHTLY_BETTER = "slightly_better", "Slightly better"
    NEGLIGIBLY_BETTER = "negligibly_better", "Negligibly better / unsure"


class MarginTable(models.TextChoices):
    SMALL = "small", "Llama 2 small (1, 2/3, 1/3, 0)"
    LARGE = "large", "Llama 2 large (3, 2, 1, 0)"


#: Margin per strength (Llama 2, Table 27). "small" had the best average RM accuracy (Table 28).
MARGINS = {
    MarginTable.SMALL: {
        Strength.SIGNIFICANTLY_BETTER: 1.0,
        Strength.BETTER: 2.0 / 3.0,
        Strength.SLIGHTLY_BETTER: 1.0 / 3.0,
        Strength.NEGLIGIBLY_BETTER: 0.0,
    },
    MarginTable.LARGE: {
        Strength.SIGNIFICANTLY_BETTER: 3.0,
        Strength.BETTER: 2.0,
        Strength.SLIGHTLY_BETTER: 1.0,
        Strength.NEGLIGIBLY_BETTER: 0.0,
    },
}


class Pairing(models.TextChoices):
    COMMITTEE = "committee", "Two members by weight (Llama 3)"
    REJECTION_SAMPLING = "rejection_sampling", "Best of K by the reward model vs. another sample"


class PolicyAdmission(models.TextChoices):
    ALWAYS = "always", "Always join the committee"
    IF_WINS = "if_wins", "Join only if it beats the previous policy"


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    guidelines = models.TextField(blank=True, help_text="Markdown, shown to labelers one key away.")

    # Labeling settings.
    overlap_k = models.PositiveSmallIntegerField(default=3, help_text="Labels wanted per comparison.")
    gold_rate = models.FloatField(default=0.05, help_text="Share of leases that are gold comparisons.")
    lease_minutes = models.PositiveIntegerField(default=30)
    max_live_leases = models.PositiveSmallIntegerField(default=3, help_text="Live leases one labeler may hold.")
    margin_table = models.CharField(max_length=10, choices=MarginTable.choices, default=MarginTable.SMALL)
    ask_attributes = models.BooleanField(default=False, help_text="Ask HelpSteer2 ratings (0-4) per response.")
    ask_flags = models.BooleanField(default=True)
    ask_rationale = models.BooleanField(default=False)
    edit_step = models.BooleanField(default=True, help_text="Ask labelers to edit the winner.")
    max_edit_chars = models.PositiveIntegerField(default=20000)
    verdict_change_minutes = models.PositiveIntegerField(
        default=10, help_text="How long after a submit its labeler may change the verdict (0: never)."
    )

    # Committee and rounds.
    pairing = models.CharField(max_length=24, choices=Pairing.choices, default=Pairing.COMMITTEE)
    rejection_k = models.PositiveSmallIntegerField(default=4, help_text="Samples per prompt for rejection sampling.")
    policy_admission = models.CharField(max_length=10, choices=PolicyAdmission.choices, default=PolicyAdmission.ALWAYS)
    round_min_new_judgments = models.PositiveIntegerField(
        default=200, help_text="A scheduled round starts once this many judgments arrived since the last one."
    )
    round_schedule_enabled = models.BooleanField(default=False)
    labeler_quality_threshold = models.FloatField(
        default=0.6, help_text="Gold accuracy below which a labeler can be excluded from exports."
    )

    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(overlap_k__gte=1), name="project_overlap_k_positive"),
            models.CheckConstraint(condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_unit"),
            models.CheckConstraint(condition=Q(lease_minutes__gte=1), name="project_lease_positive"),
            models.CheckConstraint(condition=Q(max_live_leases__gte=1), name="project_live_leases_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def margin_for(self, strength: str) -> float:
        return MARGINS[MarginTable(self.margin_table)][Strength(strength)]


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.LABELER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user_per_project"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} in {self.project}"


class Prompt(models.Model):
    """A conversation up to the turn to answer, as chat messages."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    messages = models.JSONField(help_text='[{"role": "system"|"user"|"assistant", "content": "..."}]')
    category = models.CharField(max_length=100, blank=True, db_index=True)
    tags = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=200, blank=True, help_text="Where it came from, e.g. mt-bench:81.")
    metadata = models.JSONField(default=dict, blank=True)
    # sha256 of the canonical JSON of ``messages``: the same conversation is one prompt per project.
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_content_per_project"),
        ]

    def __str__(self) -> str:
        last = self.messages[-1]["content"] if self.messages else ""
        return last[:80]


class ResponseSource(models.TextChoices):
    MODEL = "model", "Model sample"
    HUMAN_EDIT = "human_edit", "Human edit"
    IMPORT = "import", "Imported"


class Response(models.Model):
    """One member's answer to one prompt, or a labeler's edit of another response."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    source = models.CharField(max_length=12, choices=ResponseSource.choices)
    text = models.TextField()
    member = models.ForeignKey(
        "modeling.CommitteeMember", null=True, blank=True, on_delete=models.PROTECT, related_name="responses"
    )
    sample_index = models.PositiveSmallIntegerField(default=0)
    sampling = models.JSONField(default=dict, blank=True, help_text="Generation settings used.")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    reward = models.FloatField(null=True, blank=True, help_text="Score from the reward model, when scored.")
    # Human edits.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="edits")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="edits"
    )
    edit_distance = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(source__in=ResponseSource.values), name="response_source_valid"),
            # A model sample names its member; a human edit names its parent and author.
            models.CheckConstraint(
                condition=~Q(source=ResponseSource.MODEL) | Q(member__isnull=False),
                name="response_model_has_member",
            ),
            models.CheckConstraint(
                condition=~Q(source=ResponseSource.HUMAN_EDIT)
                | (Q(parent__isnull=False) & Q(author__isnull=False) & Q(edit_distance__gt=0)),
                name="response_edit_has_parent_author_distance",
            ),
            # Sampling is idempotent by (prompt, member, sample index): a re-run cannot duplicate.
            models.UniqueConstraint(
                fields=["prompt", "member", "sample_index"],
                condition=Q(source=ResponseSource.MODEL),
                name="response_unique_sample",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} #{self.pk}"


class ComparisonSource(models.TextChoices):
    COMMITTEE = "committee", "Committee pair"
    REJECTION_SAMPLING = "rejection_sampling", "Rejection sampling"
    IMPORT = "import", "Imported"


class Comparison(models.Model):
    """Two responses to the same prompt, shown to up to ``project.overlap_k`` labelers."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    response_a = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=20, choices=ComparisonSource.choices, default=ComparisonSource.COMMITTEE)
    is_gold = models.BooleanField(default=False)
    gold_winner = models.ForeignKey(Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Live-or-done assignments, kept in step by the lease, skip and expiry services. A hint that
    # lets the queue find candidates through an index instead of counting every comparison's
    # assignments; the queue recounts under the row lock before it leases, so a stale hint
    # (a lease expired but not yet swept) can only delay a comparison, never overfill it.
    slots_taken = models.PositiveIntegerField(default=0)
    # The prompt and both responses as the labeler sees them (sanitized HTML), written by the
    # first request that shows the comparison: rendering Markdown with highlighted code costs
    # milliseconds, and every web process would otherwise pay it again for each of k labelers.
    rendered = models.JSONField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "is_gold", "slots_taken", "id"], name="comparison_queue")]
        constraints = [
            models.CheckConstraint(condition=~Q(response_a=F("response_b")), name="comparison_responses_differ"),
            models.UniqueConstraint(fields=["response_a", "response_b"], name="comparison_unique_pair"),
            # Gold carries its expected winner, which is one of its two responses.
            models.CheckConstraint(
                condition=Q(is_gold=False, gold_winner__isnull=True)
                | (
                    Q(is_gold=True, gold_winner__isnull=False)
                    & (Q(gold_winner=F("response_a")) | Q(gold_winner=F("response_b")))
                ),
                name="comparison_gold_winner_is_a_side",
            ),
        ]
        # "Both responses answer this comparison's prompt" spans three rows, which a CHECK cannot
        # see: a trigger enforces it (migration 0002), on SQLite and PostgreSQL alike.

    def __str__(self) -> str:
        return f"Comparison #{self.pk}"


class AssignmentState(models.TextChoices):
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    """A lease of one comparison to one labeler, with an expiry."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    # Sides are randomised per assignment and recorded, so position bias can be measured.
    left_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=10, choices=AssignmentState.choices, default=AssignmentState.LEASED)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Never the same comparison twice to one labeler.
            models.UniqueConstraint(fields=["comparison", "labeler"], name="assignment_unique_labeler"),
            models.CheckConstraint(condition=Q(state__in=AssignmentState.values), name="assignment_state_valid"),
            models.CheckConstraint(condition=Q(expires_at__gt=F("leased_at")), name="assignment_expiry_after_lease"),
            models.CheckConstraint(
                condition=Q(state=AssignmentState.LEASED, ended_at__isnull=True)
                | (~Q(state=AssignmentState.LEASED) & Q(ended_at__isnull=False)),
                name="assignment_ended_iff_not_leased",
            ),
        ]
        indexes = [models.Index(fields=["labeler", "state"]), models.Index(fields=["comparison", "state"])]

    def __str__(self) -> str:
        return f"{self.comparison} to {self.labeler} ({self.state})"


#: Judgments that arrive in a file (HH-RLHF imports) belong to an inactive account named
#: ``import:<source>``: kept apart from people's labels in quality views and, unless asked, exports.
IMPORTED_ACCOUNT_PREFIX = "import:"
#: A labeler's gold accuracy counts (quality page, export filter) from this many gold judgments on.
MIN_GOLD_JUDGMENTS = 5


def imported_account_name(source: str) -> str:
    return f"{IMPORTED_ACCOUNT_PREFIX}{source}"[:150]


class Judgment(models.Model):
    """One labeler's verdict on one comparison. Stores what was preferred, not which side it was on."""

    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="judgment")
    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="judgments")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments")
    chosen_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    rejected_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    strength = models.CharField(max_length=24, choices=Strength.choices)
    left_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    both_bad = models.BooleanField(default=False)
    # The labeler's improvement of the chosen response, a ``human_edit`` Response; null when
    # the labeler said no edit was needed or the project has no edit step.
    edited_response = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    attributes = models.JSONField(default=dict, blank=True, help_text="HelpSteer2 ratings per response id, 0-4.")
    flags = models.JSONField(default=dict, blank=True, help_text="Flags per response id.")
    rationale = models.TextField(blank=True)
    # Server-side timing: from the lease to the submit.
    leased_at = models.DateTimeField()
    submitted_at = models.DateTimeField()
    time_on_task_ms = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=64, blank=True)
    # Set when the labeler changed the verdict within the project's window (the audit log has
    # what it was); exports and rounds read the row as it is now.
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "labeler"], name="judgment_unique_per_labeler"),
            models.UniqueConstraint(
                fields=["labeler", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="judgment_unique_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(strength__in=Strength.values), name="judgment_strength_on_scale"),
            models.CheckConstraint(
                condition=~Q(chosen_response=F("rejected_response")), name="judgment_chosen_differs"
            ),
            models.CheckConstraint(
                condition=Q(left_response=F("chosen_response")) | Q(left_response=F("rejected_response")),
                name="judgment_left_is_a_side",
            ),
        ]
        indexes = [
            models.Index(fields=["comparison", "submitted_at"]),
            models.Index(fields=["submitted_at"]),
            # "Done today" on every next: one labeler's recent judgments, not everyone's today.
            models.Index(fields=["labeler", "submitted_at"], name="judgment_labeler_recent"),
        ]

    def __str__(self) -> str:
        return f"Judgment #{self.pk} by {self.labeler}"


class LabelerDay(models.Model):
    """Judgments one labeler submitted in one project on one day (``TIME_ZONE``'s calendar).

    "Done today" on every labeling request is one row read here instead of counting the
    labeler's judgments of the day, which grew with each one (2.6 ms at 340 judgments). The
    submit keeps it, in the same statement or transaction as the judgment, so it is exact.
    Imported judgments are not submissions and are not counted.
    """

    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    judgments = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["labeler", "project", "day"], name="labeler_day_unique")]

    def __str__(self) -> str:
        return f"{self.labeler_id} in {self.project_id} on {self.day}: {self.judgments}"


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


class AuditAction(models.TextChoices):
    ROUND_STARTED = "round.started", "Round started"
    ROUND_CANCELLED = "round.cancelled", "Round cancelled"
    ROUND_RETRIED = "round.retried", "Round retried"
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
