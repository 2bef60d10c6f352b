"""Live dialogues: a labeler writes a turn, two committee members answer it on the ``live``
worker while the page watches, and the judged turn becomes ordinary labeling data.

The web side (``dialogue_start``, ``turn_start``, ``turn_redraw``, ``dialogue_end``,
``turn_view``) writes rows and sends ``modeling.tasks.live_turn_run``; it never loads a model.
The worker side (``live_turn_execute``) streams both answers into the ``LiveTurn`` row, a flush
every ``FLUSH_S``, and once both are done stores the turn (Prompt, two Responses, a Comparison,
the author's lease) in one transaction. The page polls ``turn_view``: one row read.

Transport: the page polls a cheap endpoint (``GET /api/v1/live-turns/<id>/``) every
``POLL_MS``. It works the same on SQLite with the file broker and on PostgreSQL with Redis, holds
no web worker per watching labeler (server-sent events from a sync gunicorn worker would hold one
for the whole answer), and ``bench/live.py`` measures what it costs.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    Dialogue,
    DialogueState,
    Judgment,
    Project,
    Prompt,
    Response,
    ResponseSource,
)
from annotation.rendering import comparison_rendering
from annotation.services.prompts import prompt_content_hash
from config.jobs import job_claim, send_after_commit
from config.untrusted import text_problem
from modeling.models import CommitteeMember, JobState, LiveSide, LiveTurn, LiveWorker
from modeling.services.sampling import answer_showable, default_backend_loader, draw_two, weighted_committee

logger = logging.getLogger(__name__)

#: A labeler's turn, and a dialogue's system prompt, are at most this long.
MAX_TURN_CHARS = 8_000
MAX_SYSTEM_PROMPT_CHARS = 4_000
#: Live answers stop here even when a member's own setting allows more: a labeler reads them.
LIVE_MAX_NEW_TOKENS = 384
#: How often the worker writes the growing answers to the row (and checks for a redraw).
FLUSH_S = 0.1
#: How often the page asks for the row while answers grow (static/js/label.js reads it from the page).
POLL_MS = 150
#: A live worker whose heartbeat is older than this is down; a running turn whose row has not
#: moved for ``TURN_STALE_S`` lost its worker (the worker writes every FLUSH_S while it answers).
WORKER_BEAT_S = 2
WORKER_STALE_S = 10
TURN_STALE_S = 5


class LiveError(Exception):
    """A live request refused; ``code`` and ``status`` as the labeling API's errors."""

    code, status = "invalid", 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class LiveNotFound(LiveError):
    code, status = "not_found", 404


class LiveConflict(LiveError):
    code, status = "conflict", 409


# --- the web side ---------------------------------------------------------------------------------


def dialogue_open(*, project: Project, labeler) -> Dialogue | None:
    return Dialogue.objects.filter(project=project, labeler=labeler, state=DialogueState.OPEN).first()


def _text(value: str, *, name: str, limit: int, required: bool) -> str:
    if not isinstance(value, str):
        raise LiveError(f"{name}: expected text")
    if required and not value.strip():
        raise LiveError(f"{name}: write something first")
    if len(value) > limit:
        raise LiveError(f"{name}: at most {limit} characters (got {len(value)})")
    problem = text_problem(value)
    if problem:
        raise LiveError(f"{name}: {problem}")
    return value.strip()


