"""Redis killed and restarted while labelers work through a real web process: labeling never
touches the broker, so every lease and submit succeeds and every label is stored once.

The web process (gunicorn) gets a private redis-server as its broker and result backend; /healthz
reporting the broker down and back up proves the web process really is wired to that server.
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotation.models import Assignment, AssignmentState, Judgment, Response, ResponseSource, Role
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    UserFactory,
)
from tests.faults.support import RedisServer, WebServer, counts, http_client, start_beat, wait_for
from tests.processes import database_url_for_workers, start_worker, stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

COMPARISONS = 30


def broker_ok(web) -> bool:
    body = http_client().get(f"{web.url}/healthz", timeout=10).json()
    return body["broker"]["ok"]


def test_labelers_keep_leasing_and_submitting_while_redis_is_down_and_nothing_is_lost(tmp_path):
    project = ProjectFactory(gold_rate=0, overlap_k=1, max_live_leases=5, max_edit_chars=1000)
    for _ in range(COMPARISONS):
        ComparisonFactory(prompt=PromptFactory(project=project))
    labelers = [UserFactory() for _ in range(3)]
    for user in labelers:
        MembershipFactory(project=project, user=user, role=Role.LABELER)
    clients = [http_client(token=Token.objects.create(user=user).key) for user in labelers]
    before = counts()

    submitted: list[dict] = []  # what the API confirmed
    timings: dict[str, list[float]] = {"up": [], "down": [], "restarted": []}

    def lease(client, exclude=()) -> int:
        task = client.post(f"{web.url}/api/v1/projects/{project.slug}/next/", json={"exclude": list(exclude)}, timeout=30)
        assert task.status_code == 200, (task.status_code, task.text[:300], web.log())
        return task.json()["assignment"]

    def submit(client, assignment: int, phase: str) -> None:
        edit = f"An improved answer, written while the broker was {phase}." if assignment % 2 else None
        started = time.perf_counter()
        result = client.post(
            f"{web.url}/api/v1/assignments/{assignment}/submit/",
            json={"chosen": "left", "strength": "better", "edit": edit, "idempotency_key": f"k-{assignment}"},
            timeout=30,
        )
        timings[phase].append(time.perf_counter() - started)
        assert result.status_code == 201, (phase, result.status_code, result.text[:300], web.log())
        submitted.append({"judgment": result.json()["judgment"], "edited": result.json()["edited"]})

    with RedisServer(tmp_path) as redis, WebServer(tmp_path=tmp_path, env={"CELERY_BROKER_URL": redis.url, "CELERY_RESULT_BACKEND": redis.url}) as web:
        assert broker_ok(web)
        # up: six leases taken (two per labeler, as the page prefetches), three of them submitted
        held = []
        for i in range(6):
            held.append((i % 3, lease(clients[i % 3], exclude=[a for who, a in held if who == i % 3])))
        for who, assignment in held[:3]:
            submit(clients[who], assignment, "up")

        redis.kill()
        wait_for(lambda: not broker_ok(web), 30, "healthz seeing the broker down")
        # down: the three leases taken before the kill are submitted, then twelve more next + submit
        for who, assignment in held[3:]:
            submit(clients[who], assignment, "down")
        for i in range(12):
            submit(clients[i % 3], lease(clients[i % 3]), "down")
        assert not broker_ok(web)  # still down: the labels above did not wait for it

        redis.start()  # same port, empty: a restart loses whatever the broker held, never a label
        wait_for(lambda: broker_ok(web), 30, "healthz seeing the broker back")
        while True:  # restarted: the rest of the queue, until there is nothing left to label
            who = len(submitted) % 3
            task = clients[who].post(f"{web.url}/api/v1/projects/{project.slug}/next/", json={}, timeout=30)
            if task.status_code == 204:
                break
            assert task.status_code == 200, (task.status_code, task.text[:300])
            submit(clients[who], task.json()["assignment"], "restarted")

    edits = sum(s["edited"] for s in submitted)
    assert len(submitted) == COMPARISONS and [len(timings[p]) for p in ("up", "down", "restarted")] == [3, 15, 12]
    assert sorted(s["judgment"] for s in submitted) == sorted(Judgment.objects.values_list("id", flat=True))
    assert counts() == {
        "judgments": COMPARISONS,
        "responses": before["responses"] + edits,
        "comparisons": before["comparisons"],
        "submitted_assignments": COMPARISONS,
    }
    assert Response.objects.filter(source=ResponseSource.HUMAN_EDIT).count() == edits > 0
    assert not Assignment.objects.exclude(state=AssignmentState.SUBMITTED).exists()
    slowest = {phase: round(max(t) * 1000) for phase, t in timings.items()}
    print(f"\n{len(submitted)} submits (3 up, 15 down, 12 after restart), {edits} edits; slowest submit ms {slowest}; counts {counts()}")


def test_beat_and_a_worker_reconnect_after_redis_restarts_and_the_schedule_goes_on(tmp_path):
    """Beat sends the lease sweep every 5 s to a worker, both on a private Redis that is killed and
    restarted empty; what the sweep did shows in the database."""
    def stale_lease():
        past = timezone.now() - timedelta(hours=1)
        return AssignmentFactory(leased_at=past - timedelta(minutes=30), expires_at=past)

    def swept(lease) -> bool:
        return Assignment.objects.filter(pk=lease.pk, state=AssignmentState.EXPIRED).exists()

    log = tmp_path / "worker.log"
    with RedisServer(tmp_path) as redis:
        env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": redis.url, "CELERY_RESULT_BACKEND": redis.url,
               "ARBITER_EXPIRE_LEASES_EVERY_S": "5"}
        worker = start_worker(queues="default", name="reconnects", env=env, log_path=log)
        beat = start_beat(tmp_path, env)
        logs = lambda: log.read_text()[-2000:] + (tmp_path / "beat.log").read_text()[-2000:]  # noqa: E731
        try:
            before = stale_lease()
            wait_for(lambda: swept(before), 60, "the sweep before the restart", logs)
            redis.kill()
            wait_for(lambda: "Connection to broker lost" in log.read_text(), 30, "the worker noticing", logs)
            redis.start()  # empty: queued messages and queue bindings are gone
            restarted = time.perf_counter()
            after = stale_lease()
            wait_for(lambda: swept(after), 60, "the sweep after the restart", logs)
            took = time.perf_counter() - restarted
        finally:
            stop(beat)
            stop(worker)
    print(f"\nbeat and worker went on after the Redis restart: the next sweep ran {took:.1f} s after it")
