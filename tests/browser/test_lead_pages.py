"""A lead runs the project from the app: browses comparisons and judgments, reads an edit as a
diff, and marks a comparison gold; staff run the committee (real headless Chromium)."""

import pytest

from annotation.models import Comparison, ResponseSource, Role, Strength
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


def test_a_lead_browses_judgments_reads_an_edit_and_marks_gold(live_server, browser_page, output_dir):
    project = ProjectFactory(name="Helpful chat")
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LEAD)
    labeler = UserFactory(username="lab")
    MembershipFactory(project=project, user=labeler, role=Role.LABELER)
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": "How do I reverse a list in Python?"}])
    c = ComparisonFactory(prompt=prompt, response_a=ResponseFactory(prompt=prompt, text="Use xs.reverse().", member=MemberFactory(name="smol")),
                          response_b=ResponseFactory(prompt=prompt, text="Use sorted(xs).", member=MemberFactory(name="smol-hot")))
    edit = ResponseFactory(prompt=prompt, text="Use xs.reverse(); it works in place.", source=ResponseSource.HUMAN_EDIT,
                           parent=c.response_a, author=labeler, edit_distance=20)
    JudgmentFactory(assignment__comparison=c, assignment__labeler=labeler, assignment__left_response=c.response_a,
                    chosen_response=c.response_a, rejected_response=c.response_b, strength=Strength.SIGNIFICANTLY_BETTER,
                    edited_response=edit, rationale="B does not reverse.")
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/")
    page.click("nav.project-nav >> text=Comparisons")
    page.wait_for_selector("table.browse")
    assert "lab: A, significantly, edited" in page.text_content("table.browse")
    page.click(f"table.browse >> text={c.pk}")
    page.wait_for_selector("#gold-form")
    assert page.text_content(".diff ins").strip() == "xs.reverse(); it works in place."
    assert "“B does not reverse.”" in page.text_content(".judgment")
    page.check("#gold-form input[value=a]")
    page.click("#gold-form button")
    page.wait_for_selector("ul.messages li.success")
    assert "gold, A is the better answer" in page.text_content("ul.messages")
    assert "agrees with gold" in page.text_content(".judgment")
    page.screenshot(path=str(output_dir / "lead-comparison.png"), full_page=True)
    c.refresh_from_db()
    assert c.is_gold and c.gold_winner_id == c.response_a_id and not page.js_errors
    assert Comparison.objects.filter(is_gold=True).count() == 1


def test_a_lead_creates_a_project_and_writes_its_guidelines(live_server, browser_page, output_dir):
    MembershipFactory(project=ProjectFactory(), user=UserFactory(username="ada"), role=Role.LEAD)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.click("text=New project")
    page.fill("#id_name", "Code review")
    page.fill("#id_slug", "code-review")
    page.click("#project-new-form button")
    page.wait_for_selector("ul.messages li.success")
    page.click("nav.project-nav >> text=Settings")
    page.fill("#id_guidelines", "## Judge\nPrefer answers with **tests**.")
    assert page.get_attribute("#id_overlap_k", "min") == "1"  # the browser refuses 0 before sending
    page.fill("#id_overlap_k", "2")
    page.fill("#id_gold_rate", "1.5")  # no bound in the browser: the server refuses it
    page.click("#settings-form button")
    page.wait_for_selector(".has-error")
    assert page.is_visible("text=A share from 0 to 1.")
    page.fill("#id_gold_rate", "0.1")
    page.click("#settings-form button")
    page.wait_for_selector("ul.messages li.success")
    assert "guidelines" in page.text_content("ul.messages") and "overlap_k" in page.text_content("ul.messages")
    page.screenshot(path=str(output_dir / "project-settings.png"), full_page=True)
    from annotation.models import Project

    project = Project.objects.get(slug="code-review")
    assert project.guidelines.startswith("## Judge") and project.overlap_k == 2 and not page.js_errors


