"""A Prolific participant follows the study link in real headless Chromium, labels the study's
items with the keyboard and lands on the platform's completion page with the code."""

import pytest

from annotation.models import ExternalParticipant, ParticipantOutcome
from tests.factories import ComparisonFactory, ProjectFactory, PromptFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXIT = "https://app.prolific.com/submissions/complete?cc=C1A2B3"


def test_a_participant_labels_the_study_items_and_is_sent_to_the_completion_url(live_server, browser_page, output_dir):
    project = ProjectFactory(
        gold_rate=0, edit_step=False, study_open=True, study_items=2,
        study_completion_url="https://app.prolific.com/submissions/complete?cc={code}", study_completion_code="C1A2B3",
    )
    for _ in range(3):
        ComparisonFactory(prompt=PromptFactory(project=project))
    page = browser_page
    # The platform is not reachable from a test: its completion page is answered here.
    page.route("https://app.prolific.com/**", lambda route: route.fulfill(status=200, body="Prolific: submission complete"))
    page.goto(f"{live_server.url}/p/{project.slug}/join/?PROLIFIC_PID=5f1e0d2c3b4a59687766a1b2&STUDY_ID=s1&SESSION_ID=x1")
    page.wait_for_url(f"{live_server.url}/p/{project.slug}/label/")
    assert "This study asks 2 judgments" in page.text_content("#study-note")
    for done in range(2):
        page.wait_for_function(
            "n => !document.querySelector('#verdict').hidden && document.querySelector('#done-today').textContent == String(n)",
            arg=done,
        )
        page.keyboard.press("1")
    page.wait_for_url(EXIT)
    assert "submission complete" in page.content()
    assert ExternalParticipant.objects.get().outcome == ParticipantOutcome.COMPLETED
    assert page.js_errors == []
