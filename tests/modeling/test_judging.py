"""The judge's pre-screen: the verdict format read back from any text, both orders combined, and
judge runs on the worker's code path with a fake judge that has a first-position bias."""

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from annotation.models import AuditEvent, Comparison, ComparisonSource, JudgeVerdict
from modeling.ml.generation import Generation
from modeling.ml.judging import (
    MAX_PARSE_CHARS,
    Suggestion,
    Verdict,
    combine,
    judge_messages,
    parse_verdict,
)
from modeling.models import JobState, JudgeRun, MemberKind
from modeling.services import judging
from modeling.services.judging import FAIL_FAST_COMPARISONS, JudgeBusy, JudgeError, judge_execute, judge_start, judge_start_if_named
from modeling.services.watchdog import JOB_MODELS
from tests.factories import ComparisonFactory, MemberFactory, ProjectFactory, PromptFactory, ResponseFactory

# --- the verdict format ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("A is more precise.\n[[A]] significantly better", Verdict("first", "significantly_better")),
    ("B covers both cases.\n[[B]] slightly better", Verdict("second", "slightly_better")),
    ("They say the same.\n[[C]]", Verdict("tie", "negligibly_better")),
    ("[[A]]", Verdict("first", "better")),  # MT-Bench's bare verdict: "better"
    ("[[b]] better", Verdict("second", "better")),
    ("[[ Assistant B ]] much better", Verdict("second", "significantly_better")),
    ("[[A, a little better]]", Verdict("first", "slightly_better")),
    ("Verdict: slightly better, [[A]]", Verdict("first", "slightly_better")),  # the strength before the tag, same line
    ("[[A]] negligibly better", Verdict("first", "negligibly_better")),
    ("[[tie]]", Verdict("tie", "negligibly_better")),
    # The last tag wins: a judge that quotes the format, or changes its mind, before its verdict.
    ('Answer "[[A]]", "[[B]]" or "[[C]]".\nOn reflection B is right.\n[[B]] better', Verdict("second", "better")),
    ("[[A]] significantly better\nWait, no.\n[[B]] slightly better", Verdict("second", "slightly_better")),
    # The strength is read on the tag's own line: "significantly" on the next line is not it.
    ("[[A]]\nsignificantly better explained", Verdict("first", "better")),
])
def test_a_verdict_is_read_from_the_judges_answer(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text, said", [
    ("", "empty"), ("   \n ", "empty"), (None, "not text"), (b"[[A]]", "not text"),
    ("A is better, I think.", "names none"), ("[[D]]", "names none"), ("[[AB]]", "names none"), ("[A]", "names none"),
    ("[[A]" * 10_000, "names none"), ("[[" + "A" * 100_000 + "]]", "names none"),
])
def test_an_answer_without_a_well_formed_verdict_is_no_verdict(text, said):
    verdict = parse_verdict(text)
    assert verdict.choice is None and verdict.strength == "" and said in verdict.error


def test_a_huge_answer_is_read_from_its_end_only():
    assert parse_verdict("x" * 5_000_000 + "\n[[B]] slightly better") == Verdict("second", "slightly_better")
    # A verdict beyond the last MAX_PARSE_CHARS is not looked for: the work is bounded.
    assert parse_verdict("[[A]]" + "x" * MAX_PARSE_CHARS).choice is None


@hypothesis_settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(),
    st.lists(st.sampled_from(["[[", "]]", "A", "B", "C", "tie", "assistant", " ", "\n", "better", "slightly", "much",
                              "negligibly", "unsure", ",", "\x00", "\ud800", "é", "[", "]"]), max_size=40).map("".join),
))
def test_parse_verdict_never_raises_and_always_answers_in_its_vocabulary(text):
    verdict = parse_verdict(text)
    assert verdict.choice in ("first", "second", "tie", None)
    if verdict.choice is None:
        assert verdict.strength == "" and verdict.error
    else:
        assert verdict.strength in ("significantly_better", "better", "slightly_better", "negligibly_better") and not verdict.error
    # Whatever it said, a well-formed final line decides.
    assert parse_verdict(text + "\n[[B]] slightly better") == Verdict("second", "slightly_better")


