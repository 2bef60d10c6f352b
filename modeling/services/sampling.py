"""Sampling: the committee answers a project's pending prompts and the answers become comparisons.

The SamplingRun row is the job. ``sampling_execute`` is safe to run twice: responses are unique
by (prompt, member, sample index) and reused when they exist, members are drawn per prompt
with a seed derived from the prompt, and a prompt that already has a comparison is not pending.
A run records the last prompt it covers when it starts, so a redelivered message resumes the
same prompts (not the next ``limit`` pending ones), and takes over a running run only once its
worker stopped reporting.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import defaultdict
from itertools import combinations
from dataclasses import replace
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from rapidfuzz import fuzz

from annotation.models import (
    AuditAction, Comparison, ComparisonSource, MemberPairRule, Project, Prompt, Response, ResponseSource, SelectionRule,
)
from annotation.services.audit import audit_record
from annotation.rendering import comparison_rendering
from annotation.selectors import pending_prompts
from modeling.selectors import current_reward_model, member_pair_stats, project_committee
from config.jobs import job_claim, send_after_commit
from config.untrusted import text_problem
from modeling.models import CommitteeMember, JobState, SamplingRun
from modeling.services.members import member_spec

logger = logging.getLogger(__name__)

#: Two answers this similar after normalisation (rapidfuzz ratio, 0-100) are not worth a human's time.
NEAR_DUPLICATE_RATIO = 97.0
DEFAULT_BATCH_SIZE = 8
#: The D-optimal design's prior information (ridge x I) on per-dimension scaled embeddings: the
#: ridge bench/active_selection.py chose by validation log-loss on HH-RLHF pairs (SmolLM2 states).
DESIGN_RIDGE = 316.0


class SamplingError(Exception):
    pass


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def near_duplicates(a: str, b: str) -> bool:
    na, nb = _normalise(a), _normalise(b)
    return na == nb or fuzz.ratio(na, nb) >= NEAR_DUPLICATE_RATIO


def answer_showable(text: str, completion_tokens: int | None) -> bool:
    """Empty answers, or answers cut off before their first token, are never shown to labelers
    (sampling passes and a round's evaluation pairs alike)."""
    return bool(text.strip()) and (completion_tokens is None or completion_tokens > 0)


def _showable(response: Response) -> bool:
    return answer_showable(response.text, response.completion_tokens)


@transaction.atomic
def sampling_start(*, project: Project, user=None, mode: str = SamplingRun.Mode.COMMITTEE, limit: int | None = None,
                   max_new_tokens: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> SamplingRun:
    """Queue a sampling pass; the task is sent once the row is committed."""
    from modeling import tasks

    config = {"limit": limit, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    try:
        with transaction.atomic():
            run = SamplingRun.objects.create(project=project, mode=mode, config=config, created_by=user)
            audit_record(
                action=AuditAction.SAMPLING_STARTED, project=project, target=f"sampling {run.pk}", actor=user,
                details={"run": run.pk, "mode": mode, **config},
            )
    except IntegrityError:
        raise SamplingError("A sampling pass is already queued or running in this project") from None
    send_after_commit(tasks.sample_run, run.pk)
    return run


def weighted_committee(project: Project) -> list[CommitteeMember]:
    """The project's active members with a weight above 0: those a pair is drawn from."""
    return [m for m in project_committee(project=project) if m.project_weight > 0]


def draw_two(rng: random.Random, members: list[CommitteeMember]) -> tuple[CommitteeMember, CommitteeMember]:
    """Two different members by the project's weights (Llama 3)."""
    first = rng.choices(members, weights=[m.project_weight for m in members])[0]
    rest = [m for m in members if m.pk != first.pk]
    second = rng.choices(rest, weights=[m.project_weight for m in rest])[0]
    return first, second


def _draw_pair(prompt: Prompt, members: list[CommitteeMember]) -> tuple[CommitteeMember, CommitteeMember]:
    """``draw_two`` seeded by the prompt, so a re-run draws the same."""
    return draw_two(random.Random(prompt.pk), members)


def weight_pair_probabilities(members: list[CommitteeMember]) -> dict[tuple[int, int], float]:
    """The chance ``draw_two`` draws each unordered pair (lower id first): first i then j, or j then i."""
    total = sum(m.project_weight for m in members)
    p = {m.pk: m.project_weight / total for m in members}
    return {
        (a, b): p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b])
        for a, b in combinations(sorted(p), 2)
    }


def active_pair_probabilities(member_ids: list[int], stats: dict[tuple[int, int], tuple[int, float]],
                              uniform_share: float) -> dict[tuple[int, int], float]:
    """Chatbot Arena's active pairing (Chiang et al. 2024, section 5): each unordered pair of
    members is drawn with a chance proportional to how much one more label shrinks the interval of
    its win rate, sqrt(v / n) - sqrt(v / (n + 1)), with v = w (1 - w) the win rate's variance
    (w smoothed as (score + 1) / (n + 2), n counted from 1 so an unseen pair is finite and first),
    mixed with ``uniform_share`` of the uniform distribution so that every pair keeps a chance and
    the recorded probabilities stay usable as inverse weights."""
    pairs = list(combinations(sorted(member_ids), 2))
    gains = {}
    for pair in pairs:
        n, score = stats.get(pair, (0, 0.0))
        w = (score + 1) / (n + 2)
        v = w * (1 - w)
        gains[pair] = math.sqrt(v / (n + 1)) - math.sqrt(v / (n + 2))
    total = sum(gains.values())
    return {pair: (1 - uniform_share) * gains[pair] / total + uniform_share / len(pairs) for pair in pairs}


def _draw_by_probability(prompt: Prompt, probabilities: dict[tuple[int, int], float]) -> tuple[int, int]:
    """One pair by its probability, seeded by the prompt (a re-run draws the same)."""
    pairs = sorted(probabilities)
    return random.Random(prompt.pk).choices(pairs, weights=[probabilities[p] for p in pairs])[0]


def _draw_k(prompt: Prompt, members: list[CommitteeMember], k: int) -> list[tuple[CommitteeMember, int]]:
    """K samples across members by weight, each with its per-member sample index."""
    rng = random.Random(prompt.pk)
    counts: dict[int, int] = defaultdict(int)
    draws = []
    for member in rng.choices(members, weights=[m.project_weight for m in members], k=k):
        draws.append((member, counts[member.pk]))
        counts[member.pk] += 1
    return draws


def _heartbeat(run: SamplingRun, **updates) -> None:
    SamplingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now(), **updates)


