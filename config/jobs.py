"""Jobs: a database row is the job (``Job``: a Round, a SamplingRun, a DatasetSnapshot, a
MemberTest, and every job the next features add); its Celery message only says "look at row N".

- Queued: the row is written QUEUED, and its message is sent once the row is committed
  (``send_after_commit``). A broker that is down delays the job; the request still answers 202.
- Claimed: a worker takes the row with ``job_claim``, one conditional UPDATE. Two deliveries of one
  message (Redis redelivers after its visibility timeout, the watchdog re-sends, two workers take
  the same message) race on that UPDATE and exactly one wins.
- Alive: the running worker touches ``heartbeat_at`` while it works.
- Watched: ``jobs_fail_stale`` fails a running row whose heartbeat stopped (its worker died) and
  ``jobs_resend_lost`` re-sends the message of a row still queued a while after it was created or
  last re-sent; ``modeling.tasks.jobs_watchdog`` runs both for every kind of job, every minute.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

logger = logging.getLogger(__name__)


class JobState(models.TextChoices):
    """States of a job. A round names its running state by step (snapshot, training_rm, ...)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """The columns every job has; each job declares its own ``state`` field and the class
    settings below."""

    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the watchdog last re-sent the message of this row while it stayed queued.
    resent_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Claims won: 1 for a job that ran once; more after a resumed or retried run.
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)

    #: The Celery task that runs the job, given the row's id (for re-sends).
    job_task = ""
    #: A column naming the queue a row's message goes to, when it is not the task's route.
    job_queue_field: str | None = None
    #: States of a job a worker is on (a round has one per step).
    running_states: tuple = (JobState.RUNNING,)
    #: A running job whose heartbeat is older than this lost its worker.
    stale_after = timedelta(minutes=10)
    #: A queued job older than this (or re-sent this long ago) lost its message.
    lost_after = timedelta(minutes=10)
    #: Said on a job failed by the watchdog.
    stale_error = "worker lost: no heartbeat for over {minutes} minutes"

    class Meta:
        abstract = True


def job_claim(model: type[Job], pk: int, *, to_state: str = JobState.RUNNING, resume_stale: bool = False, now=None) -> bool:
    """Take job ``pk`` for this worker: True when this caller won it.

    One conditional UPDATE: the row moves from QUEUED (or, with ``resume_stale``, from a running
    state whose heartbeat is older than ``model.stale_after``) to ``to_state``. It closes the race
    of two deliveries of one message: both UPDATEs target the row, the database serialises them,
    and the second no longer matches its WHERE (PostgreSQL re-checks it after the first commits;
    SQLite runs one writer at a time), so it changes 0 rows and that caller leaves the job alone.
    """
    now = now or timezone.now()
    claimable = Q(state=JobState.QUEUED)
    if resume_stale:
        claimable |= Q(state__in=model.running_states, heartbeat_at__lt=now - model.stale_after)
    return bool(model.objects.filter(claimable, pk=pk).update(
        state=to_state, started_at=Coalesce("started_at", now), heartbeat_at=now, attempts=F("attempts") + 1,
    ))


def jobs_fail_stale(model: type[Job], *, now=None) -> list[int]:
    """Fail the running jobs of ``model`` whose worker stopped beating; returns their ids."""
    now = now or timezone.now()
    stale = Q(state__in=model.running_states, heartbeat_at__lt=now - model.stale_after)
    ids = list(model.objects.filter(stale).values_list("id", flat=True))
    error = model.stale_error.format(minutes=int(model.stale_after.total_seconds() // 60))
    # The same condition again: a job that beat (or finished) since the read above is left alone.
    return [pk for pk in ids if model.objects.filter(stale, pk=pk).update(state=JobState.FAILED, finished_at=now, error=error)]


def jobs_resend_lost(model: type[Job], *, now=None) -> list[int]:
    """Re-send the message of ``model``'s jobs still queued ``lost_after`` their creation or their
    last re-send: it was lost with a broker that was down or restarted empty. A duplicate message
    is harmless: ``job_claim`` lets one delivery run the job."""
    from django.utils.module_loading import import_string

    now = now or timezone.now()
    lost = Q(state=JobState.QUEUED, created_at__lt=now - model.lost_after) & (
        Q(resent_at__isnull=True) | Q(resent_at__lt=now - model.lost_after)
    )
    field = model.job_queue_field
    rows = list(model.objects.filter(lost).values_list("id", field or "id"))
    resent = [(pk, queue) for pk, queue in rows if model.objects.filter(lost, pk=pk).update(resent_at=now)]
    task = import_string(model.job_task)
    for pk, queue in resent:
        send_after_commit(task, pk, queue=queue if field else None)
    return [pk for pk, _ in resent]


def send_after_commit(task, *args, queue: str | None = None) -> None:
    """``queue``: send to this queue instead of the task's route (config/queues.py)."""
    from django.db import transaction

    def send():
        try:
            task.apply_async(args, queue=queue) if queue else task.delay(*args)
        except Exception:  # kombu raises several types for a broker that is down; all mean the same here
            logger.exception("could not queue %s%r: broker unreachable; the watchdog re-sends it", task.name, args)

    transaction.on_commit(send)
