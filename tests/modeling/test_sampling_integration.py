"""The real SmolLM2 GGUF answers prompts on a real gpu-queue worker (CPU here), end to end, through
llama.cpp (the engine "auto" picks for a GGUF file)."""

import time

import pytest

from annotation.models import Comparison, Response, ResponseSource, Role
from annotation.services import comparison_lease_next
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
    # Every answer names its engine and how it was made.
    assert {r.engine for r in responses} == {"llama.cpp"}
    for r in responses:
        assert r.timings["queue_ms"] >= 0 and 0 < r.timings["first_token_ms"] <= r.timings["total_ms"]
        assert r.timings["tokens_per_s"] > 0
    # The queue wait counts from the run's start: the second prompt (second batch) waited for the first.
    first, second = (min(r.timings["queue_ms"] for r in responses if r.prompt_id == p) for p in sorted({r.prompt_id for r in responses}))
    assert second > first
    assert Comparison.objects.filter(project=project).count() + run.pairs_near_duplicate == 2
    assert "modeling.tasks.sample_run" in log


def test_a_sampling_runs_first_comparison_is_leasable_before_the_run_ends(tmp_path, member_of):
    """Comparisons are released per finished batch (the first prompt alone, then batches of 8),
    not at the end of the run: a labeler leases one while the worker still generates."""
    project = ProjectFactory()
    for i in range(17):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"Write a short poem about the number {i}."}])
    labeler = member_of(project, Role.LABELER)
    member_register_smollm2()
    worker = start_worker(queues="gpu", name="sampling-release", env={"DATABASE_URL": database_url_for_workers()}, log_path=tmp_path / "worker.log")
    leased_while = None
    try:
        run = sampling_start(project=project, max_new_tokens=96)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            state = SamplingRun.objects.get(pk=run.pk).state
            if state in (JobState.SUCCEEDED, JobState.FAILED):
                break
            assignment = comparison_lease_next(project=project, labeler=labeler)
            if assignment is not None:
                leased_while = SamplingRun.objects.get(pk=run.pk)
                break
            time.sleep(0.05)
        done = wait_until(lambda: SamplingRun.objects.filter(pk=run.pk, state__in=[JobState.SUCCEEDED, JobState.FAILED]).exists(), 600, 1)
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert done, log[-4000:]
    assert leased_while is not None, "no comparison could be leased before the run ended"
    assert leased_while.state == JobState.RUNNING and leased_while.prompts_done < 17
    run.refresh_from_db()
    assert run.state == JobState.SUCCEEDED and run.prompts_done == 17, (run.error, run.member_errors)
