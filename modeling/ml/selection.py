"""Which candidate pairs go to humans: a sampling pass draws more answers per prompt than it
shows, and a rule picks the pairs whose labels should teach the reward model the most.

Rules (``RULES``):

- ``random``: uniform without replacement, the baseline and the default.
- ``uncertainty``: the reward model's P(first answer wins) closest to 1/2 first (ties by index).
- ``d-optimal``: greedy D-optimal design for the linear Bradley-Terry head on the reward model's
  last-layer embeddings (Shen et al. 2025, "Active reward modeling"): each pick maximises
  ``log det(A + w x x^T)``, i.e. ``w x^T A^-1 x``, where ``x`` is the pair's feature (embedding of
  the first answer minus the second's), ``w = p (1 - p)`` its Fisher weight under the current
  model, and ``A = ridge I + sum w x x^T`` over the pairs already labelled and already picked.

Every selection keeps a uniform share (``random_share``): ``m_rule = budget - round(random_share
budget)`` pairs are picked by the rule first (deterministic given the inputs, at most
``prompt_cap`` per prompt), then ``m_r = budget - m_rule`` are drawn uniformly without replacement
from all the remaining candidates, with no cap, so that each of them was picked with a known
probability ``m_r / (n - m_rule)``. A rule's picks carry probability 1. The app stores the
probability with the comparison, so an estimate over labels (win rates, the leaderboard) can
weigh each label by its inverse; the uniform share also keeps the labelled set from drifting
wholly to what the current model finds hard. When the cap leaves fewer than ``m_rule`` possible
rule picks, the uniform share takes the rest.

Plain Python and numpy, no Django; numpy is imported inside the functions (as in
annotation/reliability.py), so importing this module costs nothing. bench/active_selection.py
measures the rules on HH-RLHF pairs and on a simulation with a known truth.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RULES = ("random", "uncertainty", "d-optimal")
#: d-optimal updates every candidate's gain after each pick up to this n x d, beyond it goes lazy
#: and re-scores this many of the best out-of-date candidates at once (see ``_d_optimal``).
_DENSE_LIMIT = 4_000_000
_BLOCK = 32


@dataclass(frozen=True)
class Pick:
    index: int  # index into the candidate list
    rule: str  # "random" for the uniform share (and for rule "random"), else the rule that picked it
    probability: float  # inclusion probability of this candidate in this selection


def select_pairs(
    *,
    rule: str,
    groups: Sequence[int],
    budget: int,
    win_prob=None,
    features=None,
    labelled_features=None,
    labelled_prob=None,
    random_share: float = 0.2,
    prompt_cap: int = 2,
    ridge: float = 1.0,
    seed: int = 0,
) -> list[Pick]:
    """``budget`` of the ``n = len(groups)`` candidate pairs (fewer when there are fewer), rule
    picks first, then the uniform share in increasing index order (see the module).

    ``groups[i]``: the prompt of candidate i; ``win_prob[i]``: the reward model's P(first answer
    beats the second), needed by ``uncertainty`` and ``d-optimal``; ``features``: n x d pair
    features, needed by ``d-optimal``; ``labelled_features`` (k x d) and ``labelled_prob`` (k):
    the pairs already labelled, whose Fisher information starts the design (None: ``ridge I``).
    Bad input raises ValueError."""
    import numpy as np

    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}: expected one of {', '.join(RULES)}")
    groups = list(groups)
    n = len(groups)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"budget must be a whole number >= 0, got {budget!r}")
    if not _finite_number(random_share) or not 0 <= random_share <= 1:
        raise ValueError(f"random_share must be between 0 and 1, got {random_share!r}")
    if isinstance(prompt_cap, bool) or not isinstance(prompt_cap, (int, np.integer)) or prompt_cap < 1:
        raise ValueError(f"prompt_cap must be a whole number >= 1, got {prompt_cap!r}")
    if not _finite_number(ridge) or ridge <= 0:
        raise ValueError(f"ridge must be a finite number > 0, got {ridge!r}")
    p = None if win_prob is None else _vector("win_prob", win_prob, n, probability=True)
    x = None if features is None else _matrix("features", features, n)
    if rule in ("uncertainty", "d-optimal") and p is None:
        raise ValueError(f"rule {rule!r} needs win_prob: the reward model's P(first wins) for each candidate")
    if rule == "d-optimal" and x is None:
        raise ValueError("rule 'd-optimal' needs features: one row per candidate (embedding of first - second)")
    fisher = None
    if (labelled_features is None) != (labelled_prob is None):
        raise ValueError("labelled_features and labelled_prob go together: give both or neither")
    if labelled_features is not None:
        lx = _matrix("labelled_features", labelled_features, None)
        lp = _vector("labelled_prob", labelled_prob, lx.shape[0], probability=True)
        if x is not None and lx.shape[0] and lx.shape[1] != x.shape[1]:
            raise ValueError(f"labelled_features have {lx.shape[1]} columns, features {x.shape[1]}")
        if lx.shape[0] and rule == "d-optimal":
            fisher = (lx * (lp * (1 - lp))[:, None]).T @ lx
    if n == 0:
        return []
    budget = min(int(budget), n)

    if rule == "random":
        m_rule, chosen = 0, []
    else:
        m_rule = budget - round(random_share * budget)
        if rule == "uncertainty":
            ranked = np.argsort(np.abs(p - 0.5), kind="stable").tolist()  # stable: ties by index
            chosen = _capped(ranked, groups, m_rule, prompt_cap)
        else:
            chosen = _d_optimal(x, p * (1 - p), groups, m_rule, prompt_cap, ridge, fisher)
    picks = [Pick(i, rule, 1.0) for i in chosen]
    free = np.ones(n, dtype=bool)
    free[chosen] = False
    rest = np.flatnonzero(free)
    m_r = budget - len(chosen)
    if m_r:
        drawn = np.sort(np.random.default_rng(seed).choice(len(rest), size=m_r, replace=False))
        probability = m_r / len(rest)
        picks += [Pick(int(rest[j]), "random", probability) for j in drawn]
    return picks


def _capped(ranked, groups: list, m: int, cap: int) -> list[int]:
    """The first ``m`` of ``ranked`` with at most ``cap`` from any one group."""
    counts: dict = {}
    out = []
    for i in ranked:
        if len(out) == m:
            break
        if counts.get(groups[i], 0) < cap:
            counts[groups[i]] = counts.get(groups[i], 0) + 1
            out.append(i)
    return out


def _d_optimal(x: np.ndarray, w: np.ndarray, groups: list, m: int, cap: int, ridge: float, fisher) -> list[int]:
    """Greedy D-optimal picks: each maximises the gain ``w_i x_i^T A^-1 x_i`` (ties: lowest index).

    After k picks ``A_k^-1 = A_0^-1 - sum_{j<k} v_j v_j^T`` (Sherman-Morrison, one ``v`` a pick), so
    ``q_i = x_i^T A^-1 x_i`` is kept up to date by subtracting ``(x_i . v_j)^2``: no d x d matrix
    at all unless labelled pairs give ``A_0``. Small problems update every q after each pick
    (O(n d) a pick, in numpy); large ones go lazy (``_lazy_picks``)."""
    import numpy as np

    n, d = x.shape
    if m == 0:
        return []
    if fisher is None:
        base = None  # A_0^-1 = I / ridge
        q = np.einsum("ij,ij->i", x, x) / ridge
    else:
        base = np.linalg.inv(fisher + ridge * np.eye(d))
        base = (base + base.T) / 2
        q = np.empty(n)
        for start in range(0, n, 4096):  # a slice of rows at a time: never an n x d x d temporary
            rows = x[start : start + 4096]
            q[start : start + 4096] = np.einsum("ij,ij->i", rows @ base, rows)
    v = np.empty((m, d))

    def add(i: int, k: int) -> None:
        """v_k for candidate i, the k-th pick."""
        a_x = (x[i] / ridge if base is None else base @ x[i]) - v[:k].T @ (v[:k] @ x[i])  # A_k^-1 x_i
        v[k] = a_x * math.sqrt(w[i] / (1.0 + w[i] * float(a_x @ x[i])))

    if n * d <= _DENSE_LIMIT:
        return _dense_picks(x, w, w * q, groups, m, cap, add, v)
    return _lazy_picks(x, w, q, groups, m, cap, add, v)


def _dense_picks(x, w, gain, groups, m, cap, add, v) -> list[int]:
    """Every gain updated after each pick, in place (a gain of -inf: picked or its prompt full)."""
    import numpy as np

    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: list[int] = []
    counts: dict = {}
    for k in range(m):
        i = int(np.argmax(gain))  # the first of equal maxima: ties go to the lowest index
        if gain[i] == -np.inf:
            break
        out.append(i)
        counts[groups[i]] = counts.get(groups[i], 0) + 1
        add(i, k)
        gain[i] = -np.inf
        if counts[groups[i]] >= cap:
            gain[members[groups[i]]] = -np.inf
        drop = x @ v[k]
        drop *= drop
        drop *= w
        gain -= drop  # -inf stays -inf
    return out


def _lazy_picks(x, w, q, groups, m, cap, add, v) -> list[int]:
    """The same picks for large n x d: the gains only shrink as picks are added, so an
    out-of-date gain bounds the current one from above (lazy greedy, Minoux 1978). A heap holds
    each candidate's last gain and the pick count it is up to date with; one on top that is up to
    date is the best of all, else it and the next ``_BLOCK`` out-of-date ones are brought up to
    date together (O(d) for each pick they missed). n = 20k, d = 1,000, 500 picks: 3-6 s here."""
    import numpy as np

    heap = [(-float(g), i, 0) for i, g in enumerate(w * q)]  # (-gain, index, picks it is up to date with)
    heapq.heapify(heap)
    counts: dict = {}
    out: list[int] = []
    while heap and len(out) < m:
        _, i, seen = heapq.heappop(heap)
        if counts.get(groups[i], 0) >= cap:
            continue  # its prompt is full: it leaves for good
        k = len(out)
        if seen == k:
            out.append(i)
            counts[groups[i]] = counts.get(groups[i], 0) + 1
            add(i, k)
            continue
        block, since = [i], [seen]
        while heap and len(block) < _BLOCK:
            _, j, seen_j = heapq.heappop(heap)
            if counts.get(groups[j], 0) < cap:
                block.append(j)
                since.append(seen_j)
        oldest = min(since)
        missed = (x[block] @ v[oldest:k].T) ** 2  # block x picks since the oldest
        missed[np.arange(k - oldest)[None, :] < (np.asarray(since) - oldest)[:, None]] = 0  # already counted
        q[block] -= missed.sum(axis=1)
        for j in block:
            heapq.heappush(heap, (-float(w[j] * q[j]), j, k))
    return out


def bt_fit(features, labels, ridge: float = 1.0, weights=None, *, start=None, max_iterations: int = 50,
           tolerance: float = 1e-8) -> np.ndarray:
    """The linear Bradley-Terry head: theta maximising ``sum_i weights_i log P(label_i) -
    ridge/2 |theta|^2`` with ``P(first wins) = sigmoid(theta . x_i)`` (logistic regression without
    intercept; a pair's two orders are the same pair). ``labels``: 1 when the first answer won, 0
    when the second did, or a soft label in between. Newton's method (IRLS) with step halving,
    from ``start`` (e.g. the last fit, when a few labels were added) or zero."""
    import numpy as np

    x = _matrix("features", features, None)
    y = _vector("labels", labels, x.shape[0], probability=True)
    weights = np.ones(x.shape[0]) if weights is None else _vector("weights", weights, x.shape[0])
    if (weights < 0).any():
        raise ValueError("weights must be >= 0")
    if not _finite_number(ridge) or ridge <= 0:
        raise ValueError(f"ridge must be a finite number > 0, got {ridge!r}")
    d = x.shape[1]
    theta = np.zeros(d) if start is None else _vector("start", start, d).copy()

    def objective(t):
        z = x @ t
        # -log sigmoid(z) = logaddexp(0, -z), stable at both ends
        return float(weights @ (y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))) + ridge / 2 * float(t @ t)

    current = objective(theta)
    for _ in range(max_iterations):
        prob = _sigmoid(x @ theta)
        gradient = x.T @ (weights * (prob - y)) + ridge * theta
        hessian = (x * (weights * prob * (1 - prob))[:, None]).T @ x + ridge * np.eye(d)
        step = np.linalg.solve(hessian, gradient)
        if float(gradient @ step) / 2 <= tolerance * max(1.0, current):  # Newton decrement: converged
            break
        scale = 1.0
        while True:
            candidate = theta - scale * step
            value = objective(candidate)
            if value <= current:
                break
            scale /= 2
            if scale < 1e-6:
                return theta  # no decrease along Newton's direction: as good as the arithmetic allows
        theta, current = candidate, value
    return theta


def win_probability(theta, features) -> np.ndarray:
    """P(first answer beats the second) under the linear Bradley-Terry head ``theta``."""
    import numpy as np

    x = _matrix("features", features, None)
    theta = np.asarray(theta, dtype=float).reshape(-1)
    if theta.shape[0] != x.shape[1]:
        raise ValueError(f"theta has {theta.shape[0]} entries, features {x.shape[1]} columns")
    return _sigmoid(x @ theta)


def _sigmoid(z):
    import numpy as np

    return 0.5 * (1 + np.tanh(0.5 * z))  # no overflow warning at large |z|


def _finite_number(value) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(value)
    except TypeError:
        return False


def _vector(name: str, values, n: int, *, probability: bool = False):
    import numpy as np

    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers: {exc}") from None
    if v.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {v.shape}")
    if v.shape[0] != n:
        raise ValueError(f"{name} has {v.shape[0]} entries for {n} candidates")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if probability and ((v < 0) | (v > 1)).any():
        raise ValueError(f"{name} must lie between 0 and 1")
    return v


def _matrix(name: str, values, n: int | None):
    import numpy as np

    try:
        m = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a matrix of numbers: {exc}") from None
    if m.ndim == 1 and m.shape[0] == 0:
        m = m.reshape(0, 0)
    if m.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional (rows x dimensions), got shape {m.shape}")
    if n is not None and m.shape[0] != n:
        raise ValueError(f"{name} has {m.shape[0]} rows for {n} candidates")
    if m.shape[0] and m.shape[1] == 0:
        raise ValueError(f"{name} has rows of no dimensions")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return m
