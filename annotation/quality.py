"""Label quality and model leaderboard: agreement statistics and Bradley-Terry ratings.

The statistics are plain functions over plain values (tested against hand-computed cases);
``project_quality`` and ``project_leaderboard`` read the database and feed them.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from itertools import combinations

from annotation.models import IMPORTED_ACCOUNT_PREFIX, MIN_GOLD_JUDGMENTS, Judgment, Project, Strength

#: Position on the signed 8-point scale: + for response A of the comparison, - for B.
LEVEL = {
    Strength.SIGNIFICANTLY_BETTER: 4,
    Strength.BETTER: 3,
    Strength.SLIGHTLY_BETTER: 2,
    Strength.NEGLIGIBLY_BETTER: 1,
}
MIN_SHARED_FOR_KAPPA = 5


# --- statistics ---------------------------------------------------------------------------------


def cohen_kappa(a: list, b: list) -> float | None:
    """Cohen's kappa of two raters' labels on the same items (None when undefined)."""
    if len(a) != len(b) or not a:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[c] * cb[c] for c in set(ca) | set(cb)) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def krippendorff_alpha_ordinal(units: dict) -> float | None:
    """Krippendorff's alpha with the ordinal metric. ``units`` maps an item to the values its
    raters gave (ordered numbers); items with fewer than two values are not pairable."""
    pairable = {u: v for u, v in units.items() if len(v) >= 2}
    if not pairable:
        return None
    coincidence: dict[tuple, float] = defaultdict(float)
    for values in pairable.values():
        m = len(values)
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[(values[i], values[j])] += 1 / (m - 1)
    categories = sorted({c for pair in coincidence for c in pair})
    n_c = {c: sum(w for (x, _), w in coincidence.items() if x == c) for c in categories}
    n = sum(n_c.values())

    def delta2(c, k):
        lo, hi = sorted((categories.index(c), categories.index(k)))
        between = sum(n_c[categories[g]] for g in range(lo, hi + 1))
        return (between - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(w * delta2(c, k) for (c, k), w in coincidence.items())
    expected = sum(n_c[c] * n_c[k] * delta2(c, k) for c in categories for k in categories)
    if expected == 0:
        return 1.0 if observed == 0 else None
    return 1 - (n - 1) * observed / expected


def bradley_terry(battles: list[tuple], iterations: int = 200) -> dict[str, float]:
    """Bradley-Terry strengths by Hunter's MM algorithm. A battle is (i, j, score of i: 1, 0.5, 0),
    or (i, j, score, weight): a weighted battle counts ``weight`` times (the leaderboard weighs each
    label by the inverse of its pair's chance of being shown, so the fit does not lean toward the
    pairs an active rule showed more often). Returned on the Elo-like scale Chatbot Arena uses:
    400·log10(p) centred on 1000."""
    players = sorted({p for i, j, *_ in battles for p in (i, j)})
    if len(players) < 2:
        return {p: 1000.0 for p in players}
    wins: dict[str, float] = defaultdict(float)
    games: dict[tuple[str, str], float] = defaultdict(float)
    for i, j, s, *weight in battles:
        w = weight[0] if weight else 1.0
        wins[i] += w * s
        wins[j] += w * (1 - s)
        games[(i, j)] += w
        games[(j, i)] += w
    p = {x: 1.0 for x in players}
    for _ in range(iterations):
        new = {}
        for i in players:
            denom = sum(games[(i, j)] / (p[i] + p[j]) for j in players if j != i and games[(i, j)])
            # a small prior win keeps an all-losing (or all-winning) player finite
            new[i] = (wins[i] + 0.01) / denom if denom else p[i]
        mean_log = sum(math.log(v) for v in new.values()) / len(new)
        p = {x: v / math.exp(mean_log) for x, v in new.items()}
    return {x: 1000 + 400 * math.log10(v) for x, v in p.items()}


def inverse_probability_weights(probabilities: list[float | None]) -> list[float]:
    """Each label's weight: 1 / the chance its pair was shown (``Comparison.selection_probability``),
    scaled to a mean of 1 over the labels that have one; a label without one (pairs sampled before
    probabilities were kept) weighs 1."""
    known = [1 / p for p in probabilities if p]
    mean = sum(known) / len(known) if known else 1.0
    return [(1 / p) / mean if p else 1.0 for p in probabilities]


def bootstrap_intervals(battles: list[tuple], rounds: int = 200, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% intervals of Bradley-Terry ratings from resampled battles (as Chatbot Arena reports)."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        resampled = [battles[rng.randrange(len(battles))] for _ in battles]
        for player, rating in bradley_terry(resampled, iterations=100).items():
            samples[player].append(rating)
    out = {}
    for player, values in samples.items():
        values.sort()
        out[player] = (values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))])
    return out


# --- project views ------------------------------------------------------------------------------


def _signed(judgment) -> int:
    level = LEVEL[judgment["strength"]]
    return level if judgment["chosen_response_id"] == judgment["comparison__response_a_id"] else -level


def project_quality(*, project: Project) -> dict:
    """Agreement on the winner and per-labeler quality, from the project's human judgments."""
    rows = list(
        Judgment.objects.filter(comparison__project=project)
        .exclude(labeler__username__startswith=IMPORTED_ACCOUNT_PREFIX)
        .values(
            "comparison_id", "labeler__username", "chosen_response_id", "left_response_id", "strength", "time_on_task_ms",
            "submitted_at", "comparison__response_a_id", "comparison__is_gold", "comparison__gold_winner_id",
        )
    )
    by_comparison: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_comparison[row["comparison_id"]].append(row)
    # winner labels per (labeler, comparison), for pairwise agreement and kappa
    winner = {(r["labeler__username"], r["comparison_id"]): r["chosen_response_id"] for r in rows}
    labelers = sorted({r["labeler__username"] for r in rows})
    pairs = []
    for a, b in combinations(labelers, 2):
        shared = [c for (l, c) in winner if l == a and (b, c) in winner]
        if len(shared) >= MIN_SHARED_FOR_KAPPA:
            la = ["a" if winner[(a, c)] == by_comparison[c][0]["comparison__response_a_id"] else "b" for c in shared]
            lb = ["a" if winner[(b, c)] == by_comparison[c][0]["comparison__response_a_id"] else "b" for c in shared]
            pairs.append({
                "labelers": [a, b], "shared": len(shared),
                "agreement": round(sum(x == y for x, y in zip(la, lb)) / len(shared), 4),
                "kappa": None if (k := cohen_kappa(la, lb)) is None else round(k, 4),
            })
    multi = {c: js for c, js in by_comparison.items() if len(js) >= 2}
    agree_pairs = sum(1 for js in multi.values() for x, y in combinations(js, 2) if x["chosen_response_id"] == y["chosen_response_id"])
    total_pairs = sum(len(js) * (len(js) - 1) // 2 for js in multi.values())
    alpha = krippendorff_alpha_ordinal({c: [_signed(j) for j in js] for c, js in by_comparison.items()})
    majority = {}
    for c, js in multi.items():
        top = Counter(j["chosen_response_id"] for j in js).most_common(2)
        if len(top) == 1 or top[0][1] > top[1][1]:
            majority[c] = top[0][0]
    per = []
    for name in labelers:
        mine = [r for r in rows if r["labeler__username"] == name]
        gold = [r for r in mine if r["comparison__is_gold"]]
        with_majority = [r for r in mine if r["comparison_id"] in majority]
        per.append({
            "labeler": name,
            "judgments": len(mine),
            "gold": len(gold),
            "gold_accuracy": round(sum(r["chosen_response_id"] == r["comparison__gold_winner_id"] for r in gold) / len(gold), 4) if gold else None,
            "majority_agreement": round(sum(r["chosen_response_id"] == majority[r["comparison_id"]] for r in with_majority) / len(with_majority), 4) if with_majority else None,
            "left_share": round(sum(r["chosen_response_id"] == r["left_response_id"] for r in mine) / len(mine), 4),
            "strengths": dict(Counter(r["strength"] for r in mine)),
            "median_seconds": round(statistics.median(r["time_on_task_ms"] for r in mine) / 1000, 1),
            "below_threshold": len(gold) >= MIN_GOLD_JUDGMENTS and
            sum(r["chosen_response_id"] == r["comparison__gold_winner_id"] for r in gold) / len(gold) < project.labeler_quality_threshold,
        })
    per_day = Counter(r["submitted_at"].date().isoformat() for r in rows)
    overlap = Counter(len(js) for js in by_comparison.values())
    return {
        "judgments": len(rows),
        "comparisons_labelled": len(by_comparison),
        "overlap": {str(k): v for k, v in sorted(overlap.items())},
        "overlap_reached": sum(v for k, v in overlap.items() if k >= project.overlap_k),
        "percent_agreement": round(agree_pairs / total_pairs, 4) if total_pairs else None,
        "krippendorff_alpha_ordinal": None if alpha is None else round(alpha, 4),
        "pairs": pairs,
        "labelers": per,
        "per_day": dict(sorted(per_day.items())),
        "strengths": dict(Counter(r["strength"] for r in rows)),
        "left_share": round(sum(r["chosen_response_id"] == r["left_response_id"] for r in rows) / len(rows), 4) if rows else None,
    }


def label_score(*, strength: str | None, won: bool) -> float:
    """A label as the result of a game for one side: 1 won, 0 lost, 1/2 when the labeler said
    "negligibly better / unsure" (a tie, as Chatbot Arena counts one). The leaderboard and a
    round's human win rate (modeling.selectors.human_evaluation) both count labels this way."""
    return 0.5 if strength == Strength.NEGLIGIBLY_BETTER else float(won)


def project_leaderboard(*, project: Project, category: str | None = None, bootstrap_rounds: int = 200) -> dict:
    """Committee members rated from the judgments on comparisons between two members' answers."""
    query = Judgment.objects.filter(
        comparison__project=project, comparison__response_a__member__isnull=False, comparison__response_b__member__isnull=False
    )
    if category:
        query = query.filter(comparison__prompt__category=category)
    battles, probabilities = [], []
    for a, b, chosen, a_id, strength, probability in query.values_list(
        "comparison__response_a__member__name", "comparison__response_b__member__name", "chosen_response_id",
        "comparison__response_a_id", "strength", "comparison__selection_probability",
    ).iterator(chunk_size=5000):
        if a == b:
            continue
        score = label_score(strength=strength, won=chosen == a_id)
        battles.append((a, b, score))
        probabilities.append(probability)
    weighted = any(probabilities)
    if weighted:
        battles = [(*battle, w) for battle, w in zip(battles, inverse_probability_weights(probabilities))]
    ratings = bradley_terry(battles)
    intervals = bootstrap_intervals(battles, rounds=bootstrap_rounds) if battles else {}
    counts: Counter = Counter()
    wins: dict[tuple[str, str], float] = defaultdict(float)
    games: dict[tuple[str, str], int] = defaultdict(int)
    for a, b, s, *_ in battles:
        counts[a] += 1
        counts[b] += 1
        wins[(a, b)] += s
        wins[(b, a)] += 1 - s
        games[(a, b)] += 1
        games[(b, a)] += 1
    order = sorted(ratings, key=ratings.get, reverse=True)
    return {
        "category": category or "all",
        "battles": len(battles),
        # Whether labels were weighed by the inverse of their pair's chance of being shown.
        "weighted": weighted,
        "members": [
            {"name": m, "rating": round(ratings[m], 1), "ci95": [round(x, 1) for x in intervals.get(m, (ratings[m], ratings[m]))],
             "battles": counts[m]}
            for m in order
        ],
        "win_rate": {a: {b: round(wins[(a, b)] / games[(a, b)], 3) for b in order if games[(a, b)]} for a in order},
    }