def test_the_judge_is_asked_mt_bench_style_with_the_answers_in_the_order_given():
    single = judge_messages([{"role": "user", "content": "Name a fruit."}], "Apple.", "Carrot.")
    assert [m["role"] for m in single] == ["system", "user"]
    assert "[[A]]" in single[0]["content"] and "slightly better" in single[0]["content"] and "[[C]]" in single[0]["content"]
    assert single[1]["content"] == (
        "[User Question]\nName a fruit.\n\n"
        "[The Start of Assistant A's Answer]\nApple.\n[The End of Assistant A's Answer]\n\n"
        "[The Start of Assistant B's Answer]\nCarrot.\n[The End of Assistant B's Answer]"
    )
    turns = judge_messages([
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "A fruit?"},
    ], "Pear.", "Leek.")[1]["content"]
    assert turns.index("### System:\nBe brief.") < turns.index("### Assistant:\nHello.") < turns.index("### User:\nA fruit?")
    assert turns.index("Pear.") < turns.index("Leek.")


def test_a_huge_conversation_or_answer_is_cut_before_it_reaches_the_judge():
    messages = judge_messages([{"role": "user", "content": "q" * 50_000}] * 3, "a" * 100_000, "b" * 100_000)
    assert len(messages[1]["content"]) < 25_000
    assert messages[1]["content"].count("the rest is cut") == 2 and "earlier turns are cut" in messages[1]["content"]


@pytest.mark.parametrize("ab, ba, expected", [
    # ab: A shown first; ba: B shown first, so its "first" is B.
    (Verdict("first", "significantly_better"), Verdict("second", "significantly_better"),
     Suggestion("consistent", "a", "significantly_better", 0.95)),
    (Verdict("second", "better"), Verdict("first", "slightly_better"), Suggestion("consistent", "b", "slightly_better", 0.775)),
    (Verdict("tie", "negligibly_better"), Verdict("tie", "negligibly_better"), Suggestion("consistent", None, "negligibly_better", None)),
    # "negligibly better" is a tie, as a labeler's is: with a tie the other way, consistent.
    (Verdict("first", "negligibly_better"), Verdict("tie", "negligibly_better"), Suggestion("consistent", None, "negligibly_better", None)),
    # First-position bias: the answer shown first wins both times, so the winner changed.
    (Verdict("first", "better"), Verdict("first", "better"), Suggestion("inconsistent")),
    (Verdict("first", "better"), Verdict("tie", "negligibly_better"), Suggestion("inconsistent")),
    (Verdict(None, "", "no verdict"), Verdict("first", "better"), Suggestion("failed")),
    (Verdict("tie", "negligibly_better"), Verdict(None, "", "empty"), Suggestion("failed")),
])
def test_both_orders_combine_into_a_suggestion(ab, ba, expected):
    assert combine(ab, ba) == expected


# --- judge runs -------------------------------------------------------------------------------------

ANSWER = re.compile(r"\[The Start of Assistant ([AB])'s Answer\]\n(.*?)\n\[The End of Assistant \1's Answer\]", re.DOTALL)


class FirstBiasedJudge:
    """A judge with a built-in first-position bias: it prefers the answer shown first, unless
    exactly one answer is marked "(correct)", which it then calls significantly better. An answer
    marked "(garble)" makes it ramble without a verdict; "(nul)" makes it answer with a NUL."""

    def __init__(self):
        self.calls = []

    def generate(self, conversations, params):
        self.calls.append((len(conversations), params))
        return [self._answer(messages) for messages in conversations]

    def _answer(self, messages):
        answers = dict(ANSWER.findall(messages[-1]["content"]))
        first, second = answers["A"], answers["B"]
        if "(garble)" in first + second:
            text = "Both answers are answers. " * 300
        elif "(nul)" in first + second:
            text = "[[A]] better \x00"
        elif ("(correct)" in first) != ("(correct)" in second):
            text = f"Only one is correct.\n[[{'A' if '(correct)' in first else 'B'}]] significantly better"
        else:
            text = "The first one reads well.\n[[A]] slightly better"
        return Generation(text=text, prompt_tokens=10, completion_tokens=12, finish_reason="stop", latency_ms=1)


def loader_of(backend):
    def load(member):
        load.loaded.append(member.name)
        return backend

    load.loaded = []
    return load


def pair(project, a, b, **fields):
    prompt = PromptFactory(project=project)
    response_a, response_b = ResponseFactory(prompt=prompt, text=a), ResponseFactory(prompt=prompt, text=b)
    if fields.get("is_gold"):
        fields["gold_winner"] = response_a
    return ComparisonFactory(prompt=prompt, response_a=response_a, response_b=response_b, **fields)


