"""Invariants the database itself enforces (on SQLite here and PostgreSQL in CI)."""

import pytest
from django.db import IntegrityError, transaction

from annotation.models import Comparison, Judgment, Membership, Prompt, Response, ResponseSource, Role, Strength
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_it_rejects_a_second_judgment_on_the_same_comparison_by_the_same_labeler():
    first = JudgmentFactory()
    # A second assignment row cannot exist either, so build the duplicate judgment on a fresh
    # assignment of another comparison and point it back at the first comparison.
    other = AssignmentFactory(labeler=first.labeler, state="submitted", ended_at=first.submitted_at)
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.create(
            assignment=other,
            comparison=first.comparison,
            labeler=first.labeler,
            chosen_response=first.rejected_response,
            rejected_response=first.chosen_response,
            left_response=first.left_response,
            strength=Strength.SLIGHTLY_BETTER,
            leased_at=first.leased_at,
            submitted_at=first.submitted_at,
            time_on_task_ms=1,
        )
    assert Judgment.objects.count() == 1


def test_another_labeler_may_judge_the_same_comparison():
    first = JudgmentFactory()
    JudgmentFactory(assignment__comparison=first.comparison)
    assert first.comparison.judgments.count() == 2


def test_it_rejects_a_strength_off_the_scale():
    judgment = JudgmentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.filter(pk=judgment.pk).update(strength="much_better")
    judgment.refresh_from_db()
    assert judgment.strength == Strength.BETTER


def test_it_rejects_a_judgment_whose_chosen_and_rejected_are_the_same():
    judgment = JudgmentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.filter(pk=judgment.pk).update(rejected_response=judgment.chosen_response)


def test_it_rejects_a_comparison_of_a_response_with_itself():
    response = ResponseFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.create(
            project=response.prompt.project, prompt=response.prompt, response_a=response, response_b=response
        )


def test_it_rejects_a_comparison_whose_responses_answer_different_prompts():
    a = ResponseFactory()
    b = ResponseFactory(prompt=PromptFactory(project=a.prompt.project))
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.create(project=a.prompt.project, prompt=a.prompt, response_a=a, response_b=b)
    assert Comparison.objects.count() == 0


def test_it_rejects_moving_a_comparison_onto_a_response_of_another_prompt():
    comparison = ComparisonFactory()
    stranger = ResponseFactory(prompt=PromptFactory(project=comparison.project))
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.filter(pk=comparison.pk).update(response_b=stranger)


def test_gold_comparisons_name_one_of_their_own_responses_as_winner():
    comparison = ComparisonFactory()
    Comparison.objects.filter(pk=comparison.pk).update(is_gold=True, gold_winner=comparison.response_a)
    outsider = ResponseFactory(prompt=comparison.prompt)
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.filter(pk=comparison.pk).update(gold_winner=outsider)
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.filter(pk=comparison.pk).update(gold_winner=None)


def test_the_same_conversation_is_one_prompt_per_project_but_may_repeat_across_projects():
    prompt = PromptFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.create(project=prompt.project, messages=prompt.messages, content_hash=prompt.content_hash)
    PromptFactory(messages=prompt.messages)  # another project
    assert Prompt.objects.filter(content_hash=prompt.content_hash).count() == 2


def test_a_human_edit_needs_its_parent_author_and_a_positive_edit_distance():
    parent = ResponseFactory()
    author = UserFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Response.objects.create(prompt=parent.prompt, source=ResponseSource.HUMAN_EDIT, text="x", author=author, edit_distance=3)
    with pytest.raises(IntegrityError), transaction.atomic():
        Response.objects.create(
            prompt=parent.prompt, source=ResponseSource.HUMAN_EDIT, text="x", parent=parent, author=author, edit_distance=0
        )
    edit = Response.objects.create(
        prompt=parent.prompt, source=ResponseSource.HUMAN_EDIT, text="x", parent=parent, author=author, edit_distance=3
    )
    assert edit.parent == parent


def test_a_member_samples_each_prompt_once_per_sample_index():
    response = ResponseFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        ResponseFactory(prompt=response.prompt, member=response.member, sample_index=response.sample_index)
    ResponseFactory(prompt=response.prompt, member=response.member, sample_index=1)


def test_a_comparison_is_never_assigned_twice_to_one_labeler():
    assignment = AssignmentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        AssignmentFactory(comparison=assignment.comparison, labeler=assignment.labeler)


def test_one_role_per_person_per_project():
    membership = Membership.objects.create(project=PromptFactory().project, user=UserFactory(), role=Role.LABELER)
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(project=membership.project, user=membership.user, role=Role.LEAD)
