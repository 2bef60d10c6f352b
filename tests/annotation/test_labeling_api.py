"""The labeling API: the same rules as the page, and a clear 4xx for every bad request."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import selectors
from annotation.models import Assignment, AssignmentState, Judgment, LabelerDay, Response, ResponseSource, Role
from tests.factories import (
    ComparisonFactory,
    MemberFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    ResponseFactory,
)
from tests.html_checks import live_markup

pytestmark = pytest.mark.django_db

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"> [x](javascript:alert(1))'


@pytest.fixture
def setup(member_of):
    project = ProjectFactory(gold_rate=0, max_edit_chars=1000)
    prompt = PromptFactory(project=project, messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi " + XSS}])
    secret_member = MemberFactory(name="secret-gpt-9")
    comparison = ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, member=secret_member, text="**Hello** " + XSS),
        response_b=ResponseFactory(prompt=prompt, text="Hey there."),
    )
    labeler = member_of(project, Role.LABELER)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=labeler).key}")
    return project, comparison, labeler, client


def next_url(project):
    return reverse("api-next", kwargs={"slug": project.slug})


def submit_url(assignment_id):
    return reverse("api-submit", kwargs={"assignment_id": assignment_id})


def test_next_then_submit_then_nothing_left(setup):
    project, comparison, labeler, client = setup
    task = client.post(next_url(project), {}, format="json")
    assert task.status_code == 200
    body = task.json()
    assert [m["role"] for m in body["conversation"]] == ["system", "user"]
    assert body["progress"] == {"done_today": 0, "remaining": 1}
    result = client.post(submit_url(body["assignment"]), {"chosen": "left", "strength": "better", "edit": "Much better."}, format="json")
    assert result.status_code == 201 and result.json()["edited"] is True
    assert client.post(next_url(project), {}, format="json").status_code == 204
    assert Judgment.objects.get().labeler == labeler


def test_the_payload_never_names_the_member_or_the_response_ids(setup):
    project, comparison, _, client = setup
    raw = client.post(next_url(project), {}, format="json").content.decode()
    assert "secret-gpt-9" not in raw
    body = json.loads(raw)
    ids = {comparison.response_a_id, comparison.response_b_id, comparison.pk}
    assert set(body["left"]) == set(body["right"]) == {"text", "html"}
    assert not any(str(v) in ("", *map(str, ids)) for v in (body["left"].get("id"), body["right"].get("id")) if v)


def test_untrusted_markup_is_rendered_inert(setup):
    project, _, _, client = setup
    body = client.post(next_url(project), {}, format="json").json()
    html = body["left"]["html"] + body["right"]["html"] + "".join(m["html"] for m in body["conversation"])
    assert live_markup(html) == []
    assert "&lt;script&gt;" in html  # shown as text, not dropped silently
    assert "<strong>Hello</strong>" in body["left"]["html"] + body["right"]["html"]


def test_a_retried_submit_with_the_same_key_returns_the_same_judgment(setup):
    project, _, _, client = setup
    assignment = client.post(next_url(project), {}, format="json").json()["assignment"]
    verdict = {"chosen": "right", "strength": "slightly_better", "edit": None}
    first = client.post(submit_url(assignment), verdict, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    again = client.post(submit_url(assignment), verdict, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["judgment"] == again.json()["judgment"]
    other = client.post(submit_url(assignment), {**verdict, "chosen": "left"}, format="json", HTTP_IDEMPOTENCY_KEY="xyz")
    assert other.status_code == 409 and other.json()["error"] == "already_ended"
    assert Judgment.objects.count() == 1


def _assert_nothing_changed(assignment_id):
    assert Judgment.objects.count() == 0
    assert not Response.objects.filter(source=ResponseSource.HUMAN_EDIT).exists()
    assert Assignment.objects.get(pk=assignment_id).state == AssignmentState.LEASED


@pytest.mark.parametrize(
    ("verdict", "status", "needle"),
    [
        ({"chosen": "left", "strength": "much_better"}, 400, "strength"),
        ({"chosen": "up", "strength": "better"}, 400, "chosen"),
        ({"chosen": "left", "strength": "better", "edit": "x" * 1001}, 400, "longer than the project's limit"),
        ({"chosen": "left", "strength": "better", "attributes": {"left": {"helpfulness": 9}}}, 400, "0 to 4"),
        ({"strength": "better"}, 400, "chosen"),
    ],
)
def test_a_bad_verdict_gets_a_clear_400_and_changes_nothing(setup, verdict, status, needle):
    project, _, _, client = setup
    assignment = client.post(next_url(project), {}, format="json").json()["assignment"]
    response = client.post(submit_url(assignment), verdict, format="json")
    assert response.status_code == status and needle in response.content.decode()
    _assert_nothing_changed(assignment)


def test_an_unknown_assignment_is_404(setup):
    _, _, _, client = setup
    response = client.post(submit_url(999999), {"chosen": "left", "strength": "better"}, format="json")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_a_foreign_lease_is_404_for_submit_and_skip(setup, member_of):
    project, _, _, client = setup
    assignment = client.post(next_url(project), {}, format="json").json()["assignment"]
    intruder = APIClient()
    intruder.force_authenticate(member_of(project, Role.LABELER))
    assert intruder.post(submit_url(assignment), {"chosen": "left", "strength": "better"}, format="json").status_code == 404
    skip = reverse("api-skip", kwargs={"assignment_id": assignment})
    assert intruder.post(skip, {"reason": "mine"}, format="json").status_code == 404
    _assert_nothing_changed(assignment)


def test_an_expired_lease_gets_409_and_changes_nothing(setup):
    project, _, _, client = setup
    assignment = client.post(next_url(project), {}, format="json").json()["assignment"]
    Assignment.objects.filter(pk=assignment).update(
        leased_at=timezone.now() - timedelta(hours=3), expires_at=timezone.now() - timedelta(hours=1)
    )
    response = client.post(submit_url(assignment), {"chosen": "left", "strength": "better"}, format="json")
    assert response.status_code == 409 and response.json()["error"] == "lease_expired"
    _assert_nothing_changed(assignment)


def test_a_session_request_without_a_csrf_token_is_403(setup):
    project, _, labeler, _ = setup
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(labeler)
    response = browser.post(next_url(project), "{}", content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.content.decode()
    assert Assignment.objects.count() == 0


def test_outsiders_and_anonymous_callers_cannot_lease(setup, member_of):
    project, _, _, _ = setup
    assert APIClient().post(next_url(project), {}, format="json").status_code in (401, 403)
    outsider = APIClient()
    outsider.force_authenticate(member_of(ProjectFactory(), Role.LABELER))
    assert outsider.post(next_url(project), {}, format="json").status_code == 404
    assert Assignment.objects.count() == 0


def test_skip_through_the_api(setup):
    project, _, _, client = setup
    assignment = client.post(next_url(project), {}, format="json").json()["assignment"]
    skip = reverse("api-skip", kwargs={"assignment_id": assignment})
    assert client.post(skip, {"reason": ""}, format="json").status_code == 400
    response = client.post(skip, {"reason": "can't judge"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "skipped"
    assert client.post(next_url(project), {}, format="json").status_code == 204


def test_next_reports_progress_done_today_and_open_in_project(setup):
    project, comparison, _, client = setup
    ComparisonFactory(prompt=PromptFactory(project=project))
    first = client.post(next_url(project), {}, format="json").json()
    assert first["progress"] == {"done_today": 0, "remaining": 2}
    client.post(submit_url(first["assignment"]), {"chosen": "left", "strength": "better"}, format="json")
    second = client.post(next_url(project), {}, format="json").json()
    # k=3 by default: the judged comparison is still open for two more labelers
    assert second["progress"] == {"done_today": 1, "remaining": 2}


def test_done_today_counts_each_submitted_judgment_once_whichever_path_wrote_it(setup):
    project, comparison, labeler, client = setup
    for i in range(3):
        ComparisonFactory(prompt=PromptFactory(project=project, messages=[{"role": "user", "content": f"q{i}"}]))
    elsewhere = ProjectFactory(gold_rate=0)
    ComparisonFactory(prompt=PromptFactory(project=elsewhere))
    MembershipFactory(project=elsewhere, user=labeler, role=Role.LABELER)

    def lease(p=project):
        return client.post(next_url(p), {}, format="json").json()["assignment"]

    plain = {"chosen": "left", "strength": "better", "idempotency_key": "a"}
    first = lease()
    assert client.post(submit_url(first), plain, format="json").status_code == 201  # one statement on PostgreSQL
    assert client.post(submit_url(first), plain, format="json").status_code == 200  # a retry: not counted again
    refused = client.post(submit_url(first), {**plain, "idempotency_key": "b", "strength": "slightly_better"}, format="json")
    assert refused.status_code == 409  # a different second verdict: refused, not counted
    reused = client.post(submit_url(first), {**plain, "strength": "slightly_better"}, format="json")
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"  # same key, other verdict
    assert Judgment.objects.get(assignment_id=first).strength == "better"
    edited = {"chosen": "right", "strength": "significantly_better", "edit": "A better answer.", "idempotency_key": "c"}
    assert client.post(submit_url(lease()), edited, format="json").status_code == 201  # the locked path, with an edit
    skip = reverse("api-skip", kwargs={"assignment_id": lease()})
    assert client.post(skip, {"reason": "unsure"}, format="json").status_code == 200  # a skip is no judgment
    assert client.post(submit_url(lease(elsewhere)), {**plain, "idempotency_key": "d"}, format="json").status_code == 201

    progress = selectors.labeler_progress(project=project, labeler=labeler)
    assert progress["done_today"] == 2 == Judgment.objects.filter(labeler=labeler, comparison__project=project).count()
    assert selectors.labeler_progress(project=elsewhere, labeler=labeler)["done_today"] == 1
    assert LabelerDay.objects.get(labeler=labeler, project=project).day == timezone.localdate()


def test_submit_with_next_returns_the_next_comparison_in_the_same_round_trip(setup):
    project, comparison, _, client = setup
    other = ComparisonFactory(prompt=PromptFactory(project=project))
    first = client.post(next_url(project), {}, format="json").json()
    verdict = {"chosen": "left", "strength": "better", "idempotency_key": "k1", "next": True}
    answer = client.post(submit_url(first["assignment"]), verdict, format="json")
    assert answer.status_code == 201
    body = answer.json()
    assert body["created"] is True and body["next"]["assignment"] != first["assignment"]
    assert body["next"]["progress"] == {"done_today": 1, "remaining": 2}
    leased = Assignment.objects.get(pk=body["next"]["assignment"])
    assert leased.state == AssignmentState.LEASED and leased.comparison_id in {comparison.pk, other.pk} - {Assignment.objects.get(pk=first["assignment"]).comparison_id}
    # A retry (the answer was lost on the way) saves nothing new and hands back the same next lease.
    again = client.post(submit_url(first["assignment"]), verdict, format="json").json()
    assert again["created"] is False and again["next"]["assignment"] == body["next"]["assignment"]
    last = client.post(submit_url(body["next"]["assignment"]), {**verdict, "idempotency_key": "k2"}, format="json").json()
    assert last["created"] is True and last["next"] is None
    assert Judgment.objects.count() == 2



def test_remaining_is_reused_for_a_few_seconds_and_done_today_is_exact(setup, monkeypatch):
    from annotation import selectors

    project, comparison, labeler, client = setup
    first = selectors.labeler_progress(project=project, labeler=labeler)
    ComparisonFactory(prompt=PromptFactory(project=project))
    assert selectors.labeler_progress(project=project, labeler=labeler) == first  # within REMAINING_TTL_S
    monkeypatch.setattr(selectors, "REMAINING_TTL_S", 0.0)
    assert selectors.labeler_progress(project=project, labeler=labeler) == {"done_today": 0, "remaining": first["remaining"] + 1}
