"""Many labelers at once, on PostgreSQL with real threads: nothing over k, nothing twice, nothing lost."""

import threading
from collections import Counter

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Assignment, AssignmentState, Judgment, Role
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, PromptFactory, UserFactory

LABELERS = 50
COMPARISONS = 40
K = 3


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_fifty_labelers_never_push_a_comparison_past_k_and_lose_nothing():
    project = ProjectFactory(overlap_k=K, gold_rate=0)
    for _ in range(COMPARISONS):
        ComparisonFactory(prompt=PromptFactory(project=project))
    labelers = [UserFactory() for _ in range(LABELERS)]
    for user in labelers:
        MembershipFactory(project=project, user=user, role=Role.LABELER)

    submitted: list[tuple[int, int]] = []  # (labeler id, judgment id) the API confirmed
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(LABELERS)

    def work(user):
        client = APIClient()
        client.force_authenticate(user)
        try:
            start.wait(timeout=30)
            while True:
                task = client.post(reverse("api-next", kwargs={"slug": project.slug}), {}, format="json")
                if task.status_code == 204:
                    return
                if task.status_code != 200:
                    raise AssertionError(f"next: {task.status_code} {task.content[:200]}")
                assignment = task.json()["assignment"]
                result = client.post(
                    reverse("api-submit", kwargs={"assignment_id": assignment}),
                    {"chosen": "left", "strength": "better", "idempotency_key": f"{user.pk}-{assignment}"},
                    format="json",
                )
                if result.status_code != 201:
                    raise AssertionError(f"submit: {result.status_code} {result.content[:200]}")
                with lock:
                    submitted.append((user.pk, result.json()["judgment"]))
        except Exception as exc:  # collected and asserted below, with the thread's message
            with lock:
                errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(user,)) for user in labelers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)

    assert errors == []
    per_comparison = Counter(Judgment.objects.values_list("comparison_id", flat=True))
    assert max(per_comparison.values()) <= K
    assert len(per_comparison) == COMPARISONS and sum(per_comparison.values()) == COMPARISONS * K
    pairs = list(Judgment.objects.values_list("labeler_id", "comparison_id"))
    assert len(pairs) == len(set(pairs))
    # every judgment a labeler was told about is in the table, and nothing else is
    assert sorted(j for _, j in submitted) == sorted(Judgment.objects.values_list("id", flat=True))
    assert not Assignment.objects.filter(state=AssignmentState.LEASED).exists()
