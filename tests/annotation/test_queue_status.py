"""An empty queue says why: sampling in flight (with its progress), no comparisons yet, the rest
leased to others, or everything labeled; and what a lead can do."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Role
from annotation.services import comparison_lease_next
from modeling.models import JobState, SamplingRun
from tests.factories import ComparisonFactory, ProjectFactory, PromptFactory

pytestmark = pytest.mark.django_db


def status_for(user, project):
    client = APIClient()
    client.force_authenticate(user)
    assert client.post(reverse("api-next", kwargs={"slug": project.slug}), {}, format="json").status_code in (200, 204)
    answer = client.get(reverse("api-queue", kwargs={"slug": project.slug}))
    assert answer.status_code == 200
    return answer.json()


def test_a_fresh_project_says_it_has_no_comparisons_and_what_a_lead_does(member_of):
    project = ProjectFactory(gold_rate=0)
    PromptFactory.create_batch(3, project=project)
    status = status_for(member_of(project, Role.LABELER), project)
    assert status["reason"] == "no_comparisons" and status["poll"] is False
    assert "no comparisons yet" in status["message"] and "(3 waiting)" in status["message"]
    assert status["project_url"] is None  # a labeler cannot open the project page
    lead_status = status_for(member_of(project, Role.LEAD), project)
    assert lead_status["project_url"] == reverse("project", kwargs={"slug": project.slug})


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING])
def test_while_sampling_runs_it_shows_the_pass_and_asks_the_page_to_poll(member_of, state):
    project = ProjectFactory(gold_rate=0)
    PromptFactory.create_batch(2, project=project)
    SamplingRun.objects.create(project=project, state=state, prompts_total=24, prompts_done=5, pairs_created=4)
    status = status_for(member_of(project, Role.LABELER), project)
    assert status["reason"] == "sampling" and status["poll"] is True
    assert status["sampling"]["prompts_done"] == 5
    if state == JobState.RUNNING:
        assert "5 of 24 done, 4 comparisons made so far" in status["message"]
    else:
        assert "queued" in status["message"]


def test_comparisons_leased_to_others_are_named_and_polled(member_of):
    project = ProjectFactory(gold_rate=0, overlap_k=1)
    ComparisonFactory.create_batch(2, prompt=PromptFactory(project=project))
    for _ in range(2):  # each holds one (a labeler's own open lease comes back first)
        assert comparison_lease_next(project=project, labeler=member_of(project, Role.LABELER))
    status = status_for(member_of(project, Role.LABELER), project)
    assert status["reason"] == "leased_to_others" and status["leased_to_others"] == 2 and status["poll"] is True
    assert "being labeled by others" in status["message"]


def test_a_labeler_who_labeled_everything_is_told_so(member_of):
    project = ProjectFactory(gold_rate=0)
    ComparisonFactory(prompt=PromptFactory(project=project))
    PromptFactory(project=project)  # not yet answered by the committee
    labeler = member_of(project, Role.LABELER)
    client = APIClient()
    client.force_authenticate(labeler)
    leased = client.post(reverse("api-next", kwargs={"slug": project.slug}), {}, format="json").json()
    client.post(reverse("api-submit", kwargs={"assignment_id": leased["assignment"]}), {"chosen": "left", "strength": "better"}, format="json")
    status = status_for(labeler, project)
    assert status["reason"] == "all_done" and status["poll"] is False and status["yours"] == 1
    assert "labeled everything open to you" in status["message"] and "1 prompts still wait" in status["message"]


def test_left_for_you_counts_open_comparisons_the_labeler_has_not_labeled_or_skipped(member_of):
    from annotation.selectors import labeler_left

    project = ProjectFactory(gold_rate=0, overlap_k=2)
    ComparisonFactory.create_batch(3, prompt=PromptFactory(project=project))
    gold = ComparisonFactory(prompt=PromptFactory(project=project))
    type(gold).objects.filter(pk=gold.pk).update(is_gold=True, gold_winner=gold.response_a)  # not counted: labelers must not learn which
    ada, bob = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    assert labeler_left(project=project, labeler=ada) == 3
    client = APIClient()
    client.force_authenticate(ada)
    first = client.post(reverse("api-next", kwargs={"slug": project.slug}), {}, format="json").json()
    assert labeler_left(project=project, labeler=ada) == 3  # a lease of one's own is still left to do
    client.post(reverse("api-submit", kwargs={"assignment_id": first["assignment"]}), {"chosen": "left", "strength": "better"}, format="json")
    second = client.post(reverse("api-next", kwargs={"slug": project.slug}), {}, format="json").json()
    client.post(reverse("api-skip", kwargs={"assignment_id": second["assignment"]}), {"reason": "unclear"}, format="json")
    assert labeler_left(project=project, labeler=ada) == 1
    assert labeler_left(project=project, labeler=bob) == 3  # ada's label fills one of two slots only
    # With k = 1 a lease fills the comparison's only slot: it is still the holder's to finish.
    single = ProjectFactory(gold_rate=0, overlap_k=1)
    ComparisonFactory.create_batch(2, prompt=PromptFactory(project=single))
    carol = member_of(single, Role.LABELER)
    carol_client = APIClient()
    carol_client.force_authenticate(carol)
    assert carol_client.post(reverse("api-next", kwargs={"slug": single.slug}), {}, format="json").status_code == 200
    assert labeler_left(project=single, labeler=carol) == 2 and labeler_left(project=single, labeler=bob) == 1
    client.force_login(ada)
    page = client.get(reverse("label", kwargs={"slug": project.slug})).content.decode()
    assert '<strong id="left-for-you"' in page and ">1</strong> left for you" in page
