"""Labeler reliability: a simulation with a known truth, labelled through the app's own queue and
aggregated by the app's own fit and exports.

    python bench/labeler_reliability.py [--seeds 10] [--comparisons 300] [--repeat-rate 0.1]
                                        [--repeat-gap 10] [--scaling 1500,3000] [--scaling-seeds 3]
                                        [--no-write]

The truth, per seed: ``theta_c ~ N(0, 1.5^2)`` for each comparison, response A better iff
``theta_c > 0``, a near-tie where ``|theta_c| < 0.5``. 20 labelers with accuracies evenly spaced
over 0.55-0.9 (shuffled); labelers 0-2 are left-biased, 3-4 click at random, the rest are plain.
A plain labeler picks A with probability ``sigmoid(k_w * theta_c)``, ``k_w`` solved (bisection)
so that its mean accuracy over the seed's comparisons is its accuracy; a left-biased one does the
same except on near-ties, where it picks the left side 80% of the time; a random clicker picks a
side 50/50. True left pull (P(left) on a tie): 0.8 for the biased, 0.5 for the rest.

The app's path, per seed, in a scratch PostgreSQL database (never ``test``): a project with
``overlap_k=3``, ``gold_rate=0`` and swapped repeats (``repeat_rate``, ``repeat_min_gap``), the 20
labelers as members, one comparison per prompt. Each round the labelers, in a random order, each
ask the real queue (``comparison_lease_next``) for their next assignment and answer it
(``judgment_submit``) by the side it shows them (``left_response_id``); a labeler the queue has
nothing for stops; the loop ends when none is left. Repeats are answered the same way (a fresh
draw) and stored by the app as ``RepeatJudgment``. Then a fit is queued (``reliability_fit_start``
in a transaction) and the Celery task's body runs synchronously in this process
(``annotation.tasks.reliability_fit(fit_id)``, as a worker would run it; no worker, the message
sent to the scratch filesystem broker is never consumed). The two aggregations are read from the
app's export (``export_rows``, ``trl-preference``, aggregation ``majority`` and
``reliability-weighted``): a comparison's winner is its row's ``chosen_response_id``; a
comparison an aggregation leaves out (a tie) scores 0.5, a coin flip.

Figures, per seed then over seeds (mean, 95% t interval):

- ``left_bias_corr``: Pearson correlation over the 20 labelers of the fit's ``left_on_tie``
  (sigmoid of the left pull) with the true left pull. Two references that know the truth:
  ``left_bias_corr_oracle``, the same for each labeler's realised left share on the true
  near-ties; ``left_bias_corr_bayes``, for the posterior mean of each labeler's pull knowing
  every preference and behaviour and that 3 of the 20 are biased, not which (``bias_posterior``:
  the best correlation any estimate from these labels reaches in expectation, even one told the
  truth; a shrunk estimate like the fit's can beat the raw share, not this).
- ``random_clickers_flagged``: share of seeds where both random clickers are the 2 lowest of the
  fit's ``reliability`` (the bottom 10% of 20); ``random_clicker_mean_rank`` (1 = lowest). The
  profiles' own flags (``fit.profiles``: named tests, Bonferroni) are counted per kind of labeler.
- ``majority_accuracy`` / ``weighted_accuracy``: agreement with the truth; the paired difference
  weighted - majority; ``bayes_accuracy``: the posterior with the true behaviour of every labeler,
  a ceiling for any aggregation of these labels.
- Flips: the swapped repeats the app stored, as the fit's profiles count them (``flips``: n, k
  per labeler; checked against the ``RepeatJudgment`` rows), pooled over seeds, with a Wilson 95% interval, against the true flip rate: the mean over those repeats
  of ``p1 (1 - p2) + (1 - p1) p2``, the labeler's chances of picking A on each side.
- Scaling: the same simulation through the same path with more comparisons per labeler
  (``--scaling``, ``--scaling-seeds`` seeds): whether the estimator reaches the targets when the
  data allows. A model-only row at ``--comparisons`` (the same truth, 3 distinct labelers per
  comparison drawn at random instead of by the queue, sides 50/50, fitted with
  ``annotation.reliability.fit``, majority counted here) checks the app's path against the model.

Targets (issue 17): left-bias correlation >= 0.9; both random clickers in the bottom 10% of
reliability (here: in every seed); reliability-weighted >= majority + 2 points; flip rate within
its interval. Writes bench/results/labeler_reliability.json and the labeler_reliability section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from annotation.reliability import Label, _sigmoid, fit, wilson_interval  # noqa: E402
from bench._common import machine, publish, recreate_database, replace_section, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "labeler_reliability.json"
DATABASE = "arbiter_bench_reliability"
LABELERS, OVERLAP = 20, 3
THETA_SD, NEAR_TIE, LEFT_ON_TIE = 1.5, 0.5, 0.8
ACCURACY = (0.55, 0.9)
BIASED, RANDOM = (0, 1, 2), (3, 4)
TARGET_CORR, TARGET_GAIN = 0.9, 0.02
#: The Bayes ceiling's grid over theta.
GRID = tuple(-8 + 0.05 * k for k in range(321))


# --- the truth --------------------------------------------------------------------------------------------


@dataclass
class World:
    """One seed's truth: the comparisons' preferences and the labelers' behaviour."""

    theta: list[float]
    accuracy: list[float]
    slope: list[float]

    @staticmethod
    def kind(w: int) -> str:
        return "left-biased" if w in BIASED else "random" if w in RANDOM else "plain"

    @staticmethod
    def true_bias(w: int) -> float:
        return LEFT_ON_TIE if w in BIASED else 0.5

    def p_a(self, w: int, theta: float, a_left: bool) -> float:
        """P(labeler w picks A) on a comparison of preference ``theta`` with A on the left or not."""
        if w in RANDOM:
            return 0.5
        if w in BIASED and abs(theta) < NEAR_TIE:
            return LEFT_ON_TIE if a_left else 1 - LEFT_ON_TIE
        return _sigmoid(self.slope[w] * theta)

    def choose(self, w: int, c: int, a_left: bool, rng: random.Random) -> bool:
        return rng.random() < self.p_a(w, self.theta[c], a_left)

    def flip_probability(self, w: int, c: int) -> float:
        """P(a swapped repeat's winner differs from the original's): independent draws, one per side."""
        p1, p2 = self.p_a(w, self.theta[c], True), self.p_a(w, self.theta[c], False)
        return p1 * (1 - p2) + (1 - p1) * p2