def _generate_for_member(run, member, wanted, params_override, batch_size, backend_loader) -> dict:
    """Generate the (prompt, sample index) pairs ``wanted`` for one member, in batches.

    Returns {(prompt_id, sample_index): Response}. A member that fails records its error on
    the run and returns what it had; the other members go on.
    """
    from modeling.ml.generation import SamplingParams

    existing = {
        (r.prompt_id, r.sample_index): r
        for r in Response.objects.filter(
            member=member, source=ResponseSource.MODEL, prompt_id__in={p.pk for p, _ in wanted}
        )
    }
    todo = [(p, i) for p, i in wanted if (p.pk, i) not in existing]
    if not todo:
        return existing
    settings_ = member.generation_settings()
    params = SamplingParams(
        max_new_tokens=int(params_override or settings_["max_new_tokens"]),
        temperature=float(settings_["temperature"]),
        top_p=float(settings_["top_p"]),
    )
    failed: set[tuple[int, int]] = set()
    try:
        backend = backend_loader(member)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            # Reproducible, and different per member: two members with the same weights (the
            # demo's SmolLM2 at two temperatures) must not draw the same random stream.
            seed = (chunk[0][0].pk * 1000 + chunk[0][1]) * 1009 + member.pk
            # An answer's queue wait counts from the run's start: the prompts of later batches
            # waited for the batches before them (and within a call, for the answers before it).
            waited_ms = int((timezone.now() - run.started_at).total_seconds() * 1000) if run.started_at else 0
            generations = backend.generate([p.messages for p, _ in chunk], replace(params, seed=seed))
            for (prompt, index), gen in zip(chunk, generations):
                # A model's answer is outside text like any upload: one the database cannot store
                # (NUL, a lone surrogate) or that the backend could not read fails alone.
                problem = gen.error or text_problem(gen.text)
                if problem:
                    failed.add((prompt.pk, index))
                    _answer_failed(run, member, f"prompt {prompt.pk}: {problem}")
                    continue
                try:
                    response, created = Response.objects.get_or_create(
                        prompt=prompt,
                        member=member,
                        sample_index=index,
                        source=ResponseSource.MODEL,
                        defaults={
                            "text": gen.text,
                            "sampling": params.as_dict() | {"seed": seed},
                            "latency_ms": gen.latency_ms,
                            "prompt_tokens": gen.prompt_tokens,
                            "completion_tokens": gen.completion_tokens,
                            "finish_reason": gen.finish_reason,
                            "engine": gen.engine,
                            "timings": gen.timings() | {"queue_ms": waited_ms + (gen.queue_ms or 0)},
                        },
                    )
                except IntegrityError:  # a concurrent re-run wrote it first: use theirs
                    response, created = Response.objects.get(prompt=prompt, member=member, sample_index=index), False
                existing[(prompt.pk, index)] = response
                if created:
                    _heartbeat(run, responses_created=F("responses_created") + 1)
    except Exception as exc:  # one failing member must not stop the others
        logger.warning("sampling: member %s failed: %s", member.name, exc)
        errors = dict(SamplingRun.objects.get(pk=run.pk).member_errors)
        errors[member.name] = f"{type(exc).__name__}: {exc}"[:500]
        missing = sum(1 for p, i in todo if (p.pk, i) not in existing and (p.pk, i) not in failed)
        _heartbeat(run, member_errors=errors, responses_failed=F("responses_failed") + missing)
    return existing


