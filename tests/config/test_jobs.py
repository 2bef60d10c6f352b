"""A broker that is down when a job is queued delays the job; it neither fails the request nor
loses the job (config.jobs, and the watchdog's re-send)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError
from rest_framework.test import APIClient

from annotation import tasks as annotation_tasks
from annotation.models import DatasetSnapshot, JobState, Role
from config.jobs import jobs_resend_lost
from modeling import tasks as modeling_tasks
from modeling.models import Round, RoundState, SamplingRun
from modeling.services.watchdog import jobs_watchdog

pytestmark = pytest.mark.django_db


class Broker:
    """Stands in for ``task.delay``: down (raises as kombu does) or up (records the message)."""

    def __init__(self):
        self.down, self.sent = True, []

    def for_task(self, name):
        def delay(*args):
            if self.down:
                raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            self.sent.append((name, *args))

        return delay


@pytest.fixture
def broker(monkeypatch):
    broker = Broker()
    monkeypatch.setattr(annotation_tasks.export_run, "delay", broker.for_task("export_run"))
    monkeypatch.setattr(modeling_tasks.sample_run, "delay", broker.for_task("sample_run"))
    monkeypatch.setattr(modeling_tasks.round_run, "delay", broker.for_task("round_run"))
    return broker


def test_an_export_asked_for_while_the_broker_is_down_is_queued_then_resent(broker, member_of, project, django_capture_on_commit_callbacks, caplog):
    lead = member_of(project, Role.LEAD)
    api = APIClient()
    api.force_authenticate(lead)
    with django_capture_on_commit_callbacks(execute=True):
        answer = api.post(reverse("api-exports", args=[project.slug]), {"format": "raw"}, format="json")
    assert answer.status_code == 202 and answer.json()["state"] == "queued"
    snapshot = DatasetSnapshot.objects.get()
    assert "broker unreachable" in caplog.text and broker.sent == []
    # The watchdog leaves it alone for 10 minutes, then sends it again, once per 10 minutes.
    broker.down = False
    assert jobs_resend_lost(DatasetSnapshot) == []
    later = timezone.now() + timedelta(minutes=11)
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_resend_lost(DatasetSnapshot, now=later) == [snapshot.pk]
    assert jobs_resend_lost(DatasetSnapshot, now=later + timedelta(minutes=1)) == []
    assert broker.sent == [("export_run", snapshot.pk)]
    assert jobs_resend_lost(DatasetSnapshot, now=later + timedelta(minutes=11)) == [snapshot.pk]
    # a finished export is never resent
    DatasetSnapshot.objects.filter(pk=snapshot.pk).update(state=JobState.SUCCEEDED)
    assert jobs_resend_lost(DatasetSnapshot, now=later + timedelta(hours=2)) == []


def test_lost_sampling_and_round_messages_are_resent(broker, project, django_capture_on_commit_callbacks):
    run = SamplingRun.objects.create(project=project)
    round_ = Round.objects.create(project=project, number=1)
    broker.down = False
    later = timezone.now() + timedelta(minutes=11)
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_resend_lost(SamplingRun, now=later) == [run.pk]
        assert jobs_resend_lost(SamplingRun, now=later + timedelta(minutes=1)) == []
        assert jobs_watchdog(now=later)["round"]["resent"] == [round_.pk]
        assert jobs_watchdog(now=later + timedelta(minutes=1))["round"]["resent"] == []
        # a second loss is covered too: sent again a period after the last re-send
        assert jobs_watchdog(now=later + timedelta(minutes=11))["round"]["resent"] == [round_.pk]
    # The watchdog re-sends every kind of job alike: the sampling run's second loss too.
    assert broker.sent == [("sample_run", run.pk), ("round_run", round_.pk), ("round_run", round_.pk), ("sample_run", run.pk)]
    Round.objects.filter(pk=round_.pk).update(state=RoundState.SUCCEEDED)
    assert jobs_watchdog(now=later + timedelta(hours=1))["round"]["resent"] == []
