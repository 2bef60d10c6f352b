"""How far a project's LLM judge can be trusted: its verdicts (``JudgeVerdict``, both orders of
each comparison, written by ``modeling.services.judging``) against the labelers' majority, in
the conventions of MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-judge", sections 3.3-4.2).

Every figure is over the comparisons the judge answered in both orders, from plain values
(``judge_agreement``); ``project_judge_agreement`` reads them from the database.

- **The judge's answer on a pair** (``modeling.ml.judging``): each order's verdict is read as "a",
  "b" or "tie" ("[[C]]", or a winner only "negligibly better", as a labeler's negligible pick is a
  tie), or none (no usable verdict). The pair is *consistent* when both orders give the same
  answer, *inconsistent* when they differ, *failed* when either has none.
- **The human majority**: the mean of ``annotation.quality.label_score`` for response A over the
  comparison's human judgments (accounts ``import:...`` left out): above 1/2 "a", below "b",
  exactly 1/2 "tie". A comparison without a human label is left out of the agreement figures.
- ``consistent_share``: consistent pairs / judged pairs (failed ones count in the denominator).
- ``flip_rate``: of the pairs whose two orders both gave an answer, the share whose answer changed
  when the answers swapped places (a winner one way and a tie the other is a change): inconsistent
  / (consistent + inconsistent).
- ``first_position``: of the single verdicts (each order apart, failed pairs' usable orders too)
  that named a winner, the share naming the answer shown first. Each pair is asked both ways, so a
  judge without position bias is at 1/2.
- ``agreement_without_ties``: of the comparisons where the judge's answer is consistent and names a
  winner and the majority names a winner, the share where they name the same (MT-Bench setup S2).
- ``agreement_with_ties``: three classes (a, b, tie) over every comparison with a human majority
  whose pair did not fail. An inconsistent pair counts as the judge saying "tie", as MT-Bench
  counts it (a win only when it holds in both orders); so a judge's position bias costs it here.
- ``kappa``: Cohen's kappa of the judge's and the majority's three-class answers on those same
  comparisons (``annotation.quality.cohen_kappa``): agreement beyond what both answer rates give
  by chance.
- ``follow``: of the human judgments on comparisons with a consistent suggestion naming a winner,
  the share choosing the suggested response (at any strength), by what the labeler saw
  (``Assignment.suggestion``): "shown" (on the page), "blind" (the project shows suggestions but
  this lease was in its blind share), "not_offered" (the project hid them). Shown against blind
  is how much the hint moves people; the human majority above is read from all labels, shown ones
  too, so with suggestions on, compare it with the blind slice's follow rate.

Proportions come as ``{"n", "k", "rate", "ci95"}`` (rate None when n is 0; a 95% Wilson interval).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from annotation.models import IMPORTED_ACCOUNT_PREFIX, JudgeVerdict, Judgment, Project
from annotation.quality import cohen_kappa, label_score
from annotation.reliability import proportion
from modeling.ml.judging import NEGLIGIBLY_BETTER, Verdict, swap_state, verdict_answer  # plain Python

#: ``follow``'s slices, by ``Assignment.suggestion``.
FOLLOW_SLICES = {"shown": "shown", "blind": "blind", "": "not_offered"}


@dataclass(frozen=True)
class JudgedPair:
    """One comparison the judge answered in both orders: each order's answer, "a", "b", "tie" or
    None (no usable verdict), in terms of the comparison's responses A and B."""

    comparison: int
    ab: str | None
    ba: str | None


@dataclass(frozen=True)
class HumanLabel:
    """One human judgment: whether it chose response A, its strength, and ``suggestion`` as its
    assignment recorded it ("shown", "blind", "")."""

    comparison: int
    chose_a: bool
    strength: str | None
    suggestion: str = ""


def stored_verdict(*, order: str, winner_id: int | None, strength: str, error: str, response_a_id: int, response_b_id: int) -> Verdict:
    """A stored ``JudgeVerdict`` row as the judge's ``Verdict`` for that order: the winner is
    stored as a response, the verdict says "first" or "second" as shown."""
    if error:
        return Verdict(None, "", error)
    if winner_id is None:
        return Verdict("tie", strength or NEGLIGIBLY_BETTER)
    first_id, second_id = (response_a_id, response_b_id) if order == "ab" else (response_b_id, response_a_id)
    if winner_id not in (first_id, second_id):
        return Verdict(None, "", "the stored winner is not in the pair")
    return Verdict("first" if winner_id == first_id else "second", strength)


