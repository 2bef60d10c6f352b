"""factory_boy factories for the domain model. Build valid rows; tests state what differs."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
    ResponseSource,
    Role,
    Strength,
)
from annotation.services import comparison_slots_recount, prompt_content_hash
from modeling.models import CommitteeMember, MemberKind


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", "pw")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    guidelines = "Pick the better response."


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.LABELER


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    messages = factory.Sequence(lambda n: [{"role": "user", "content": f"Question number {n}?"}])
    category = "writing"
    content_hash = factory.LazyAttribute(lambda p: prompt_content_hash(messages=p.messages))


class MemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CommitteeMember

    name = factory.Sequence(lambda n: f"model-{n}")
    kind = MemberKind.LOCAL
    model_path = "/models/tiny"


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    source = ResponseSource.MODEL
    member = factory.SubFactory(MemberFactory)
    text = factory.Sequence(lambda n: f"Answer number {n}.")


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    prompt = factory.SubFactory(PromptFactory)
    project = factory.SelfAttribute("prompt.project")
    response_a = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))
    response_b = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))


class AssignmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Assignment
        skip_postgeneration_save = True

    comparison = factory.SubFactory(ComparisonFactory)
    labeler = factory.SubFactory(UserFactory)
    left_response = factory.SelfAttribute("comparison.response_a")
    state = AssignmentState.LEASED
    leased_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda a: a.leased_at + timedelta(minutes=30))

    @factory.post_generation
    def _slots_hint(obj, create, extracted, **kwargs):
        # Rows made here bypass the lease service, so keep the queue's slot hint in step.
        if create:
            comparison_slots_recount(comparison_id=obj.comparison_id)


class JudgmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Judgment

    assignment = factory.SubFactory(
        AssignmentFactory, state=AssignmentState.SUBMITTED, ended_at=factory.LazyFunction(timezone.now)
    )
    comparison = factory.SelfAttribute("assignment.comparison")
    labeler = factory.SelfAttribute("assignment.labeler")
    chosen_response = factory.SelfAttribute("comparison.response_a")
    rejected_response = factory.SelfAttribute("comparison.response_b")
    left_response = factory.SelfAttribute("assignment.left_response")
    strength = Strength.BETTER
    leased_at = factory.SelfAttribute("assignment.leased_at")
    submitted_at = factory.LazyFunction(timezone.now)
    time_on_task_ms = 12000
