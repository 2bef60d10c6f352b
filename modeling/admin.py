from django.contrib import admin

from config.admin import ArbiterModelAdmin
from modeling.models import CommitteeMember, Round


@admin.register(CommitteeMember)
class CommitteeMemberAdmin(ArbiterModelAdmin):
    list_display = ["name", "kind", "weight", "is_active", "created_at", "retired_at"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "description", "weight", "is_active", "generation"]}),
        ("Local model", {"fields": ["model_path", "gguf_package", "gguf_file"]}),
        ("OpenAI-compatible endpoint", {"fields": ["base_url", "endpoint_model", "api_key_env", "timeout_s", "max_retries"]}),
        ("Round checkpoint", {"fields": ["source_round", "base_member"]}),
    ]


@admin.register(Round)
class RoundAdmin(ArbiterModelAdmin):
    list_display = ["project", "number", "state", "heartbeat_at", "created_at", "finished_at"]
    list_filter = ["state", "project"]
    readonly_fields = ["log", "error", "metrics", "step_timings", "heartbeat_at", "started_at", "finished_at"]
