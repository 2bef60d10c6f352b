"""Reads for pages and the API. Writes live in ``annotation.services``."""

from __future__ import annotations

import json
import time
from functools import lru_cache

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from annotation.models import (
    Assignment,
    AssignmentState,
    Comparison,
    ComparisonSource,
    Judgment,
    Membership,
    Project,
    Prompt,
    RepeatJudgment,
    Role,
)
from config import db


def project_list_for(*, user) -> list[tuple[Project, Role]]:
    """Projects the user has a role in, with that role (a superuser sees all, as admin)."""
    if user.is_superuser:
        return [(project, Role.ADMIN) for project in Project.objects.all()]
    memberships = Membership.objects.filter(user=user).select_related("project").order_by("project__name")
    return [(m.project, Role(m.role)) for m in memberships]


def project_counts(*, project: Project) -> dict[str, int]:
    return {
        "prompts": project.prompts.count(),
        "responses": project.prompts.aggregate(n=Count("responses"))["n"] or 0,
        "comparisons": project.comparisons.count(),
        "judgments": Judgment.objects.filter(comparison__project=project).count(),
        "labelers": project.memberships.filter(role=Role.LABELER).count(),
    }


_DONE_TODAY_SQL = """
SELECT COALESCE((
    SELECT judgments FROM annotation_labelerday WHERE labeler_id = %(labeler)s AND project_id = %(project)s AND day = %(day)s
), 0)
"""
_REMAINING_SQL = """
SELECT COUNT(*) FROM annotation_comparison c
WHERE c.project_id = %(project)s AND c.is_gold = %(false)s AND c.slots_taken < %(k)s AND c.source <> %(imported)s
"""
_PROGRESS_SQL = f"SELECT ({_DONE_TODAY_SQL}), ({_REMAINING_SQL})"
#: How long a process reuses a project's "remaining" count (a display figure).
REMAINING_TTL_S = 5.0
_remaining: dict[tuple, tuple[float, int]] = {}


def labeler_progress(*, project: Project, labeler) -> dict[str, int]:
    """Done today by this labeler, and comparisons still short of their k labels in the project.

    The labeling API asks for this on every ``next``. "Done today" is one row of
    ``LabelerDay``, which the submit keeps, exact. "Remaining" counts the project's open comparisons,
    which grows with the project (6,000 index entries per request cost PostgreSQL more than
    the lease did), so each process reuses it for ``REMAINING_TTL_S`` seconds.
    Raw SQL because the ORM's version cost more to compile than to run.
    """
    params = {
        "labeler": labeler.pk, "day": connection.ops.adapt_datefield_value(timezone.localdate()), "project": project.pk,
        "false": False, "k": project.overlap_k, "imported": ComparisonSource.IMPORT,
    }
    # created_at: a project id reused by another database (tests roll back) is another project.
    key, now = (project.pk, project.created_at, project.overlap_k), time.monotonic()
    cached = _remaining.get(key)
    with connection.cursor() as cursor:
        if cached is not None and now - cached[0] < REMAINING_TTL_S:
            db.execute(cursor, "arbiter_done_today", _DONE_TODAY_SQL, params)
            (done_today,), remaining = cursor.fetchone(), cached[1]
        else:
            db.execute(cursor, "arbiter_progress", _PROGRESS_SQL, params)
            done_today, remaining = cursor.fetchone()
            _remaining[key] = (now, remaining)
    return {"done_today": done_today, "remaining": remaining}


def labeling_pool(*, project: Project) -> QuerySet[Comparison]:
    """The comparisons the queue serves as regular work: not gold, not imported with their labels,
    and live dialogues' turns only where the project shares them."""
    pool = Comparison.objects.filter(project=project, is_gold=False).exclude(source=ComparisonSource.IMPORT)
    return pool if project.live_share else pool.exclude(source=ComparisonSource.LIVE)


