"""A role too low for a page gets a page that says why, with the site's navigation, and the server
log gets one line for it, not a traceback."""

import logging
import sys

import pytest
from django.urls import reverse

from annotation.models import Role
from config.observability import ClientErrorsWithoutTraceback
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def test_a_labeler_on_a_leads_page_is_told_why_with_a_way_back(client, member_of):
    project = ProjectFactory(name="Helpful chat")
    client.force_login(member_of(project, Role.LABELER, username="lab"))
    page = client.get(reverse("quality", kwargs={"slug": project.slug}))
    text = page.content.decode()
    assert page.status_code == 403
    assert "This page needs the project lead role in Helpful chat" in text
    assert 'href="/"' in text and "Log out" in text and "lab" in text  # the site's header, not a bare 403


def _record(status: int) -> logging.LogRecord:
    try:
        raise PermissionError("denied")
    except PermissionError:
        record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Forbidden: %s", ("/x",), sys.exc_info())
    record.status_code = status
    return record


def test_client_errors_are_logged_without_a_traceback_and_server_errors_keep_theirs():
    quiet = ClientErrorsWithoutTraceback()
    forbidden, crashed = _record(403), _record(500)
    assert quiet.filter(forbidden) and forbidden.exc_info is None
    assert quiet.filter(crashed) and crashed.exc_info is not None
    assert "Traceback" not in logging.Formatter().format(forbidden)
