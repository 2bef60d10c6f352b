"""Writes for the modeling app, split by domain."""

from modeling.services.judging import JudgeBusy, JudgeError, judge_execute, judge_start, judge_start_if_named
from modeling.services.members import (
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    SMOLLM2_PACKAGE,
    MemberTestBusy,
    MemberTestError,
    member_register,
    member_register_smollm2,
    member_set_active,
    member_set_project_weight,
    member_spec,
    member_test_execute,
    member_test_start,
    member_update,
)
from modeling.services.rounds import (
    RoundConflict,
    RoundError,
    round_cancel,
    round_execute,
    round_retry,
    round_start,
    rounds_start_due,
)
from modeling.services.sampling import SamplingError, near_duplicates, sampling_execute, sampling_start

__all__ = [
    "JudgeBusy", "JudgeError", "judge_execute", "judge_start", "judge_start_if_named",
    "SMOLLM2_GGUF", "SMOLLM2_NAME", "SMOLLM2_PACKAGE", "SamplingError", "MemberTestBusy", "MemberTestError", "member_test_execute", "member_test_start", "member_register",
    "member_register_smollm2", "member_set_active", "member_set_project_weight", "member_spec", "member_update", "near_duplicates", "sampling_execute",
    "sampling_start", "RoundConflict", "RoundError", "round_cancel", "round_execute", "round_retry", "round_start",
    "rounds_start_due",
]