@pytest.fixture
def judged_project(db):
    """Five pairs for the judge (one clear each way, two only position can decide, one it cannot
    read), and a gold and an imported pair it must leave alone."""
    judge = MemberFactory(name="judge")
    project = ProjectFactory(judge=judge, ambiguous_first=True)
    pairs = {
        "a_clear": pair(project, "Paris (correct)", "Lyon"),
        "b_clear": pair(project, "Berlin", "Vienna (correct)"),
        "close": pair(project, "Red", "Crimson"),
        "both_right": pair(project, "4 (correct)", "four (correct)"),
        "garbled": pair(project, "x (garble)", "y"),
        "gold": pair(project, "Oslo (correct)", "Bergen", is_gold=True),
        "imported": pair(project, "Rome (correct)", "Milan", source=ComparisonSource.IMPORT),
    }
    return project, judge, pairs


def run_of(project, judge, **fields):
    return JudgeRun.objects.create(project=project, member=judge, queue="gpu", **fields)


def test_a_biased_judge_stores_both_orders_and_its_inconsistent_pairs_are_flagged_and_served_first(judged_project):
    project, judge, pairs = judged_project
    backend = FirstBiasedJudge()
    run = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(backend))
    assert run.state == JobState.SUCCEEDED and run.error == ""
    assert (run.comparisons_total, run.comparisons_done, run.consistent, run.inconsistent, run.failed) == (5, 5, 2, 2, 1)
    # Greedy and short, both orders of four pairs in one call, then the fifth pair's two.
    assert [n for n, _ in backend.calls] == [8, 2]
    assert {(p.temperature, p.max_new_tokens) for _, p in backend.calls} == {(0.0, judging.JUDGE_MAX_NEW_TOKENS)}
    for name in ("a_clear", "b_clear", "close", "both_right", "garbled"):
        assert sorted(JudgeVerdict.objects.filter(comparison=pairs[name], member=judge).values_list("order", flat=True)) == ["ab", "ba"]
    assert not JudgeVerdict.objects.filter(comparison__in=[pairs["gold"], pairs["imported"]]).exists()

    def fresh(name):
        return Comparison.objects.get(pk=pairs[name].pk)

    a_clear, b_clear = fresh("a_clear"), fresh("b_clear")
    assert (a_clear.judge_state, a_clear.judge_winner_id, a_clear.judge_strength, a_clear.judge_confidence, a_clear.priority) == (
        "consistent", a_clear.response_a_id, "significantly_better", 0.95, 0)
    assert (b_clear.judge_state, b_clear.judge_winner_id) == ("consistent", b_clear.response_b_id)
    # The bias shows: the answer shown first won in both orders, so each response won once.
    close = fresh("close")
    ab, ba = JudgeVerdict.objects.filter(comparison=close).order_by("order")
    assert (ab.winner_id, ab.strength, ba.winner_id) == (close.response_a_id, "slightly_better", close.response_b_id)
    assert "[[A]] slightly better" in ab.output and ab.error == ""
    for name in ("close", "both_right"):
        flagged = fresh(name)
        assert (flagged.judge_state, flagged.judge_winner_id, flagged.judge_confidence, flagged.priority) == ("inconsistent", None, None, 1)
    garbled = fresh("garbled")
    assert (garbled.judge_state, garbled.judge_winner_id, garbled.priority) == ("failed", None, 0)
    assert all("names none" in v.error and v.winner_id is None for v in JudgeVerdict.objects.filter(comparison=garbled))
    assert (fresh("gold").judge_state, fresh("imported").judge_state) == ("", "")


def test_ambiguous_pairs_keep_their_place_when_the_project_does_not_put_them_first(judged_project):
    project, judge, pairs = judged_project
    project.ambiguous_first = False
    project.save()
    judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(FirstBiasedJudge()))
    close = Comparison.objects.get(pk=pairs["close"].pk)
    assert close.judge_state == "inconsistent" and close.priority == 0


