from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.access import project_page
from annotation.models import Role


@project_page(Role.ADMIN)
def rounds(request: HttpRequest, project, role) -> HttpResponse:
    return render(request, "modeling/rounds.html", {"project": project, "role": role, "rounds": project.rounds.all()})
