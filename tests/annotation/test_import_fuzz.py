"""Property: whatever bytes a lead uploads, an import either succeeds or raises the 400-class
``ImportValidationError``, and when it raises the database is as it was.

Files are grown from a valid file of each format and then broken the ways files break: random
bytes, cuts, deep nesting, control characters and escapes PostgreSQL refuses, byte-order marks,
mixed line endings, huge fields (against small limits, so "huge" stays fast), gzip that is good,
cut or corrupt. Runs on SQLite here and on PostgreSQL in CI, where NUL and surrogates bite.
"""

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from annotation.importers import ImportValidationError
from annotation.models import AuditEvent, Comparison, Judgment, Prompt, Response
from annotation.services.uploads import IMPORT_FORMATS, import_file
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

LIMITS = {"max_bytes": 64 * 1024, "max_decompressed_bytes": 64 * 1024, "max_line_bytes": 4096,
          "max_field_chars": 1000, "max_depth": 8, "max_lines": 200}


def _hh(prompt, chosen, rejected):
    return json.dumps({"chosen": f"\n\nHuman: {prompt}\n\nAssistant: {chosen}", "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {rejected}"})


VALID_LINES = {
    "jsonl": [
        json.dumps({"prompt": "Write a haiku.", "tags": ["poetry"], "category": "writing"}),
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ☃"}]}),
        json.dumps({"prompt": "Sum 2 and 2.", "system": "You are exact.", "source": "s:1", "tags": "a;b"}),
    ],
    "mt-bench": [
        json.dumps({"question_id": 81, "category": "writing", "turns": ["Compose a post.", "Rewrite it."]}),
        json.dumps({"question_id": 101, "category": "math", "turns": ["2+2?"], "reference": ["4"]}),
    ],
    "hh": [_hh("Hi", "Hello!", "Go away."), _hh("How to bake?", "Preheat the oven.", "No.")],
    "csv": ["prompt,category,tags,system", '"Say ""hi""",chat,a;b,', "plain prompt,,,Be kind.", '"multi\nline",x,,'],
}

NASTY = [
    b"\x00", b"\\u0000", b"\\ud800", b"\\udfff\\ud800", b"\\uDC00", b'"', b"\\", b"\xff", b"\xc3", b"\xe2\x82",
    b"\xef\xbb\xbf", b"\r", b"\n", b"\r\n", b"\x1b[31m", b"\x1f\x8b", b"NaN", b"Infinity", b"1e400", b"-0", b"9" * 5000,
    b"[" * 50, b"{" * 50, b'{"a":' * 20, b"]" * 20, b"\xe2\x80\xa8", b"\t", b",", b'",', b"\x7f", b"\xf0\x9f\x98\x80",
    b'"prompt"', b'"messages": []', b'"turns": [""]', b"null", b"true", b"{}", b"[]",
]


# Text inside the valid lines' string values, and what may replace it there: escapes a database
# refuses, a string past the field limit, nesting past the depth limit (inside a value, where a
# random insertion rarely lands).
WORDS = [b"haiku", b"Hello!", b"oven", b"Hi", b"post", b"2+2?", b"plain prompt", b"brief", b"poetry", b'["4"]', b"chat"]
POISON = [b"\\u0000", b"a\\u0000b", b"\\ud800", b"\\udfff", b"\\ud83d\\ude00", b"\\\\u0000", b"\\n", b"\\t",
          b"x" * 1001, b"\xc3\xa9" * 600, b"[" * 12 + b"]" * 12, b'"], "deep": ' + b"[" * 9 + b"]" * 9 + b', "z": ["']


@st.composite
def hostile_files(draw, format):
    base = [line.encode() for line in VALID_LINES[format]]
    lines = draw(st.lists(st.sampled_from(base), min_size=1, max_size=8))
    if format == "csv":
        lines = [base[0], *lines]
    separator = draw(st.sampled_from([b"\n", b"\r\n", b"\r", b""]))
    content = separator.join(lines)
    if draw(st.booleans()):
        content = b"\xef\xbb\xbf" + content
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(content)))
        kind = draw(st.sampled_from(["poison", "poison", "nasty", "random", "cut", "huge", "delete", "repeat"]))
        if kind == "poison":
            present = [word for word in WORDS if word in content]
            if present:
                content = content.replace(draw(st.sampled_from(present)), draw(st.sampled_from(POISON)), draw(st.integers(1, 3)))
        elif kind == "nasty":
            content = content[:where] + draw(st.sampled_from(NASTY)) + content[where:]
        elif kind == "random":
            content = content[:where] + draw(st.binary(max_size=64)) + content[where:]
        elif kind == "cut":
            content = content[:where]
        elif kind == "huge":  # past the field or the line limit, or both
            size = draw(st.sampled_from([999, 1001, 4095, 5000, 70_000]))
            content = content[:where] + draw(st.sampled_from([b"x", b"\xc3\xa9", b" ", b"\\n"])) * size + content[where:]
        elif kind == "delete":
            content = content[:where] + content[where + draw(st.integers(1, 16)):]
        else:
            content = content[:where] * draw(st.integers(1, 3)) + content[where:]
    name = f"upload.{format}"
    wrapping = draw(st.sampled_from(["plain", "plain", "plain", "gzip", "gzip-cut", "gzip-corrupt", "random"]))
    if wrapping == "random":
        content = draw(st.binary(max_size=512))
    elif wrapping.startswith("gzip"):
        content, name = gzip.compress(content), name + ".gz"
        if wrapping == "gzip-cut":
            content = content[: draw(st.integers(0, len(content)))]
        elif wrapping == "gzip-corrupt" and len(content) > 12:
            at = draw(st.integers(10, len(content) - 1))
            content = content[:at] + bytes([content[at] ^ 0x5A]) + content[at + 1:]
    return name, content


def _state():
    return (Prompt.objects.count(), Response.objects.count(), Comparison.objects.count(), Judgment.objects.count(),
            AuditEvent.objects.count(), list(Prompt.objects.order_by("id").values_list("id", "content_hash")))


@pytest.mark.parametrize("format", IMPORT_FORMATS)
def test_an_import_succeeds_or_fails_cleanly_on_any_file(format, settings):
    settings.IMPORT_LIMITS = LIMITS
    project = ProjectFactory()
    outcomes = {"imported": 0, "refused": 0}

    @hypothesis_settings(max_examples=150, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(upload=hostile_files(format))
    def run(upload):
        name, content = upload
        before = _state()
        try:
            import_file(project=project, file=content, name=name, format=format)
        except ImportValidationError as exc:
            outcomes["refused"] += 1
            assert exc.errors and exc.total >= len(exc.errors)
            assert all(isinstance(e.line, int) and e.line >= 0 and e.message for e in exc.errors)
            assert _state() == before, "a refused import changed the database"
        else:
            outcomes["imported"] += 1

    run()
    # The generator reaches both sides: a fuzzer that only ever makes broken files proves little.
    assert outcomes["imported"] > 0 and outcomes["refused"] > 0, outcomes
