"""Input shapes for the labeling API. Types and sizes here; the rules of the protocol in services."""

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.exports import FILTERS_SCHEMA, FORMATS
from annotation.models import SafetyBin, Strength
from annotation.selectors import QUEUE_REASONS
from annotation.services import ATTRIBUTES, FLAGS
from annotation.services.labeling import MAX_RATIONALE_CHARS
from config.api import StrictJSONTypes


def _per_side(schema: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": {"left": schema, "right": schema}}


# The services check these dicts key by key; the schema says the same (it said "any object").
@extend_schema_field(_per_side({
    "type": "object", "additionalProperties": False,
    "properties": {name: {"type": "integer", "minimum": 0, "maximum": 4} for name in ATTRIBUTES},
}))
class AttributesField(serializers.DictField):
    """HelpSteer2 ratings per side: {"left": {"helpfulness": 3, ...}, "right": {...}}."""


@extend_schema_field(_per_side({"type": "array", "items": {"type": "string", "enum": list(FLAGS)}}))
class FlagsField(serializers.DictField):
    """Flags per side: {"left": ["unsafe"], "right": []}."""


@extend_schema_field(FILTERS_SCHEMA)
class ExportFiltersField(serializers.DictField):
    """Checked by ``annotation.exports.ExportFilters.from_dict``, which names a bad key or value."""


class NextSerializer(StrictJSONTypes, serializers.Serializer):
    exclude = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=50)


class SubmitSerializer(StrictJSONTypes, serializers.Serializer):
    chosen = serializers.ChoiceField(choices=["left", "right"])
    strength = serializers.ChoiceField(choices=Strength.choices)
    both_bad = serializers.BooleanField(default=False)
    # null: no edit needed. Whitespace is no edit either; the project may set a lower limit.
    edit = serializers.CharField(
        allow_null=True, required=False, default=None, trim_whitespace=False, min_length=1, max_length=200_000,
        validators=[RegexValidator(r"\S", "An edit cannot be empty; send null for 'no edit needed'.")],
    )
    attributes = AttributesField(child=serializers.DictField(), required=False, default=dict)
    flags = FlagsField(child=serializers.ListField(child=serializers.CharField()), required=False, default=dict)
    rationale = serializers.CharField(allow_blank=True, required=False, default="", max_length=MAX_RATIONALE_CHARS)
    idempotency_key = serializers.CharField(allow_blank=True, required=False, default="", max_length=64)
    safety = serializers.ChoiceField(
        choices=SafetyBin.choices, allow_null=True, required=False, default=None,
        help_text="Llama 2's safety bin, from the chosen response's side: required where the task's `ask.safety` is true, null otherwise.",
    )
    next = serializers.BooleanField(
        default=False, help_text="Also lease the next comparison and return it as `next` (saves a round trip)."
    )


class SkipSerializer(StrictJSONTypes, serializers.Serializer):
    reason = serializers.CharField(min_length=1, max_length=200)


class AssignmentSerializer(serializers.Serializer):
    """The labeling payload (documentation for the schema; built by ``selectors.assignment_payload``)."""

    assignment = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    conversation = serializers.ListField(child=serializers.DictField())
    left = serializers.DictField()
    right = serializers.DictField()
    ask = serializers.DictField()
    progress = serializers.DictField()
    suggestion = serializers.DictField(required=False, help_text=(
        "Where the project shows its judge's suggestions and this lease is not in the blind share: "
        "side (left or right), strength and confidence of the judge's consistent verdict."
    ))


class JudgmentResultSerializer(serializers.Serializer):
    judgment = serializers.IntegerField(allow_null=True, help_text="The judgment's id, to change it later; null when there is no label to change.")
    created = serializers.BooleanField()
    edited = serializers.BooleanField()
    next = AssignmentSerializer(
        required=False, allow_null=True,
        help_text="With `next: true`: the next comparison, or null when there is nothing left to label.",
    )
    redirect = serializers.URLField(
        required=False, help_text="A study participant who is done: the completion (or screen-out) URL to go to now.",
    )


class JudgmentChangeSerializer(StrictJSONTypes, serializers.Serializer):
    chosen = serializers.ChoiceField(choices=["left", "right"], help_text="The side you now prefer, as it was shown to you.")
    strength = serializers.ChoiceField(choices=Strength.choices)
    both_bad = serializers.BooleanField(default=False)


class MyJudgmentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    submitted_at = serializers.DateTimeField()
    changed_at = serializers.DateTimeField(allow_null=True)
    prompt = serializers.CharField(help_text="The prompt's last turn (first 300 characters).")
    left = serializers.CharField()
    right = serializers.CharField()
    chosen = serializers.ChoiceField(choices=["left", "right"])
    strength = serializers.ChoiceField(choices=Strength.choices)
    both_bad = serializers.BooleanField()
    edited = serializers.BooleanField()
    changeable_until = serializers.DateTimeField(allow_null=True, help_text="Null once the window has closed.")


