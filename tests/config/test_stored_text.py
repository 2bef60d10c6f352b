"""Text from outside that the database cannot store is a 400 or a form error everywhere, not a
500: API bodies (any field, any depth), Django admin JSON fields, numbers past a column's range.
On SQLite here and on PostgreSQL in CI (which refuses NUL in text and jsonb)."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.models import Role
from config.untrusted import json_problem, text_problem
from modeling.models import CommitteeMember
from tests.factories import MemberFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_text_problem_names_nul_and_lone_surrogates_and_passes_real_text():
    assert text_problem("plain, é, 😀, \u2028") is None
    assert "NUL" in text_problem("a\x00b") and "character 2" in text_problem("a\x00b")
    assert "lone surrogate" in text_problem("x\ud800")


def test_json_problem_gives_the_path_of_the_first_problem():
    assert json_problem({"a": [1, {"b": "ok"}]}, max_depth=4) is None
    assert json_problem({"a": [1, {"b": "x\x00"}]}, max_depth=4) == ("a[1].b", "NUL characters are not allowed (character 2)")
    assert json_problem([[[[1]]]], max_depth=3)[1] == "nested deeper than 3 levels"
    assert json_problem({"k": "x" * 11}, max_depth=3, max_chars=10) == ("k", "longer than 10 characters")


@pytest.fixture
def superuser_api():
    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "generation",
    ['{"temperature": 0.5, "note": "a\\u0000b"}', '{"temperature": 0.5, "x\\ud800": 1}', '{"a": ' + "[" * 3000 + "]" * 3000 + "}",
     '{"temperature": 1e999}'],
    ids=["nul-value", "surrogate-key", "deep", "infinity"],
)
def test_a_json_body_the_database_cannot_store_is_a_400_in_any_field(superuser_api, generation):
    body = '{"name": "m", "kind": "endpoint", "base_url": "http://127.0.0.1:9/v1", "endpoint_model": "x", "generation": %s}' % generation
    answer = superuser_api.post(reverse("member-list"), body, content_type="application/json")
    assert answer.status_code == 400 and "JSON parse error" in answer.json()["detail"]
    assert not CommitteeMember.objects.filter(name="m").exists()


def test_a_deep_body_is_a_400_on_the_labeling_hot_path_too(member_of):
    project = ProjectFactory()
    client = APIClient()
    client.force_authenticate(member_of(project, Role.LABELER))
    answer = client.post(reverse("api-submit", kwargs={"assignment_id": 1}), "[" * 3000 + "]" * 3000, content_type="application/json")
    assert answer.status_code == 400 and "nested deeper than 32 levels" in answer.json()["detail"]


@pytest.mark.parametrize(
    "generation",
    ['{"temperature": 0.5, "note": "a\\u0000b"}', '{"temperature": NaN}', "[" * 3000 + "]" * 3000, '{"t": 1e999}'],
    ids=["nul", "nan", "deep", "infinity"],
)
def test_the_django_admin_refuses_json_the_database_cannot_store_as_a_form_error(client, generation):
    member = MemberFactory(name="kept", generation={"temperature": 0.7})
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    form = {
        "name": "kept", "kind": member.kind, "description": "", "weight": "1.0", "is_active": "on", "generation": generation,
        "model_path": member.model_path, "gguf_package": "", "gguf_file": "", "base_url": "", "endpoint_model": "",
        "api_key_env": "", "timeout_s": "120", "max_retries": "2",
    }
    page = client.post(reverse("admin:modeling_committeemember_change", args=[member.pk]), form)
    assert page.status_code == 200 and "errorlist" in page.content.decode()  # the form again, with the error
    member.refresh_from_db()
    assert member.generation == {"temperature": 0.7}


def test_a_round_schedule_past_the_column_is_a_message_not_a_database_error(client, member_of):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.ADMIN))
    page = client.post(reverse("round-schedule", kwargs={"slug": project.slug}), {"round_min_new_judgments": "99999999999"}, follow=True)
    assert page.status_code == 200 and "from 1 to 10,000,000" in page.content.decode()
    project.refresh_from_db()
    assert project.round_min_new_judgments == 200