def _answer_failed(run: SamplingRun, member: CommitteeMember, error: str) -> None:
    logger.warning("sampling: member %s gave an unusable answer: %s", member.name, error)
    errors = dict(SamplingRun.objects.get(pk=run.pk).member_errors)
    errors[member.name] = error[:500]
    _heartbeat(run, member_errors=errors, responses_failed=F("responses_failed") + 1)


def _create_comparison(run, prompt, a: Response, b: Response, source: str, selection: tuple[str, float] | None = None) -> bool:
    if not (_showable(a) and _showable(b)):
        _heartbeat(run, responses_empty=F("responses_empty") + sum(1 for r in (a, b) if not _showable(r)))
        return False
    if near_duplicates(a.text, b.text):
        _heartbeat(run, pairs_near_duplicate=F("pairs_near_duplicate") + 1)
        return False
    first, second = sorted((a, b), key=lambda r: r.pk)  # one canonical order: the pair is unique
    # Rendered here, on the worker: the labeling request then reads one column instead of
    # spending ~6 ms of the web's CPU on Markdown and sanitizing for the pair's first labeler.
    rendered = comparison_rendering(messages=prompt.messages, responses=[(r.pk, r.text) for r in (first, second)])
    _, created = Comparison.objects.get_or_create(
        response_a=first, response_b=second,
        defaults={
            "project": run.project, "prompt": prompt, "source": source, "rendered": rendered,
            **({"selection_rule": selection[0], "selection_probability": selection[1]} if selection else {}),
        },
    )
    if created:
        _heartbeat(run, pairs_created=F("pairs_created") + 1)
    return created


