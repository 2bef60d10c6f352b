"""Pages. Thin: parse, call a selector or service, render."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.access import project_page
from annotation.models import Role
from annotation.selectors import labeler_progress, project_counts, project_list_for


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "annotation/home.html", {"projects": project_list_for(user=request.user)})


@project_page(Role.LABELER)
def label(request: HttpRequest, project, role) -> HttpResponse:
    progress = labeler_progress(project=project, labeler=request.user)
    return render(request, "annotation/label.html", {"project": project, "role": role, "progress": progress})


@project_page(Role.LEAD)
def project_overview(request: HttpRequest, project, role) -> HttpResponse:
    context = {
        "project": project,
        "role": role,
        "counts": project_counts(project=project),
        "memberships": project.memberships.select_related("user").order_by("role", "user__username"),
    }
    return render(request, "annotation/project.html", context)
