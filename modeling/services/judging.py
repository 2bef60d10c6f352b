"""The judge's pre-screen: a project's judge (a committee member) gives a verdict on each new
comparison twice, with either answer shown first (MT-Bench's swap check), and both are stored.

The JudgeRun row is the job (config/jobs.py). ``judge_execute`` is safe to run twice: verdicts
are unique per (comparison, member, order) and reused when they exist, and a comparison's summary
is written by a conditional UPDATE from "not judged", so a second worker on the same comparison
neither rewrites it nor counts it again. A redelivered message resumes a running run only once
its worker stopped beating. Labels never come from the judge alone: a consistent verdict becomes
a suggestion with a confidence (``modeling.ml.judging.combine``), an inconsistent one marks the
pair ambiguous, served first under ``Project.ambiguous_first``.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from annotation.judging import stored_verdict
from annotation.models import AuditAction, Comparison, ComparisonSource, JudgeVerdict, Project
from annotation.services.audit import audit_record
from config.jobs import job_claim, send_after_commit
from config.untrusted import text_problem
from modeling.models import JobState, JudgeRun
from modeling.services.members import member_test_queue
from modeling.services.sampling import default_backend_loader

logger = logging.getLogger(__name__)

#: Comparisons judged per call to the backend (two conversations each: both orders).
BATCH_SIZE = 4
#: Room for MT-Bench's short explanation and the verdict line; greedy (temperature 0), so a
#: re-run of the same pair gives the same verdict.
JUDGE_MAX_NEW_TOKENS = 256
#: What is kept of the judge's answer: its start and its end (where the verdict is).
MAX_OUTPUT_CHARS = 4_000
MAX_ERROR_CHARS = 500
#: A run stops when its judge has given no usable verdict on any of this many comparisons (both
#: orders each): a model that does not follow the verdict format (SmolLM2-135M echoes the question)
#: would otherwise hold the gpu worker, and the sampling passes queued behind it, for every pair.
FAIL_FAST_COMPARISONS = 8
#: ``Comparison.priority`` of a pair the judge found ambiguous, under ``Project.ambiguous_first``.
AMBIGUOUS_PRIORITY = 1
ORDERS = ("ab", "ba")


class JudgeError(Exception):
    """A judge run that cannot start; the message says why."""


class JudgeBusy(JudgeError):
    """The project's previous judge run is still queued or running (a 409, not a 400)."""


def pending_comparisons(*, project: Project):
    """The comparisons the judge has not answered: not gold (their answer is known and scored),
    not imported (people already labelled them), oldest first."""
    return (
        Comparison.objects.filter(project=project, judge_state="", is_gold=False)
        .exclude(source=ComparisonSource.IMPORT)
        .order_by("id")
    )


@transaction.atomic
def judge_start(*, project: Project, user=None, limit: int | None = None) -> JudgeRun:
    """Queue the project's judge on its unjudged comparisons (at most ``limit``); the task is
    sent once the row is committed, to the ``gpu`` worker for a local model, ``default`` for an
    OpenAI-compatible endpoint (it only waits on the network)."""
    from modeling import tasks

    member = project.judge
    if member is None:
        raise JudgeError("This project has no judge: name a committee member as its judge in the project settings")
    if not member.is_active:
        raise JudgeError(f"The judge {member.name} is retired: bring it back or name another member")
    if limit is not None and limit < 1:
        raise JudgeError("limit: judge at least one comparison (or leave it empty for all)")
    try:
        with transaction.atomic():
            run = JudgeRun.objects.create(project=project, member=member, queue=member_test_queue(member), limit=limit, created_by=user)
            # The audit log has no judge action of its own: a judge run is the judge sampling
            # verdicts, told apart by its target and details.
            audit_record(
                action=AuditAction.SAMPLING_STARTED, project=project, target=f"judge run {run.pk}", actor=user,
                details={"judge_run": run.pk, "judge": member.name, "limit": limit},
            )
    except IntegrityError:  # judge_run_one_active_per_project: the database decides between two starts
        raise JudgeBusy("A judge run is already queued or running in this project") from None
    send_after_commit(tasks.judge_run, run.pk, queue=run.queue)
    return run