def solve_slope(accuracy: float, theta: list[float]) -> float:
    """k such that the mean of sigmoid(k |theta|) over the comparisons is ``accuracy`` (bisection)."""
    low, high = 0.0, 50.0
    for _ in range(60):
        k = (low + high) / 2
        if statistics.fmean(_sigmoid(k * abs(t)) for t in theta) < accuracy:
            low = k
        else:
            high = k
    return (low + high) / 2


def make_world(seed: int, comparisons: int) -> World:
    rng = random.Random(seed)
    theta = [rng.gauss(0, THETA_SD) for _ in range(comparisons)]
    accuracy = [ACCURACY[0] + (ACCURACY[1] - ACCURACY[0]) * i / (LABELERS - 1) for i in range(LABELERS)]
    rng.shuffle(accuracy)
    return World(theta=theta, accuracy=accuracy, slope=[solve_slope(a, theta) for a in accuracy])


# --- scoring one seed ----------------------------------------------------------------------------------


def bayes_posterior(world: World, labels: list[Label], names: dict[str, int]) -> dict[int, float]:
    """P(A better | labels) with every labeler's true behaviour and the true prior."""
    log_post: dict[int, list[float]] = {}
    for label in labels:
        row = log_post.setdefault(label.comparison, [-g * g / (2 * THETA_SD**2) for g in GRID])
        w = names[label.labeler]
        for i, g in enumerate(GRID):
            p = world.p_a(w, g, label.a_left)
            row[i] += math.log(p if label.chose_a else 1 - p)
    out = {}
    for c, row in log_post.items():
        top = max(row)
        weights = [math.exp(v - top) for v in row]
        out[c] = sum(x for x, g in zip(weights, GRID) if g > 0) / sum(weights)
    return out


def bias_posterior(world: World, w: int, ties: list[Label]) -> float:
    """E[labeler w's left pull | its labels on the true near-ties], knowing every theta and slope,
    which labelers click at random, and that 3 of the 20 are left-biased (at 0.8) but not which: the
    posterior mean, the estimate that correlates best with the truth in expectation."""
    log_odds = math.log(len(BIASED) / (LABELERS - len(BIASED)))
    for lab in ties:
        left = lab.chose_a == lab.a_left
        p_a = 0.5 if w in RANDOM else _sigmoid(world.slope[w] * world.theta[lab.comparison])
        p_left = p_a if lab.a_left else 1 - p_a
        log_odds += math.log(LEFT_ON_TIE if left else 1 - LEFT_ON_TIE) - math.log(p_left if left else 1 - p_left)
    return 0.5 + (LEFT_ON_TIE - 0.5) * _sigmoid(log_odds)


