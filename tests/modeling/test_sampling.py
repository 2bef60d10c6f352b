"""Sampling runs: the committee answers pending prompts on the worker's code path."""

import json

import pytest
from django.core.management import call_command

from annotation.models import Comparison, ComparisonSource, Response, ResponseSource
from annotation.selectors import _comparison_render
from modeling.ml.generation import Generation
from modeling.models import JobState, MemberKind, SamplingRun
from modeling.services import near_duplicates, sampling_execute, sampling_start
from modeling.services.sampling import SamplingError
from modeling.tasks import sample_run
from tests.factories import MemberFactory, ProjectFactory, PromptFactory
from tests.modeling.chat_server import ChatServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def project_with_prompts():
    project = ProjectFactory()
    for i in range(5):
        PromptFactory(project=project, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"hello {i}"}])
    return project


def tiny_members(tiny_model_dir, n=2):
    return [
        MemberFactory(name=f"tiny-{i}", model_path=str(tiny_model_dir), generation={"temperature": 1.0, "max_new_tokens": 8})
        for i in range(n)
    ]


def run_for(project, **config):
    return SamplingRun.objects.create(project=project, config={"batch_size": 4, **config})


def test_committee_sampling_pairs_two_different_members_per_prompt(project_with_prompts, tiny_model_dir, django_capture_on_commit_callbacks):
    members = tiny_members(tiny_model_dir, n=3)
    run = run_for(project_with_prompts)
    # the task takes a JSON-round-tripped id, like a real broker message, and is safe twice
    first = sample_run(json.loads(json.dumps(run.pk)))
    second = sample_run(json.loads(json.dumps(run.pk)))
    assert first["state"] == "succeeded" and first == second
    assert first["prompts_total"] == first["prompts_done"] == 5
    comparisons = Comparison.objects.filter(project=project_with_prompts)
    assert comparisons.count() + first["pairs_near_duplicate"] + (first["responses_empty"] > 0) >= 5
    for comparison in comparisons:
        # Rendered on the worker, exactly as a labeler's request would have rendered it.
        assert comparison.rendered is not None and comparison.rendered == _comparison_render(comparison.pk)
        assert comparison.response_a.member_id != comparison.response_b.member_id
        assert comparison.response_a.prompt_id == comparison.prompt_id
        assert comparison.source == ComparisonSource.COMMITTEE
    response = Response.objects.filter(source=ResponseSource.MODEL).first()
    assert response.member in members and response.completion_tokens > 0 and response.latency_ms is not None
    assert response.sampling["temperature"] == 1.0 and response.sampling["max_new_tokens"] == 8
    assert Response.objects.count() == first["responses_created"] == 10


def test_a_rerun_reuses_responses_instead_of_duplicating_them(project_with_prompts, tiny_model_dir):
    tiny_members(tiny_model_dir)
    sampling_execute(run_id=run_for(project_with_prompts).pk)
    before = Response.objects.count()
    Comparison.objects.all().delete()  # prompts become pending again
    again = sampling_execute(run_id=run_for(project_with_prompts).pk)
    assert again.responses_created == 0 and Response.objects.count() == before
    assert again.pairs_created == Comparison.objects.count() > 0


def test_a_failing_member_records_its_error_and_the_others_go_on(project_with_prompts, tiny_model_dir):
    tiny_members(tiny_model_dir, n=2)
    MemberFactory(name="broken", model_path="/nowhere/model", weight=5.0)
    run = sampling_execute(run_id=run_for(project_with_prompts).pk)
    assert run.state == JobState.SUCCEEDED
    assert "model directory missing" in run.member_errors["broken"]
    assert run.responses_failed > 0
    assert not Response.objects.filter(member__name="broken").exists()
    assert run.pairs_created == Comparison.objects.count()


def test_an_endpoint_member_that_is_down_fails_alone(project_with_prompts, tiny_model_dir):
    tiny_members(tiny_model_dir, n=2)
    MemberFactory(name="remote", kind=MemberKind.ENDPOINT, model_path="", base_url="http://127.0.0.1:9/v1", endpoint_model="m", max_retries=0, timeout_s=2)
    run = sampling_execute(run_id=run_for(project_with_prompts).pk)
    assert run.state == JobState.SUCCEEDED and "unreachable" in run.member_errors.get("remote", "unreachable")


def test_an_endpoint_member_answers_through_a_real_http_server(project_with_prompts, tiny_model_dir):
    tiny_members(tiny_model_dir, n=1)
    with ChatServer() as server:
        MemberFactory(name="remote", kind=MemberKind.ENDPOINT, model_path="", base_url=server.url, endpoint_model="served", weight=100)
        run = sampling_execute(run_id=run_for(project_with_prompts).pk)
    assert run.state == JobState.SUCCEEDED and run.member_errors == {}
    remote = Response.objects.filter(member__name="remote")
    assert remote.count() == 5 and remote.first().text.startswith("echo (2 messages): hello")
    assert {r["body"]["model"] for r in server.requests} == {"served"}


