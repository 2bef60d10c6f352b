"""Projects and memberships."""

from __future__ import annotations

from django.db import models, transaction

from annotation.models import AuditAction, Membership, Project, Role
from annotation.services.audit import audit_record


@transaction.atomic
def project_create(*, name: str, slug: str, created_by=None, creator_role: Role = Role.LEAD, **settings) -> Project:
    """A new project; its creator (unless a superuser, who is admin everywhere) gets ``creator_role``."""
    project = Project(name=name, slug=slug, **settings)
    project.full_clean()
    project.save()
    if created_by is not None and not created_by.is_superuser:
        membership_set(project=project, user=created_by, role=creator_role)
    if created_by is not None:
        audit_record(action=AuditAction.PROJECT_CHANGED, project=project, target="created", actor=created_by, details={"name": name, "slug": slug})
    return project


@transaction.atomic
def project_update_settings(*, project: Project, changes: dict, user=None) -> list[str]:
    """Apply already-validated ``changes`` (a settings form's cleaned data) and audit what moved,
    before and after; returns the names of the fields that changed."""
    moved = {name: (getattr(project, name), value) for name, value in changes.items() if getattr(project, name) != value}
    if not moved:
        return []
    for name, (_before, value) in moved.items():
        setattr(project, name, value)
    project.full_clean()
    project.save(update_fields=list(moved))
    if "ambiguous_first" in moved:
        # The judge's ambiguous pairs already judged move in the queue too, not only later ones.
        project.comparisons.filter(judge_state="inconsistent").update(priority=1 if project.ambiguous_first else 0)
    audit_record(
        action=AuditAction.PROJECT_CHANGED, project=project, target="settings", actor=user,
        details={name: {"before": _short(before), "after": _short(after)} for name, (before, after) in moved.items()},
    )
    return list(moved)


def _short(value):
    if isinstance(value, models.Model):  # a foreign key (the project's judge): its name, for the log
        return str(value)
    return value[:200] + "…" if isinstance(value, str) and len(value) > 200 else value


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