def labeler_left(*, project: Project, labeler) -> int:
    """Comparisons this labeler has not yet labeled or skipped that are open (short of their k
    labels) or leased to them now: their own queue, at most (others may fill a comparison's k
    labels first). Read when the labeling page opens and when work arrives after a wait, not on
    every ``next``: the page counts the labeler's submits down itself."""
    done = Assignment.objects.filter(
        comparison=OuterRef("pk"), labeler=labeler, state__in=(AssignmentState.SUBMITTED, AssignmentState.SKIPPED)
    )
    holding = Assignment.objects.filter(
        comparison=OuterRef("pk"), labeler=labeler, state=AssignmentState.LEASED, expires_at__gt=timezone.now()
    )
    return labeling_pool(project=project).filter(Q(slots_taken__lt=project.overlap_k) | Exists(holding)).exclude(Exists(done)).count()


# Why the queue has nothing for a labeler; the page polls again while work may still come.
QUEUE_REASONS = ("sampling", "no_comparisons", "leased_to_others", "all_done")
QUEUE_REASONS_TO_POLL = ("sampling", "leased_to_others")


def pending_prompts(*, project: Project):
    """Prompts with no comparison of the committee yet, oldest first (what the next sampling pass
    answers). A round's evaluation pair does not count: it judges a policy, and the prompt still
    gets the committee's pair that may train later rounds."""
    has_comparison = Comparison.objects.filter(prompt=OuterRef("pk")).exclude(source=ComparisonSource.EVALUATION)
    return Prompt.objects.filter(project=project).exclude(Exists(has_comparison)).order_by("id")


def labeling_queue_status(*, project: Project, labeler, sampling: dict | None, pending_prompts: int) -> dict:
    """Why ``labeler`` has nothing to lease in ``project`` right now, counted and said in words a
    labeler reads (the labeling page shows ``message`` when ``next`` answers 204).

    ``sampling`` is the project's queued or running sampling pass (its progress), if any;
    ``pending_prompts`` the prompts that no comparison covers yet. Read only when the queue is
    empty, so plain counts are fine here.
    """
    now = timezone.now()
    pool = labeling_pool(project=project)
    comparisons = pool.count()
    yours = pool.filter(assignments__labeler=labeler).distinct().count()
    held = (
        pool.exclude(assignments__labeler=labeler)
        .filter(assignments__state=AssignmentState.LEASED, assignments__expires_at__gt=now)
        .distinct()
        .count()
    )
    if sampling is not None:
        reason = "sampling"
        if sampling["state"] == "queued":
            message = ("The committee is about to answer prompts: a sampling pass is queued for the gpu worker "
                       "(it waits while a round trains). Comparisons appear as each batch of answers finishes.")
        else:
            message = (f"The committee is answering prompts: {sampling['prompts_done']} of {sampling['prompts_total']} done, "
                       f"{sampling['pairs_created']} comparisons made so far. New ones appear as each batch finishes.")
    elif comparisons == 0:
        reason = "no_comparisons"
        message = (f"This project has no comparisons yet: the committee has not answered its prompts "
                   f"({pending_prompts} waiting). A lead starts sampling on the project page.")
    elif held:
        reason = "leased_to_others"
        message = (f"The {held} comparisons still open to you are being labeled by others right now. A lease left "
                   f"unanswered ends after {project.lease_minutes} minutes and comes back to the queue.")
    else:
        reason = "all_done"
        message = f"You have labeled everything open to you ({yours} of the project's {comparisons} comparisons)."
        if pending_prompts:
            message += f" {pending_prompts} prompts still wait for the committee's answers; a lead can start sampling."
    return {
        "reason": reason, "message": message, "poll": reason in QUEUE_REASONS_TO_POLL,
        "comparisons": comparisons, "yours": yours, "leased_to_others": held, "pending_prompts": pending_prompts,
        "left_for_you": labeler_left(project=project, labeler=labeler), "sampling": sampling,
    }


def assignment_payload(*, assignment: Assignment, project: Project) -> dict:
    """What the labeler's screen (or API client) needs: no member names, no response ids.

    Sides are reported as ``left``/``right`` only; the server maps them back on submit, so
    nothing in the payload identifies which committee member wrote what.
    """
    content = comparison_content(assignment.comparison_id)
    right_id = next(pk for pk in content["responses"] if pk != assignment.left_response_id)
    suggestion = judge_suggestion(assignment=assignment, project=project) if project.suggestions_shown else None
    return {
        **({"suggestion": suggestion} if suggestion else {}),
        "assignment": assignment.pk,
        "expires_at": assignment.expires_at.isoformat(),
        "conversation": content["conversation"],
        "left": content["responses"][assignment.left_response_id],
        "right": content["responses"][right_id],
        "ask": {
            "attributes": project.ask_attributes,
            "flags": project.ask_flags,
            "rationale": project.ask_rationale,
            "edit": project.edit_step,
            "max_edit_chars": project.max_edit_chars,
            "safety": project.ask_safety,
        },
    }


