"""The labeling queue and the judgment protocol, at the service layer."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Judgment, Response, ResponseSource, Role, Strength
from annotation.services import (
    AlreadyEnded,
    IdempotencyKeyReused,
    AssignmentNotFound,
    InvalidVerdict,
    LeaseCapReached,
    LeaseExpired,
    Verdict,
    assignment_skip,
    assignments_expire,
    comparison_lease_next,
    judgment_submit,
)
from tests.factories import AssignmentFactory, ComparisonFactory, ProjectFactory, PromptFactory

pytestmark = pytest.mark.django_db


def make_comparisons(project, n):
    return [ComparisonFactory(prompt=PromptFactory(project=project)) for _ in range(n)]


def lease(project, labeler, **kwargs):
    return comparison_lease_next(project=project, labeler=labeler, **kwargs)


def submit(assignment, labeler, **fields):
    verdict = Verdict(**{"chosen": "left", "strength": Strength.BETTER, **fields})
    return judgment_submit(assignment_id=assignment.pk, labeler=labeler, verdict=verdict)


def test_it_returns_the_labelers_own_unexpired_lease_first(project, member_of):
    make_comparisons(project, 3)
    labeler = member_of(project, Role.LABELER)
    first = lease(project, labeler)
    assert lease(project, labeler) == first
    assert Assignment.objects.count() == 1


def test_it_fills_started_comparisons_before_new_ones_fewest_labels_first(member_of):
    project = ProjectFactory(overlap_k=3, gold_rate=0)
    new, once, twice, full = make_comparisons(project, 4)
    for comparison, n in ((once, 1), (twice, 2), (full, 3)):
        for _ in range(n):
            AssignmentFactory(comparison=comparison, state=AssignmentState.SUBMITTED, ended_at=timezone.now())
    order = []
    for _ in range(3):
        labeler = member_of(project, Role.LABELER)
        assignment = lease(project, labeler)
        order.append(assignment.comparison)
        submit(assignment, labeler)
    # breadth first among started comparisons: the one with fewest labels, until it catches up
    # (ties by age); a full comparison never, a new one only when no started one is open
    assert order == [once, once, twice]
    assert lease(project, member_of(project, Role.LABELER)).comparison == new  # the rest are full


def test_it_never_exceeds_k_live_or_done_assignments(member_of):
    project = ProjectFactory(overlap_k=2, gold_rate=0)
    (comparison,) = make_comparisons(project, 1)
    labelers = [member_of(project, Role.LABELER) for _ in range(3)]
    assert lease(project, labelers[0]).comparison == comparison
    assert lease(project, labelers[1]).comparison == comparison
    assert lease(project, labelers[2]) is None


def test_an_expired_lease_returns_the_comparison_to_the_pool_and_cannot_submit(member_of):
    project = ProjectFactory(overlap_k=1, gold_rate=0)
    make_comparisons(project, 1)
    slow, other = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    stale = lease(project, slow)
    Assignment.objects.filter(pk=stale.pk).update(
        leased_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
    )
    assert lease(project, other).comparison == stale.comparison  # the queue swept the stale lease
    stale.refresh_from_db()
    assert stale.state == AssignmentState.EXPIRED
    with pytest.raises(LeaseExpired):
        submit(stale, slow)
    with pytest.raises(LeaseExpired):
        assignment_skip(assignment_id=stale.pk, labeler=slow, reason="back from lunch")
    assert Judgment.objects.count() == 0
    assert assignments_expire() == 0


def test_an_expired_lease_cannot_submit_before_it_is_swept(member_of):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    slow = member_of(project, Role.LABELER)
    stale = lease(project, slow)
    Assignment.objects.filter(pk=stale.pk).update(
        leased_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
    )
    with pytest.raises(LeaseExpired):
        submit(stale, slow)
    assert Judgment.objects.count() == 0
    assert assignments_expire() == 1
    assert stale.comparison.__class__.objects.get(pk=stale.comparison_id).slots_taken == 0


def test_it_never_offers_a_comparison_the_labeler_judged_or_skipped(member_of):
    project = ProjectFactory(overlap_k=3, gold_rate=0)
    make_comparisons(project, 2)
    labeler = member_of(project, Role.LABELER)
    judged = lease(project, labeler)
    submit(judged, labeler)
    skipped = lease(project, labeler)
    assignment_skip(assignment_id=skipped.pk, labeler=labeler, reason="prompt unclear")
    assert lease(project, labeler) is None
    # the skipped comparison is still open for someone else
    assert lease(project, member_of(project, Role.LABELER)).comparison in {judged.comparison, skipped.comparison}


def test_gold_comes_at_the_projects_rate_and_ignores_k(member_of):
    project = ProjectFactory(overlap_k=1, gold_rate=1.0)
    regular, gold = make_comparisons(project, 2)
    gold.is_gold, gold.gold_winner = True, gold.response_a
    gold.save()
    first, second = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    assert lease(project, first).comparison == gold
    assert lease(project, second).comparison == gold  # gold is shown to every labeler once
    project.gold_rate = 0
    project.save()
    third = member_of(project, Role.LABELER)
    assert lease(project, third).comparison == regular


def test_a_labeler_holds_at_most_the_projects_cap_of_live_leases(member_of):
    project = ProjectFactory(max_live_leases=2, gold_rate=0)
    make_comparisons(project, 4)
    labeler = member_of(project, Role.LABELER)
    a = lease(project, labeler)
    b = lease(project, labeler, exclude=(a.pk,))
    assert a != b
    with pytest.raises(LeaseCapReached):
        lease(project, labeler, exclude=(a.pk, b.pk))


def test_sides_are_randomised_per_assignment_and_recorded(member_of):
    project = ProjectFactory(overlap_k=60, gold_rate=0)
    (comparison,) = make_comparisons(project, 1)
    lefts = {lease(project, member_of(project, Role.LABELER)).left_response_id for _ in range(40)}
    assert lefts == {comparison.response_a_id, comparison.response_b_id}


def test_submit_stores_what_was_preferred_not_the_side(member_of):
    project = ProjectFactory(gold_rate=0)
    (comparison,) = make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    right = comparison.response_b_id if assignment.left_response_id == comparison.response_a_id else comparison.response_a_id
    judgment, created = submit(assignment, labeler, chosen="right", strength=Strength.SIGNIFICANTLY_BETTER)
    assert created
    assert judgment.chosen_response_id == right
    assert judgment.rejected_response_id == assignment.left_response_id
    assert judgment.left_response_id == assignment.left_response_id
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.SUBMITTED and assignment.ended_at == judgment.submitted_at
    assert judgment.time_on_task_ms >= 0 and judgment.leased_at == assignment.leased_at


def test_a_real_edit_becomes_a_human_edit_response_with_its_distance(member_of):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    chosen = Response.objects.get(pk=assignment.left_response_id)
    judgment, _ = submit(assignment, labeler, edit=chosen.text + " Plus one fix.")
    edit = judgment.edited_response
    assert edit.source == ResponseSource.HUMAN_EDIT and edit.parent == chosen and edit.author == labeler
    assert edit.edit_distance == len(" Plus one fix.") and edit.prompt_id == chosen.prompt_id


def test_a_whitespace_only_edit_is_not_an_edit(member_of):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    chosen = Response.objects.get(pk=assignment.left_response_id)
    judgment, _ = submit(assignment, labeler, edit="  " + chosen.text.replace(" ", "\n  ") + "\n\n")
    assert judgment.edited_response is None
    assert not Response.objects.filter(source=ResponseSource.HUMAN_EDIT).exists()


def test_a_retried_submit_returns_the_same_judgment_and_a_different_one_is_refused(member_of):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    first, created = submit(assignment, labeler, idempotency_key="k-1", edit="A better answer.")
    again, created_again = submit(assignment, labeler, idempotency_key="k-1", edit="A better answer.")
    assert created and not created_again and again == first
    with pytest.raises(AlreadyEnded):
        submit(assignment, labeler, chosen="right", idempotency_key="k-2")
    assert Judgment.objects.count() == 1
    assert Response.objects.filter(source=ResponseSource.HUMAN_EDIT).count() == 1


@pytest.mark.parametrize(
    "changed",
    [
        {"chosen": "right"}, {"strength": "slightly_better"}, {"edit": "Another answer."}, {"edit": None},
        {"rationale": "because"}, {"both_bad": True}, {"flags": {"left": ["unsafe"]}},
    ],
)
def test_an_idempotency_key_reused_for_a_different_verdict_is_refused_and_the_first_stands(member_of, changed):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    first, _ = submit(assignment, labeler, idempotency_key="k-1", edit="A better answer.")
    with pytest.raises(IdempotencyKeyReused) as refused:
        submit(assignment, labeler, idempotency_key="k-1", **{"edit": "A better answer.", **changed})
    assert refused.value.status == 422 and refused.value.code == "idempotency_key_reused"
    assert list(Judgment.objects.values_list("pk", "strength")) == [(first.pk, first.strength)]
    assert Response.objects.filter(source=ResponseSource.HUMAN_EDIT).count() == 1


def test_a_retry_of_a_whitespace_only_edit_is_the_same_request(member_of):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    chosen = Response.objects.get(pk=assignment.left_response_id)
    edit = chosen.text + "\n"
    first, _ = submit(assignment, labeler, idempotency_key="k-1", edit=edit, flags={"left": ["unsafe", "unsafe"]})
    again, created = submit(assignment, labeler, idempotency_key="k-1", edit=edit, flags={"left": ["unsafe"]})
    assert again == first and not created and first.edited_response is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"strength": "much_better"}, "strength: expected one of"),
        ({"chosen": "middle"}, "chosen: expected 'left' or 'right'"),
        ({"edit": "x" * 101}, "edit: longer than the project's limit of 100"),
        ({"edit": "   "}, "edit: an edit cannot be empty"),
        ({"attributes": {"left": {"helpfulness": 5}}}, "attributes.left.helpfulness: expected an integer from 0 to 4"),
        ({"attributes": {"left": {"charm": 2}}}, "attributes.left.charm: not one of"),
        ({"flags": {"right": ["rude"]}}, "flags.right: unknown ['rude']"),
    ],
)
def test_a_bad_verdict_is_refused_and_changes_nothing(member_of, fields, message):
    project = ProjectFactory(gold_rate=0, max_edit_chars=100)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    with pytest.raises(InvalidVerdict, match=message.replace("[", r"\[").replace("]", r"\]")):
        submit(assignment, labeler, **fields)
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.LEASED
    assert Judgment.objects.count() == 0 and not Response.objects.filter(source=ResponseSource.HUMAN_EDIT).exists()


def test_attributes_and_flags_are_stored_by_response(member_of):
    project = ProjectFactory(gold_rate=0, ask_attributes=True)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    judgment, _ = submit(
        assignment, labeler,
        attributes={"left": {"helpfulness": 4, "verbosity": 0}, "right": {}},
        flags={"left": [], "right": ["unsafe", "unsafe"]}, rationale="Right one is dangerous.", both_bad=False,
    )
    left, right = str(judgment.left_response_id), str(judgment.rejected_response_id)
    assert judgment.attributes == {left: {"helpfulness": 4, "verbosity": 0}}
    assert judgment.flags == {right: ["unsafe"]}
    assert judgment.rationale == "Right one is dangerous."


def test_another_labelers_lease_reads_as_not_found(member_of):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    owner, intruder = member_of(project, Role.LABELER), member_of(project, Role.LABELER)
    assignment = lease(project, owner)
    with pytest.raises(AssignmentNotFound):
        submit(assignment, intruder)
    with pytest.raises(AssignmentNotFound):
        assignment_skip(assignment_id=assignment.pk, labeler=intruder, reason="mine now")
    assignment.refresh_from_db()
    assert assignment.state == AssignmentState.LEASED


def test_a_skip_needs_a_reason_and_a_retried_skip_is_harmless(member_of):
    project = ProjectFactory(gold_rate=0)
    make_comparisons(project, 1)
    labeler = member_of(project, Role.LABELER)
    assignment = lease(project, labeler)
    with pytest.raises(InvalidVerdict):
        assignment_skip(assignment_id=assignment.pk, labeler=labeler, reason="  ")
    assignment_skip(assignment_id=assignment.pk, labeler=labeler, reason="can't judge code")
    again = assignment_skip(assignment_id=assignment.pk, labeler=labeler, reason="can't judge code")
    assert again.state == AssignmentState.SKIPPED and again.skip_reason == "can't judge code"
    with pytest.raises(AlreadyEnded):
        submit(assignment, labeler)