def accuracy(world: World, winners: dict[int, bool | None]) -> float:
    """Agreement with the truth over all comparisons; a comparison left out (None or missing) scores 0.5."""
    score = 0.0
    for c, theta in enumerate(world.theta):
        winner = winners.get(c)
        score += 0.5 if winner is None else float(winner == (theta > 0))
    return score / len(world.theta)


def score_seed(world: World, labels: list[Label], names: dict[str, int], estimates: dict[str, tuple[float, float]],
               winners: dict[str, dict[int, bool | None]]) -> dict:
    """One seed's figures. ``names``: labeler name -> index; ``estimates``: name -> (reliability,
    left_on_tie) from the fit; ``winners``: method -> {comparison index: A won (None: left out)}."""
    order = sorted(names, key=names.get)
    true_bias = [World.true_bias(names[n]) for n in order]
    ties = {n: [lab for lab in labels if lab.labeler == n and abs(world.theta[lab.comparison]) < NEAR_TIE] for n in order}
    realised = [statistics.fmean(lab.chose_a == lab.a_left for lab in ties[n]) if ties[n] else 0.5 for n in order]
    ranked = sorted(order, key=lambda n: estimates[n][0])  # lowest reliability first
    lowest = ranked[: max(1, round(0.1 * len(order)))]
    # A reference that knows the truth: each labeler's share of labels naming the truly better side.
    right = {n: statistics.fmean(lab.chose_a == (world.theta[lab.comparison] > 0) for lab in labels if lab.labeler == n) for n in order}
    lowest_oracle = sorted(order, key=right.get)[: len(lowest)]
    bayes = bayes_posterior(world, labels, names)
    accuracies = {method: accuracy(world, won) for method, won in winners.items()}
    accuracies["bayes"] = accuracy(world, {c: None if p == 0.5 else p > 0.5 for c, p in bayes.items()})
    return {
        "left_bias_corr": statistics.correlation(true_bias, [estimates[n][1] for n in order]),
        "left_bias_corr_oracle": statistics.correlation(true_bias, realised),
        "left_bias_corr_bayes": statistics.correlation(true_bias, [bias_posterior(world, names[n], ties[n]) for n in order]),
        "comparisons": len(world.theta),
        "labels_per_labeler": len(labels) / len(order),
        "near_tie_labels_per_biased_labeler": statistics.fmean(len(ties[n]) for n in order if names[n] in BIASED),
        "random_clickers_flagged": all(n in lowest for n in order if names[n] in RANDOM),
        "random_clickers_flagged_oracle": all(n in lowest_oracle for n in order if names[n] in RANDOM),
        "lowest_reliability": [World.kind(names[n]) for n in lowest],
        "random_clicker_ranks": sorted(ranked.index(n) + 1 for n in order if names[n] in RANDOM),
        "accuracy": accuracies,
        "labelers": {
            World.kind(names[n]) + f" {names[n]}": {
                "true_accuracy": None if names[n] in RANDOM else round(world.accuracy[names[n]], 3),
                "reliability": round(estimates[n][0], 3), "left_on_tie": round(estimates[n][1], 3),
                "labels": sum(lab.labeler == n for lab in labels),
            } for n in order
        },
    }


# --- model only (a check of the app's path) --------------------------------------------------------------------------


def run_model_only(seed: int, comparisons: int) -> dict:
    """The same truth, labels drawn without the queue (3 distinct labelers per comparison at
    random, sides 50/50), fitted with ``annotation.reliability.fit``."""
    world = make_world(seed, comparisons)
    rng = random.Random(f"labels-{seed}")
    names = {f"w{w:02d}": w for w in range(LABELERS)}
    labels = []
    for c in range(comparisons):
        for w in rng.sample(range(LABELERS), OVERLAP):
            a_left = rng.random() < 0.5
            labels.append(Label(c, f"w{w:02d}", world.choose(w, c, a_left, rng), a_left))
    result = fit(labels)
    votes = [0] * comparisons
    for label in labels:
        votes[label.comparison] += 1 if label.chose_a else -1
    winners = {
        "majority": {c: None if v == 0 else v > 0 for c, v in enumerate(votes)},
        "reliability-weighted": {c: None if p == 0.5 else p > 0.5 for c, p in result.posterior_a.items()},
    }
    estimates = {n: (p.reliability, p.left_on_tie) for n, p in result.labelers.items()}
    return score_seed(world, labels, names, estimates, winners)