def human_majority(labels: Iterable[HumanLabel]) -> dict[int, str]:
    """Each comparison's majority: "a", "b" or "tie" by the mean label score of response A."""
    scores: dict[int, list[float]] = defaultdict(list)
    for label in labels:
        scores[label.comparison].append(label_score(strength=label.strength, won=label.chose_a))
    # Scores are multiples of 1/2, so twice their sum against their count compares exactly.
    return {c: "a" if 2 * sum(s) > len(s) else "b" if 2 * sum(s) < len(s) else "tie" for c, s in scores.items()}


def judge_agreement(rows: Iterable[JudgedPair], labels: Iterable[HumanLabel]) -> dict:
    """The judge's figures (module docstring) from its pairs and the human labels."""
    rows = list(rows)
    states = {r.comparison: swap_state(r.ab, r.ba) for r in rows}
    counts = Counter(states.values())
    answered = counts["consistent"] + counts["inconsistent"]
    winners = [(answer, order) for r in rows for answer, order in ((r.ab, "ab"), (r.ba, "ba")) if answer in ("a", "b")]
    first_picks = sum(answer == ("a" if order == "ab" else "b") for answer, order in winners)
    # The judge's answer per pair: its consistent answer, and "tie" for an inconsistent one (MT-Bench).
    judge = {r.comparison: r.ab if states[r.comparison] == "consistent" else "tie" for r in rows if states[r.comparison] != "failed"}
    labels = [label for label in labels if label.comparison in states]
    majority = human_majority(labels)
    compared = sorted(c for c in judge if c in majority)
    decided = [c for c in compared if judge[c] != "tie" and majority[c] != "tie"]
    kappa = cohen_kappa([judge[c] for c in compared], [majority[c] for c in compared])
    suggested = {c: answer for c, answer in judge.items() if states[c] == "consistent" and answer != "tie"}
    follow: dict[str, list[int]] = {name: [0, 0] for name in FOLLOW_SLICES.values()}
    for label in labels:
        if label.comparison in suggested:
            tally = follow[FOLLOW_SLICES.get(label.suggestion, "not_offered")]
            tally[0] += label.chose_a == (suggested[label.comparison] == "a")
            tally[1] += 1
    return {
        "judged": len(rows),
        "consistent": counts["consistent"],
        "inconsistent": counts["inconsistent"],
        "failed": counts["failed"],
        "consistent_share": round(counts["consistent"] / len(rows), 4) if rows else None,
        "flip_rate": proportion(counts["inconsistent"], answered),
        "first_position": proportion(first_picks, len(winners)),
        "compared": len(compared),
        "agreement_without_ties": proportion(sum(judge[c] == majority[c] for c in decided), len(decided)),
        "agreement_with_ties": proportion(sum(judge[c] == majority[c] for c in compared), len(compared)),
        "kappa": None if kappa is None else round(kappa, 4),
        "follow": {name: proportion(k, n) for name, (k, n) in follow.items()},
    }


def project_judge_agreement(*, project: Project, member_id: int | None = None) -> dict:
    """``judge_agreement`` for ``project`` from the database, for the judge ``member_id`` (by
    default the project's judge, else the member of its latest verdict), plus ``judge`` (the
    member's name, None when the project has no verdicts). Human labels only: imported accounts
    are left out."""
    verdicts = JudgeVerdict.objects.filter(comparison__project=project)
    member_id = member_id or project.judge_id or verdicts.order_by("-id").values_list("member_id", flat=True).first()
    if member_id is None:
        return {"judge": None, **judge_agreement([], [])}
    orders: dict[int, dict[str, str | None]] = defaultdict(dict)
    name = project.judge.name if member_id == project.judge_id else None
    for row in verdicts.filter(member_id=member_id).values(
        "comparison_id", "order", "winner_id", "strength", "error", "member__name",
        "comparison__response_a_id", "comparison__response_b_id",
    ):
        name = row["member__name"]
        verdict = stored_verdict(
            order=row["order"], winner_id=row["winner_id"], strength=row["strength"], error=row["error"],
            response_a_id=row["comparison__response_a_id"], response_b_id=row["comparison__response_b_id"],
        )
        orders[row["comparison_id"]][row["order"]] = verdict_answer(verdict, row["order"])
    pairs = [JudgedPair(c, o["ab"], o["ba"]) for c, o in sorted(orders.items()) if "ab" in o and "ba" in o]
    labels = [
        HumanLabel(r["comparison_id"], r["chosen_response_id"] == r["comparison__response_a_id"], r["strength"],
                   r["assignment__suggestion"])
        for r in Judgment.objects.filter(comparison__project=project, comparison__judge_verdicts__member_id=member_id,
                                         comparison__judge_verdicts__order="ab")
        .exclude(labeler__username__startswith=IMPORTED_ACCOUNT_PREFIX)
        .values("comparison_id", "chosen_response_id", "comparison__response_a_id", "strength", "assignment__suggestion")
    ]
    return {"judge": name, **judge_agreement(pairs, labels)}
