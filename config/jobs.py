"""Queue a job's Celery message once its row is committed, without making the request depend on
the broker.

The job's row (DatasetSnapshot, SamplingRun, Round) is the job: it is written QUEUED first. If
the broker is down when the message is sent, the request still answers 202 with the queued row
and the watchdog (``modeling.tasks.rounds_watchdog``) re-sends messages of rows that stayed
QUEUED, so a broker outage delays a job; it never loses one or turns a click into a 500.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def send_after_commit(task, *args, queue: str | None = None) -> None:
    """``queue``: send to this queue instead of the task's route (config/queues.py)."""
    from django.db import transaction

    def send():
        try:
            task.apply_async(args, queue=queue) if queue else task.delay(*args)
        except Exception:  # kombu raises several types for a broker that is down; all mean the same here
            logger.exception("could not queue %s%r: broker unreachable; the watchdog re-sends it", task.name, args)

    transaction.on_commit(send)
