"""Active selection of candidate pairs (modeling/ml/selection.py): plain numpy, no Django, no model."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from modeling.ml import selection
from modeling.ml.selection import RULES, Pick, bt_fit, select_pairs, win_probability


def greedy_d_optimal(x, w, groups, m, cap, ridge, fisher=None):
    """The textbook greedy, re-inverting A at every step: the reference for the lazy one."""
    a = ridge * np.eye(x.shape[1]) + (0 if fisher is None else fisher)
    out, counts = [], {}
    for _ in range(m):
        gains = w * np.einsum("ij,ij->i", x @ np.linalg.inv(a), x)
        free = [i for i in range(len(x)) if i not in out and counts.get(groups[i], 0) < cap]
        if not free:
            break
        best = max(free, key=lambda i: (gains[i], -i))
        out.append(best)
        counts[groups[best]] = counts.get(groups[best], 0) + 1
        a = a + w[best] * np.outer(x[best], x[best])
    return out


def test_rule_picks_come_first_with_probability_one_and_the_uniform_share_with_its_exact_probability():
    rng = np.random.default_rng(1)
    n = 40
    p = rng.uniform(size=n)
    picks = select_pairs(rule="uncertainty", groups=list(range(n)), budget=10, win_prob=p, random_share=0.2)
    assert [q.rule for q in picks] == ["uncertainty"] * 8 + ["random"] * 2
    assert all(q.probability == 1.0 for q in picks[:8])
    assert all(q.probability == pytest.approx(2 / 32) for q in picks[8:])
    assert len({q.index for q in picks}) == 10


def test_the_uniform_share_is_drawn_from_all_the_rest_at_the_probability_it_reports():
    """Monte Carlo over seeds: each non-rule candidate, including those of prompts the rule already
    filled to the cap, is drawn as often as its stated probability says (a share drawn under the
    cap, or reported as m_r / n, fails here)."""
    n, budget = 24, 10
    groups = [i // 4 for i in range(n)]  # 6 prompts of 4 candidates
    p = np.linspace(0.05, 0.95, n)
    p[:4] = 0.5  # prompt 0 is the most uncertain: the rule fills it to the cap
    seeds = 3000
    counts = np.zeros(n)
    rule_picks, probabilities = None, set()
    for seed in range(seeds):
        picks = select_pairs(rule="uncertainty", groups=groups, budget=budget, win_prob=p, seed=seed)
        ruled = [q.index for q in picks if q.rule == "uncertainty"]
        assert rule_picks is None or ruled == rule_picks  # the rule's picks do not depend on the seed
        rule_picks = ruled
        for q in picks:
            if q.rule == "random":
                counts[q.index] += 1
                probabilities.add(q.probability)
    assert len(rule_picks) == 8 and sum(groups[i] == 0 for i in rule_picks) == 2
    (probability,) = probabilities
    assert probability == pytest.approx(2 / (n - 8))
    rest = [i for i in range(n) if i not in rule_picks]
    frequency = counts[rest] / seeds
    sd = np.sqrt(probability * (1 - probability) / seeds)
    assert np.abs(frequency - probability).max() < 4.5 * sd
    assert counts[rule_picks].sum() == 0
    assert any(groups[i] == 0 for i in rest) and all(counts[i] > 0 for i in rest if groups[i] == 0)


def test_rule_random_draws_the_whole_budget_uniformly():
    picks = select_pairs(rule="random", groups=[0] * 10, budget=4, seed=3)
    assert len(picks) == 4 and all(q.rule == "random" and q.probability == pytest.approx(0.4) for q in picks)
    assert select_pairs(rule="random", groups=[0] * 10, budget=4, seed=3) == picks


def test_the_budget_is_clipped_to_the_candidates_and_an_empty_list_selects_nothing():
    assert select_pairs(rule="uncertainty", groups=[], budget=5, win_prob=[]) == []
    picks = select_pairs(rule="uncertainty", groups=[0, 1, 2], budget=5, win_prob=[0.1, 0.5, 0.9], random_share=0)
    assert sorted(q.index for q in picks) == [0, 1, 2]


def test_uncertainty_takes_the_win_probabilities_closest_to_a_half_first_ties_by_index():
    p = [0.9, 0.375, 0.625, 0.5, 0.2, 0.5625, 0.4375]  # exact in binary: the ties are ties
    picks = select_pairs(rule="uncertainty", groups=list(range(7)), budget=5, win_prob=p, random_share=0)
    assert [q.index for q in picks] == [3, 5, 6, 1, 2]


def test_no_prompt_gets_more_rule_picks_than_the_cap_and_a_shortfall_goes_to_the_uniform_share():
    groups = [0] * 6 + [1] * 6
    p = [0.5] * 6 + [0.9] * 6  # prompt 0 holds every uncertain pair
    picks = select_pairs(rule="uncertainty", groups=groups, budget=8, win_prob=p, random_share=0.25, prompt_cap=2)
    ruled = [q.index for q in picks if q.rule == "uncertainty"]
    assert ruled == [0, 1, 6, 7]  # 2 from each prompt, though 6 were asked of the rule
    drawn = [q for q in picks if q.rule == "random"]
    assert len(drawn) == 4 and all(q.probability == pytest.approx(4 / 8) for q in drawn)


def test_d_optimal_covers_every_direction_before_repeating_one():
    # Three axes, 5 candidates each, same length. Axis 0's are the most uncertain, so uncertainty
    # takes only them; the design takes one of each axis first.
    x = np.zeros((15, 3))
    for axis in range(3):
        x[5 * axis : 5 * axis + 5, axis] = 2.0
    p = np.array([0.5] * 5 + [0.4] * 10)
    groups = list(range(15))
    by_uncertainty = select_pairs(rule="uncertainty", groups=groups, budget=3, win_prob=p, random_share=0)
    assert {int(np.argmax(x[q.index])) for q in by_uncertainty} == {0}
    design = select_pairs(rule="d-optimal", groups=groups, budget=6, win_prob=p, features=x, random_share=0)
    axes = [int(np.argmax(x[q.index])) for q in design]
    assert sorted(axes[:3]) == [0, 1, 2] and sorted(axes[3:]) == [0, 1, 2]
    assert all(q.rule == "d-optimal" and q.probability == 1.0 for q in design)


def test_d_optimal_starts_from_what_is_already_labelled():
    x = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    p = np.full(3, 0.5)
    labelled = np.array([[1.0, 0, 0]] * 20 + [[0, 0, 1.0]] * 5)
    picks = select_pairs(rule="d-optimal", groups=[0, 1, 2], budget=1, win_prob=p, features=x, random_share=0,
                         labelled_features=labelled, labelled_prob=np.full(25, 0.5))
    assert [q.index for q in picks] == [1]  # the one direction nothing labelled points along


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("path", ["dense", "lazy"])
def test_d_optimal_picks_what_the_textbook_greedy_picks(labelled, path, monkeypatch):
    """Both ways of keeping the gains (every gain after each pick; lazily, for large n x d)."""
    if path == "lazy":
        monkeypatch.setattr(selection, "_DENSE_LIMIT", 0)
    rng = np.random.default_rng(7)
    for _ in range(10):
        n, d = int(rng.integers(20, 200)), int(rng.integers(1, 9))
        x = rng.normal(size=(n, d)) * rng.uniform(0.2, 3, size=d)
        p = rng.uniform(size=n)
        groups = rng.integers(0, n // 3 + 1, size=n).tolist()
        m = int(rng.integers(1, n))
        extra, fisher = {}, None
        if labelled:
            lx, lp = rng.normal(size=(15, d)), rng.uniform(size=15)
            extra = {"labelled_features": lx, "labelled_prob": lp}
            fisher = (lx * (lp * (1 - lp))[:, None]).T @ lx
        picks = select_pairs(rule="d-optimal", groups=groups, budget=m, win_prob=p, features=x, random_share=0,
                             prompt_cap=2, ridge=0.5, **extra)
        ruled = [q.index for q in picks if q.rule == "d-optimal"]
        assert ruled == greedy_d_optimal(x, p * (1 - p), groups, m, 2, 0.5, fisher)


def test_bt_fit_recovers_a_known_preference_direction():
    rng = np.random.default_rng(0)
    theta = np.array([1.5, -1.0, 0.5, 0.0, 2.0])
    x = rng.normal(size=(20000, 5))
    y = (rng.uniform(size=20000) < win_probability(theta, x)).astype(float)
    estimate = bt_fit(x, y, ridge=1e-3)
    assert np.abs(estimate - theta).max() < 0.1
    # the fit does not depend on which answer is shown first: a pair's two orders are one pair
    assert np.allclose(bt_fit(-x, 1 - y, ridge=1e-3), estimate, atol=1e-6)


def test_bt_fit_weights_count_as_repeated_labels_and_the_ridge_shrinks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = (rng.uniform(size=200) < 0.5 + 0.4 * np.tanh(x[:, 0])).astype(float)
    weights = rng.integers(1, 4, size=200)
    repeated = bt_fit(np.repeat(x, weights, axis=0), np.repeat(y, weights), ridge=1.0)
    assert np.allclose(bt_fit(x, y, ridge=1.0, weights=weights), repeated, atol=1e-6)
    assert np.linalg.norm(bt_fit(x, y, ridge=1000.0)) < np.linalg.norm(bt_fit(x, y, ridge=1.0)) / 5


def test_bt_fit_stays_finite_on_separable_labels():
    x = np.array([[1.0], [2.0], [-1.0], [-3.0]])
    theta = bt_fit(x, [1, 1, 0, 0], ridge=0.01)
    assert np.isfinite(theta).all() and theta[0] > 1
    assert win_probability(theta, x).round().tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rule": "entropy"}, "unknown selection rule"),
        ({"rule": "uncertainty", "win_prob": None}, "needs win_prob"),
        ({"rule": "d-optimal", "features": None}, "needs features"),
        ({"win_prob": [0.5, 0.5]}, "win_prob has 2 entries for 3"),
        ({"win_prob": [0.5, float("nan"), 0.5]}, "NaN or infinite"),
        ({"win_prob": [0.5, 1.5, 0.5]}, "between 0 and 1"),
        ({"features": [[1.0], [2.0]]}, "features has 2 rows for 3"),
        ({"features": [[1.0], [float("inf")], [0.0]]}, "NaN or infinite"),
        ({"features": [1.0, 2.0, 3.0]}, "two-dimensional"),
        ({"labelled_features": [[1.0]]}, "go together"),
        ({"labelled_features": [[1.0], [2.0]], "labelled_prob": [0.5]}, "labelled_prob has 1 entries for 2"),
        ({"labelled_features": [[1.0, 2.0]], "labelled_prob": [0.5]}, "2 columns, features 1"),
        ({"budget": -1}, "budget"),
        ({"budget": 2.5}, "budget"),
        ({"random_share": 1.5}, "random_share"),
        ({"random_share": float("nan")}, "random_share"),
        ({"prompt_cap": 0}, "prompt_cap"),
        ({"ridge": 0.0}, "ridge"),
    ],
)
def test_bad_input_is_a_clear_value_error(kwargs, message):
    call = {"rule": "d-optimal", "groups": [0, 1, 2], "budget": 2, "win_prob": [0.2, 0.5, 0.7],
            "features": [[1.0], [0.0], [-1.0]], **kwargs}
    with pytest.raises(ValueError, match=message):
        select_pairs(**call)


def test_bt_fit_and_win_probability_reject_bad_input():
    with pytest.raises(ValueError, match="labels has 1 entries for 2"):
        bt_fit([[1.0], [2.0]], [1])
    with pytest.raises(ValueError, match="NaN"):
        bt_fit([[1.0], [float("nan")]], [1, 0])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        bt_fit([[1.0], [2.0]], [1, 0], weights=[1, -1])
    with pytest.raises(ValueError, match="theta has 2 entries, features 1"):
        win_probability([1.0, 2.0], [[1.0]])


@st.composite
def selections(draw):
    n = draw(st.integers(0, 30))
    d = draw(st.integers(1, 4))
    unit = st.floats(0, 1, allow_nan=False)
    value = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)

    def rows(k):
        if not k:
            return np.zeros((0, d))
        return draw(st.lists(st.lists(value, min_size=d, max_size=d), min_size=k, max_size=k))

    kwargs = {
        "rule": draw(st.sampled_from(RULES)),
        "groups": draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)),
        "budget": draw(st.integers(0, 40)),
        "win_prob": draw(st.lists(unit, min_size=n, max_size=n)),
        "features": rows(n),
        "random_share": draw(unit),
        "prompt_cap": draw(st.integers(1, 3)),
        "ridge": draw(st.floats(1e-3, 1e3)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }
    if draw(st.booleans()):
        k = draw(st.integers(0, 5))
        kwargs["labelled_features"] = rows(k)
        kwargs["labelled_prob"] = draw(st.lists(unit, min_size=k, max_size=k))
    return kwargs


@hypothesis_settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(selections())
def test_any_valid_selection_is_budget_many_distinct_picks_with_probabilities(kwargs):
    picks = select_pairs(**kwargs)
    n = len(kwargs["groups"])
    assert len(picks) == min(kwargs["budget"], n)
    assert len({q.index for q in picks}) == len(picks) and all(0 <= q.index < n for q in picks)
    assert all(isinstance(q, Pick) and 0 < q.probability <= 1 for q in picks)
    ruled = [q for q in picks if q.rule != "random"]
    assert all(q.rule == kwargs["rule"] and q.probability == 1.0 for q in ruled)
    counts = {}
    for q in ruled:
        counts[kwargs["groups"][q.index]] = counts.get(kwargs["groups"][q.index], 0) + 1
    assert all(c <= kwargs["prompt_cap"] for c in counts.values())


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(
    st.sampled_from(["rule", "budget", "win_prob", "features", "random_share", "prompt_cap", "ridge", "labelled_prob"]),
    st.one_of(st.none(), st.text(max_size=3), st.integers(-3, 3), st.floats(), st.lists(st.floats(), max_size=4),
              st.lists(st.lists(st.floats(), max_size=3), max_size=4)),
))
def test_any_other_input_is_a_selection_or_a_value_error(overrides):
    call = {"rule": "d-optimal", "groups": [0, 1, 1, 2], "budget": 2, "win_prob": [0.2, 0.5, 0.7, 0.9],
            "features": [[1.0], [0.0], [-1.0], [2.0]], **overrides}
    try:
        picks = select_pairs(**call)
    except ValueError:
        return
    assert len({q.index for q in picks}) == len(picks) <= 4