def in_blind_share(assignment_id: int, share: float) -> bool:
    """Whether a lease falls in the project's blind share (never shown a suggestion): a fixed
    hash of its id (Knuth's multiplicative), so a reload of the page decides the same."""
    return (assignment_id * 2654435761 % 2**32) / 2**32 < share


def judge_suggestion(*, assignment: Assignment, project: Project) -> dict | None:
    """The judge's suggestion for this lease, where the project shows them: its side (as the
    labeler sees it), strength and confidence; None when there is none to show or the lease is in
    the blind share. Only consistent verdicts (the same in both orders) are suggestions; a swapped
    repeat and a round's evaluation pair are never shown one (they measure the labeler and the
    policy). The first read records on the lease whether it was shown or blind (one UPDATE, only
    for a suggestion), so the quality page can compare how often labels follow it in each slice."""
    if assignment.repeat_of_id is not None:
        return None
    row = (
        Comparison.objects.filter(pk=assignment.comparison_id, judge_state="consistent", judge_winner__isnull=False)
        .exclude(source__in=(ComparisonSource.EVALUATION, ComparisonSource.IMPORT))
        .values_list("judge_winner_id", "judge_strength", "judge_confidence")
        .first()
    )
    if row is None:
        return None
    winner, strength, confidence = row
    slice_ = "blind" if in_blind_share(assignment.pk, project.suggestion_blind_share) else "shown"
    Assignment.objects.filter(pk=assignment.pk, suggestion="").update(suggestion=slice_)
    if slice_ == "blind":
        return None
    return {
        "side": "left" if winner == assignment.left_response_id else "right",
        "strength": strength,
        "confidence": None if confidence is None else round(confidence, 2),
    }


@lru_cache(maxsize=4096)
def comparison_content(comparison_id: int) -> dict:
    """The prompt and both responses of a comparison, rendered; cached per process and in the row.

    Safe to cache without invalidation: a comparison's prompt and responses never change once
    labelers may see them (the admin shows them read-only), since judgments refer to exactly
    what was shown. The sampler stores the rendering in ``Comparison.rendered`` when it creates
    the pair, so a request reads one column instead of a five-table join plus Markdown (about
    6 ms of CPU per comparison); a row without it is rendered by the first request and stored.
    """
    with connection.cursor() as cursor:  # raw: this runs on every "next" a process has not seen
        db.execute(cursor, "arbiter_rendered", "SELECT rendered FROM annotation_comparison WHERE id = %s", [comparison_id])
        (stored,) = cursor.fetchone()
    if isinstance(stored, str):  # SQLite hands JSON back as text; PostgreSQL's jsonb arrives decoded
        stored = json.loads(stored)
    if stored is None:
        stored = _comparison_render(comparison_id)
        # Concurrent first readers render the same thing; whichever writes first wins.
        Comparison.objects.filter(pk=comparison_id, rendered__isnull=True).update(rendered=stored)
    # JSON object keys are strings; the payload looks responses up by their integer id.
    return {**stored, "responses": {int(pk): r for pk, r in stored["responses"].items()}}


def _comparison_render(comparison_id: int) -> dict:
    from annotation.rendering import comparison_rendering, prompt_marks

    comparison = Comparison.objects.select_related("prompt", "response_a", "response_b").get(pk=comparison_id)
    return comparison_rendering(
        messages=comparison.prompt.messages, marks=prompt_marks(comparison.prompt.metadata),
        responses=[(r.pk, r.text) for r in (comparison.response_a, comparison.response_b)],
    )


# --- a lead's view of the comparisons and their judgments ---------------------------------------

BROWSE_PAGE_SIZE = 50


def _letter(comparison, response_id: int | None) -> str:
    """"A" or "B": which of the comparison's two responses ``response_id`` is, as stored."""
    return "A" if response_id == comparison.response_a_id else "B"