def test_an_endpoint_answer_the_database_cannot_store_fails_alone(project_with_prompts, tiny_model_dir):
    """NUL, a lone surrogate, non-text content, a reply that is not JSON or too large: each fails
    that one answer with its reason recorded; the member's other answers and the run go on."""
    from modeling.ml import generation

    hostile = {
        "hello 0": "before\u0000after", "hello 1": "half a pair \ud800", "hello 2": {"text": "an object"},
        "hello 3": b"{not json", "hello 4": b"x" * (generation.MAX_ANSWER_BYTES + 10),
    }
    tiny_members(tiny_model_dir, n=1)
    with ChatServer(answer=lambda last: hostile.get(last, f"fine: {last}")) as server:
        MemberFactory(name="remote", kind=MemberKind.ENDPOINT, model_path="", base_url=server.url, endpoint_model="m", weight=100)
        for i in range(5, 7):
            PromptFactory(project=project_with_prompts, messages=[{"role": "user", "content": f"hello {i}"}])
        run = sampling_execute(run_id=run_for(project_with_prompts).pk)
    assert run.state == JobState.SUCCEEDED and run.responses_failed == 5
    assert set(Response.objects.filter(member__name="remote").values_list("text", flat=True)) == {"fine: hello 5", "fine: hello 6"}
    assert run.member_errors["remote"].startswith("prompt ")  # the last failure, with its prompt
    assert Comparison.objects.filter(project=project_with_prompts).count() == 2


def test_each_kind_of_unusable_endpoint_answer_names_its_reason():
    from modeling.ml.generation import EndpointBackend, ModelSpec, SamplingParams

    cases = {
        "nul": ("a\u0000b", ""), "object": ({"x": 1}, "not text"), "broken": (b"{", "not JSON"),
        "deep": (b"[" * 100_000, "not JSON"), "shape": (b'{"choices": []}', "unexpected answer"),
    }
    with ChatServer(answer=lambda last: cases[last][0]) as server:
        backend = EndpointBackend(ModelSpec(kind="endpoint", base_url=server.url, endpoint_model="m", max_retries=0))
        results = backend.generate([[{"role": "user", "content": name}] for name in cases], SamplingParams())
    for (name, (_, reason)), result in zip(cases.items(), results):
        assert reason in result.error, (name, result)
    assert results[0].text == "a\x00b" and results[0].error == ""  # the service, not the backend, refuses NUL


def test_committee_pairing_needs_two_active_members(project_with_prompts, tiny_model_dir):
    tiny_members(tiny_model_dir, n=1)
    run = sampling_execute(run_id=run_for(project_with_prompts).pk)
    assert run.state == JobState.FAILED and "at least two active members" in run.error


class FixedBackend:
    def __init__(self, texts):
        self.texts = texts

    def generate(self, conversations, params):
        return [Generation(text=self.texts, prompt_tokens=3, completion_tokens=len(self.texts.split()), finish_reason="stop", latency_ms=1) for _ in conversations]


class CountingBackend:
    """Answers distinctly, and records how many comparisons labelers could already see at each call."""

    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    def generate(self, conversations, params):
        self.seen.append(Comparison.objects.count())
        return [Generation(text=f"{self.name} says {i}: {m[-1]['content']}", prompt_tokens=3, completion_tokens=4, finish_reason="stop", latency_ms=1)
                for i, m in enumerate(conversations)]


def test_comparisons_are_released_batch_by_batch_not_at_the_end_of_the_pass(project_with_prompts):
    for i in range(5, 12):
        PromptFactory(project=project_with_prompts, messages=[{"role": "user", "content": f"hello {i}"}])
    MemberFactory(name="a"), MemberFactory(name="b")
    seen = []
    run = sampling_execute(run_id=run_for(project_with_prompts, batch_size=4).pk, backend_loader=lambda m: CountingBackend(m.name, seen))
    assert run.state == JobState.SUCCEEDED and run.pairs_created == 12
    # A first batch of 1 prompt, then batches of 4: each batch's pairs are in the queue before
    # the next batch is generated (two members, so two calls per batch).
    assert seen == [0, 0, 1, 1, 5, 5, 9, 9]


def test_near_identical_and_empty_answers_are_never_paired(project_with_prompts):
    MemberFactory(name="a"), MemberFactory(name="b")
    same = sampling_execute(run_id=run_for(project_with_prompts, limit=2).pk, backend_loader=lambda m: FixedBackend("Same answer."))
    assert (same.pairs_created, same.pairs_near_duplicate) == (0, 2)
    empty = sampling_execute(run_id=run_for(project_with_prompts).pk, backend_loader=lambda m: FixedBackend(""))
    assert empty.pairs_created == 0 and empty.responses_empty >= 2
    assert Comparison.objects.count() == 0


