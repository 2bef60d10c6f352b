"""What text from outside may hold, in one place: imports, API bodies, model answers.

PostgreSQL refuses NUL in ``text`` and ``jsonb`` (``\\u0000`` in a JSON string is "unsupported
Unicode escape sequence"), and no driver can encode a lone UTF-16 surrogate (``"\\ud800"`` is valid
JSON, yet not Unicode text). SQLite takes both, so a check left to the database would pass every
test on SQLite and answer 500 on PostgreSQL. Everything that writes outside text checks it here
first, and names what it refused.

Plain Python: modeling's services and the API parser use it as well as imports.
"""

from __future__ import annotations

import json
import math
import re

#: Nesting allowed in JSON from an API body or an admin form. No request of ours nests past 5
#: levels (a round's config); 32 leaves room and keeps decoders far from Python's recursion limit,
#: which a body of 3,000 '[' reached (a 500).
MAX_JSON_DEPTH = 32

# NUL, and the UTF-16 surrogate range that a Python str can hold but UTF-8 cannot encode.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return None
    position = found.start()
    if found.group() == "\x00":
        return f"NUL characters are not allowed (character {position + 1})"
    return f"not valid Unicode text: a lone surrogate (character {position + 1})"


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


class StrictJSONDecoder(json.JSONDecoder):
    """NaN, Infinity and 1e400 decode to Python floats, but PostgreSQL's jsonb refuses them:
    refuse them while decoding (a ``ValueError``, like any bad JSON)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "parse_constant": _no_constant, "parse_float": _finite_float})


#: One decoder for many texts: ``json.loads`` with hooks builds a new one per call.
STRICT_JSON = StrictJSONDecoder()


def json_problem(value: object, *, max_depth: int, max_chars: int | None = None, path: str = "") -> tuple[str, str] | None:
    """The first ``(path, reason)`` that makes a parsed JSON value unfit to store, or None.

    Checks nesting depth (before descending, so the walk itself stays shallow), text fit for the
    database (keys too), finite numbers and, when ``max_chars`` is given, the length of every
    string.
    """
    return _walk(value, max_depth=max_depth, max_chars=max_chars, path=path, depth=0)


def json_refusal(value: object) -> str | None:
    """``json_problem`` for JSON that came in whole (an API body, an admin field), as one message."""
    found = json_problem(value, max_depth=MAX_JSON_DEPTH)
    return f"{found[0]}: {found[1]}" if found else None


def _walk(value, *, max_depth, max_chars, path, depth):
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(value)", "a number out of range (NaN or infinite)"
    if isinstance(value, str):
        if max_chars is not None and len(value) > max_chars:
            return path or "(value)", f"longer than {max_chars} characters"
        problem = text_problem(value)
        return (path or "(value)", problem) if problem else None
    if isinstance(value, (dict, list)):
        if depth >= max_depth:
            return path or "(value)", f"nested deeper than {max_depth} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                problem = text_problem(key)
                if problem:
                    return f"{path}.{key!r}" if path else repr(key), f"a key: {problem}"
                child = f"{path}.{key}" if path else key
            else:
                child = f"{path}[{key}]"
            found = _walk(item, max_depth=max_depth, max_chars=max_chars, path=child, depth=depth + 1)
            if found:
                return found
    return None


def json_may_need_walk(line: str, *, max_depth: int, max_chars: int | None) -> bool:
    """Cheap test on a JSON text: False when ``json_problem`` on its value cannot find anything.

    NUL and surrogates reach a decoded value only through ``\\u`` escapes (raw NUL is refused
    earlier, and UTF-8 decoding refuses encoded surrogates); depth needs brackets; a string over
    ``max_chars`` needs a text that long. Most lines of a real file pass all three in C.
    """
    return (
        "\\u" in line
        or line.count("[") + line.count("{") > max_depth
        or (max_chars is not None and len(line) > max_chars)
    )