def test_staff_add_an_endpoint_member_test_it_on_a_real_worker_reweigh_and_retire_it(live_server, browser_page, output_dir, tmp_path):
    from modeling.models import CommitteeMember
    from tests.modeling.chat_server import ChatServer
    from tests.processes import database_url_for_workers, start_worker, stop

    UserFactory(username="ada", is_staff=True)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.click("text=Committee")
    page.wait_for_url(f"{live_server.url}/committee/")
    worker = start_worker(queues="default", name="committee-test", env={"DATABASE_URL": database_url_for_workers()},
                          log_path=tmp_path / "worker.log")
    try:
        with ChatServer() as server:
            page.check("#member-add-form input[value=endpoint]")
            page.fill("#id_name", "house-vllm")
            page.fill("#id_base_url", server.url)
            page.fill("#id_endpoint_model", "served-model")
            page.fill("#id_weight", "2")
            page.click("#member-add-form button[type=submit]")
            page.wait_for_selector("text=house-vllm joined the committee")
            member = CommitteeMember.objects.get(name="house-vllm")
            row = f"#member-{member.pk}"
            page.fill(f"{row} .member-test input[name=prompt]", "Name a yellow fruit.")
            page.click(f"{row} .member-test button")
            # The page follows the test until the worker's answer arrives, without a reload.
            page.wait_for_function(
                "sel => document.querySelector(sel).textContent.includes('echo (1 messages): Name a yellow fruit.')",
                arg=f"#member-test-{member.pk}", timeout=60_000,
            )
    finally:
        stop(worker)
    assert "tokens/s" in page.text_content(f"#member-test-{member.pk}")
    page.screenshot(path=str(output_dir / "committee-tested.png"), full_page=True)

    page.fill(f"#id_member{member.pk}_weight", "0.5")
    page.click(f"#member-{member.pk} .member-settings button")
    page.wait_for_selector("text=house-vllm: settings saved.")
    page.click(f"#member-{member.pk} button:has-text('Retire')")
    page.wait_for_selector("text=house-vllm retired from the committee")
    member.refresh_from_db()
    assert member.weight == 0.5 and not member.is_active
    assert page.text_content(f"#member-{member.pk} .badge") == "Retired"
    assert not page.js_errors


def test_staff_add_a_gguf_member_and_its_test_is_answered_by_llamacpp_on_a_real_gpu_worker(live_server, browser_page, output_dir, tmp_path):
    import importlib.util

    from modeling.models import CommitteeMember
    from modeling.services.members import SMOLLM2_GGUF, SMOLLM2_PACKAGE
    from tests.processes import database_url_for_workers, start_worker, stop

    package = importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0]
    UserFactory(username="ada", is_staff=True)
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/committee/")
    page.fill("#id_name", "smol-q4")
    page.fill("#id_model_path", package)
    page.fill("#id_gguf_file", SMOLLM2_GGUF)
    page.click("#member-add-form button[type=submit]")
    page.wait_for_selector("text=smol-q4 joined the committee")
    member = CommitteeMember.objects.get(name="smol-q4")
    row = f"#member-{member.pk}"
    assert page.text_content(f"{row} .member-engine").split() [:3] == ["Engine:", "llama.cpp", "(auto)"]
    worker = start_worker(queues="gpu", name="committee-gguf", env={"DATABASE_URL": database_url_for_workers()},
                          log_path=tmp_path / "worker.log")
    try:
        page.fill(f"{row} .member-test input[name=prompt]", "What is the capital of France?")
        page.click(f"{row} .member-test button")
        page.wait_for_function(
            "sel => document.querySelector(sel).textContent.includes('by llama.cpp')", arg=f"#member-test-{member.pk}", timeout=120_000,
        )
    finally:
        stop(worker)
    assert member.last_test["engine"] == "llama.cpp" and member.last_test["answer"]
    page.screenshot(path=str(output_dir / "committee-llamacpp.png"), full_page=True)
    assert not page.js_errors


def test_a_lead_weighs_the_committee_for_the_project_and_follows_a_members_test(live_server, browser_page, output_dir):
    from modeling.services import member_test_execute
    from tests.modeling.test_committee import FakeBackend

    project = ProjectFactory()
    MembershipFactory(project=project, user=UserFactory(username="ada"), role=Role.LEAD)
    keep, drop = MemberFactory(name="smol-warm"), MemberFactory(name="smol-cold")
    page = browser_page
    login_with_keyboard(page, live_server)
    page.goto(f"{live_server.url}/p/{project.slug}/")
    assert page.get_attribute("#committee", "open") is None  # two members answer: folded
    page.click("#committee summary")
    page.fill(f"#member-{drop.pk} input[name=weight]", "0")
    page.click(f"#member-{drop.pk} form.inline-form button")
    page.wait_for_selector("text=smol-cold: weight 0 in this project (it will not answer here).")
    assert "smol-cold" not in page.text_content("#committee summary")
    assert page.get_attribute("#committee", "open") is not None  # fewer than two answer: open, to be seen
    page.fill(f"#member-{keep.pk} .member-test input[name=prompt]", "Name a yellow fruit.")
    page.click(f"#member-{keep.pk} .member-test button")
    page.wait_for_selector("text=Prompt sent to smol-warm")
    assert "Queued on the gpu worker" in page.text_content(f"#member-test-{keep.pk}")
    keep.refresh_from_db()
    member_test_execute(test_id=keep.last_test["id"], backend_loader=lambda m: FakeBackend("A banana."))
    page.wait_for_function("sel => document.querySelector(sel).textContent.includes('A banana.')", arg=f"#member-test-{keep.pk}")
    page.screenshot(path=str(output_dir / "project-committee.png"), full_page=True)
    assert not page.js_errors
