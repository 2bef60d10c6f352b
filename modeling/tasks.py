"""Celery tasks of the modeling app. Queues are routed in ``config.queues``."""

import logging
import os
import socket
import sys

from celery import shared_task

logger = logging.getLogger(__name__)


def _worker_facts() -> dict:
    from config.observability import request_id

    # request_id: the id of the request that sent this task ("-" for none): proof that tracing
    # reaches the worker. The task's own id is in every log line of the task.
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "torch_loaded": "torch" in sys.modules, "request_id": request_id()}


@shared_task(acks_late=True)  # no side effects: safe to redeliver
def ping() -> dict:
    """A round trip through the broker and a real worker (health checks, tests)."""
    logger.info("ping answered on the default queue")
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


@shared_task(acks_late=True)  # claimed (job_claim): a second delivery finds it running and skips
def sample_member_test(test_id: int) -> dict:
    """Ask one committee member one prompt (gpu queue; endpoints are sent to default)."""
    from modeling.services.members import member_test_execute

    return member_test_execute(test_id=test_id)


@shared_task(acks_late=True)  # claimed (job_claim); verdicts are unique per order and reused: safe twice
def judge_run(run_id: int) -> dict:
    """The project's judge gives its verdicts in both orders (sent to the row's queue: gpu for a
    local model, default for an endpoint; the watchdog's re-sends too)."""
    from modeling.services.judging import judge_execute

    run = judge_execute(run_id=run_id)
    return {"id": run.pk, "state": run.state, "error": run.error, "comparisons_done": run.comparisons_done,
            "consistent": run.consistent, "inconsistent": run.inconsistent, "failed": run.failed}


@shared_task(acks_late=True)  # resumable: finished steps are skipped, artifacts are renamed into place
def round_run(round_id: int) -> dict:
    """Run a retraining round's unfinished steps (routed to the gpu queue)."""
    from modeling.ml.generation import release_models
    from modeling.services import round_execute

    # Training needs the device's memory: this worker's models loaded for sampling are dropped
    # and its vLLM servers stopped; the next sampling pass loads them again.
    release_models()

    round_ = round_execute(round_id=round_id)
    return {"id": round_.pk, "state": round_.state, "error": round_.error}


@shared_task(acks_late=True)  # claimed (job_claim): a second delivery finds it running and skips
def live_turn_run(turn_id: int) -> dict:
    """Stream two members' answers to a live dialogue's turn (live queue)."""
    from modeling.services.live import live_turn_execute

    turn = live_turn_execute(turn_id=turn_id)
    return {"id": turn.pk, "state": turn.state, "error": turn.error}


@shared_task(acks_late=True)  # conditional updates only: safe to run twice
def jobs_watchdog() -> dict:
    """Jobs (rounds, sampling runs, exports) whose worker died are failed; jobs whose message was
    lost (a broker down or restarted empty) are sent again."""
    from modeling.services.watchdog import jobs_watchdog as watchdog

    return watchdog()


@shared_task(acks_late=True)  # the one-active-round constraint makes a duplicate start a no-op
def rounds_start_due() -> list:
    from modeling.services import rounds_start_due as start_due

    return start_due()


@shared_task(acks_late=True)  # each decision is taken under a row lock, once: safe to run twice
def policies_admit() -> list:
    """Round policies waiting for labelers' verdict (project rule if_humans_prefer) join the
    committee or stay out once their evaluation pairs have enough labels."""
    from modeling.services.rounds.evaluation import policies_admit as admit

    return admit()
