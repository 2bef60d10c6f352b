from rest_framework import serializers

from modeling.models import CommitteeMember, SamplingRun


class SamplingStartSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=SamplingRun.Mode.choices, default=SamplingRun.Mode.COMMITTEE)
    limit = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=4096, required=False, allow_null=True, default=None)
    batch_size = serializers.IntegerField(min_value=1, max_value=128, default=8)


class SamplingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SamplingRun
        fields = [
            "id", "mode", "state", "prompts_done", "prompts_total", "responses_created", "responses_failed",
            "responses_empty", "pairs_created", "pairs_near_duplicate", "member_errors", "error", "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class CommitteeMemberSerializer(serializers.ModelSerializer):
    class Meta:
        model = CommitteeMember
        fields = [
            "id", "name", "kind", "description", "model_path", "gguf_package", "gguf_file", "base_url",
            "endpoint_model", "api_key_env", "timeout_s", "max_retries", "generation", "weight", "is_active",
            "created_at", "retired_at",
        ]
        read_only_fields = ["id", "created_at", "retired_at"]

    def validate_generation(self, value):
        allowed = {"temperature", "top_p", "max_new_tokens"}
        if not isinstance(value, dict) or set(value) - allowed:
            raise serializers.ValidationError(f"only {sorted(allowed)} may be set")
        return value


class RoundSerializer(serializers.ModelSerializer):
    policy_member = serializers.SerializerMethodField()
    snapshots = serializers.SerializerMethodField()

    class Meta:
        from modeling.models import Round

        model = Round
        fields = [
            "id", "number", "state", "config", "step_timings", "metrics", "log", "error", "artifacts_path",
            "heartbeat_at", "created_at", "started_at", "finished_at", "policy_member", "snapshots",
        ]
        read_only_fields = fields

    def get_policy_member(self, round_) -> dict | None:
        member = getattr(round_, "policy_member", None)
        return {"id": member.pk, "name": member.name, "is_active": member.is_active} if member else None

    def get_snapshots(self, round_) -> list[dict]:
        return [
            {"id": s.pk, "purpose": s.purpose, "rows": s.row_count, "sha256": s.sha256, "path": s.path}
            for s in round_.snapshots.all()
        ]


class RoundStartSerializer(serializers.Serializer):
    config = serializers.DictField(required=False, default=dict)