def dialogue_start(*, project: Project, labeler, text: str, system_prompt: str = "", category: str = "") -> LiveTurn:
    """Start a dialogue with its first turn. An open dialogue of the labeler in this project is
    ended first (one open dialogue each: the page resumes it)."""
    if not project.takes_written:
        raise LiveError("This project takes imported prompts only; a lead can let labelers write them in the settings")
    system_prompt = _text(system_prompt, name="system_prompt", limit=MAX_SYSTEM_PROMPT_CHARS, required=False)
    if system_prompt and not project.allow_system_prompt:
        raise LiveError("system_prompt: this project does not let labelers set a system prompt")
    if category and category not in (project.prompt_categories or []):
        raise LiveError(f"category: not one of this project's categories ({', '.join(project.prompt_categories) or 'none'})")
    text = _text(text, name="text", limit=MAX_TURN_CHARS, required=True)
    _members_for(project)  # refuse before anything is written when the committee cannot answer
    with transaction.atomic():
        current = dialogue_open(project=project, labeler=labeler)
        if current is not None:
            dialogue_end(dialogue=current, labeler=labeler)
        dialogue = Dialogue.objects.create(project=project, labeler=labeler, system_prompt=system_prompt, category=category)
        return turn_start(dialogue=dialogue, labeler=labeler, text=text)


def _own(dialogue: Dialogue, labeler) -> None:
    if dialogue.labeler_id != labeler.pk:
        raise LiveNotFound("No such dialogue for you")  # another labeler's dialogue is none of this one's business


def _stored_turns(dialogue: Dialogue) -> list[Prompt]:
    return list(Prompt.objects.filter(dialogue=dialogue).order_by("turn_index"))


def _author_judgment(prompt: Prompt, labeler) -> Judgment | None:
    return (
        Judgment.objects.filter(comparison__prompt=prompt, comparison__source=ComparisonSource.LIVE, labeler=labeler)
        .select_related("chosen_response", "edited_response")
        .first()
    )


def dialogue_context(*, dialogue: Dialogue) -> tuple[list[dict], dict[str, str]]:
    """The conversation the next turn continues, and its assistant marks: each judged turn's
    messages, then its edited answer if there is one, else the chosen one."""
    last = Prompt.objects.filter(dialogue=dialogue).order_by("turn_index").last()
    if last is None:
        return ([{"role": "system", "content": dialogue.system_prompt}] if dialogue.system_prompt else []), {}
    judgment = _author_judgment(last, dialogue.labeler)
    if judgment is None:
        raise LiveConflict("Judge the current turn before writing the next one")
    answer, mark = (
        (judgment.edited_response.text, "edited") if judgment.edited_response_id else (judgment.chosen_response.text, "chosen")
    )
    marks = dict(last.metadata.get("assistant_marks") or {})
    marks[str(len(last.messages))] = mark
    return [*last.messages, {"role": "assistant", "content": answer}], marks


def _members_for(project: Project) -> list[CommitteeMember]:
    members = weighted_committee(project)
    if len(members) < 2:
        raise LiveConflict("A live turn needs two active committee members with a weight above 0 in this project; ask a lead")
    return members


def _draw(members: list[CommitteeMember], avoid: tuple[int, int] | None = None) -> tuple[CommitteeMember, CommitteeMember]:
    """Two different members by weight, as batch sampling draws them (unseeded: a live turn is
    drawn once); a redraw avoids the pair it replaces when the committee has another."""
    rng = random.Random()
    for _ in range(20):
        first, second = draw_two(rng, members)
        if avoid is None or {first.pk, second.pk} != set(avoid) or len(members) == 2:
            break
    return first, second


def turn_start(*, dialogue: Dialogue, labeler, text: str) -> LiveTurn:
    """Queue the committee's answers to the labeler's next turn."""
    from modeling import tasks

    _own(dialogue, labeler)
    text = _text(text, name="text", limit=MAX_TURN_CHARS, required=True)
    project = dialogue.project
    with transaction.atomic():
        dialogue = Dialogue.objects.select_for_update().get(pk=dialogue.pk)
        if dialogue.state != DialogueState.OPEN:
            raise LiveConflict("This dialogue has ended; start a new one")
        if LiveTurn.objects.filter(dialogue=dialogue, state__in=[JobState.QUEUED, JobState.RUNNING], cancelled=False).exists():
            raise LiveConflict("The committee is still answering this dialogue's turn")
        pending = LiveTurn.objects.filter(dialogue=dialogue, state=JobState.SUCCEEDED, assignment__state=AssignmentState.LEASED)
        if pending.exists():
            raise LiveConflict("Judge the current turn before writing the next one")
        turn_index = Prompt.objects.filter(dialogue=dialogue).count()
        if turn_index >= project.dialogue_max_turns:
            raise LiveError(f"This dialogue has its {project.dialogue_max_turns} turns (the project's limit); end it and start a new one")
        context, marks = dialogue_context(dialogue=dialogue)
        first, second = _draw(_members_for(project))
        turn = LiveTurn.objects.create(
            dialogue=dialogue, turn_index=turn_index, messages=[*context, {"role": "user", "content": text}], marks=marks,
            member_a=first, member_b=second, left_is_a=random.random() < 0.5,
        )
    send_after_commit(tasks.live_turn_run, turn.pk)
    return turn


