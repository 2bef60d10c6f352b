"""Swapped repeats: a share of leases serves a labeler one of their own earlier comparisons again,
sides swapped and unmarked; the verdict is a RepeatJudgment, never a label."""

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotation import selectors
from annotation.exports import ExportFilters, export_rows
from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    Judgment,
    LabelerDay,
    Membership,
    RepeatJudgment,
    Response,
    ResponseSource,
    Role,
    Strength,
)
from annotation.services import (
    AlreadyEnded,
    IdempotencyKeyReused,
    InvalidVerdict,
    Verdict,
    assignment_skip,
    assignments_expire,
    comparison_lease_next,
    comparison_slots_recount,
    judgment_submit,
)
from annotation.services.labeling import queue
from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, PromptFactory

pytestmark = pytest.mark.django_db

START = timezone.now() - timedelta(hours=2)


@pytest.fixture
def always(monkeypatch):
    """Every draw of the queue says yes: a repeat whenever one may come back (the project's
    ``repeat_rate`` must still be above 0)."""
    monkeypatch.setattr(queue.random, "random", lambda: 0.0)


def make_project(**fields):
    return ProjectFactory(**{"overlap_k": 3, "gold_rate": 0, "repeat_rate": 0.5, "repeat_min_gap": 3, **fields})


def make_comparisons(project, n, **fields):
    return [ComparisonFactory(prompt=PromptFactory(project=project), **fields) for _ in range(n)]


def submit(assignment, labeler, chosen="left", **fields):
    return judgment_submit(
        assignment_id=assignment.pk, labeler=labeler, verdict=Verdict(**{"chosen": chosen, "strength": Strength.BETTER, **fields})
    )


def label_normally(project, labeler, n):
    """``n`` judgments through the queue with repeats off, a minute apart (oldest first)."""
    rate = project.repeat_rate
    project.repeat_rate = 0
    judgments = []
    for i in range(n):
        judgment, _ = submit(comparison_lease_next(project=project, labeler=labeler), labeler, chosen="left" if i % 2 else "right")
        Judgment.objects.filter(pk=judgment.pk).update(submitted_at=START + timedelta(minutes=i))
        judgments.append(Judgment.objects.get(pk=judgment.pk))
    project.repeat_rate = rate
    return judgments


def judged(labeler, comparison, minute):
    """A judgment written around the queue (gold, imported, live), at START + ``minute``."""
    return JudgmentFactory(
        assignment__comparison=comparison, assignment__labeler=labeler, submitted_at=START + timedelta(minutes=minute)
    )


def right_of(judgment):
    return judgment.rejected_response_id if judgment.left_response_id == judgment.chosen_response_id else judgment.chosen_response_id


def slots(comparison_id):
    return Comparison.objects.values_list("slots_taken", flat=True).get(pk=comparison_id)


def exported(project):
    """Every export of the project in the formats and aggregations repeats could touch, as text."""
    out = {}
    for format in ("raw", "trl-preference"):
        for aggregation in ("each", "majority"):
            rows = list(export_rows(project=project, format=format, filters=ExportFilters.from_dict({"aggregation": aggregation})))
            out[format, aggregation] = (len(rows), json.dumps(rows, sort_keys=True, default=str))
    return out


