"""Which labels to trust: a labeler-reliability model fitted jointly with the comparisons'
outcomes, and the small tests the per-labeler profile flags outliers with.

The model is the Noisy Bradley-Terry family (Crowd-BT; ``crowd-kit``'s NoisyBT) in the form of a
two-parameter logistic item-response model with one item per comparison:

    P(labeler w picks response A of comparison c) = sigmoid(alpha_w * theta_c + beta_w * s)

``theta_c`` is the comparison's true preference for A (log-odds); ``alpha_w`` the labeler's
reliability (about 1 for a typical careful labeler, 0 for one who clicks at random, negative for
one who picks the worse answer); ``beta_w`` the labeler's pull toward the left side (``s`` = +1
when A was shown on the left, -1 on the right). The pull moves near-ties the most, where
``alpha * theta`` is small, which is where position bias shows. Priors keep it finite with a
few labels each: theta ~ N(0, 2^2), alpha ~ N(1, 1), beta ~ N(0, 1).

The fit integrates each theta out on a grid (marginal maximum a posteriori by EM, as item-response
models are fitted: Bock-Aitkin). Fitting theta jointly instead (a point estimate per comparison
from its three labels) over-fits each comparison to its own labels: on the simulation of
``bench/labeler_reliability.py`` that version lost to majority vote, this one beats it. A
comparison's posterior confidence is P(theta > 0 | its labels), from the same grid.

numpy (already in every install: torch and pandas-free) vectorises the fit on the ``default``
worker (``annotation.tasks.reliability_fit``, never in a request); ``comparison_posterior`` is
plain Python, for an export's comparisons labelled after the last fit. crowd-kit's NoisyBT was
the alternative: it pulls pandas, scipy and scikit-learn into the worker, treats every response as
a player across comparisons (ours meet once), and has no side-of-screen term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modeling.ml.evaluation import wilson_interval  # plain Python (modeling/ml imports no Django, no torch here)

THETA_SD = 2.0
ALPHA_MEAN, ALPHA_SD = 1.0, 1.0
BETA_SD = 1.0
#: theta's grid: wide enough for a comparison every labeler agrees on, fine enough that the
#: posterior moves smoothly (41 points, a step of 0.3 log-odds).
GRID = tuple(0.3 * (k - 20) for k in range(41))  # symmetric: GRID[20 - j] == -GRID[20 + j]
_LOG_PRIOR = tuple(-g * g / (2 * THETA_SD**2) for g in GRID)
#: Labels per block of the vectorised steps: bounds the fit's memory (block x 41 floats per array).
BLOCK = 100_000


@dataclass(frozen=True)
class Label:
    """One binary verdict: who, on which comparison, whether they picked response A, and whether
    A was on their left."""

    comparison: int
    labeler: str
    chose_a: bool
    a_left: bool


@dataclass
class LabelerParams:
    reliability: float = ALPHA_MEAN  # alpha
    bias: float = 0.0  # beta, log-odds toward the left side
    labels: int = 0

    @property
    def left_on_tie(self) -> float:
        """P(picks the left answer when the two are truly equal): sigmoid(beta)."""
        return _sigmoid(self.bias)


@dataclass
class Fit:
    labelers: dict[str, LabelerParams] = field(default_factory=dict)
    posterior_a: dict[int, float] = field(default_factory=dict)  # P(A is better | labels)
    iterations: int = 0
    converged: bool = False


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    e = math.exp(x)
    return e / (1 + e)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def comparison_posterior(labels: list[tuple[float, float, bool, bool]]) -> float:
    """P(A is better) for one comparison given its labels as (alpha, beta, chose_a, a_left) with
    the labelers' parameters held fixed (the fit's E-step for one comparison, in plain Python)."""
    log_post = list(_LOG_PRIOR)
    for alpha, beta, chose_a, a_left in labels:
        s = 1.0 if a_left else -1.0
        sign = 1.0 if chose_a else -1.0
        for k, g in enumerate(GRID):
            log_post[k] += _log_sigmoid(sign * (alpha * g + beta * s))
    top = max(log_post)
    weights = [math.exp(v - top) for v in log_post]
    # Theta = 0 (the middle point) counts half for each side. Both sides summed in mirrored order,
    # so a comparison whose labels cancel out is exactly 1/2 (the exports drop it as a tie).
    positive = sum(weights[20 + j] for j in range(1, 21))
    negative = sum(weights[20 - j] for j in range(1, 21))
    return (positive + weights[20] / 2) / (positive + negative + weights[20])


def fit(labels: list[Label | ProfileRow], *, max_iterations: int = 100, tolerance: float = 1e-4) -> Fit:
    """Reliability and left pull per labeler and P(A is better) per comparison (see the module).
    ``labels``: ``Label``s, or the profile's ``ProfileRow``s, which carry the same four fields."""
    import numpy as np

    if not labels:
        return Fit(converged=True)
    comparisons = sorted({label.comparison for label in labels})
    names = sorted({label.labeler for label in labels})
    c_index = {c: i for i, c in enumerate(comparisons)}
    w_index = {w: i for i, w in enumerate(names)}
    c = np.fromiter((c_index[label.comparison] for label in labels), dtype=np.int64, count=len(labels))
    w = np.fromiter((w_index[label.labeler] for label in labels), dtype=np.int64, count=len(labels))
    s = np.fromiter((1.0 if label.a_left else -1.0 for label in labels), dtype=np.float64, count=len(labels))
    y = np.fromiter((label.chose_a for label in labels), dtype=np.float64, count=len(labels))
    grid, log_prior = np.array(GRID), np.array(_LOG_PRIOR)
    n_c, n_w = len(comparisons), len(names)
    alpha, beta = np.full(n_w, ALPHA_MEAN), np.zeros(n_w)
    blocks = [slice(i, i + BLOCK) for i in range(0, len(labels), BLOCK)]

    def logits(block):
        return alpha[w[block]][:, None] * grid[None, :] + (beta[w[block]] * s[block])[:, None]

    def posterior():
        log_post = np.tile(log_prior, (n_c, 1))
        for block in blocks:
            signed = np.where(y[block, None] == 1, 1.0, -1.0) * logits(block)
            np.add.at(log_post, c[block], -np.logaddexp(0.0, -signed))
        log_post -= log_post.max(axis=1, keepdims=True)
        q = np.exp(log_post)
        return q / q.sum(axis=1, keepdims=True)

    result = Fit()
    for iteration in range(1, max_iterations + 1):
        q = posterior()  # E-step: each comparison's theta given the labelers
        before = np.concatenate([alpha, beta])
        for _newton in range(3):  # M-step: each labeler's (alpha, beta) given those posteriors
            g_a = -(alpha - ALPHA_MEAN) / ALPHA_SD**2
            g_b = -beta / BETA_SD**2
            h_aa, h_bb, h_ab = np.full(n_w, 1 / ALPHA_SD**2), np.full(n_w, 1 / BETA_SD**2), np.zeros(n_w)
            for block in blocks:
                p = 1 / (1 + np.exp(-logits(block)))
                weight = q[c[block]]
                r, v = (y[block, None] - p) * weight, p * (1 - p) * weight
                wb, sb = w[block], s[block]
                g_a += np.bincount(wb, (r * grid).sum(axis=1), n_w)
                g_b += np.bincount(wb, r.sum(axis=1) * sb, n_w)
                h_aa += np.bincount(wb, (v * grid * grid).sum(axis=1), n_w)
                h_bb += np.bincount(wb, v.sum(axis=1), n_w)
                h_ab += np.bincount(wb, (v * grid).sum(axis=1) * sb, n_w)
            det = h_aa * h_bb - h_ab * h_ab  # > 0: sums of PSD terms plus the priors' diagonal
            alpha = alpha + (h_bb * g_a - h_ab * g_b) / det
            beta = beta + (h_aa * g_b - h_ab * g_a) / det
        result.iterations = iteration
        if np.abs(np.concatenate([alpha, beta]) - before).max() < tolerance:
            result.converged = True
            break
    q = posterior()
    positive = (q * (grid > 1e-9)).sum(axis=1) + 0.5 * (q * (np.abs(grid) <= 1e-9)).sum(axis=1)
    counts = np.bincount(w, minlength=n_w)
    result.labelers = {
        name: LabelerParams(reliability=float(alpha[i]), bias=float(beta[i]), labels=int(counts[i])) for i, name in enumerate(names)
    }
    result.posterior_a = {comparison: float(positive[i]) for i, comparison in enumerate(comparisons)}
    return result


