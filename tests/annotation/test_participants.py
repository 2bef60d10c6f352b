"""Crowd hand-off: a study participant joins through the project's link, labels N items and is
sent to the completion URL with its code (or to the screen-out code after failing the gold);
their platform id is kept on their row and shown to nobody."""

import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from django.contrib.auth import SESSION_KEY, get_user_model
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from annotation.models import (
    PARTICIPANT_PREFIX,
    Assignment,
    AuditAction,
    AuditEvent,
    ExternalParticipant,
    Membership,
    ParticipantOutcome,
    Project,
    Role,
)
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db

PID = "5f1e0d2c3b4a59687766a1b2"  # the shape of a Prolific participant id
COMPLETE = "https://app.prolific.com/submissions/complete?cc={code}"
SCREEN_OUT = "https://app.prolific.com/submissions/complete?cc={code}&screened=1"


def study(**fields) -> Project:
    values = {
        "study_open": True, "study_items": 2, "study_completion_url": COMPLETE, "study_completion_code": "C1A2B3",
        "study_screenout_url": SCREEN_OUT, "study_screenout_code": "SCRN0UT", "gold_rate": 0, **fields,
    }
    project = ProjectFactory(**values)
    for _ in range(4):
        ComparisonFactory(prompt=PromptFactory(project=project))
    return project


def join_url(project, **query) -> str:
    return reverse("study-join", kwargs={"slug": project.slug}) + ("?" + urlencode(query) if query else "")


def prolific(project, pid=PID, **more) -> str:
    return join_url(project, PROLIFIC_PID=pid, STUDY_ID="study-42", SESSION_ID="sess-1", **more)


def joined(project, pid=PID) -> Client:
    client = Client()
    response = client.get(prolific(project, pid))
    assert response.status_code == 302 and response["Location"] == reverse("label", kwargs={"slug": project.slug})
    return client


def label_one(client, project, *, pick=None) -> dict:
    """Lease the next comparison and submit a verdict on it through the API, as label.js does;
    ``pick(assignment)`` chooses the side (left by default)."""
    task = client.post(reverse("api-next", kwargs={"slug": project.slug}), {}, content_type="application/json")
    assert task.status_code == 200, task.content
    assignment = Assignment.objects.select_related("comparison").get(pk=task.json()["assignment"])
    verdict = {"chosen": pick(assignment) if pick else "left", "strength": "better", "next": True}
    result = client.post(reverse("api-submit", kwargs={"assignment_id": assignment.pk}), verdict, content_type="application/json")
    assert result.status_code == 201, result.content
    return result.json()


def test_entering_twice_is_one_passwordless_labeler_of_that_project_only():
    project, other = study(), study()
    first, again = joined(project), joined(project)  # two browsers, or the link opened twice
    participant = ExternalParticipant.objects.get()
    user = participant.user
    assert int(first.session[SESSION_KEY]) == int(again.session[SESSION_KEY]) == user.pk
    assert (participant.platform, participant.external_id, participant.study_id, participant.session_id) == (
        "prolific", PID, "study-42", "sess-1")
    assert user.username.startswith(PARTICIPANT_PREFIX) and PID not in user.username and not user.has_usable_password()
    assert list(Membership.objects.filter(user=user).values_list("project_id", "role")) == [(project.pk, Role.LABELER)]
    # The same person in another project's study is another labeler there.
    joined(other)
    assert ExternalParticipant.objects.count() == 2 and get_user_model().objects.filter(username__startswith=PARTICIPANT_PREFIX).count() == 2
    events = AuditEvent.objects.filter(action=AuditAction.PARTICIPANT_JOINED, project=project)
    assert [e.details["first_entry"] for e in events.order_by("id")] == [True, False]
    assert all(e.actor_name == user.username and PID not in str(e.details) + e.target for e in events)


def test_a_generic_platform_joins_with_external_id():
    project = study()
    response = Client().get(join_url(project, external_id="worker-A17", study_id="hit-9"))
    assert response.status_code == 302
    participant = ExternalParticipant.objects.get()
    assert (participant.platform, participant.external_id, participant.study_id, participant.session_id) == ("external", "worker-A17", "hit-9", "")


def test_after_n_items_the_participant_is_sent_to_the_exact_completion_url():
    project = study(study_items=2)
    client = joined(project)
    label_url, next_url = reverse("label", kwargs={"slug": project.slug}), reverse("api-next", kwargs={"slug": project.slug})
    page = client.get(label_url)
    assert page.status_code == 200 and "This study asks 2 judgments" in page.content.decode()
    first = label_one(client, project)
    assert "redirect" not in first and first["next"] is not None
    second = label_one(client, project)
    exit_url = "https://app.prolific.com/submissions/complete?cc=C1A2B3"
    assert second["redirect"] == exit_url and second["next"] is None
    # Coming back to the page, or asking for more work, sends them there again.
    page = client.get(label_url)
    assert page.status_code == 302 and page["Location"] == exit_url
    more = client.post(next_url, {}, content_type="application/json")
    assert more.status_code == 204 and more["X-Redirect"] == exit_url
    participant = ExternalParticipant.objects.get()
    assert participant.outcome == ParticipantOutcome.COMPLETED and participant.completed_at is not None
    # Entering again is the same finished participant: sent on to the completion URL.
    assert joined(project).get(label_url)["Location"] == exit_url


