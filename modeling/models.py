"""Committee members and retraining rounds. Vocabulary: ``../shared/SPEC.md``."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from config.jobs import Job, JobState


class MemberKind(models.TextChoices):
    LOCAL = "local", "Local model (directory or GGUF)"
    ENDPOINT = "endpoint", "OpenAI-compatible endpoint"
    CHECKPOINT = "checkpoint", "Policy checkpoint from a round"


class Engine(models.TextChoices):
    """What runs a local member's model (modeling/ml/generation.py); endpoints are always their
    server's. "auto": llama.cpp for a GGUF file on CPU, vLLM for a directory or a checkpoint on a
    worker with CUDA and vLLM, transformers otherwise."""

    AUTO = "auto", "Auto (llama.cpp for GGUF, else transformers)"
    LLAMA_CPP = "llama.cpp", "llama.cpp (GGUF files, quantized, CPU)"
    HF = "hf", "transformers (any local model; dequantizes GGUF)"
    VLLM = "vllm", "vLLM (GPU hosts: model directories and round checkpoints)"


def validate_endpoint_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter an http(s) URL with a host, e.g. http://vllm:8000/v1")


#: Environment variables a member may not name as its API key: the worker would send the value
#: to the member's URL, and these hold Arbiter's own secrets (database, broker, signing key).
RESERVED_ENV_PREFIXES = ("SECRET_KEY", "DATABASE", "CELERY_", "DJANGO_", "ARBITER_", "REDIS", "POSTGRES", "PG")


def validate_api_key_env(value: str) -> None:
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
        raise ValidationError("The name of an environment variable: capital letters, digits and _, e.g. OPENAI_API_KEY")
    if value.startswith(RESERVED_ENV_PREFIXES):
        raise ValidationError(f"{value} holds one of Arbiter's own settings; put the member's key in its own variable")


#: Generation settings a member starts with; each member may override any of them.
DEFAULT_GENERATION = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 256}


class CommitteeMember(models.Model):
    """A model that answers prompts. Labelers never see which member wrote what."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=12, choices=MemberKind.choices)
    description = models.TextField(blank=True)
    # Local: a model directory, or a GGUF file inside a directory or inside an installed Python
    # package (``gguf_package``: resolved on the worker, so the web never imports it).
    model_path = models.CharField(max_length=500, blank=True)
    gguf_package = models.CharField(max_length=100, blank=True)
    gguf_file = models.CharField(max_length=200, blank=True)
    # Endpoint: the API key is read from the named environment variable on the worker, so the
    # secret never sits in the database or an admin page.
    # Not a URLField: internal hosts ("http://vllm:8000/v1") have no dotted domain.
    engine = models.CharField(max_length=12, choices=Engine.choices, default=Engine.AUTO,
                              help_text="What runs a local model; ignored for endpoints.")
    base_url = models.CharField(max_length=500, blank=True, validators=[validate_endpoint_url])
    endpoint_model = models.CharField(max_length=200, blank=True)
    api_key_env = models.CharField(max_length=100, blank=True, validators=[validate_api_key_env])
    timeout_s = models.PositiveIntegerField(default=120)
    max_retries = models.PositiveSmallIntegerField(default=2)
    # Checkpoint: the round that produced it and the member it was trained from.
    source_round = models.OneToOneField(
        "modeling.Round", null=True, blank=True, on_delete=models.PROTECT, related_name="policy_member"
    )
    base_member = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="derived")

    generation = models.JSONField(default=dict, blank=True, help_text="Overrides of the default generation settings.")
    weight = models.FloatField(default=1.0, help_text="Relative chance of being drawn for a pair.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=MemberKind.values), name="member_kind_valid"),
            models.CheckConstraint(condition=Q(weight__gt=0), name="member_weight_positive"),
            models.CheckConstraint(condition=Q(engine__in=Engine.values), name="member_engine_valid"),
            # llama.cpp reads GGUF files (a checkpoint's is converted from it and its GGUF base).
            models.CheckConstraint(condition=~Q(engine=Engine.LLAMA_CPP) | ~Q(gguf_file="") | Q(kind=MemberKind.CHECKPOINT),
                                   name="member_llamacpp_has_gguf"),
            # vLLM serves model directories (a checkpoint's LoRA is merged first), not GGUF files.
            models.CheckConstraint(condition=~Q(engine=Engine.VLLM) | Q(gguf_file=""), name="member_vllm_no_gguf"),
            models.CheckConstraint(
                condition=~Q(kind=MemberKind.LOCAL) | ~Q(model_path="") | ~Q(gguf_package=""),
                name="member_local_has_location",
            ),
            models.CheckConstraint(
                condition=~Q(kind=MemberKind.ENDPOINT) | (~Q(base_url="") & ~Q(endpoint_model="")),
                name="member_endpoint_has_url_and_model",
            ),
            models.CheckConstraint(
                condition=~Q(kind=MemberKind.CHECKPOINT) | (~Q(model_path="") & Q(base_member__isnull=False)),
                name="member_checkpoint_has_path_and_base",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def last_test(self) -> dict:
        """The latest "test with one prompt" (``MemberTest.as_dict``), or {} before the first."""
        test = self.tests.order_by("-created_at", "-id").first()
        return test.as_dict() if test is not None else {}

    def generation_settings(self) -> dict:
        return {**DEFAULT_GENERATION, **(self.generation or {})}

    @property
    def engine_planned(self) -> str:
        """The engine meant to serve this member ("openai" for endpoints); the worker falls back
        to transformers when that engine is missing or cannot load the file, and says so in the
        member's test."""
        from modeling.ml.generation import engine_planned

        base_gguf = self.base_member.gguf_file if self.kind == MemberKind.CHECKPOINT and self.base_member_id else ""
        return engine_planned(kind=self.kind, gguf_file=self.gguf_file, engine=self.engine, base_gguf=base_gguf)


class CommitteeSeat(models.Model):
    """A project's own weight for a committee member: how often the member answers this project's
    prompts (0: never). Without a seat a project uses the member's weight. Members are shared and
    added by staff; each project's lead decides which of them answer its prompts."""

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="committee_seats")
    member = models.ForeignKey(CommitteeMember, on_delete=models.CASCADE, related_name="seats")
    weight = models.FloatField(help_text="Relative chance of being drawn for this project's pairs; 0 leaves the member out.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "member"], name="seat_one_per_project_member"),
            models.CheckConstraint(condition=Q(weight__gte=0), name="seat_weight_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.member} in {self.project}: {self.weight}"


class MemberTest(Job):
    """One prompt sent to one member to see that it answers (modeling/services/members.py): the
    answer or why there is none, with load and answer times. One waits per member at a time."""

    job_task = "modeling.tasks.sample_member_test"
    job_queue_field = "queue"  # endpoints are tested on the default worker, models on the gpu worker
    stale_error = "worker lost while testing: no answer for over {minutes} minutes; test again"

    member = models.ForeignKey(CommitteeMember, on_delete=models.CASCADE, related_name="tests")
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    prompt = models.TextField()
    queue = models.CharField(max_length=20)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # answer, answer_truncated, load_s, answer_s, completion_tokens, finish_reason, tokens_per_s
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="member_test_state_valid"),
            models.UniqueConstraint(
                fields=["member"], condition=Q(state__in=[JobState.QUEUED, JobState.RUNNING]),
                name="member_test_one_waiting_per_member",
            ),
        ]

    def __str__(self) -> str:
        return f"Test #{self.pk} of {self.member} ({self.state})"

    def as_dict(self) -> dict:
        """What pages and the API show of the test."""
        stamp = lambda t: t.isoformat() if t else None  # noqa: E731
        return {
            "id": self.pk, "state": self.state, "prompt": self.prompt, "queue": self.queue,
            "requested_at": stamp(self.created_at),
            "requested_by": self.requested_by.get_username() if self.requested_by_id else "system",
            "started_at": stamp(self.started_at), "finished_at": stamp(self.finished_at),
            **({"error": self.error} if self.error else {}), **self.result,
        }


class RoundState(models.TextChoices):
    QUEUED = "queued", "Queued"
    SNAPSHOT = "snapshot", "Snapshotting data"
    TRAINING_RM = "training_rm", "Training reward model"
    TRAINING_DPO = "training_dpo", "Training DPO policy"
    EVALUATING = "evaluating", "Evaluating"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_ROUND_STATES = (
    RoundState.QUEUED,
    RoundState.SNAPSHOT,
    RoundState.TRAINING_RM,
    RoundState.TRAINING_DPO,
    RoundState.EVALUATING,
)


class Round(Job):
    """Snapshot the data, train the RM, train the DPO policy, evaluate, register the new policy.

    The row is the job (config/jobs.py): its state, heartbeat, log and error are the truth a page
    or a periodic check reads, whatever happened to the Celery message. Its running state is the
    step it is on.
    """

    job_task = "modeling.tasks.round_run"
    running_states = tuple(s for s in ACTIVE_ROUND_STATES if s != RoundState.QUEUED)
    stale_after = timedelta(minutes=5)
    stale_error = "worker lost: no heartbeat for over {minutes} minutes; retry to resume"

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=RoundState.choices, default=RoundState.QUEUED)
    config = models.JSONField(default=dict, blank=True)
    step_timings = models.JSONField(default=dict, blank=True, help_text="Seconds per finished step.")
    metrics = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(
        default=dict, blank=True,
        help_text="The running step's latest report: step, phase, done/total and unit, loss, accuracy, elapsed_s, eta_s.",
    )
    log = models.TextField(blank=True)
    artifacts_path = models.CharField(max_length=500, blank=True, help_text="Relative to ARTIFACTS_DIR.")
    # The round's cut, set by its snapshot step: it trained on the project's judgments up to this id.
    # The next round's DPO data starts after it; exports can cut at it ("round_to": N).
    last_judgment_id = models.PositiveBigIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="round_unique_number"),
            models.CheckConstraint(condition=Q(state__in=RoundState.values), name="round_state_valid"),
            # Only one round per project runs at a time: a partial unique index, so two admins
            # pressing the button at once get one round and one IntegrityError, not two rounds.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(state__in=ACTIVE_ROUND_STATES),
                name="round_one_active_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} round {self.number}"


