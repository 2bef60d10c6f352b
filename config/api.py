"""API-wide conventions, each one missing until schemathesis found it (tests/annotation/
test_schemathesis.py, docs/reliability.md (Fuzzing)):

- request bodies are JSON, and their types are checked, not coerced (``StrictJSONTypes``);
- a JSON body is refused whole when it nests too deep or holds text the database cannot store
  (``StoredTextJSONParser``), whatever field it is in;
- a page number is a number (``StrictPageNumberPagination``);
- the errors every operation can answer, and rules a serializer cannot state, are in the
  schema (``document_common_errors``).
"""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser

from config.untrusted import MAX_JSON_DEPTH, json_refusal

# JSON type expected by each kind of field; subclasses before their bases (a ChoiceField of ours
# always has string choices). Fields not listed (JSONField, ...) take any JSON value.
_JSON_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (serializers.BooleanField, (bool,), "Expected true or false."),
    (serializers.ChoiceField, (str,), "Expected a string."),
    (serializers.CharField, (str,), "Expected a string."),
    (serializers.IntegerField, (int,), "Expected an integer."),
    (serializers.FloatField, (int, float), "Expected a number."),
    (serializers.ListField, (list,), "Expected a list."),
    (serializers.DictField, (dict,), "Expected an object."),
]


def _json_type_errors(field: serializers.Field, value):
    """None when ``value`` has the JSON type ``field`` reads, else DRF-shaped errors."""
    if value is None:
        return None  # null is the field's own business (allow_null)
    for kind, types, message in _JSON_TYPES:
        if isinstance(field, kind):
            # bool is an int to Python, never to JSON.
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                return [message]
            break
    children = {}
    if isinstance(field, serializers.ListField):
        children = {str(i): _json_type_errors(field.child, item) for i, item in enumerate(value)}
    elif isinstance(field, serializers.DictField):
        children = {str(key): _json_type_errors(field.child, item) for key, item in value.items()}
    children = {key: error for key, error in children.items() if error}
    return children or None


class StrictJSONTypes:
    """Serializer mixin: ``{"reason": 0}`` or ``{"exclude_gold": "0"}`` is a 400, not "0" and
    false; so is a key the serializer does not know (``{"parquet": true}``, a spelling that was
    retired, or a typo of a real field), which DRF ignores.

    DRF coerces numbers to strings and "0"/"yes" to booleans and drops unknown keys, so a request
    the schema calls invalid was quietly read as something else. The schema says
    ``additionalProperties: false`` on these bodies (``document_common_errors``). Read-only fields
    are known: a client may send back what it read.
    """

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            known = ", ".join(name for name, field in self.fields.items() if not field.read_only)
            errors = {str(key): [f"Unknown field; known: {known}."] for key in data if key not in self.fields}
            for name, field in self.fields.items():
                if not field.read_only and name in data:
                    error = _json_type_errors(field, data[name])
                    if error:
                        errors[name] = error
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class StoredTextJSONParser(JSONParser):
    """JSON bodies that can be stored as they are: nesting of at most ``MAX_JSON_DEPTH`` levels,
    no NUL and no lone surrogate in any string or key (``config/untrusted.py``). CharFields refused
    both already; JSON-valued fields (a member's generation settings, a round's config, export
    filters) did not, and PostgreSQL answered them with a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels") from None
        refusal = json_refusal(data)
        if refusal:
            raise ParseError(f"JSON parse error - {refusal}")
        return data


class StrictPageNumberPagination(PageNumberPagination):
    """A page number is a number: DRF read ``?page=`` as page 1 and ``?page=last`` as the last,
    though the schema says integer. Anything but a page that exists is a 404, as DRF answers
    ``?page=abc``."""

    last_page_strings = ()

    def get_page_number(self, request, paginator):
        return request.query_params.get(self.page_query_param, 1)


FIELD_ERRORS = {
    "type": "object",
    "description": 'Invalid input, as DRF reports it: {"field": ["message", ...]} (nested for nested fields).',
    "additionalProperties": {},
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
BAD_REQUEST_SCHEMA = {"anyOf": [ERROR_REF, {"$ref": "#/components/schemas/FieldErrors"}]}


def _json(schema: dict, description: str) -> dict:
    return {"content": {"application/json": {"schema": schema}}, "description": description}


# Rules a serializer cannot state (an exclusive minimum, a rule across fields), by component.
SCHEMA_RULES = {
    # A member's weight is a relative chance of being drawn: above 0 (a database constraint).
    "CommitteeMemberRequest": {"properties": {"weight": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}},
    "PatchedCommitteeMemberRequest": {"properties": {"weight": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}},
    # parquet: true is the older spelling of file_format: "parquet"; both, disagreeing, is a 400.
    "ExportStartRequest": {
        "not": {
            "required": ["parquet", "file_format"],
            "properties": {"parquet": {"enum": [True]}, "file_format": {"enum": ["jsonl", "csv"]}},
        }
    },
}


def document_common_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook: a 403 for a caller without credentials or with too low
    a role, a 404 for an object the caller cannot see (or a page past the end of a listing), 400
    bodies in both shapes, our ``{"error", "detail"}`` and DRF's field errors, and JSON request
    bodies closed to unknown keys."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["FieldErrors"] = FIELD_ERRORS
    for name, rules in SCHEMA_RULES.items():
        schema = schemas.get(name)
        for key, value in rules.items() if schema else ():
            if key == "properties":
                schema["properties"].update(value)
            else:
                schema[key] = value
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:  # JSON bodies are read by StrictJSONTypes serializers: no unknown keys
                schemas[body["$ref"].rsplit("/", 1)[-1]]["additionalProperties"] = False
            responses = operation.setdefault("responses", {})
            parameters = operation.get("parameters", [])
            responses.setdefault("403", _json(ERROR_REF, "No credentials, or a role too low for this"))
            if any(p["in"] == "path" or p["name"] == "page" for p in parameters):
                responses.setdefault("404", _json(ERROR_REF, "No such object for you (or no such page)"))
            if "requestBody" in operation or "400" in responses:
                responses["400"] = _json(BAD_REQUEST_SCHEMA, responses.get("400", {}).get("description") or "Invalid input")
    return result
