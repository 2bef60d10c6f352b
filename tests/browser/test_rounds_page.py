"""The rounds page as an admin reads it once labelers judge a round's policy (issue 14, item 3):
the labelers' win rate with its interval beside the reward model's, their agreement, and the
chart's labelers' series, updated as labels arrive (real headless Chromium, screenshot kept)."""

import pytest

from annotation.models import ComparisonSource, Role, Strength
from modeling.models import EvaluationPair, Round, RoundState
from modeling.selectors import human_evaluation
from tests.browser.test_labeling_page import login_with_keyboard
from tests.factories import (
    ComparisonFactory,
    JudgmentFactory,
    MemberFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def succeeded_round(project, number, *, rm_accuracy, rm_win_rate):
    return Round.objects.create(
        project=project, number=number, state=RoundState.SUCCEEDED,
        metrics={"training_rm": {"heldout": {"accuracy": rm_accuracy, "pairs": 40}},
                 "evaluating": {"prompts": 6, "win_rate": rm_win_rate, "ci95": [0.2, 0.9]}},
    )


def evaluation_pairs(round_, new_member, old_member, rewards):
    pairs = []
    for i, (reward_new, reward_previous) in enumerate(rewards):
        prompt = PromptFactory(project=round_.project)
        new = ResponseFactory(prompt=prompt, member=new_member, text=f"new answer {i}")
        old = ResponseFactory(prompt=prompt, member=old_member, text=f"previous answer {i}")
        comparison = ComparisonFactory(prompt=prompt, response_a=old, response_b=new, source=ComparisonSource.EVALUATION)
        pairs.append(EvaluationPair.objects.create(round=round_, comparison=comparison, new_response=new, previous_response=old,
                                                   reward_new=reward_new, reward_previous=reward_previous))
    return pairs


def label(pair, labeler, *, new_wins, strength=Strength.BETTER):
    new, old = pair.new_response, pair.previous_response
    JudgmentFactory(assignment__comparison=pair.comparison, assignment__labeler=labeler, strength=strength,
                    chosen_response=new if new_wins else old, rejected_response=old if new_wins else new)


def test_the_rounds_page_shows_the_labelers_win_rate_beside_the_reward_models_and_follows_new_labels(
    live_server, browser_page, output_dir
):
    project = ProjectFactory()
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.ADMIN)
    base = MemberFactory(name="smollm2-base")
    first, second = succeeded_round(project, 1, rm_accuracy=0.61, rm_win_rate=0.58), succeeded_round(project, 2, rm_accuracy=0.64, rm_win_rate=0.66)
    policy_1, policy_2 = (MemberFactory(name=f"{project.slug}-round-{n}", kind="checkpoint", model_path=f"/tmp/p{n}", base_member=base,
                                        source_round=r) for n, r in ((1, first), (2, second)))
    pairs_1 = evaluation_pairs(first, policy_1, base, [(1.0, 0.0), (0.2, 0.5), (0.9, 0.1), (0.4, 0.3)])
    pairs_2 = evaluation_pairs(second, policy_2, policy_1, [(0.7, 0.1), (0.1, 0.8), (0.6, 0.2)])
    labelers = [UserFactory() for _ in range(3)]
    for pair, new_wins in zip(pairs_1, (True, False, True, False)):
        for labeler in labelers[:2]:
            label(pair, labeler, new_wins=new_wins)
    label(pairs_2[0], labelers[0], new_wins=True)

    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/rounds/")
    stats = human_evaluation(rounds=[first, second])
    cell = page.text_content(f"#round-human-{first.pk}")
    h = stats[first.pk]
    assert h["win_rate"] == 0.5 and h["labels"] == 8 and h["rm_win_rate"] == 0.75 and h["rm_agreement"] == 0.75
    assert f"{h['win_rate']} ({h['ci95'][0]}–{h['ci95'][1]})" in cell
    assert "8 labels on 4/4 pairs" in cell and "RM predicts 0.75; agrees with labelers 0.75 (8)" in cell
    assert "1 label on 1/3 pairs" in page.text_content(f"#round-human-{second.pk}")
    header = page.text_content("table.rounds thead")
    assert "Win rate, labelers (95% CI)" in header and "Win rate, reward model (95% CI)" in header
    # The chart: one labelers' point per round with its interval as a whisker.
    assert page.locator("#rounds-chart rect.dot-human").count() == 2
    assert page.locator("#rounds-chart line.whisker-human").count() == 2
    assert "judged by labelers" in page.text_content(".legend")
    page.screenshot(path=str(output_dir / "rounds-human-evaluation.png"), full_page=True)

    # Labels keep arriving: the next visit counts them.
    label(pairs_2[1], labelers[1], new_wins=False)
    label(pairs_2[2], labelers[2], new_wins=True, strength=Strength.NEGLIGIBLY_BETTER)
    page.reload()
    cell = page.text_content(f"#round-human-{second.pk}")
    assert "3 labels on 3/3 pairs" in cell and cell.strip().startswith("0.5 (")
    assert not page.js_errors