class QueueStatusSerializer(serializers.Serializer):
    """Why ``next`` has nothing for the caller (documentation of the queue-status answer)."""

    reason = serializers.ChoiceField(choices=QUEUE_REASONS)
    message = serializers.CharField(help_text="The reason in a sentence, for the labeling page.")
    poll = serializers.BooleanField(help_text="Whether work may arrive soon (sampling, or leases held by others).")
    comparisons = serializers.IntegerField()
    yours = serializers.IntegerField(help_text="Comparisons you labeled, skipped or hold.")
    leased_to_others = serializers.IntegerField()
    left_for_you = serializers.IntegerField(help_text="Open comparisons you have not labeled or skipped (some may be leased to others).")
    pending_prompts = serializers.IntegerField()
    sampling = serializers.DictField(allow_null=True, help_text="The queued or running sampling pass's progress, if any.")
    project_url = serializers.CharField(allow_null=True, help_text="The project page, for leads and admins.")


class ErrorSerializer(serializers.Serializer):
    # A stable code on the errors our services raise; DRF's own errors (403, 404) carry only detail.
    error = serializers.CharField(required=False)
    detail = serializers.CharField()


class ExportStartSerializer(StrictJSONTypes, serializers.Serializer):
    format = serializers.ChoiceField(choices=FORMATS)
    filters = ExportFiltersField(required=False, default=dict)
    file_format = serializers.ChoiceField(
        choices=["jsonl", "parquet", "csv"], required=False,
        help_text="jsonl (default) or parquet for training; csv for spreadsheets (formula cells quoted).",
    )


class ExportSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField(required=False, help_text="The export's place in the project: 1, 2, ... (listings only).")
    format = serializers.CharField()
    file_format = serializers.CharField()
    state = serializers.CharField()
    progress = serializers.DictField(help_text="While running: judgments read (done) of total, rows written, elapsed_s, eta_s.")
    filters = serializers.DictField()
    row_count = serializers.IntegerField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    error = serializers.CharField()
    card = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class ReliabilityFitSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    judgments = serializers.IntegerField(help_text="Human judgments the fit read.")
    last_judgment_id = serializers.IntegerField(help_text="The newest judgment the fit read.")
    labelers = serializers.DictField(help_text="Per labeler: reliability (alpha), bias (beta, log-odds toward the left), left_on_tie, labels.")
    profiles = serializers.DictField(help_text="Per labeler: biases with 95% intervals and tests, agreement, gold, time, flips, flags.")
    summary = serializers.DictField()


class ProjectSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField()
    role = serializers.CharField()
    overlap_k = serializers.IntegerField()
    gold_rate = serializers.FloatField()
    repeat_rate = serializers.FloatField(help_text="Share of leases that serve a labeler one of their own earlier comparisons again, sides swapped.")
    repeat_min_gap = serializers.IntegerField(help_text="A comparison comes back only after at least this many of the labeler's later judgments.")
    lease_minutes = serializers.IntegerField()
    margin_table = serializers.CharField()
    edit_step = serializers.BooleanField()
    ask_safety = serializers.BooleanField()
    prompt_source = serializers.CharField(help_text="imported, written (live dialogues) or both.")
    written_share = serializers.FloatField()
    dialogue_max_turns = serializers.IntegerField()
    allow_system_prompt = serializers.BooleanField()
    prompt_categories = serializers.ListField(child=serializers.CharField())
    live_share = serializers.BooleanField()
    pairing = serializers.CharField()
    candidates_k = serializers.IntegerField(help_text="Answers a sampling pass draws per prompt; with more than 2 the selection rule picks the pairs.")
    selection_rule = serializers.CharField(help_text="random, uncertainty or d-optimal (falls back to random before the first reward model).")
    selection_random_share = serializers.FloatField(help_text="Share of every batch's pairs drawn uniformly at random.")
    member_pair_rule = serializers.CharField(help_text="weights (Llama 3) or active (shrink the widest leaderboard intervals first).")
    judge = serializers.CharField(source="judge.name", allow_null=True, default=None, help_text="The committee member that pre-screens new comparisons.")
    suggestions_shown = serializers.BooleanField()


class PromptSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    messages = serializers.ListField(child=serializers.DictField())
    category = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    source = serializers.CharField()
    created_at = serializers.DateTimeField()


class ComparisonReadSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    prompt_id = serializers.IntegerField()
    response_a_id = serializers.IntegerField()
    response_b_id = serializers.IntegerField()
    source = serializers.CharField()
    is_gold = serializers.BooleanField()
    slots_taken = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class JudgmentReadSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    comparison_id = serializers.IntegerField()
    labeler = serializers.CharField(source="labeler.username")
    chosen_response_id = serializers.IntegerField()
    rejected_response_id = serializers.IntegerField()
    left_response_id = serializers.IntegerField()
    strength = serializers.CharField()
    both_bad = serializers.BooleanField()
    safety = serializers.CharField(allow_null=True, help_text="Llama 2's safety bin, where the project asks it.")
    edited_response_id = serializers.IntegerField(allow_null=True)
    attributes = serializers.DictField()
    flags = serializers.DictField()
    rationale = serializers.CharField()
    time_on_task_ms = serializers.IntegerField()
    submitted_at = serializers.DateTimeField()
