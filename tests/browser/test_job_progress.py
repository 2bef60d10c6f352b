"""Long jobs move on the page: a round's step, loss, accuracy and ETA, its state badge in step with
its log, and a sampling pass's time and ETA, as the worker reports them (real headless Chromium;
the rows are moved by the test as the worker would)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Role
from modeling.models import JobState, Round, RoundState, SamplingRun
from tests.browser.test_labeling_page import login_with_keyboard
from tests.factories import MembershipFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_rounds_progress_and_badge_follow_the_worker(live_server, browser_page, output_dir):
    project = ProjectFactory()
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.ADMIN)
    round_ = Round.objects.create(
        project=project, number=1, state=RoundState.QUEUED, log="2026-11-29 10:00:00 snapshot: started\n",
    )
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/rounds/")
    assert page.text_content(f"#round-badge-{round_.pk}") == "Queued"

    # the worker takes it and reports RM training steps
    Round.objects.filter(pk=round_.pk).update(
        state=RoundState.TRAINING_RM, log=round_.log + "2026-11-29 10:00:05 training_rm: step 3/50: loss 0.69, accuracy 0.5\n",
        progress={"step": "training_rm", "phase": "training", "done": 3, "total": 50, "unit": "steps", "loss": 0.69,
                  "accuracy": 0.5, "elapsed_s": 30.0, "eta_s": 470.0},
    )
    page.wait_for_function("document.querySelector('#round-progress-text').textContent.includes('step 3 of 50')")
    said = page.text_content("#round-progress-text")
    assert "Reward model · training · step 3 of 50 · loss 0.69 · batch accuracy 0.5 · 30 s spent · about 7 min 50 s left" == said
    assert page.text_content(f"#round-badge-{round_.pk}") == page.text_content("#round-state") == "Training reward model"
    assert page.eval_on_selector("#round-progress-bar", "b => [b.value, b.max]") == [3, 50]
    page.screenshot(path=str(output_dir / "rounds-progress.png"), full_page=True)

    Round.objects.filter(pk=round_.pk).update(progress={
        "step": "training_rm", "phase": "training", "done": 40, "total": 50, "unit": "steps", "loss": 0.41,
        "accuracy": 0.75, "elapsed_s": 400.0, "eta_s": 100.0})
    page.wait_for_function("document.querySelector('#round-progress-text').textContent.includes('step 40 of 50')")
    assert "about 1 min 40 s left" in page.text_content("#round-progress-text")
    assert "training_rm: step 3/50" in page.text_content("#round-log-text")
    assert not page.js_errors


def test_the_sampling_table_shows_time_spent_and_left(live_server, browser_page, output_dir):
    project = ProjectFactory()
    PromptFactory.create_batch(2, project=project)
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LEAD)
    run = SamplingRun.objects.create(project=project, state=JobState.RUNNING, prompts_total=8, prompts_done=2,
                                     started_at=timezone.now() - timedelta(seconds=60))
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/")
    page.wait_for_function("document.querySelector('#sampling-runs').textContent.includes('left')")
    row = page.text_content("#sampling-runs")
    assert "2 / 8" in row and "1 min" in row and "about 3 min" in row
    SamplingRun.objects.filter(pk=run.pk).update(prompts_done=8, state=JobState.SUCCEEDED, finished_at=run.started_at + timedelta(seconds=200))
    page.wait_for_function("document.querySelector('#sampling-runs').textContent.includes('3 min 20 s')")
    assert "left" not in page.text_content("#sampling-runs")
    page.screenshot(path=str(output_dir / "sampling-progress.png"), full_page=True)
    assert not page.js_errors


def test_a_running_export_shows_judgments_read_time_and_eta(live_server, browser_page, output_dir):
    from annotation.models import DatasetSnapshot, SnapshotPurpose

    project = ProjectFactory()
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LEAD)
    export = DatasetSnapshot.objects.create(
        project=project, purpose=SnapshotPurpose.EXPORT, format="trl-preference", state=JobState.RUNNING,
        progress={"done": 120_000, "total": 400_000, "unit": "judgments", "rows": 150_000, "elapsed_s": 12.0, "eta_s": 28.0},
    )
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/")
    page.wait_for_function("document.querySelector('#export-list').textContent.includes('judgments')")
    row = page.text_content("#export-list")
    assert "running · 120,000 of 400,000 judgments · 12 s spent · about 28 s left" in row and "150000" in row
    DatasetSnapshot.objects.filter(pk=export.pk).update(state=JobState.SUCCEEDED, row_count=480_000, progress={}, sha256="a" * 64)
    page.wait_for_function("document.querySelector('#export-list').textContent.includes('succeeded')")  # the table polls while one runs
    assert "480000" in page.text_content("#export-list") and not page.js_errors
