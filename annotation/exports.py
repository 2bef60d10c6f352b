"""Judgments as training rows, for exports and for rounds' snapshots. Reads only.

A judgment with an edit yields up to three pairs, edited > chosen > rejected (Llama 3):
``chosen_rejected`` with the labeler's strength and its margin; ``edited_rejected`` with the
same strength (the edit improves on the winner, so it beats the loser at least as clearly);
``edited_chosen`` as ``slightly_better`` (an edit is a targeted fix, not a different answer).
"Both are bad" judgments are left out of preference pairs unless asked for.

Where the project asks it, a judgment's Llama 2 safety bin (``safety``, null otherwise) is about
its chosen and rejected responses; every pair the judgment yields carries it, so a consumer (or
the ``safety`` filter) keeps or drops all of a judgment's pairs together, the edits of an answer
the labeler marked unsafe included.

Every generator streams: judgments are read in chunks, rows are yielded one by one, so an
export of millions of judgments runs in constant memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date
from itertools import chain
from types import SimpleNamespace
from typing import Iterator

from django.db.models import Q, QuerySet

from annotation.models import (
    IMPORTED_ACCOUNT_PREFIX,
    MIN_GOLD_JUDGMENTS,
    STRENGTH_FILTER_VALUES,
    UNKNOWN_STRENGTH,
    Comparison,
    ComparisonSource,
    JobState,
    JudgeVerdict,
    Judgment,
    Project,
    SafetyBin,
    Strength,
)
from config.schema import schema_problem

EDIT_OVER_CHOSEN_STRENGTH = Strength.SLIGHTLY_BETTER
FORMATS = ("trl-preference", "trl-preference-text", "kto", "sft", "hh", "raw")
CHUNK = 10_000
#: The ``safety`` filter's values: the bins, and "unknown" for judgments without one (asked
#: nothing, or made before the project asked).
UNKNOWN_SAFETY = "unknown"
SAFETY_FILTER_VALUES = [*SafetyBin.values, UNKNOWN_SAFETY]


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class ExportFilters:
    """What goes into an export. Every field has a safe default; ``from_dict`` names bad input."""

    date_from: str | None = None  # ISO date, inclusive, on submitted_at
    date_to: str | None = None  # ISO date, inclusive
    round_from: int | None = None  # judgments after this round's snapshot
    round_to: int | None = None  # judgments up to this round's snapshot
    exclude_gold: bool = True
    negligible: str = "keep"  # keep | exclude
    # each | majority | reliability-weighted (the labeler-reliability model's winner, with "confidence")
    aggregation: str = "each"
    # The reliability fit a "reliability-weighted" export weighs labels with (None: the newest
    # finished one, pinned into the stored filters when the export or round starts, so the file
    # and its card name one fit and the same filters give the same bytes).
    reliability_fit: int | None = None
    min_labeler_gold_accuracy: float | None = None  # drop labelers below this (with at least MIN_GOLD_JUDGMENTS gold judgments)
    include_both_bad: bool = False
    include_imported: bool = True
    # Labels on a round's evaluation pairs (its new policy against the previous one): they measure
    # the policy and are kept out unless asked; a round asks when its project says they train.
    include_evaluation: bool = False
    # Labels of the project's LLM judge (its verdicts that agreed in both orders, one per
    # comparison, ``origin: "judge"``), after the human labels. Never without asking: a judge's
    # label is no human's. Only per label (aggregation "each") and outside round cuts.
    include_judge: bool = False
    strengths: list | None = None  # only judgments of these strengths, "unknown" for none given (None: all)
    # Only judgments of these safety bins, "unknown" for none (None: all). Llama 2 left out pairs
    # whose chosen response was unsafe and the other safe: every value but "rejected_safe".
    safety: list | None = None
    # The stable split by prompt hash (is_heldout): "train" leaves out the held-out prompts,
    # "heldout" keeps only them. A round's snapshot files are exports with these set.
    split: str = "all"  # all | train | heldout
    heldout_percent: int = 10

    @classmethod
    def from_dict(cls, data: dict | None) -> ExportFilters:
        data = dict(data or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ExportError(f"unknown filter(s) {sorted(unknown)}; known: {sorted(known)}")
        # Types, choices and ranges, from the schema the API publishes: a string where a number
        # goes must be a 400 naming the filter, not a TypeError (a 500) below.
        problem = schema_problem(data, FILTERS_SCHEMA)
        if problem:
            raise ExportError(problem)
        filters = cls(**data)
        if filters.include_judge and filters.aggregation != "each":
            raise ExportError('include_judge: the judge gives one label per comparison; export it with aggregation "each"')
        if filters.include_judge and (filters.round_from is not None or filters.round_to is not None):
            raise ExportError("include_judge: judge labels have no place in a round's cut; leave round_from and round_to empty")
        for name in ("date_from", "date_to"):
            value = getattr(filters, name)
            if value is not None:
                try:
                    date.fromisoformat(value)
                except (TypeError, ValueError):
                    raise ExportError(f"{name}: expected a date like 2026-11-01, got {value!r}") from None
        return filters

    def as_dict(self) -> dict:
        return asdict(self)


#: The filters' one declaration: published as the API's schema (annotation/serializers.py) and
#: checked by ``ExportFilters.from_dict`` (config/schema.py), so the two cannot disagree.
FILTERS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "date_from": {"type": "string", "format": "date", "nullable": True},
        "date_to": {"type": "string", "format": "date", "nullable": True},
        "round_from": {"type": "integer", "minimum": 0, "nullable": True},
        "round_to": {"type": "integer", "minimum": 0, "nullable": True},
        "exclude_gold": {"type": "boolean"},
        "negligible": {"type": "string", "enum": ["keep", "exclude"]},
        "aggregation": {"type": "string", "enum": ["each", "majority", "reliability-weighted"]},
        "reliability_fit": {"type": "integer", "minimum": 1, "nullable": True},
        "min_labeler_gold_accuracy": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True},
        "include_both_bad": {"type": "boolean"},
        "include_imported": {"type": "boolean"},
        "include_evaluation": {"type": "boolean"},
        "include_judge": {"type": "boolean"},
        "strengths": {"type": "array", "items": {"type": "string", "enum": STRENGTH_FILTER_VALUES}, "nullable": True},
        "safety": {"type": "array", "items": {"type": "string", "enum": SAFETY_FILTER_VALUES}, "nullable": True},
        "split": {"type": "string", "enum": ["all", "train", "heldout"]},
        "heldout_percent": {"type": "integer", "minimum": 0, "maximum": 100},
    },
}
assert set(FILTERS_SCHEMA["properties"]) == set(ExportFilters.__dataclass_fields__)


def _round_cut(project: Project, number: int | None) -> int | None:
    if number is None:
        return None
    if number == 0:
        return 0
    # Through the project's reverse relation: annotation does not import modeling.
    cut = project.rounds.filter(number=number).values_list("last_judgment_id", flat=True).first()
    if cut is None:
        raise ExportError(f"round {number} has no snapshot to cut at")
    return cut


def labelers_below(*, project: Project, threshold: float, minimum_gold: int = MIN_GOLD_JUDGMENTS) -> set[int]:
    """Labelers whose gold accuracy is under ``threshold`` (judged on at least ``minimum_gold`` gold items)."""
    gold = Judgment.objects.filter(comparison__project=project, comparison__is_gold=True).values_list(
        "labeler_id", "chosen_response_id", "comparison__gold_winner_id"
    )
    seen, correct = Counter(), Counter()
    for labeler_id, chosen_id, winner_id in gold.iterator(chunk_size=CHUNK):
        seen[labeler_id] += 1
        correct[labeler_id] += chosen_id == winner_id
    return {lid for lid, n in seen.items() if n >= minimum_gold and correct[lid] / n < threshold}


def _one_of(field: str, values: list, *, unknown: str) -> Q:
    """Judgments whose ``field`` is one of ``values``, where ``unknown`` stands for null."""
    null = Q(**{f"{field}__isnull": True}) if unknown in values else Q(pk__in=[])
    return Q(**{f"{field}__in": [v for v in values if v != unknown]}) | null


def filtered_judgments(*, project: Project, filters: ExportFilters) -> QuerySet[Judgment]:
    query = Judgment.objects.filter(comparison__project=project)
    if not filters.include_both_bad:
        query = query.exclude(both_bad=True)
    if filters.exclude_gold:
        query = query.exclude(comparison__is_gold=True)
    if filters.negligible == "exclude":
        query = query.exclude(strength=Strength.NEGLIGIBLY_BETTER)
    if not filters.include_imported:
        query = query.exclude(labeler__username__startswith=IMPORTED_ACCOUNT_PREFIX)
    if not filters.include_evaluation:
        query = query.exclude(comparison__source=ComparisonSource.EVALUATION)
    if filters.strengths is not None:  # "unknown": pairs whose source gave no strength (null)
        query = query.filter(_one_of("strength", filters.strengths, unknown=UNKNOWN_STRENGTH))
    if filters.safety is not None:  # "unknown": judgments without a bin (null)
        query = query.filter(_one_of("safety", filters.safety, unknown=UNKNOWN_SAFETY))
    if filters.date_from:
        query = query.filter(submitted_at__date__gte=filters.date_from)
    if filters.date_to:
        query = query.filter(submitted_at__date__lte=filters.date_to)
    low, high = _round_cut(project, filters.round_from), _round_cut(project, filters.round_to)
    if low is not None:
        query = query.filter(id__gt=low)
    if high is not None:
        query = query.filter(id__lte=high)
    if filters.min_labeler_gold_accuracy is not None:
        query = query.exclude(labeler_id__in=labelers_below(project=project, threshold=filters.min_labeler_gold_accuracy))
    return query.order_by("comparison_id", "id")


# --- rows ---------------------------------------------------------------------------------------

_FIELDS = (
    "id", "comparison_id", "strength", "both_bad", "safety", "left_response_id", "chosen_response_id", "rejected_response_id",
    "edited_response_id", "attributes", "flags", "rationale", "leased_at", "submitted_at", "time_on_task_ms",
    "labeler__username", "comparison__is_gold", "comparison__gold_winner_id", "comparison__response_a_id", "comparison__response_b_id",
    "comparison__prompt_id",
    "comparison__prompt__messages", "comparison__prompt__content_hash", "comparison__prompt__category",
    "comparison__prompt__source", "chosen_response__text", "rejected_response__text", "edited_response__text",
    "edited_response__edit_distance",
)


class ReadCounter:
    """How many judgments an export has read so far (its progress: the rows it writes per judgment
    vary by format and aggregation, the judgments it reads do not)."""

    def __init__(self) -> None:
        self.read = 0


def _records(judgments, counter: ReadCounter | None = None, split: tuple[str, int] | None = None) -> Iterator[SimpleNamespace]:
    """Judgments as light records with the attribute shape of the models (``j.chosen_response.text``).

    One ``values()`` query, streamed: building model instances for a judgment and its five
    related rows costs several times more than the rest of an export row.
    """
    for r in judgments.values(*_FIELDS).iterator(chunk_size=CHUNK):
        if counter is not None:
            counter.read += 1
        if split is not None and is_heldout(r["comparison__prompt__content_hash"], split[1]) != (split[0] == "heldout"):
            continue
        prompt = SimpleNamespace(
            pk=r["comparison__prompt_id"], messages=r["comparison__prompt__messages"],
            content_hash=r["comparison__prompt__content_hash"], category=r["comparison__prompt__category"],
            source=r["comparison__prompt__source"],
        )
        edited = None
        if r["edited_response_id"] is not None:
            edited = SimpleNamespace(pk=r["edited_response_id"], text=r["edited_response__text"], edit_distance=r["edited_response__edit_distance"])
        yield SimpleNamespace(
            pk=r["id"], comparison_id=r["comparison_id"], strength=r["strength"], both_bad=r["both_bad"], safety=r["safety"],
            left_response_id=r["left_response_id"], chosen_response_id=r["chosen_response_id"],
            rejected_response_id=r["rejected_response_id"], edited_response_id=r["edited_response_id"],
            attributes=r["attributes"], flags=r["flags"], rationale=r["rationale"], leased_at=r["leased_at"],
            submitted_at=r["submitted_at"], time_on_task_ms=r["time_on_task_ms"],
            labeler=SimpleNamespace(username=r["labeler__username"]),
            comparison=SimpleNamespace(pk=r["comparison_id"], is_gold=r["comparison__is_gold"],
                                       gold_winner_id=r["comparison__gold_winner_id"], response_a_id=r["comparison__response_a_id"],
                                       response_b_id=r["comparison__response_b_id"], prompt=prompt),
            chosen_response=SimpleNamespace(pk=r["chosen_response_id"], text=r["chosen_response__text"]),
            rejected_response=SimpleNamespace(pk=r["rejected_response_id"], text=r["rejected_response__text"]),
            edited_response=edited,
        )


def judge_records(*, project: Project, filters: ExportFilters, split=None) -> Iterator[SimpleNamespace]:
    """The project's judge labels as records shaped like ``_records``' (``origin`` "judge", no
    judgment id, the labeler ``judge:<member>``): one per comparison whose judge verdicts agreed in
    both orders on a winner, under the filters that speak of comparisons (gold, imported and
    evaluation pairs, strengths, safety "unknown", dates on the comparison's creation, the split)."""
    query = Comparison.objects.filter(project=project, judge_state="consistent", judge_winner__isnull=False)
    if filters.exclude_gold:
        query = query.exclude(is_gold=True)
    if not filters.include_evaluation:
        query = query.exclude(source=ComparisonSource.EVALUATION)
    if not filters.include_imported:
        query = query.exclude(source=ComparisonSource.IMPORT)
    if filters.negligible == "exclude":
        query = query.exclude(judge_strength=Strength.NEGLIGIBLY_BETTER)
    if filters.strengths is not None:
        query = query.filter(judge_strength__in=filters.strengths)
    if filters.safety is not None and UNKNOWN_SAFETY not in filters.safety:
        return
    if filters.date_from:
        query = query.filter(created_at__date__gte=filters.date_from)
    if filters.date_to:
        query = query.filter(created_at__date__lte=filters.date_to)
    names = dict(JudgeVerdict.objects.filter(comparison__project=project).values_list("comparison_id", "member__name").distinct())
    fields = ("id", "judge_winner_id", "judge_strength", "judge_confidence", "response_a_id", "response_b_id", "is_gold",
              "gold_winner_id", "created_at", "prompt_id", "prompt__messages", "prompt__content_hash", "prompt__category",
              "prompt__source", "response_a__text", "response_b__text")
    for r in query.order_by("id").values(*fields).iterator(chunk_size=CHUNK):
        if split is not None and is_heldout(r["prompt__content_hash"], split[1]) != (split[0] == "heldout"):
            continue
        a_won = r["judge_winner_id"] == r["response_a_id"]
        chosen = SimpleNamespace(pk=r["response_a_id"], text=r["response_a__text"])
        rejected = SimpleNamespace(pk=r["response_b_id"], text=r["response_b__text"])
        if not a_won:
            chosen, rejected = rejected, chosen
        prompt = SimpleNamespace(pk=r["prompt_id"], messages=r["prompt__messages"], content_hash=r["prompt__content_hash"],
                                 category=r["prompt__category"], source=r["prompt__source"])
        yield SimpleNamespace(
            pk=None, origin="judge", comparison_id=r["id"], strength=r["judge_strength"] or None, both_bad=False, safety=None,
            left_response_id=None, chosen_response_id=chosen.pk, rejected_response_id=rejected.pk, edited_response_id=None,
            attributes={}, flags={}, rationale="", leased_at=r["created_at"], submitted_at=r["created_at"], time_on_task_ms=0,
            confidence=r["judge_confidence"], labeler=SimpleNamespace(username=f"judge:{names.get(r['id'], '')}"),
            comparison=SimpleNamespace(pk=r["id"], is_gold=r["is_gold"], gold_winner_id=r["gold_winner_id"],
                                       response_a_id=r["response_a_id"], response_b_id=r["response_b_id"], prompt=prompt),
            chosen_response=chosen, rejected_response=rejected, edited_response=None,
        )


def _messages(prompt) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in prompt.messages]