def test_a_swapped_repeat_is_served_with_swapped_sides_and_never_exported(member_of, always):
    project = make_project(repeat_min_gap=2)
    make_comparisons(project, 6)
    ada, bob = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    second, first, *_ = label_normally(project, ada, 4)  # "first" to come back: the newest that may
    label_normally(project, bob, 2)
    before = exported(project)
    assert all(count for count, _ in before.values()), before
    taken = {j.comparison_id: slots(j.comparison_id) for j in (first, second)}

    repeat = comparison_lease_next(project=project, labeler=ada)
    # The newest judgment with at least 2 of ada's later (the second submitted); its right side now on the left.
    assert (repeat.repeat_of_id, repeat.comparison_id) == (first.pk, first.comparison_id)
    assert repeat.left_response_id == right_of(first) != first.left_response_id
    assert slots(first.comparison_id) == taken[first.comparison_id] == comparison_slots_recount(comparison_id=first.comparison_id)
    assert comparison_lease_next(project=project, labeler=ada).pk == repeat.pk  # served again like any own lease

    # The same winner, now on the other side: no flip. What a repeat does not keep is dropped.
    same = "left" if first.chosen_response_id == repeat.left_response_id else "right"
    judgment, created = submit(repeat, ada, chosen=same, rationale="dropped", attributes={"left": {"helpfulness": 3}})
    stored = RepeatJudgment.objects.get()
    assert created and judgment.pk is None and judgment.chosen_response_id == first.chosen_response_id
    assert (stored.original_id, stored.assignment_id, stored.labeler, stored.flipped) == (first.pk, repeat.pk, ada, False)
    assert (stored.chosen_response_id, stored.left_response_id) == (first.chosen_response_id, repeat.left_response_id)
    assert Assignment.objects.get(pk=repeat.pk).state == AssignmentState.SUBMITTED
    assert LabelerDay.objects.get(labeler=ada).judgments == 5  # "done today" moves as for any submit

    # The next: the one before it; the other winner is a flip.
    again = comparison_lease_next(project=project, labeler=ada)
    assert again.repeat_of_id == second.pk and again.left_response_id == right_of(second)
    submit(again, ada, chosen="right" if second.chosen_response_id == again.left_response_id else "left")
    flipped = RepeatJudgment.objects.get(original=second)
    assert flipped.flipped is True and flipped.chosen_response_id == second.rejected_response_id

    assert Judgment.objects.count() == 6 and not Judgment.objects.filter(assignment__repeat_of__isnull=False).exists()
    assert {j.comparison_id: slots(j.comparison_id) for j in (first, second)} == taken
    assert exported(project) == before


def test_exports_read_the_same_rows_with_and_without_repeats(member_of, always):
    project = make_project(repeat_min_gap=1)
    make_comparisons(project, 3)
    ada = member_of(project, Role.LABELER)
    label_normally(project, ada, 3)
    before = exported(project)
    for _ in range(2):
        submit(comparison_lease_next(project=project, labeler=ada), ada, chosen="left")
    assert RepeatJudgment.objects.count() == 2 and Judgment.objects.count() == 3
    assert exported(project) == before


def test_the_gap_is_respected(member_of, always):
    project = make_project(repeat_min_gap=3)
    make_comparisons(project, 5)
    ada = member_of(project, Role.LABELER)
    first, *_ = label_normally(project, ada, 3)
    # Only 2 judgments after the oldest: no repeat yet, a new comparison instead.
    lease = comparison_lease_next(project=project, labeler=ada)
    assert lease.repeat_of_id is None and lease.comparison_id not in Judgment.objects.values_list("comparison_id", flat=True)
    submit(lease, ada)
    Judgment.objects.filter(assignment_id=lease.pk).update(submitted_at=START + timedelta(minutes=3))
    assert comparison_lease_next(project=project, labeler=ada).repeat_of_id == first.pk


def test_the_gap_counts_the_labelers_own_judgments_in_the_project_only(member_of, always):
    project, elsewhere = make_project(repeat_min_gap=2), make_project(repeat_min_gap=2)
    make_comparisons(project, 4), make_comparisons(elsewhere, 4)
    ada, bob = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    Membership.objects.create(project=elsewhere, user=ada, role=Role.LABELER)
    label_normally(project, ada, 2)
    label_normally(elsewhere, ada, 3)
    label_normally(project, bob, 3)
    assert comparison_lease_next(project=project, labeler=ada).repeat_of_id is None


def test_gold_imported_and_live_comparisons_are_never_repeated(member_of, always):
    project = make_project(repeat_min_gap=1)
    gold, imported, live, regular, later = make_comparisons(project, 5)
    Comparison.objects.filter(pk=gold.pk).update(is_gold=True, gold_winner=gold.response_a)
    Comparison.objects.filter(pk=imported.pk).update(source=ComparisonSource.IMPORT)
    Comparison.objects.filter(pk=live.pk).update(source=ComparisonSource.LIVE)
    ada = member_of(project, Role.LABELER)
    for minute, comparison in enumerate((gold, imported, live)):
        judged(ada, comparison, minute)
    last = judged(ada, later, 10)
    lease = comparison_lease_next(project=project, labeler=ada)
    assert lease.repeat_of_id is None and lease.comparison_id == regular.pk  # nothing may come back: a normal lease
    submit(lease, ada)
    Judgment.objects.filter(assignment_id=lease.pk).update(submitted_at=START + timedelta(minutes=20))
    # The oldest that may come back is ``later``: the gold, imported and live ones are older but never do.
    assert comparison_lease_next(project=project, labeler=ada).repeat_of_id == last.pk