def test_the_task_is_safe_twice_and_a_rerun_reuses_stored_verdicts(judged_project, monkeypatch):
    from modeling import tasks

    project, judge, pairs = judged_project
    backend = FirstBiasedJudge()
    # The task calls the service with its default loader: that default is the fake judge here.
    monkeypatch.setitem(judge_execute.__kwdefaults__, "backend_loader", loader_of(backend))
    run = run_of(project, judge)
    first = tasks.judge_run(json.loads(json.dumps(run.pk)))
    second = tasks.judge_run(json.loads(json.dumps(run.pk)))
    assert first == second and first["state"] == "succeeded" and first["comparisons_done"] == 5
    assert len(backend.calls) == 2 and JudgeVerdict.objects.count() == 10
    # A pair whose summary is lost (a worker killed between its verdicts and its summary) is
    # summarised again from the stored verdicts: the judge is not asked twice.
    Comparison.objects.filter(pk=pairs["close"].pk).update(judge_state="", priority=0)
    again = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(backend))
    assert again.state == JobState.SUCCEEDED and (again.comparisons_done, again.inconsistent) == (1, 1)
    assert len(backend.calls) == 2 and JudgeVerdict.objects.count() == 10
    close = Comparison.objects.get(pk=pairs["close"].pk)
    assert close.judge_state == "inconsistent" and close.priority == 1


def test_a_run_judges_at_most_its_limit_oldest_first(judged_project):
    project, judge, pairs = judged_project
    run = judge_execute(run_id=run_of(project, judge, limit=3).pk, backend_loader=loader_of(FirstBiasedJudge()))
    assert run.state == JobState.SUCCEEDED and (run.comparisons_total, run.comparisons_done) == (3, 3)
    judged = set(Comparison.objects.exclude(judge_state="").values_list("pk", flat=True))
    assert judged == {pairs[n].pk for n in ("a_clear", "b_clear", "close")}


def test_a_run_with_nothing_to_judge_succeeds_without_loading_the_judge(db):
    judge = MemberFactory()
    project = ProjectFactory(judge=judge)
    loader = loader_of(FirstBiasedJudge())
    run = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader)
    assert run.state == JobState.SUCCEEDED and run.comparisons_total == 0 and loader.loaded == []


def test_a_failing_judge_fails_the_run_with_its_error_and_keeps_what_it_stored(judged_project, monkeypatch):
    project, judge, pairs = judged_project

    class BreaksOnSecondCall(FirstBiasedJudge):
        def generate(self, conversations, params):
            if self.calls:
                raise RuntimeError("the judge's server went away")
            return super().generate(conversations, params)

    monkeypatch.setattr(judging, "BATCH_SIZE", 2)
    run = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(BreaksOnSecondCall()))
    assert run.state == JobState.FAILED and "RuntimeError: the judge's server went away" in run.error and run.finished_at
    assert run.comparisons_done == 2 and JudgeVerdict.objects.count() == 4
    assert Comparison.objects.get(pk=pairs["a_clear"].pk).judge_state == "consistent"
    assert Comparison.objects.get(pk=pairs["close"].pk).judge_state == ""  # left for the next run
    # The next run goes on where it stopped.
    rerun = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(FirstBiasedJudge()))
    assert rerun.state == JobState.SUCCEEDED and rerun.comparisons_done == 3 and JudgeVerdict.objects.count() == 10


def test_a_judge_that_never_gives_a_verdict_stops_after_a_few_comparisons_and_says_why(db):
    # SmolLM2-135M answers the judge's question by rambling on the user's: no [[A]] / [[B]] / [[C]].
    judge = MemberFactory(name="tiny")
    project = ProjectFactory(judge=judge)
    for i in range(FAIL_FAST_COMPARISONS + 6):
        pair(project, f"x{i} (garble)", f"y{i}")
    backend = FirstBiasedJudge()
    run = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(backend))
    assert run.state == JobState.FAILED and "tiny gave no usable verdict on any of the 8 comparisons" in run.error
    assert "Name a larger model" in run.error
    # Two batches of four (both orders each), then it stopped: the rest wait for another judge.
    assert [n for n, _ in backend.calls] == [8, 8] and (run.comparisons_done, run.failed) == (8, 8)
    assert Comparison.objects.filter(project=project, judge_state="").count() == 6


def test_one_usable_verdict_among_the_first_comparisons_keeps_the_judge_going(db):
    judge = MemberFactory()
    project = ProjectFactory(judge=judge)
    pair(project, "Paris (correct)", "Lyon")
    for i in range(FAIL_FAST_COMPARISONS + 3):
        pair(project, f"x{i} (garble)", f"y{i}")
    run = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(FirstBiasedJudge()))
    assert run.state == JobState.SUCCEEDED and (run.comparisons_done, run.consistent, run.failed) == (12, 1, 11)


