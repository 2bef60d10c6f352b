"""A multi-turn conversation on the labeling page, in real headless Chromium: the turns before the
last user turn fold away, and a live dialogue's earlier answers say whether they were chosen or edited."""

import pytest

from annotation.models import Role
from tests.browser.test_labeling_page import login_with_keyboard, wait_for_task
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONVERSATION = [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "user", "content": "Plan a weekend in Lisbon."},
    {"role": "assistant", "content": "Day 1: Alfama and the castle. Day 2: Belém."},
    {"role": "user", "content": "Make it cheaper."},
    {"role": "assistant", "content": "Walk instead of taxis; eat at tascas; the castle is free on Sundays for residents."},
    {"role": "user", "content": "And what if it rains? <b onmouseover=\"window.__pwned = 1\">x</b>"},
]


def test_earlier_turns_fold_above_the_pair_and_marked_answers_carry_a_badge(live_server, browser_page, output_dir):
    project = ProjectFactory(gold_rate=0, overlap_k=1)
    # A live dialogue's third turn: its first answer was chosen as it was, the second was edited.
    prompt = PromptFactory(project=project, messages=CONVERSATION, metadata={"assistant_marks": {"2": "chosen", "4": "edited"}})
    ComparisonFactory(prompt=prompt, response_a=ResponseFactory(prompt=prompt, text="Museums: the Gulbenkian."),
                      response_b=ResponseFactory(prompt=prompt, text="Take the tram 28 and stay dry."))
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LABELER)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    wait_for_task(page, 0)

    # In view: the system prompt and the last user turn; the two earlier exchanges are folded.
    assert page.is_visible("text=You are a travel agent.") and page.is_visible("text=And what if it rains?")
    assert page.locator("#conversation .turn-last").inner_text().endswith('And what if it rains? <b onmouseover="window.__pwned = 1">x</b>')
    summary = page.locator("#conversation details.earlier-turns > summary")
    assert summary.inner_text() == "Show 2 earlier turns"
    assert not page.is_visible("text=Plan a weekend in Lisbon.") and not page.is_visible("text=Make it cheaper.")
    order = page.eval_on_selector_all("#conversation > *", "els => els.map(e => e.tagName === 'DETAILS' ? 'earlier' : e.className)")
    assert order == ["turn turn-system", "earlier", "turn turn-user turn-last"]
    page.screenshot(path=str(output_dir / "multiturn-folded.png"), full_page=True)

    # Opened from the keyboard: the earlier turns in order, each marked answer with its badge.
    summary.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Plan a weekend in Lisbon.", state="visible")
    assert summary.inner_text() == "Hide 2 earlier turns"
    earlier = page.eval_on_selector_all(
        "#conversation .earlier-body .turn", "els => els.map(e => [e.className, e.querySelector('.badge')?.textContent ?? null])"
    )
    assert earlier == [["turn turn-user", None], ["turn turn-assistant", "chosen"], ["turn turn-user", None], ["turn turn-assistant", "edited"]]
    assert page.is_visible("#conversation .badge.mark-edited")
    page.screenshot(path=str(output_dir / "multiturn-open.png"), full_page=True)

    # The verdict keys still work after the fold was used; the prompt's markup stayed text.
    page.locator("body").focus()
    page.keyboard.press("2")
    page.wait_for_selector("#edit-panel:not([hidden])")
    assert page.locator("#conversation b").count() == 0
    assert page.js_errors == []


def test_a_single_turn_prompt_has_nothing_to_fold(live_server, browser_page):
    project = ProjectFactory(gold_rate=0, overlap_k=1)
    ComparisonFactory(prompt=PromptFactory(project=project, messages=CONVERSATION[:2]))
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LABELER)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    wait_for_task(page, 0)
    assert page.locator("#conversation details").count() == 0
    assert page.locator("#conversation .turn").count() == 2 and page.is_visible("text=Plan a weekend in Lisbon.")
    assert page.js_errors == []
