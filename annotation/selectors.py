"""Reads for pages and the API. Writes live in ``annotation.services``."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from annotation.models import (
    ROLE_RANK,
    Assignment,
    AssignmentState,
    Comparison,
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


def user_is_labeler_only(*, user) -> bool:
    """True for someone whose highest role anywhere is labeler: they see labeling pages only."""
    if user.is_superuser or user.is_staff:
        return False
    roles = Membership.objects.filter(user=user).values_list("role", flat=True)
    return all(ROLE_RANK[Role(r)] <= ROLE_RANK[Role.LABELER] for r in roles)


def project_counts(*, project: Project) -> dict[str, int]:
    return {
        "prompts": project.prompts.count(),
        "responses": project.prompts.aggregate(n=Count("responses"))["n"] or 0,
        "comparisons": project.comparisons.count(),
        "judgments": Judgment.objects.filter(comparison__project=project).count(),
        "labelers": project.memberships.filter(role=Role.LABELER).count(),
    }


def labeler_progress(*, project: Project, labeler) -> dict[str, int]:
    """Done today by this labeler, and comparisons still short of their k labels in the project."""
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    done_today = Judgment.objects.filter(
        comparison__project=project, labeler=labeler, submitted_at__gte=start_of_day
    ).count()
    return {"done_today": done_today, "remaining": comparisons_open(project=project).count()}


def comparisons_open(*, project: Project) -> QuerySet[Comparison]:
    """Comparisons with fewer than k live-or-done assignments."""
    now = timezone.now()
    live_or_done = Q(assignments__state=AssignmentState.SUBMITTED) | Q(
        assignments__state=AssignmentState.LEASED, assignments__expires_at__gt=now
    )
    return project.comparisons.annotate(taken=Count("assignments", filter=live_or_done)).filter(
        taken__lt=project.overlap_k
    )


def assignments_live(*, labeler) -> QuerySet[Assignment]:
    return Assignment.objects.filter(labeler=labeler, state=AssignmentState.LEASED, expires_at__gt=timezone.now())


def assignment_payload(*, assignment: Assignment) -> dict:
    """What the labeler's screen (or API client) needs: no member names, no response ids.

    Sides are reported as ``left``/``right`` only; the server maps them back on submit, so
    nothing in the payload identifies which committee member wrote what.
    """
    from annotation.rendering import render_markdown

    comparison = assignment.comparison
    project = comparison.project
    responses = {r.pk: r for r in (comparison.response_a, comparison.response_b)}
    left = responses.pop(assignment.left_response_id)
    (right,) = responses.values()
    return {
        "assignment": assignment.pk,
        "expires_at": assignment.expires_at.isoformat(),
        "conversation": [
            {"role": m["role"], "content": m["content"], "html": render_markdown(m["content"])}
            for m in comparison.prompt.messages
        ],
        "left": {"text": left.text, "html": render_markdown(left.text)},
        "right": {"text": right.text, "html": render_markdown(right.text)},
        "ask": {
            "attributes": project.ask_attributes,
            "flags": project.ask_flags,
            "rationale": project.ask_rationale,
            "edit": project.edit_step,
            "max_edit_chars": project.max_edit_chars,
        },
    }


def assignment_for_payload(*, assignment_id: int) -> Assignment:
    return Assignment.objects.select_related(
        "comparison__project", "comparison__prompt", "comparison__response_a", "comparison__response_b"
    ).get(pk=assignment_id)