def comparisons_browse(*, project: Project, source: str = "", gold: str = "", labeled: str = "", labeler: str = "",
                       page: int = 1) -> dict:
    """One page of the project's comparisons, newest first, with the filters a lead uses: where
    they came from, gold or not, how far along their labels are, and one labeler's judgments."""
    query = Comparison.objects.filter(project=project).select_related(
        "prompt", "response_a__member", "response_b__member"
    ).annotate(labels=Count("judgments", distinct=True)).order_by("-id")
    if source in ComparisonSource.values:
        query = query.filter(source=source)
    if gold in ("yes", "no"):
        query = query.filter(is_gold=gold == "yes")
    if labeled == "none":
        query = query.filter(labels=0)
    elif labeled == "some":
        query = query.filter(labels__gt=0, labels__lt=project.overlap_k)
    elif labeled == "complete":
        query = query.filter(labels__gte=project.overlap_k)
    if labeler:
        query = query.filter(judgments__labeler__username=labeler)
    paginator = Paginator(query, BROWSE_PAGE_SIZE)
    current = paginator.get_page(page)
    ids = [c.pk for c in current.object_list]
    verdicts: dict[int, list] = {i: [] for i in ids}
    for j in Judgment.objects.filter(comparison_id__in=ids).select_related("labeler", "comparison").order_by("id"):
        verdicts[j.comparison_id].append({
            "labeler": j.labeler.username, "side": _letter(j.comparison, j.chosen_response_id),
            "strength": j.strength, "edited": j.edited_response_id is not None, "both_bad": j.both_bad,
        })
    rows = [{
        "comparison": c, "prompt": c.prompt.messages[-1]["content"][:200],
        "members": [r.member.name if r.member else r.source for r in (c.response_a, c.response_b)],
        "gold": _letter(c, c.gold_winner_id) if c.is_gold else None,
        "judgments": verdicts[c.pk],
    } for c in current.object_list]
    return {"page": current, "rows": rows, "total": paginator.count}


def comparison_detail(*, project: Project, comparison_id: int) -> dict | None:
    """A comparison with every judgment on it: who, which answer (A/B as stored, not as shown),
    how strongly, rationale, flags, and the edit as a word diff against the answer it improved."""
    comparison = (
        Comparison.objects.filter(project=project, pk=comparison_id)
        .select_related("prompt", "response_a__member", "response_b__member", "gold_winner")
        .first()
    )
    if comparison is None:
        return None
    judgments = []
    for j in (Judgment.objects.filter(comparison=comparison)
              .select_related("labeler", "chosen_response", "edited_response").order_by("id")):
        judgments.append({
            "judgment": j, "side": _letter(comparison, j.chosen_response_id),
            "shown_left": _letter(comparison, j.left_response_id),
            "diff": word_diff(j.chosen_response.text, j.edited_response.text) if j.edited_response_id else None,
        })
    return {
        "comparison": comparison,
        "gold": _letter(comparison, comparison.gold_winner_id).lower() if comparison.is_gold else None,
        "judgments": judgments,
    }


def labeler_flip_rates(*, project: Project) -> dict[str, dict]:
    """Per labeler, their swapped repeats answered in ``project`` and how often the winner flipped
    from their original verdict: ``{username: {"repeats", "flips", "flip_rate", "ci95": [low, high]}}``
    with a 95% Wilson interval. Labelers without a repeat answered are left out."""
    from annotation.reliability import wilson_interval

    counts = (
        RepeatJudgment.objects.filter(original__comparison__project=project)
        .values("labeler__username")
        .annotate(repeats=Count("id"), flips=Count("id", filter=Q(flipped=True)))
        .order_by("labeler__username")
    )
    return {
        row["labeler__username"]: {
            "repeats": row["repeats"], "flips": row["flips"], "flip_rate": row["flips"] / row["repeats"],
            "ci95": list(wilson_interval(row["flips"], row["repeats"])),
        }
        for row in counts
    }


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """``[(op, text)]`` with op in {"same", "ins", "del"}, word by word (whitespace kept), for a
    template to show as <ins>/<del> (escaped like any text)."""
    import difflib
    import re

    a, b = re.findall(r"\s+|\S+", before), re.findall(r"\s+|\S+", after)
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("ins", "".join(b[j1:j2])))
    return out
