"""A real worker process consumes tasks from the configured broker (Redis in CI, files here)."""

import pytest
from django.conf import settings

from modeling.tasks import ping, ping_gpu
from tests.processes import start_worker, stop

pytestmark = pytest.mark.slow


def test_a_real_worker_answers_on_the_default_and_gpu_queues(tmp_path):
    worker = start_worker(queues="default,gpu", name="roundtrip", log_path=tmp_path / "worker.log")
    try:
        reply = ping.delay().get(timeout=60)
        gpu_reply = ping_gpu.delay().get(timeout=120)
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert reply["pid"] == worker.pid, log[-3000:]
    assert reply["queue"] == "default" and reply["torch_loaded"] is False
    assert reply["request_id"] == "-"  # sent outside any request
    assert gpu_reply["pid"] == worker.pid
    assert gpu_reply["device"]["device"] in {"cpu", "cuda"}
    assert "modeling.tasks.ping" in log
    # the transport this round trip went over is the one the settings name (Redis in CI)
    assert settings.CELERY_BROKER_URL.split("://")[0] in log


def test_a_task_carries_the_id_of_the_request_that_sent_it_into_the_workers_log(tmp_path):
    from config import observability

    worker = start_worker(queues="default", name="traced", log_path=tmp_path / "worker.log")
    token = observability._request_id.set("req-trace-42")  # what RequestContextMiddleware sets
    try:
        result = ping.delay()
        reply = result.get(timeout=60)
    finally:
        observability._request_id.reset(token)
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert reply["request_id"] == "req-trace-42", log[-3000:]
    assert f"[req=req-trace-42 task={result.id}] ping answered on the default queue" in log
