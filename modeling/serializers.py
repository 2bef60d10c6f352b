
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api import StrictJSONTypes
from config.schema import schema_problem
from modeling.models import CommitteeMember, JudgeRun, SamplingRun
from modeling.selectors import human_evaluation, sampling_timing
from modeling.services.rounds import PRESETS, ROUND_SETTINGS_SCHEMA

GENERATION_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "temperature": {"type": "number", "minimum": 0},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_new_tokens": {"type": "integer", "minimum": 1},
    },
}


@extend_schema_field(GENERATION_SCHEMA)
class GenerationField(serializers.JSONField):
    """A member's generation overrides; checked in ``CommitteeMemberSerializer.validate_generation``."""


@extend_schema_field(ROUND_SETTINGS_SCHEMA)
class RoundConfigField(serializers.DictField):
    """Overrides of a round's default settings; checked by the round service against the schema."""


class SamplingStartSerializer(StrictJSONTypes, serializers.Serializer):
    mode = serializers.ChoiceField(choices=SamplingRun.Mode.choices, default=SamplingRun.Mode.COMMITTEE)
    limit = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=4096, required=False, allow_null=True, default=None)
    batch_size = serializers.IntegerField(min_value=1, max_value=128, default=8)


class SamplingRunSerializer(serializers.ModelSerializer):
    elapsed_s = serializers.SerializerMethodField(help_text="Seconds the pass has run (to its end, once finished).")
    eta_s = serializers.SerializerMethodField(help_text="While it runs: seconds left at its pace so far.")
    selection = serializers.SerializerMethodField(help_text="How the pass chose the pairs labelers see (or why it fell back to random).")

    class Meta:
        model = SamplingRun
        fields = [
            "id", "mode", "state", "prompts_done", "prompts_total", "responses_created", "responses_failed",
            "responses_empty", "pairs_created", "pairs_near_duplicate", "member_errors", "error", "created_at",
            "finished_at", "elapsed_s", "eta_s", "selection",
        ]
        read_only_fields = fields

    def get_elapsed_s(self, run) -> float | None:
        return sampling_timing(run=run)["elapsed_s"]

    def get_eta_s(self, run) -> float | None:
        return sampling_timing(run=run)["eta_s"]

    def get_selection(self, run) -> str:
        return run.config.get("selection", "")


class JudgeStartSerializer(StrictJSONTypes, serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True, default=None,
                                     help_text="Judge at most this many comparisons (oldest first); all by default.")


