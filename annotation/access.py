"""Who may do what in a project. One place for the role rules, used by pages and the API.

Roles rank labeler < lead < admin; each can do what the ones before it can. A superuser is an
admin everywhere. Someone with no role in a project gets 404 for it, not 403, so a project's
existence does not leak to outsiders.
"""

from __future__ import annotations

from functools import wraps
from typing import Callable

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from rest_framework.permissions import BasePermission

from annotation.models import ROLE_RANK, Membership, Project, Role


def project_role(*, user, project: Project) -> Role | None:
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Role.ADMIN
    role = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    return Role(role) if role else None


def has_role(*, user, project: Project, minimum: Role) -> bool:
    role = project_role(user=user, project=project)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def project_for(*, user, slug: str, minimum: Role) -> tuple[Project, Role]:
    """The project and the caller's role in it; 404 for outsiders, 403 for a role too low.

    One query on the hot path (the labeling API calls this on every request): the caller's
    membership joined with its project. Outsiders get 404 whether or not the project exists.
    """
    if not user.is_authenticated or not user.is_active:
        raise Http404("No such project")
    if user.is_superuser:
        project, role = get_object_or_404(Project, slug=slug), Role.ADMIN
    else:
        membership = Membership.objects.select_related("project").filter(project__slug=slug, user=user).first()
        if membership is None:
            raise Http404("No such project")
        project, role = membership.project, Role(membership.role)
    if ROLE_RANK[role] < ROLE_RANK[minimum]:
        raise PermissionDenied(f"This page needs the {minimum.label.lower()} role in {project.name}")
    return project, role


def project_page(minimum: Role) -> Callable:
    """Decorate a view ``view(request, project, role, ...)`` reached as ``/p/<slug>/...``."""

    def decorator(view: Callable) -> Callable:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, slug: str, *args, **kwargs):
            project, role = project_for(user=request.user, slug=slug, minimum=minimum)
            return view(request, project, role, *args, **kwargs)

        return wrapped

    return decorator


class ProjectRolePermission(BasePermission):
    """DRF permission: the view sets ``minimum_role`` and takes the project from ``slug`` in the URL."""

    def has_permission(self, request, view) -> bool:
        slug = view.kwargs.get("slug")
        if slug is None:
            return request.user.is_authenticated
        project, _role = project_for(user=request.user, slug=slug, minimum=getattr(view, "minimum_role", Role.ADMIN))
        view.project = project
        return True
