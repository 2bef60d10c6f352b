"""The judge's pre-screen where labelers and exports meet it: suggestions shown or kept blind
(and recorded which), ambiguous pairs first, judge labels in exports only when asked, marked."""

import pytest

from annotation.exports import ExportError, ExportFilters, export_rows
from annotation.models import Assignment, ComparisonSource, JudgeVerdict, Role, Strength
from annotation.selectors import assignment_payload, in_blind_share
from annotation.services.labeling import comparison_lease_next
from tests.factories import ComparisonFactory, JudgmentFactory, MemberFactory, ProjectFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db


def judged(project, *, state="consistent", winner="a", member=None, **fields):
    prompt = PromptFactory(project=project)
    a, b = ResponseFactory(prompt=prompt, text="Answer A."), ResponseFactory(prompt=prompt, text="Answer B.")
    comparison = ComparisonFactory(
        prompt=prompt, response_a=a, response_b=b, judge_state=state,
        judge_winner=(a if winner == "a" else b) if winner else None,
        judge_strength=Strength.BETTER if winner else "", judge_confidence=0.85 if winner else None, **fields,
    )
    if member is not None:
        for order in ("ab", "ba"):
            JudgeVerdict.objects.create(comparison=comparison, member=member, order=order, winner=comparison.judge_winner,
                                        strength=comparison.judge_strength, output="[[A]]")
    return comparison


@pytest.fixture
def labeler_in(member_of):
    def make(**settings):
        project = ProjectFactory(gold_rate=0, repeat_rate=0, **settings)
        return project, member_of(project, Role.LABELER)
    return make


def test_a_shown_suggestion_names_the_side_the_labeler_sees_and_the_lease_records_it(labeler_in):
    project, labeler = labeler_in(suggestions_shown=True, suggestion_blind_share=0.0)
    comparison = judged(project)
    assignment = comparison_lease_next(project=project, labeler=labeler)
    payload = assignment_payload(assignment=assignment, project=project)
    side = "left" if assignment.left_response_id == comparison.response_a_id else "right"
    assert payload["suggestion"] == {"side": side, "strength": "better", "confidence": 0.85}
    assert Assignment.objects.get(pk=assignment.pk).suggestion == "shown"
    assert "judge" not in str(payload["left"]) and "member" not in payload


def test_the_blind_share_sees_no_suggestion_and_is_recorded_as_blind(labeler_in):
    project, labeler = labeler_in(suggestions_shown=True, suggestion_blind_share=1.0)
    judged(project)
    assignment = comparison_lease_next(project=project, labeler=labeler)
    assert "suggestion" not in assignment_payload(assignment=assignment, project=project)
    assert Assignment.objects.get(pk=assignment.pk).suggestion == "blind"


@pytest.mark.parametrize("state", ["inconsistent", "failed", ""])
def test_only_consistent_verdicts_are_suggestions(labeler_in, state):
    project, labeler = labeler_in(suggestions_shown=True, suggestion_blind_share=0.0)
    judged(project, state=state, winner=None)
    assignment = comparison_lease_next(project=project, labeler=labeler)
    assert "suggestion" not in assignment_payload(assignment=assignment, project=project)
    assert Assignment.objects.get(pk=assignment.pk).suggestion == ""


def test_hidden_suggestions_and_evaluation_pairs_show_nothing(labeler_in):
    project, labeler = labeler_in(suggestions_shown=False)
    judged(project)
    assignment = comparison_lease_next(project=project, labeler=labeler)
    assert "suggestion" not in assignment_payload(assignment=assignment, project=project)
    assert Assignment.objects.get(pk=assignment.pk).suggestion == ""
    shown, labeler = labeler_in(suggestions_shown=True, suggestion_blind_share=0.0)
    judged(shown, source=ComparisonSource.EVALUATION)  # a policy's blind evaluation stays blind
    assignment = comparison_lease_next(project=shown, labeler=labeler)
    assert "suggestion" not in assignment_payload(assignment=assignment, project=shown)


def test_the_blind_share_is_a_fixed_share_of_leases():
    ids = range(1, 20_001)
    assert sum(in_blind_share(i, 0.1) for i in ids) / len(ids) == pytest.approx(0.1, abs=0.01)
    assert not any(in_blind_share(i, 0.0) for i in ids) and all(in_blind_share(i, 1.0) for i in ids)
    assert in_blind_share(12345, 0.3) == in_blind_share(12345, 0.3)


def test_ambiguous_pairs_go_first_among_comparisons_with_as_many_labels(labeler_in):
    project, labeler = labeler_in()
    plain = judged(project)
    ambiguous = judged(project, state="inconsistent", winner=None, priority=1)
    assert plain.pk < ambiguous.pk
    assert comparison_lease_next(project=project, labeler=labeler).comparison_id == ambiguous.pk


# --- exports ---------------------------------------------------------------------------------------


def rows(project, format="trl-preference", **filters):
    return list(export_rows(project=project, format=format, filters=ExportFilters.from_dict(filters)))