class PairSelector:
    """Which of a batch's candidate pairs go to labelers (``Project.selection_rule`` over
    ``modeling.ml.selection.select_pairs``). The batch's budget is one pair per prompt that has a
    candidate, at most ``selection_prompt_cap`` per prompt; ``selection_random_share`` of it is drawn
    uniformly. Uncertainty and D-optimal read the project's current reward model (its scores and
    last-layer embeddings of every answer); before the first round there is none and the rule
    falls back to random, which the run says (``SamplingRun.config["selection"]``).

    Known limit: the D-optimal design starts each batch from the ridge prior, not from the pairs
    already labelled (embedding them all again each batch would cost more than the batch), so it
    spreads picks within a batch, not against the labels the project already has. A pick's
    recorded probability is its chance among the batch's candidates; the members' draw of the K
    answers is by weight and not multiplied in."""

    def __init__(self, run: SamplingRun, scorer_loader):
        self.run = run
        self.project = run.project
        self.rule = self.project.selection_rule
        self.scorer = None
        note = f"{self.rule} selection of pairs among {self.project.candidates_k} answers per prompt"
        if self.rule != SelectionRule.RANDOM:
            if current_reward_model(project=self.project) is None:
                note = f"{self.rule} selection needs a reward model: none yet (run a round), so pairs are chosen at random"
                self.rule = SelectionRule.RANDOM
            else:
                self.scorer = scorer_loader(self.project)
        run.config = {**run.config, "selection": note}
        _heartbeat(run, config=run.config)

    def candidates(self, prompt: Prompt, answers: list[Response]) -> list[tuple[Prompt, Response, Response]]:
        """The prompt's pairs worth a human's time: both answers showable, not near duplicates, not
        compared before (a resumed pass)."""
        distinct = {r.pk: r for r in answers}
        showable = sorted((r for r in distinct.values() if _showable(r)), key=lambda r: r.pk)
        compared = set(Comparison.objects.filter(prompt=prompt).values_list("response_a_id", "response_b_id"))
        pairs = [(a, b) for a, b in combinations(showable, 2) if (a.pk, b.pk) not in compared]
        kept = [(prompt, a, b) for a, b in pairs if not near_duplicates(a.text, b.text)]
        if len(showable) < len(distinct) or len(kept) < len(pairs):
            _heartbeat(self.run, responses_empty=F("responses_empty") + len(distinct) - len(showable),
                       pairs_near_duplicate=F("pairs_near_duplicate") + len(pairs) - len(kept))
        return kept

    def select(self, candidates: list[tuple[Prompt, Response, Response]]) -> list:
        from modeling.ml.selection import select_pairs

        if not candidates:
            return []
        win_prob = features = None
        if self.rule != SelectionRule.RANDOM:
            answers = {r.pk: (p, r) for p, a, b in candidates for r in (a, b)}
            ids = sorted(answers)
            rewards, embeddings = self.scorer.score_and_embed([answers[i][0].messages for i in ids], [answers[i][1].text for i in ids])
            reward, embedding = dict(zip(ids, rewards)), dict(zip(ids, embeddings))
            for pk, value in reward.items():
                Response.objects.filter(pk=pk).update(reward=value)
            win_prob = [1 / (1 + math.exp(-max(-50.0, min(50.0, reward[a.pk] - reward[b.pk])))) for _, a, b in candidates]
            features = [[x - y for x, y in zip(embedding[a.pk], embedding[b.pk])] for _, a, b in candidates]
        import numpy as np

        if features is not None:
            # Each dimension on one scale (a SmolLM2 state has a dimension ~15x the median one,
            # which an unscaled design would chase), and the ridge bench/active_selection.py chose
            # on such features.
            features = np.asarray(features, dtype=float)
            scale = np.sqrt((features**2).mean(axis=0))
            features = features / np.where(scale > 0, scale, 1.0)
        groups = [p.pk for p, _, _ in candidates]
        return select_pairs(
            rule=self.rule, groups=groups, budget=len(set(groups)),
            win_prob=None if win_prob is None else np.asarray(win_prob), features=features,
            random_share=self.project.selection_random_share, prompt_cap=self.project.selection_prompt_cap,
            ridge=DESIGN_RIDGE, seed=candidates[0][0].pk,
        )


def default_backend_loader(member: CommitteeMember):
    from modeling.ml.generation import backend_for

    return backend_for(member_spec(member), Path(settings.ARTIFACTS_DIR) / "models")


