"""Who reaches which page: every role against every project page."""

import pytest
from django.urls import reverse

from annotation.models import Role
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

PAGES = ("home", "label", "project", "rounds", "admin:index")
LOGIN = "login-redirect"

# status code per page for each kind of caller
MATRIX = {
    "anonymous": {"home": LOGIN, "label": LOGIN, "project": LOGIN, "rounds": LOGIN, "admin:index": LOGIN},
    "labeler of another project": {"home": 200, "label": 404, "project": 404, "rounds": 404, "admin:index": LOGIN},
    "labeler": {"home": 200, "label": 200, "project": 403, "rounds": 403, "admin:index": LOGIN},
    "lead": {"home": 200, "label": 200, "project": 200, "rounds": 403, "admin:index": LOGIN},
    "admin": {"home": 200, "label": 200, "project": 200, "rounds": 200, "admin:index": LOGIN},
    "superuser": {"home": 200, "label": 200, "project": 200, "rounds": 200, "admin:index": 200},
}


def _caller(kind, project):
    if kind == "anonymous":
        return None
    if kind == "superuser":
        return UserFactory(is_staff=True, is_superuser=True)
    user = UserFactory()
    if kind == "labeler of another project":
        MembershipFactory(user=user, project=ProjectFactory(), role=Role.LABELER)
    else:
        MembershipFactory(user=user, project=project, role=Role(kind))
    return user


def _url(page, project):
    if page in ("home", "admin:index"):
        return reverse(page)
    return reverse(page, kwargs={"slug": project.slug})


@pytest.mark.parametrize("kind", MATRIX)
def test_each_role_reaches_exactly_its_pages(client, kind):
    project = ProjectFactory()
    user = _caller(kind, project)
    if user is not None:
        client.force_login(user)
    for page in PAGES:
        response = client.get(_url(page, project))
        expected = MATRIX[kind][page]
        if expected == LOGIN:
            assert response.status_code == 302, (kind, page, response.status_code)
            assert "login" in response["Location"], (kind, page, response["Location"])
        else:
            assert response.status_code == expected, (kind, page, response.status_code)


def test_a_labeler_sees_only_labeling_links_on_the_home_page(client, project, member_of):
    labeler = member_of(project, Role.LABELER)
    client.force_login(labeler)
    html = client.get(reverse("home")).content.decode()
    assert reverse("label", kwargs={"slug": project.slug}) in html
    assert f'href="{reverse("project", kwargs={"slug": project.slug})}"' not in html
    assert f'href="{reverse("rounds", kwargs={"slug": project.slug})}"' not in html
    assert f'href="{reverse("admin:index")}"' not in html


def test_a_lead_in_one_project_is_only_a_labeler_in_another(client, member_of):
    led, labeled = ProjectFactory(), ProjectFactory()
    user = member_of(led, Role.LEAD)
    MembershipFactory(user=user, project=labeled, role=Role.LABELER)
    client.force_login(user)
    assert client.get(reverse("project", kwargs={"slug": led.slug})).status_code == 200
    assert client.get(reverse("project", kwargs={"slug": labeled.slug})).status_code == 403


def test_login_and_logout_pages_work(client, project, member_of):
    user = member_of(project, Role.LABELER, username="ada")
    assert client.get(reverse("login")).status_code == 200
    response = client.post(reverse("login"), {"username": "ada", "password": "pw"})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("home")).status_code == 302
    assert user.is_authenticated


def test_a_wrong_password_is_refused(client, project, member_of):
    member_of(project, Role.LABELER, username="bob")
    response = client.post(reverse("login"), {"username": "bob", "password": "nope"})
    assert response.status_code == 200
    assert b"didn't match" in response.content