def judge_start_if_named(project: Project, user=None) -> JudgeRun | None:
    """Start the judge when the project names an active one, no run is active and a comparison
    waits for it (a sampling pass calls this when it finishes); else None."""
    if project.judge_id is None or not project.judge.is_active or not pending_comparisons(project=project).exists():
        return None
    try:
        return judge_start(project=project, user=user)
    except JudgeBusy:
        # The active run judges what is pending when it takes its next batch, these pairs too.
        return None


def _heartbeat(run: JudgeRun, **updates) -> None:
    JudgeRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now(), **updates)


def _kept(text: str) -> str:
    """The judge's answer as stored: fit for the database, its start and its end when long."""
    if text_problem(text):  # NUL, lone surrogates: shown as U+FFFD, the verdict is refused anyway
        text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    half = (MAX_OUTPUT_CHARS - 5) // 2
    return f"{text[:half]}\n...\n{text[-half:]}"


def _verdict_row(comparison: Comparison, order: str, generation) -> dict:
    from modeling.ml.judging import parse_verdict

    text = generation.text or ""
    problem = generation.error or text_problem(text)
    verdict = parse_verdict(text) if not problem else None
    first, second = (comparison.response_a, comparison.response_b) if order == "ab" else (comparison.response_b, comparison.response_a)
    winner = {"first": first, "second": second}.get(verdict.choice) if verdict else None
    return {
        "winner": winner, "strength": verdict.strength if verdict else "", "output": _kept(text),
        "error": (problem or verdict.error)[:MAX_ERROR_CHARS],
    }


def _judge_batch(run: JudgeRun, comparisons: list[Comparison], backend, params) -> dict[int, dict[str, JudgeVerdict]]:
    """Both orders' verdicts of each comparison: stored ones reused, the others asked of the
    judge in one call and stored."""
    from modeling.ml.judging import judge_messages

    stored: dict[int, dict[str, JudgeVerdict]] = {c.pk: {} for c in comparisons}
    for verdict in JudgeVerdict.objects.filter(comparison__in=comparisons, member=run.member):
        stored[verdict.comparison_id][verdict.order] = verdict
    todo = [(c, order) for c in comparisons for order in ORDERS if order not in stored[c.pk]]
    if not todo:
        return stored
    shown = {"ab": lambda c: (c.response_a.text, c.response_b.text), "ba": lambda c: (c.response_b.text, c.response_a.text)}
    conversations = [judge_messages(c.prompt.messages, *shown[order](c)) for c, order in todo]
    generations = backend.generate(conversations, params)  # model work: outside any transaction
    if len(generations) != len(todo):
        raise JudgeError(f"the judge's backend gave {len(generations)} answers to {len(todo)} questions")
    for (comparison, order), generation in zip(todo, generations):
        fields = _verdict_row(comparison, order, generation)
        try:
            verdict, _ = JudgeVerdict.objects.get_or_create(comparison=comparison, member=run.member, order=order, defaults=fields)
        except IntegrityError:  # a concurrent run stored it first: theirs stands
            verdict = JudgeVerdict.objects.get(comparison=comparison, member=run.member, order=order)
        stored[comparison.pk][order] = verdict
    return stored


