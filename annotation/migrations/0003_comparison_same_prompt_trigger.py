"""Both responses of a comparison answer the comparison's prompt.

The rule spans three rows, which a CHECK constraint cannot see and Django has no composite
foreign key for, so a trigger enforces it on every insert and update, per database vendor.
"""

from django.db import migrations

MESSAGE = "both responses of a comparison must answer its prompt"

POSTGRES_FORWARD = f"""
CREATE OR REPLACE FUNCTION annotation_comparison_same_prompt() RETURNS trigger AS $$
BEGIN
    IF (SELECT prompt_id FROM annotation_response WHERE id = NEW.response_a_id) IS DISTINCT FROM NEW.prompt_id
       OR (SELECT prompt_id FROM annotation_response WHERE id = NEW.response_b_id) IS DISTINCT FROM NEW.prompt_id THEN
        RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS annotation_comparison_same_prompt ON annotation_comparison;
CREATE TRIGGER annotation_comparison_same_prompt
    BEFORE INSERT OR UPDATE ON annotation_comparison
    FOR EACH ROW EXECUTE FUNCTION annotation_comparison_same_prompt();
"""
POSTGRES_BACKWARD = """
DROP TRIGGER IF EXISTS annotation_comparison_same_prompt ON annotation_comparison;
DROP FUNCTION IF EXISTS annotation_comparison_same_prompt();
"""

_SQLITE_CONDITION = """
    (SELECT prompt_id FROM annotation_response WHERE id = NEW.response_a_id) IS NOT NEW.prompt_id
    OR (SELECT prompt_id FROM annotation_response WHERE id = NEW.response_b_id) IS NOT NEW.prompt_id
"""
SQLITE_FORWARD = [
    f"""CREATE TRIGGER annotation_comparison_same_prompt_{op.lower()}
    BEFORE {op} ON annotation_comparison
    WHEN {_SQLITE_CONDITION}
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;"""
    for op in ("INSERT", "UPDATE")
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS annotation_comparison_same_prompt_{op}" for op in ("insert", "update")
]


def forward(apps, schema_editor):
    """Create (or re-create) the trigger. Idempotent.

    SQLite rebuilds a table for most ALTERs and drops its triggers with it, so every later
    migration that alters ``annotation_comparison`` must call this again at its end.
    """
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD)
    elif vendor == "sqlite":
        for statement in SQLITE_BACKWARD + SQLITE_FORWARD:
            schema_editor.execute(statement)
    else:
        raise RuntimeError(f"Arbiter supports PostgreSQL and SQLite, not {vendor}")


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = [POSTGRES_BACKWARD] if vendor == "postgresql" else SQLITE_BACKWARD
    for statement in statements:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0002_initial")]
    operations = [migrations.RunPython(forward, backward)]
