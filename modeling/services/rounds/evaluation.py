"""Humans judge a round's new policy: which prompts it is evaluated on, the evaluation pairs that
go to the labelers, and the policy's admission on their verdict.

The round's evaluation step (``steps._step_evaluate``) has the new and the previous policy answer
``evaluation_prompts`` and the round's reward model score both answers. Once the new policy is a
committee member, ``evaluation_pairs_create`` turns those answers into comparisons of source
``evaluation``: blind and served like any pair, kept out of exports and of the next rounds'
snapshots unless the project says they train (``Project.evaluation_trains``). What labelers say of
them is read by ``modeling.selectors.human_evaluation``; ``policies_admit`` (beat, every minute)
admits or retires a policy on it under the project's rule ``if_humans_prefer``.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.exports import is_heldout
from annotation.models import (
    AuditAction,
    Comparison,
    ComparisonSource,
    Judgment,
    PolicyAdmission,
    Prompt,
    Response,
    ResponseSource,
)
from annotation.rendering import comparison_rendering
from annotation.services.audit import audit_record
from config.untrusted import text_problem
from modeling.models import CommitteeMember, EvaluationPair, Round, RoundState

logger = logging.getLogger(__name__)

EVALUATION_DIR = "evaluation"
PAIRS_FILE = "pairs.jsonl"


def evaluation_prompts(*, round_: Round, count: int) -> list[Prompt]:
    """Up to ``count`` prompts of the project that neither policy trained on, in this order:
    prompts with no judgment up to the round's cut that no earlier round evaluated on (nothing
    trained on them; if the project lets evaluation labels train, theirs fall into the split like
    any label), then held-out prompts of the round's split not evaluated on before, then held-out
    prompts evaluated on before. By id, so a retried step asks the same prompts."""
    if count <= 0:
        return []
    project = round_.project
    judged = Judgment.objects.filter(comparison__project=project)
    if round_.last_judgment_id is not None:
        judged = judged.filter(id__lte=round_.last_judgment_id)
    evaluated = set(EvaluationPair.objects.filter(round__project=project).values_list("comparison__prompt_id", flat=True))
    fresh = (
        Prompt.objects.filter(project=project)
        .exclude(id__in=judged.values("comparison__prompt_id"))
        .exclude(id__in=evaluated)
        .order_by("id")
    )
    chosen = list(fresh[:count])
    if len(chosen) < count:
        percent = int(round_.config.get("heldout_percent", 10))
        unused, reused = [], []
        for prompt in Prompt.objects.filter(project=project, id__in=judged.values("comparison__prompt_id")).order_by("id").iterator(chunk_size=2000):
            if is_heldout(prompt.content_hash, percent):
                (reused if prompt.pk in evaluated else unused).append(prompt)
                if len(unused) >= count:
                    break
        chosen += (unused + reused)[: count - len(chosen)]
    return chosen


def write_pairs(final: Path, prompts: list[Prompt], result: dict) -> None:
    """The head-to-head's answers, one line per prompt, for ``evaluation_pairs_create``."""
    with (final / PAIRS_FILE).open("w", encoding="utf-8") as out:
        for prompt, answer in zip(prompts, result["answers"]):
            out.write(json.dumps({"prompt_id": prompt.pk, "sampling": result.get("sampling") or {}, **answer}) + "\n")


#: Evaluation answers are numbered from here: sampling passes number a member's answers to a prompt
#: from 0 and reuse the one they find at an index, so an evaluation answer below this would be
#: taken for a committee sample (and its pair for the committee's).
EVALUATION_SAMPLE_INDEX = 10_000


def _next_index(prompt_id: int, member: CommitteeMember) -> int:
    top = (
        Response.objects.filter(prompt_id=prompt_id, member=member, source=ResponseSource.MODEL, sample_index__gte=EVALUATION_SAMPLE_INDEX)
        .aggregate(n=Max("sample_index"))["n"]
    )
    return EVALUATION_SAMPLE_INDEX if top is None else top + 1