def _summarise(run: JudgeRun, comparison: Comparison, verdicts: dict[str, JudgeVerdict], ambiguous_first: bool) -> None:
    """Write the comparison's suggestion from its two verdicts, and count it on the run."""
    from modeling.ml.judging import combine

    # Read back from the rows, new or reused alike: a re-run summarises exactly what is stored.
    ab, ba = (
        stored_verdict(order=order, winner_id=verdicts[order].winner_id, strength=verdicts[order].strength,
                       error=verdicts[order].error, response_a_id=comparison.response_a_id, response_b_id=comparison.response_b_id)
        for order in ORDERS
    )
    suggestion = combine(ab, ba)
    updates = {
        "judge_state": suggestion.state,
        "judge_winner_id": {"a": comparison.response_a_id, "b": comparison.response_b_id}.get(suggestion.winner),
        "judge_strength": suggestion.strength,
        "judge_confidence": suggestion.confidence,
    }
    if ambiguous_first and suggestion.state == "inconsistent":
        updates["priority"] = Greatest(F("priority"), AMBIGUOUS_PRIORITY)
    # The summary and the run's count commit together, and only from "not judged": a second
    # worker on the same comparison changes nothing and counts nothing.
    with transaction.atomic():
        if Comparison.objects.filter(pk=comparison.pk, judge_state="").update(**updates):
            _heartbeat(run, comparisons_done=F("comparisons_done") + 1, **{suggestion.state: F(suggestion.state) + 1})


def _stop_if_it_never_answers(run: JudgeRun, done: int, failed: int) -> None:
    if done >= FAIL_FAST_COMPARISONS and failed == done:
        raise JudgeError(
            f"{run.member.name} gave no usable verdict on any of the {done} comparisons it judged (both orders): it does not "
            "follow the verdict format ([[A]], [[B]] or [[C]] on the last line), so the run stopped. Its answers are kept on "
            "each comparison's page. Name a larger model as the judge, for instance an OpenAI-compatible endpoint."
        )


def judge_execute(*, run_id: int, backend_loader=default_backend_loader) -> JudgeRun:
    """Run (or resume) a judge run. Safe to call twice; a finished run is left as it is. Without
    a limit it goes on until no comparison waits, those that arrived while it ran included. A
    backend that fails fails the run with its error; the verdicts stored so far stay. A judge
    with no usable verdict on its first ``FAIL_FAST_COMPARISONS`` comparisons fails the run too."""
    from modeling.ml.generation import SamplingParams

    # A running run is resumed only when its worker is gone (Redis redelivers an unacknowledged
    # message after its visibility timeout even while the first worker is still on it).
    claimed = job_claim(JudgeRun, run_id, resume_stale=True)
    run = JudgeRun.objects.select_related("project", "member").get(pk=run_id)
    if not claimed:
        return run
    project, member = run.project, run.member
    state, error = JobState.SUCCEEDED, ""
    try:
        if not member.is_active:
            raise JudgeError(f"The judge {member.name} was retired")
        params = SamplingParams(max_new_tokens=JUDGE_MAX_NEW_TOKENS, temperature=0.0, top_p=1.0, seed=0)
        backend = None
        while True:
            done, failed = JudgeRun.objects.values_list("comparisons_done", "failed").get(pk=run.pk)
            _stop_if_it_never_answers(run, done, failed)
            room = None if run.limit is None else max(run.limit - done, 0)
            pending = pending_comparisons(project=project).select_related("prompt", "response_a", "response_b")
            waiting = pending.count()
            _heartbeat(run, comparisons_total=done + (waiting if room is None else min(waiting, room)))
            batch = list(pending[: BATCH_SIZE if room is None else min(BATCH_SIZE, room)])
            if not batch:
                break
            backend = backend or backend_loader(member)  # loaded once there is something to judge
            stored = _judge_batch(run, batch, backend, params)
            for comparison in batch:
                _summarise(run, comparison, stored[comparison.pk], project.ambiguous_first)
    except Exception as exc:  # the judge's failure is the run's result, not the worker's
        logger.exception("judge run %s failed", run_id)
        state, error = JobState.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
    JudgeRun.objects.filter(pk=run.pk).update(state=state, error=error, finished_at=timezone.now())
    run.refresh_from_db()
    return run

