"""API token authentication: the raw-SQL lookup answers exactly as DRF's own would."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Role
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_valid_token_is_its_user(member_of):
    project = ProjectFactory()
    labeler = member_of(project, Role.LABELER)
    answer = client_with(Token.objects.create(user=labeler).key).get(reverse("api-projects"))
    assert answer.status_code == 200
    assert [p["slug"] for p in answer.json()] == [project.slug]


@pytest.mark.parametrize("key", ["0" * 40, "x", "';DROP/**/TABLE/**/auth_user;--"])
def test_an_unknown_token_is_refused(db, key):
    answer = client_with(key).get(reverse("api-projects"))
    # 403, not 401: session authentication comes first and sends no WWW-Authenticate challenge.
    assert answer.status_code == 403
    assert answer.json()["detail"] == "Invalid token."


def test_a_deleted_token_or_deactivated_user_is_refused_on_the_next_request(member_of):
    project = ProjectFactory()
    labeler = member_of(project, Role.LABELER)
    token = Token.objects.create(user=labeler)
    client = client_with(token.key)
    assert client.get(reverse("api-projects")).status_code == 200
    labeler.is_active = False
    labeler.save()
    refused = client.get(reverse("api-projects"))
    assert refused.status_code == 403 and refused.json()["detail"] == "User inactive or deleted."
    labeler.is_active = True
    labeler.save()
    token.delete()
    assert client.get(reverse("api-projects")).json()["detail"] == "Invalid token."