def test_judge_labels_are_exported_only_when_asked_and_marked_as_the_judges(member_of):
    project = ProjectFactory()
    judge = MemberFactory(name="judge-model")
    labeled = judged(project, winner="b", member=judge)
    JudgmentFactory(assignment__comparison=labeled, assignment__labeler=member_of(project, Role.LABELER, username="ada"),
                    chosen_response=labeled.response_a, rejected_response=labeled.response_b, left_response=labeled.response_a)
    judged(project, state="inconsistent", winner=None, member=judge)  # ambiguous: never a label
    human_only = rows(project)
    assert [r["origin"] for r in human_only] == ["human"] and human_only[0]["labeler"] == "ada"
    both = rows(project, include_judge=True)
    assert [r["origin"] for r in both] == ["human", "judge"]
    judge_row = both[1]
    assert judge_row["labeler"] == "judge:judge-model" and judge_row["judgment_id"] is None
    assert judge_row["chosen"][0]["content"] == "Answer B." and judge_row["rejected"][0]["content"] == "Answer A."
    assert judge_row["strength"] == "better" and judge_row["confidence"] == 0.85 and judge_row["margin"] == project.margin_for("better")
    raw = rows(project, format="raw", include_judge=True)
    assert [r["origin"] for r in raw] == ["human", "judge"] and raw[1]["chosen"] == "Answer B."
    sft = rows(project, format="sft", include_judge=True)
    assert [(r["origin"], r["messages"][-1]["content"]) for r in sft] == [("human", "Answer A."), ("judge", "Answer B.")]
    kto = rows(project, format="kto", include_judge=True)
    assert [r["origin"] for r in kto] == ["human", "human", "judge", "judge"]
    assert rows(project, include_judge=True, strengths=["significantly_better"]) == []
    assert [r["origin"] for r in rows(project, include_judge=True, split="heldout", heldout_percent=0)] == []


@pytest.mark.parametrize("filters, message", [
    ({"include_judge": True, "aggregation": "majority"}, 'aggregation "each"'),
    ({"include_judge": True, "round_to": 1}, "round's cut"),
    ({"include_judge": "yes"}, "include_judge"),
])
def test_judge_labels_refuse_filters_they_cannot_follow(filters, message):
    with pytest.raises(ExportError, match=message):
        ExportFilters.from_dict(filters)


# --- the judge from the quality page and the API ---------------------------------------------------


def test_a_lead_starts_the_judge_from_the_quality_page_and_the_api(client, member_of):
    from django.urls import reverse
    from rest_framework.test import APIClient

    from modeling.models import JudgeRun

    project = ProjectFactory()
    lead = member_of(project, Role.LEAD)
    client.force_login(lead)
    page = client.post(reverse("quality-judge", kwargs={"slug": project.slug}), follow=True).content.decode()
    assert "This project has no judge" in page and not JudgeRun.objects.exists()
    project.judge = MemberFactory(name="judge-model")
    project.save()
    judged(project, state="", winner=None)  # one comparison waits for the judge
    page = client.post(reverse("quality-judge", kwargs={"slug": project.slug}), follow=True).content.decode()
    assert "The judge is reading the new comparisons" in page and "Latest judge run" in page
    api = APIClient()
    api.force_authenticate(lead)
    url = reverse("api-judge", kwargs={"slug": project.slug})
    busy = api.post(url, {}, format="json")
    assert busy.status_code == 409 and "already queued or running" in busy.json()["detail"]
    JudgeRun.objects.update(state="succeeded")
    started = api.post(url, {"limit": 5}, format="json")
    assert started.status_code == 202 and started.json()["member"] == "judge-model" and started.json()["limit"] == 5
    assert api.post(url, {"limit": 0}, format="json").status_code == 400
    status = api.get(url).json()
    assert [r["id"] for r in status["runs"]] == list(JudgeRun.objects.order_by("-id").values_list("id", flat=True))
    assert status["agreement"]["judged"] == 0 and status["agreement"]["judge"] == "judge-model"


def test_the_judge_command_queues_a_run_and_names_what_stops_it():
    from io import StringIO

    from django.core.management import CommandError, call_command

    project = ProjectFactory()
    with pytest.raises(CommandError, match="no judge"):
        call_command("judge_comparisons", project.slug)
    with pytest.raises(CommandError, match="No project"):
        call_command("judge_comparisons", "nowhere")
    project.judge = MemberFactory(name="judge-model")
    project.save()
    out = StringIO()
    call_command("judge_comparisons", project.slug, "--limit", "3", stdout=out)
    assert "(judge-model) queued: 0/0 comparisons" in out.getvalue()


def test_turning_ambiguous_first_on_or_off_moves_the_pairs_already_judged():
    from annotation.services.projects import project_update_settings

    project = ProjectFactory()
    ambiguous, plain = judged(project, state="inconsistent", winner=None), judged(project)
    project_update_settings(project=project, changes={"ambiguous_first": True})
    ambiguous.refresh_from_db(), plain.refresh_from_db()
    assert (ambiguous.priority, plain.priority) == (1, 0)
    project_update_settings(project=project, changes={"ambiguous_first": False})
    ambiguous.refresh_from_db()
    assert ambiguous.priority == 0
