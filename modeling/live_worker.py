"""The ``live`` worker's heartbeat and warm-up, hooked on Celery's worker signals.

A worker that consumes the ``live`` queue writes ``LiveWorker.beat_at`` every
``WORKER_BEAT_S`` from a thread of its main process, and removes its row when it stops, so the
live page says at once when nobody would answer. At start it loads the active committee members'
models (the answers of the first dialogue then wait for no load), and keeps them loaded: the
backends are cached per process (``modeling.ml.generation.backend_for``), which is the worker's
only process (``--pool threads``).
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_ready, worker_shutdown

from config.queues import LIVE_QUEUE

logger = logging.getLogger(__name__)

_state: dict = {"hostname": None, "stop": threading.Event()}


def _consumes_live(consumer) -> bool:
    try:
        return any(q.name == LIVE_QUEUE for q in consumer.task_consumer.queues)
    except AttributeError:
        return False


def _warm() -> None:
    from modeling.models import CommitteeMember, MemberKind
    from modeling.services.live import _LOAD
    from modeling.services.sampling import default_backend_loader

    for member in CommitteeMember.objects.filter(is_active=True).exclude(kind=MemberKind.ENDPOINT).order_by("id"):
        try:
            with _LOAD:
                default_backend_loader(member)
            logger.info("live worker: %s loaded", member.name)
        except Exception as exc:  # a member that cannot load fails its own turns, with the reason
            logger.warning("live worker: %s did not load: %s", member.name, exc)


def _beat(hostname: str, stop: threading.Event) -> None:
    from django.db import close_old_connections, connection
    from django.utils import timezone

    from modeling.services.live import WORKER_BEAT_S, live_worker_beat

    started = timezone.now()
    while not stop.is_set():
        try:
            close_old_connections()
            live_worker_beat(hostname=hostname, started_at=started)
        except Exception as exc:  # a database hiccup: the next beat tries again
            logger.warning("live worker heartbeat failed: %s", exc)
        stop.wait(WORKER_BEAT_S)
    connection.close()


@worker_ready.connect
def _on_ready(sender=None, **kwargs):
    if not _consumes_live(sender):
        return
    hostname = sender.hostname
    _state["hostname"] = hostname
    threading.Thread(target=_beat, args=(hostname, _state["stop"]), daemon=True, name="live-heartbeat").start()
    threading.Thread(target=_warm, daemon=True, name="live-warm").start()


@worker_shutdown.connect
def _on_shutdown(sender=None, **kwargs):
    hostname = _state["hostname"]
    if hostname is None:
        return
    _state["stop"].set()
    try:
        from modeling.services.live import live_worker_gone

        live_worker_gone(hostname=hostname)
    except Exception as exc:
        logger.warning("live worker: could not remove its heartbeat: %s", exc)
