"""A lead creates a project and edits its guidelines and settings in the app, every change audited;
bad values are form errors that change nothing."""

import pytest
from django.urls import reverse

from annotation.models import AuditAction, AuditEvent, Membership, Project, Role
from tests.factories import MemberFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

VALID = {
    "name": "Helpful chat", "description": "", "guidelines": "Be **kind**.", "overlap_k": "3", "gold_rate": "0.05",
    "repeat_rate": "0.03", "repeat_min_gap": "20",
    "lease_minutes": "30", "max_live_leases": "3", "margin_table": "small", "max_edit_chars": "20000",
    "verdict_change_minutes": "10", "pairing": "committee", "rejection_k": "4", "policy_admission": "always", "admission_min_labels": "30",
    "edit_step": "on", "ask_flags": "on", "prompt_source": "imported", "written_share": "0.25", "dialogue_max_turns": "4",
    "study_items": "20", "study_min_gold_accuracy": "0", "study_gold_after": "3",
    "candidates_k": "2", "selection_rule": "random", "selection_random_share": "0.2", "selection_prompt_cap": "2",
    "member_pair_rule": "weights", "suggestion_blind_share": "0.1",
}


def test_a_lead_creates_a_project_and_becomes_its_admin(client, member_of):
    lead = member_of(ProjectFactory(), Role.LEAD, username="lena")
    client.force_login(lead)
    assert 'href="/projects/new/"' in client.get(reverse("home")).content.decode()
    page = client.post(reverse("project-new"), {"name": "Code review", "slug": "code-review", "guidelines": "Prefer tested code."}, follow=True)
    project = Project.objects.get(slug="code-review")
    assert "Project &#x27;Code review&#x27; created" in page.content.decode() and project.guidelines == "Prefer tested code."
    assert Membership.objects.get(project=project, user=lead).role == Role.ADMIN
    assert AuditEvent.objects.filter(project=project, action=AuditAction.PROJECT_CHANGED, target="created", actor_name="lena").exists()
    again = client.post(reverse("project-new"), {"name": "Other", "slug": "code-review"})
    assert again.status_code == 200 and "already exists" in again.content.decode() and Project.objects.filter(slug="code-review").count() == 1


def test_saving_untouched_multiline_text_from_a_browser_changes_nothing(client, member_of):
    # Browsers post a textarea's lines ended by CRLF; the stored text has LF.
    project = ProjectFactory(guidelines="## Rules\n\nBe kind.\n- one\n- two", description="Line one\nline two")
    client.force_login(member_of(project, Role.LEAD))
    url = reverse("project-settings", kwargs={"slug": project.slug})
    stored = {"guidelines": project.guidelines, "description": project.description}
    client.post(url, {**VALID, **stored})  # the factory's other settings become the form's
    audited = AuditEvent.objects.filter(project=project, action=AuditAction.PROJECT_CHANGED, target="settings").count()
    posted = {**VALID, "guidelines": "## Rules\r\n\r\nBe kind.\r\n- one\r\n- two", "description": "Line one\r\nline two"}
    assert "Nothing changed" in client.post(url, posted, follow=True).content.decode()
    project.refresh_from_db()
    assert {"guidelines": project.guidelines, "description": project.description} == stored
    assert AuditEvent.objects.filter(project=project, action=AuditAction.PROJECT_CHANGED, target="settings").count() == audited
    client.post(reverse("project-new"), {"name": "CR", "slug": "cr", "guidelines": "a\r\nb"})
    assert Project.objects.get(slug="cr").guidelines == "a\nb"


def test_a_labeler_only_cannot_create_projects(client, member_of):
    client.force_login(member_of(ProjectFactory(), Role.LABELER))
    assert 'href="/projects/new/"' not in client.get(reverse("home")).content.decode()
    assert client.get(reverse("project-new")).status_code == 403
    client.force_login(UserFactory(is_staff=True))
    assert client.get(reverse("project-new")).status_code == 200


def test_a_lead_edits_guidelines_and_settings_and_the_audit_has_before_and_after(client, member_of):
    project = ProjectFactory(name="Helpful chat", guidelines="Old.")
    client.force_login(member_of(project, Role.LEAD, username="lena"))
    url = reverse("project-settings", kwargs={"slug": project.slug})
    page = client.post(url, {**VALID, "guidelines": "New **rules**.", "overlap_k": "5", "ask_rationale": "on"}, follow=True)
    project.refresh_from_db()
    assert (project.guidelines, project.overlap_k, project.ask_rationale) == ("New **rules**.", 5, True)
    assert "Saved: " in page.content.decode()
    event = AuditEvent.objects.get(project=project, action=AuditAction.PROJECT_CHANGED, target="settings")
    assert event.actor_name == "lena" and event.details["overlap_k"] == {"before": 3, "after": 5}
    assert event.details["guidelines"] == {"before": "Old.", "after": "New **rules**."}
    assert "Nothing changed" in client.post(url, {**VALID, "guidelines": "New **rules**.", "overlap_k": "5", "ask_rationale": "on"}, follow=True).content.decode()