def test_a_judge_that_cannot_load_fails_the_run(judged_project):
    project, judge, _ = judged_project

    def missing(member):
        raise FileNotFoundError("model directory missing: /models/tiny")

    run = judge_execute(run_id=run_of(project, judge).pk, backend_loader=missing)
    assert run.state == JobState.FAILED and "model directory missing" in run.error
    assert not JudgeVerdict.objects.exists() and not Comparison.objects.exclude(judge_state="").exists()


def test_a_judge_retired_after_its_run_was_queued_fails_the_run(judged_project):
    project, judge, _ = judged_project
    run = run_of(project, judge)
    judge.is_active = False
    judge.save()
    run = judge_execute(run_id=run.pk, backend_loader=loader_of(FirstBiasedJudge()))
    assert run.state == JobState.FAILED and "retired" in run.error


def test_hostile_judge_answers_are_stored_bounded_and_fit_for_the_database(db):
    """NUL, a lone surrogate, an endpoint's per-answer error and a huge answer: each verdict is
    stored (the output cut to 4,000 characters, keeping the verdict at its end), none crashes the run."""
    judge = MemberFactory()
    project = ProjectFactory(judge=judge)
    outputs = {
        "nul": Generation("[[A]] better \x00", 1, 1, "stop", 1),
        "surrogate": Generation("[[A]] better \ud800", 1, 1, "stop", 1),
        "error": Generation("", 0, 0, "error", 1, error="the endpoint's reply is not JSON"),
        "huge": Generation("blah " * 100_000 + "\n[[B]] slightly better", 1, 1, "length", 1),
    }

    class Hostile:
        def generate(self, conversations, params):  # each pair's answers start with its name
            return [outputs[dict(ANSWER.findall(m[-1]["content"]))["A"].split()[0]] for m in conversations]

    comparisons = {name: pair(project, f"{name} one", f"{name} two") for name in outputs}
    run = judge_execute(run_id=run_of(project, judge).pk, backend_loader=loader_of(Hostile()))
    assert run.state == JobState.SUCCEEDED and run.comparisons_done == 4
    verdicts = {(v.comparison_id, v.order): v for v in JudgeVerdict.objects.all()}
    for name in ("nul", "surrogate"):
        stored = verdicts[(comparisons[name].pk, "ab")]
        assert stored.winner_id is None and ("NUL" if name == "nul" else "surrogate") in stored.error
        assert "\x00" not in stored.output and stored.output.startswith("[[A]] better")
    assert verdicts[(comparisons["error"].pk, "ba")].error == "the endpoint's reply is not JSON"
    huge = verdicts[(comparisons["huge"].pk, "ab")]
    assert len(huge.output) <= 4_000 and huge.output.endswith("[[B]] slightly better") and huge.output.startswith("blah")
    assert huge.winner_id == comparisons["huge"].response_b_id and huge.strength == "slightly_better"
    # The huge answer named the answer shown second both times (a position bias): inconsistent.
    assert dict(Comparison.objects.values_list("pk", "judge_state")) == {
        comparisons["nul"].pk: "failed", comparisons["surrogate"].pk: "failed", comparisons["error"].pk: "failed",
        comparisons["huge"].pk: "inconsistent",
    }


# --- starting a run ---------------------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch):
    from modeling import tasks

    messages = []
    monkeypatch.setattr(tasks.judge_run, "apply_async", lambda args, **options: messages.append((args, options)))
    return messages


def test_a_judge_run_goes_to_the_gpu_worker_for_a_local_judge_and_default_for_an_endpoint(db, sent, django_capture_on_commit_callbacks):
    local = ProjectFactory(judge=MemberFactory(name="local judge"))
    remote = ProjectFactory(judge=MemberFactory(
        name="remote judge", kind=MemberKind.ENDPOINT, model_path="", base_url="http://h:8000/v1", endpoint_model="m"))
    with django_capture_on_commit_callbacks(execute=True):
        local_run = judge_start(project=local, limit=10)
        remote_run = judge_start(project=remote)
    assert (local_run.state, local_run.queue, local_run.limit, local_run.member.name) == (JobState.QUEUED, "gpu", 10, "local judge")
    assert sent == [((local_run.pk,), {"queue": "gpu"}), ((remote_run.pk,), {"queue": "default"})]
    event = AuditEvent.objects.get(project=local)
    assert event.target == f"judge run {local_run.pk}" and event.details == {"judge_run": local_run.pk, "judge": "local judge", "limit": 10}


