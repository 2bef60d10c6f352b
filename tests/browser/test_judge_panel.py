"""A lead reads how far the LLM judge can be trusted (the quality page's judge panel), and a
labeler sees its suggestion on the labeling page (real headless Chromium, screenshots kept)."""

import pytest
from django.utils import timezone

from annotation.models import AssignmentState, JudgeVerdict, Role, Strength
from tests.browser.test_labeling_page import login_with_keyboard
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    MemberFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _judged_project():
    """12 comparisons judged in both orders: 8 the judge calls for A either way, 4 where it
    picks whichever answer it read first (ambiguous). Two labelers pick A on all but two, one
    of whom saw the suggestion, the other in the blind share."""
    judge = MemberFactory(name="smollm2-judge")
    project = ProjectFactory(name="Helpful chat", judge=judge, suggestions_shown=True, suggestion_blind_share=0.1)
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LEAD)
    labelers = [UserFactory(username=name) for name in ("ann", "bo")]
    for user in labelers:
        MembershipFactory(project=project, user=user, role=Role.LABELER)
    for i in range(12):
        consistent = i < 8
        c = ComparisonFactory(prompt=PromptFactory(project=project), response_a__text=f"A careful answer number {i}.",
                              response_b__text="Meh.", judge_state="consistent" if consistent else "inconsistent")
        if consistent:
            c.judge_winner, c.judge_strength, c.judge_confidence = c.response_a, Strength.BETTER, 0.85
            c.save()
        JudgeVerdict.objects.create(comparison=c, member=judge, order="ab", winner=c.response_a, strength=Strength.BETTER, output="[[A]]")
        JudgeVerdict.objects.create(comparison=c, member=judge, order="ba", winner=c.response_a if consistent else c.response_b,
                                    strength=Strength.BETTER, output="[[B]]" if consistent else "[[A]]")
        for n, user in enumerate(labelers):
            chosen, other = (c.response_b, c.response_a) if i == 10 + n else (c.response_a, c.response_b)
            assignment = AssignmentFactory(comparison=c, labeler=user, left_response=c.response_a, state=AssignmentState.SUBMITTED,
                                           ended_at=timezone.now(), suggestion=("shown" if n == 0 else "blind") if consistent else "")
            JudgmentFactory(assignment=assignment, chosen_response=chosen, rejected_response=other, left_response=c.response_a)
    return project, judge


def test_a_lead_reads_the_judge_panel_and_a_labeler_sees_a_suggestion(live_server, browser_page, output_dir):
    project, judge = _judged_project()
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/quality/#judge")
    panel = page.locator("#judge")
    text = panel.text_content()
    assert "smollm2-judge" in text and "shown to labelers (never to 0.1 of leases" in text
    rows = {r.locator("td").nth(0).text_content(): r.locator("td").nth(1).text_content() for r in panel.locator("tbody tr").all()}
    assert rows["Comparisons judged in both orders"] == "12"
    assert rows["Flip rate when the answers swap places"] == "0.3333"  # 4 of 12 changed with the order
    assert rows["Picks the answer shown first (1/2 without position bias)"] == "0.6667"  # 16 of 24 verdicts
    assert rows["Agreement with the labelers' majority, without ties"] == "1.0"
    assert rows["Labels that follow the suggestion: shown"] == "1.0" and rows["… blind share (the project shows them, this lease did not)"] == "1.0"
    panel.screenshot(path=str(output_dir / "quality-judge-panel.png"))
    page.screenshot(path=str(output_dir / "quality-judge.png"), full_page=True)
    # The lead labels too: the next comparison comes with the judge's suggestion (no blind share now).
    type(project).objects.filter(pk=project.pk).update(suggestion_blind_share=0.0)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    page.wait_for_selector("#suggestion:not([hidden])")
    hint = page.text_content("#suggestion")
    assert "The judge model leans" in hint and "better" in hint and "judge for yourself" in hint
    page.screenshot(path=str(output_dir / "label-suggestion.png"), full_page=True)
    assert not page.js_errors