class SamplingRun(Job):
    """One pass of the committee over a project's pending prompts. The row is the job
    (config/jobs.py): progress, counts and errors live here, whatever happens to the Celery message."""

    job_task = "modeling.tasks.sample_run"
    stale_error = "worker lost: no progress for over {minutes} minutes; start a new pass to resume"

    class Mode(models.TextChoices):
        COMMITTEE = "committee", "Two members by weight (Llama 3)"
        REJECTION_SAMPLING = "rejection_sampling", "Best of K by the reward model"

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="sampling_runs")
    mode = models.CharField(max_length=24, choices=Mode.choices, default=Mode.COMMITTEE)
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    config = models.JSONField(default=dict, blank=True)
    prompts_total = models.PositiveIntegerField(default=0)
    prompts_done = models.PositiveIntegerField(default=0)
    responses_created = models.PositiveIntegerField(default=0)
    responses_failed = models.PositiveIntegerField(default=0)
    responses_empty = models.PositiveIntegerField(default=0)
    pairs_created = models.PositiveIntegerField(default=0)
    pairs_near_duplicate = models.PositiveIntegerField(default=0)
    member_errors = models.JSONField(default=dict, blank=True, help_text="Member name → the error it failed with.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="sampling_state_valid"),
            # One sampling pass per project at a time: two would draw members for the same prompts.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(state__in=[JobState.QUEUED, JobState.RUNNING]),
                name="sampling_one_active_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"Sampling #{self.pk} of {self.project} ({self.state})"


class JudgeRun(Job):
    """The project's judge giving its verdicts, in both orders, on the comparisons it has not
    judged yet (``modeling/services/judging.py``). The row is the job: counts and errors live here.
    Local judges run on the ``gpu`` worker, endpoints on ``default`` (``queue``)."""

    job_task = "modeling.tasks.judge_run"
    job_queue_field = "queue"
    stale_error = "worker lost while judging: no progress for over {minutes} minutes; start the judge again to resume"

    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="judge_runs")
    member = models.ForeignKey(CommitteeMember, on_delete=models.CASCADE, related_name="judge_runs")
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    queue = models.CharField(max_length=20)
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="Judge at most this many comparisons.")
    comparisons_total = models.PositiveIntegerField(default=0)
    comparisons_done = models.PositiveIntegerField(default=0)
    consistent = models.PositiveIntegerField(default=0)
    inconsistent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="judge_run_state_valid"),
            models.UniqueConstraint(
                fields=["project"], condition=Q(state__in=[JobState.QUEUED, JobState.RUNNING]), name="judge_run_one_active_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"Judge run #{self.pk} of {self.project} ({self.state})"


class EvaluationPair(models.Model):
    """A comparison a round puts before labelers: its new policy's and the previous policy's answers
    to one prompt neither trained on, blind and served like any pair (``ComparisonSource.EVALUATION``),
    with the round's reward model's scores of both, so its predicted verdict can be set beside the
    labelers' (``modeling.selectors.human_evaluation``)."""

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="evaluation_pairs")
    comparison = models.OneToOneField("annotation.Comparison", on_delete=models.CASCADE, related_name="evaluation_pair")
    new_response = models.ForeignKey("annotation.Response", on_delete=models.PROTECT, related_name="+")
    previous_response = models.ForeignKey("annotation.Response", on_delete=models.PROTECT, related_name="+")
    reward_new = models.FloatField(help_text="The round's reward model's score of the new policy's answer.")
    reward_previous = models.FloatField(help_text="Its score of the previous policy's answer.")

    class Meta:
        ordering = ["round", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(new_response=F("previous_response")), name="evaluation_pair_sides_differ"),
        ]

    def __str__(self) -> str:
        return f"Evaluation pair #{self.pk} of {self.round}"


