"""Reads for pages and the API. Writes live in ``annotation.services``."""

from __future__ import annotations

from functools import lru_cache

from django.db.models import Count, F, Func, IntegerField, QuerySet, Subquery
from django.utils import timezone

from annotation.models import (
    Assignment,
    Comparison,
    ComparisonSource,
    Judgment,
    Membership,
    Project,
    Role,
)


def project_list_for(*, user) -> list[tuple[Project, Role]]:
    """Projects the user has a role in, with that role (a superuser sees all, as admin)."""
    if user.is_superuser:
        return [(project, Role.ADMIN) for project in Project.objects.all()]
    memberships = Membership.objects.filter(user=user).select_related("project").order_by("project__name")
    return [(m.project, Role(m.role)) for m in memberships]


def project_counts(*, project: Project) -> dict[str, int]:
    return {
        "prompts": project.prompts.count(),
        "responses": project.prompts.aggregate(n=Count("responses"))["n"] or 0,
        "comparisons": project.comparisons.count(),
        "judgments": Judgment.objects.filter(comparison__project=project).count(),
        "labelers": project.memberships.filter(role=Role.LABELER).count(),
    }


def labeler_progress(*, project: Project, labeler) -> dict[str, int]:
    """Done today by this labeler, and comparisons still short of their k labels in the project.

    One round trip (two scalar subqueries): the labeling API asks for this on every ``next``.
    """
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    done_today = Judgment.objects.filter(comparison__project=project, labeler=labeler, submitted_at__gte=start_of_day)
    return Project.objects.filter(pk=project.pk).values(
        done_today=_count(done_today), remaining=_count(comparisons_open(project=project))
    ).get()


def _count(queryset) -> Subquery:
    return Subquery(queryset.order_by().values(n=Func(F("pk"), function="COUNT")).values("n")[:1], output_field=IntegerField())


def comparisons_open(*, project: Project) -> QuerySet[Comparison]:
    """Regular comparisons short of their k labels (by the queue's slot hint; index-only)."""
    return project.comparisons.filter(is_gold=False, slots_taken__lt=project.overlap_k).exclude(
        source=ComparisonSource.IMPORT
    )


def assignment_payload(*, assignment: Assignment, project: Project) -> dict:
    """What the labeler's screen (or API client) needs: no member names, no response ids.

    Sides are reported as ``left``/``right`` only; the server maps them back on submit, so
    nothing in the payload identifies which committee member wrote what.
    """
    content = comparison_content(assignment.comparison_id)
    right_id = next(pk for pk in content["responses"] if pk != assignment.left_response_id)
    return {
        "assignment": assignment.pk,
        "expires_at": assignment.expires_at.isoformat(),
        "conversation": content["conversation"],
        "left": content["responses"][assignment.left_response_id],
        "right": content["responses"][right_id],
        "ask": {
            "attributes": project.ask_attributes,
            "flags": project.ask_flags,
            "rationale": project.ask_rationale,
            "edit": project.edit_step,
            "max_edit_chars": project.max_edit_chars,
        },
    }


@lru_cache(maxsize=4096)
def comparison_content(comparison_id: int) -> dict:
    """The prompt and both responses of a comparison, rendered, cached per process.

    Safe to cache without invalidation: a comparison's prompt and responses never change once
    labelers may see them (the admin shows them read-only), since judgments refer to exactly
    what was shown. Saves the labeling hot path a five-table join and the Markdown rendering.
    """
    from annotation.rendering import render_markdown

    comparison = Comparison.objects.select_related("prompt", "response_a", "response_b").get(pk=comparison_id)
    return {
        "conversation": [
            {"role": m["role"], "content": m["content"], "html": render_markdown(m["content"])}
            for m in comparison.prompt.messages
        ],
        "responses": {
            r.pk: {"text": r.text, "html": render_markdown(r.text)} for r in (comparison.response_a, comparison.response_b)
        },
    }
