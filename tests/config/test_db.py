"""Prepared statements for the labeling hot path (config/db.py)."""

import pytest
from django.db import DatabaseError, connection, transaction

from config import db
from config.db import _positional

SQL = "SELECT CAST(%(a)s AS integer) + CAST(%(b)s AS integer), CAST(%(a)s AS integer) * 2, '100%%'"


def prepared_on_connection() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {name for (name,) in cursor.fetchall()}


def run(sql=SQL, params=None, name="arbiter_test_sum"):
    with connection.cursor() as cursor:
        db.execute(cursor, name, sql, {"a": 2, "b": 3} if params is None else params)
        return cursor.fetchone()


def test_named_and_positional_placeholders_become_numbered_ones():
    assert _positional(SQL) == (
        "SELECT CAST($1 AS integer) + CAST($2 AS integer), CAST($1 AS integer) * 2, '100%'", ("a", "b")
    )
    assert _positional("SELECT %s, %s WHERE x LIKE 'a%%'") == ("SELECT $1, $2 WHERE x LIKE 'a%'", (0, 1))


@pytest.mark.django_db
def test_it_answers_as_a_plain_execute_would():
    assert run() == (5, 4, "100%")
    assert run(params={"a": 10, "b": -1}) == (9, 20, "100%")


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgresql_a_statement_is_prepared_once_per_connection_and_reused(settings):
    settings.DATABASE_PREPARED_STATEMENTS = True
    assert run() == (5, 4, "100%")
    assert "arbiter_test_sum" in prepared_on_connection()
    with connection.cursor() as cursor:
        # A second PREPARE of the same name would fail: only EXECUTE is sent now.
        db.execute(cursor, "arbiter_test_sum", SQL, {"a": 1, "b": 1})
        assert cursor.fetchone() == (2, 2, "100%")


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_statement_that_vanished_is_prepared_again_on_the_next_call(settings):
    settings.DATABASE_PREPARED_STATEMENTS = True
    run()
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE arbiter_test_sum")  # what DISCARD ALL or a pooler does to us
    with pytest.raises(DatabaseError), transaction.atomic():
        run()
    assert run() == (5, 4, "100%")


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_failing_execution_does_not_forget_the_prepared_statement(settings):
    settings.DATABASE_PREPARED_STATEMENTS = True
    run()
    with pytest.raises(DatabaseError), transaction.atomic():
        run(params={"a": 2**31 - 1, "b": 1})  # integer out of range
    assert run() == (5, 4, "100%")  # re-PREPAREing would have failed with "already exists"


@pytest.mark.postgres
@pytest.mark.django_db
def test_switched_off_nothing_is_prepared(settings):
    settings.DATABASE_PREPARED_STATEMENTS = False
    assert run(name="arbiter_test_off") == (5, 4, "100%")
    assert "arbiter_test_off" not in prepared_on_connection()