def _pair(judgment: Judgment, project: Project, better, worse, strength: str, pair_type: str) -> dict:
    prompt = judgment.comparison.prompt
    return {
        "prompt": _messages(prompt),
        "chosen": [{"role": "assistant", "content": better.text}],
        "rejected": [{"role": "assistant", "content": worse.text}],
        "margin": project.margin_for(strength),
        "strength": strength,
        "pair_type": pair_type,
        "safety": judgment.safety,
        "judgment_id": judgment.pk,
        "comparison_id": judgment.comparison_id,
        "prompt_id": prompt.pk,
        "prompt_hash": prompt.content_hash,
        "chosen_response_id": better.pk,
        "rejected_response_id": worse.pk,
        "labeler": judgment.labeler.username,
        "origin": getattr(judgment, "origin", "human"),
        "submitted_at": judgment.submitted_at.isoformat(),
    }


def _pairs_of(judgment: Judgment, project: Project) -> Iterator[dict]:
    chosen, rejected, edited = judgment.chosen_response, judgment.rejected_response, judgment.edited_response
    yield _pair(judgment, project, chosen, rejected, judgment.strength, "chosen_rejected")
    if edited is not None:
        yield _pair(judgment, project, edited, chosen, EDIT_OVER_CHOSEN_STRENGTH, "edited_chosen")
        yield _pair(judgment, project, edited, rejected, judgment.strength, "edited_rejected")


