"""Only one round per project runs at a time, enforced by the database even under a race."""

import threading

import pytest
from django.db import IntegrityError, connection, transaction

from modeling.models import Round, RoundState
from tests.factories import ProjectFactory


@pytest.mark.django_db
def test_a_second_active_round_in_a_project_is_refused_but_finished_ones_do_not_count():
    project = ProjectFactory()
    Round.objects.create(project=project, number=1, state=RoundState.SUCCEEDED)
    Round.objects.create(project=project, number=2, state=RoundState.TRAINING_RM)
    with pytest.raises(IntegrityError), transaction.atomic():
        Round.objects.create(project=project, number=3, state=RoundState.QUEUED)
    Round.objects.create(project=ProjectFactory(), number=1, state=RoundState.QUEUED)  # another project


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_admins_starting_a_round_at_the_same_moment_get_one_round():
    project = ProjectFactory()
    barrier = threading.Barrier(2)
    outcomes = []

    def start(number):
        try:
            with transaction.atomic():
                barrier.wait(timeout=10)
                Round.objects.create(project=project, number=number, state=RoundState.QUEUED)
            outcomes.append("created")
        except IntegrityError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created", "refused"]
    assert Round.objects.filter(project=project).count() == 1
