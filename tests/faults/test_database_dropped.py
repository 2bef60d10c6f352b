"""PostgreSQL connections dropped under a real web process (gunicorn, persistent connections as
in production): a request whose connection dies gets a clear 503 with Retry-After and leaves
nothing behind; the next request connects afresh and succeeds; a retried submit is stored once.

A request is caught mid-flight by holding a lock it needs, waiting until PostgreSQL reports it
waiting on that lock, then terminating every backend of the test database but our own.
"""

import threading

import pytest
from django.db import connection, transaction
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation.models import Assignment, AssignmentState, Judgment, Role
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, PromptFactory, UserFactory
from tests.faults.support import (
    WebServer,
    backends_waiting_on_a_lock,
    counts,
    http_client,
    terminate_other_backends,
    wait_for,
)
from tests.processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def labeling_setup(comparisons: int = 3):
    project = ProjectFactory(gold_rate=0, overlap_k=1, max_edit_chars=1000)
    for _ in range(comparisons):
        ComparisonFactory(prompt=PromptFactory(project=project))
    labeler = UserFactory()
    MembershipFactory(project=project, user=labeler, role=Role.LABELER)
    return project, labeler, Token.objects.create(user=labeler).key


def in_background(call):
    """Run ``call`` in a thread; the returned dict gets its result under "value"."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(value=call()), daemon=True)
    thread.start()
    box["thread"] = thread
    return box


def terminate_while_blocked(what: str) -> int:
    """Inside the caller's lock: wait until a web backend waits on it, then drop every backend."""
    wait_for(lambda: backends_waiting_on_a_lock() >= 1, 30, f"{what} waiting on the lock")
    return terminate_other_backends()


@pytest.mark.postgres
def test_a_submit_whose_connection_dies_gets_a_503_writes_nothing_and_its_retry_is_stored_once(tmp_path):
    project, labeler, token = labeling_setup()
    client = http_client(token=token)
    with WebServer(tmp_path=tmp_path) as web:
        task = client.post(f"{web.url}/api/v1/projects/{project.slug}/next/", json={}, timeout=30)
        assert task.status_code == 200, web.log()
        assignment = task.json()["assignment"]
        before = counts()
        body = {"chosen": "right", "strength": "significantly_better", "edit": "A much better answer.", "idempotency_key": "submit-1"}
        url = f"{web.url}/api/v1/assignments/{assignment}/submit/"

        with transaction.atomic():
            # The submit locks its assignment row first thing: it waits for ours, mid-request.
            Assignment.objects.select_for_update().get(pk=assignment)
            pending = in_background(lambda: client.post(url, json=body, timeout=60))
            dropped = terminate_while_blocked("the submit")
        pending["thread"].join(60)
        failed = pending["value"]
        assert failed.status_code == 503, (failed.status_code, failed.text[:500], web.log())
        assert failed.json()["code"] == "database_unavailable" and "nothing was saved" in failed.json()["detail"]
        assert int(failed.headers["Retry-After"]) > 0
        # nothing half-written: no judgment, no edit response, the lease still open
        assert counts() == before
        assert Assignment.objects.get(pk=assignment).state == AssignmentState.LEASED

        retried = client.post(url, json=body, timeout=30)  # the next request: a fresh connection
        assert retried.status_code == 201, (retried.status_code, retried.text[:500], web.log())
        again = client.post(url, json=body, timeout=30)
        assert again.status_code == 200 and again.json() == {**retried.json(), "created": False}
    assert counts() == {**before, "judgments": before["judgments"] + 1, "responses": before["responses"] + 1,
                        "submitted_assignments": before["submitted_assignments"] + 1}
    assert Judgment.objects.get().idempotency_key == "submit-1"
    print(f"\nterminated {dropped} backends mid-submit: 503 with Retry-After {failed.headers['Retry-After']} s; "
          f"retry 201, second retry 200 (same judgment); counts {counts()}")


@pytest.mark.postgres
def test_a_page_whose_connection_dies_gets_a_short_503_page_and_the_next_load_works(tmp_path):
    project, labeler, _ = labeling_setup()
    browser = Client()
    browser.force_login(labeler)
    with WebServer(tmp_path=tmp_path) as web:
        session = http_client(sessionid=browser.cookies["sessionid"].value)
        assert session.get(f"{web.url}/", timeout=30).status_code == 200

        with transaction.atomic():
            # The home page lists the caller's memberships: it waits on this table lock.
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE annotation_membership IN ACCESS EXCLUSIVE MODE")
            pending = in_background(lambda: session.get(f"{web.url}/", timeout=60))
            terminate_while_blocked("the home page")
        pending["thread"].join(60)
        page = pending["value"]
        assert page.status_code == 503, (page.status_code, page.text[:500], web.log())
        assert page.headers["Content-Type"].startswith("text/html") and int(page.headers["Retry-After"]) > 0
        assert "Try again" in page.text and len(page.text) < 1000  # short: no template, no query
        assert session.get(f"{web.url}/", timeout=30).status_code == 200


@pytest.mark.postgres
def test_connections_dropped_between_requests_are_replaced_without_an_error(tmp_path):
    project, labeler, token = labeling_setup(comparisons=5)
    client = http_client(token=token)
    dropped = []
    with WebServer(tmp_path=tmp_path) as web:
        for i in range(5):
            # Each gunicorn worker keeps its connection (CONN_MAX_AGE): drop them all, then use them.
            dropped.append(terminate_other_backends())
            task = client.post(f"{web.url}/api/v1/projects/{project.slug}/next/", json={}, timeout=30)
            assert task.status_code == 200, (i, task.status_code, task.text[:300], web.log())
            result = client.post(f"{web.url}/api/v1/assignments/{task.json()['assignment']}/submit/",
                                 json={"chosen": "left", "strength": "better", "idempotency_key": f"between-{i}"}, timeout=30)
            assert result.status_code == 201, (i, result.status_code, result.text[:300], web.log())
    assert sum(dropped[1:]) >= 4  # after the first round there were live connections to drop
    assert counts()["judgments"] == counts()["submitted_assignments"] == 5
    print(f"\nbackends terminated before each of 5 next+submit pairs: {dropped}; all answered 200/201")


def test_an_unreachable_database_is_a_503_for_the_api_and_pages_and_healthz_says_why(tmp_path):
    nowhere = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    with WebServer(tmp_path=tmp_path, env={"DATABASE_URL": nowhere}) as web:
        api = http_client(token="a-token-the-database-would-check")
        listing = api.get(f"{web.url}/api/v1/projects/", timeout=30)
        assert listing.status_code == 503, (listing.status_code, listing.text[:300], web.log())
        assert listing.json()["code"] == "database_unavailable" and listing.headers["Retry-After"]
        page = http_client(sessionid="x" * 32).get(f"{web.url}/", timeout=30)  # sessions live in the database
        assert page.status_code == 503 and "Try again" in page.text
        health = api.get(f"{web.url}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["database"]["ok"] is False