def preference_rows(*, project: Project, judgments, counter: ReadCounter | None = None, split=None) -> Iterator[dict]:
    """TRL conversational preference rows (prompt/chosen/rejected/margin) with provenance."""
    for judgment in _records(judgments, counter, split):
        yield from _pairs_of(judgment, project)


def _by_comparison(judgments, counter: ReadCounter | None = None, split=None) -> Iterator[list[Judgment]]:
    group: list[Judgment] = []
    for judgment in _records(judgments, counter, split):
        if group and judgment.comparison_id != group[0].comparison_id:
            yield group
            group = []
        group.append(judgment)
    if group:
        yield group


def _aggregated_rows(*, project: Project, judgments, decide, counter: ReadCounter | None = None, split=None) -> Iterator[dict]:
    """One chosen/rejected pair per comparison, its winner chosen by ``decide(group)`` (a response
    id and the row's extra columns, or None to leave the comparison out), with the mean margin of
    all k labels signed toward it (a label for the other side counts negative). Its strength and
    safety bin are those most of the labels for the winner gave (they share the chosen response,
    so their bins speak of the same pair). Edits of labelers who picked the winner follow as their
    own pairs. A comparison none of whose labels picked the winner (possible only when weighing
    labelers of negative reliability) is left out: no label says that pair."""
    for group in _by_comparison(judgments, counter, split):
        decision = decide(group)
        if decision is None:
            continue
        winner_id, extra = decision
        agree = [j for j in group if j.chosen_response_id == winner_id]
        if not agree:
            continue
        signed = [project.margin_for(j.strength) * (1 if j.chosen_response_id == winner_id else -1) for j in group]
        first = agree[0]
        row = _pair(first, project, first.chosen_response, first.rejected_response, Counter(j.strength for j in agree).most_common(1)[0][0], "chosen_rejected")
        row.update(
            margin=max(0.0, sum(signed) / len(signed)), labels=len(group), agreement=round(len(agree) / len(group), 4),
            safety=Counter(j.safety for j in agree).most_common(1)[0][0],
            labeler=",".join(sorted({j.labeler.username for j in group})), judgment_id=[j.pk for j in group], **extra,
        )
        yield row
        for judgment in agree:
            if judgment.edited_response is not None:
                yield from list(_pairs_of(judgment, project))[1:]


