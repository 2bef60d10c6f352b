"""A labeler's live dialogue in real headless Chromium, answered by SmolLM2 through llama.cpp on
a real ``live`` worker: write a prompt, watch both answers grow, judge by keyboard, edit the
winner, continue to a second turn, end the dialogue; then the database and the trl-preference
export hold the second turn with the edited first answer as its context."""

import json
import time

import pytest

from annotation.exports import ExportFilters, export_rows
from annotation.models import Comparison, ComparisonSource, Dialogue, DialogueState, Judgment, PromptSource, Prompt, Role
from tests.browser.test_labeling_page import login_with_keyboard
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.processes import database_url_for_workers, start_worker, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EDIT = "Edited by Ada: the sky looks blue because air scatters blue light most."


def smollm2_committee(max_new_tokens: int = 48):
    from modeling.services.members import member_register_smollm2

    members = member_register_smollm2()
    for member in members:
        member.generation = {**member.generation, "max_new_tokens": max_new_tokens}
        member.save()
    return members


def live_worker(tmp_path, name="live"):
    return start_worker(queues="live", name=name, env={"DATABASE_URL": database_url_for_workers()}, log_path=tmp_path / f"{name}.log")


def watch_both_answers_grow(page, timeout_s: float = 120) -> list[tuple[str, str]]:
    """The two response bodies sampled every 40 ms while they stream, until the verdict shows."""
    states, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snapshot = page.evaluate(
            """() => ({
                streaming: !!document.querySelector('.response.streaming'),
                verdict: !document.querySelector('#verdict').hidden,
                left: document.querySelector('#response-left .response-body').textContent,
                right: document.querySelector('#response-right .response-body').textContent })"""
        )
        if snapshot["verdict"]:
            return states
        if snapshot["streaming"] and (snapshot["left"], snapshot["right"]) not in states:
            states.append((snapshot["left"], snapshot["right"]))
        time.sleep(0.04)
    raise AssertionError(f"the answers did not finish in {timeout_s} s; last states: {states[-3:]}")


def test_a_labeler_writes_a_two_turn_dialogue_judges_edits_and_ends_it(live_server, browser_page, output_dir, tmp_path):
    project = ProjectFactory(prompt_source=PromptSource.WRITTEN, gold_rate=0, dialogue_max_turns=4, slug="live-demo")
    ada = UserFactory(username="ada")
    MembershipFactory(project=project, user=ada, role=Role.LABELER)
    smollm2_committee()
    page = browser_page
    worker = live_worker(tmp_path)
    try:
        login_with_keyboard(page, live_server)
        page.goto(f"{live_server.url}/p/{project.slug}/live/")
        page.wait_for_selector("#composer:not([hidden])")
        page.screenshot(path=str(output_dir / "live-compose.png"), full_page=True)
        page.focus("#live-text")
        page.keyboard.type("Why is the sky blue? Answer in two sentences.")
        page.keyboard.press("Control+Enter")
        states = watch_both_answers_grow(page)
        # At least two distinct partial states of the pair were on the page before both were done.
        assert len(states) >= 2, states
        assert any(left.strip("…") and right.strip("…") for left, right in states)
        page.screenshot(path=str(output_dir / "live-answered.png"), full_page=True)

        page.keyboard.press("2")  # A is better
        page.wait_for_selector("#edit-panel:not([hidden])")
        page.fill("#editor", EDIT)
        page.focus("#editor")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#composer:not([hidden])")
        assert "Turn 2 of 4" in page.text_content("#live-turn")
        assert EDIT in page.text_content("#transcript") and "edited" in page.text_content("#transcript")
        page.screenshot(path=str(output_dir / "live-continue.png"), full_page=True)

        page.focus("#live-text")
        page.keyboard.type("And at sunset?")
        page.keyboard.press("Control+Enter")
        watch_both_answers_grow(page)
        page.keyboard.press("7")  # B is better
        page.wait_for_selector("#edit-panel:not([hidden])")
        page.keyboard.press("n")  # no edit needed
        page.wait_for_selector("#composer:not([hidden])")
        page.click("#live-end")
        page.wait_for_selector("#live-ended:not([hidden])")
        page.screenshot(path=str(output_dir / "live-ended.png"), full_page=True)
    finally:
        stop(worker)
    assert not page.js_errors

    dialogue = Dialogue.objects.get(project=project, labeler=ada)
    assert dialogue.state == DialogueState.ENDED
    first, second = Prompt.objects.filter(dialogue=dialogue).order_by("turn_index")
    assert first.messages == [{"role": "user", "content": "Why is the sky blue? Answer in two sentences."}]
    assert second.messages[:2] == [*first.messages, {"role": "assistant", "content": EDIT}]
    assert second.messages[2] == {"role": "user", "content": "And at sunset?"}
    judgments = Judgment.objects.filter(labeler=ada).order_by("id")
    assert [j.comparison.prompt_id for j in judgments] == [first.pk, second.pk]
    assert judgments[0].edited_response.text == EDIT and judgments[1].edited_response is None
    assert Comparison.objects.filter(project=project, source=ComparisonSource.LIVE).count() == 2

    rows = list(export_rows(project=project, format="trl-preference", filters=ExportFilters()))
    turn_two = [r for r in rows if any(m.get("content") == "And at sunset?" for m in r["prompt"])]
    assert turn_two, json.dumps(rows)[:2000]
    assert {"role": "assistant", "content": EDIT} in turn_two[0]["prompt"]


