"""Labeler reliability: a ReliabilityFit row is the job; the ``default`` worker fits the model of
``annotation/reliability.py`` over the project's human judgments and stores each labeler's
parameters and profile with the time of the fit. Pages read the newest finished fit; exports
aggregated "reliability-weighted" weigh each comparison's labels with its labelers' parameters.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Length
from django.utils import timezone

from annotation.models import IMPORTED_ACCOUNT_PREFIX, Judgment, JobState, Project, ReliabilityFit, Strength
from annotation.selectors import labeler_flip_rates
from config.jobs import job_claim, send_after_commit

#: A page asks for a new fit when judgments arrived since the last one, at most this often.
REFIT_AFTER = timedelta(seconds=60)


def _human_judgments(project: Project):
    return Judgment.objects.filter(comparison__project=project).exclude(labeler__username__startswith=IMPORTED_ACCOUNT_PREFIX)


@transaction.atomic
def reliability_fit_start(*, project: Project, user=None) -> ReliabilityFit:
    """Queue a fit unless one is queued or running already (then that one is returned)."""
    from annotation import tasks

    # The project's row is the lock: two page views (or a view and the API) asking at once queue
    # one fit, not two (a lock on pending fits would lock nothing when there is none).
    Project.objects.select_for_update().filter(pk=project.pk).exists()
    pending = ReliabilityFit.objects.filter(project=project, state__in=(JobState.QUEUED, JobState.RUNNING)).first()
    if pending is not None:
        return pending
    fit = ReliabilityFit.objects.create(project=project, state=JobState.QUEUED, created_by=user)
    send_after_commit(tasks.reliability_fit, fit.pk)
    return fit


def reliability_fit_latest(*, project: Project) -> ReliabilityFit | None:
    return ReliabilityFit.objects.filter(project=project, state=JobState.SUCCEEDED).first()


def reliability_fit_refresh(*, project: Project) -> tuple[ReliabilityFit | None, ReliabilityFit | None]:
    """What a quality page calls: the newest finished fit, and the fit queued or running, which is
    queued here when judgments arrived since the newest finished one (or none exists) and none was
    asked for in the last ``REFIT_AFTER``. The worker fits; the request only reads and queues."""
    done = reliability_fit_latest(project=project)
    newest = ReliabilityFit.objects.filter(project=project).first()
    if newest is not None and newest.state in (JobState.QUEUED, JobState.RUNNING):
        return done, newest
    last = _human_judgments(project).aggregate(n=Max("id"))["n"]
    if last is None or (done is not None and done.last_judgment_id >= last):
        return done, None
    if newest is not None and newest.created_at > timezone.now() - REFIT_AFTER:
        return done, None
    return done, reliability_fit_start(project=project)


def judgments_since_fit(*, project: Project, fit: ReliabilityFit | None) -> int:
    """Human judgments the fit has not read (all of them without a fit)."""
    query = _human_judgments(project)
    return query.filter(id__gt=fit.last_judgment_id).count() if fit else query.count()


def profile_rows(*, project: Project, last_judgment_id: int | None = None):
    """The project's human judgments as ``reliability.ProfileRow``s (what the fit and the profile read)."""
    from annotation.reliability import ProfileRow

    query = _human_judgments(project)
    if last_judgment_id is not None:
        query = query.filter(id__lte=last_judgment_id)
    query = query.annotate(a_len=Length("comparison__response_a__text"), b_len=Length("comparison__response_b__text")).values_list(
        "comparison_id", "labeler__username", "chosen_response_id", "comparison__response_a_id", "left_response_id",
        "strength", "time_on_task_ms", "comparison__is_gold", "comparison__gold_winner_id", "a_len", "b_len",
    ).order_by("id")
    return [
        ProfileRow(
            comparison=c, labeler=name, chose_a=chosen == a_id, a_left=left == a_id, strength=strength, seconds=ms / 1000,
            gold_correct=(chosen == gold_winner) if is_gold and gold_winner else None,
            a_longer=None if a_len == b_len else a_len > b_len,
        )
        for c, name, chosen, a_id, left, strength, ms, is_gold, gold_winner, a_len, b_len in query.iterator(chunk_size=5000)
    ]


def reliability_fit_execute(*, fit_id: int) -> ReliabilityFit:
    """Run a queued fit (a second delivery of the message finds it claimed and returns it)."""
    from annotation import reliability

    if not job_claim(ReliabilityFit, fit_id):
        return ReliabilityFit.objects.get(pk=fit_id)
    fit = ReliabilityFit.objects.select_related("project").get(pk=fit_id)
    started = time.monotonic()
    try:
        last = _human_judgments(fit.project).aggregate(n=Max("id"))["n"] or 0
        rows = profile_rows(project=fit.project, last_judgment_id=last)
        flips = {name: (v["repeats"], v["flips"]) for name, v in labeler_flip_rates(project=fit.project).items()}
        result = reliability.fit(rows)
        profiles, summary = reliability.labeler_profiles(rows, result, flips, strengths=tuple(Strength.values))
    except Exception as error:  # the row says what went wrong; the page shows it
        ReliabilityFit.objects.filter(pk=fit_id).update(state=JobState.FAILED, error=f"{type(error).__name__}: {error}"[:2000],
                                                        finished_at=timezone.now())
        raise
    summary.update(iterations=result.iterations, converged=result.converged, seconds=round(time.monotonic() - started, 2))
    ReliabilityFit.objects.filter(pk=fit_id).update(
        state=JobState.SUCCEEDED, finished_at=timezone.now(), heartbeat_at=timezone.now(), last_judgment_id=last, judgments=len(rows),
        labelers={name: {"reliability": p.reliability, "bias": p.bias, "left_on_tie": p.left_on_tie, "labels": p.labels}
                  for name, p in result.labelers.items()},
        profiles=profiles, summary=summary,
    )
    fit.refresh_from_db()
    return fit
