"""The committee in the app: staff add, reweigh, retire and test members with one prompt, every
change audited; leads see the active members; a test's answer comes from a worker."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from annotation.models import AuditAction, AuditEvent, Role
from modeling.ml.generation import Generation
from modeling.models import CommitteeMember, JobState, MemberKind, MemberTest
from modeling.services import MemberTestBusy, MemberTestError, member_test_execute, member_test_start
from modeling.services.members import MEMBER_TEST_MAX_ANSWER_CHARS, MEMBER_TEST_MAX_NEW_TOKENS
from tests.factories import MemberFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.modeling.chat_server import ChatServer

pytestmark = pytest.mark.django_db


class FakeBackend:
    def __init__(self, text="Hello there.", error=""):
        self.text, self.error, self.calls = text, error, []

    def generate(self, conversations, params):
        self.calls.append((conversations, params))
        return [Generation(text=self.text, prompt_tokens=5, completion_tokens=3, finish_reason="stop", latency_ms=10, error=self.error)]


@pytest.fixture
def staff_client():
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True))
    return client


def test_a_test_is_queued_on_the_gpu_queue_for_a_local_member_and_default_for_an_endpoint(django_capture_on_commit_callbacks, monkeypatch):
    from modeling import tasks

    sent = []
    monkeypatch.setattr(tasks.sample_member_test, "apply_async", lambda args, **options: sent.append((args, options)))
    local = MemberFactory(name="local")
    remote = MemberFactory(name="remote", kind=MemberKind.ENDPOINT, model_path="", base_url="http://h:8000/v1", endpoint_model="m")
    with django_capture_on_commit_callbacks(execute=True):
        local_test = member_test_start(member=local, prompt="  Say hi.  ")
        remote_test = member_test_start(member=remote, prompt="Say hi.")
    assert local.last_test["state"] == "queued" and local.last_test["prompt"] == "Say hi."
    assert sent == [((local_test.pk,), {"queue": "gpu"}), ((remote_test.pk,), {"queue": "default"})]


def test_a_second_test_waits_for_the_first_unless_the_first_went_stale():
    member = MemberFactory()
    member_test_start(member=member, prompt="one")
    with pytest.raises(MemberTestBusy, match="already queued"):
        member_test_start(member=member, prompt="two")
    MemberTest.objects.filter(member=member).update(created_at=timezone.now() - timedelta(minutes=16))
    assert member_test_start(member=member, prompt="two").prompt == "two"
    first = MemberTest.objects.get(prompt="one")
    assert first.state == JobState.FAILED and "replaced by a newer test" in first.error
    assert member.last_test["prompt"] == "two"


@pytest.mark.parametrize("prompt, said", [("", "Write a prompt"), ("x" * 2001, "longer than 2,000"), ("a\x00b", "cannot be sent")])
def test_a_bad_prompt_is_refused_and_changes_nothing(prompt, said):
    member = MemberFactory()
    with pytest.raises(MemberTestError, match=said):
        member_test_start(member=member, prompt=prompt)
    assert member.last_test == {} and not MemberTest.objects.exists()


def test_the_worker_answers_a_test_once_with_a_short_answer_and_timings():
    member = MemberFactory(generation={"max_new_tokens": 512, "temperature": 0.2})
    job = member_test_start(member=member, prompt="Say hi.")
    backend = FakeBackend()
    assert member_test_execute(test_id=job.pk, backend_loader=lambda m: backend)["state"] == "succeeded"
    test = member.last_test
    assert test["state"] == JobState.SUCCEEDED and test["answer"] == "Hello there." and test["completion_tokens"] == 3
    assert {"load_s", "answer_s", "tokens_per_s", "finished_at"} <= test.keys()
    assert "weights" not in test  # the member's file as given
    [(conversations, params)] = backend.calls
    assert conversations == [[{"role": "user", "content": "Say hi."}]]
    assert params.max_new_tokens == MEMBER_TEST_MAX_NEW_TOKENS and params.temperature == 0.2
    # A second delivery of the same message finds the test answered and leaves it alone.
    assert "skipped" in member_test_execute(test_id=job.pk, backend_loader=lambda m: FakeBackend("other"))
    assert member.last_test["answer"] == "Hello there." and MemberTest.objects.get().attempts == 1


def test_the_message_of_a_replaced_test_does_not_run_it():
    member = MemberFactory()
    old = member_test_start(member=member, prompt="old")
    MemberTest.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=16))
    new = member_test_start(member=member, prompt="new")
    assert "skipped" in member_test_execute(test_id=old.pk, backend_loader=lambda m: FakeBackend())
    assert member.last_test["id"] == new.pk and member.last_test["state"] == "queued"


def test_the_watchdog_resends_a_lost_test_to_its_queue_and_fails_one_whose_worker_died(django_capture_on_commit_callbacks, monkeypatch):
    from modeling import tasks
    from modeling.services.watchdog import jobs_watchdog

    sent = []
    monkeypatch.setattr(tasks.sample_member_test, "apply_async", lambda args, **options: sent.append((args, options)))
    lost = member_test_start(member=MemberFactory(kind=MemberKind.ENDPOINT, model_path="", base_url="http://h/v1", endpoint_model="m"), prompt="a")
    dead = member_test_start(member=MemberFactory(), prompt="b")
    MemberTest.objects.filter(pk=dead.pk).update(state=JobState.RUNNING, heartbeat_at=timezone.now() - timedelta(minutes=11))
    with django_capture_on_commit_callbacks(execute=True):
        report = jobs_watchdog(now=timezone.now() + timedelta(minutes=11))["membertest"]
    assert report == {"failed_stale": [dead.pk], "resent": [lost.pk]}
    assert sent == [((lost.pk,), {"queue": "default"})]  # an endpoint's test goes back to the default worker
    dead.refresh_from_db()
    assert dead.state == JobState.FAILED and "worker lost while testing" in dead.error


@pytest.mark.parametrize("backend, said", [
    (FakeBackend(text="bad \x00 byte"), "NUL"),
    (FakeBackend(error="not JSON"), "not JSON"),
])
def test_an_unusable_answer_fails_the_test_with_its_reason(backend, said):
    member = MemberFactory()
    job = member_test_start(member=member, prompt="Say hi.")
    member_test_execute(test_id=job.pk, backend_loader=lambda m: backend)
    assert member.last_test["state"] == JobState.FAILED and said in member.last_test["error"]


def test_a_member_that_cannot_load_fails_its_test_with_the_reason():
    member = MemberFactory(model_path="/no/such/model")
    job = member_test_start(member=member, prompt="Say hi.")

    def loader(m):
        raise OSError("/no/such/model is not a model directory")

    member_test_execute(test_id=job.pk, backend_loader=loader)
    assert member.last_test["state"] == "failed" and "OSError: /no/such/model" in member.last_test["error"]


def test_a_long_answer_is_kept_up_to_its_limit():
    member = MemberFactory()
    job = member_test_start(member=member, prompt="Say hi.")
    member_test_execute(test_id=job.pk, backend_loader=lambda m: FakeBackend("y" * 10_000))
    assert len(member.last_test["answer"]) == MEMBER_TEST_MAX_ANSWER_CHARS and member.last_test["answer_truncated"]


def test_an_endpoint_member_is_tested_against_a_real_server_by_the_default_backend():
    with ChatServer() as server:
        member = MemberFactory(kind=MemberKind.ENDPOINT, model_path="", base_url=server.url, endpoint_model="served")
        job = member_test_start(member=member, prompt="Say hi.")
        member_test_execute(test_id=job.pk)
    assert member.last_test["answer"] == "echo (1 messages): Say hi."
    assert server.requests[0]["body"]["max_tokens"] == MEMBER_TEST_MAX_NEW_TOKENS


def test_the_api_queues_a_test_and_shows_it(staff_client):
    member = MemberFactory()
    answer = staff_client.post(f"/api/v1/members/{member.pk}/test/", {"prompt": "Say hi."}, content_type="application/json")
    assert answer.status_code == 202 and answer.json()["last_test"]["state"] == "queued"
    assert answer.json()["last_test"]["id"] == MemberTest.objects.get().pk
    again = staff_client.post(f"/api/v1/members/{member.pk}/test/", {"prompt": "Again."}, content_type="application/json")
    assert again.status_code == 409 and "already queued" in again.json()["detail"]
    blank = staff_client.post(f"/api/v1/members/{member.pk}/test/", {"prompt": " "}, content_type="application/json")
    assert blank.status_code == 400


# --- the page -----------------------------------------------------------------------------------

def _add(client, **fields):
    body = {"name": "new-one", "kind": "local", "weight": "1", "timeout_s": "120", "temperature": "0.7", "top_p": "0.9",
            "max_new_tokens": "128", **fields}
    return client.post("/committee/add/", body)


def test_staff_add_a_local_member_from_the_page_and_it_is_audited(staff_client):
    answer = _add(staff_client, model_path="/models/llama", gguf_file="llama.Q4.gguf", base_url="http://ignored/v1")
    assert answer.status_code == 302
    member = CommitteeMember.objects.get(name="new-one")
    assert (member.kind, member.model_path, member.gguf_file, member.base_url) == ("local", "/models/llama", "llama.Q4.gguf", "")
    assert member.generation == {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 128}
    assert AuditEvent.objects.filter(action=AuditAction.MEMBER_ADDED, target="new-one", actor_name="root").exists()
    page = staff_client.get("/committee/").content.decode()
    assert "new-one" in page and "/models/llama" in page


@pytest.mark.parametrize("fields, said", [
    ({"kind": "endpoint", "endpoint_model": "m"}, "base_url"),
    ({"kind": "endpoint", "base_url": "ftp://h/v1", "endpoint_model": "m"}, "http(s) URL"),
    ({"kind": "endpoint", "base_url": "http://h/v1", "endpoint_model": "m", "api_key_env": "SECRET_KEY"}, "Arbiter&#x27;s own settings"),
    ({"kind": "endpoint", "base_url": "http://h/v1", "endpoint_model": "m", "api_key_env": "my key"}, "capital letters"),
    ({"kind": "local"}, "needs its model directory"),
    ({"kind": "endpoint", "base_url": "http://h/v1"}, "needs its base URL and the model name"),
    ({"kind": "checkpoint", "model_path": "/x"}, "valid choice"),
    ({"model_path": "/x", "weight": "0"}, "weight"),
    ({"model_path": "/x", "temperature": "nan"}, "temperature"),
])
def test_a_bad_member_is_refused_with_its_reason_and_nothing_is_added(staff_client, fields, said):
    answer = _add(staff_client, **fields)
    assert answer.status_code == 400
    assert said in answer.content.decode()
    assert not CommitteeMember.objects.filter(name="new-one").exists()


def test_staff_reweigh_and_retire_a_member_and_both_are_audited(staff_client):
    member = MemberFactory(name="m1")
    answer = staff_client.post(f"/committee/{member.pk}/settings/", {"weight": "3", "temperature": "1.0", "top_p": "0.95", "max_new_tokens": "64"})
    assert answer.status_code == 302
    member.refresh_from_db()
    assert member.weight == 3 and member.generation == {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 64}
    changed = AuditEvent.objects.get(action=AuditAction.MEMBER_CHANGED, target="m1")
    assert changed.details["weight"] == {"from": 1.0, "to": 3.0}
    refused = staff_client.post(f"/committee/{member.pk}/settings/", {"weight": "-1", "temperature": "1", "top_p": "1", "max_new_tokens": "1"}, follow=True)
    assert "m1 was not changed" in refused.content.decode()
    member.refresh_from_db()
    assert member.weight == 3

    staff_client.post(f"/committee/{member.pk}/active/", {"active": "0"})
    member.refresh_from_db()
    assert not member.is_active and member.retired_at is not None
    assert AuditEvent.objects.filter(action=AuditAction.MEMBER_RETIRED, target="m1").exists()
    staff_client.post(f"/committee/{member.pk}/active/", {"active": "1"})
    member.refresh_from_db()
    assert member.is_active and AuditEvent.objects.filter(action=AuditAction.MEMBER_REACTIVATED, target="m1").exists()


def test_the_test_form_queues_a_test_and_the_page_shows_its_answer(staff_client):
    member = MemberFactory(name="m1")
    staff_client.post(f"/committee/{member.pk}/test/", {"prompt": "Say hi."})
    member.refresh_from_db()
    assert member.last_test["state"] == "queued"
    assert "Queued on the" in staff_client.get("/committee/").content.decode()
    member_test_execute(test_id=member.last_test["id"], backend_loader=lambda m: FakeBackend("<b>hi</b>"))
    page = staff_client.get("/committee/").content.decode()
    assert "&lt;b&gt;hi&lt;/b&gt;" in page and "<b>hi</b>" not in page  # model output is text


def test_a_test_says_when_llamacpp_served_a_copy_of_the_members_file(staff_client):
    member = MemberFactory(name="m1")
    staff_client.post(f"/committee/{member.pk}/test/", {"prompt": "Say hi."})
    member.refresh_from_db()
    backend = FakeBackend()
    backend.weights = "a Q8_0 copy of the Q4_1 file (no fast Q4_1 kernels in this llama.cpp build)"
    member_test_execute(test_id=member.last_test["id"], backend_loader=lambda m: backend)
    assert member.last_test["weights"] == backend.weights
    page = staff_client.get("/committee/").content.decode()
    assert "served from a Q8_0 copy of the Q4_1 file" in page
    assert staff_client.get(f"/api/v1/members/{member.pk}/").json()["last_test"]["weights"] == backend.weights


def test_a_lead_sees_the_active_members_on_the_project_page_but_not_the_staff_page(lead_client):
    MemberFactory(name="active-one", weight=2)
    MemberFactory(name="retired-one", is_active=False)
    page = lead_client.get(f"/p/{lead_client.project.slug}/").content.decode()
    assert "active-one (2)" in page and "retired-one" not in page and "staff add them" in page
    assert lead_client.get("/committee/").status_code == 302  # to the admin login


# --- a project's committee (leads) ----------------------------------------------------------------

@pytest.fixture
def lead_client():
    project = ProjectFactory()
    lead = UserFactory(username="lea")
    MembershipFactory(project=project, user=lead, role=Role.LEAD)
    client = Client()
    client.force_login(lead)
    client.project = project
    return client


def test_a_lead_sets_a_members_weight_in_the_project_audited_and_sampling_draws_by_it(lead_client):
    from modeling.selectors import project_committee
    from modeling.services.sampling import _draw_pair
    from tests.factories import PromptFactory

    project = lead_client.project
    a, b, c = MemberFactory(name="a"), MemberFactory(name="b"), MemberFactory(name="c", weight=5)
    answer = lead_client.post(f"/p/{project.slug}/committee/{c.pk}/weight/", {"weight": "0"})
    assert answer.status_code == 302 and answer["Location"].endswith(f"/p/{project.slug}/#committee")
    event = AuditEvent.objects.get(action=AuditAction.MEMBER_CHANGED, target="c", project=project)
    assert event.details == {"project_weight": {"from": 5.0, "to": 0.0}} and event.actor_name == "lea"
    committee = {m.name: (m.project_weight, m.project_weight_set) for m in project_committee(project=project)}
    assert committee == {"a": (1.0, False), "b": (1.0, False), "c": (0.0, True)}
    assert project_committee(project=ProjectFactory())[2].project_weight == 5  # other projects keep the member's weight
    members = [m for m in project_committee(project=project) if m.project_weight > 0]
    for prompt in PromptFactory.create_batch(20, project=project):
        assert {m.name for m in _draw_pair(prompt, members)} == {"a", "b"}


@pytest.mark.parametrize("weight", ["-1", "nan", "abc", "1001"])
def test_a_bad_project_weight_is_refused_and_changes_nothing(lead_client, weight):
    member = MemberFactory(name="a")
    page = lead_client.post(f"/p/{lead_client.project.slug}/committee/{member.pk}/weight/", {"weight": weight}, follow=True)
    assert "a was not changed" in page.content.decode()
    assert not member.seats.exists() and not AuditEvent.objects.filter(action=AuditAction.MEMBER_CHANGED).exists()


def test_sampling_leaves_out_members_weighted_0_in_the_project(lead_client):
    from modeling.models import SamplingRun
    from modeling.services import member_set_project_weight, sampling_execute
    from tests.factories import PromptFactory

    project = lead_client.project
    PromptFactory(project=project)
    a, b = MemberFactory(name="a"), MemberFactory(name="b")
    member_set_project_weight(project=project, member=b, weight=0)
    run = SamplingRun.objects.create(project=project, config={"limit": None, "max_new_tokens": None, "batch_size": 8})
    run = sampling_execute(run_id=run.pk, backend_loader=lambda m: FakeBackend())
    assert run.state == JobState.FAILED and "two active members with a weight above 0 in this project" in run.error


def test_a_lead_tests_a_member_and_follows_it_on_the_project_committee_api(lead_client):
    project = lead_client.project
    member = MemberFactory(name="a")
    lead_client.post(f"/p/{project.slug}/committee/{member.pk}/test/", {"prompt": "Say hi."})
    member.refresh_from_db()
    assert member.last_test["state"] == "queued" and member.last_test["requested_by"] == "lea"
    member_test_execute(test_id=member.last_test["id"], backend_loader=lambda m: FakeBackend())
    listed = lead_client.get(f"/api/v1/projects/{project.slug}/committee/").json()
    assert [m["name"] for m in listed] == ["a"] and listed[0]["last_test"]["answer"] == "Hello there."
    assert "model_path" not in listed[0]  # where a member lives is for staff
    page = lead_client.get(f"/p/{project.slug}/").content.decode()
    assert "Hello there." in page and f"/p/{project.slug}/committee/{member.pk}/weight/" in page


@pytest.mark.parametrize("generation, said", [
    ({"temperature": -1}, "temperature: expected a number from 0 up, got -1"),
    ({"top_p": 1.5}, "top_p: expected a number from 0 to 1, got 1.5"),
    ({"max_new_tokens": True}, "max_new_tokens: expected a whole number from 1 up, got True"),
    ({"seed": 1}, "unknown setting(s) ['seed']"),
])
def test_the_api_refuses_generation_settings_outside_their_schema(staff_client, generation, said):
    answer = staff_client.post("/api/v1/members/", {"name": "x", "kind": "local", "model_path": "/m", "generation": generation},
                               content_type="application/json")
    assert answer.status_code == 400 and answer.json()["generation"][0].startswith(said)
    assert not CommitteeMember.objects.filter(name="x").exists()


def test_a_member_llamacpp_cannot_load_fails_its_test_naming_the_engine_and_why(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    chosen = MemberFactory(name="chosen", model_path=str(tmp_path), gguf_file="broken.gguf", engine="llama.cpp")
    auto = MemberFactory(name="auto", model_path=str(tmp_path), gguf_file="broken.gguf")
    for member in (chosen, auto):
        member_test_execute(test_id=member_test_start(member=member, prompt="Say hi.").pk)
    assert chosen.last_test["state"] == "failed" and chosen.last_test["engine"] == "llama.cpp"
    assert "llama.cpp could not load broken.gguf" in chosen.last_test["error"]
    # auto tried transformers too, and says why each engine failed
    assert "llama.cpp could not load broken.gguf" in auto.last_test["error"] and "hf" in auto.last_test["error"]


def test_the_committee_page_and_api_show_each_members_engine(staff_client):
    gguf = MemberFactory(name="gguf", gguf_file="m.gguf")
    folder = MemberFactory(name="folder")
    remote = MemberFactory(name="remote", kind=MemberKind.ENDPOINT, model_path="", base_url="http://h:8000/v1", endpoint_model="m")
    page = staff_client.get("/committee/").content.decode()
    for member, engine in ((gguf, "llama.cpp"), (folder, "hf"), (remote, "openai")):
        row = page.split(f'id="member-{member.pk}"')[1].split("</tr>")[0]
        assert f"Engine: <strong>{engine}</strong>" in row
    listed = {m["name"]: (m["engine"], m["engine_planned"]) for m in staff_client.get("/api/v1/members/").json()["results"]}
    assert listed["gguf"] == ("auto", "llama.cpp") and listed["folder"] == ("auto", "hf") and listed["remote"] == ("auto", "openai")
    refused = staff_client.patch(f"/api/v1/members/{folder.pk}/", {"engine": "llama.cpp"}, content_type="application/json")
    assert refused.status_code == 400 and CommitteeMember.objects.get(pk=folder.pk).engine == "auto"