def test_the_live_worker_killed_mid_answer_is_reported_and_the_labeler_redraws_after_its_restart(live_server, browser_page, output_dir, tmp_path):
    """Fault test with real processes: SIGKILL the live worker while both answers stream; the page
    says it stopped and nothing half is stored; a redraw while it is down says at once that no
    worker is there; once it is back the new pair is answered and the labeler judges it."""
    from modeling.models import LiveTurn
    from modeling.services.live import TURN_STALE_S
    from tests.faults.support import kill

    project = ProjectFactory(prompt_source=PromptSource.WRITTEN, gold_rate=0, edit_step=False, slug="live-fault")
    ada = UserFactory(username="ada")
    MembershipFactory(project=project, user=ada, role=Role.LABELER)
    smollm2_committee(max_new_tokens=300)  # long answers: the kill lands mid-answer
    page = browser_page
    worker = live_worker(tmp_path, "live-killed")
    try:
        login_with_keyboard(page, live_server)
        page.goto(f"{live_server.url}/p/{project.slug}/live/")
        page.wait_for_selector("#composer:not([hidden])")
        page.focus("#live-text")
        page.keyboard.type("Write a long story about a lighthouse keeper.")
        page.keyboard.press("Control+Enter")
        page.wait_for_function(
            "() => document.querySelector('.response.streaming') && document.querySelector('#response-left .response-body').textContent.length > 20",
            timeout=120_000,
        )
        kill(worker)
        turn = LiveTurn.objects.get()
        assert turn.state == "running" and turn.comparison_id is None
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('stopped answering')", timeout=(TURN_STALE_S + 10) * 1000,
        )
        assert page.is_visible("#live-redraw")
        page.screenshot(path=str(output_dir / "live-worker-killed.png"), full_page=True)
        assert not Prompt.objects.exists() and not Comparison.objects.exists()  # nothing half-stored

        page.keyboard.press("r")  # redraw while the worker is still down
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('live worker is not running')", timeout=30_000,
        )
        page.screenshot(path=str(output_dir / "live-worker-down.png"), full_page=True)
        smollm2_committee(max_new_tokens=24)  # shorter answers for the rest of the test
        worker = live_worker(tmp_path, "live-restarted")
        page.wait_for_selector("#verdict:not([hidden])", timeout=120_000)
        page.keyboard.press("1")  # A is significantly better; no edit step in this project
        page.wait_for_selector("#composer:not([hidden])")
    finally:
        stop(worker)
    assert not page.js_errors
    judgment = Judgment.objects.get(labeler=ada)
    assert judgment.comparison.source == ComparisonSource.LIVE and Prompt.objects.count() == 1
    killed = LiveTurn.objects.order_by("id").first()
    assert killed.cancelled and killed.comparison_id is None


def test_in_a_project_with_both_sources_a_share_of_submits_leads_to_a_live_dialogue(live_server, browser_page):
    """written_share 1: after a queued comparison is judged, the next task is writing a dialogue."""
    from tests.browser.test_labeling_page import make_queue, wait_for_task

    project, _, _ = make_queue(2)
    project.prompt_source, project.written_share, project.edit_step, project.ask_rationale = PromptSource.BOTH, 1.0, False, False
    project.save()
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/label/")
    wait_for_task(page, 0)
    page.keyboard.press("1")
    page.wait_for_url(f"{live_server.url}/p/{project.slug}/live/")
    page.wait_for_selector("#composer:not([hidden])")
    assert not page.js_errors
