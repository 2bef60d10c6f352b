"""Request ids: answered in X-Request-ID, on every log line of the request, one JSON object per line."""

import io
import json
import logging

import pytest
from django.test import Client

from config.observability import ContextFilter, JsonFormatter

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_log():
    """Every log record during the test, formatted as production formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_each_request_gets_an_id_in_the_answer_and_in_its_log_lines(json_log):
    answer = Client().get("/login/")
    rid = answer["X-Request-ID"]
    assert len(rid) == 32
    access = [e for e in json_log() if e["logger"] == "arbiter.request"]
    assert access == [
        {**access[0], "msg": "GET /login/ 200", "request_id": rid, "task_id": "-", "method": "GET", "path": "/login/", "status": 200, "user": None}
    ]
    assert isinstance(access[0]["duration_ms"], float) and access[0]["ts"].endswith("Z")


def test_a_callers_request_id_is_kept_when_sane_and_replaced_when_not(json_log):
    assert Client().get("/login/", HTTP_X_REQUEST_ID="lb-7f3a.1")["X-Request-ID"] == "lb-7f3a.1"
    forged = Client().get("/login/", HTTP_X_REQUEST_ID='x" {"level": "CRITICAL"}\n')["X-Request-ID"]
    assert forged != 'x" {"level": "CRITICAL"}\n' and len(forged) == 32
    # the log stays one well-formed object per line whatever the caller sent
    assert all(entry["level"] == "INFO" for entry in json_log())


def test_the_access_line_names_a_token_user_authenticated_inside_the_view(json_log, member_of, project):
    from annotation.models import Role
    from rest_framework.authtoken.models import Token

    labeler = member_of(project, Role.LABELER, username="ada")
    key = Token.objects.create(user=labeler).key
    Client().get("/api/v1/projects/", HTTP_AUTHORIZATION=f"Token {key}")
    (access,) = [e for e in json_log() if e["logger"] == "arbiter.request"]
    assert access["user"] == "ada" and access["status"] == 200


def test_exceptions_are_logged_with_their_traceback_as_one_line():
    record = logging.LogRecord("arbiter.x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    ContextFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "boom now" and "ValueError: bad" in entry["exc"] and entry["request_id"] == "-"