def default_scorer_loader(project: Project):
    from modeling.selectors import current_reward_model

    path = current_reward_model(project=project)
    if path is None:
        raise SamplingError("Rejection sampling needs a reward model: run a round first")
    from modeling.ml.reward import scorer_for

    return scorer_for(str(path))


def sampling_execute(*, run_id: int, backend_loader=default_backend_loader, scorer_loader=default_scorer_loader) -> SamplingRun:
    """Run (or finish) a sampling pass. Safe to call twice; a finished run is left as it is."""
    # A running run is resumed only when its worker is gone: Redis redelivers an unacknowledged
    # message after its visibility timeout even while the first worker is still on it.
    claimed = job_claim(SamplingRun, run_id, resume_stale=True)
    run = SamplingRun.objects.select_related("project").get(pk=run_id)
    if not claimed:
        return run
    project = run.project
    try:
        members = weighted_committee(project)
        committee = run.mode == SamplingRun.Mode.COMMITTEE
        if committee and len(members) < 2:
            raise SamplingError("Committee pairing needs at least two active members with a weight above 0 in this project")
        if not members:
            raise SamplingError("No active committee member with a weight above 0 in this project")
        scorer = None if committee else scorer_loader(project)
        prompts = pending_prompts(project=project)
        if "through_prompt_id" in run.config:  # resumed: the prompts it started on, less those done
            prompts = list(prompts.filter(pk__lte=run.config["through_prompt_id"]))
        else:
            prompts = list(prompts[: int(run.config["limit"])] if run.config.get("limit") else prompts)
            # Pending prompts are taken oldest first, so the last one's id bounds the run's set.
            run.config = {**run.config, "through_prompt_id": prompts[-1].pk if prompts else 0}
        _heartbeat(run, config=run.config, prompts_total=F("prompts_done") + len(prompts))
        batch_size = int(run.config.get("batch_size") or DEFAULT_BATCH_SIZE)
        k = project.candidates_k
        pooled = committee and k > 2  # K answers per prompt, the selection rule picks the pairs
        selector = PairSelector(run, scorer_loader) if pooled else None
        # Which two members answer: by weight (Llama 3), or where the leaderboard is least sure
        # (Chatbot Arena, ``active``); the pair's chance is kept on its comparison either way.
        active_members = committee and not pooled and project.member_pair_rule == MemberPairRule.ACTIVE
        if active_members:
            run.config = {**run.config, "selection": "member pairs drawn where the leaderboard is least sure"}
            _heartbeat(run, config=run.config)
        by_id = {m.pk: m for m in members}
        probabilities = weight_pair_probabilities(members) if committee else {}
        for chunk in _release_batches(prompts, batch_size):
            if active_members:  # read afresh each batch: labels arriving during the pass move the intervals
                probabilities = active_pair_probabilities(list(by_id), member_pair_stats(project=project), project.selection_random_share)
            plan = {}
            for p in chunk:
                if pooled:
                    plan[p.pk] = _draw_k(p, members, k)
                elif active_members:
                    plan[p.pk] = [(by_id[i], 0) for i in _draw_by_probability(p, probabilities)]
                elif committee:
                    plan[p.pk] = [(m, 0) for m in _draw_pair(p, members)]
                else:
                    plan[p.pk] = _draw_k(p, members, project.rejection_k)
            wanted: dict[int, list] = defaultdict(list)
            for prompt in chunk:
                for member, index in plan[prompt.pk]:
                    wanted[member.pk].append((prompt, index))
            responses = {}
            for member_id, items in wanted.items():
                got = _generate_for_member(run, by_id[member_id], items, run.config.get("max_new_tokens"), batch_size, backend_loader)
                responses.update({(member_id, *key): r for key, r in got.items()})
            answers = {
                prompt.pk: [r for r in (responses.get((m.pk, prompt.pk, i)) for m, i in plan[prompt.pk]) if r is not None]
                for prompt in chunk
            }
            if pooled:
                candidates = [c for prompt in chunk for c in selector.candidates(prompt, answers[prompt.pk])]
                picks = selector.select(candidates)  # model work stays outside the transaction below
                # The batch's pairs and its prompts' progress commit together (see below).
                with transaction.atomic():
                    for pick in picks:
                        prompt, a, b = candidates[pick.index]
                        _create_comparison(run, prompt, a, b, ComparisonSource.COMMITTEE, (pick.rule, pick.probability))
                    _heartbeat(run, prompts_done=F("prompts_done") + len(chunk))
                continue
            for prompt in chunk:
                got = answers[prompt.pk]
                if not committee:
                    _score(prompt, got, scorer)  # model work stays outside the transaction below
                # The pair and the prompt's progress count commit together: a worker killed here
                # leaves both or neither, so a resumed run counts every prompt once.
                with transaction.atomic():
                    if committee:
                        if len(got) == 2:
                            pair = tuple(sorted(m.pk for m, _ in plan[prompt.pk]))
                            _create_comparison(run, prompt, got[0], got[1], ComparisonSource.COMMITTEE,
                                               (project.member_pair_rule, probabilities[pair]))
                    else:
                        _rejection_pair(run, prompt, got, scorer)
                    _heartbeat(run, prompts_done=F("prompts_done") + 1)
        SamplingRun.objects.filter(pk=run.pk).update(state=JobState.SUCCEEDED, finished_at=timezone.now())
        _judge_new_pairs(project)
    except Exception as exc:
        logger.exception("sampling run %s failed", run_id)
        SamplingRun.objects.filter(pk=run.pk).update(
            state=JobState.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
        )
    run.refresh_from_db()
    return run