def test_a_lead_sets_the_swapped_repeat_rate_and_gap(client, member_of):
    project = ProjectFactory()
    assert (project.repeat_rate, project.repeat_min_gap) == (0.03, 20)
    client.force_login(member_of(project, Role.LEAD))
    client.post(reverse("project-settings", kwargs={"slug": project.slug}), {**VALID, "repeat_rate": "0.1", "repeat_min_gap": "5"})
    project.refresh_from_db()
    assert (project.repeat_rate, project.repeat_min_gap) == (0.1, 5)
    assert AuditEvent.objects.get(project=project, target="settings").details["repeat_rate"] == {"before": 0.03, "after": 0.1}


def test_a_lead_names_a_judge_and_sets_pair_selection(client, member_of):
    project = ProjectFactory()
    judge = MemberFactory(name="judge-model")
    retired = MemberFactory(name="retired", is_active=False)
    client.force_login(member_of(project, Role.LEAD))
    url = reverse("project-settings", kwargs={"slug": project.slug})
    assert "judge-model" in client.get(url).content.decode() and "retired" not in client.get(url).content.decode()
    client.post(url, {**VALID, "judge": str(judge.pk), "suggestions_shown": "on", "suggestion_blind_share": "0.2",
                      "ambiguous_first": "on", "candidates_k": "4", "selection_rule": "d-optimal", "member_pair_rule": "active"})
    project.refresh_from_db()
    assert (project.judge, project.suggestions_shown, project.suggestion_blind_share, project.ambiguous_first) == (judge, True, 0.2, True)
    assert (project.candidates_k, project.selection_rule, project.member_pair_rule) == (4, "d-optimal", "active")
    details = AuditEvent.objects.get(project=project, target="settings").details
    assert details["judge"] == {"before": None, "after": "judge-model"}
    page = client.get(reverse("project", kwargs={"slug": project.slug})).content.decode()
    assert "judge-model: suggestions shown (0.2 of labels blind); ambiguous pairs first" in page
    assert "4 answers per prompt; D-optimal" in page
    # a retired member cannot become the judge
    assert client.post(url, {**VALID, "judge": str(retired.pk)}).status_code == 200
    project.refresh_from_db()
    assert project.judge == judge


@pytest.mark.parametrize(
    ("field", "value"),
    [("overlap_k", "0"), ("gold_rate", "1.5"), ("gold_rate", "nan"), ("lease_minutes", "99999999999"),
     ("margin_table", "huge"), ("name", ""), ("guidelines", "bad\x00text"), ("rejection_k", "-1"),
     ("prompt_source", "telepathy"), ("written_share", "1.5"), ("written_share", "-0.1"), ("written_share", "nan"),
     ("dialogue_max_turns", "0"), ("dialogue_max_turns", "21"), ("prompt_categories", "Code\nbad\x00name"),
     ("study_items", "0"), ("study_min_gold_accuracy", "nan"), ("study_completion_url", "http://example.org/?cc=X"),
     ("repeat_rate", "0.6"), ("repeat_rate", "-0.01"), ("repeat_rate", "nan"), ("repeat_min_gap", "0"),
     ("candidates_k", "1"), ("candidates_k", "9"), ("selection_rule", "psychic"), ("selection_random_share", "1.5"),
     ("selection_random_share", "nan"), ("selection_prompt_cap", "0"), ("member_pair_rule", "loudest"),
     ("suggestion_blind_share", "-0.1"), ("judge", "999999")],
)
def test_bad_settings_are_form_errors_and_change_nothing(client, member_of, field, value):
    project = ProjectFactory(name="Helpful chat")
    client.force_login(member_of(project, Role.LEAD))
    before = Project.objects.filter(pk=project.pk).values().get()
    page = client.post(reverse("project-settings", kwargs={"slug": project.slug}), {**VALID, field: value})
    assert page.status_code == 200 and 'class="error"' in page.content.decode()
    assert Project.objects.filter(pk=project.pk).values().get() == before
    assert not AuditEvent.objects.filter(project=project, target="settings").exists()


