"""Which pairs humans see: K answers per prompt and the selection rule, member pairs by weight or
where the leaderboard is least sure, the probabilities kept on each comparison, and the
leaderboard weighing labels by them."""

import random
from collections import Counter
from pathlib import Path

import pytest

from annotation.models import Comparison, MemberPairRule, Role, SelectionRule, Strength
from annotation.quality import bradley_terry, inverse_probability_weights, project_leaderboard
from modeling.ml.generation import Generation
from modeling.models import CommitteeSeat, JobState, JudgeRun, Round, RoundState, SamplingRun
from modeling.selectors import member_pair_stats
from modeling.services.sampling import (
    active_pair_probabilities,
    draw_two,
    sampling_execute,
    weight_pair_probabilities,
)
from tests.factories import ComparisonFactory, JudgmentFactory, MemberFactory, ProjectFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db


class DistinctBackend:
    """Each member answers each prompt with its own text, of a length set by the member's name."""

    def __init__(self, name):
        self.name, self.taken = name, 0

    def generate(self, conversations, params):
        out = []
        for m in conversations:  # a second sample of the same member says something else
            self.taken += 1
            filler = " ".join(f"w{self.taken}{self.name}{i}" for i in range(len(self.name)))  # no two takes alike
            out.append(Generation(text=f"{self.name} answers {m[-1]['content']}: {filler}",
                                  prompt_tokens=3, completion_tokens=4, finish_reason="stop", latency_ms=1))
        return out


class LengthScorer:
    """A fake reward model: reward = characters / 10, embedding = (length, spaces)."""

    def __init__(self):
        self.calls = 0

    def score_and_embed(self, conversations, responses):
        self.calls += 1
        return [len(r) / 10 for r in responses], [[float(len(r)), float(r.count(" "))] for r in responses]


def _project(n_prompts=6, **settings):
    project = ProjectFactory(**settings)
    for i in range(n_prompts):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"question {i}"}])
    return project


def _run(project, **config):
    return SamplingRun.objects.create(project=project, config={"batch_size": 3, **config})


# --- member pairs ----------------------------------------------------------------------------------


