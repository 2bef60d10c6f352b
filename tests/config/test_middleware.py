"""A lost database connection answers 503 + Retry-After (JSON under /api/, a short page
elsewhere); every other error is left alone. Real dropped connections: tests/faults/."""

import pytest
from django.db import InterfaceError, OperationalError
from rest_framework.test import APIClient

from annotation.models import Role

pytestmark = pytest.mark.django_db


def fail_with(exc):
    def fail(**kwargs):
        raise exc

    return fail


@pytest.mark.parametrize("exc", [OperationalError("server closed the connection unexpectedly"), InterfaceError("connection already closed")])
def test_an_api_request_that_loses_the_database_gets_a_json_503(project, member_of, monkeypatch, exc):
    monkeypatch.setattr("annotation.apis.project_list_for", fail_with(exc))
    client = APIClient()
    client.force_authenticate(member_of(project, Role.LABELER))
    response = client.get("/api/v1/projects/")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["code"] == response.json()["error"] == "database_unavailable"
    assert "nothing was saved" in response.json()["detail"]


def test_a_page_that_loses_the_database_gets_a_short_html_503(client, project, member_of, monkeypatch):
    monkeypatch.setattr("annotation.views.project_list_for", fail_with(OperationalError("terminating connection")))
    client.force_login(member_of(project, Role.LABELER))
    response = client.get("/")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/html") and b"Try again" in response.content
    assert b"terminating connection" not in response.content  # the error goes to the log, not the page


def test_other_errors_are_not_turned_into_503s(client, project, member_of, monkeypatch):
    monkeypatch.setattr("annotation.views.project_list_for", fail_with(ValueError("a bug")))
    client.force_login(member_of(project, Role.LABELER))
    with pytest.raises(ValueError):
        client.get("/")