def turn_redraw(*, turn_id: int, labeler) -> LiveTurn:
    """Give up on a turn's answers (a side failed, the worker stopped, or the labeler wants
    another pair) and ask a new pair of members; nothing of the old answers is stored."""
    from modeling import tasks

    with transaction.atomic():
        turn = LiveTurn.objects.select_for_update().select_related("dialogue", "dialogue__project").filter(pk=turn_id).first()
        if turn is None or turn.dialogue.labeler_id != labeler.pk:
            raise LiveNotFound("No such live turn for you")
        if turn.dialogue.state != DialogueState.OPEN:
            raise LiveConflict("This dialogue has ended; start a new one")
        if turn.comparison_id is not None:
            raise LiveConflict("Both answers of this turn are in; judge them")
        if turn.cancelled:
            raise LiveConflict("This turn was already redrawn")
        _cancel(turn, "redrawn by the labeler")
        first, second = _draw(_members_for(turn.dialogue.project), avoid=(turn.member_a_id, turn.member_b_id))
        new = LiveTurn.objects.create(
            dialogue=turn.dialogue, turn_index=turn.turn_index, messages=turn.messages, marks=turn.marks,
            member_a=first, member_b=second, left_is_a=random.random() < 0.5,
        )
    send_after_commit(tasks.live_turn_run, new.pk)
    return new


def _cancel(turn: LiveTurn, why: str) -> None:
    """Tell the worker to stop (it reads ``cancelled`` at its next flush); a queued turn ends here."""
    now = timezone.now()
    LiveTurn.objects.filter(pk=turn.pk).update(cancelled=True)
    LiveTurn.objects.filter(pk=turn.pk, state=JobState.QUEUED).update(state=JobState.FAILED, error=why, finished_at=now)


def dialogue_end(*, dialogue: Dialogue, labeler) -> Dialogue:
    """End a dialogue at any turn: answers still coming are dropped, and a turn answered but not
    judged gives its lease back (its comparison stays, for others when the project shares)."""
    from annotation.services.labeling.common import AlreadyEnded, LeaseExpired
    from annotation.services.labeling.submit import assignment_skip

    _own(dialogue, labeler)
    with transaction.atomic():
        dialogue = Dialogue.objects.select_for_update().get(pk=dialogue.pk)
        if dialogue.state == DialogueState.ENDED:
            return dialogue
        for turn in LiveTurn.objects.filter(dialogue=dialogue, cancelled=False, state__in=[JobState.QUEUED, JobState.RUNNING]):
            _cancel(turn, "the dialogue ended")
        leased = Assignment.objects.filter(live_turn__dialogue=dialogue, state=AssignmentState.LEASED).values_list("pk", flat=True)
        for assignment_id in leased:
            try:
                assignment_skip(assignment_id=assignment_id, labeler=labeler, reason="dialogue ended before this turn was judged")
            except (LeaseExpired, AlreadyEnded):  # expired, or judged meanwhile: nothing to give back
                pass
        dialogue.state, dialogue.ended_at = DialogueState.ENDED, timezone.now()
        dialogue.save(update_fields=["state", "ended_at"])
    return dialogue