def test_a_lead_sets_live_dialogues_and_safety_and_categories_are_one_per_line(client, member_of):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.LEAD))
    url = reverse("project-settings", kwargs={"slug": project.slug})
    client.post(url, {
        **VALID, "prompt_source": "both", "written_share": "0.4", "dialogue_max_turns": "20", "allow_system_prompt": "on",
        "prompt_categories": "Coding\r\n\r\n  Travel plans \r\nMath", "live_share": "on", "ask_safety": "on",
    })
    project.refresh_from_db()
    assert (project.prompt_source, project.written_share, project.dialogue_max_turns) == ("both", 0.4, 20)
    assert project.allow_system_prompt and project.live_share and project.ask_safety
    assert project.prompt_categories == ["Coding", "Travel plans", "Math"]
    page = client.get(url).content.decode()
    assert "Coding\nTravel plans\nMath</textarea>" in page and 'max="20"' in page
    event = AuditEvent.objects.get(project=project, target="settings")
    assert event.details["prompt_categories"] == {"before": [], "after": ["Coding", "Travel plans", "Math"]}
    client.post(url, {**VALID, "prompt_categories": ""})
    project.refresh_from_db()
    assert project.prompt_categories == [] and project.prompt_source == "imported" and not project.ask_safety


@pytest.mark.parametrize(
    ("categories", "message"),
    [("\n".join(f"topic {i}" for i in range(51)), "At most 50 categories; this lists 51."),
     ("Short\n" + "x" * 101, "At most 100 characters a category; &#x27;xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…&#x27; has 101."),
     ("Code\nTravel\ncode\nTravel", "Listed twice: code, Travel."),
     ("tab\there", "A category cannot hold control characters such as a tab")],
)
def test_bad_categories_are_named_and_change_nothing(client, member_of, categories, message):
    project = ProjectFactory(prompt_categories=["Kept"])
    client.force_login(member_of(project, Role.LEAD))
    page = client.post(reverse("project-settings", kwargs={"slug": project.slug}), {**VALID, "prompt_categories": categories})
    assert page.status_code == 200 and message in page.content.decode()
    project.refresh_from_db()
    assert project.prompt_categories == ["Kept"] and not AuditEvent.objects.filter(project=project, target="settings").exists()


COMPLETE = "https://app.prolific.com/submissions/complete?cc={code}"
OPEN_STUDY = {**VALID, "study_open": "on", "study_completion_url": COMPLETE, "study_completion_code": "C1A2B3"}


def test_a_lead_opens_a_study_and_the_change_is_audited(client, member_of):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.LEAD))
    url = reverse("project-settings", kwargs={"slug": project.slug})
    page = client.post(url, {
        **OPEN_STUDY, "study_items": "12", "study_min_gold_accuracy": "0.6", "study_gold_after": "4",
        "study_screenout_url": "app.prolific.com/submissions/complete?cc=SCRN0UT", "study_screenout_code": "SCRN0UT",
    }, follow=True)
    assert "Saved: " in page.content.decode()
    project.refresh_from_db()
    assert (project.study_open, project.study_items, project.study_min_gold_accuracy, project.study_gold_after) == (True, 12, 0.6, 4)
    # An address typed without its scheme is read as https.
    assert project.study_screenout_url == "https://app.prolific.com/submissions/complete?cc=SCRN0UT"
    event = AuditEvent.objects.get(project=project, target="settings")
    assert event.details["study_open"] == {"before": False, "after": True}
    assert f"http://testserver/p/{project.slug}/join/" in page.content.decode()  # the link to give the platform


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"study_completion_url": ""}, "study_completion_url", "An open study needs this address"),
        ({"study_completion_code": ""}, "study_completion_code", "The code the platform gave for this exit."),
        ({"study_completion_url": "http://app.prolific.com/submissions/complete?cc={code}"}, "study_completion_url", "An https:// address."),
        ({"study_completion_url": "javascript:alert(1)"}, "study_completion_url", "Enter a valid URL."),
        ({"study_completion_code": "C1 A2"}, "study_completion_code", "Printable characters only"),
        ({"study_completion_code": "C1\x07"}, "study_completion_code", "Printable characters only"),
        ({"study_completion_url": "https://app.prolific.com/submissions/complete"}, "study_completion_url", "The address must carry its code"),
        ({"study_items": "0"}, "study_items", "greater than or equal to 1"),
        ({"study_items": "100001"}, "study_items", "less than or equal to 100000"),
        ({"study_gold_after": "0"}, "study_gold_after", "greater than or equal to 1"),
        ({"study_min_gold_accuracy": "1.5"}, "study_min_gold_accuracy", "A share from 0 to 1."),
        ({"study_min_gold_accuracy": "0.7"}, "study_screenout_url", "An open study needs this address"),
        ({"study_min_gold_accuracy": "0.7", "study_screenout_url": COMPLETE}, "study_screenout_code", "The code the platform gave"),
    ],
)
def test_bad_study_settings_are_named_and_change_nothing(client, member_of, changes, field, message):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.LEAD))
    before = Project.objects.filter(pk=project.pk).values().get()
    page = client.post(reverse("project-settings", kwargs={"slug": project.slug}), {**OPEN_STUDY, **changes})
    assert page.status_code == 200
    errors = page.context["form"].errors
    assert field in errors and any(message in e for e in errors[field]), errors
    assert Project.objects.filter(pk=project.pk).values().get() == before