def test_near_duplicates_ignore_case_punctuation_and_spacing_but_not_content():
    assert near_duplicates("Hello, World!", "hello world")
    assert near_duplicates("The answer is 42.", "the answer is 42 ")
    assert not near_duplicates("The answer is 42.", "The answer is 41, because the premise is wrong.")


class ScoredScorer:
    def score(self, conversations, responses):
        return [float(len(r)) for r in responses]  # longer is better, for the test


def test_rejection_sampling_keeps_the_best_of_k_by_reward(project_with_prompts, tiny_model_dir):
    project_with_prompts.rejection_k = 4
    project_with_prompts.save()
    tiny_members(tiny_model_dir, n=2)
    run = SamplingRun.objects.create(project=project_with_prompts, mode=SamplingRun.Mode.REJECTION_SAMPLING, config={"batch_size": 4})
    run = sampling_execute(run_id=run.pk, scorer_loader=lambda project: ScoredScorer())
    assert run.state == JobState.SUCCEEDED
    for comparison in Comparison.objects.all():
        assert comparison.source == ComparisonSource.REJECTION_SAMPLING
        candidates = Response.objects.filter(prompt=comparison.prompt, source=ResponseSource.MODEL)
        assert candidates.count() == 4 and all(r.reward is not None for r in candidates)
        # a best candidate is in the pair (candidates of equal length tie on this scorer: any of them)
        paired = [r.reward for r in candidates if r.pk in (comparison.response_a_id, comparison.response_b_id)]
        assert max(paired) == max(r.reward for r in candidates)


def test_rejection_sampling_without_a_reward_model_fails_clearly(project_with_prompts, tiny_model_dir):
    tiny_members(tiny_model_dir, n=2)
    run = SamplingRun.objects.create(project=project_with_prompts, mode=SamplingRun.Mode.REJECTION_SAMPLING)
    run = sampling_execute(run_id=run.pk)
    assert run.state == JobState.FAILED and "needs a reward model" in run.error


def test_starting_twice_while_one_runs_is_refused(project_with_prompts, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        sampling_start(project=project_with_prompts)
    assert len(callbacks) == 1  # the task is sent only once the row is committed
    with pytest.raises(SamplingError, match="already queued or running"):
        sampling_start(project=project_with_prompts)


def test_the_management_command_runs_a_pass_in_process(project_with_prompts, tiny_model_dir, capsys):
    tiny_members(tiny_model_dir)
    call_command("sample_responses", project_with_prompts.slug, "--limit", "2", "--wait")
    out = capsys.readouterr().out
    assert "succeeded" in out and "2/2 prompts" in out


def test_a_sampling_run_whose_worker_died_is_failed_and_no_longer_blocks(project_with_prompts, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from config.jobs import jobs_fail_stale

    run = SamplingRun.objects.create(project=project_with_prompts, state=JobState.RUNNING, heartbeat_at=timezone.now() - timedelta(minutes=30))
    with pytest.raises(SamplingError):
        sampling_start(project=project_with_prompts)
    assert jobs_fail_stale(SamplingRun) == [run.pk] and jobs_fail_stale(SamplingRun) == []
    run.refresh_from_db()
    assert run.state == JobState.FAILED and "worker lost" in run.error
    with django_capture_on_commit_callbacks():
        assert sampling_start(project=project_with_prompts).state == JobState.QUEUED


def test_a_running_pass_reports_its_time_and_an_eta_from_its_pace(project_with_prompts):
    from datetime import timedelta

    from django.utils import timezone

    from modeling.selectors import sampling_timing
    from modeling.serializers import SamplingRunSerializer

    run = SamplingRun.objects.create(project=project_with_prompts, state=JobState.RUNNING, prompts_total=8, prompts_done=2,
                                     started_at=timezone.now() - timedelta(seconds=60))
    timing = sampling_timing(run=run)
    assert 60 <= timing["elapsed_s"] < 65 and 180 <= timing["eta_s"] < 195  # 2 prompts a minute, 6 to go
    assert SamplingRunSerializer(run).data["eta_s"] == pytest.approx(timing["eta_s"], abs=2)
    run.state, run.finished_at = JobState.SUCCEEDED, run.started_at + timedelta(seconds=240)
    assert sampling_timing(run=run) == {"elapsed_s": 240.0, "eta_s": None}
    assert sampling_timing(run=SamplingRun(project=project_with_prompts)) == {"elapsed_s": None, "eta_s": None}
