"""Writes for the annotation app, split by domain. Every function is keyword-only and named
``<entity>_<verb>``; views, serializers and tasks call these, and nothing else writes."""

from annotation.services.imports import PairImportResult, import_user, preference_pairs_import
from annotation.services.labeling import (
    ATTRIBUTES,
    FLAGS,
    AlreadyEnded,
    AssignmentNotFound,
    IdempotencyKeyReused,
    InvalidVerdict,
    LabelingError,
    LeaseCapReached,
    LeaseExpired,
    Verdict,
    assignment_skip,
    assignments_expire,
    comparison_lease_next,
    comparison_slots_recount,
    judgment_submit,
)
from annotation.services.projects import (
    membership_set,
    project_create,
    project_set_quality_threshold,
    project_set_round_schedule,
)
from annotation.services.prompts import (
    PromptData,
    PromptImportResult,
    messages_validate,
    prompt_content_hash,
    prompts_create,
)

__all__ = [
    "PairImportResult", "import_user", "preference_pairs_import",
    "ATTRIBUTES", "FLAGS", "AlreadyEnded", "AssignmentNotFound", "IdempotencyKeyReused", "InvalidVerdict", "LabelingError",
    "LeaseCapReached", "LeaseExpired", "PromptData", "PromptImportResult", "Verdict", "assignment_skip",
    "assignments_expire", "comparison_lease_next", "comparison_slots_recount", "judgment_submit", "membership_set", "messages_validate",
    "project_create", "project_set_quality_threshold", "project_set_round_schedule", "prompt_content_hash", "prompts_create",
]
