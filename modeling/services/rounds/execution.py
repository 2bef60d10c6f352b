"""Starting, retrying and cancelling rounds, and running one: the Round row is the job
(config/jobs.py), claimed once, its heartbeat kept by a thread, its unfinished steps run in order;
the scheduler that starts rounds when enough new judgments arrived."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import AuditAction, ComparisonSource, Judgment, Project
from annotation.services.audit import audit_record
from config.jobs import job_claim, send_after_commit
from modeling.models import ACTIVE_ROUND_STATES, Round, RoundState
from modeling.services.rounds.evaluation import evaluation_pairs_create
from modeling.services.rounds.settings import RoundConflict, RoundError, merged_config
from modeling.services.rounds.steps import STEPS, register_policy, round_dir, round_log

logger = logging.getLogger(__name__)

#: Well inside Round.stale_after (5 minutes), after which the watchdog calls the worker lost.
HEARTBEAT_EVERY_S = 15


@transaction.atomic
def round_start(*, project: Project, user=None, config: dict | None = None, preset: str = "standard") -> Round:
    """Queue a round with a preset's settings and ``config`` on top; the task is sent once the
    row is committed. One active round per project."""
    from modeling import tasks

    merged = merged_config(config, preset)
    number = (Round.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
    try:
        with transaction.atomic():
            round_ = Round.objects.create(project=project, number=number, config=merged, created_by=user)
    except IntegrityError:
        raise RoundConflict("A round is already queued or running in this project") from None
    audit_record(
        action=AuditAction.ROUND_STARTED, project=project, target=f"round {number}", actor=user,
        details={"round": round_.pk, "scheduled": user is None, "config": merged},
    )
    send_after_commit(tasks.round_run, round_.pk)
    return round_


@transaction.atomic
def round_retry(*, round_: Round, user=None) -> Round:
    """Queue a failed or cancelled round again; it resumes at its first unfinished step."""
    from modeling import tasks

    if round_.state not in (RoundState.FAILED, RoundState.CANCELLED):
        raise RoundConflict(f"Only a failed or cancelled round can be retried (this one is {round_.state})")
    try:
        with transaction.atomic():
            updated = Round.objects.filter(pk=round_.pk, state=round_.state).update(
                state=RoundState.QUEUED, error="", finished_at=None, heartbeat_at=None,
                resent_at=timezone.now(),  # its message is sent now: the watchdog counts from here
            )
    except IntegrityError:
        raise RoundConflict("Another round is queued or running in this project") from None
    if updated:
        round_log(round_.pk, "retry queued: resuming at the first unfinished step")
        audit_record(action=AuditAction.ROUND_RETRIED, project=round_.project, target=f"round {round_.number}", actor=user, details={"round": round_.pk})
        send_after_commit(tasks.round_run, round_.pk)
    round_.refresh_from_db()
    return round_


@transaction.atomic
def round_cancel(*, round_: Round, user=None) -> Round:
    """Stop a queued or running round; a running step finishes, the next one does not start."""
    cancelled = Round.objects.filter(pk=round_.pk, state__in=ACTIVE_ROUND_STATES).update(
        state=RoundState.CANCELLED, finished_at=timezone.now()
    )
    if cancelled:
        audit_record(action=AuditAction.ROUND_CANCELLED, project=round_.project, target=f"round {round_.number}", actor=user, details={"round": round_.pk})
    round_.refresh_from_db()
    return round_


class _Heartbeat:
    """Refreshes ``heartbeat_at`` from a thread while a long step runs in the main one."""

    def __init__(self, round_id: int):
        self.round_id, self.stop = round_id, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.wait(HEARTBEAT_EVERY_S):
                Round.objects.filter(pk=self.round_id).update(heartbeat_at=timezone.now())
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


OWNER_FILE = "round.json"


def _claim_round_dir(round_: Round) -> Path:
    """The round's folder, marked as this round's. Steps resume from files they find there (a
    retry must not train again), so a folder left by another round of the same project and
    number (a database restored or reset, ARTIFACTS_DIR kept) must not be read as this round's
    work: it is moved aside, not deleted, and the round starts clean."""
    workdir = round_dir(round_)
    owner = workdir / OWNER_FILE
    mine = {"round_id": round_.pk, "project": round_.project.slug, "number": round_.number,
            "created_at": round_.created_at.isoformat()}
    if workdir.exists():
        try:
            found = json.loads(owner.read_text())
        except (OSError, ValueError):
            found = None
        if found != mine:
            aside = workdir.with_name(f"{workdir.name}.stale-{timezone.now():%Y%m%d%H%M%S}")
            workdir.rename(aside)
            round_log(round_.pk, f"{workdir.name} held another round's files; moved aside to {aside.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    owner.write_text(json.dumps(mine))
    return workdir


def round_execute(*, round_id: int) -> Round:
    """Run a queued round's unfinished steps. Safe to call twice; a second caller while one runs,
    or a call on a finished round, changes nothing."""
    round_ = Round.objects.select_related("project").get(pk=round_id)
    first = next((state for state, _ in STEPS if state not in round_.step_timings), RoundState.EVALUATING)
    if not job_claim(Round, round_id, to_state=first):
        return round_
    workdir = _claim_round_dir(round_)
    try:
        with _Heartbeat(round_id):
            for state, step in STEPS:
                round_.refresh_from_db()
                if round_.state == RoundState.CANCELLED:
                    round_log(round_id, "cancelled; stopping before " + state)
                    return round_
                if state in round_.step_timings:
                    continue
                Round.objects.filter(pk=round_id).exclude(state=RoundState.CANCELLED).update(
                    state=state, progress={"step": state, "phase": "starting", "updated_at": timezone.now().isoformat()}
                )
                round_log(round_id, f"{state}: started")
                started = timezone.now()
                metrics = step(round_, workdir)
                seconds = round((timezone.now() - started).total_seconds(), 2)
                round_.metrics = {**round_.metrics, state: metrics}  # keyed by step: "snapshot", "training_rm", ...
                round_.step_timings = {**round_.step_timings, state: seconds}
                round_.artifacts_path = str(workdir.relative_to(settings.ARTIFACTS_DIR))
                round_.save(update_fields=["metrics", "step_timings", "artifacts_path"])
                round_log(round_id, f"{state}: done in {seconds} s")
            round_.refresh_from_db()
            if round_.state == RoundState.CANCELLED:
                return round_
            member = register_policy(round_, workdir)
            if "human_eval" not in round_.metrics:
                human = evaluation_pairs_create(round_=round_, policy=member, workdir=workdir)
                round_.metrics = {**round_.metrics, "human_eval": human}
                round_.save(update_fields=["metrics"])
                if human["pairs"]:
                    round_log(round_id, f"{human['pairs']} evaluation pairs in the labeling queue")
            (workdir / "metrics.json").write_text(json.dumps(round_.metrics, indent=2, default=str))
            Round.objects.filter(pk=round_id).exclude(state=RoundState.CANCELLED).update(
                state=RoundState.SUCCEEDED, finished_at=timezone.now(), progress={}
            )
            round_log(round_id, f"succeeded; new policy: {member.name + (' (active)' if member.is_active else ' (not admitted)') if member else 'none'}")
    except Exception as exc:
        logger.exception("round %s failed", round_id)
        Round.objects.filter(pk=round_id).update(
            state=RoundState.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000], finished_at=timezone.now()
        )
        round_log(round_id, f"failed: {type(exc).__name__}: {exc}")
    round_.refresh_from_db()
    return round_


def rounds_start_due() -> list[int]:
    """Start a round in every project whose schedule is on and that gathered enough new judgments."""
    started = []
    for project in Project.objects.filter(round_schedule_enabled=True):
        if Round.objects.filter(project=project, state__in=ACTIVE_ROUND_STATES).exists():
            continue
        last = Round.objects.filter(project=project, state=RoundState.SUCCEEDED).order_by("-number").first()
        since = (last.last_judgment_id if last else 0) or 0
        new = Judgment.objects.filter(comparison__project=project, id__gt=since)
        if not project.evaluation_trains:  # labels that will not train do not call for a round
            new = new.exclude(comparison__source=ComparisonSource.EVALUATION)
        new = new.count()
        if new >= project.round_min_new_judgments:
            try:
                started.append(round_start(project=project).pk)
            except RoundError:
                continue
    return started