def _judge_new_pairs(project: Project) -> None:
    """The project's judge (if it names one) pre-screens the pass's new pairs; a judge that cannot
    start leaves the pass succeeded, and the quality page says why when a lead starts it."""
    from modeling.services.judging import judge_start_if_named

    try:
        judge_start_if_named(project)
    except Exception as exc:  # the pairs are made: the judge is a later, optional step
        logger.warning("sampling: the judge of %s did not start: %s", project.slug, exc)


def _release_batches(prompts: list, batch_size: int):
    """The prompts in the order their comparisons are released to labelers: one prompt first, so
    that labelers get work as soon as the committee has answered it (two prompts took a minute of
    generation on 2 CPU cores before anything was released), then ``batch_size`` at a time. Each
    batch's comparisons commit before the next batch is generated; taking 4 x batch_size at once
    made a 24-prompt pass release nothing until its end."""
    first = 1
    yield prompts[:first]
    for start in range(first, len(prompts), batch_size):
        yield prompts[start : start + batch_size]


def _score(prompt, candidates: list[Response], scorer) -> None:
    """Score the showable candidates the reward model has not scored yet."""
    unscored = [r for r in candidates if _showable(r) and r.reward is None]
    if unscored:
        scores = scorer.score([prompt.messages] * len(unscored), [r.text for r in unscored])
        for response, score in zip(unscored, scores):
            Response.objects.filter(pk=response.pk).update(reward=score)
            response.reward = score


def _rejection_pair(run, prompt, candidates: list[Response], scorer) -> None:
    """Score the K candidates with the reward model, keep the best, pair it with another sample."""
    _score(prompt, candidates, scorer)
    showable = [r for r in candidates if _showable(r)]
    if len(showable) < 2:
        _heartbeat(run, responses_empty=F("responses_empty") + len(candidates) - len(showable))
        return
    ranked = sorted(showable, key=lambda r: r.reward, reverse=True)
    best = ranked[0]
    others = [r for r in ranked[1:] if not near_duplicates(best.text, r.text)]
    if not others:
        _heartbeat(run, pairs_near_duplicate=F("pairs_near_duplicate") + 1)
        return
    other = random.Random(prompt.pk).choice(others)
    _create_comparison(run, prompt, best, other, ComparisonSource.REJECTION_SAMPLING)
