"""One job, one runner: two deliveries of one job's message race on ``config.jobs.job_claim`` and
exactly one runs the job. Before the claim, an export already RUNNING was taken again, so a re-sent
message started a second writer on the same file."""

import threading
import time

import pytest
from django.db import connection

from annotation.models import DatasetSnapshot, JobState
from annotation.services import exports as export_service
from config.jobs import job_claim
from modeling.models import Round, RoundState, SamplingRun
from tests.factories import JudgmentFactory, ProjectFactory


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_export_delivered_twice_to_two_workers_runs_one_writer(monkeypatch, tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path
    monkeypatch.setattr("annotation.tasks.export_run.delay", lambda *args: None)  # the test is the two workers
    project = ProjectFactory()
    for _ in range(3):
        JudgmentFactory(assignment__comparison__prompt__project=project)
    snapshot = export_service.export_start(project=project, format="raw")

    writers, errors = [], []
    write = export_service._write_jsonl

    def slow_write(rows, path, stats):
        writers.append(threading.get_ident())
        time.sleep(0.5)  # the second worker arrives while the first writes
        return write(rows, path, stats)

    monkeypatch.setattr(export_service, "_write_jsonl", slow_write)
    start = threading.Barrier(2)

    def worker():
        try:
            start.wait(timeout=10)
            export_service.export_execute(snapshot_id=snapshot.pk)
        except Exception as exc:  # asserted below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(writers) == 1
    snapshot.refresh_from_db()
    assert snapshot.state == JobState.SUCCEEDED and snapshot.row_count == 3 and snapshot.attempts == 1
    files = sorted(p.name for p in (tmp_path / project.slug / "exports").iterdir())
    assert files == [f"export-{snapshot.pk}-raw.README.md", f"export-{snapshot.pk}-raw.jsonl"]  # no second writer's .tmp
    # a third delivery, after the end, changes nothing either
    export_service.export_execute(snapshot_id=snapshot.pk)
    assert len(writers) == 1


@pytest.mark.django_db
def test_a_claim_takes_a_queued_job_once_and_a_stale_running_one_only_when_asked():
    from datetime import timedelta

    from django.utils import timezone

    project = ProjectFactory()
    run = SamplingRun.objects.create(project=project)
    assert job_claim(SamplingRun, run.pk) and not job_claim(SamplingRun, run.pk)
    run.refresh_from_db()
    assert run.state == JobState.RUNNING and run.attempts == 1 and run.started_at and run.heartbeat_at
    first_start = run.started_at
    # Its worker died: the heartbeat stopped. Resuming takes it over (started_at is kept).
    SamplingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=11))
    assert not job_claim(SamplingRun, run.pk)
    assert job_claim(SamplingRun, run.pk, resume_stale=True)
    run.refresh_from_db()
    assert run.attempts == 2 and run.started_at == first_start
    # A round is claimed into the step it starts with.
    round_ = Round.objects.create(project=project, number=1)
    assert job_claim(Round, round_.pk, to_state=RoundState.SNAPSHOT)
    assert Round.objects.get(pk=round_.pk).state == RoundState.SNAPSHOT


@pytest.mark.django_db
def test_the_watchdog_fails_an_export_whose_worker_died():
    from datetime import timedelta

    from django.utils import timezone

    from modeling.services.watchdog import jobs_watchdog

    snapshot = DatasetSnapshot.objects.create(project=ProjectFactory(), format="raw", state=JobState.QUEUED)
    assert job_claim(DatasetSnapshot, snapshot.pk)
    report = jobs_watchdog(now=timezone.now() + timedelta(minutes=11))
    assert report["datasetsnapshot"]["failed_stale"] == [snapshot.pk]
    snapshot.refresh_from_db()
    assert snapshot.state == JobState.FAILED and "worker lost" in snapshot.error and "export again" in snapshot.error
