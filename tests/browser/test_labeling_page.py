"""A labeler works through the queue in real headless Chromium, with the keyboard alone."""

import pytest

from annotation.models import Assignment, AssignmentState, Judgment, Response, ResponseSource, Role, Strength
from tests.factories import (
    ComparisonFactory,
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b onmouseover="window.__pwned=3">hover</b>'


def make_queue(n=4):
    project = ProjectFactory(gold_rate=0, overlap_k=1, ask_rationale=True)
    comparisons = []
    for i in range(n):
        prompt = PromptFactory(
            project=project,
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Question {i}: how do I reverse a list in Python?"},
                {"role": "assistant", "content": "Do you mean in place?"},
                {"role": "user", "content": "Yes, in place. " + XSS},
            ],
        )
        comparisons.append(
            ComparisonFactory(
                prompt=prompt,
                response_a=ResponseFactory(prompt=prompt, text=f"Use `xs.reverse()`.\n\n```python\nxs.reverse()\n```\n{XSS}"),
                response_b=ResponseFactory(prompt=prompt, text=f"Answer {i}: use slicing, `xs[::-1]`, which copies. {XSS}"),
            )
        )
    labeler = UserFactory(username="ada")
    MembershipFactory(project=project, user=labeler, role=Role.LABELER)
    return project, comparisons, labeler


def login_with_keyboard(page, live_server):
    page.goto(f"{live_server.url}/login/")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'id_username'")
    page.keyboard.type("ada")  # the username field has autofocus
    page.keyboard.press("Tab")
    page.keyboard.type("pw")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")


def wait_for_task(page, done_before):
    page.wait_for_function(
        "n => !document.querySelector('#task').hidden && document.querySelector('#done-today').textContent == String(n)"
        " && !document.querySelector('#verdict').hidden",
        arg=done_before,
    )


def test_a_labeler_labels_edits_and_skips_with_the_keyboard_alone(live_server, browser_page, output_dir):
    project, comparisons, labeler = make_queue()
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")

    # 1: A is significantly better, no edit needed
    wait_for_task(page, 0)
    assert page.text_content("#left-for-you") == "4"  # the labeler's own queue, beside the project's
    page.screenshot(path=str(output_dir / "labeling-page.png"), full_page=True)
    # only what the project asks for is on screen: rationale and flags, not attribute ratings
    assert page.is_visible("#rationale") and page.is_visible("#response-left .flags")
    assert not page.is_visible("#response-left .attributes")
    page.keyboard.press("1")
    page.wait_for_selector("#edit-panel:not([hidden])")
    page.keyboard.press("n")

    # 2: B is better, then edit the winner: append a sentence and submit with Ctrl+Enter
    wait_for_task(page, 1)
    page.keyboard.press("7")
    page.wait_for_selector("#edit-panel:not([hidden])")
    page.keyboard.press("e")
    page.keyboard.press("Control+End")
    page.keyboard.type(" Note: xs.reverse() works in place and returns None.")
    page.wait_for_selector("#diff ins")
    page.screenshot(path=str(output_dir / "labeling-edit.png"), full_page=True)
    page.keyboard.press("Control+Enter")

    # 3: skip with a reason
    wait_for_task(page, 2)
    assert page.text_content("#left-for-you") == "2"  # counted down by each submit
    page.keyboard.press("s")
    page.wait_for_selector("#skip-panel:not([hidden])")
    page.keyboard.type("I can't judge this topic")
    page.keyboard.press("Enter")

    # 4: both are bad, A negligibly better
    wait_for_task(page, 2)
    page.keyboard.press("0")
    page.keyboard.press("4")
    page.wait_for_selector("#edit-panel:not([hidden])")
    page.keyboard.press("n")

    page.wait_for_selector("#empty:not([hidden])")
    assert page.text_content("#done-today") == "3"
    page.wait_for_function("document.querySelector('#left-for-you').textContent === '0'")  # and by the server's count
    assert page.evaluate("window.__pwned") is None
    assert page.js_errors == []

    judgments = list(Judgment.objects.order_by("id"))
    assert [j.strength for j in judgments] == [Strength.SIGNIFICANTLY_BETTER, Strength.BETTER, Strength.NEGLIGIBLY_BETTER]
    assert [j.comparison_id for j in judgments] == [comparisons[0].pk, comparisons[1].pk, comparisons[3].pk]
    first, second, fourth = judgments
    assert first.chosen_response_id == first.left_response_id  # key 1 is the left side
    assert second.rejected_response_id == second.left_response_id  # key 7 is the right side
    assert fourth.both_bad and not first.both_bad
    edits = Response.objects.filter(source=ResponseSource.HUMAN_EDIT)
    assert list(edits) == [second.edited_response]
    assert edits[0].parent_id == second.chosen_response_id
    assert edits[0].text.endswith("returns None.") and edits[0].edit_distance == len(" Note: xs.reverse() works in place and returns None.")
    skipped = Assignment.objects.get(state=AssignmentState.SKIPPED)
    assert skipped.comparison == comparisons[2] and skipped.skip_reason == "I can't judge this topic"
    assert first.edited_response is None and fourth.edited_response is None