# --- tests the profile flags with -----------------------------------------------------------------


def binomial_p(successes: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability, under rate ``p``, of an outcome no more
    likely than the one seen."""
    if n == 0:
        return 1.0
    log_pmf = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k * math.log(p) if k else 0.0)
               + ((n - k) * math.log1p(-p) if n - k else 0.0) for k in range(n + 1)]
    seen = log_pmf[successes] + 1e-9
    return min(1.0, sum(math.exp(v) for v in log_pmf if v <= seen))


def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with ``df`` degrees of freedom > x): the regularised upper gamma Q(df/2, x/2)."""
    if x <= 0:
        return 1.0
    a, x = df / 2, x / 2
    if x < a + 1:  # series for the lower part
        term = total = 1 / a
        k = a
        while abs(term) > abs(total) * 1e-12:
            k += 1
            term *= x / k
            total += term
        return max(0.0, 1 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    # continued fraction for the upper part (Lentz)
    tiny = 1e-300
    b = x + 1 - a
    cf, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 300):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        cf = b + an / cf
        cf = tiny if abs(cf) < tiny else cf
        d = 1 / d
        delta = d * cf
        h *= delta
        if abs(delta - 1) < 1e-12:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - math.lgamma(a)) * h)


def chi2_goodness_p(observed: dict, expected_share: dict) -> tuple[float, float, int]:
    """Pearson's chi-square of ``observed`` counts against shares; returns (statistic, p, degrees
    of freedom). The shares must cover every observed category (the caller smooths them)."""
    n = sum(observed.values())
    cats = [k for k, share in expected_share.items() if share > 0]
    if n == 0 or len(cats) < 2:
        return 0.0, 1.0, 0
    stat = sum((observed.get(k, 0) - n * expected_share[k]) ** 2 / (n * expected_share[k]) for k in cats)
    return stat, chi2_sf(stat, len(cats) - 1), len(cats) - 1


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided z-test of two proportions (pooled variance)."""
    if not n1 or not n2:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


# --- the per-labeler profile ------------------------------------------------------------------------

#: A comparison whose consensus (the other labelers' posterior) is within this of 1/2 is a near-tie.
NEAR_TIE = 0.25
#: Each test flags at this level split over the labelers (Bonferroni per test: a labeler meets up
#: to six tests, so the chance that a typical labeler gets some flag is up to six times this).
FLAG_LEVEL = 0.05


@dataclass(frozen=True)
class ProfileRow:
    """One human judgment as the profile reads it."""

    comparison: int
    labeler: str
    chose_a: bool
    a_left: bool
    strength: str | None
    seconds: float
    gold_correct: bool | None = None  # None: not a gold comparison
    a_longer: bool | None = None  # None: both answers have the same length


def proportion(successes: int, n: int) -> dict:
    """A count out of n with its rate and 95% Wilson interval (profiles here, the judge's figures in annotation/judging.py)."""
    low, high = wilson_interval(successes, n)
    return {"n": n, "k": successes, "rate": round(successes / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)]}


