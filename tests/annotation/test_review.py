"""A labeler reviews today's judgments and changes a verdict within the project's window: audited,
and exports read the changed verdict; after the window, or on someone else's judgment, refused."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotation.exports import ExportFilters, export_rows
from annotation.models import AuditAction, AuditEvent, Judgment, Response, ResponseSource, Role, Strength
from annotation.services.review import ChangeWindowPassed, judgment_change, labeler_judgments_recent
from annotation.services.labeling import AssignmentNotFound, InvalidVerdict
from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db


def judged(project, labeler, *, minutes_ago=1, edited=False):
    judged.count = getattr(judged, "count", 0) + 1
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"Which is better? ({judged.count})"}])
    comparison = ComparisonFactory(prompt=prompt, response_a=ResponseFactory(prompt=prompt, text="Answer A"),
                                   response_b=ResponseFactory(prompt=prompt, text="Answer B"))
    edit = ResponseFactory(
        prompt=prompt, text="Answer A, improved", source=ResponseSource.HUMAN_EDIT, parent=comparison.response_a,
        author=labeler, edit_distance=10,
    ) if edited else None
    return JudgmentFactory(
        assignment__comparison=comparison, assignment__labeler=labeler, assignment__left_response=comparison.response_a,
        chosen_response=comparison.response_a, rejected_response=comparison.response_b, edited_response=edit,
        strength=Strength.BETTER, submitted_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_a_change_within_the_window_rewrites_the_verdict_is_audited_and_exports_follow(member_of):
    project = ProjectFactory()
    labeler = member_of(project, Role.LABELER, username="ada")
    judgment = judged(project, labeler, edited=True)
    rows = list(export_rows(project=project, format="trl-preference-text", filters=ExportFilters.from_dict({})))
    assert {r["chosen"] for r in rows} == {"Answer A", "Answer A, improved"}

    judgment_change(judgment_id=judgment.pk, labeler=labeler, chosen="right", strength=Strength.SLIGHTLY_BETTER)
    judgment.refresh_from_db()
    assert judgment.chosen_response.text == "Answer B" and judgment.rejected_response.text == "Answer A"
    assert judgment.strength == Strength.SLIGHTLY_BETTER and judgment.changed_at is not None
    assert judgment.edited_response is None  # the edit improved A, which is no longer chosen
    assert Response.objects.filter(source=ResponseSource.HUMAN_EDIT).count() == 1  # kept, unreferenced
    rows = list(export_rows(project=project, format="trl-preference-text", filters=ExportFilters.from_dict({})))
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("Answer B", "Answer A")]
    event = AuditEvent.objects.get(action=AuditAction.JUDGMENT_CHANGED)
    assert event.actor_name == "ada" and event.details["before"]["strength"] == "better"
    assert event.details["after"]["chosen_response"] == judgment.chosen_response_id


def test_the_same_side_keeps_the_edit():
    project = ProjectFactory()
    from tests.factories import UserFactory, MembershipFactory

    labeler = UserFactory()
    MembershipFactory(project=project, user=labeler, role=Role.LABELER)
    judgment = judged(project, labeler, edited=True)
    judgment_change(judgment_id=judgment.pk, labeler=labeler, chosen="left", strength=Strength.SIGNIFICANTLY_BETTER, both_bad=True)
    judgment.refresh_from_db()
    assert judgment.edited_response is not None and judgment.both_bad and judgment.strength == Strength.SIGNIFICANTLY_BETTER


@pytest.mark.parametrize(("minutes_ago", "window"), [(11, 10), (1, 0)])
def test_after_the_window_or_without_one_nothing_changes(member_of, minutes_ago, window):
    project = ProjectFactory(verdict_change_minutes=window)
    labeler = member_of(project, Role.LABELER)
    judgment = judged(project, labeler, minutes_ago=minutes_ago)
    with pytest.raises(ChangeWindowPassed):
        judgment_change(judgment_id=judgment.pk, labeler=labeler, chosen="right", strength=Strength.BETTER)
    assert Judgment.objects.get(pk=judgment.pk).chosen_response_id == judgment.chosen_response_id
    assert not AuditEvent.objects.filter(action=AuditAction.JUDGMENT_CHANGED).exists()


def test_nobody_changes_someone_elses_verdict_and_bad_values_are_refused(member_of):
    project = ProjectFactory()
    ada, lead = member_of(project, Role.LABELER), member_of(project, Role.LEAD)
    judgment = judged(project, ada)
    with pytest.raises(AssignmentNotFound):
        judgment_change(judgment_id=judgment.pk, labeler=lead, chosen="right", strength=Strength.BETTER)
    with pytest.raises(InvalidVerdict):
        judgment_change(judgment_id=judgment.pk, labeler=ada, chosen="middle", strength=Strength.BETTER)
    with pytest.raises(InvalidVerdict):
        judgment_change(judgment_id=judgment.pk, labeler=ada, chosen="left", strength="hugely_better")


def test_the_recent_list_has_the_labelers_own_judgments_of_a_day_with_their_windows(member_of):
    project = ProjectFactory()
    ada, bob = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    recent, old = judged(project, ada), judged(project, ada, minutes_ago=30)
    judged(project, bob), judged(project, ada, minutes_ago=25 * 60)  # someone else's; more than a day ago
    rows = labeler_judgments_recent(project=project, labeler=ada)
    assert [r["id"] for r in rows] == [recent.pk, old.pk]
    assert rows[0]["chosen"] == "left" and rows[0]["left"] == "Answer A" and rows[0]["changeable_until"] is not None
    assert rows[1]["changeable_until"] is None


def test_the_api_changes_within_the_window_and_answers_409_after(member_of):
    project = ProjectFactory()
    labeler = member_of(project, Role.LABELER)
    recent, old = judged(project, labeler), judged(project, labeler, minutes_ago=15)
    client = APIClient()
    client.force_authenticate(labeler)
    mine = client.get(reverse("api-my-judgments", kwargs={"slug": project.slug})).json()
    assert [r["id"] for r in mine] == [recent.pk, old.pk]
    ok = client.post(reverse("api-judgment-change", kwargs={"judgment_id": recent.pk}), {"chosen": "right", "strength": "better"}, format="json")
    assert ok.status_code == 200 and Judgment.objects.get(pk=recent.pk).chosen_response_id == recent.rejected_response_id
    late = client.post(reverse("api-judgment-change", kwargs={"judgment_id": old.pk}), {"chosen": "right", "strength": "better"}, format="json")
    assert late.status_code == 409 and late.json()["error"] == "change_window_passed"


def test_the_page_shows_today_and_changes_a_verdict_with_its_form(client, member_of):
    project = ProjectFactory()
    labeler = member_of(project, Role.LABELER)
    recent, old = judged(project, labeler), judged(project, labeler, minutes_ago=15)
    client.force_login(labeler)
    page = client.get(reverse("label-today", kwargs={"slug": project.slug})).content.decode()
    assert f'action="{reverse("judgment-change", kwargs={"slug": project.slug, "judgment_id": recent.pk})}"' in page
    assert "closed" in page  # the old one
    done = client.post(reverse("judgment-change", kwargs={"slug": project.slug, "judgment_id": recent.pk}),
                       {"chosen": "right", "strength": "negligibly_better"}, follow=True).content.decode()
    assert f"Judgment #{recent.pk} changed" in done and Judgment.objects.get(pk=recent.pk).strength == "negligibly_better"
    late = client.post(reverse("judgment-change", kwargs={"slug": project.slug, "judgment_id": old.pk}),
                       {"chosen": "right", "strength": "better"}, follow=True).content.decode()
    assert "Not changed: Verdicts can be changed for 10 minutes" in late