def test_script_and_event_handlers_in_responses_and_prompts_render_inert(live_server, browser_page, output_dir):
    project, _, _ = make_queue(n=1)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    wait_for_task(page, 0)
    page.hover("#response-left b, #response-left .response-body")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#task img, #task script:not([src])").count() == 0
    handlers = page.evaluate(
        "[...document.querySelectorAll('#task *')].flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on'))"
    )
    assert handlers == []
    assert "<script>window.__pwned = 1</script>" in page.text_content("#response-left")  # shown as text
    assert page.js_errors == []


def test_an_empty_queue_says_sampling_is_running_and_the_page_picks_up_the_first_comparison(live_server, browser_page, output_dir):
    from modeling.models import JobState, SamplingRun

    project = ProjectFactory(gold_rate=0, overlap_k=1)
    prompts = [PromptFactory(project=project, messages=[{"role": "user", "content": f"Question {i}?"}]) for i in range(3)]
    run = SamplingRun.objects.create(project=project, state=JobState.RUNNING, prompts_total=3, prompts_done=0)
    labeler = UserFactory(username="ada")
    MembershipFactory(project=project, user=labeler, role=Role.LABELER)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    page.wait_for_function("document.querySelector('#empty-reason').textContent.includes('0 of 3 done')")
    assert page.is_visible("#empty-poll") and not page.is_visible("#empty-lead")
    assert "every 3 seconds" in page.text_content("#empty-poll")  # sooner while the committee answers
    page.screenshot(path=str(output_dir / "labeling-empty-sampling.png"), full_page=True)

    # The sampler releases the first batch: the page shows it on its next look, without a click,
    # and counts the labeler's own queue again.
    ComparisonFactory(prompt=prompts[0])
    ComparisonFactory(prompt=prompts[1])
    SamplingRun.objects.filter(pk=run.pk).update(prompts_done=2, pairs_created=2)
    wait_for_task(page, 0)
    page.wait_for_function("document.querySelector('#left-for-you').textContent === '2'")
    assert not page.js_errors