# --- the app's path --------------------------------------------------------------------------------------


def setup_django(admin_url: str) -> str:
    """Django on a fresh scratch database; returns the scratch folder (its broker, results)."""
    url = recreate_database(admin_url, DATABASE)
    scratch = tempfile.mkdtemp(prefix="arbiter-reliability-bench-")
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": url, "ARBITER_VAR_DIR": scratch,
                       "ARTIFACTS_DIR": scratch + "/artifacts", "ARBITER_DEMO": "false", "DEBUG": "false", "LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return scratch


def make_project(seed: int, world: World, repeat_rate: float, repeat_gap: int):
    """A project with one comparison per theta and the 20 labelers as members."""
    from django.contrib.auth import get_user_model

    from annotation.models import Comparison, Prompt, Response, ResponseSource, Role
    from annotation.services import membership_set, project_create, prompt_content_hash
    from modeling.models import CommitteeMember, MemberKind

    tag = f"{len(world.theta)}-{seed}"
    project = project_create(name=f"Reliability bench {tag}", slug=f"reliability-bench-{tag}", overlap_k=OVERLAP, gold_rate=0,
                             repeat_rate=repeat_rate, repeat_min_gap=repeat_gap)
    members = [CommitteeMember.objects.get_or_create(name=f"sim-{side}", defaults={"kind": MemberKind.LOCAL, "model_path": "/sim"})[0]
               for side in "ab"]
    prompts = Prompt.objects.bulk_create([
        Prompt(project=project, messages=messages, category="sim", content_hash=prompt_content_hash(messages=messages))
        for messages in ([{"role": "user", "content": f"Bench {tag}, question {c}?"}] for c in range(len(world.theta)))
    ])
    responses = Response.objects.bulk_create([
        Response(prompt=prompt, source=ResponseSource.MODEL, member=member, text=f"Answer {side} to question {c}.")
        for c, prompt in enumerate(prompts) for side, member in zip("ab", members)
    ])
    comparisons = Comparison.objects.bulk_create([
        Comparison(project=project, prompt=prompt, response_a=responses[2 * c], response_b=responses[2 * c + 1])
        for c, prompt in enumerate(prompts)
    ])
    users = []
    for w in range(LABELERS):
        user = get_user_model().objects.create_user(f"b{tag}-w{w:02d}", f"b{tag}-w{w:02d}@bench.invalid")
        membership_set(project=project, user=user, role=Role.LABELER)
        users.append(user)
    index = {comparison.pk: (c, comparison.response_a_id) for c, comparison in enumerate(comparisons)}
    return project, users, index


def label_through_queue(project, users, index, world: World, rng: random.Random) -> tuple[list[Label], int]:
    """Rounds of the labelers in random order, each asking the queue for its next assignment and
    answering it, until the queue has nothing for anyone. Returns the labels (not the repeats) and
    how many repeats were answered."""
    from annotation.models import Strength
    from annotation.services import Verdict, comparison_lease_next, judgment_submit

    labels, repeats = [], 0
    active = list(range(LABELERS))
    while active:
        rng.shuffle(active)
        for w in list(active):
            assignment = comparison_lease_next(project=project, labeler=users[w])
            if assignment is None:
                active.remove(w)
                continue
            c, a_id = index[assignment.comparison_id]
            a_left = assignment.left_response_id == a_id
            chose_a = world.choose(w, c, a_left, rng)
            verdict = Verdict(chosen="left" if chose_a == a_left else "right", strength=Strength.BETTER)
            judgment_submit(assignment_id=assignment.pk, labeler=users[w], verdict=verdict)
            if assignment.repeat_of_id:  # a swapped repeat: stored as a RepeatJudgment, no label
                repeats += 1
            else:
                labels.append(Label(c, users[w].username, chose_a, a_left))
    return labels, repeats