def _latest_turn(dialogue: Dialogue) -> LiveTurn | None:
    """The dialogue's newest turn that was not redrawn or dropped."""
    return LiveTurn.objects.filter(dialogue=dialogue, cancelled=False).select_related("assignment").order_by("-id").first()


def dialogue_resume(*, project: Project, labeler) -> Dialogue | None:
    """The labeler's open dialogue, for the page that opens or comes back to it. A dialogue whose
    answered turn's lease ran out unjudged (the tab was closed and the lease expired) cannot go on
    from that turn: it is ended, and the page starts a new one."""
    dialogue = dialogue_open(project=project, labeler=labeler)
    if dialogue is None:
        return None
    latest = _latest_turn(dialogue)
    lapsed = (
        latest is not None and latest.assignment_id is not None and not hasattr(latest.assignment, "judgment")
        and (latest.assignment.state == AssignmentState.EXPIRED
             or (latest.assignment.state == AssignmentState.LEASED and latest.assignment.expires_at <= timezone.now()))
    )
    if lapsed:
        dialogue_end(dialogue=dialogue, labeler=labeler)
        return None
    return dialogue


def live_worker_up(*, now=None) -> bool:
    now = now or timezone.now()
    return LiveWorker.objects.filter(beat_at__gte=now - timedelta(seconds=WORKER_STALE_S)).exists()


def turn_view(*, turn: LiveTurn, worker_up: bool | None = None, project_id: int | None = None) -> dict:
    """What the live page shows of a turn: both answers as they grow, by screen side, blind (no
    member names), which side failed, whether the worker is there, and once both answers are in,
    the comparison to judge (the same payload as the labeling queue's)."""
    from annotation.selectors import assignment_payload

    now = timezone.now()
    sides = {"a": (turn.text_a, turn.side_a, turn.error_a), "b": (turn.text_b, turn.side_b, turn.error_b)}
    left, right = ("a", "b") if turn.left_is_a else ("b", "a")

    def side(key: str) -> dict:
        text, state, error = sides[key]
        # The member's error can name its model: a labeler only learns that this side failed.
        return {"text": text, "state": state, "failed": state == LiveSide.FAILED,
                **({"error": "This side's model could not answer." + (" It timed out." if "timed out" in error.lower() else "")} if state == LiveSide.FAILED else {})}

    worker_up = live_worker_up(now=now) if worker_up is None else worker_up
    stalled = turn.state == JobState.RUNNING and turn.heartbeat_at is not None and turn.heartbeat_at < now - timedelta(seconds=TURN_STALE_S)
    if turn.cancelled:
        status, message = "cancelled", "This pair was redrawn or the dialogue ended."
    elif turn.state == JobState.QUEUED:
        status = "waiting"
        message = ("Waiting for the live worker…" if worker_up else
                   "The live worker is not running: your turn is kept and will be answered when it is back.")
    elif stalled:
        status, message = "stalled", "The live worker stopped answering. Redraw the pair to try again (r)."
    elif turn.state == JobState.RUNNING:
        status, message = "generating", ""
    elif turn.state == JobState.SUCCEEDED:
        status, message = "answered", ""
    else:
        failed = [name for name, key in (("left", left), ("right", right)) if sides[key][1] == LiveSide.FAILED]
        status = "failed"
        message = (f"The {' and '.join(failed)} side could not answer. Redraw the pair to try again (r)." if failed else
                   (turn.error or "The turn failed.") + " Redraw the pair to try again (r).")
    view = {
        "turn": turn.pk, "dialogue": turn.dialogue_id, "turn_index": turn.turn_index, "state": turn.state,
        # The labeler's own dialogue so far, ending with their message (shown as text).
        "conversation": _conversation(turn.messages, turn.marks),
        "status": status, "message": message, "worker_up": worker_up, "poll_ms": POLL_MS,
        "left": side(left), "right": side(right), "task": None,
    }
    if turn.assignment_id is not None:
        assignment = turn.assignment
        if assignment.state == AssignmentState.LEASED and assignment.expires_at > now:
            # Once per turn (the page stops polling): the project's row is read only here.
            project = turn.dialogue.project if project_id is None else Project.objects.get(pk=project_id)
            view["task"] = assignment_payload(assignment=assignment, project=project)
        else:
            view["assignment_state"] = assignment.state
    return view


