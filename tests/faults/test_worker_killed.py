"""A gpu worker SIGKILLed mid-sampling: the pass finishes on another worker, and the project ends
with exactly the responses and comparisons one uninterrupted pass makes.

The committee is the tiny model (tests/modeling/tiny.py, greedy) and an OpenAI-compatible
endpoint that holds its 8th request: the worker is killed while it waits for that answer, with
7 of the endpoint's answers written. (A worker killed mid-round: tests/modeling/test_rounds_integration.py.)
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Comparison, Response, ResponseSource
from modeling.models import JobState, MemberKind, SamplingRun
from modeling.services import sampling_start
from modeling.services.sampling import sampling_execute
from modeling.tasks import jobs_watchdog
from tests.factories import MemberFactory, ProjectFactory, PromptFactory
from tests.faults.support import broker_is_redis, counts, endpoint_holding_request, kill, redeliver_unacked, wait_for
from tests.processes import database_url_for_workers, start_worker, stop

HELD = 8  # the endpoint request the killed worker is waiting on


def make_project(prompts: int):
    project = ProjectFactory()
    for i in range(prompts):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"Write step {i} of the answer, brief."}])
    return project


def make_committee(tiny_model_dir, endpoint_url: str):
    MemberFactory(name="tiny", model_path=str(tiny_model_dir), generation={"temperature": 0.0, "max_new_tokens": 8})
    MemberFactory(
        name="remote", kind=MemberKind.ENDPOINT, model_path="", base_url=endpoint_url, endpoint_model="served",
        max_retries=0, timeout_s=120,
    )


def model_responses():
    return Response.objects.filter(source=ResponseSource.MODEL)


def gpu_worker(name, tmp_path, queues="gpu"):
    return start_worker(queues=queues, name=name, env={"DATABASE_URL": database_url_for_workers()}, log_path=tmp_path / f"{name}.log")


def kill_when_held(worker, server, run, tmp_path, name):
    """Wait until the worker is blocked on the held request, SIGKILL it, return the counts then."""
    wait_for(server.held.is_set, 180, "the worker reaching the held request", lambda: (tmp_path / f"{name}.log").read_text()[-3000:])
    kill(worker)
    run.refresh_from_db()
    assert run.state == JobState.RUNNING  # nothing got to say otherwise
    at_kill = counts()
    assert model_responses().filter(member__name="remote").count() == HELD - 1
    assert 0 < at_kill["responses"] < 40 and 0 < at_kill["comparisons"] < 20
    return at_kill


def assert_one_complete_pass(project, prompts):
    """20 prompts, two members: 40 responses, one comparison per prompt, nothing twice."""
    responses = model_responses()
    assert responses.count() == 40
    assert len(set(responses.values_list("prompt_id", "member_id", "sample_index"))) == 40
    per_prompt = list(Comparison.objects.filter(project=project).values_list("prompt_id", flat=True))
    assert sorted(per_prompt) == sorted(p.pk for p in prompts)  # each of them once, no other prompt
    assert counts() == {"judgments": 0, "responses": 40, "comparisons": 20, "submitted_assignments": 0}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not broker_is_redis(), reason="the filesystem broker drops a message on delivery; nothing to redeliver")
def test_a_sampling_message_redelivered_after_its_worker_was_killed_finishes_the_pass_exactly(tiny_model_dir, tmp_path):
    project = make_project(24)
    wanted = list(project.prompts.order_by("id")[:20])  # the pass is limited to the 20 oldest
    with endpoint_holding_request(HELD) as server:
        make_committee(tiny_model_dir, server.url)
        first = gpu_worker("killed", tmp_path)
        try:
            run = sampling_start(project=project, limit=20, batch_size=1)
            at_kill = kill_when_held(first, server, run, tmp_path, "killed")
        finally:
            stop(first)
        # An hour on: the visibility timeout has passed (Redis hands the message to the next
        # worker) and the run's heartbeat is as old; no watchdog ran meanwhile (beat was down too).
        SamplingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        assert redeliver_unacked(task="modeling.tasks.sample_run", args=(run.pk,)) == 1
        second = gpu_worker("redelivered", tmp_path)
        try:
            wait_for(lambda: SamplingRun.objects.filter(pk=run.pk, state=JobState.SUCCEEDED).exists(), 180,
                     "the redelivered pass", lambda: (tmp_path / "redelivered.log").read_text()[-3000:])
        finally:
            stop(second)
    run.refresh_from_db()
    assert_one_complete_pass(project, wanted)
    # what the run reports is what it did, across both workers
    assert (run.prompts_done, run.prompts_total, run.responses_created, run.pairs_created) == (20, 20, 40, 20)
    # the endpoint answered each prompt once, plus the one request lost with the killed worker
    assert server.calls == 20 + 1
    print(f"\nkilled at {at_kill}; redelivered; after: {counts()}; endpoint calls {server.calls}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sampling_run_whose_worker_was_killed_is_failed_by_the_watchdog_and_a_new_pass_finishes_it(tiny_model_dir, tmp_path):
    project = make_project(20)
    with endpoint_holding_request(HELD) as server:
        make_committee(tiny_model_dir, server.url)
        first = gpu_worker("killed", tmp_path)
        try:
            run = sampling_start(project=project, batch_size=1)
            at_kill = kill_when_held(first, server, run, tmp_path, "killed")
        finally:
            stop(first)
        # Eleven minutes on, with no heartbeat: the beat-scheduled watchdog, on a real worker.
        SamplingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - SamplingRun.stale_after - timedelta(minutes=1))
        second = gpu_worker("after", tmp_path, queues="default,gpu")
        try:
            report = jobs_watchdog.delay().get(timeout=120)
            assert report["samplingrun"]["failed_stale"] == [run.pk]
            run.refresh_from_db()
            assert run.state == JobState.FAILED and "worker lost" in run.error
            again = sampling_start(project=project, batch_size=1)
            wait_for(lambda: SamplingRun.objects.filter(pk=again.pk, state=JobState.SUCCEEDED).exists(), 180,
                     "the new pass", lambda: (tmp_path / "after.log").read_text()[-3000:])
            if broker_is_redis():
                # The killed worker's message comes back an hour later: the run it names is over.
                assert redeliver_unacked(task="modeling.tasks.sample_run", args=(run.pk,)) == 1
                wait_for(lambda: (tmp_path / "after.log").read_text().count("sample_run[") >= 4, 60,
                         "the stale message being consumed", lambda: (tmp_path / "after.log").read_text()[-3000:])
        finally:
            stop(second)
    again.refresh_from_db()
    assert_one_complete_pass(project, list(project.prompts.all()))
    assert again.responses_created == 40 - at_kill["responses"]
    assert again.pairs_created == 20 - at_kill["comparisons"]
    assert server.calls == 20 + 1
    run.refresh_from_db()
    assert run.state == JobState.FAILED
    print(f"\nkilled at {at_kill}; watchdog failed run {run.pk}; new pass made {again.responses_created} responses, "
          f"{again.pairs_created} comparisons; after: {counts()}; endpoint calls {server.calls}")


@pytest.mark.django_db
def test_a_duplicate_delivery_of_a_live_sampling_run_does_nothing(tiny_model_dir):
    """Redis redelivers an unacknowledged message after the visibility timeout even while its
    first worker still runs it; the second delivery must not sample the same prompts again."""
    project = make_project(3)
    MemberFactory(name="tiny-a", model_path=str(tiny_model_dir))
    MemberFactory(name="tiny-b", model_path=str(tiny_model_dir))
    live = SamplingRun.objects.create(project=project, state=JobState.RUNNING, heartbeat_at=timezone.now())
    assert sampling_execute(run_id=live.pk).state == JobState.RUNNING
    assert counts()["responses"] == 0