def test_each_judgment_is_repeated_at_most_once_even_when_its_repeat_ended_unanswered(member_of, always):
    project = make_project(repeat_min_gap=1)
    make_comparisons(project, 4)
    ada = member_of(project, Role.LABELER)
    second, first, _third = label_normally(project, ada, 3)  # newest first: the second submitted comes back first
    skipped = comparison_lease_next(project=project, labeler=ada)
    assert skipped.repeat_of_id == first.pk
    assignment_skip(assignment_id=skipped.pk, labeler=ada, reason="unclear")
    expired = comparison_lease_next(project=project, labeler=ada)
    assert expired.repeat_of_id == second.pk
    Assignment.objects.filter(pk=expired.pk).update(
        leased_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
    )
    assignments_expire()
    lease = comparison_lease_next(project=project, labeler=ada)
    assert lease.repeat_of_id is None  # the third has no later judgment; the first two came back once
    assert Assignment.objects.filter(repeat_of__isnull=False).count() == 2


def test_a_skipped_or_expired_repeat_gives_no_slot_back(member_of, always):
    project = make_project(repeat_min_gap=1)
    make_comparisons(project, 2)
    ada = member_of(project, Role.LABELER)
    first, second = label_normally(project, ada, 2)
    Judgment.objects.filter(pk=second.pk).update(submitted_at=START + timedelta(minutes=5))
    before = {c: slots(c) for c in (first.comparison_id, second.comparison_id)}
    assert before == {first.comparison_id: 1, second.comparison_id: 1}

    skipped = comparison_lease_next(project=project, labeler=ada)
    assert skipped.repeat_of_id == first.pk
    assignment_skip(assignment_id=skipped.pk, labeler=ada, reason="unclear")
    assert slots(first.comparison_id) == 1

    Judgment.objects.filter(pk=second.pk).update(submitted_at=START)  # now the older one
    Judgment.objects.filter(pk=first.pk).update(submitted_at=START + timedelta(minutes=9))
    expired = comparison_lease_next(project=project, labeler=ada)
    assert expired.repeat_of_id == second.pk
    Assignment.objects.filter(pk=expired.pk).update(
        leased_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
    )
    assert assignments_expire() == 1
    assert {c: slots(c) for c in before} == before
    assert {c: comparison_slots_recount(comparison_id=c) for c in before} == before


def test_repeat_rate_zero_never_serves_a_repeat(member_of, always):
    project = make_project(repeat_rate=0, repeat_min_gap=1)
    make_comparisons(project, 6)
    ada = member_of(project, Role.LABELER)
    while (lease := comparison_lease_next(project=project, labeler=ada)) is not None:
        assert lease.repeat_of_id is None
        submit(lease, ada)
    assert Judgment.objects.count() == 6 and not Assignment.objects.filter(repeat_of__isnull=False).exists()