def gold_study(**fields) -> Project:
    """A study screening at 50% gold accuracy from the second gold item, served only gold items
    (response A is each one's known winner)."""
    project = study(study_min_gold_accuracy=0.5, study_gold_after=2, gold_rate=1.0, **fields)
    project.comparisons.update(is_gold=True, gold_winner_id=F("response_a_id"))
    return project


def gold_side(assignment) -> str:
    return "left" if assignment.left_response_id == assignment.comparison.gold_winner_id else "right"


def test_failing_the_gold_sends_the_participant_to_the_screen_out_code():
    project = gold_study(study_items=10)
    client = joined(project)

    def wrong(assignment):
        return {"left": "right", "right": "left"}[gold_side(assignment)]

    assert "redirect" not in label_one(client, project, pick=wrong)  # one gold item is not yet a verdict
    result = label_one(client, project, pick=wrong)
    screen_out = "https://app.prolific.com/submissions/complete?cc=SCRN0UT&screened=1"
    assert result["redirect"] == screen_out
    assert client.get(reverse("label", kwargs={"slug": project.slug}))["Location"] == screen_out
    assert ExternalParticipant.objects.get().outcome == ParticipantOutcome.SCREENED_OUT


def test_passing_the_gold_completes_the_study():
    project = gold_study(study_items=3)
    client = joined(project)
    results = [label_one(client, project, pick=gold_side) for _ in range(3)]
    assert [r.get("redirect") for r in results] == [None, None, "https://app.prolific.com/submissions/complete?cc=C1A2B3"]


def test_a_participant_cannot_reach_another_project():
    project, other = study(), study()
    client = joined(project)
    for name in ("label", "label-live", "label-today", "project", "quality", "comparisons"):
        assert client.get(reverse(name, kwargs={"slug": other.slug})).status_code == 404, name
    assert client.post(reverse("api-next", kwargs={"slug": other.slug}), {}, content_type="application/json").status_code == 404
    assert [p["slug"] for p in client.get(reverse("api-projects")).json()] == [project.slug]
    # In their own project they are a labeler, nothing more.
    assert client.get(reverse("project", kwargs={"slug": project.slug})).status_code == 403
    assert client.get(reverse("project-new")).status_code == 403
    assert client.get(reverse("audit-log")).status_code == 302  # to the admin's login


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"PROLIFIC_PID": ""},
        {"STUDY_ID": "study-42", "SESSION_ID": "s"},  # Prolific's parameters without the id
        {"PROLIFIC_PID": "x" * 65},
        {"PROLIFIC_PID": "{{%PROLIFIC_PID%}}"},  # a link tested before Prolific fills it
        {"PROLIFIC_PID": "a b"},
        {"PROLIFIC_PID": "a\x00b"},
        {"PROLIFIC_PID": "<script>alert(1)</script>"},
        {"PROLIFIC_PID": PID, "STUDY_ID": "y" * 65},
        {"PROLIFIC_PID": PID, "external_id": "other"},  # two platforms at once
        {"external_id": "ü-nicode"},
        {"external_id": "../../etc/passwd"},
    ],
)
def test_a_bad_link_is_a_400_page_and_creates_nothing(query):
    project = study()
    users = get_user_model().objects.count()
    client = Client()
    response = client.get(join_url(project, **query))
    assert response.status_code == 400 and "This study link cannot be used" in response.content.decode()
    assert "<script>alert" not in response.content.decode()
    assert ExternalParticipant.objects.count() == 0 and get_user_model().objects.count() == users
    assert not AuditEvent.objects.filter(action=AuditAction.PARTICIPANT_JOINED).exists() and SESSION_KEY not in client.session


def test_a_repeated_id_parameter_is_refused():
    project = study()
    response = Client().get(reverse("study-join", kwargs={"slug": project.slug}) + f"?PROLIFIC_PID={PID}&PROLIFIC_PID=other")
    assert response.status_code == 400 and "Given more than once" in response.content.decode()
    assert not ExternalParticipant.objects.exists()


