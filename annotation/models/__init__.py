"""Projects, prompts, responses, comparisons, assignments, judgments, dataset snapshots.

Models hold data and the invariants the database can enforce; every write that means something
goes through ``annotation.services``. Vocabulary: ``../shared/SPEC.md``.

One module each: ``projects`` (projects, roles, the strength scale), ``labels`` (prompts,
responses, comparisons, assignments, judgments), ``dialogues`` (live dialogues), ``participants`` (crowd
participants who join through a study link), ``records`` (dataset snapshots, audit events).
"""

from annotation.models.dialogues import Dialogue, DialogueState
from annotation.models.labels import (
    IMPORTED_ACCOUNT_PREFIX,
    MIN_GOLD_JUDGMENTS,
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    JudgeVerdict,
    Judgment,
    LabelerDay,
    Prompt,
    RepeatJudgment,
    Response,
    ResponseSource,
    SafetyBin,
    imported_account_name,
)
from annotation.models.participants import (
    MAX_EXTERNAL_ID_CHARS,
    PARTICIPANT_PREFIX,
    ExternalParticipant,
    ParticipantOutcome,
    ParticipantPlatform,
)
from annotation.models.projects import (
    MARGINS,
    MAX_DIALOGUE_TURNS,
    ROLE_RANK,
    STRENGTH_FILTER_VALUES,
    UNKNOWN_STRENGTH,
    MarginTable,
    MemberPairRule,
    Membership,
    Pairing,
    PolicyAdmission,
    Project,
    PromptSource,
    Role,
    SelectionRule,
    Strength,
)
from annotation.models.records import AuditAction, AuditEvent, DatasetSnapshot, ReliabilityFit, SnapshotPurpose
from config.jobs import Job, JobState  # JobState: annotation code reads it from here too

__all__ = [
    "IMPORTED_ACCOUNT_PREFIX", "MARGINS", "MAX_DIALOGUE_TURNS", "MAX_EXTERNAL_ID_CHARS", "PARTICIPANT_PREFIX", "MIN_GOLD_JUDGMENTS", "ROLE_RANK", "STRENGTH_FILTER_VALUES", "UNKNOWN_STRENGTH", "Assignment", "AssignmentState", "AuditAction",
    "AuditEvent", "Comparison", "ComparisonSource", "DatasetSnapshot", "Dialogue", "DialogueState", "ExternalParticipant", "Job", "JobState", "JudgeVerdict", "Judgment", "LabelerDay",
    "MarginTable", "MemberPairRule", "Membership", "Pairing", "ParticipantOutcome", "ParticipantPlatform", "PolicyAdmission", "Project", "Prompt", "PromptSource", "ReliabilityFit", "RepeatJudgment", "Response", "ResponseSource", "Role",
    "SafetyBin", "SelectionRule", "SnapshotPurpose", "Strength", "imported_account_name",
]