def test_a_judge_run_is_refused_without_an_active_judge_or_while_one_is_active(db, sent):
    with pytest.raises(JudgeError, match="no judge"):
        judge_start(project=ProjectFactory())
    judge = MemberFactory(name="old judge", is_active=False)
    with pytest.raises(JudgeError, match="old judge is retired"):
        judge_start(project=ProjectFactory(judge=judge))
    project = ProjectFactory(judge=MemberFactory())
    with pytest.raises(JudgeError, match="at least one"):
        judge_start(project=project, limit=0)
    judge_start(project=project)
    with pytest.raises(JudgeBusy, match="already queued or running"):
        judge_start(project=project)
    assert JudgeRun.objects.filter(project=project).count() == 1


def test_the_judge_starts_after_sampling_only_when_named_idle_and_needed(db, sent):
    project = ProjectFactory()
    pair(project, "one", "two")
    assert judge_start_if_named(project) is None  # no judge
    project.judge = MemberFactory()
    project.save()
    run = judge_start_if_named(project)
    assert run is not None and run.state == JobState.QUEUED
    assert judge_start_if_named(project) is None  # one is active: it takes the new pairs too
    JudgeRun.objects.filter(pk=run.pk).update(state=JobState.SUCCEEDED)
    Comparison.objects.update(judge_state="consistent")
    assert judge_start_if_named(project) is None  # nothing waits


def test_the_watchdog_watches_judge_runs_and_resends_a_lost_one_to_its_queue(db, sent, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from modeling.services.watchdog import jobs_watchdog

    assert JudgeRun in JOB_MODELS
    judge = MemberFactory(kind=MemberKind.ENDPOINT, model_path="", base_url="http://h/v1", endpoint_model="m")
    lost = JudgeRun.objects.create(project=ProjectFactory(judge=judge), member=judge, queue="default")
    dead = JudgeRun.objects.create(project=ProjectFactory(judge=judge), member=judge, queue="gpu", state=JobState.RUNNING,
                                   heartbeat_at=timezone.now() - timedelta(minutes=11))
    with django_capture_on_commit_callbacks(execute=True):
        report = jobs_watchdog(now=timezone.now() + timedelta(minutes=11))["judgerun"]
    assert report == {"failed_stale": [dead.pk], "resent": [lost.pk]}
    assert sent == [((lost.pk,), {"queue": "default"})]
    dead.refresh_from_db()
    assert dead.state == JobState.FAILED and "worker lost while judging" in dead.error



# --- a real judge on a real worker ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_smollm2_judges_two_pairs_in_both_orders_on_a_real_worker(tmp_path):
    """The plumbing, not the model's skill: the 135M model may not follow the format, so a
    "failed" pair is fine as long as both orders' answers are stored."""
    from modeling.services import member_register_smollm2
    from tests.processes import database_url_for_workers, start_worker, stop, wait_until

    judge = member_register_smollm2()[0]
    project = ProjectFactory(judge=judge)
    pairs = [
        pair(project, "Paris is the capital of France.", "The capital of France is Berlin."),
        pair(project, "A banana is yellow.", "Bananas are usually blue."),
    ]
    worker = start_worker(queues="gpu", name="judge-it", env={"DATABASE_URL": database_url_for_workers()}, log_path=tmp_path / "worker.log")
    try:
        run = judge_start(project=project)  # sent to the broker on commit, to the gpu queue (a local model)
        done = wait_until(lambda: JudgeRun.objects.filter(pk=run.pk, state__in=[JobState.SUCCEEDED, JobState.FAILED]).exists(), 600, 1)
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert done, log[-4000:]
    run.refresh_from_db()
    assert run.state == JobState.SUCCEEDED, (run.error, log[-3000:])
    assert run.queue == "gpu" and "modeling.tasks.judge_run" in log
    assert run.comparisons_done == 2 and run.consistent + run.inconsistent + run.failed == 2
    for comparison in pairs:
        verdicts = list(JudgeVerdict.objects.filter(comparison=comparison, member=judge).order_by("order"))
        assert [v.order for v in verdicts] == ["ab", "ba"]
        assert all(v.output.strip() and len(v.output) <= 4_000 for v in verdicts), [v.output for v in verdicts]
        # Each stored verdict either names a winner of the pair / a tie, or says why it has none.
        assert all(v.error or v.winner_id in (None, comparison.response_a_id, comparison.response_b_id) for v in verdicts)
        comparison.refresh_from_db()
        assert comparison.judge_state in ("consistent", "inconsistent", "failed")
