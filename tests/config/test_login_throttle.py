"""Login throttling (config/login.py): failures per username and per address, a 429 while
locked without the password being checked, the lock lifting when the window passes."""

import time
from unittest import mock

import pytest
from django.contrib.auth import forms as auth_forms
from django.test import Client
from django.urls import reverse

from config.login import login_failure_record, login_locked_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LOCKED = b"Too many failed login attempts"


@pytest.fixture
def limits(settings):
    settings.LOGIN_MAX_FAILURES_PER_USERNAME = 5
    settings.LOGIN_MAX_FAILURES_PER_IP = 20
    settings.LOGIN_FAILURE_WINDOW_S = 15 * 60
    settings.NUM_PROXIES = 0
    return settings


def attempt(client, username, password, url="login", **extra):
    return client.post(reverse(url), {"username": username, "password": password}, **extra)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_five_wrong_passwords_lock_the_username_with_a_429_and_a_message(limits):
    UserFactory(username="ada")
    client = Client()
    for _ in range(5):
        assert attempt(client, "ada", "wrong").status_code == 200
    refused = attempt(client, "ada", "wrong")
    assert refused.status_code == 429
    assert LOCKED in refused.content and b"Try again in 15 minutes" in refused.content
    assert b'role="alert"' in refused.content  # on the form, where the person is looking
    assert 890 <= int(refused["Retry-After"]) <= 900


def test_the_right_password_is_refused_while_locked_and_is_not_even_checked(limits):
    UserFactory(username="ada")
    client = Client()
    for _ in range(5):
        attempt(client, "ada", "wrong")
    with mock.patch.object(auth_forms, "authenticate", wraps=auth_forms.authenticate) as authenticate:
        refused = attempt(client, "ada", "pw")
    assert refused.status_code == 429 and not signed_in(client)
    assert authenticate.call_count == 0


def test_another_user_at_the_same_address_is_unaffected(limits):
    UserFactory(username="ada"), UserFactory(username="bob")
    client = Client()
    for _ in range(6):
        attempt(client, "ada", "wrong")
    response = attempt(client, "bob", "pw")
    assert response.status_code == 302 and signed_in(client)


def test_the_same_name_in_other_case_counts_against_the_same_account(limits):
    UserFactory(username="ada")
    client = Client()
    for name in ("ada", "ADA", " Ada", "ada", "aDa"):
        attempt(client, name, "wrong")
    assert attempt(client, "ada", "pw").status_code == 429


def test_a_successful_login_clears_the_username_count(limits):
    UserFactory(username="ada")
    client = Client()
    for _ in range(4):
        attempt(client, "ada", "wrong")
    assert attempt(client, "ada", "pw").status_code == 302
    client.post(reverse("logout"))
    for _ in range(4):
        assert attempt(client, "ada", "wrong").status_code == 200
    # Without the reset these would be failures 9 and 10 of 5.
    assert attempt(client, "ada", "pw").status_code == 302


def test_an_address_is_locked_after_failures_across_many_usernames(limits):
    UserFactory(username="ada")
    guesser = Client(REMOTE_ADDR="203.0.113.7")
    for i in range(20):
        assert attempt(guesser, f"user-{i}", "wrong").status_code == 200
    # Even the right password for a username never guessed, from that address.
    assert attempt(guesser, "ada", "pw").status_code == 429
    elsewhere = Client(REMOTE_ADDR="198.51.100.1")
    assert attempt(elsewhere, "ada", "pw").status_code == 302


def test_the_lock_lifts_when_the_window_has_passed(limits):
    # Wide enough that five failed logins on a loaded CI machine all fall inside it (a 1 s window
    # once let the first failure age out before the check).
    limits.LOGIN_FAILURE_WINDOW_S = 4
    UserFactory(username="ada")
    client = Client()
    started = time.monotonic()
    for _ in range(5):
        attempt(client, "ada", "wrong")
    assert attempt(client, "ada", "pw").status_code == 429, f"5 failures took {time.monotonic() - started:.1f} s"
    time.sleep(4.2)
    assert attempt(client, "ada", "pw").status_code == 302 and signed_in(client)


def test_the_oldest_failure_ageing_out_frees_one_attempt(limits):
    limits.LOGIN_MAX_FAILURES_PER_USERNAME = 2
    limits.LOGIN_FAILURE_WINDOW_S = 4
    login_failure_record(username="ada", ip="192.0.2.1")
    time.sleep(2.1)
    login_failure_record(username="ada", ip="192.0.2.1")
    assert login_locked_for(username="ada", ip="192.0.2.2") > 0
    time.sleep(2.0)  # the first failure has expired, the second has not (2 s of slack either way)
    assert login_locked_for(username="ada", ip="192.0.2.2") == 0
    login_failure_record(username="ada", ip="192.0.2.1")
    assert login_locked_for(username="ada", ip="192.0.2.2") > 0


def test_the_admin_login_form_is_throttled_too(limits):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    for _ in range(5):
        assert attempt(client, "root", "wrong", url="admin:login").status_code == 200
    refused = attempt(client, "root", "pw", url="admin:login")
    assert refused.status_code == 429 and LOCKED in refused.content and not signed_in(client)
    # The two forms share the count: the guesser gains nothing by switching.
    assert attempt(client, "root", "pw").status_code == 429


def test_a_forged_forwarded_for_header_does_not_buy_fresh_addresses(limits):
    UserFactory(username="ada")
    client = Client(REMOTE_ADDR="203.0.113.7")
    for i in range(20):
        attempt(client, f"user-{i}", "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
    assert attempt(client, "ada", "pw", HTTP_X_FORWARDED_FOR="10.0.0.99").status_code == 429


def test_behind_a_proxy_the_address_it_saw_is_the_client(limits):
    limits.NUM_PROXIES = 1
    UserFactory(username="ada")
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    for i in range(20):
        # The client may put anything on the left; our proxy appends what it saw on the right.
        attempt(proxy, f"user-{i}", "wrong", HTTP_X_FORWARDED_FOR=f"1.2.3.{i}, 203.0.113.7")
    assert attempt(proxy, "ada", "pw", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    assert attempt(proxy, "ada", "pw", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 302


def test_a_form_without_a_password_is_not_a_failure(limits):
    UserFactory(username="ada")
    client = Client()
    for _ in range(10):
        assert client.post(reverse("login"), {"username": "ada"}).status_code == 200
    assert attempt(client, "ada", "pw").status_code == 302
