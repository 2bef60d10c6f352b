"""A lead reads which labels to trust: the quality page queues a reliability fit, shows each
labeler's reliability and flags, and a labeler's own page names the tests (real headless Chromium)."""

import random

import pytest

from annotation.models import ReliabilityFit, Role, Strength
from annotation.services.reliability import reliability_fit_execute
from tests.browser.test_labeling_page import login_with_keyboard
from tests.factories import ComparisonFactory, JudgmentFactory, MembershipFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _labelled_project():
    """40 comparisons, 4 labels each: ann, bo and cy pick the better answer (A) 90% of the time,
    lefty always picks the left side, and rand clicks at random."""
    rng = random.Random(4)
    project = ProjectFactory(name="Helpful chat")
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LEAD)
    names = ("ann", "bo", "cy", "lefty", "rand")
    users = {name: UserFactory(username=name) for name in names}
    for name in names:
        MembershipFactory(project=project, user=users[name], role=Role.LABELER)
    for i in range(40):
        c = ComparisonFactory(prompt=PromptFactory(project=project), response_a__text=f"A careful answer number {i}.",
                              response_b__text="Meh.")
        for name in rng.sample(names, 4):
            left = c.response_a if rng.random() < 0.5 else c.response_b
            if name == "lefty":
                chosen = left
            elif name == "rand":
                chosen = rng.choice((c.response_a, c.response_b))
            else:
                chosen = c.response_a if rng.random() < 0.9 else c.response_b
            other = c.response_b if chosen == c.response_a else c.response_a
            strength = Strength.SIGNIFICANTLY_BETTER if name == "lefty" else rng.choice((Strength.BETTER, Strength.SLIGHTLY_BETTER))
            JudgmentFactory(assignment__comparison=c, assignment__labeler=users[name], assignment__left_response=left,
                            chosen_response=chosen, rejected_response=other, left_response=left, strength=strength)
    return project


def test_a_lead_reads_reliability_and_flags_on_the_quality_page_and_a_labelers_page(live_server, browser_page, output_dir):
    project = _labelled_project()
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/quality/")
    page.wait_for_selector("[data-fit-pending]")  # the page queued a fit: the worker runs it
    reliability_fit_execute(fit_id=ReliabilityFit.objects.get(project=project).pk)
    page.reload()
    page.wait_for_selector("text=Reliability fitted")
    row = page.locator("tr", has=page.locator("a", has_text="lefty"))
    assert "position bias" in row.text_content()
    page.screenshot(path=str(output_dir / "quality-reliability.png"), full_page=True)
    page.click("a:text-is('lefty')")
    page.wait_for_selector("#flags")
    flags = page.text_content("#flags")
    assert "position bias" in flags and "exact binomial test of left picks against 50%" in flags
    page.screenshot(path=str(output_dir / "quality-labeler.png"), full_page=True)
    page.goto(f"{live_server.url}/p/{project.slug}/quality/labelers/ann/")
    page.wait_for_selector("#flags")
    assert "None: no test flags this labeler." in page.text_content("#flags") and not page.js_errors
