"""Input shapes for the labeling API. Types and sizes here; the rules of the protocol in services."""

from rest_framework import serializers

from annotation.models import Strength


class NextSerializer(serializers.Serializer):
    exclude = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=50)


class SubmitSerializer(serializers.Serializer):
    chosen = serializers.ChoiceField(choices=["left", "right"])
    strength = serializers.ChoiceField(choices=Strength.choices)
    both_bad = serializers.BooleanField(default=False)
    edit = serializers.CharField(allow_null=True, required=False, default=None, trim_whitespace=False, max_length=200_000)
    attributes = serializers.DictField(child=serializers.DictField(), required=False, default=dict)
    flags = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False, default=dict)
    rationale = serializers.CharField(allow_blank=True, required=False, default="", max_length=20_000)
    idempotency_key = serializers.CharField(allow_blank=True, required=False, default="", max_length=64)
    next = serializers.BooleanField(
        default=False, help_text="Also lease the next comparison and return it as `next` (saves a round trip)."
    )


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200)


class AssignmentSerializer(serializers.Serializer):
    """The labeling payload (documentation for the schema; built by ``selectors.assignment_payload``)."""

    assignment = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    conversation = serializers.ListField(child=serializers.DictField())
    left = serializers.DictField()
    right = serializers.DictField()
    ask = serializers.DictField()
    progress = serializers.DictField()


class JudgmentResultSerializer(serializers.Serializer):
    judgment = serializers.IntegerField()
    created = serializers.BooleanField()
    edited = serializers.BooleanField()
    next = AssignmentSerializer(
        required=False, allow_null=True,
        help_text="With `next: true`: the next comparison, or null when there is nothing left to label.",
    )


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()


class ExportStartSerializer(StrictJSONTypes, serializers.Serializer):
    format = serializers.ChoiceField(choices=FORMATS)
    filters = ExportFiltersField(required=False, default=dict)
    parquet = serializers.BooleanField(default=False)
    file_format = serializers.ChoiceField(
        choices=["jsonl", "parquet", "csv"], required=False,
        help_text="jsonl (default) or parquet for training; csv for spreadsheets (formula cells quoted).",
    )


class ExportSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    format = serializers.CharField()
    file_format = serializers.CharField()
    state = serializers.CharField()
    filters = serializers.DictField()
    row_count = serializers.IntegerField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    error = serializers.CharField()
    card = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class ProjectSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField()
    role = serializers.CharField()
    overlap_k = serializers.IntegerField()
    gold_rate = serializers.FloatField()
    lease_minutes = serializers.IntegerField()
    margin_table = serializers.CharField()
    edit_step = serializers.BooleanField()
    pairing = serializers.CharField()


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
    edited_response_id = serializers.IntegerField(allow_null=True)
    attributes = serializers.DictField()
    flags = serializers.DictField()
    rationale = serializers.CharField()
    time_on_task_ms = serializers.IntegerField()
    submitted_at = serializers.DateTimeField()
