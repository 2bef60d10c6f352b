"""Untrusted text stays text on every page that shows it.

Model output, prompts, edits, rationales, member names, project names, worker errors: each is
seeded with markup carrying a marker, then every page an admin can open (the app's pages and the
Django admin's lists and forms) is parsed as a browser would: no element may come from a payload.
"""

from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import AuditAction, AuditEvent, DatasetSnapshot, JobState, Response, ResponseSource, Role
from modeling.models import Round, RoundState, SamplingRun
from tests.factories import ComparisonFactory, JudgmentFactory, MemberFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db

MARK = "pwn7"
PAYLOADS = [
    f'<script>window.{MARK}=1</script>',
    f'<img src=x onerror="window.{MARK}=2">',
    f'<a href="javascript:window.{MARK}=3" data-{MARK}="a">link</a>',
    f'"><svg onload="window.{MARK}=4">',
    f"'><b data-{MARK}='b'>x</b>",
    f"[md](javascript:window.{MARK}=5)",
]
EVIL = " ".join(PAYLOADS)


class _Live(HTMLParser):
    """Elements and attributes that a payload produced: a marker outside of text."""

    def __init__(self):
        super().__init__()
        self.found, self._script = [], False

    def handle_starttag(self, tag, attrs):
        self._script = tag == "script"
        for name, value in attrs:
            value = value or ""
            scheme = value.strip().lower().startswith(("javascript:", "data:"))
            if MARK in name or (MARK in value and (name.startswith("on") or (name in {"href", "src"} and scheme))):
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag):
        self._script = False

    def handle_data(self, data):
        if self._script and MARK in data:
            self.found.append(f"<script>{data[:60]}")


def live_payloads(html: str) -> list[str]:
    parser = _Live()
    parser.feed(html)
    return parser.found


@pytest.fixture
def poisoned(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path
    project = ProjectFactory(name="Proj " + PAYLOADS[4], description=EVIL, ask_rationale=True)
    member = MemberFactory(name="m " + PAYLOADS[1][:60])
    prompt = PromptFactory(project=project, category="cat" + PAYLOADS[4], messages=[{"role": "system", "content": EVIL}, {"role": "user", "content": EVIL}])
    comparison = ComparisonFactory(prompt=prompt, response_a__text="A " + EVIL, response_a__member=member, response_b__text="B " + EVIL)
    labeler = UserFactory(username="ada")
    edit = Response.objects.create(prompt=prompt, source=ResponseSource.HUMAN_EDIT, text="E " + EVIL, parent=comparison.response_a, author=labeler, edit_distance=3)
    judgment = JudgmentFactory(assignment__comparison=comparison, assignment__labeler=labeler, rationale=EVIL, edited_response=edit)
    round_ = Round.objects.create(project=project, number=1, state=RoundState.FAILED, error=EVIL, log=EVIL)
    SamplingRun.objects.create(project=project, state=JobState.FAILED, error=EVIL, member_errors={member.name: EVIL})
    (tmp_path / "x.jsonl").write_text("{}\n")
    snapshot = DatasetSnapshot.objects.create(project=project, format="raw", path="x.jsonl", state=JobState.FAILED, error=EVIL, card=EVIL)
    AuditEvent.objects.create(actor_name="x", action=AuditAction.EXPORT_STARTED, project=project, target=EVIL[:200], details={"why": EVIL})
    return project, comparison, judgment, round_, snapshot, member, prompt


def test_no_page_an_admin_opens_runs_a_payload(poisoned):
    project, comparison, judgment, round_, snapshot, member, prompt = poisoned
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    # (url, shows seeded text): pages that show some payload must show it as text, not drop it
    pages = [
        (reverse("home"), True), (reverse("project", args=[project.slug]), True), (reverse("label", args=[project.slug]), True),
        (reverse("quality", args=[project.slug]), True), (reverse("leaderboard", args=[project.slug]), True),
        (reverse("rounds", args=[project.slug]), True), (reverse("audit-log"), True),
        (reverse("admin:annotation_auditevent_changelist"), True),
    ]
    for model, obj in [
        ("annotation_project", project), ("annotation_prompt", prompt), ("annotation_response", comparison.response_a),
        ("annotation_comparison", comparison), ("annotation_judgment", judgment), ("annotation_datasetsnapshot", snapshot),
        ("modeling_committeemember", member), ("modeling_round", round_),
    ]:
        pages += [(reverse(f"admin:{model}_changelist"), False), (reverse(f"admin:{model}_change", args=[obj.pk]), True)]
    for url, shows in pages:
        answer = client.get(url)
        assert answer.status_code == 200, url
        html = answer.content.decode()
        assert live_payloads(html) == [], url
        assert MARK in html or not shows, f"{url} showed none of the seeded text"


def test_the_api_returns_rendered_text_sanitized_for_the_labeler(poisoned):
    project, comparison, *_ = poisoned
    labeler = UserFactory(username="bob")
    from annotation.models import Membership

    Membership.objects.create(project=project, user=labeler, role=Role.LABELER)
    client = Client()
    client.force_login(labeler)
    task = client.post(reverse("api-next", args=[project.slug]), {}, content_type="application/json").json()
    for part in [task["left"]["html"], task["right"]["html"], *[m["html"] for m in task["conversation"]]]:
        assert live_payloads(part) == []
        assert MARK in part  # shown as text, not dropped