def labeler_profiles(rows: list[ProfileRow], result: Fit, flips: dict[str, tuple[int, int]] | None = None,
                     strengths: tuple[str, ...] = ()) -> tuple[dict[str, dict], dict]:
    """Each labeler's profile and the project's figures it is read against.

    The consensus a labeler is compared with leaves that labeler out: the posterior of the
    comparison from the other labels (reliability-weighted, with the fit's parameters), so a
    labeler's own click never makes its agreement. ``flips``: {labeler: (repeats, flips)} of
    swapped repeats. Outliers are flagged by a named test at ``FLAG_LEVEL`` split over the
    labelers (Bonferroni, per test), never by a bare threshold.
    """
    flips = flips or {}
    params = result.labelers
    default = LabelerParams()
    by_comparison: dict[int, list[ProfileRow]] = {}
    for row in rows:
        by_comparison.setdefault(row.comparison, []).append(row)
    # The leave-one-out consensus of each row: P(A better) from the others' labels, None if alone.
    consensus: dict[tuple[int, str], float | None] = {}
    for comparison, group in by_comparison.items():
        for row in group:
            others = [(params.get(o.labeler, default).reliability, params.get(o.labeler, default).bias, o.chose_a, o.a_left)
                      for o in group if o.labeler != row.labeler]
            consensus[(comparison, row.labeler)] = comparison_posterior(others) if others else None
    names = sorted({row.labeler for row in rows})
    level = FLAG_LEVEL / max(1, len(names))
    counts_all: dict[str, int] = {}
    for row in rows:
        key = row.strength or "unknown"
        counts_all[key] = counts_all.get(key, 0) + 1
    categories = sorted(set(strengths) | set(counts_all))
    agree_total = sum(
        1 for row in rows if (p := consensus[(row.comparison, row.labeler)]) is not None and p != 0.5 and (p > 0.5) == row.chose_a
    )
    agree_n = sum(1 for row in rows if (p := consensus[(row.comparison, row.labeler)]) is not None and p != 0.5)
    repeats_total = sum(r for r, _ in flips.values())
    flips_total = sum(f for _, f in flips.values())
    by_labeler: dict[str, list[ProfileRow]] = {}
    for row in rows:
        by_labeler.setdefault(row.labeler, []).append(row)
    profiles = {}
    for name in names:
        mine = by_labeler[name]
        n = len(mine)
        left = sum(row.chose_a == row.a_left for row in mine)
        ties = [row for row in mine if (p := consensus[(row.comparison, name)]) is not None and abs(p - 0.5) <= NEAR_TIE]
        left_ties = sum(row.chose_a == row.a_left for row in ties)
        judged = [(row, consensus[(row.comparison, name)]) for row in mine if consensus[(row.comparison, name)] not in (None, 0.5)]
        agree = sum((p > 0.5) == row.chose_a for row, p in judged)
        # Length: paired, on the comparisons where the answers' lengths differ and others labelled.
        paired = [(row.chose_a == row.a_longer, (p > 0.5) == row.a_longer) for row, p in judged if row.a_longer is not None]
        mine_longer = sum(a for a, _ in paired)
        consensus_longer = sum(b for _, b in paired)
        only_mine = sum(a and not b for a, b in paired)
        only_consensus = sum(b and not a for a, b in paired)
        counts = {k: 0 for k in categories}
        for row in mine:
            counts[row.strength or "unknown"] += 1
        # Against the project's distribution (add-one smoothed: no category has an empty share)
        chi2, chi2_p, df = chi2_goodness_p(counts, {k: (counts_all.get(k, 0) + 1) / (len(rows) + len(categories)) for k in categories})
        gold = [row.gold_correct for row in mine if row.gold_correct is not None]
        repeats, flipped = flips.get(name, (0, 0))
        estimate = params.get(name)
        profile = {
            "judgments": n,
            "reliability": round(estimate.reliability, 3) if estimate else None,
            "left_on_tie_estimate": round(estimate.left_on_tie, 3) if estimate else None,
            "left": {**proportion(left, n), "p": binomial_p(left, n)},
            "left_near_ties": {**proportion(left_ties, len(ties)), "p": binomial_p(left_ties, len(ties))},
            "length": {
                "n": len(paired), "labeler_longer_rate": round(mine_longer / len(paired), 4) if paired else None,
                "consensus_longer_rate": round(consensus_longer / len(paired), 4) if paired else None,
                "p": binomial_p(only_mine, only_mine + only_consensus),
            },
            "strengths": {"counts": counts, "project_share": {k: round(counts_all.get(k, 0) / len(rows), 4) for k in categories},
                          "chi2": round(chi2, 3), "df": df, "p": chi2_p},
            "agreement": {**proportion(agree, len(judged)), "others_rate": round((agree_total - agree) / (agree_n - len(judged)), 4)
                          if agree_n > len(judged) else None,
                          "p": two_proportion_p(agree, len(judged), agree_total - agree, agree_n - len(judged))},
            "gold": proportion(sum(gold), len(gold)),
            "median_seconds": round(sorted(row.seconds for row in mine)[(n - 1) // 2], 1) if n else None,
            "flips": {**proportion(flipped, repeats), "others_rate": round((flips_total - flipped) / (repeats_total - repeats), 4)
                      if repeats_total > repeats else None,
                      "p": two_proportion_p(flipped, repeats, flips_total - flipped, repeats_total - repeats)},
        }
        for section in profile.values():
            if isinstance(section, dict) and "p" in section:
                section["p_text"] = p_text(section["p"])
        profile["flags"] = _flags(profile, level)
        profiles[name] = profile
    summary = {
        "labelers": len(names), "judgments": len(rows), "comparisons": len(by_comparison), "flag_level": level,
        "left_share": round(sum(row.chose_a == row.a_left for row in rows) / len(rows), 4) if rows else None,
        "strengths": {k: counts_all.get(k, 0) for k in categories},
        "agreement": round(agree_total / agree_n, 4) if agree_n else None,
        "flip_rate": round(flips_total / repeats_total, 4) if repeats_total else None, "repeats": repeats_total,
        "near_tie": NEAR_TIE,
    }
    return profiles, summary


def p_text(p: float) -> str:
    """A p-value as people read it: four decimals, or "< 0.0001"."""
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _flags(profile: dict, level: float) -> list[dict]:
    """The tests this labeler fails at ``level``; each names itself, its figure and its p-value."""
    flags = []

    def flag(name: str, test: str, figure: str, p: float) -> None:
        if p < level:
            flags.append({"name": name, "test": test, "figure": figure, "p": p, "p_text": p_text(p), "level": round(level, 5)})

    left, ties = profile["left"], profile["left_near_ties"]
    if left["n"]:
        flag("position bias", "exact binomial test of left picks against 50%", f"{left['rate']:.0%} left of {left['n']}", left["p"])
    if ties["n"]:
        flag("position bias on near-ties", "exact binomial test of left picks on near-ties against 50%",
             f"{ties['rate']:.0%} left of {ties['n']} near-ties", ties["p"])
    length = profile["length"]
    # Toward the longer answer only: a labeler who picks the longer one less often than the
    # consensus mostly disagrees with it, which "low agreement" says (where the better answer is
    # the longer, every careless labeler would read as "against length").
    if length["n"] and length["labeler_longer_rate"] > length["consensus_longer_rate"]:
        flag("length bias", "McNemar's exact test: longer answer picked, labeler vs consensus on the same comparisons",
             f"longer wins {length['labeler_longer_rate']:.0%} vs consensus {length['consensus_longer_rate']:.0%} (n={length['n']})", length["p"])
    strengths = profile["strengths"]
    if strengths["df"]:
        flag("use of strengths", f"chi-square goodness of fit against the project's strengths (df={strengths['df']})",
             f"chi2 = {strengths['chi2']}", strengths["p"])
    agreement = profile["agreement"]
    if agreement["n"] and agreement["others_rate"] is not None and agreement["rate"] < agreement["others_rate"]:
        flag("low agreement", "two-proportion z-test of agreement with the leave-one-out consensus against the other labelers'",
             f"{agreement['rate']:.0%} vs {agreement['others_rate']:.0%} (n={agreement['n']})", agreement["p"])
    flips = profile["flips"]
    if flips["n"] and flips["others_rate"] is not None and flips["rate"] > flips["others_rate"]:
        flag("inconsistent on repeats", "two-proportion z-test of the flip rate on swapped repeats against the other labelers'",
             f"{flips['rate']:.0%} flipped vs {flips['others_rate']:.0%} (n={flips['n']})", flips["p"])
    return flags
