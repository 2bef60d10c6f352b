"""Settings come from the environment; bad values stop start-up with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROD_SECRET = "x7Qp-" * 12  # 60 characters, not a django-insecure key

# Variables the settings read; each test starts from none of them.
SETTINGS_VARS = (
    "ARBITER_MODE DATABASE_URL CELERY_BROKER_URL CELERY_RESULT_BACKEND SECRET_KEY DEBUG ALLOWED_HOSTS "
    "ARBITER_DEMO ARTIFACTS_DIR ARBITER_VAR_DIR STATIC_ROOT CELERY_TASK_TIME_LIMIT DATABASE_CONN_MAX_AGE "
    "ARBITER_IMPORT_MAX_BYTES ARBITER_IMPORT_MAX_LINE_BYTES ARBITER_IMPORT_MAX_LINES"
).split()


def run_django(tmp_path, code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    clean.update({"ARBITER_VAR_DIR": str(tmp_path / "var"), "STATIC_ROOT": str(tmp_path / "static"), **env})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; {code}"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def production_env(**overrides) -> dict:
    return {
        "ARBITER_MODE": "production",
        "SECRET_KEY": PROD_SECRET,
        "DATABASE_URL": "postgres://arbiter@db:5432/arbiter",
        "CELERY_BROKER_URL": "redis://redis:6379/0",
        "ALLOWED_HOSTS": "arbiter.example.org",
        **overrides,
    }


def test_embedded_defaults_need_no_server(tmp_path):
    result = run_django(
        tmp_path,
        "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL, settings.CELERY_TASK_ALWAYS_EAGER)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://", "False"]


def test_embedded_mode_generates_one_secret_key_and_keeps_it(tmp_path):
    first = run_django(tmp_path, "print(settings.SECRET_KEY)")
    second = run_django(tmp_path, "print(settings.SECRET_KEY)")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and len(first.stdout.strip()) >= 50
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = production_env()
    del env["SECRET_KEY"]
    result = run_django(tmp_path, "pass", **env)
    assert result.returncode != 0
    assert "SECRET_KEY is required in production" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECRET_KEY", "short", "SECRET_KEY: use at least 50 random characters"),
        ("DATABASE_URL", "mysql://db/arbiter", "DATABASE_URL: expected sqlite:///path or postgres://"),
        ("CELERY_BROKER_URL", "kafka://broker", "CELERY_BROKER_URL: expected filesystem://, redis://"),
        ("DEBUG", "true", "DEBUG: must be false in production"),
        ("ARBITER_DEMO", "true", "ARBITER_DEMO: demo users have published passwords"),
        ("ARBITER_MODE", "staging", "ARBITER_MODE: must be one of embedded, production"),
        ("CELERY_TASK_TIME_LIMIT", "ten", "CELERY_TASK_TIME_LIMIT: expected an integer, got 'ten'"),
        ("DATABASE_CONN_MAX_AGE", "-5", "DATABASE_CONN_MAX_AGE: must be at least 0"),
        ("DEBUG", "maybe", "DEBUG: expected a boolean, got 'maybe'"),
        ("ARBITER_IMPORT_MAX_LINES", "many", "ARBITER_IMPORT_MAX_LINES: expected an integer, got 'many'"),
        ("ARBITER_IMPORT_MAX_DEPTH", "1", "ARBITER_IMPORT_MAX_DEPTH: must be at least 4"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path, variable, value, message):
    result = run_django(tmp_path, "pass", **production_env(**{variable: value}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr, result.stderr[-2000:]


def test_import_limits_come_from_the_environment(tmp_path):
    result = run_django(
        tmp_path,
        "from annotation.importers import ImportLimits; l = ImportLimits.from_settings(); print(l.max_lines, l.max_line_bytes, l.max_bytes)",
        ARBITER_IMPORT_MAX_LINES="500", ARBITER_IMPORT_MAX_LINE_BYTES="4096",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["500", "4096", str(200 * 2**20)]


@pytest.mark.parametrize("missing", ["DATABASE_URL", "CELERY_BROKER_URL", "ALLOWED_HOSTS"])
def test_production_needs_its_servers_named(tmp_path, missing):
    env = production_env()
    del env[missing]
    result = run_django(tmp_path, "pass", **env)
    assert result.returncode != 0
    assert f"{missing} is required but not set" in result.stderr


def test_production_settings_pass_the_deployment_checklist(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**clean, **production_env(), "ARBITER_VAR_DIR": str(tmp_path / "var"), "STATIC_ROOT": str(tmp_path / "s")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
