"""Leases a labeler walked away from go back to the pool through the real schedule: celery beat
sends ``expire-stale-leases`` (CELERY_BEAT_SCHEDULE) to a real worker, which ends them.

The service rules (an expired lease cannot submit or skip, the queue also sweeps on demand) are
tested in tests/annotation/test_labeling.py and test_labeling_api.py; this is the wiring: the
schedule names a registered task, on the queue a worker listens to, and it runs unprompted.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from annotation.models import Assignment, AssignmentState, Comparison, Role
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, PromptFactory, UserFactory
from tests.faults.support import counts, start_beat, wait_for
from tests.processes import database_url_for_workers, start_worker, stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EVERY_S = 5  # ARBITER_EXPIRE_LEASES_EVERY_S's minimum


def test_beat_and_a_worker_return_abandoned_leases_to_the_pool_and_counts_stay_exact(tmp_path):
    project = ProjectFactory(gold_rate=0, overlap_k=1, max_live_leases=3)
    for _ in range(6):
        ComparisonFactory(prompt=PromptFactory(project=project))
    walked_away, other = UserFactory(), UserFactory()
    clients = {}
    for user in (walked_away, other):
        MembershipFactory(project=project, user=user, role=Role.LABELER)
        clients[user] = APIClient()
        clients[user].force_authenticate(user)
    next_url = f"/api/v1/projects/{project.slug}/next/"

    abandoned = []
    for _ in range(3):  # the page prefetches: three leases held, none submitted
        abandoned.append(clients[walked_away].post(next_url, {"exclude": abandoned}, format="json").json()["assignment"])
    # Half an hour later, the leases have run out; nothing has asked for work since.
    Assignment.objects.filter(pk__in=abandoned).update(
        leased_at=timezone.now() - timedelta(minutes=45), expires_at=timezone.now() - timedelta(minutes=15)
    )
    assert set(Comparison.objects.filter(assignments__in=abandoned).values_list("slots_taken", flat=True)) == {1}

    env = {"DATABASE_URL": database_url_for_workers(), "ARBITER_EXPIRE_LEASES_EVERY_S": str(EVERY_S)}
    worker = start_worker(queues="default", name="leases", env=env, log_path=tmp_path / "worker.log")
    beat = start_beat(tmp_path, env)
    try:
        wait_for(
            lambda: Assignment.objects.filter(pk__in=abandoned, state=AssignmentState.EXPIRED).count() == 3, 90,
            "beat + worker expiring the leases",
            lambda: (tmp_path / "beat.log").read_text()[-2000:] + (tmp_path / "worker.log").read_text()[-2000:],
        )
    finally:
        stop(beat)
        stop(worker)
    assert "Sending due task expire-stale-leases (annotation.tasks.assignments_expire)" in (tmp_path / "beat.log").read_text()
    assert "annotation.tasks.assignments_expire" in (tmp_path / "worker.log").read_text()
    # the slots are back in the pool
    assert set(Comparison.objects.filter(assignments__in=abandoned).values_list("slots_taken", flat=True)) == {0}

    # the labeler who came back cannot submit on an expired lease, and it writes nothing
    late = clients[walked_away].post(f"/api/v1/assignments/{abandoned[0]}/submit/", {"chosen": "left", "strength": "better"}, format="json")
    assert late.status_code == 409 and late.json()["error"] == "lease_expired"
    # another labeler gets every comparison, the abandoned three included, and judges them all
    judged = []
    while (task := clients[other].post(next_url, {}, format="json")).status_code == 200:
        result = clients[other].post(f"/api/v1/assignments/{task.json()['assignment']}/submit/",
                                     {"chosen": "right", "strength": "better"}, format="json")
        assert result.status_code == 201
        judged.append(task.json()["assignment"])
    assert task.status_code == 204 and len(judged) == 6
    assert counts() == {"judgments": 6, "responses": 12, "comparisons": 6, "submitted_assignments": 6}
    assert Assignment.objects.filter(state=AssignmentState.EXPIRED).count() == 3
    assert clients[walked_away].post(next_url, {}, format="json").status_code == 204  # all judged by k=1
