"""Reads for the modeling app."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from modeling.models import CommitteeMember, CommitteeSeat, JobState, Round, RoundState, SamplingRun

REWARD_MODEL_DIR = "reward_model"


def current_reward_model(*, project) -> Path | None:
    """The reward model of the project's latest successful round, if it left one on disk."""
    for path in (
        Round.objects.filter(project=project, state=RoundState.SUCCEEDED)
        .exclude(artifacts_path="")
        .order_by("-number")
        .values_list("artifacts_path", flat=True)
    ):
        candidate = Path(settings.ARTIFACTS_DIR) / path / REWARD_MODEL_DIR
        if (candidate / "config.json").exists():
            return candidate
    return None


def project_committee(*, project) -> list[CommitteeMember]:
    """The active members with ``project_weight``: the project's seat weight, or the member's own
    weight where the project set none (``project_weight_set`` says which). By id: sampling draws
    from this list in this order, seeded, so a re-run draws the same pairs."""
    seats = dict(CommitteeSeat.objects.filter(project=project).values_list("member_id", "weight"))
    members = list(CommitteeMember.objects.filter(is_active=True).order_by("id"))
    for member in members:
        member.project_weight_set = member.pk in seats
        member.project_weight = seats.get(member.pk, member.weight)
    return members


def sampling_active(*, project) -> SamplingRun | None:
    """The project's sampling pass that is queued or running (at most one: a partial unique index)."""
    return SamplingRun.objects.filter(project=project, state__in=(JobState.QUEUED, JobState.RUNNING)).order_by("-id").first()


def sampling_timing(*, run) -> dict:
    """Seconds a pass has run and, while it runs, an ETA from its pace so far (prompts are
    counted as each batch's comparisons commit)."""
    from django.utils import timezone

    elapsed = eta = None
    if run.started_at:
        elapsed = ((run.finished_at or timezone.now()) - run.started_at).total_seconds()
        if run.state == JobState.RUNNING and run.prompts_done:
            eta = elapsed / run.prompts_done * max(0, run.prompts_total - run.prompts_done)
    return {"elapsed_s": None if elapsed is None else round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1)}


def sampling_progress(*, run) -> dict:
    return {
        **sampling_timing(run=run),
        "id": run.pk,
        "mode": run.mode,
        "state": run.state,
        "prompts_done": run.prompts_done,
        "prompts_total": run.prompts_total,
        "responses_created": run.responses_created,
        "responses_failed": run.responses_failed,
        "responses_empty": run.responses_empty,
        "pairs_created": run.pairs_created,
        "pairs_near_duplicate": run.pairs_near_duplicate,
        "member_errors": run.member_errors,
        "error": run.error,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
