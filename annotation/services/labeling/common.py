"""What the labeling modules share: the verdict vocabulary, the errors the API maps to statuses,
and the raw-SQL helpers of the hot path."""

from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

from django.db import connection
from django.utils import timezone

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")  # HelpSteer2, 0-4
FLAGS = ("unsafe", "factually_wrong", "private_data", "refuses_needlessly")
SIDES = ("left", "right")
MAX_RATIONALE_CHARS = 5000
MAX_SKIP_REASON_CHARS = 200


class LabelingError(Exception):
    """A request the queue refuses; ``code`` is stable for API clients, ``status`` is HTTP."""

    code = "invalid"
    status = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class AssignmentNotFound(LabelingError):
    code, status = "not_found", 404


class LeaseExpired(LabelingError):
    code, status = "lease_expired", 409


class AlreadyEnded(LabelingError):
    code, status = "already_ended", 409


class LeaseCapReached(LabelingError):
    code, status = "lease_cap", 429


class IdempotencyKeyReused(LabelingError):
    """The key was already used for a different verdict (the IETF Idempotency-Key draft's 422)."""

    code, status = "idempotency_key_reused", 422


class InvalidVerdict(LabelingError):
    code, status = "invalid_verdict", 400


def insert_row(model, **values):
    """``model.objects.create(**values)`` for the hot path: the same row, values prepared by the
    fields themselves (JSON, datetimes per database), without compiling an ORM INSERT each time.
    No signals are sent (nothing in Arbiter listens for these models' saves)."""
    obj = model(**values)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES ({placeholders}) RETURNING id",
            params,
        )
        obj.pk = cursor.fetchone()[0]
    obj._state.adding, obj._state.db = False, connection.alias
    return obj


def db_time(value: datetime):
    """An aware datetime as a raw-SQL parameter, stored as the ORM stores it (naive UTC on SQLite)."""
    return connection.ops.adapt_datetimefield_value(value)


def aware(value):
    """A datetime from a raw cursor as Django's ORM would give it (SQLite hands back naive UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, dt_timezone.utc)
