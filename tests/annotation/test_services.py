from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import AssignmentState, Prompt
from annotation.services import (
    PromptData,
    assignments_expire,
    messages_validate,
    prompt_content_hash,
    prompts_create,
)
from annotation.tasks import assignments_expire as assignments_expire_task
from tests.factories import AssignmentFactory

pytestmark = pytest.mark.django_db


def test_prompts_skip_duplicates_within_the_file_and_the_project(project):
    first = [PromptData(messages=[{"role": "user", "content": "Hi"}]), PromptData(messages=[{"role": "user", "content": "Hi"}])]
    assert prompts_create(project=project, prompts=first).duplicates == 1
    result = prompts_create(project=project, prompts=[*first, PromptData(messages=[{"role": "user", "content": "Yo"}])])
    assert (result.created, result.duplicates) == (1, 2)
    assert Prompt.objects.filter(project=project).count() == 2


def test_the_content_hash_ignores_extra_keys_but_not_roles_or_text():
    base = [{"role": "user", "content": "Hi"}]
    assert prompt_content_hash(messages=base) == prompt_content_hash(messages=[{**base[0], "name": "x"}])
    assert prompt_content_hash(messages=base) != prompt_content_hash(messages=[{"role": "system", "content": "Hi"}])


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "non-empty list"),
        ([{"role": "robot", "content": "x"}], "role: expected one of system, user, assistant"),
        ([{"role": "user", "content": "  "}], "content: expected non-empty text"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message must be the user turn"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}], "system message may only come first"),
    ],
)
def test_bad_conversations_are_described(messages, problem):
    assert any(problem in p for p in messages_validate(messages))


def test_a_system_prompt_and_earlier_turns_are_valid():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert messages_validate(messages) == []


def test_expiring_leases_ends_only_those_past_expiry_and_is_safe_twice():
    now = timezone.now()
    stale = AssignmentFactory(leased_at=now - timedelta(hours=2), expires_at=now - timedelta(hours=1))
    live = AssignmentFactory()
    done = AssignmentFactory(
        leased_at=now - timedelta(hours=2), expires_at=now - timedelta(hours=1),
        state=AssignmentState.SUBMITTED, ended_at=now - timedelta(hours=1, minutes=30),
    )
    assert assignments_expire_task() == 1
    assert assignments_expire(now=now) == 0
    for assignment, state in ((stale, AssignmentState.EXPIRED), (live, AssignmentState.LEASED), (done, AssignmentState.SUBMITTED)):
        assignment.refresh_from_db()
        assert assignment.state == state
