"""Starting sampling and managing the committee through the API, with role checks."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Role
from modeling.models import CommitteeMember, SamplingRun
from tests.factories import MemberFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_lead_starts_sampling_and_reads_its_progress(member_of, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    PromptFactory(project=project)
    lead = client_for(member_of(project, Role.LEAD))
    url = reverse("api-sampling", kwargs={"slug": project.slug})
    with django_capture_on_commit_callbacks() as sent:
        started = lead.post(url, {"limit": 5, "max_new_tokens": 64}, format="json")
    assert started.status_code == 202 and started.json()["state"] == "queued" and len(sent) == 1
    assert SamplingRun.objects.get().config == {"limit": 5, "max_new_tokens": 64, "batch_size": 8}
    again = lead.post(url, {}, format="json")
    assert again.status_code == 409 and "already queued or running" in again.json()["detail"]
    listed = lead.get(url).json()
    assert [r["id"] for r in listed] == [started.json()["id"]] and listed[0]["prompts_total"] == 0


def test_labelers_cannot_start_sampling(member_of):
    project = ProjectFactory()
    labeler = client_for(member_of(project, Role.LABELER))
    response = labeler.post(reverse("api-sampling", kwargs={"slug": project.slug}), {}, format="json")
    assert response.status_code == 403 and not SamplingRun.objects.exists()


def test_staff_register_and_retire_members_others_cannot(member_of):
    admin = client_for(UserFactory(is_staff=True, is_superuser=True))
    created = admin.post(
        "/api/v1/members/",
        {"name": "vllm-llama", "kind": "endpoint", "base_url": "http://gpu-host:8000/v1", "endpoint_model": "llama", "api_key_env": "VLLM_KEY"},
        format="json",
    )
    assert created.status_code == 201, created.content
    member_id = created.json()["id"]
    retired = admin.patch(f"/api/v1/members/{member_id}/", {"is_active": False}, format="json")
    assert retired.status_code == 200 and retired.json()["is_active"] is False and retired.json()["retired_at"]
    bad = admin.post("/api/v1/members/", {"name": "x", "kind": "endpoint"}, format="json")
    assert bad.status_code == 400 and CommitteeMember.objects.count() == 1
    ftp = admin.post("/api/v1/members/", {"name": "y", "kind": "endpoint", "base_url": "ftp://h/v1", "endpoint_model": "m"}, format="json")
    assert ftp.status_code == 400 and "http(s) URL" in ftp.content.decode() and CommitteeMember.objects.count() == 1
    lead = client_for(member_of(ProjectFactory(), Role.LEAD))
    assert lead.get("/api/v1/members/").status_code == 403
    assert lead.patch(f"/api/v1/members/{member_id}/", {"is_active": True}, format="json").status_code == 403


def test_the_member_listing_never_contains_an_api_key(monkeypatch):
    monkeypatch.setenv("VLLM_KEY", "sk-secret-value")
    MemberFactory(name="remote", kind="endpoint", model_path="", base_url="http://h/v1", endpoint_model="m", api_key_env="VLLM_KEY")
    admin = client_for(UserFactory(is_staff=True, is_superuser=True))
    assert "sk-secret-value" not in admin.get("/api/v1/members/").content.decode()
