"""The real SmolLM2 GGUF answers prompts on a real gpu-queue worker (CPU here), end to end."""

import pytest

from annotation.models import Comparison, Response, ResponseSource
from modeling.models import JobState, SamplingRun
from modeling.services import member_register_smollm2, sampling_start
from tests.factories import ProjectFactory, PromptFactory
from tests.processes import database_url_for_workers, start_worker, stop, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_smollm2_answers_on_a_real_worker_and_pairs_appear(tmp_path):
    project = ProjectFactory()
    PromptFactory(project=project, messages=[{"role": "user", "content": "Name a fruit that is yellow."}])
    PromptFactory(project=project, messages=[
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ])
    member_register_smollm2()
    worker = start_worker(queues="gpu", name="sampling-it", env={"DATABASE_URL": database_url_for_workers()}, log_path=tmp_path / "worker.log")
    try:
        run = sampling_start(project=project, max_new_tokens=24)  # sent to the broker on commit
        done = wait_until(
            lambda: SamplingRun.objects.filter(pk=run.pk, state__in=[JobState.SUCCEEDED, JobState.FAILED]).exists(), 600, 1
        )
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert done, log[-4000:]
    run.refresh_from_db()
    assert run.state == JobState.SUCCEEDED, (run.error, run.member_errors, log[-3000:])
    assert run.prompts_done == 2 and run.responses_created == 4
    responses = Response.objects.filter(source=ResponseSource.MODEL)
    assert all(r.text.strip() and 0 < r.completion_tokens <= 24 for r in responses)
    assert {r.member.name for r in responses} == {"SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct (t=1.0)"}
    assert Comparison.objects.filter(project=project).count() + run.pairs_near_duplicate == 2
    assert "modeling.tasks.sample_run" in log
