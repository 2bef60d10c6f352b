from django.contrib import admin
from django.db import models

from annotation.models import (
    Assignment,
    AuditEvent,
    Comparison,
    DatasetSnapshot,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
)
from config.admin import ArbiterModelAdmin


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(ArbiterModelAdmin):
    list_display = ["name", "slug", "overlap_k", "gold_rate", "pairing", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    # The study's exit addresses: one typed without a scheme is https (the only one they take).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Membership)
class MembershipAdmin(ArbiterModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user", "project"]


@admin.register(Prompt)
class PromptAdmin(ArbiterModelAdmin):
    list_display = ["id", "project", "category", "source", "__str__", "created_at"]
    list_filter = ["project", "category"]
    search_fields = ["source", "content_hash"]
    # Judgments refer to exactly what labelers were shown: the conversation is not editable.
    readonly_fields = ["messages", "content_hash"]


@admin.register(Response)
class ResponseAdmin(ArbiterModelAdmin):
    list_display = ["id", "prompt", "source", "member", "sample_index", "completion_tokens", "latency_ms", "created_at"]
    list_filter = ["source", "member"]
    raw_id_fields = ["prompt", "parent"]
    # Judgments refer to exactly what labelers were shown: the text is not editable.
    readonly_fields = ["text", "created_at"]


@admin.register(Comparison)
class ComparisonAdmin(ArbiterModelAdmin):
    list_display = ["id", "project", "prompt", "source", "is_gold", "created_at"]
    list_filter = ["project", "source", "is_gold"]
    raw_id_fields = ["prompt", "response_a", "response_b", "gold_winner"]


@admin.register(Assignment)
class AssignmentAdmin(ArbiterModelAdmin):
    list_display = ["id", "comparison", "labeler", "state", "leased_at", "expires_at", "ended_at"]
    list_filter = ["state"]
    raw_id_fields = ["comparison", "left_response", "repeat_of"]


@admin.register(Judgment)
class JudgmentAdmin(ArbiterModelAdmin):
    list_display = ["id", "comparison", "labeler", "strength", "both_bad", "time_on_task_ms", "submitted_at"]
    list_filter = ["strength", "both_bad"]
    raw_id_fields = ["assignment", "comparison", "chosen_response", "rejected_response", "left_response", "edited_response"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ArbiterModelAdmin):
    list_display = ["id", "project", "purpose", "format", "row_count", "sha256", "created_at"]
    list_filter = ["purpose", "format", "project"]
    readonly_fields = ["sha256", "row_count", "size_bytes", "path", "created_at"]


@admin.register(AuditEvent)
class AuditEventAdmin(ArbiterModelAdmin):
    """Read-only: the audit log is written by the services and signals, never edited."""

    list_display = ["at", "actor_name", "action", "project", "target", "request_id"]
    list_filter = ["action", "project"]
    search_fields = ["actor_name", "target", "request_id"]
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