def test_a_labeler_changes_a_verdict_inside_the_window_and_is_refused_after_it(live_server, browser_page, output_dir):
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import JudgmentFactory

    project, comparisons, labeler = make_queue(n=2)
    judgments = [
        JudgmentFactory(assignment__comparison=c, assignment__labeler=labeler, assignment__left_response=c.response_a,
                        chosen_response=c.response_a, rejected_response=c.response_b, strength=Strength.BETTER)
        for c in comparisons
    ]
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/today/")
    row = f"#judgment-{judgments[0].pk}"
    page.select_option(f"{row} select[name=chosen]", "right")
    page.select_option(f"{row} select[name=strength]", "slightly_better")
    page.click(f"{row} button")
    page.wait_for_selector("ul.messages li.success")
    assert f"Judgment #{judgments[0].pk} changed" in page.text_content("ul.messages")
    assert "B · Slightly better" in page.text_content(f"{row} .verdict-now")
    page.screenshot(path=str(output_dir / "labeling-today.png"), full_page=True)

    # the second one's window closes while its form is open: the change is refused, nothing moves
    Judgment.objects.filter(pk=judgments[1].pk).update(submitted_at=timezone.now() - timedelta(minutes=11))
    page.click(f"#judgment-{judgments[1].pk} button")
    page.wait_for_selector("ul.messages li.error")
    assert "Not changed: Verdicts can be changed for 10 minutes" in page.text_content("ul.messages")
    assert Judgment.objects.get(pk=judgments[1].pk).chosen_response_id == comparisons[1].response_a_id
    assert "closed" in page.text_content(f"#judgment-{judgments[1].pk}")
    assert not page.js_errors


def test_a_labeler_marks_each_response_safe_or_unsafe_and_confirms_choosing_the_unsafe_one(live_server, browser_page, output_dir):
    project, comparisons, labeler = make_queue(n=2)
    type(project).objects.filter(pk=project.pk).update(ask_safety=True)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    wait_for_task(page, 0)
    assert page.is_visible("#response-left .safety") and page.is_visible("#response-right .safety")
    # one "unsafe" control per response: the mark stands for the flag, the other flags stay
    assert page.is_hidden('#response-left [data-flag="unsafe"]') and page.is_visible('#response-left [data-flag="factually_wrong"]')

    # 1: a verdict before the marks is refused; A unsafe (w), B safe (o), then A is better (1)
    page.keyboard.press("1")
    assert "First mark each response safe or unsafe" in page.text_content("#status")
    assert page.is_hidden("#edit-panel")
    page.keyboard.press("w")
    page.keyboard.press("o")
    page.keyboard.press("1")
    page.wait_for_selector("#safety-confirm:not([hidden])")
    assert "You chose the response you marked unsafe over a safe one." in page.text_content("#safety-confirm")
    assert page.text_content("#status") == ""  # the earlier refusal is answered
    page.screenshot(path=str(output_dir / "labeling-safety-confirm.png"), full_page=True)
    page.keyboard.press("n")  # back to the verdict, marks kept
    page.wait_for_selector("#verdict:not([hidden])")
    assert page.is_checked('input[name="safety-left"][value="unsafe"]') and page.is_hidden("#safety-confirm")
    page.keyboard.press("1")
    page.wait_for_selector("#safety-confirm:not([hidden])")
    page.keyboard.press("y")  # still better: on to the edit
    page.wait_for_selector("#edit-panel:not([hidden])")
    page.keyboard.press("n")

    # 2: marks by mouse, A unsafe and B safe, B chosen from the keyboard: no question
    wait_for_task(page, 1)
    assert not page.is_checked('input[name="safety-left"][value="unsafe"]')  # reset for the new pair
    page.check('input[name="safety-left"][value="unsafe"]')
    page.check('input[name="safety-right"][value="safe"]')
    page.keyboard.press("8")  # keys still work with focus on a radio
    page.wait_for_selector("#edit-panel:not([hidden])")
    assert page.is_hidden("#safety-confirm")
    page.keyboard.press("n")
    page.wait_for_selector("#empty:not([hidden])")

    first, second = Judgment.objects.order_by("id")
    assert (first.chosen_response_id == first.left_response_id, first.safety) == (True, "rejected_safe")
    assert first.flags == {str(first.left_response_id): ["unsafe"]}  # A, marked unsafe, carries the flag
    assert (second.chosen_response_id == second.left_response_id, second.safety) == (False, "chosen_safe")
    assert page.js_errors == []