def run_app(seed: int, comparisons: int, repeat_rate: float, repeat_gap: int) -> dict:
    from django.db import transaction

    from annotation import tasks
    from annotation.exports import ExportFilters, export_rows
    from annotation.models import RepeatJudgment
    from annotation.services.reliability import reliability_fit_start

    world = make_world(seed, comparisons)
    random.seed(seed)  # the queue draws sides and repeats from the module's generator
    timings = {}
    started = time.perf_counter()
    project, users, index = make_project(seed, world, repeat_rate, repeat_gap)
    timings["setup_s"] = time.perf_counter() - started
    started = time.perf_counter()
    labels, repeats = label_through_queue(project, users, index, world, random.Random(f"labelers-{seed}"))
    timings["labeling_s"] = time.perf_counter() - started
    names = {user.username: w for w, user in enumerate(users)}

    started = time.perf_counter()
    with transaction.atomic():
        queued = reliability_fit_start(project=project)
    tasks.reliability_fit(queued.pk)  # the task's body, as the worker runs it
    reliability = project.reliability_fits.get(pk=queued.pk)
    timings["fit_s"] = time.perf_counter() - started
    assert reliability.state == "succeeded", reliability.error
    assert reliability.judgments == len(labels), (reliability.judgments, len(labels))

    started = time.perf_counter()
    winners = {}
    for method in ("majority", "reliability-weighted"):
        rows = export_rows(project=project, format="trl-preference", filters=ExportFilters.from_dict({"aggregation": method}))
        winners[method] = {index[r["comparison_id"]][0]: r["chosen_response_id"] == index[r["comparison_id"]][1]
                           for r in rows if r["pair_type"] == "chosen_rejected"}
    timings["exports_s"] = time.perf_counter() - started

    stored = list(RepeatJudgment.objects.filter(original__comparison__project=project)
                  .values_list("labeler__username", "original__comparison_id", "flipped"))
    assert len(stored) == repeats, (len(stored), repeats)
    estimates = {n: (v["reliability"], v["left_on_tie"]) for n, v in reliability.labelers.items()}
    row = score_seed(world, labels, names, estimates, winners)
    flips = [p["flips"] for p in reliability.profiles.values()]
    flagged: dict[str, dict[str, int]] = {}
    for name, profile in reliability.profiles.items():
        kind = flagged.setdefault(World.kind(names[name]), {})
        for flag in profile["flags"]:
            kind[flag["name"]] = kind.get(flag["name"], 0) + 1
    counts = [v["labels"] for v in reliability.labelers.values()]
    assert (sum(f["n"] for f in flips), sum(f["k"] for f in flips)) == (len(stored), sum(f for *_, f in stored))
    row.update(
        seed=seed, judgments=reliability.judgments, labels_range=[min(counts), max(counts)],
        fit={k: reliability.summary.get(k) for k in ("iterations", "converged", "seconds")},
        repeats={"n": sum(f["n"] for f in flips), "flips": sum(f["k"] for f in flips),
                 "expected_flips": sum(world.flip_probability(names[n], index[c][0]) for n, c, _ in stored)},
        profile_flags=flagged, timings={k: round(v, 1) for k, v in timings.items()},
    )
    return row


# --- over seeds ---------------------------------------------------------------------------------------------