def _conversation(messages: list[dict], marks: dict) -> list[dict]:
    return [{"role": m["role"], "content": m["content"], **({"mark": marks[str(i)]} if str(i) in marks else {})}
            for i, m in enumerate(messages)]


# The poll, a few times a second per watching labeler: one statement for the turn, its owner, its
# lease and whether a live worker beats. Raw SQL like the labeling hot path: compiling the ORM's
# three-table select_related cost ~10 ms of the web's CPU per poll (bench/live.py: 17 ms a
# request, 37 CPU-s in 96 s with 4 labelers on 2 cores, taken from the live worker).
POLL_SQL = """
SELECT t.id, t.dialogue_id, t.turn_index, t.state, t.messages, t.marks, t.left_is_a, t.text_a, t.text_b,
       t.side_a, t.side_b, t.error_a, t.error_b, t.cancelled, t.heartbeat_at, t.error, t.assignment_id,
       a.comparison_id, a.left_response_id, a.state, a.leased_at, a.expires_at, d.project_id,
       EXISTS (SELECT 1 FROM modeling_liveworker w WHERE w.beat_at >= %(beat_after)s)
FROM modeling_liveturn t
JOIN annotation_dialogue d ON d.id = t.dialogue_id
LEFT JOIN annotation_assignment a ON a.id = t.assignment_id
WHERE t.id = %(turn)s AND d.labeler_id = %(labeler)s
"""


def turn_poll(*, turn_id: int, labeler) -> dict | None:
    """``turn_view`` of the caller's own turn, read in one raw statement; None when it is not theirs."""
    import json

    from django.db import connection

    from annotation.services.labeling.common import aware, db_time
    from config import db

    now = timezone.now()
    with connection.cursor() as cursor:
        db.execute(cursor, "arbiter_live_poll", POLL_SQL,
                   {"turn": turn_id, "labeler": labeler.pk, "beat_after": db_time(now - timedelta(seconds=WORKER_STALE_S))})
        row = cursor.fetchone()
    if row is None:
        return None
    (pk, dialogue_id, turn_index, state, messages, marks, left_is_a, text_a, text_b, side_a, side_b, error_a, error_b,
     cancelled, heartbeat_at, error, assignment_id, comparison_id, left_id, a_state, leased_at, expires_at, project_id, worker_up) = row
    decode = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731  (SQLite: text; PostgreSQL: jsonb)
    turn = LiveTurn(
        id=pk, dialogue_id=dialogue_id, turn_index=turn_index, state=state, messages=decode(messages), marks=decode(marks),
        left_is_a=bool(left_is_a), text_a=text_a, text_b=text_b, side_a=side_a, side_b=side_b, error_a=error_a,
        error_b=error_b, cancelled=bool(cancelled), heartbeat_at=heartbeat_at and aware(heartbeat_at), error=error,
        assignment_id=assignment_id,
    )
    if assignment_id is not None:
        turn.assignment = Assignment(
            id=assignment_id, comparison_id=comparison_id, labeler_id=labeler.pk, left_response_id=left_id, state=a_state,
            leased_at=aware(leased_at), expires_at=aware(expires_at),
        )
    return turn_view(turn=turn, worker_up=bool(worker_up), project_id=project_id)


def dialogue_view(*, dialogue: Dialogue) -> dict:
    """The page's resume state: the dialogue, its stored turns and the latest live turn."""
    turns = _stored_turns(dialogue)
    latest = _latest_turn(dialogue)
    judged = {
        j.comparison.prompt_id
        for j in Judgment.objects.filter(comparison__prompt__in=turns, labeler=dialogue.labeler).select_related("comparison")
    }
    project = dialogue.project
    return {
        "dialogue": dialogue.pk, "state": dialogue.state, "max_turns": project.dialogue_max_turns,
        "turns_stored": len(turns), "turns_judged": sum(1 for p in turns if p.pk in judged),
        "current": turn_view(turn=latest) if latest is not None else None,
        "context": _judged_context(dialogue),
    }


