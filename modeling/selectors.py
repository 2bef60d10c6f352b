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
    members = list(CommitteeMember.objects.filter(is_active=True).select_related("base_member").order_by("id"))
    for member in members:
        member.project_weight_set = member.pk in seats
        member.project_weight = seats.get(member.pk, member.weight)
    return members


def member_pair_stats(*, project) -> dict[tuple[int, int], tuple[int, float]]:
    """Per unordered pair of members (lower id first): how many human labels compared their
    answers, and the lower id's score over them (1 won, 0.5 a tie as the leaderboard counts it,
    0 lost). What the ``active`` member-pair rule reads to find the widest intervals."""
    from annotation.models import IMPORTED_ACCOUNT_PREFIX, Judgment
    from annotation.quality import label_score

    stats: dict[tuple[int, int], list] = {}
    rows = (
        Judgment.objects.filter(comparison__project=project, comparison__response_a__member__isnull=False,
                                comparison__response_b__member__isnull=False)
        .exclude(labeler__username__startswith=IMPORTED_ACCOUNT_PREFIX)
        .values_list("comparison__response_a__member_id", "comparison__response_b__member_id", "chosen_response_id",
                     "comparison__response_a_id", "strength")
    )
    for a, b, chosen, a_id, strength in rows.iterator(chunk_size=5000):
        if a == b:
            continue
        score_a = label_score(strength=strength, won=chosen == a_id)
        key, score = ((a, b), score_a) if a < b else ((b, a), 1 - score_a)
        entry = stats.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += score
    return {key: (n, score) for key, (n, score) in stats.items()}


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
        # How the pass chose pairs (rule, or why it fell back to random), when it chose any.
        "selection": run.config.get("selection", ""),
        "error": run.error,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def human_evaluation(*, rounds) -> dict[int, dict]:
    """What labelers say of each round's evaluation pairs (its new policy against the previous
    one, modeling/services/rounds/evaluation.py), as labels arrive: per round id, the new policy's
    human win rate over the labels ("negligibly better / unsure" counts half, as a tie in the
    leaderboard) with its 95% Wilson interval; the reward model's predicted win rate on the same
    pairs; and how often the reward model's verdict matches a labeler's (labels that pick a side,
    pairs the reward model does not tie). One query for all the rounds."""
    from annotation.models import IMPORTED_ACCOUNT_PREFIX, Judgment, Strength
    from annotation.quality import label_score
    from modeling.ml.evaluation import wilson_interval
    from modeling.models import EvaluationPair

    ids = [r.pk for r in rounds]
    stats: dict[int, dict] = {}
    pairs: dict[int, tuple] = {}  # comparison id -> (round id, new response id, RM prefers new, RM tied)
    for round_id, comparison_id, new_id, reward_new, reward_previous in EvaluationPair.objects.filter(round_id__in=ids).values_list(
        "round_id", "comparison_id", "new_response_id", "reward_new", "reward_previous"
    ):
        s = stats.setdefault(round_id, {"pairs": 0, "rm_wins": 0.0, "labels": 0, "wins": 0.0, "agree": 0, "decisive": 0, "labelled": set()})
        s["pairs"] += 1
        s["rm_wins"] += 1.0 if reward_new > reward_previous else 0.5 if reward_new == reward_previous else 0.0
        pairs[comparison_id] = (round_id, new_id, reward_new > reward_previous, reward_new == reward_previous)
    labels = (
        Judgment.objects.filter(comparison__evaluation_pair__round_id__in=ids)
        .exclude(labeler__username__startswith=IMPORTED_ACCOUNT_PREFIX)
        .values_list("comparison_id", "chosen_response_id", "strength")
    )
    for comparison_id, chosen_id, strength in labels.iterator(chunk_size=5000):
        round_id, new_id, rm_prefers_new, rm_tied = pairs[comparison_id]
        s = stats[round_id]
        s["labels"] += 1
        s["labelled"].add(comparison_id)
        s["wins"] += label_score(strength=strength, won=chosen_id == new_id)
        if strength != Strength.NEGLIGIBLY_BETTER and not rm_tied:  # both picked a side
            s["decisive"] += 1
            s["agree"] += (chosen_id == new_id) == rm_prefers_new

    def rate(successes: float, n: int) -> tuple[float | None, list[float] | None]:
        if not n:
            return None, None
        low, high = wilson_interval(successes, n)
        return round(successes / n, 4), [round(low, 4), round(high, 4)]

    out = {}
    for round_id, s in stats.items():
        win_rate, ci95 = rate(s["wins"], s["labels"])
        rm_win_rate, rm_ci95 = rate(s["rm_wins"], s["pairs"])
        agreement, agreement_ci95 = rate(s["agree"], s["decisive"])
        out[round_id] = {
            "pairs": s["pairs"], "labelled_pairs": len(s["labelled"]), "labels": s["labels"],
            "win_rate": win_rate, "ci95": ci95, "rm_win_rate": rm_win_rate, "rm_ci95": rm_ci95,
            "rm_agreement": agreement, "rm_agreement_ci95": agreement_ci95, "rm_agreement_labels": s["decisive"],
        }
    return out
