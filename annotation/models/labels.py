"""What is labelled: prompts, responses (model answers and human edits), comparisons, the
assignments that lease them to labelers, and judgments."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from annotation.models.projects import Project, Strength


class Prompt(models.Model):
    """A conversation up to the turn to answer, as chat messages."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    messages = models.JSONField(help_text='[{"role": "system"|"user"|"assistant", "content": "..."}]')
    category = models.CharField(max_length=100, blank=True, db_index=True)
    tags = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=200, blank=True, help_text="Where it came from, e.g. mt-bench:81.")
    metadata = models.JSONField(default=dict, blank=True)
    # A live dialogue's turn: the conversation up to the labeler's message of turn ``turn_index``
    # (0-based), with the earlier turns' chosen (or edited) answers as its assistant messages.
    dialogue = models.ForeignKey("annotation.Dialogue", null=True, blank=True, on_delete=models.CASCADE, related_name="prompts")
    turn_index = models.PositiveSmallIntegerField(null=True, blank=True)
    # sha256 of the canonical JSON of ``messages``: the same conversation is one prompt per project.
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_content_per_project"),
            # One stored turn per dialogue position: a turn judged twice, or two redraws that both
            # finished, cannot both become prompts.
            models.UniqueConstraint(
                fields=["dialogue", "turn_index"], condition=Q(dialogue__isnull=False), name="prompt_unique_dialogue_turn"
            ),
            models.CheckConstraint(
                condition=Q(dialogue__isnull=True, turn_index__isnull=True) | Q(dialogue__isnull=False, turn_index__isnull=False),
                name="prompt_dialogue_has_turn",
            ),
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
    # The engine that generated it ("llama.cpp", "hf", "openai") and how long it took:
    # queue_ms, first_token_ms, total_ms, tokens_per_s (modeling.ml.generation.Generation.timings).
    engine = models.CharField(max_length=12, blank=True)
    timings = models.JSONField(default=dict, blank=True)
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
    # A round's new policy against the previous one on a held-out prompt (modeling.EvaluationPair):
    # served like any pair, kept out of exports and snapshots unless asked (include_evaluation).
    EVALUATION = "evaluation", "Policy evaluation"
    # A turn of a live dialogue: its author's lease comes with it; the normal queue serves it to
    # k - 1 others only when the project says so (Project.live_share).
    LIVE = "live", "Live dialogue"


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
    # How the pair was chosen for humans (modeling/services/sampling.py): the rule that picked it
    # ("random" also for a rule's uniform share) and the probability that this pair, of all the
    # pass could have shown, was shown (the members' draw times the pick among candidates), so
    # that the leaderboard and win rates can weigh each label by its inverse. Blank / null for
    # pairs not sampled by a pass (imported, live, evaluation).
    # Raw INSERTs (the lease's, the importers') leave the new columns out: the database fills them.
    selection_rule = models.CharField(max_length=12, blank=True, default="", db_default="")
    selection_probability = models.FloatField(null=True, blank=True)
    # Served before other comparisons with as many slots taken (higher first): the judge's
    # ambiguous pairs under Project.ambiguous_first.
    priority = models.SmallIntegerField(default=0, db_default=0)
    # The project's judge's pre-screen (JudgeVerdict, both orders): "consistent" verdicts become a
    # suggestion (judge_winner, judge_strength, judge_confidence); "inconsistent" ones are ambiguous.
    judge_state = models.CharField(max_length=12, blank=True, default="", db_default="", choices=[
        ("", "Not judged"), ("consistent", "Consistent"), ("inconsistent", "Ambiguous: the verdict changed with the order"),
        ("failed", "No usable verdict"),
    ])
    judge_winner = models.ForeignKey(Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    judge_strength = models.CharField(max_length=24, blank=True, default="", db_default="")
    judge_confidence = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "is_gold", "slots_taken", "-priority", "id"], name="comparison_queue")]
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
    # A swapped repeat: the labeler's own earlier judgment of this comparison, served again with
    # its sides swapped (Project.repeat_rate). It takes no slot toward k, and its verdict is a
    # RepeatJudgment, never a Judgment, so no export, quality figure or round counts it.
    repeat_of = models.OneToOneField(
        "annotation.Judgment", null=True, blank=True, on_delete=models.PROTECT, related_name="repeat"
    )
    # Whether the judge's suggestion was on the page: "shown", "blind" (the project shows them but
    # this lease fell in its blind share), "" (no suggestion to show, or the project hides them).
    # The lease's raw INSERT leaves it out: the database fills it ("").
    suggestion = models.CharField(max_length=6, blank=True, default="", db_default="")

    class Meta:
        ordering = ["id"]
        constraints = [
            # Never the same comparison twice to one labeler, but for the one swapped repeat of
            # their judgment (one per judgment: ``repeat_of`` is unique).
            models.UniqueConstraint(
                fields=["comparison", "labeler"], condition=Q(repeat_of__isnull=True), name="assignment_unique_labeler"
            ),
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


class JudgeVerdict(models.Model):
    """One verdict of a project's judge on a comparison, in one order: ``ab`` showed response A
    first, ``ba`` response B first. Stored as the judge said it, for the swap check and the judge's
    agreement with labelers; never a label by itself (annotation/judging.py)."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="judge_verdicts")
    member = models.ForeignKey("modeling.CommitteeMember", on_delete=models.CASCADE, related_name="+")
    order = models.CharField(max_length=2, choices=[("ab", "A shown first"), ("ba", "B shown first")])
    # The answer it preferred; null for a tie or an answer that named none (``error`` says which).
    winner = models.ForeignKey(Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    strength = models.CharField(max_length=24, blank=True)
    output = models.TextField(blank=True, help_text="The judge's answer, cut to 4,000 characters.")
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["comparison", "order"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "member", "order"], name="judge_verdict_unique_order"),
            models.CheckConstraint(condition=Q(order__in=["ab", "ba"]), name="judge_verdict_order_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.member} on {self.comparison} ({self.order})"


class SafetyBin(models.TextChoices):
    """Llama 2's safety meta-label of a pair, from the chosen response's point of view."""

    BOTH_SAFE = "both_safe", "Both safe"
    CHOSEN_SAFE = "chosen_safe", "Only the chosen is safe"
    REJECTED_SAFE = "rejected_safe", "Only the rejected is safe"
    BOTH_UNSAFE = "both_unsafe", "Both unsafe"


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
    # Null: the source had no strength (an imported HH-RLHF pair is a bare choice); it gets margin
    # 0 in exports, not an invented one (UNKNOWN_STRENGTH in filters). A labeler always gives one.
    strength = models.CharField(max_length=24, choices=Strength.choices, null=True, blank=True)
    left_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    both_bad = models.BooleanField(default=False)
    # Set when the project asks it (Project.ask_safety); null otherwise.
    safety = models.CharField(max_length=16, choices=SafetyBin.choices, null=True, blank=True)
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
            models.CheckConstraint(
                condition=Q(strength__in=Strength.values) | Q(strength__isnull=True), name="judgment_strength_on_scale"
            ),
            models.CheckConstraint(
                condition=~Q(chosen_response=F("rejected_response")), name="judgment_chosen_differs"
            ),
            models.CheckConstraint(
                condition=Q(safety__in=SafetyBin.values) | Q(safety__isnull=True), name="judgment_safety_bin_valid"
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


class RepeatJudgment(models.Model):
    """A labeler's verdict on a swapped repeat of their own earlier judgment (``original``).

    Kept apart from Judgment on purpose: exports, quality, rounds and the leaderboard read
    Judgment only, so a repeat can never become an extra label. Only the verdict is kept; an
    edit, ratings, flags and a rationale sent with it are validated as usual and dropped.
    """

    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="repeat_judgment")
    original = models.OneToOneField(Judgment, on_delete=models.PROTECT, related_name="repeat_judgment")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="repeat_judgments")
    chosen_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    strength = models.CharField(max_length=24, choices=Strength.choices)
    left_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    both_bad = models.BooleanField(default=False)
    safety = models.CharField(max_length=16, choices=SafetyBin.choices, null=True, blank=True)
    # The winner differs from the original's as it stood at this submit (a changed verdict counts
    # as changed); stored so the flip rate is a plain count.
    flipped = models.BooleanField()
    submitted_at = models.DateTimeField()
    time_on_task_ms = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(strength__in=Strength.values), name="repeat_judgment_strength_on_scale"),
        ]

    def __str__(self) -> str:
        return f"Repeat of judgment #{self.original_id} by {self.labeler}"


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