def test_without_an_open_study_the_link_is_a_404_and_creates_nothing():
    closed = study(study_open=False)
    for url in (prolific(closed), prolific(closed).replace(closed.slug, "no-such-project")):
        response = Client().get(url)
        assert response.status_code == 404 and "There is no open study at this address." in response.content.decode()
    assert not ExternalParticipant.objects.exists()
    assert not get_user_model().objects.filter(username__startswith=PARTICIPANT_PREFIX).exists()


def test_a_participant_whose_part_was_ended_cannot_enter_again():
    project = study()
    joined(project)
    participant = ExternalParticipant.objects.get()
    Membership.objects.filter(user=participant.user).delete()  # the lead revoked their role
    response = Client().get(prolific(project))
    assert response.status_code == 403 and "has ended" in response.content.decode()
    assert not Membership.objects.filter(user=participant.user).exists() and ExternalParticipant.objects.count() == 1


def test_the_participant_id_never_shows_on_other_users_pages(member_of):
    project = study(study_items=5)
    label_one(joined(project), project)
    lead = member_of(project, Role.LEAD)
    staff = UserFactory(is_staff=True, is_superuser=True)
    participant = ExternalParticipant.objects.get()
    comparison = participant.user.judgments.get().comparison_id
    pages = {
        "quality": reverse("quality", kwargs={"slug": project.slug}),
        "comparisons": reverse("comparisons", kwargs={"slug": project.slug}),
        "comparisons by labeler": reverse("comparisons", kwargs={"slug": project.slug}) + f"?labeler={participant.user.username}",
        "comparison": reverse("comparison", kwargs={"slug": project.slug, "comparison_id": comparison}),
        "overview": reverse("project", kwargs={"slug": project.slug}),
        "judgments API": reverse("api-judgments", kwargs={"slug": project.slug}),
        "audit log": reverse("audit-log"),
    }
    for who in (lead, staff):
        client = Client()
        client.force_login(who)
        for name, url in pages.items():
            response = client.get(url)
            if who is lead and name == "audit log":
                assert response.status_code == 302  # staff only
                continue
            body = response.content.decode()
            assert response.status_code == 200, (name, response.status_code)
            assert PID not in body and "study-42" not in body and "sess-1" not in body, f"{name} shows the participant's ids"
        # The participant is there, under their generated name.
        assert participant.user.username in client.get(pages["quality"]).content.decode()


def test_only_study_participants_pay_for_the_done_check():
    """The labeling hot path of everyone else asks nothing more of the database."""
    project = study()
    labeler = member_of_project(project)
    client = Client()
    client.force_login(labeler)
    with CaptureQueriesContext(connection) as plain:
        label_one(client, project)
        client.get(reverse("label", kwargs={"slug": project.slug}))
    assert not [q for q in plain.captured_queries if "externalparticipant" in q["sql"]]
    participant = joined(project)
    with CaptureQueriesContext(connection) as asked:
        label_one(participant, project)
    assert [q for q in asked.captured_queries if "externalparticipant" in q["sql"]]


def member_of_project(project):
    user = UserFactory()
    MembershipFactory(project=project, user=user, role=Role.LABELER)
    return user


NAMES = ["PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "external_id", "study_id", "session_id", "utm_source", "cc"]
VALUES = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="abcdefABCDEF0123456789", min_size=1, max_size=70),
    st.sampled_from(["", " ", "\x00", "{{%PROLIFIC_PID%}}", "%00", "a" * 64, "a" * 65, "\ud800x", "🙂", "1;DROP TABLE x"]),
)


def test_any_join_query_is_a_redirect_or_a_4xx_never_a_500():
    project = study()
    seen = {"joined": 0, "refused": 0}

    @hypothesis_settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(query=st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=5))
    def run(query):
        before = ExternalParticipant.objects.count(), get_user_model().objects.count()
        response = Client(raise_request_exception=False).get(
            reverse("study-join", kwargs={"slug": project.slug}) + "?" + urlencode(query, errors="surrogatepass")
        )
        if response.status_code == 302:
            seen["joined"] += 1
            ids = {v for k, v in query if k in ("PROLIFIC_PID", "external_id") and v}
            assert len(ids) == 1 and ExternalParticipant.objects.filter(project=project, external_id=ids.pop()).count() == 1
        else:
            seen["refused"] += 1
            assert response.status_code == 400, (query, response.status_code)
            assert (ExternalParticipant.objects.count(), get_user_model().objects.count()) == before

    run()
    assert seen["joined"] > 0 and seen["refused"] > 0, seen


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_joins_of_one_id_at_the_same_moment_are_one_participant():
    project = study()
    start = threading.Barrier(8)

    def enter(_):
        try:
            start.wait(timeout=30)  # all eight at once: the double click, eight times over
            return Client().get(prolific(project)).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(enter, range(8), timeout=60)) == [302] * 8
    assert ExternalParticipant.objects.count() == 1 and Membership.objects.filter(project=project).count() == 1