def _majority(group: list) -> tuple[int, dict] | None:
    """The response most labels picked; ties are dropped."""
    ranked = Counter(j.chosen_response_id for j in group).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0], {}


def majority_rows(*, project: Project, judgments, counter: ReadCounter | None = None, split=None) -> Iterator[dict]:
    """Aggregation "majority": the majority's winner per comparison (``_aggregated_rows``)."""
    yield from _aggregated_rows(project=project, judgments=judgments, decide=_majority, counter=counter, split=split)


def reliability_fit_for(project: Project, fit_id: int | None = None):
    """The project's finished reliability fit ``fit_id`` (the newest when None), or an ExportError
    that says how to get one."""
    fits = project.reliability_fits.filter(state=JobState.SUCCEEDED)
    fit = fits.filter(pk=fit_id).first() if fit_id is not None else fits.first()
    if fit is None and fit_id is not None:
        raise ExportError(f"reliability_fit: this project has no finished reliability fit #{fit_id}")
    if fit is None:
        raise ExportError(
            'aggregation "reliability-weighted" needs a fit of labeler reliability, and this project has none yet: '
            "open its quality page (it starts one) or POST /api/v1/projects/<slug>/reliability/, then export again"
        )
    return fit


def reliability_rows(*, project: Project, judgments, counter: ReadCounter | None = None, split=None, fit_id: int | None = None) -> Iterator[dict]:
    """Aggregation "reliability-weighted": per comparison, the winner by the posterior of the
    labeler-reliability model (``annotation/reliability.py``) given its labels, with each labeler's
    reliability and left pull from the project's fit ``fit_id`` (the newest when None; labelers the
    fit has not seen count as a typical labeler). ``confidence`` is P(winner is better | labels); a comparison at exactly
    1/2 is dropped like a majority tie."""
    from annotation.reliability import LabelerParams, comparison_posterior

    fit = reliability_fit_for(project, fit_id)
    params = {name: LabelerParams(reliability=v["reliability"], bias=v["bias"]) for name, v in fit.labelers.items()}
    default = LabelerParams()

    def decide(group):
        first = group[0].comparison
        a_id, b_id = first.response_a_id, first.response_b_id
        p_a = comparison_posterior([
            (params.get(j.labeler.username, default).reliability, params.get(j.labeler.username, default).bias,
             j.chosen_response_id == a_id, j.left_response_id == a_id)
            for j in group
        ])
        if abs(p_a - 0.5) < 1e-12:
            return None
        return (a_id, {"confidence": round(p_a, 4)}) if p_a > 0.5 else (b_id, {"confidence": round(1 - p_a, 4)})

    yield from _aggregated_rows(project=project, judgments=judgments, decide=decide, counter=counter, split=split)


