"""Shared test plumbing. Fixtures here are explicit (no autouse): a test asks for what it uses."""

from __future__ import annotations

import os
import shutil

import pytest
from django.db import connection

from annotation.models import Role
from tests.factories import MembershipFactory, ProjectFactory, UserFactory


def pytest_configure(config):
    from django.conf import settings

    # PBKDF2's deliberate slowness is for attackers, not for a test suite that makes many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_runtest_setup(item):
    """Empty the per-process caches keyed by database ids before every test.

    In production an id is never reused; across tests it is (each test's rows are rolled back),
    so a comparison cached by one test would show its text in the next one's comparison.
    """
    from annotation.selectors import comparison_content

    comparison_content.cache_clear()


def pytest_collection_modifyitems(config, items):
    """Skip postgres/browser tests where those are missing, unless CI says they must run."""
    on_postgres = connection.vendor == "postgresql"
    has_browser = shutil.which("chromium") is not None
    if os.environ.get("ARBITER_REQUIRE_POSTGRES") and not on_postgres:
        raise pytest.UsageError("ARBITER_REQUIRE_POSTGRES is set but DATABASE_URL is not PostgreSQL")
    if os.environ.get("ARBITER_REQUIRE_BROWSER") and not has_browser:
        raise pytest.UsageError("ARBITER_REQUIRE_BROWSER is set but chromium is not installed")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://..."))
        if "browser" in item.keywords and not has_browser:
            item.add_marker(pytest.mark.skip(reason="needs Debian's chromium (apt-get install chromium)"))

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny causal LM + ChatML tokenizer built from a config (tests/modeling/tiny.py)."""
    from tests.modeling.tiny import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory):
    from tests.modeling.tiny import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("tiny-rm"), classification=True)


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def member_of(db):
    """``member_of(project, role)`` makes a user with that role in the project."""

    def make(project, role: Role, **user_fields):
        user = UserFactory(**user_fields)
        MembershipFactory(project=project, user=user, role=role)
        return user

    return make