def _judged_context(dialogue: Dialogue) -> list[dict]:
    """The conversation a next turn would continue, once the last stored turn is judged."""
    try:
        messages, marks = dialogue_context(dialogue=dialogue)
    except LiveConflict:
        return []
    return _conversation(messages, marks)


# --- the worker side ------------------------------------------------------------------------------


@dataclass
class _SideResult:
    generation: object | None = None
    error: str = ""


#: One llama.cpp/transformers decode step at a time in a worker process: two answers (and two
#: labelers) take turns token by token instead of running their thread pools against each other
#: on the same cores (llama.cpp's threads spin; two contexts on 2 cores fell from 34 to 9 tokens/s).
_LOCAL_STEP = threading.Lock()
_LOAD = threading.Lock()


def _params(member: CommitteeMember):
    from modeling.ml.generation import SamplingParams

    settings_ = member.generation_settings()
    return SamplingParams(
        max_new_tokens=min(int(settings_["max_new_tokens"]), LIVE_MAX_NEW_TOKENS),
        temperature=float(settings_["temperature"]), top_p=float(settings_["top_p"]),
    )


def _steps(iterator, local: bool, stop: threading.Event, emit) -> bool:
    """Hand ``iterator``'s items to ``emit`` until it ends (True) or ``stop`` is set (False); a
    local engine's step is taken under ``_LOCAL_STEP``."""
    while not stop.is_set():
        try:
            if local:
                with _LOCAL_STEP:
                    item = next(iterator)
            else:
                item = next(iterator)
        except StopIteration:
            return True
        emit(item)
    close = getattr(iterator, "close", None)
    if close:
        close()
    return False


def _pump(key: str, member: CommitteeMember, backend, messages: list[dict], out: queue.Queue, stop: threading.Event) -> None:
    """Stream one member's answer into ``out`` as (key, delta); the last item is (key, _SideResult)."""
    try:
        stream = backend.stream(messages, _params(member))
        local = getattr(backend, "engine", "") != "openai"
        finished = _steps(iter(stream), local, stop, lambda delta: out.put((key, delta)))
    except Exception as exc:  # the member's failure is this side's, not the turn's
        logger.warning("live: member %s failed: %s", member.name, exc)
        out.put((key, _SideResult(error=f"{type(exc).__name__}: {exc}"[:500])))
        return
    out.put((key, _SideResult(generation=stream.result) if finished else _SideResult(error="stopped")))


def _answer(turn: LiveTurn, out: queue.Queue, stop: threading.Event, backend_loader) -> None:
    """Both members' answers into ``out``: (key, delta) items, then (key, _SideResult) per side.

    Two members served by one loaded llama.cpp model (the demo's SmolLM2 at two temperatures, a
    policy and its base's GGUF...) decode as two sequences of one context, one ``llama_decode``
    per step for both; other pairs stream side by side in threads of their own."""
    sides = {"a": turn.member_a, "b": turn.member_b}
    backends = {}
    for key, member in sides.items():
        try:
            with _LOAD:  # two sides of one model load it once
                backends[key] = backend_loader(member)
        except Exception as exc:
            logger.warning("live: member %s did not load: %s", member.name, exc)
            out.put((key, _SideResult(error=f"{type(exc).__name__}: {exc}"[:500])))
    shared = backends.get("a")
    if len(backends) == 2 and shared is backends["b"] and hasattr(shared, "stream_batch"):
        keys, done = ("a", "b"), set()

        def emit(event) -> None:
            i, item = event
            if isinstance(item, str):
                out.put((keys[i], item))
            else:
                done.add(keys[i])
                out.put((keys[i], _SideResult(generation=item, error=item.error)))

        try:
            _steps(shared.stream_batch([turn.messages, turn.messages], [_params(sides[k]) for k in keys]), True, stop, emit)
        except Exception as exc:  # the model's failure is both sides'
            logger.warning("live: batched answers failed: %s", exc)
            for key in keys:
                if key not in done:
                    done.add(key)
                    out.put((key, _SideResult(error=f"{type(exc).__name__}: {exc}"[:500])))
        for key in keys:
            if key not in done:
                out.put((key, _SideResult(error="stopped")))
        return
    pumps = [
        threading.Thread(target=_pump, args=(key, sides[key], backend, turn.messages, out, stop), daemon=True, name=f"live-{turn.pk}-{key}")
        for key, backend in backends.items()
    ]
    for thread in pumps:
        thread.start()
    for thread in pumps:
        thread.join()