class JudgeRunSerializer(serializers.ModelSerializer):
    member = serializers.CharField(source="member.name")

    class Meta:
        model = JudgeRun
        fields = ["id", "member", "state", "queue", "limit", "comparisons_total", "comparisons_done", "consistent",
                  "inconsistent", "failed", "error", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JudgeStatusSerializer(serializers.Serializer):
    runs = JudgeRunSerializer(many=True)
    agreement = serializers.DictField(help_text=(
        "annotation/judging.py: judged, consistent, inconsistent, failed, consistent_share, flip_rate, first_position, "
        "compared, agreement_without_ties, agreement_with_ties, kappa, follow {shown, blind, not_offered}; "
        "proportions as {n, k, rate, ci95}."
    ))


class CommitteeMemberSerializer(StrictJSONTypes, serializers.ModelSerializer):
    class Meta:
        model = CommitteeMember
        fields = [
            "id", "name", "kind", "description", "model_path", "gguf_package", "gguf_file", "engine", "engine_planned",
            "base_url", "endpoint_model", "api_key_env", "timeout_s", "max_retries", "generation", "weight", "is_active",
            "created_at", "retired_at", "last_test",
        ]
        read_only_fields = ["id", "created_at", "retired_at", "last_test", "engine_planned"]

    generation = GenerationField(required=False)
    engine_planned = serializers.CharField(read_only=True, help_text=(
        "The engine meant to serve the member: llama.cpp, hf or openai (endpoints). The worker falls back to hf "
        "when llama.cpp is missing or cannot load the file, and the member's test says so (engine, engine_note)."
    ))
    last_test = serializers.SerializerMethodField(help_text=(
        "The latest test with one prompt (a job): id, state (queued, running, succeeded, failed), prompt, "
        "answer or error, load_s, answer_s, tokens_per_s, engine (the one that answered), first_token_ms, "
        "engine_note (why another engine answered), weights (what llama.cpp served when not the file as given, "
        "e.g. a Q8_0 copy of a Q4_1 file); {} when never tested."
    ))

    def get_last_test(self, member) -> dict:
        return member.last_test

    def validate_generation(self, value):
        problem = schema_problem(value, GENERATION_SCHEMA)  # its types and ranges, not only its keys
        if problem:
            raise serializers.ValidationError(problem)
        return value


class ProjectCommitteeSerializer(serializers.Serializer):
    """A member as a project's lead sees it: its weight here and its latest test, not where it
    lives (worker paths and key variables are for staff)."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    weight = serializers.FloatField(help_text="The member's own weight.")
    project_weight = serializers.FloatField(help_text="Its weight in this project (0: it does not answer here).")
    project_weight_set = serializers.BooleanField(help_text="Whether the project set its own weight.")
    last_test = serializers.SerializerMethodField()

    def get_last_test(self, member) -> dict:
        return member.last_test


class MemberTestSerializer(StrictJSONTypes, serializers.Serializer):
    prompt = serializers.CharField(max_length=2_000, trim_whitespace=True)


class RoundSerializer(serializers.ModelSerializer):
    state_display = serializers.CharField(source="get_state_display", read_only=True)
    policy_member = serializers.SerializerMethodField()
    snapshots = serializers.SerializerMethodField()
    human_evaluation = serializers.SerializerMethodField(
        help_text="Labelers on the round's evaluation pairs (new policy vs previous): pairs, labels, win_rate and ci95, "
        "the reward model's rm_win_rate and rm_ci95 on the same pairs, rm_agreement with the labelers; null without pairs."
    )

    class Meta:
        from modeling.models import Round

        model = Round
        fields = [
            "id", "number", "state", "state_display", "config", "step_timings", "metrics", "progress", "log", "error", "artifacts_path",
            "heartbeat_at", "created_at", "started_at", "finished_at", "policy_member", "snapshots", "human_evaluation",
        ]
        read_only_fields = fields

    def get_policy_member(self, round_) -> dict | None:
        member = getattr(round_, "policy_member", None)
        return {"id": member.pk, "name": member.name, "is_active": member.is_active} if member else None

    def get_human_evaluation(self, round_) -> dict | None:
        # A list computes every round's figures in one query (the view passes them in the context).
        stats = self.context.get("human_evaluation")
        if stats is None:
            stats = human_evaluation(rounds=[round_])
        return stats.get(round_.pk)

    def get_snapshots(self, round_) -> list[dict]:
        return [
            {"id": s.pk, "purpose": s.purpose, "rows": s.row_count, "sha256": s.sha256, "path": s.path}
            for s in round_.snapshots.all()
        ]


class RoundStartSerializer(StrictJSONTypes, serializers.Serializer):
    preset = serializers.ChoiceField(
        choices=sorted(PRESETS), default="standard",
        help_text="quick: one epoch of at most 40 RM / 30 DPO steps and a 4-prompt head-to-head, minutes on a CPU; "
                  "standard: two reward-model epochs and one DPO epoch, at most 500 steps each. `config` applies on top.",
    )
    config = RoundConfigField(required=False, default=dict)


class DialogueStartSerializer(StrictJSONTypes, serializers.Serializer):
    """A labeler's first turn; lengths and the project's rules are checked by the live service."""

    text = serializers.CharField(allow_blank=True, trim_whitespace=False)
    system_prompt = serializers.CharField(allow_blank=True, trim_whitespace=False, required=False, default="")
    category = serializers.CharField(allow_blank=True, required=False, default="", max_length=100)


class TurnStartSerializer(StrictJSONTypes, serializers.Serializer):
    text = serializers.CharField(allow_blank=True, trim_whitespace=False)


class LiveMessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()
    mark = serializers.CharField(required=False, help_text="chosen | edited: an earlier answer the labeler chose (and edited).")


class LiveSideSerializer(serializers.Serializer):
    text = serializers.CharField()
    state = serializers.CharField()
    failed = serializers.BooleanField()
    error = serializers.CharField(required=False)


class LiveTurnSerializer(serializers.Serializer):
    """A live turn as the page polls it: both answers by screen side, blind; ``task`` (the
    labeling payload) once both are in."""

    turn = serializers.IntegerField()
    dialogue = serializers.IntegerField()
    turn_index = serializers.IntegerField()
    state = serializers.CharField()
    conversation = LiveMessageSerializer(many=True)
    status = serializers.ChoiceField(choices=["waiting", "generating", "answered", "failed", "stalled", "cancelled"])
    message = serializers.CharField(allow_blank=True)
    worker_up = serializers.BooleanField()
    poll_ms = serializers.IntegerField()
    left = LiveSideSerializer()
    right = LiveSideSerializer()
    task = serializers.DictField(allow_null=True)
    assignment_state = serializers.CharField(
        required=False, help_text="Answered, but the lease is no longer open: submitted, skipped or expired."
    )


class DialogueSerializer(serializers.Serializer):
    dialogue = serializers.IntegerField()
    state = serializers.CharField()
    max_turns = serializers.IntegerField()
    turns_stored = serializers.IntegerField()
    turns_judged = serializers.IntegerField()
    current = LiveTurnSerializer(allow_null=True)
    context = LiveMessageSerializer(many=True)