def _text_prompt(messages: list[dict]) -> str:
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages) + "\n\nAssistant:"


def _hh_transcript(messages: list[dict], answer: str) -> str:
    names = {"user": "Human", "assistant": "Assistant"}
    turns = [m for m in messages if m["role"] != "system"]
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    if system and turns:  # HH has no system turn: it leads the first human turn
        turns = [{"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}, *turns[1:]]
    return "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in turns) + f"\n\nAssistant: {answer}"


def _raw(judgment: Judgment) -> dict:
    comparison, prompt = judgment.comparison, judgment.comparison.prompt
    return {
        "judgment_id": judgment.pk, "comparison_id": comparison.pk, "prompt_id": prompt.pk,
        "prompt": _messages(prompt), "category": prompt.category, "prompt_source": prompt.source,
        "labeler": judgment.labeler.username, "origin": getattr(judgment, "origin", "human"),
        "strength": judgment.strength, "both_bad": judgment.both_bad,
        "safety": judgment.safety, "chosen_response_id": judgment.chosen_response_id, "chosen": judgment.chosen_response.text,
        "rejected_response_id": judgment.rejected_response_id, "rejected": judgment.rejected_response.text,
        "left_response_id": judgment.left_response_id,
        "chosen_was_left": judgment.left_response_id == judgment.chosen_response_id,
        "edited_response_id": judgment.edited_response_id,
        "edited": judgment.edited_response.text if judgment.edited_response else None,
        "edit_distance": judgment.edited_response.edit_distance if judgment.edited_response else None,
        "attributes": judgment.attributes, "flags": judgment.flags, "rationale": judgment.rationale,
        "is_gold": comparison.is_gold, "gold_winner_id": comparison.gold_winner_id,
        "leased_at": judgment.leased_at.isoformat(), "submitted_at": judgment.submitted_at.isoformat(),
        "time_on_task_ms": judgment.time_on_task_ms,
    }


def export_rows(*, project: Project, format: str, filters: ExportFilters, counter: ReadCounter | None = None) -> Iterator[dict]:
    """The rows of an export, streamed; ``counter`` counts the judgments read."""
    if format not in FORMATS:
        raise ExportError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    judgments = filtered_judgments(project=project, filters=filters)
    split = None if filters.split == "all" else (filters.split, filters.heldout_percent)
    judge = judge_records(project=project, filters=filters, split=split) if filters.include_judge else iter(())
    if format == "raw":
        for judgment in chain(_records(judgments, counter, split), judge):
            yield _raw(judgment)
        return
    if filters.aggregation == "reliability-weighted":
        pairs = reliability_rows(project=project, judgments=judgments, counter=counter, split=split, fit_id=filters.reliability_fit)
    else:
        aggregate = majority_rows if filters.aggregation == "majority" else preference_rows
        pairs = aggregate(project=project, judgments=judgments, counter=counter, split=split)
    pairs = chain(pairs, (
        {**_pair(j, project, j.chosen_response, j.rejected_response, j.strength, "chosen_rejected"), "confidence": j.confidence}
        for j in judge
    ))
    if format == "trl-preference":
        yield from pairs
    elif format == "trl-preference-text":
        for row in pairs:
            yield {**row, "prompt": _text_prompt(row["prompt"]), "chosen": row["chosen"][0]["content"], "rejected": row["rejected"][0]["content"]}
    elif format == "hh":
        for row in pairs:
            yield {
                "chosen": _hh_transcript(row["prompt"], row["chosen"][0]["content"]),
                "rejected": _hh_transcript(row["prompt"], row["rejected"][0]["content"]),
                "pair_type": row["pair_type"], "strength": row["strength"], "safety": row["safety"], "judgment_id": row["judgment_id"],
                "origin": row["origin"],
            }
    elif format == "kto":
        for row in pairs:
            if row["pair_type"] == "edited_chosen":
                continue  # the edit's row comes with edited_rejected; the chosen one with chosen_rejected
            for side, label in (("chosen", True), ("rejected", False)):
                if side == "rejected" and row["pair_type"] != "chosen_rejected":
                    continue
                yield {"prompt": row["prompt"], "completion": row[side], "label": label, "pair_type": row["pair_type"],
                       "judgment_id": row["judgment_id"], "response_id": row[f"{side}_response_id"], "origin": row["origin"]}
    elif format == "sft":
        best: dict | None = None
        for row in pairs:  # per label: the edit when there is one, else the chosen response
            # (a judge label has no judgment id: its comparison tells it apart)
            if best is not None and (row["judgment_id"], row["comparison_id"]) != (best["judgment_id"], best["comparison_id"]):
                yield best
                best = None
            if best is None or row["pair_type"] == "edited_rejected":
                best = {"messages": [*row["prompt"], *row["chosen"]], "judgment_id": row["judgment_id"],
                        "comparison_id": row["comparison_id"], "origin": row["origin"],
                        "source": "edit" if row["pair_type"] != "chosen_rejected" else "chosen"}
        if best is not None:
            yield best


def is_heldout(prompt_hash: str, percent: int) -> bool:
    """A stable split by prompt: the same prompt is held out in every round and every export."""
    return int(prompt_hash[:8], 16) % 100 < percent


@dataclass
class CardStats:
    rows: int = 0
    strengths: Counter = field(default_factory=Counter)
    pair_types: Counter = field(default_factory=Counter)
    labelers: set = field(default_factory=set)
    first: str | None = None
    last: str | None = None

    def add(self, row: dict) -> None:
        self.rows += 1
        if "strength" in row:
            self.strengths[row["strength"] or UNKNOWN_STRENGTH] += 1
        if "pair_type" in row:
            self.pair_types[row["pair_type"]] += 1
        for name in (row.get("labeler") or "").split(","):
            if name:
                self.labelers.add(name)
        when = row.get("submitted_at")
        if when:
            self.first = min(self.first or when, when)
            self.last = max(self.last or when, when)
