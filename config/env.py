"""Reading settings from the environment, failing at start-up with a message that names the variable.

django-environ does the parsing; this wraps it so a bad value reads
``ARBITER_LEASE_MINUTES: expected an integer, got 'ten'`` instead of a bare ``ValueError``
raised from somewhere inside the settings module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import environ
from django.core.exceptions import ImproperlyConfigured

_env = environ.Env()
#: Pass as ``default`` for a variable that has no default.
REQUIRED = object()


def _read(name: str, cast: Callable[[str], Any], default: Any, kind: str) -> Any:
    try:
        if default is REQUIRED:
            raw = _env.str(name)
        else:
            raw = _env.str(name, default=None)
            if raw is None:
                return default
        return cast(raw)
    except ImproperlyConfigured:
        raise ImproperlyConfigured(f"{name} is required but not set") from None
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name}: expected {kind}, got {raw!r} ({exc})") from None


def _to_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("use true/false, 1/0, yes/no or on/off")


def _to_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def string(name: str, default: Any = REQUIRED) -> str:
    return _read(name, str, default, "a string")


def integer(name: str, default: Any = REQUIRED, *, minimum: int | None = None) -> int:
    value = _read(name, int, default, "an integer")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    return value


def boolean(name: str, default: Any = REQUIRED) -> bool:
    return _read(name, _to_bool, default, "a boolean")


def csv_list(name: str, default: Any = REQUIRED) -> list[str]:
    return _read(name, _to_list, default, "a comma-separated list")


def choice(name: str, choices: tuple[str, ...], default: Any = REQUIRED) -> str:
    value = string(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def database(name: str, default: str) -> dict[str, Any]:
    url = string(name, default)
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql", "psql"}:
        raise ImproperlyConfigured(
            f"{name}: expected sqlite:///path or postgres://user@host:port/db, got {url!r}"
        )
    try:
        return environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises several types for malformed URLs
        raise ImproperlyConfigured(f"{name}: cannot parse {url!r} ({exc})") from None


def directory(name: str, default: Path) -> Path:
    path = Path(string(name, str(default))).expanduser()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{name}: {path} exists and is not a directory")
    return path