def live_turn_execute(*, turn_id: int, backend_loader=default_backend_loader) -> LiveTurn:
    """Answer one live turn with its two members, streaming both into the row; store the turn
    when both answers are in. A second delivery finds the row claimed and leaves it."""
    if not job_claim(LiveTurn, turn_id):
        return LiveTurn.objects.get(pk=turn_id)
    turn = LiveTurn.objects.select_related("member_a", "member_b", "dialogue", "dialogue__project").get(pk=turn_id)
    started = timezone.now()
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    runner = threading.Thread(target=_answer, args=(turn, out, stop, backend_loader), daemon=True, name=f"live-{turn_id}")
    runner.start()
    parts: dict[str, list[str]] = {"a": [], "b": []}
    results: dict[str, _SideResult] = {}
    cancelled = False
    last_flush = 0.0
    dirty = True
    while len(results) < 2:
        try:
            key, item = out.get(timeout=FLUSH_S)
            if isinstance(item, _SideResult):
                results[key] = item
            else:
                parts[key].append(item)
            dirty = True
        except queue.Empty:
            pass
        if time.monotonic() - last_flush >= FLUSH_S or len(results) == 2:
            updates = {"heartbeat_at": timezone.now()}
            if dirty:
                updates.update(text_a="".join(parts["a"]), text_b="".join(parts["b"]))
                for key, result in results.items():
                    updates[f"side_{key}"] = LiveSide.FAILED if result.error else LiveSide.DONE
                    updates[f"error_{key}"] = result.error[:500]
            # A redraw or an ended dialogue sets ``cancelled``: the update then matches no row.
            if not LiveTurn.objects.filter(pk=turn_id, cancelled=False).update(**updates):
                cancelled = True
                stop.set()
            last_flush, dirty = time.monotonic(), False
        if cancelled and not runner.is_alive():
            break
        if not runner.is_alive() and out.empty():  # it always reports both sides; never wait forever
            for key in ("a", "b"):
                results.setdefault(key, _SideResult(error="the answer ended without a result"))
    stop.set()
    runner.join(timeout=30)
    if cancelled:
        LiveTurn.objects.filter(pk=turn_id).update(state=JobState.FAILED, error="cancelled", finished_at=timezone.now())
        return LiveTurn.objects.get(pk=turn_id)
    problems = {}
    for key in ("a", "b"):
        result = results[key]
        gen = result.generation
        problem = result.error or (gen.error if gen else "no answer") or text_problem(gen.text) or (
            None if answer_showable(gen.text, gen.completion_tokens) else "an empty answer"
        )
        if problem:
            problems[key] = problem
    if problems:
        LiveTurn.objects.filter(pk=turn_id).update(
            state=JobState.FAILED, finished_at=timezone.now(),
            error="; ".join(f"side {k}: {v}" for k, v in problems.items())[:2000],
            **{f"side_{k}": LiveSide.FAILED for k in problems}, **{f"error_{k}": v[:500] for k, v in problems.items()},
        )
        return LiveTurn.objects.get(pk=turn_id)
    try:
        _turn_store(turn_id=turn_id, generations={k: results[k].generation for k in ("a", "b")}, started=started)
    except _NotStored as exc:
        LiveTurn.objects.filter(pk=turn_id).update(state=JobState.FAILED, error=str(exc), finished_at=timezone.now())
    return LiveTurn.objects.get(pk=turn_id)


