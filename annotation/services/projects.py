"""Projects and memberships."""

from __future__ import annotations

from django.db import transaction

from annotation.models import AuditAction, Membership, Project, Role
from annotation.services.audit import audit_record


@transaction.atomic
def project_create(*, name: str, slug: str, created_by=None, **settings) -> Project:
    project = Project(name=name, slug=slug, **settings)
    project.full_clean()
    project.save()
    if created_by is not None and not created_by.is_superuser:
        membership_set(project=project, user=created_by, role=Role.LEAD)
    return project


def membership_set(*, project: Project, user, role: Role) -> Membership:
    """Give ``user`` exactly ``role`` in ``project`` (one role per person per project)."""
    membership, _created = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


def project_set_round_schedule(*, project: Project, enabled: bool, min_new_judgments: int) -> Project:
    """Turn scheduled retraining on or off and set how many new judgments start a round."""
    # The column is a 32-bit integer: a bigger number would be a database error (a 500), not a 400.
    if not 1 <= min_new_judgments <= 10_000_000:
        raise ValueError("min_new_judgments must be between 1 and 10,000,000")
    project.round_schedule_enabled = enabled
    project.round_min_new_judgments = min_new_judgments
    project.save(update_fields=["round_schedule_enabled", "round_min_new_judgments"])
    audit_record(
        action=AuditAction.PROJECT_CHANGED, project=project, target="round schedule",
        details={"enabled": enabled, "min_new_judgments": min_new_judgments},
    )
    return project


def project_set_quality_threshold(*, project: Project, threshold: float) -> Project:
    """The gold accuracy under which the dashboard marks a labeler (and exports can drop them)."""
    if not 0 <= threshold <= 1:
        raise ValueError("threshold must be between 0 and 1")
    project.labeler_quality_threshold = threshold
    project.save(update_fields=["labeler_quality_threshold"])
    audit_record(action=AuditAction.PROJECT_CHANGED, project=project, target="quality threshold", details={"threshold": threshold})
    return project
