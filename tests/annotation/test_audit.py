"""The audit log: who did what to data or models, written by the paths that do it, read by admins."""

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import AuditAction, AuditEvent, DatasetSnapshot, JobState, Membership, Role
from modeling.models import CommitteeMember, MemberKind, Round
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def events(**filters):
    return list(AuditEvent.objects.filter(**filters).order_by("id").values_list("actor_name", "action", "target"))


@pytest.fixture
def admin_client():
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return admin, client


def test_roles_granted_changed_and_revoked_through_the_admin_are_logged_with_who(admin_client):
    admin, client = admin_client
    project = ProjectFactory()
    ada = UserFactory(username="ada")
    add = client.post(reverse("admin:annotation_membership_add"), {"user": ada.pk, "project": project.pk, "role": Role.LABELER})
    assert add.status_code == 302
    membership = Membership.objects.get(user=ada)
    client.post(reverse("admin:annotation_membership_change", args=[membership.pk]), {"user": ada.pk, "project": project.pk, "role": Role.LEAD})
    client.post(reverse("admin:annotation_membership_delete", args=[membership.pk]), {"post": "yes"})
    assert events(project=project) == [
        ("root", AuditAction.ROLE_GRANTED, "ada"), ("root", AuditAction.ROLE_CHANGED, "ada"), ("root", AuditAction.ROLE_REVOKED, "ada"),
    ]
    changed = AuditEvent.objects.get(action=AuditAction.ROLE_CHANGED)
    assert changed.details == {"from": "labeler", "to": "lead"} and len(changed.request_id) == 32


def test_an_unchanged_save_is_not_an_event(db):
    project = ProjectFactory()
    membership = Membership.objects.create(project=project, user=UserFactory(), role=Role.LABELER)
    membership.save()
    assert [a for _, a, _ in events()] == [AuditAction.ROLE_GRANTED]


def test_members_added_and_retired_through_the_api_are_logged(admin_client):
    admin, _ = admin_client
    api = APIClient()
    api.force_authenticate(admin)
    created = api.post("/api/v1/members/", {"name": "gpt-x", "kind": "endpoint", "base_url": "http://vllm:8000/v1", "endpoint_model": "x"}, format="json")
    assert created.status_code == 201, created.content
    member_id = created.json()["id"]
    assert api.patch(f"/api/v1/members/{member_id}/", {"is_active": False}, format="json").status_code == 200
    assert api.patch(f"/api/v1/members/{member_id}/", {"weight": 2.0}, format="json").status_code == 200
    assert events() == [
        ("root", AuditAction.MEMBER_ADDED, "gpt-x"), ("root", AuditAction.MEMBER_RETIRED, "gpt-x"), ("root", AuditAction.MEMBER_CHANGED, "gpt-x"),
    ]
    assert AuditEvent.objects.get(action=AuditAction.MEMBER_CHANGED).details == {"weight": {"from": 1.0, "to": 2.0}}


def test_a_policy_a_worker_registers_is_logged_as_system(db):
    CommitteeMember.objects.create(name="policy-r1", kind=MemberKind.LOCAL, model_path="/m")
    assert events() == [("system", AuditAction.MEMBER_ADDED, "policy-r1")]


def test_rounds_started_cancelled_and_retried_from_the_page_are_logged(admin_client):
    admin, client = admin_client
    project = ProjectFactory()
    client.post(reverse("round-start", args=[project.slug]))
    round_ = Round.objects.get(project=project)
    client.post(reverse("round-cancel", args=[project.slug, round_.pk]))
    client.post(reverse("round-retry", args=[project.slug, round_.pk]))
    assert events(project=project) == [
        ("root", AuditAction.ROUND_STARTED, "round 1"), ("root", AuditAction.ROUND_CANCELLED, "round 1"), ("root", AuditAction.ROUND_RETRIED, "round 1"),
    ]


def test_sampling_started_through_the_api_is_logged_with_its_settings(member_of):
    from tests.factories import PromptFactory

    project = ProjectFactory()
    PromptFactory(project=project)
    lead = member_of(project, Role.LEAD, username="lena")
    client = APIClient()
    client.force_authenticate(lead)
    answer = client.post(reverse("api-sampling", args=[project.slug]), {"limit": 5, "max_new_tokens": 64}, format="json")
    assert answer.status_code == 202
    assert events(project=project, action=AuditAction.SAMPLING_STARTED) == [("lena", AuditAction.SAMPLING_STARTED, f"sampling {answer.json()['id']}")]
    assert AuditEvent.objects.get(project=project, action=AuditAction.SAMPLING_STARTED).details["limit"] == 5


def test_a_download_is_logged_with_the_files_checksum(member_of, settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path
    project = ProjectFactory()
    lead = member_of(project, Role.LEAD, username="lea")
    (tmp_path / "x.jsonl").write_text("{}\n")
    snapshot = DatasetSnapshot.objects.create(project=project, format="trl-preference", path="x.jsonl", state=JobState.SUCCEEDED, sha256="ab" * 32, row_count=1)
    client = Client()
    client.force_login(lead)
    assert client.get(reverse("snapshot-download", args=[project.slug, snapshot.pk])).status_code == 200
    (event,) = AuditEvent.objects.filter(action=AuditAction.SNAPSHOT_DOWNLOADED)
    assert (event.actor_name, event.project, event.details["sha256"]) == ("lea", project, "ab" * 32)


def test_only_admins_read_the_log_and_what_they_read_is_escaped(admin_client, member_of):
    admin, client = admin_client
    project = ProjectFactory(name="<img src=x onerror=alert(1)>")
    lead = member_of(project, Role.LEAD, username="lea")
    AuditEvent.objects.create(actor_name="x", action=AuditAction.EXPORT_STARTED, project=project, target="<script>alert(1)</script>", details={"k": "<b>"})
    page = client.get(reverse("audit-log"), {"action": AuditAction.EXPORT_STARTED})
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html and "<img src=x" not in html
    as_lead = Client()
    as_lead.force_login(lead)
    assert as_lead.get(reverse("audit-log")).status_code == 302  # to the admin login: leads don't read it
    # the admin shows it read-only
    assert client.get(reverse("admin:annotation_auditevent_changelist")).status_code == 200
    assert client.get(reverse("admin:annotation_auditevent_add")).status_code == 403
    assert User.objects.filter(username="lea").exists()