class LiveSide(models.TextChoices):
    GENERATING = "generating", "Generating"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class LiveTurn(Job):
    """Two members answering one turn of a live dialogue, as the labeler watches
    (``modeling/services/live.py``). The row is the job; the answers grow in ``text_a`` and
    ``text_b`` as the ``live`` worker streams them, and the page polls the row. Once both are done
    the turn becomes an ordinary Prompt, two Responses, a Comparison and the author's lease, in
    one transaction (``comparison`` set); a failed side, a redraw or an ended dialogue stores none
    of it. A redraw cancels the row and draws a new pair for the same turn."""

    job_task = "modeling.tasks.live_turn_run"
    # The page says at once that the worker stopped; the watchdog fails the row soon after.
    stale_after = timedelta(minutes=1)
    lost_after = timedelta(minutes=2)
    stale_error = "the live worker stopped while answering; redraw the pair"

    dialogue = models.ForeignKey("annotation.Dialogue", on_delete=models.CASCADE, related_name="live_turns")
    turn_index = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    # The conversation the members answer: earlier turns with their chosen (or edited) answers,
    # then the labeler's new message.
    messages = models.JSONField()
    # Which earlier assistant messages the labeler chose or edited: {message index: "chosen" | "edited"}.
    marks = models.JSONField(default=dict, blank=True)
    member_a = models.ForeignKey(CommitteeMember, on_delete=models.PROTECT, related_name="+")
    member_b = models.ForeignKey(CommitteeMember, on_delete=models.PROTECT, related_name="+")
    # Sides are randomised per turn: the page shows a on the left when this is true.
    left_is_a = models.BooleanField()
    text_a = models.TextField(blank=True)
    text_b = models.TextField(blank=True)
    side_a = models.CharField(max_length=10, choices=LiveSide.choices, default=LiveSide.GENERATING)
    side_b = models.CharField(max_length=10, choices=LiveSide.choices, default=LiveSide.GENERATING)
    error_a = models.CharField(max_length=500, blank=True)
    error_b = models.CharField(max_length=500, blank=True)
    # Set by a redraw or the end of the dialogue: the worker stops at its next flush.
    cancelled = models.BooleanField(default=False)
    comparison = models.OneToOneField(
        "annotation.Comparison", null=True, blank=True, on_delete=models.SET_NULL, related_name="live_turn"
    )
    assignment = models.OneToOneField(
        "annotation.Assignment", null=True, blank=True, on_delete=models.SET_NULL, related_name="live_turn"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="live_turn_state_valid"),
            models.CheckConstraint(condition=~Q(member_a=F("member_b")), name="live_turn_members_differ"),
            # One turn in flight per dialogue: a second prompt while the first is answered is refused.
            models.UniqueConstraint(
                fields=["dialogue"], condition=Q(state__in=[JobState.QUEUED, JobState.RUNNING], cancelled=False),
                name="live_turn_one_in_flight",
            ),
        ]

    def __str__(self) -> str:
        return f"Live turn #{self.pk} ({self.dialogue_id}:{self.turn_index}, {self.state})"


class LiveWorker(models.Model):
    """A ``live`` worker's heartbeat (``modeling.live_worker``): the live page says at once that
    no worker is there instead of waiting on a prompt nobody answers."""

    hostname = models.CharField(max_length=200, unique=True)
    beat_at = models.DateTimeField()
    started_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} at {self.beat_at}"