def test_weight_pair_probabilities_are_the_chances_draw_two_draws_each_pair():
    members = [MemberFactory(name=n, weight=w) for n, w in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
    for m in members:
        m.project_weight = m.weight
    probabilities = weight_pair_probabilities(members)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    rng = random.Random(0)
    draws = Counter(tuple(sorted(m.pk for m in draw_two(rng, members))) for _ in range(40_000))
    for pair, p in probabilities.items():
        assert draws[pair] / 40_000 == pytest.approx(p, abs=0.01)


def test_active_pairing_favours_the_pair_with_the_fewest_labels_and_keeps_a_uniform_floor():
    stats = {(1, 2): (200, 100.0), (1, 3): (20, 10.0)}  # (2, 3) never compared
    probabilities = active_pair_probabilities([1, 2, 3], stats, uniform_share=0.2)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert probabilities[(2, 3)] > probabilities[(1, 3)] > probabilities[(1, 2)] >= 0.2 / 3
    # a lopsided pair (its win rate is nearly known) needs fewer labels than an even one
    lopsided = active_pair_probabilities([1, 2, 3], {(1, 2): (20, 19.0), (1, 3): (20, 10.0), (2, 3): (20, 10.0)}, 0.0)
    assert lopsided[(1, 2)] < lopsided[(1, 3)] == pytest.approx(lopsided[(2, 3)])


def test_an_active_pass_draws_members_by_the_recorded_probabilities(member_of):
    project = _project(n_prompts=5, member_pair_rule=MemberPairRule.ACTIVE)
    a, b, c = (MemberFactory(name=n) for n in ("a", "b", "c"))
    labeler = member_of(project, Role.LABELER)
    for i in range(12):  # a and b already met twelve times: the other pairs are less known
        prompt = PromptFactory(project=project)
        ra, rb = ResponseFactory(prompt=prompt, member=a), ResponseFactory(prompt=prompt, member=b)
        JudgmentFactory(assignment__comparison=ComparisonFactory(prompt=prompt, response_a=ra, response_b=rb), assignment__labeler=labeler,
                        chosen_response=ra, rejected_response=rb, left_response=ra)
    assert member_pair_stats(project=project) == {(a.pk, b.pk): (12, 12.0)}
    run = sampling_execute(run_id=_run(project).pk, backend_loader=lambda m: DistinctBackend(m.name))
    assert run.state == JobState.SUCCEEDED and "least sure" in run.config["selection"]
    expected = active_pair_probabilities([a.pk, b.pk, c.pk], {(a.pk, b.pk): (12, 12.0)}, project.selection_random_share)
    new = Comparison.objects.filter(project=project, selection_rule=MemberPairRule.ACTIVE)
    assert new.count() == 5
    for comparison in new:
        pair = tuple(sorted((comparison.response_a.member_id, comparison.response_b.member_id)))
        assert comparison.selection_probability == pytest.approx(expected[pair])
    assert expected[(a.pk, b.pk)] < min(expected[(a.pk, c.pk)], expected[(b.pk, c.pk)])


def test_a_pass_by_weight_records_each_pairs_chance():
    project = _project(n_prompts=4)
    members = [MemberFactory(name="a", weight=1.0), MemberFactory(name="b", weight=3.0), MemberFactory(name="c", weight=1.0)]
    sampling_execute(run_id=_run(project).pk, backend_loader=lambda m: DistinctBackend(m.name))
    for m in members:
        m.project_weight = m.weight
    expected = weight_pair_probabilities(members)
    comparisons = Comparison.objects.filter(project=project)
    assert comparisons.count() == 4
    for comparison in comparisons:
        assert comparison.selection_rule == MemberPairRule.WEIGHTS
        pair = tuple(sorted((comparison.response_a.member_id, comparison.response_b.member_id)))
        assert comparison.selection_probability == pytest.approx(expected[pair])


# --- the leaderboard weighs labels by their pair's chance --------------------------------------------


def test_weighted_bradley_terry_equals_the_fit_on_data_shown_uniformly():
    # Three members that beat each other in a circle, unequally: no Bradley-Terry model fits
    # exactly, so how often each pair was shown moves the unweighted fit.
    def games(pair, n, wins):
        return [(*pair, 1.0)] * wins + [(*pair, 0.0)] * (n - wins)

    balanced = games(("A", "B"), 10, 8) + games(("B", "C"), 10, 6) + games(("C", "A"), 10, 7)
    # A and B shown five times as often (an active rule liked them): the same win rates
    skewed = games(("A", "B"), 50, 40) + games(("B", "C"), 10, 6) + games(("C", "A"), 10, 7)
    chance = {("A", "B"): 5 / 7, ("B", "C"): 1 / 7, ("C", "A"): 1 / 7}
    weights = inverse_probability_weights([chance[(i, j)] for i, j, _ in skewed])
    weighted = bradley_terry([(*b, w) for b, w in zip(skewed, weights)])
    uniform, unweighted = bradley_terry(balanced), bradley_terry(skewed)
    for player in "ABC":
        assert weighted[player] == pytest.approx(uniform[player], abs=0.5)
    assert abs(unweighted["A"] - uniform["A"]) > 20  # the skew moved the plain fit


def test_inverse_probability_weights_have_mean_one_and_leave_unknowns_at_one():
    assert inverse_probability_weights([0.5, 0.25, None]) == pytest.approx([2 / 3, 4 / 3, 1.0])
    assert inverse_probability_weights([None, None]) == [1.0, 1.0]


def test_the_leaderboard_weighs_judgments_by_their_recorded_probabilities(member_of):
    project = ProjectFactory()
    a, b, c = (MemberFactory(name=n) for n in "ABC")
    labeler = member_of(project, Role.LABELER)

    def label(x, y, n, wins, probability):
        for i in range(n):
            prompt = PromptFactory(project=project)
            rx, ry = ResponseFactory(prompt=prompt, member=x), ResponseFactory(prompt=prompt, member=y)
            comparison = ComparisonFactory(prompt=prompt, response_a=rx, response_b=ry, selection_rule="active", selection_probability=probability)
            chosen, rejected = (rx, ry) if i < wins else (ry, rx)
            JudgmentFactory(assignment__comparison=comparison, assignment__labeler=labeler, chosen_response=chosen,
                            rejected_response=rejected, left_response=rx, strength=Strength.BETTER)

    label(a, b, 25, 20, 5 / 7)
    label(b, c, 5, 3, 1 / 7)
    label(c, a, 5, 4, 1 / 7)  # c beats a 4 of 5: the circle again
    board = project_leaderboard(project=project, bootstrap_rounds=20)
    assert board["weighted"] is True
    uniform = bradley_terry([("A", "B", 1.0)] * 4 + [("A", "B", 0.0)] + [("B", "C", 1.0)] * 3 + [("B", "C", 0.0)] * 2
                            + [("C", "A", 1.0)] * 4 + [("C", "A", 0.0)])
    rating = {m["name"]: m["rating"] for m in board["members"]}
    for player in "ABC":
        assert rating[player] == pytest.approx(uniform[player], abs=1.0)


# --- candidate pools -------------------------------------------------------------------------------


def test_k_answers_per_prompt_keep_every_answer_and_random_picks_record_their_chance():
    project = _project(n_prompts=6, candidates_k=4, selection_prompt_cap=2)
    for name in ("alpha", "beta", "gamma"):
        MemberFactory(name=name)
    run = sampling_execute(run_id=_run(project).pk, backend_loader=lambda m: DistinctBackend(m.name))
    assert run.state == JobState.SUCCEEDED and run.prompts_done == 6
    assert run.responses_created == 24  # every answer kept: K = 4 per prompt
    comparisons = list(Comparison.objects.filter(project=project))
    # budget: one pair per prompt of the batch (batches of 1, 3 and 2 prompts)
    assert len(comparisons) == 6 == run.pairs_created
    for comparison in comparisons:
        assert comparison.selection_rule == SelectionRule.RANDOM
        assert 0 < comparison.selection_probability <= 1
    # the first batch has one prompt and six candidate pairs: one drawn, 1/6
    first = min(comparisons, key=lambda c: c.prompt_id)
    assert first.selection_probability == pytest.approx(1 / 6)


def test_a_rule_without_a_reward_model_falls_back_to_random_and_says_so():
    project = _project(n_prompts=3, candidates_k=3, selection_rule=SelectionRule.UNCERTAINTY)
    MemberFactory(name="alpha"), MemberFactory(name="beta")
    scorer = LengthScorer()
    run = sampling_execute(run_id=_run(project).pk, backend_loader=lambda m: DistinctBackend(m.name), scorer_loader=lambda p: scorer)
    assert run.state == JobState.SUCCEEDED
    assert "needs a reward model" in run.config["selection"] and scorer.calls == 0
    assert set(Comparison.objects.filter(project=project).values_list("selection_rule", flat=True)) == {SelectionRule.RANDOM}


@pytest.fixture
def reward_model(settings, tmp_path):
    """A finished round whose reward model directory exists (the scorer itself is faked)."""
    settings.ARTIFACTS_DIR = str(tmp_path)

    def make(project):
        Round.objects.create(project=project, number=1, state=RoundState.SUCCEEDED, artifacts_path="rounds/1")
        directory = Path(tmp_path) / "rounds/1/reward_model"
        directory.mkdir(parents=True)
        (directory / "config.json").write_text("{}")

    return make


def test_uncertainty_picks_the_pairs_the_reward_model_can_least_tell_apart(reward_model):
    project = _project(n_prompts=4, candidates_k=3, selection_rule=SelectionRule.UNCERTAINTY, selection_random_share=0.0,
                       selection_prompt_cap=1)
    reward_model(project)
    MemberFactory(name="ab"), MemberFactory(name="abcdef")
    scorer = LengthScorer()
    run = sampling_execute(run_id=_run(project).pk, backend_loader=lambda m: DistinctBackend(m.name), scorer_loader=lambda p: scorer)
    assert run.state == JobState.SUCCEEDED and scorer.calls > 0
    assert run.config["selection"].startswith("uncertainty")
    for comparison in Comparison.objects.filter(project=project):
        assert (comparison.selection_rule, comparison.selection_probability) == (SelectionRule.UNCERTAINTY, 1.0)
        answers = list(comparison.prompt.responses.all())
        assert all(r.reward is not None for r in answers)
        gaps = [abs(x.reward - y.reward) for i, x in enumerate(answers) for y in answers[i + 1:] if x.text != y.text]
        assert abs(comparison.response_a.reward - comparison.response_b.reward) == pytest.approx(min(gaps))


def test_d_optimal_with_a_random_share_records_which_picked_each_pair(reward_model):
    project = _project(n_prompts=7, candidates_k=4, selection_rule=SelectionRule.D_OPTIMAL, selection_random_share=0.5,
                       selection_prompt_cap=1)
    reward_model(project)
    for name in ("ab", "abcd", "abcdefgh"):
        MemberFactory(name=name)
    run = sampling_execute(run_id=_run(project, batch_size=6).pk, backend_loader=lambda m: DistinctBackend(m.name),
                           scorer_loader=lambda p: LengthScorer())
    assert run.state == JobState.SUCCEEDED
    picked = Counter()
    for comparison in Comparison.objects.filter(project=project):
        picked[comparison.selection_rule] += 1
        if comparison.selection_rule == SelectionRule.D_OPTIMAL:
            assert comparison.selection_probability == 1.0
        else:
            assert comparison.selection_rule == SelectionRule.RANDOM and 0 < comparison.selection_probability < 1
    # batches of 1 and 6 prompts: budgets 1 and 6, half of each (rounded) by the rule
    assert picked[SelectionRule.D_OPTIMAL] >= 3 and picked[SelectionRule.RANDOM] >= 3 and sum(picked.values()) == 7


def test_a_pass_in_a_project_with_a_judge_queues_the_judge_on_its_new_pairs():
    project = _project(n_prompts=2)
    MemberFactory(name="alpha"), MemberFactory(name="bravo")
    project.judge = MemberFactory(name="judge")
    project.save()
    CommitteeSeat.objects.create(project=project, member=project.judge, weight=0.0)  # it judges, it does not answer
    run = sampling_execute(run_id=_run(project).pk, backend_loader=lambda m: DistinctBackend(m.name))
    assert run.state == JobState.SUCCEEDED and run.pairs_created == 2
    (judge_run,) = JudgeRun.objects.filter(project=project)
    assert (judge_run.state, judge_run.member.name, judge_run.queue) == (JobState.QUEUED, "judge", "gpu")
    # nothing new to judge: a second pass over no pending prompt queues no second run
    JudgeRun.objects.update(state=JobState.SUCCEEDED)
    Comparison.objects.update(judge_state="consistent")
    sampling_execute(run_id=_run(project).pk, backend_loader=lambda m: DistinctBackend(m.name))
    assert JudgeRun.objects.filter(project=project).count() == 1