@transaction.atomic
def evaluation_pairs_create(*, round_: Round, policy: CommitteeMember | None, workdir: Path) -> dict:
    """Turn the evaluation step's answers into blind evaluation comparisons, once per round.

    An answer the database cannot store, an empty one, or a pair of near-identical answers is
    not worth a labeler's time and is counted instead. Returns the counts, stored in the round's
    metrics (``human_eval``)."""
    from modeling.services.sampling import answer_showable, near_duplicates

    existing = EvaluationPair.objects.filter(round=round_).count()
    if existing:
        return {"pairs": existing}
    path = workdir / EVALUATION_DIR / PAIRS_FILE
    dpo = round_.metrics.get(RoundState.TRAINING_DPO, {})
    if policy is None or not round_.config.get("human_eval", True) or not path.exists():
        return {"pairs": 0}
    previous = CommitteeMember.objects.get(pk=dpo["starting_member_id"])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = Prompt.objects.in_bulk([r["prompt_id"] for r in rows])
    rng = random.Random(round_.pk)
    counts = {"pairs": 0, "unusable": 0, "near_duplicate": 0, "prompt_gone": 0}
    for row in rows:
        prompt = prompts.get(row["prompt_id"])
        if prompt is None or prompt.project_id != round_.project_id:
            counts["prompt_gone"] += 1
            continue
        answers = (row["new"], row["old"])
        if any(a.get("error") or text_problem(a["text"]) or not answer_showable(a["text"], a.get("completion_tokens")) for a in answers):
            counts["unusable"] += 1
            continue
        if near_duplicates(row["new"]["text"], row["old"]["text"]):
            counts["near_duplicate"] += 1
            continue
        responses = {}
        for side, member in (("new", policy), ("old", previous)):
            answer = row[side]
            responses[side] = Response.objects.create(
                prompt=prompt, source=ResponseSource.MODEL, member=member, sample_index=_next_index(prompt.pk, member),
                text=answer["text"], sampling={**row["sampling"], "evaluation_round": round_.number},
                latency_ms=answer.get("latency_ms"), prompt_tokens=answer.get("prompt_tokens"),
                completion_tokens=answer.get("completion_tokens"), finish_reason=(answer.get("finish_reason") or "")[:20],
                engine=str(answer.get("engine") or "")[:12],
                timings=answer["timings"] if isinstance(answer.get("timings"), dict) else {},
                reward=row["reward_new" if side == "new" else "reward_old"],
            )
        new, old = responses["new"], responses["old"]
        first, second = (new, old) if rng.random() < 0.5 else (old, new)  # the lease randomises sides again
        comparison = Comparison.objects.create(
            project=round_.project, prompt=prompt, response_a=first, response_b=second, source=ComparisonSource.EVALUATION,
            rendered=comparison_rendering(messages=prompt.messages, responses=[(r.pk, r.text) for r in (first, second)]),
        )
        EvaluationPair.objects.create(
            round=round_, comparison=comparison, new_response=new, previous_response=old,
            reward_new=row["reward_new"], reward_previous=row["reward_old"],
        )
        counts["pairs"] += 1
    return counts


def policies_admit(*, now=None) -> list[dict]:
    """Under the project rule ``if_humans_prefer``, decide each waiting round policy once its
    evaluation pairs have ``admission_min_labels`` labels: it joins the committee if labelers
    prefer it to the previous policy (win rate over 0.5, ties half), else it stays retired. The
    decision is final, in the round's metrics (``human_admission``) and the audit log."""
    from modeling.selectors import human_evaluation

    waiting = list(
        Round.objects.filter(state=RoundState.SUCCEEDED, project__policy_admission=PolicyAdmission.IF_HUMANS_PREFER,
                             policy_member__isnull=False)
        .exclude(metrics__has_key="human_admission")
        .select_related("project", "policy_member")
    )
    stats = human_evaluation(rounds=waiting)
    now = now or timezone.now()
    decided = []
    for round_ in waiting:
        human = stats.get(round_.pk)
        if not human or human["labels"] < round_.project.admission_min_labels:
            continue
        joins = human["win_rate"] > 0.5
        decision = {"decided_at": now.isoformat(), "labels": human["labels"], "win_rate": human["win_rate"],
                    "ci95": human["ci95"], "joined": joins}
        with transaction.atomic():
            locked = Round.objects.select_for_update().get(pk=round_.pk)
            if "human_admission" in locked.metrics:
                continue
            locked.metrics = {**locked.metrics, "human_admission": decision}
            locked.save(update_fields=["metrics"])
            member = round_.policy_member
            CommitteeMember.objects.filter(pk=member.pk).update(
                is_active=joins, retired_at=None if joins else (member.retired_at or now)
            )
            audit_record(
                action=AuditAction.POLICY_DECIDED, project=round_.project, target=f"member {member.name}", actor=None,
                details={"round": round_.pk, **decision},
            )
        logger.info("round %s: policy %s %s on %s labels (win rate %s)", round_.pk, member.name,
                    "joins" if joins else "stays out", human["labels"], human["win_rate"])
        decided.append({"round": round_.pk, "member": member.name, **decision})
    return decided