class _NotStored(Exception):
    pass


def _turn_hash(dialogue_id: int, turn_index: int, messages: list[dict]) -> str:
    """A live turn's prompt is its own row even when another dialogue said the same words."""
    return hashlib.sha256(f"live:{dialogue_id}:{turn_index}:{prompt_content_hash(messages=messages)}".encode()).hexdigest()


def _turn_store(*, turn_id: int, generations: dict, started) -> None:
    """The judged-to-be turn as ordinary rows, with the author's lease, all or nothing."""
    now = timezone.now()
    with transaction.atomic():
        turn = LiveTurn.objects.select_for_update().select_related("dialogue", "dialogue__project").get(pk=turn_id)
        dialogue, project = turn.dialogue, turn.dialogue.project
        if turn.cancelled or dialogue.state != DialogueState.OPEN:
            raise _NotStored("cancelled")
        marks = turn.marks
        try:
            with transaction.atomic():
                prompt = Prompt.objects.create(
                    project=project, messages=turn.messages, category=dialogue.category, source=f"live:{dialogue.pk}",
                    metadata={"live": {"dialogue": dialogue.pk, "turn": turn.turn_index, "author": dialogue.labeler_id},
                              **({"assistant_marks": marks} if marks else {})},
                    content_hash=_turn_hash(dialogue.pk, turn.turn_index, turn.messages),
                    dialogue=dialogue, turn_index=turn.turn_index,
                )
        except IntegrityError:
            raise _NotStored("this turn of the dialogue is already stored") from None
        responses = {}
        for key, member in (("a", turn.member_a), ("b", turn.member_b)):
            gen = generations[key]
            settings_ = member.generation_settings()
            responses[key] = Response.objects.create(
                prompt=prompt, source=ResponseSource.MODEL, member=member, text=gen.text,
                sampling={"max_new_tokens": min(int(settings_["max_new_tokens"]), LIVE_MAX_NEW_TOKENS),
                          "temperature": float(settings_["temperature"]), "top_p": float(settings_["top_p"]), "live": True},
                latency_ms=gen.latency_ms, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                finish_reason=gen.finish_reason, engine=gen.engine,
                timings=gen.timings() | {"queue_ms": int(((turn.started_at or started) - turn.created_at).total_seconds() * 1000)},
            )
        first, second = sorted(responses.values(), key=lambda r: r.pk)
        comparison = Comparison.objects.create(
            project=project, prompt=prompt, response_a=first, response_b=second, source=ComparisonSource.LIVE,
            slots_taken=1,
            rendered=comparison_rendering(messages=prompt.messages, responses=[(r.pk, r.text) for r in (first, second)],
                                          marks={int(i): m for i, m in marks.items()}),
        )
        assignment = Assignment.objects.create(
            comparison=comparison, labeler=dialogue.labeler, left_response=responses["a" if turn.left_is_a else "b"],
            state=AssignmentState.LEASED, leased_at=now, expires_at=now + timedelta(minutes=project.lease_minutes),
        )
        LiveTurn.objects.filter(pk=turn_id).update(
            state=JobState.SUCCEEDED, finished_at=now, heartbeat_at=now, comparison=comparison, assignment=assignment,
            text_a=generations["a"].text, text_b=generations["b"].text, side_a=LiveSide.DONE, side_b=LiveSide.DONE,
        )


# --- the live worker's heartbeat --------------------------------------------------------------------


def live_worker_beat(*, hostname: str, started_at) -> None:
    now = timezone.now()
    LiveWorker.objects.update_or_create(hostname=hostname[:200], defaults={"beat_at": now, "started_at": started_at})


def live_worker_gone(*, hostname: str) -> None:
    LiveWorker.objects.filter(hostname=hostname[:200]).delete()
