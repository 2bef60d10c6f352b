"""Rounds through the API and the admin page: role checks, start, retry, cancel, schedule."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Role
from modeling.models import Round, RoundState
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_project_admin_starts_lists_cancels_and_retries_rounds(member_of, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    admin = api(member_of(project, Role.ADMIN))
    url = reverse("api-rounds", kwargs={"slug": project.slug})
    with django_capture_on_commit_callbacks() as sent:
        started = admin.post(url, {"config": {"rm": {"max_steps": 5}}}, format="json")
    assert started.status_code == 202 and len(sent) == 1
    body = started.json()
    assert body["state"] == "queued" and body["config"]["rm"]["max_steps"] == 5 and body["config"]["dpo"]["beta"] == 0.1
    assert admin.post(url, {}, format="json").status_code == 409
    cancel = admin.post(reverse("api-round-cancel", kwargs={"round_id": body["id"]}))
    assert cancel.status_code == 200 and cancel.json()["state"] == "cancelled"
    bad = admin.post(url, {"config": {"epochs": 2}}, format="json")
    assert bad.status_code == 400 and "unknown setting(s)" in bad.json()["detail"]
    with django_capture_on_commit_callbacks() as sent:
        retry = admin.post(reverse("api-round-retry", kwargs={"round_id": body["id"]}))
    assert retry.status_code == 200 and retry.json()["state"] == "queued" and len(sent) == 1
    listed = admin.get(url).json()
    assert [r["number"] for r in listed] == [1]
    detail = admin.get(reverse("api-round", kwargs={"round_id": body["id"]})).json()
    assert "retry queued" in detail["log"]


def test_leads_and_outsiders_cannot_touch_rounds(member_of):
    project = ProjectFactory()
    round_ = Round.objects.create(project=project, number=1, state=RoundState.FAILED)
    lead = api(member_of(project, Role.LEAD))
    assert lead.post(reverse("api-rounds", kwargs={"slug": project.slug}), {}, format="json").status_code == 403
    assert lead.get(reverse("api-round", kwargs={"round_id": round_.pk})).status_code == 404
    assert lead.post(reverse("api-round-retry", kwargs={"round_id": round_.pk})).status_code == 404
    outsider = api(member_of(ProjectFactory(), Role.ADMIN))
    assert outsider.post(reverse("api-round-cancel", kwargs={"round_id": round_.pk})).status_code == 404
    round_.refresh_from_db()
    assert round_.state == RoundState.FAILED and Round.objects.count() == 1


def test_the_rounds_page_starts_a_round_and_saves_the_schedule(client, member_of, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.ADMIN))
    with django_capture_on_commit_callbacks() as sent:
        response = client.post(reverse("round-start", kwargs={"slug": project.slug}))
    assert response.status_code == 302 and Round.objects.filter(project=project).count() == 1 and len(sent) == 1
    page = client.get(reverse("rounds", kwargs={"slug": project.slug})).content.decode()
    assert "Round 1 (quick) queued" in page and 'data-active="1"' in page
    client.post(reverse("round-schedule", kwargs={"slug": project.slug}), {"round_schedule_enabled": "on", "round_min_new_judgments": "50"})
    project.refresh_from_db()
    assert project.round_schedule_enabled and project.round_min_new_judgments == 50
    client.post(reverse("round-schedule", kwargs={"slug": project.slug}), {"round_min_new_judgments": "zero"})
    project.refresh_from_db()
    assert project.round_min_new_judgments == 50  # a bad value changes nothing


def test_the_page_refuses_get_for_actions_and_leads(client, member_of):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.ADMIN))
    assert client.get(reverse("round-start", kwargs={"slug": project.slug})).status_code == 405
    client.force_login(member_of(project, Role.LEAD))
    assert client.post(reverse("round-start", kwargs={"slug": project.slug})).status_code == 403
    assert not Round.objects.exists()


def test_snapshots_download_byte_for_byte_for_leads_but_not_labelers(client, member_of, settings, tmp_path):
    import hashlib

    from annotation.models import DatasetSnapshot

    settings.ARTIFACTS_DIR = tmp_path
    project = ProjectFactory()
    data = b'{"prompt": [], "chosen": [], "rejected": [], "margin": 1.0}\n'
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "rm.jsonl").write_bytes(data)
    round_ = Round.objects.create(project=project, number=3, state=RoundState.SUCCEEDED)
    snap = DatasetSnapshot.objects.create(project=project, format="trl-preference", path="p/rm.jsonl", row_count=1,
                                          sha256=hashlib.sha256(data).hexdigest(), round=round_, purpose="reward_model")
    url = reverse("snapshot-download", kwargs={"slug": project.slug, "snapshot_id": snap.pk})
    client.force_login(member_of(project, Role.LEAD))
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == data
    assert response["X-Content-SHA256"] == snap.sha256
    # named for the round and what it trained, not like an export
    assert f'filename="{project.slug}-round-3-reward_model-trl-preference.jsonl"' in response["Content-Disposition"]
    client.force_login(member_of(project, Role.LABELER))
    assert client.get(url).status_code == 403
    DatasetSnapshot.objects.filter(pk=snap.pk).update(path="../../etc/passwd")
    client.force_login(member_of(project, Role.ADMIN))
    assert client.get(url).status_code == 404
