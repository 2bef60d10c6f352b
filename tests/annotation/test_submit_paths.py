"""The two submit paths store the same rows. On PostgreSQL a verdict without an edit is one SQL
statement (``_submit_postgresql``); everything else, and SQLite, takes the Python path
(``_judgment_submit_locked``). The same verdicts go through both, on twin assignments, and the
stored rows are compared field by field, so the two can never drift apart unnoticed."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Judgment, LabelerDay, Role
from annotation.services.labeling import InvalidVerdict, Verdict, _judgment_submit_locked, _submit_postgresql, judgment_submit
from tests.factories import AssignmentFactory, ComparisonFactory, MembershipFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

VERDICTS = {
    "left, better": (Verdict(chosen="left", strength="better"), False, False),
    "right, significantly, response B on the left": (Verdict(chosen="right", strength="significantly_better"), True, False),
    "both bad, rationale, ratings and flags": (
        Verdict(chosen="left", strength="negligibly_better", both_bad=True, rationale="Both miss the question.",
                attributes={"left": {"helpfulness": 1, "correctness": 0}, "right": {"verbosity": 4}},
                flags={"left": ["factually_wrong", "unsafe", "unsafe"], "right": []}, idempotency_key="k-1"),
        False, False,
    ),
    "a gold comparison": (Verdict(chosen="right", strength="slightly_better", flags={"right": ["refuses_needlessly"]}), True, True),
    # A verdict with a safety bin goes to a project that asks for one (_twin).
    "safety: chosen unsafe, rejected safe, response B on the left": (
        Verdict(chosen="right", strength="better", safety="rejected_safe", flags={"right": ["unsafe"]}), True, False,
    ),
    "safety: both safe": (Verdict(chosen="left", strength="slightly_better", safety="both_safe"), False, False),
}


def _twin(left_is_b: bool, gold: bool, ask_safety: bool = False) -> Assignment:
    project = ProjectFactory(ask_safety=ask_safety)
    labeler = UserFactory()
    MembershipFactory(project=project, user=labeler, role=Role.LABELER)
    comparison = ComparisonFactory(prompt=PromptFactory(project=project))
    if gold:
        type(comparison).objects.filter(pk=comparison.pk).update(is_gold=True, gold_winner=comparison.response_a)
    return AssignmentFactory(
        comparison=comparison, labeler=labeler, leased_at=timezone.now() - timedelta(seconds=90),
        left_response=comparison.response_b if left_is_b else comparison.response_a,
    )


def _stored(assignment: Assignment) -> dict:
    """What the submit wrote, with ids replaced by the role they play ("a"/"b": the comparison's
    responses) and times by their differences."""
    assignment.refresh_from_db()
    judgment = Judgment.objects.get(assignment=assignment)
    comparison = assignment.comparison
    comparison.refresh_from_db()
    role = {comparison.response_a_id: "a", comparison.response_b_id: "b"}
    return {
        "judgment": {
            "labeler": judgment.labeler_id == assignment.labeler_id, "comparison": judgment.comparison_id == comparison.pk,
            "chosen": role[judgment.chosen_response_id], "rejected": role[judgment.rejected_response_id],
            "left": role[judgment.left_response_id], "strength": judgment.strength, "both_bad": judgment.both_bad,
            "safety": judgment.safety,
            "edited": judgment.edited_response_id, "rationale": judgment.rationale, "key": judgment.idempotency_key,
            "attributes": {role[int(k)]: v for k, v in judgment.attributes.items()},
            "flags": {role[int(k)]: v for k, v in judgment.flags.items()},
            "leased_at": judgment.leased_at == assignment.leased_at,
            "time_on_task_ms": abs(judgment.time_on_task_ms - (judgment.submitted_at - judgment.leased_at).total_seconds() * 1000) <= 1,
        },
        "assignment": {"state": assignment.state, "ended_at": assignment.ended_at == judgment.submitted_at},
        "labeler_day": list(LabelerDay.objects.filter(labeler=assignment.labeler).values_list("day", "judgments")),
        "slots_taken": comparison.slots_taken,
    }


@pytest.mark.parametrize("name", VERDICTS)
def test_the_sql_statement_and_the_python_path_store_the_same_rows(name):
    verdict, left_is_b, gold = VERDICTS[name]
    asks = verdict.safety is not None
    by_sql, by_python = _twin(left_is_b, gold, asks), _twin(left_is_b, gold, asks)
    assert _submit_postgresql(assignment_id=by_sql.pk, labeler=by_sql.labeler, verdict=verdict, now=timezone.now()) is not None
    _judgment_submit_locked(assignment_id=by_python.pk, labeler=by_python.labeler, verdict=verdict)
    stored = _stored(by_sql)
    assert stored == _stored(by_python)
    assert stored["assignment"]["state"] == AssignmentState.SUBMITTED and stored["judgment"]["time_on_task_ms"]


@pytest.mark.parametrize(("ask_safety", "safety", "message"), [
    (True, None, "safety: this project asks"), (False, "both_safe", "safety: this project does not ask"),
])
def test_a_bin_the_project_does_not_expect_matches_nothing_in_sql_and_the_locked_path_says_why(ask_safety, safety, message):
    assignment = _twin(False, False, ask_safety)
    verdict = Verdict(chosen="left", strength="better", safety=safety)
    assert _submit_postgresql(assignment_id=assignment.pk, labeler=assignment.labeler, verdict=verdict, now=timezone.now()) is None
    with pytest.raises(InvalidVerdict, match=message):
        judgment_submit(assignment_id=assignment.pk, labeler=assignment.labeler, verdict=verdict)
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.LEASED and not Judgment.objects.exists()