def t_quantile(p: float, df: int) -> float:
    """Student t quantile (bisection on the CDF, Simpson's rule on the density)."""
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float, steps: int = 400) -> float:
        h = x / steps
        f = [const * (1 + (h * i) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def mean_ci(values: list[float]) -> dict:
    """Mean with its 95% t interval over seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": round(mean, 4), "ci95": None, "n": len(values)}
    half = t_quantile(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)], "n": len(values)}


def summarise(rows: list[dict]) -> dict:
    """The figures over seeds of one configuration."""
    acc = lambda m: [r["accuracy"][m] for r in rows]  # noqa: E731
    return {
        "comparisons": rows[0]["comparisons"],
        "seeds": len(rows),
        "labels_per_labeler": round(statistics.fmean(r["labels_per_labeler"] for r in rows), 1),
        "left_bias_corr": mean_ci([r["left_bias_corr"] for r in rows]),
        "left_bias_corr_oracle": mean_ci([r["left_bias_corr_oracle"] for r in rows]),
        "left_bias_corr_bayes": mean_ci([r["left_bias_corr_bayes"] for r in rows]),
        "random_clickers_flagged": sum(r["random_clickers_flagged"] for r in rows) / len(rows),
        "random_clickers_flagged_seeds": f"{sum(r['random_clickers_flagged'] for r in rows)}/{len(rows)}",
        "random_clicker_mean_rank": round(statistics.fmean(k for r in rows for k in r["random_clicker_ranks"]), 1),
        "random_clickers_flagged_oracle_seeds": f"{sum(r['random_clickers_flagged_oracle'] for r in rows)}/{len(rows)}",
        "majority_accuracy": mean_ci(acc("majority")),
        "weighted_accuracy": mean_ci(acc("reliability-weighted")),
        "weighted_minus_majority": mean_ci([w - m for w, m in zip(acc("reliability-weighted"), acc("majority"))]),
        "bayes_accuracy": mean_ci(acc("bayes")),
        "near_tie_labels_per_biased_labeler": round(statistics.fmean(r["near_tie_labels_per_biased_labeler"] for r in rows), 1),
    }


def flips_summary(rows: list[dict]) -> dict:
    n = sum(r["repeats"]["n"] for r in rows)
    k = sum(r["repeats"]["flips"] for r in rows)
    expected = sum(r["repeats"]["expected_flips"] for r in rows)
    low, high = wilson_interval(k, n)
    per_seed_inside = 0
    for r in rows:
        lo, hi = wilson_interval(r["repeats"]["flips"], r["repeats"]["n"])
        per_seed_inside += r["repeats"]["n"] > 0 and lo <= r["repeats"]["expected_flips"] / r["repeats"]["n"] <= hi
    return {
        "repeats": n, "flips": k, "observed_rate": round(k / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)],
        "true_rate": round(expected / n, 4) if n else None, "inside": bool(n) and low <= expected / n <= high,
        "seeds_inside": f"{per_seed_inside}/{len(rows)}",
    }


def flags_summary(rows: list[dict]) -> dict:
    """How often the profiles' own tests flagged each kind of labeler, over all seeds."""
    sizes = {"left-biased": len(BIASED), "random": len(RANDOM), "plain": LABELERS - len(BIASED) - len(RANDOM)}
    out = {kind: {"labelers": size * len(rows)} for kind, size in sizes.items()}
    for r in rows:
        for kind, counts in r["profile_flags"].items():
            for name, k in counts.items():
                out[kind][name] = out[kind].get(name, 0) + k
    return out


def targets(main: dict, flips: dict) -> dict:
    return {
        "left_bias_corr": {"target": f">= {TARGET_CORR}", "value": main["left_bias_corr"]["mean"],
                           "met": main["left_bias_corr"]["mean"] >= TARGET_CORR},
        "random_clickers_flagged": {"target": "both in the bottom 10% of reliability, every seed",
                                    "value": main["random_clickers_flagged_seeds"], "met": main["random_clickers_flagged"] == 1},
        "weighted_gain": {"target": f"reliability-weighted >= majority + {TARGET_GAIN:.2f}",
                          "value": main["weighted_minus_majority"]["mean"], "met": main["weighted_minus_majority"]["mean"] >= TARGET_GAIN},
        "flip_rate_recovered": {"target": "true flip rate inside the observed rate's Wilson 95% interval",
                                "value": f"{flips['true_rate']} in {flips['ci95']}", "met": flips["inside"]},
    }


# --- report ------------------------------------------------------------------------------------------------


def _ci(figure: dict, points: bool = False) -> str:
    scale = 100 if points else 1
    fmt = (lambda v: f"{v * scale:+.1f}") if points else (lambda v: f"{v:.3f}")
    if figure["ci95"] is None:
        return fmt(figure["mean"])
    return f"{fmt(figure['mean'])} [{fmt(figure['ci95'][0])}, {fmt(figure['ci95'][1])}]"


def _rows(r: dict, cells) -> str:
    """One table row per configuration: the app's path, the model-only check, the scaling rows."""
    configurations = [("app", r["app"]), ("model only", r["model_only"]), *(("app", x) for x in r["scaling"])]
    return "\n".join(f"| {path} | {s['comparisons']} | {s['labels_per_labeler']:.0f} | {s['seeds']} | " + " | ".join(cells(s)) + " |"
                     for path, s in configurations)


def write_doc(r: dict) -> None:
    s, f, t = r["settings"], r["flips"], r["targets"]
    flagged = "; ".join(
        f"{kind} ({v['labelers']} over the seeds): " + (", ".join(f"{name} {k}" for name, k in v.items() if name != "labelers") or "none")
        for kind, v in r["profile_flags"].items()
    )
    met = lambda key: "**met**" if t[key]["met"] else "**not met**"  # noqa: E731
    labelers = _rows(r, lambda x: [str(x["near_tie_labels_per_biased_labeler"]), _ci(x["left_bias_corr"]), _ci(x["left_bias_corr_oracle"]),
                                   _ci(x["left_bias_corr_bayes"]), x["random_clickers_flagged_seeds"], str(x["random_clicker_mean_rank"]),
                                   x["random_clickers_flagged_oracle_seeds"]])
    accuracies = _rows(r, lambda x: [_ci(x["majority_accuracy"]), _ci(x["weighted_accuracy"]),
                                     _ci(x["weighted_minus_majority"], points=True), _ci(x["bayes_accuracy"])])
    head = "| path | comparisons | labels per labeler | seeds |"
    body = f"""
Run {r['date']} on {r['machine']}, PostgreSQL, {r['seconds']:.0f} s. A simulation with a known truth
(`bench/labeler_reliability.py` says how): comparisons with a true preference theta ~ N(0, {THETA_SD}^2),
overlap {OVERLAP}, {LABELERS} labelers of accuracy {ACCURACY[0]}-{ACCURACY[1]}: 3 pick the left answer {LEFT_ON_TIE:.0%} of the time on
near-ties (|theta| < {NEAR_TIE}), 2 click at random. "app": labelled through the real queue
(`comparison_lease_next` / `judgment_submit`, gold rate 0, repeat rate {s['repeat_rate']} with gap {s['repeat_min_gap']}), fitted
by the `reliability_fit` task's body, aggregated by the export (`majority`, `reliability-weighted`; a
comparison left out scores 0.5). "model only": the same truth, labelers drawn at random per
comparison, `annotation.reliability.fit` called directly. Means over seeds with 95% t intervals.

Labelers: the fit's left pull (`left_on_tie`) against the truth (Pearson over the 20 labelers);
"realised" is each labeler's left share on the true near-ties, "Bayes" the posterior mean of its
pull knowing every true preference and behaviour and that 3 of 20 are biased, not which (the best
correlation in expectation; a shrunk estimate can beat the raw share, not this). Random clickers:
seeds in which both are the 2 least reliable by the fit, and their mean rank; "knowing the truth":
seeds in which both are the 2 labelers whose labels name the truly better answer least often (what
an estimate could reach if it knew every comparison's answer).

{head} near-tie labels per biased labeler | left-bias corr | realised share corr | Bayes corr | random clickers bottom 2 | their mean rank (1 = lowest) | bottom 2 knowing the truth |
|---|---|---|---|---|---|---|---|---|---|---|
{labelers}

Aggregation: agreement with the truth; "Bayes" decides with every labeler's true behaviour (a
ceiling for any aggregation of these labels).

{head} majority | reliability-weighted | weighted - majority (points) | Bayes |
|---|---|---|---|---|---|---|---|
{accuracies}

Swapped repeats ({s['comparisons']} comparisons): {f['repeats']} over the seeds, {f['flips']} flipped: **{f['observed_rate']}**
(Wilson 95% {f['ci95'][0]}-{f['ci95'][1]}) against the true {f['true_rate']} (per seed inside its interval:
{f['seeds_inside']}). The profiles' own tests (Bonferroni over the labelers at 5%) flagged: {flagged}.

Targets ({s['comparisons']} comparisons): left-bias correlation ≥ {TARGET_CORR}: {met('left_bias_corr')} ({t['left_bias_corr']['value']});
both random clickers in the bottom 10% of reliability: {met('random_clickers_flagged')} ({t['random_clickers_flagged']['value']}
seeds); reliability-weighted ≥ majority + {TARGET_GAIN * 100:.0f} points: {met('weighted_gain')}
({t['weighted_gain']['value'] * 100:+.1f}); flip rate within its interval: {met('flip_rate_recovered')}.
{r['note']}
"""
    replace_section("labeler_reliability", "Labeler reliability (`bench/labeler_reliability.py`)", body)


def note(app: dict, scaling: list[dict]) -> str:
    """What the figures say about the targets, read off them."""
    parts = []
    if app["left_bias_corr"]["mean"] < TARGET_CORR:
        parts.append(
            f"At {app['near_tie_labels_per_biased_labeler']} near-tie labels per biased labeler the labels hold little of the "
            f"bias: even knowing the truth, the realised share correlates {app['left_bias_corr_oracle']['mean']:.2f} and the "
            f"Bayes estimate {app['left_bias_corr_bayes']['mean']:.2f}.")
    if app["random_clickers_flagged"] < 1:
        parts.append(
            f"The random clickers rank {app['random_clicker_mean_rank']} of {LABELERS} on average: a plain labeler of "
            f"accuracy {ACCURACY[0]}-0.6 is hardly told from a coin in {app['labels_per_labeler']:.0f} labels: ranked by how often "
            f"their labels name the truly better answer (knowing the truth), both are the lowest two in "
            f"{app['random_clickers_flagged_oracle_seeds']} seeds.")
    for row in scaling:
        parts.append(
            f"At {row['comparisons']} comparisons ({row['labels_per_labeler']:.0f} labels per labeler): left-bias correlation "
            f"{row['left_bias_corr']['mean']:.2f} (realised {row['left_bias_corr_oracle']['mean']:.2f}, Bayes "
            f"{row['left_bias_corr_bayes']['mean']:.2f}), random clickers the lowest two in {row['random_clickers_flagged_seeds']} "
            f"seeds (mean rank {row['random_clicker_mean_rank']}), weighted - majority {row['weighted_minus_majority']['mean'] * 100:+.1f} "
            "points.")
    return " ".join(parts)


def run_seeds(comparisons: int, seeds: int, args) -> list[dict]:
    rows = []
    for seed in range(seeds):
        row = run_app(seed, comparisons, args.repeat_rate, args.repeat_gap)
        rows.append(row)
        print(f"{comparisons} comparisons, seed {seed}: majority {row['accuracy']['majority']:.3f}, weighted "
              f"{row['accuracy']['reliability-weighted']:.3f}, Bayes {row['accuracy']['bayes']:.3f}; left-bias corr "
              f"{row['left_bias_corr']:.2f} (oracle {row['left_bias_corr_oracle']:.2f}); lowest reliability "
              f"{row['lowest_reliability']}; repeats {row['repeats']['n']} ({row['repeats']['flips']} flipped, "
              f"{row['repeats']['expected_flips']:.1f} expected); {row['timings']}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--comparisons", type=int, default=300)
    parser.add_argument("--repeat-rate", type=float, default=0.1)
    parser.add_argument("--repeat-gap", type=int, default=10)
    parser.add_argument("--scaling", default="1500,3000", help="comparisons of each scaling row, same path ('' for none)")
    parser.add_argument("--scaling-seeds", type=int, default=3)
    parser.add_argument("--database-admin", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()

    scratch = setup_django(args.database_admin)
    per_seed = run_seeds(args.comparisons, args.seeds, args)
    app = summarise(per_seed)
    model_only = summarise([run_model_only(seed, args.comparisons) for seed in range(args.seeds)])
    scaling = []
    for n in [int(x) for x in args.scaling.split(",") if x.strip()]:
        rows = run_seeds(n, args.scaling_seeds, args)
        scaling.append({**summarise(rows), "flips": flips_summary(rows)})
    flips = flips_summary(per_seed)
    result = {
        "benchmark": "labeler_reliability",
        "date": utc_now(),
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": {"comparisons": args.comparisons, "overlap_k": OVERLAP, "labelers": LABELERS, "seeds": args.seeds,
                     "theta_sd": THETA_SD, "near_tie": NEAR_TIE, "left_on_tie": LEFT_ON_TIE, "accuracy": list(ACCURACY),
                     "gold_rate": 0, "repeat_rate": args.repeat_rate, "repeat_min_gap": args.repeat_gap,
                     "dropped_comparison_scores": 0.5},
        "left_bias_corr": app["left_bias_corr"]["mean"],
        "random_clickers_flagged": app["random_clickers_flagged"],
        "majority_accuracy": app["majority_accuracy"]["mean"],
        "weighted_accuracy": app["weighted_accuracy"]["mean"],
        "app": app,
        "flips": flips,
        "profile_flags": flags_summary(per_seed),
        "model_only": model_only,
        "scaling": scaling,
    }
    result["targets"] = targets(app, flips)
    result["note"] = note(app, scaling)
    result["per_seed"] = per_seed
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, indent=2))
    return publish(RESULTS, result, write_doc, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
