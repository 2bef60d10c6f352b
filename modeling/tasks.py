"""Celery tasks of the modeling app. Queues are routed in ``config.queues``."""

import os
import socket
import sys

from celery import shared_task


def _worker_facts() -> dict:
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "torch_loaded": "torch" in sys.modules}


@shared_task(acks_late=True)  # no side effects: safe to redeliver
def ping() -> dict:
    """A round trip through the broker and a real worker (health checks, tests)."""
    return {"queue": "default", **_worker_facts()}


@shared_task(acks_late=True)
def ping_gpu() -> dict:
    """The same through the ``gpu`` queue, reporting the device the worker would train on."""
    from modeling.ml.devices import describe_device

    return {"queue": "gpu", "device": describe_device(), **_worker_facts()}


@shared_task(acks_late=True)  # idempotent: responses are unique per (prompt, member, index) and reused
def sample_run(run_id: int) -> dict:
    """Generate the committee's answers for a sampling run (routed to the gpu queue)."""
    from modeling.selectors import sampling_progress
    from modeling.services import sampling_execute

    return sampling_progress(run=sampling_execute(run_id=run_id))
