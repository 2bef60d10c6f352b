"""Projects and memberships."""

from __future__ import annotations

from django.db import transaction

from annotation.models import Membership, Project, Role


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
