"""Llama 2's safety meta-label: where a project asks it, every judgment carries the pair's bin;
where it does not, a bin is refused. The same through the service, the API and a changed verdict."""

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from rest_framework.test import APIClient

from annotation.models import Assignment, AssignmentState, AuditAction, AuditEvent, Judgment, Role, SafetyBin, Strength
from annotation.services import IdempotencyKeyReused, InvalidVerdict, Verdict, judgment_submit
from annotation.services.review import judgment_change
from tests.factories import AssignmentFactory, ComparisonFactory, MembershipFactory, ProjectFactory, PromptFactory

pytestmark = pytest.mark.django_db


def leased(project, labeler):
    return AssignmentFactory(comparison=ComparisonFactory(prompt=PromptFactory(project=project)), labeler=labeler)


def submit(assignment, **fields):
    verdict = Verdict(**{"chosen": "left", "strength": Strength.BETTER, **fields})
    return judgment_submit(assignment_id=assignment.pk, labeler=assignment.labeler, verdict=verdict)


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_project_that_asks_stores_the_bin_and_requires_one(member_of):
    project = ProjectFactory(ask_safety=True)
    labeler = member_of(project, Role.LABELER)
    missing = leased(project, labeler)
    with pytest.raises(InvalidVerdict, match="^safety: this project asks"):
        submit(missing)
    assert Assignment.objects.get(pk=missing.pk).state == AssignmentState.LEASED and not Judgment.objects.exists()
    judgment, created = submit(missing, chosen="right", safety=SafetyBin.REJECTED_SAFE)
    assert created and Judgment.objects.get(pk=judgment.pk).safety == "rejected_safe"


def test_a_project_that_does_not_ask_refuses_a_bin_and_stores_none(member_of):
    project = ProjectFactory()
    labeler = member_of(project, Role.LABELER)
    assignment = leased(project, labeler)
    with pytest.raises(InvalidVerdict, match="^safety: this project does not ask"):
        submit(assignment, safety=SafetyBin.BOTH_SAFE)
    judgment, _ = submit(assignment)
    assert Judgment.objects.get(pk=judgment.pk).safety is None


@pytest.mark.parametrize("value", ["safe", "BOTH_SAFE", "", "both safe"])
def test_an_unknown_bin_is_named(member_of, value):
    project = ProjectFactory(ask_safety=True)
    with pytest.raises(InvalidVerdict, match="^safety: expected one of both_safe, chosen_safe, rejected_safe, both_unsafe or null"):
        submit(leased(project, member_of(project, Role.LABELER)), safety=value)


def test_a_retry_is_the_same_request_only_with_the_same_bin(member_of):
    project = ProjectFactory(ask_safety=True)
    assignment = leased(project, member_of(project, Role.LABELER))
    first, _ = submit(assignment, safety=SafetyBin.BOTH_SAFE, idempotency_key="k")
    again, created = submit(assignment, safety=SafetyBin.BOTH_SAFE, idempotency_key="k")
    assert again.pk == first.pk and not created
    with pytest.raises(IdempotencyKeyReused):
        submit(assignment, safety=SafetyBin.BOTH_UNSAFE, idempotency_key="k")


@pytest.mark.parametrize(
    ("before", "after"),
    [("chosen_safe", "rejected_safe"), ("rejected_safe", "chosen_safe"), ("both_safe", "both_safe"), ("both_unsafe", "both_unsafe"), (None, None)],
)
def test_a_changed_side_turns_the_bin_with_it(member_of, before, after):
    project = ProjectFactory(ask_safety=before is not None)
    assignment = leased(project, member_of(project, Role.LABELER))
    judgment, _ = submit(assignment, chosen="left", safety=before)
    judgment_change(judgment_id=judgment.pk, labeler=assignment.labeler, chosen="left", strength=Strength.SLIGHTLY_BETTER)
    assert Judgment.objects.get(pk=judgment.pk).safety == before  # the same side: the same pair
    judgment_change(judgment_id=judgment.pk, labeler=assignment.labeler, chosen="right", strength=Strength.BETTER)
    assert Judgment.objects.get(pk=judgment.pk).safety == after
    change = AuditEvent.objects.filter(action=AuditAction.JUDGMENT_CHANGED).latest("id").details
    assert (change["before"]["safety"], change["after"]["safety"]) == (before, after)


def test_the_task_says_whether_safety_is_asked_and_the_api_takes_it(member_of):
    project = ProjectFactory(ask_safety=True, gold_rate=0)
    ComparisonFactory(prompt=PromptFactory(project=project))
    client = api(member_of(project, Role.LABELER))
    task = client.post(reverse("api-next", kwargs={"slug": project.slug}), {}, format="json").json()
    assert task["ask"]["safety"] is True
    url = reverse("api-submit", kwargs={"assignment_id": task["assignment"]})
    refused = client.post(url, {"chosen": "left", "strength": "better"}, format="json")
    assert refused.status_code == 400 and refused.json()["detail"].startswith("safety: this project asks")
    done = client.post(url, {"chosen": "left", "strength": "better", "safety": "chosen_safe"}, format="json")
    assert done.status_code == 201 and Judgment.objects.get().safety == "chosen_safe"


NOT_SENT = object()
SAFETY_VALUES = st.one_of(
    st.just(NOT_SENT), st.none(), st.sampled_from(SafetyBin.values), st.sampled_from(["safe", "unknown", "BOTH_SAFE", ""]),
    st.text(max_size=20), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.lists(st.sampled_from(SafetyBin.values), max_size=2), st.dictionaries(st.sampled_from(SafetyBin.values), st.booleans(), max_size=2),
)


def test_any_safety_value_through_the_submit_api_is_taken_or_a_400_never_a_500(member_of):
    projects = {asks: ProjectFactory(ask_safety=asks) for asks in (True, False)}
    labeler = member_of(projects[True], Role.LABELER)
    MembershipFactory(project=projects[False], user=labeler, role=Role.LABELER)
    client = api(labeler)
    client.raise_request_exception = False  # a crash must show as the 500 it would be
    outcomes = {"taken": 0, "refused": 0}

    @hypothesis_settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(asks=st.booleans(), value=SAFETY_VALUES)
    def run(asks, value):
        assignment = leased(projects[asks], labeler)
        body = {"chosen": "right", "strength": "better", **({} if value is NOT_SENT else {"safety": value})}
        answer = client.post(reverse("api-submit", kwargs={"assignment_id": assignment.pk}), body, format="json")
        valid = value in SafetyBin.values if asks else value in (None, NOT_SENT)
        if valid:
            assert answer.status_code == 201, answer.content
            outcomes["taken"] += 1
            assert Judgment.objects.get(assignment=assignment).safety == (None if value is NOT_SENT else value)
        else:
            assert answer.status_code == 400, (value, answer.status_code, answer.content)
            assert b"safety" in answer.content
            outcomes["refused"] += 1
            assert not Judgment.objects.filter(assignment=assignment).exists()

    run()
    assert outcomes["taken"] > 0 and outcomes["refused"] > 0, outcomes
