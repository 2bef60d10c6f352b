"""The small part of JSON Schema the API's JSON-valued fields use, checked in one place.

A field such as an export's filters is declared once, as a schema: drf-spectacular publishes it
in the OpenAPI document and the service checks requests against it with ``schema_problem``, so
the documented rules and the enforced ones cannot drift apart. Supported: type (object, array,
string, integer, number, boolean), nullable, enum, minimum, maximum, exclusiveMinimum (OpenAPI
3.0's form, a flag on minimum, as drf-spectacular publishes 3.0), items, properties and
additionalProperties: false.
"""

from __future__ import annotations

import math

_KINDS = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
}
_NAMES = {"object": "an object", "array": "a list", "string": "a string", "integer": "a whole number",
          "number": "a number", "boolean": "true or false"}


def _or(values: list) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def describe(schema: dict) -> str:
    """What a value of ``schema`` is, in words: "a whole number from 0 to 100", "'keep' or 'exclude'"."""
    if "enum" in schema:
        return _or(schema["enum"])
    if schema.get("type") == "array" and "enum" in schema.get("items", {}):
        return f"a list of {', '.join(schema['items']['enum'])}"
    words = _NAMES[schema["type"]]
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and schema.get("exclusiveMinimum"):
        words += f" above {low}"
    elif low is not None and high is not None:
        words += f" from {low} to {high}"
    elif low is not None:
        words += f" from {low} up"
    return words + (" or null" if schema.get("nullable") else "")


def schema_problem(value, schema: dict, path: str = "") -> str | None:
    """Why ``value`` does not fit ``schema`` ("heldout_percent: expected a whole number from 0 to
    100, got 101"), or None when it fits."""
    where = f"{path}: " if path else ""
    if value is None:
        return None if schema.get("nullable") else f"{where}expected {describe(schema)}, got null"
    kinds = _KINDS[schema["type"]]
    wrong_bool = isinstance(value, bool) and schema["type"] != "boolean"
    if wrong_bool or not isinstance(value, kinds) or (isinstance(value, float) and not math.isfinite(value)):
        return f"{where}expected {describe(schema)}, got {value!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}expected {describe(schema)}, got {value!r}"
    low = schema.get("minimum")
    if (low is not None and (value <= low if schema.get("exclusiveMinimum") else value < low)) or (
        "maximum" in schema and value > schema["maximum"]
    ):
        return f"{where}expected {describe(schema)}, got {value!r}"
    if schema["type"] == "array" and "items" in schema:
        for item in value:
            if schema_problem(item, schema["items"]) is not None:
                return f"{where}expected {describe(schema)}, got {value!r}"
    if schema["type"] == "object":
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            unknown = sorted(set(value) - set(properties))
            if unknown:
                return f"{where}unknown setting(s) {unknown}; known: {sorted(properties)}"
        for name, sub in properties.items():
            if name in value:
                problem = schema_problem(value[name], sub, f"{path}.{name}" if path else name)
                if problem:
                    return problem
    return None
