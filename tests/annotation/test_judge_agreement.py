"""Judge-human agreement (annotation/judging.py): every figure on a 20-pair fixture, computed by
hand in the comments, and the database reader on a small project."""

import pytest

from annotation.judging import HumanLabel, JudgedPair, human_majority, judge_agreement, project_judge_agreement, stored_verdict
from annotation.models import JudgeVerdict
from modeling.ml.judging import Verdict
from tests.factories import ComparisonFactory, JudgmentFactory, MemberFactory, ProjectFactory, UserFactory

# Each pair: (comparison, the answer with A shown first, the answer with B shown first).
PAIRS = [
    JudgedPair(1, "a", "a"), JudgedPair(2, "a", "a"), JudgedPair(3, "a", "a"), JudgedPair(4, "a", "a"),  # consistent a
    JudgedPair(5, "b", "b"), JudgedPair(6, "b", "b"), JudgedPair(7, "b", "b"),  # consistent b
    JudgedPair(8, "tie", "tie"), JudgedPair(9, "tie", "tie"),  # consistent tie
    JudgedPair(10, "a", "b"), JudgedPair(11, "a", "b"), JudgedPair(12, "a", "b"),  # the first shown won both times
    JudgedPair(13, "b", "a"),  # the second shown won both times
    JudgedPair(14, "a", "tie"), JudgedPair(15, "tie", "b"),  # a winner one way, a tie the other
    JudgedPair(16, None, "a"), JudgedPair(17, "b", None), JudgedPair(18, None, None),  # failed
    JudgedPair(19, "a", "a"), JudgedPair(20, "b", "b"),  # consistent
]

S, BL, NO = "shown", "blind", ""
A, B = True, False
LABELS = [
    # comparison, chose A?, strength, what the labeler saw
    HumanLabel(1, A, "better", S), HumanLabel(1, A, "better", S), HumanLabel(1, B, "slightly_better", BL),  # 2/3: a
    HumanLabel(2, A, "significantly_better", S),  # a
    HumanLabel(3, B, "better", S), HumanLabel(3, B, "better", BL),  # b
    HumanLabel(4, A, "negligibly_better", NO), HumanLabel(4, B, "negligibly_better", NO),  # 1/2: tie
    HumanLabel(5, B, "better", S),  # b
    HumanLabel(6, A, "better", BL), HumanLabel(6, B, "better", BL),  # 1/2: tie
    HumanLabel(7, A, "slightly_better", S),  # a
    HumanLabel(8, A, "negligibly_better", S),  # tie
    HumanLabel(9, A, "better", S),  # a
    HumanLabel(10, A, "better", S),  # a
    HumanLabel(11, B, "better", BL),  # b
    HumanLabel(12, B, "negligibly_better", NO),  # tie
    # 13 and 15: no labels
    HumanLabel(14, A, "better", S),  # a
    HumanLabel(16, A, "better", S), HumanLabel(17, B, "better", S),  # on failed pairs: left out
    # 18, 19: no labels
    HumanLabel(20, B, "better", NO), HumanLabel(20, B, "slightly_better", S),  # b
    HumanLabel(99, A, "better", S),  # a comparison the judge never answered: left out
]


def test_every_figure_on_twenty_pairs_matches_the_hand_computation():
    figures = judge_agreement(PAIRS, LABELS)
    # Consistent: 1-9, 19, 20 = 11; inconsistent: 10-15 = 6; failed: 16-18 = 3; of 20.
    assert (figures["judged"], figures["consistent"], figures["inconsistent"], figures["failed"]) == (20, 11, 6, 3)
    assert figures["consistent_share"] == 0.55  # 11 / 20
    # Flips: the 6 inconsistent pairs of the 17 answered both ways: 6/17 = 0.3529.
    assert figures["flip_rate"] == {"n": 17, "k": 6, "rate": 0.3529, "ci95": [0.1731, 0.587]}
    # Single verdicts naming a winner, (first-shown picks / verdicts):
    #   1-4: a then a = A first, then A second: 4/8;  5-7: b then b = 3/6;  8, 9: ties, none;
    #   10-12: a then b, the first both times: 6/6;  13: b then a, the second both times: 0/2;
    #   14: a (first), tie: 1/1;  15: tie, b (first): 1/1;  16: a shown second: 0/1;  17: b shown second: 0/1;
    #   19, 20: 1/2 each.  17 of 30 = 0.5667; Wilson: centre (17/30 + 1.96^2/60) / (1 + 1.96^2/30) = 0.5591,
    #   half-width 1.96 sqrt(17/30 * 13/30 / 30 + 1.96^2 / 3600) / 1.1281 = 0.1671: [0.3920, 0.7262].
    assert figures["first_position"] == {"n": 30, "k": 17, "rate": 0.5667, "ci95": [0.392, 0.7262]}
    # Compared (an answer and a human majority): 1-12, 14, 20 = 14 (13, 15, 19 have no labels; 16-18 failed).
    assert figures["compared"] == 14
    # Without ties: the judge's consistent winner and a majority winner: 1 a/a, 2 a/a, 3 a/b, 5 b/b, 7 b/a, 20 b/b
    # (4 and 6 are human ties): 4 of 6.
    assert figures["agreement_without_ties"] == {"n": 6, "k": 4, "rate": 0.6667, "ci95": [0.3, 0.9032]}
    # With ties, inconsistent pairs as the judge's tie: agree on 1, 2, 5, 8 (tie/tie), 12 (tie/tie), 20: 6 of 14.
    assert figures["agreement_with_ties"] == {"n": 14, "k": 6, "rate": 0.4286, "ci95": [0.2138, 0.6741]}
    # Kappa on those 14: judge a 4, b 4, tie 6; majority a 6 (1, 2, 7, 9, 10, 14), b 4 (3, 5, 11, 20),
    # tie 4 (4, 6, 8, 12). p_o = 6/14 = 84/196; p_e = (4*6 + 4*4 + 6*4) / 196 = 64/196;
    # kappa = (84 - 64) / (196 - 64) = 20/132 = 0.1515.
    assert figures["kappa"] == 0.1515
    # Follow, on pairs with a consistent winner (1-7, 19, 20):
    #   shown: 1 A, 1 A, 2 A, 3 B (not), 5 B, 7 A (not), 20 B = 5 of 7;
    #   blind: 1 B (not), 3 B (not), 6 A (not), 6 B = 1 of 4;  not offered: 4 A, 4 B (not), 20 B = 2 of 3.
    assert figures["follow"] == {
        "shown": {"n": 7, "k": 5, "rate": 0.7143, "ci95": [0.3589, 0.9178]},
        "blind": {"n": 4, "k": 1, "rate": 0.25, "ci95": [0.0456, 0.6994]},
        "not_offered": {"n": 3, "k": 2, "rate": 0.6667, "ci95": [0.2077, 0.9385]},
    }