def test_the_api_serves_and_takes_a_repeat_as_any_comparison(member_of, always):
    project = make_project(repeat_min_gap=1)
    make_comparisons(project, 3)
    ada = member_of(project, Role.LABELER)
    client = APIClient()
    client.force_authenticate(ada)
    next_url = reverse("api-next", kwargs={"slug": project.slug})

    def submit_url(pk):
        return reverse("api-submit", kwargs={"assignment_id": pk})

    type(project).objects.filter(pk=project.pk).update(repeat_rate=0)
    normal = client.post(next_url, {}, format="json").json()
    normal_result = client.post(submit_url(normal["assignment"]), {"chosen": "left", "strength": "better", "next": True}, format="json")
    assert normal_result.status_code == 201
    client.post(submit_url(normal_result.json()["next"]["assignment"]), {"chosen": "left", "strength": "better"}, format="json")

    type(project).objects.filter(pk=project.pk).update(repeat_rate=0.5)
    task = client.post(next_url, {}, format="json").json()
    repeat = Assignment.objects.get(pk=task["assignment"])
    assert repeat.repeat_of_id is not None
    assert task.keys() == normal.keys() and task["left"].keys() == normal["left"].keys() and task["ask"] == normal["ask"]
    assert "repeat" not in str(task).lower()

    verdict = {"chosen": "right", "strength": "better", "edit": "A much better answer.", "next": True}
    result = client.post(submit_url(task["assignment"]), verdict, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert result.status_code == 201 and result.json().keys() == normal_result.json().keys()
    # Said to be saved with the edit, as any; the edit is no label and is not kept.
    assert result.json()["edited"] is True and result.json()["next"]["assignment"] != task["assignment"]
    assert not Response.objects.filter(source=ResponseSource.HUMAN_EDIT).exists()
    again = client.post(submit_url(task["assignment"]), verdict, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert again.status_code == 200 and again.json()["judgment"] == result.json()["judgment"]
    reused = client.post(submit_url(task["assignment"]), {**verdict, "chosen": "left"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
    other = client.post(submit_url(task["assignment"]), verdict, format="json", HTTP_IDEMPOTENCY_KEY="k2")
    assert other.status_code == 409 and other.json()["error"] == "already_ended"
    assert RepeatJudgment.objects.count() == 1 and Judgment.objects.count() == 2


def test_a_repeat_verdict_is_validated_as_any(member_of, always):
    project = make_project(repeat_min_gap=1, edit_step=False, ask_safety=True)
    make_comparisons(project, 2)
    ada = member_of(project, Role.LABELER)
    rate = project.repeat_rate
    project.repeat_rate = 0
    for _ in range(2):
        submit(comparison_lease_next(project=project, labeler=ada), ada, safety="both_safe")
    project.repeat_rate = rate
    repeat = comparison_lease_next(project=project, labeler=ada)
    assert repeat.repeat_of_id is not None
    with pytest.raises(InvalidVerdict, match="safety"):
        submit(repeat, ada)
    with pytest.raises(InvalidVerdict, match="no edit step"):
        submit(repeat, ada, safety="both_safe", edit="Better.")
    judgment, created = submit(repeat, ada, safety="both_safe", idempotency_key="once")
    assert created and RepeatJudgment.objects.get().safety == "both_safe"
    assert submit(repeat, ada, safety="both_safe", idempotency_key="once")[1] is False
    with pytest.raises(IdempotencyKeyReused):
        submit(repeat, ada, safety="chosen_safe", idempotency_key="once")
    with pytest.raises(AlreadyEnded):
        submit(repeat, ada, safety="both_safe")


def test_flip_rates_per_labeler_with_a_wilson_interval(member_of):
    project = make_project()
    ada, bob = member_of(project, Role.LABELER, username="ada"), member_of(project, Role.LABELER, username="bob")
    for labeler, flips in ((ada, (True, False, False, False)), (bob, (True, True))):
        for flipped in flips:
            original = JudgmentFactory(assignment__comparison=ComparisonFactory(prompt=PromptFactory(project=project)),
                                       assignment__labeler=labeler)
            repeat = Assignment.objects.create(
                comparison=original.comparison, labeler=labeler, left_response=original.rejected_response,
                state=AssignmentState.SUBMITTED, leased_at=START, expires_at=START + timedelta(minutes=30), ended_at=START,
                repeat_of=original,
            )
            RepeatJudgment.objects.create(
                assignment=repeat, original=original, labeler=labeler, strength=Strength.BETTER, left_response=original.rejected_response,
                chosen_response=original.rejected_response if flipped else original.chosen_response, flipped=flipped,
                submitted_at=START, time_on_task_ms=1000,
            )
    other = make_project()
    assert selectors.labeler_flip_rates(project=other) == {}
    rates = selectors.labeler_flip_rates(project=project)
    assert rates.keys() == {"ada", "bob"}
    assert {k: v for k, v in rates["ada"].items() if k != "ci95"} == {"repeats": 4, "flips": 1, "flip_rate": 0.25}
    # Wilson, 1 of 4 at z = 1.96: centre (0.25 + 1.96²/8) / (1 + 1.96²/4) = 0.3725, half-width 0.3269.
    assert rates["ada"]["ci95"] == pytest.approx([0.0456, 0.6994], abs=1e-4)
    # 2 of 2: centre (1 + 1.96²/4) / (1 + 1.96²/2) = 0.6712, half-width 0.3288, so 0.3424 to 1.
    assert rates["bob"]["flip_rate"] == 1.0 and rates["bob"]["ci95"] == pytest.approx([0.3424, 1.0], abs=1e-4)
