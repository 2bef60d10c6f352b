"""config.schema: the rules a JSON-valued field publishes are the rules it enforces."""

import pytest

from config.schema import schema_problem

SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 100},
        "rate": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "nullable": True},
        "mode": {"type": "string", "enum": ["a", "b", "c"]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}},
        "on": {"type": "boolean"},
        "inner": {"type": "object", "additionalProperties": False, "properties": {"k": {"type": "integer"}}},
    },
}


@pytest.mark.parametrize("value, said", [
    ({"n": 101}, "n: expected a whole number from 0 to 100, got 101"),
    ({"n": True}, "n: expected a whole number"),
    ({"n": 1.5}, "n: expected a whole number"),
    ({"rate": 0}, "rate: expected a number above 0"),
    ({"rate": float("nan")}, "rate: expected a number"),
    ({"mode": "d"}, "mode: expected 'a', 'b' or 'c', got 'd'"),
    ({"tags": ["x", "z"]}, "tags: expected a list of x, y"),
    ({"tags": "x"}, "tags: expected a list of x, y"),
    ({"on": 1}, "on: expected true or false"),
    ({"n": None}, "n: expected a whole number from 0 to 100, got null"),
    ({"inner": {"k": "1"}}, "inner.k: expected a whole number"),
    ({"inner": {"j": 1}}, "inner: unknown setting(s) ['j']"),
    ({"other": 1}, "unknown setting(s) ['other']"),
])
def test_a_value_outside_the_schema_is_named_with_its_path_and_rule(value, said):
    assert schema_problem(value, SCHEMA).startswith(said)


def test_values_inside_the_schema_pass():
    assert schema_problem({"n": 0, "rate": None, "mode": "c", "tags": [], "on": False, "inner": {"k": 3}}, SCHEMA) is None
    assert schema_problem({}, SCHEMA) is None


def _export_filters():
    from annotation.exports import FILTERS_SCHEMA

    return FILTERS_SCHEMA


def _round_settings():
    from modeling.services.rounds import ROUND_SETTINGS_SCHEMA

    return ROUND_SETTINGS_SCHEMA


@pytest.mark.django_db
@pytest.mark.parametrize("component, field, declared", [
    ("ExportStartRequest", "filters", _export_filters), ("RoundStartRequest", "config", _round_settings),
])
def test_the_json_fields_the_api_publishes_are_the_ones_it_checks(client, django_user_model, component, field, declared):
    client.force_login(django_user_model.objects.create(username="u"))
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert schema["components"]["schemas"][component]["properties"][field]["properties"] == declared()["properties"]
    assert schema["components"]["schemas"][component]["additionalProperties"] is False  # unknown keys are a 400


def test_the_round_settings_follow_train_config_annotations():
    from modeling.ml.training import TrainConfig

    rm = _round_settings()["properties"]["rm"]["properties"]
    assert set(rm) == set(TrainConfig.__dataclass_fields__)
    assert rm["max_length"] == {"type": "integer", "nullable": True, "minimum": 0, "exclusiveMinimum": True}
    assert rm["lora"] == {"type": "boolean"} and rm["learning_rate"]["type"] == "number"