def test_no_pairs_give_empty_figures_not_errors():
    figures = judge_agreement([], [HumanLabel(1, True, "better")])
    assert figures["judged"] == figures["compared"] == 0 and figures["consistent_share"] is None and figures["kappa"] is None
    assert figures["first_position"] == {"n": 0, "k": 0, "rate": None, "ci95": [0.0, 1.0]}


def test_the_human_majority_counts_a_negligible_pick_as_a_tie():
    labels = [HumanLabel(1, True, "negligibly_better"), HumanLabel(2, True, "negligibly_better"), HumanLabel(2, False, "better"),
              HumanLabel(3, True, None), HumanLabel(3, True, "slightly_better"), HumanLabel(3, False, "significantly_better")]
    # 1: 1/2 tie; 2: (1/2 + 0) / 2 = 1/4, b; 3: an imported pair's null strength is a plain win: 2/3, a.
    assert human_majority(labels) == {1: "tie", 2: "b", 3: "a"}


def test_a_stored_verdict_reads_back_in_the_order_it_was_given():
    def read(order, winner_id, strength="better", error=""):
        return stored_verdict(order=order, winner_id=winner_id, strength=strength, error=error, response_a_id=1, response_b_id=2)

    assert read("ab", 1) == Verdict("first", "better") and read("ba", 1) == Verdict("second", "better")
    assert read("ba", 2) == Verdict("first", "better") and read("ab", None, "negligibly_better") == Verdict("tie", "negligibly_better")
    assert read("ab", None, "", "no verdict").choice is None and read("ab", 7).error == "the stored winner is not in the pair"


@pytest.mark.django_db
def test_the_project_reader_takes_its_judges_verdicts_and_peoples_labels():
    judge, other = MemberFactory(name="judge"), MemberFactory(name="other")
    project = ProjectFactory(judge=judge)
    consistent, flipped, failed, half = (ComparisonFactory(prompt__project=project) for _ in range(4))

    def verdict(comparison, order, winner, member=judge, error=""):
        JudgeVerdict.objects.create(comparison=comparison, member=member, order=order, winner=winner,
                                    strength="" if error else "better", error=error, output="...")

    verdict(consistent, "ab", consistent.response_a)
    verdict(consistent, "ba", consistent.response_a)
    verdict(consistent, "ab", consistent.response_b, member=other)  # another judge's: not read
    verdict(flipped, "ab", flipped.response_a)  # the first shown both times
    verdict(flipped, "ba", flipped.response_b)
    verdict(failed, "ab", None, error="no verdict")
    verdict(failed, "ba", failed.response_a)
    verdict(half, "ab", half.response_a)  # one order only: not judged yet

    def label(comparison, chose_a, suggestion, username=None):
        chosen, rejected = (comparison.response_a, comparison.response_b) if chose_a else (comparison.response_b, comparison.response_a)
        labeler = UserFactory(**({"username": username} if username else {}))
        JudgmentFactory(assignment__comparison=comparison, assignment__labeler=labeler, assignment__suggestion=suggestion,
                        chosen_response=chosen, rejected_response=rejected)

    label(consistent, True, "shown")
    label(consistent, False, "blind")
    label(consistent, False, "", username="import:hh-rlhf")  # an imported label: not a person's
    label(flipped, False, "")
    figures = project_judge_agreement(project=project)
    assert figures["judge"] == "judge"
    assert (figures["judged"], figures["consistent"], figures["inconsistent"], figures["failed"]) == (3, 1, 1, 1)
    assert figures["flip_rate"]["n"] == 2 and figures["flip_rate"]["k"] == 1
    # consistent: A first, A second; flipped: A first, B first; failed: A second (ba): 3 of 5.
    assert (figures["first_position"]["n"], figures["first_position"]["k"]) == (5, 3)
    # consistent: people 1/2, a tie (the imported B would have made it b); flipped: b against the judge's tie.
    assert figures["compared"] == 2 and figures["agreement_with_ties"]["k"] == 0 and figures["agreement_without_ties"]["n"] == 0
    assert {name: (s["n"], s["k"]) for name, s in figures["follow"].items()} == {"shown": (1, 1), "blind": (1, 0), "not_offered": (0, 0)}
    # Another member's figures on demand; a project without a judge or verdicts reads empty.
    assert project_judge_agreement(project=project, member_id=other.pk)["judged"] == 0
    empty = project_judge_agreement(project=ProjectFactory())
    assert empty["judge"] is None and empty["judged"] == 0 and empty["follow"]["shown"]["n"] == 0
