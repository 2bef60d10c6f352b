"""Hostile and careless import files: each one a 400 naming the line, field and reason, nothing
written, never a 500 (issue 11's table, on SQLite here and on PostgreSQL in CI)."""

import gzip
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.importers import ImportValidationError
from annotation.models import AuditEvent, Comparison, Judgment, Prompt, Response, Role
from annotation.services.uploads import import_file
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def transcript(*turns):
    return "".join(f"\n\n{who}: {text}" for who, text in turns)


def hh_row(chosen="Fine.", rejected="No.", prompt="Hi"):
    return json.dumps({"chosen": transcript(("Human", prompt), ("Assistant", chosen)), "rejected": transcript(("Human", prompt), ("Assistant", rejected))})


# One good line per format, and where a hostile value goes in it.
GOOD = {
    "jsonl": json.dumps({"prompt": "Write a haiku."}),
    "mt-bench": json.dumps({"question_id": 1, "category": "writing", "turns": ["Write a haiku."]}),
    "hh": hh_row(),
}


def with_value(format: str, value: str) -> str:
    """A line of ``format`` whose main text field holds the raw JSON ``value``."""
    return {
        "jsonl": '{"prompt": %s}',
        "mt-bench": '{"question_id": 2, "category": "x", "turns": [%s]}',
        "hh": '{"chosen": %s, "rejected": "\\n\\nHuman: a\\n\\nAssistant: b"}',
    }[format] % value


def counts():
    return (Prompt.objects.count(), Response.objects.count(), Comparison.objects.count(), Judgment.objects.count(),
            AuditEvent.objects.count())


def refused(content: bytes, format: str, name: str | None = None) -> ImportValidationError:
    project = ProjectFactory()
    before = counts()
    with pytest.raises(ImportValidationError) as caught:
        import_file(project=project, file=content, name=name or f"f.{format}", format=format)
    assert counts() == before
    return caught.value


FORMATS = ["jsonl", "mt-bench", "hh"]


@pytest.mark.parametrize("format", FORMATS)
def test_json_nested_thousands_of_levels_deep_names_the_line(format):
    deep = "[" * 5000 + "]" * 5000
    error = refused(f"{GOOD[format]}\n{with_value(format, deep)}\n".encode(), format)
    assert [(e.line, e.field) for e in error.errors] == [(2, "(json)")]
    assert "nested deeper than" in error.errors[0].message and "ARBITER_IMPORT_MAX_DEPTH" in error.errors[0].message


@pytest.mark.parametrize("format", FORMATS)
def test_json_nested_past_the_limit_but_within_python_names_the_field(format):
    deep = "[" * 40 + '"x"' + "]" * 40
    error = refused(f"{GOOD[format]}\n{GOOD[format]}\n{with_value(format, deep)}\n".encode(), format)
    (only,) = error.errors
    assert only.line == 3 and "nested deeper than 32 levels" in only.message


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize(("escape", "reason"), [("\\u0000", "NUL characters are not allowed"), ("\\udc80", "lone surrogate")])
def test_an_escaped_nul_or_lone_surrogate_names_the_line_and_field(format, escape, reason):
    value = json.dumps("before ESC after").replace("ESC", escape)
    error = refused(f"{GOOD[format]}\n{with_value(format, value)}\n".encode(), format)
    (only,) = error.errors
    assert only.line == 2 and reason in only.message
    assert only.field == {"jsonl": "prompt", "mt-bench": "turns[0]", "hh": "chosen"}[format]


def test_a_nul_in_a_key_is_named_too():
    error = refused(b'{"prompt": "x", "meta\\u0000": 1}\n', "jsonl")
    assert error.errors[0].field == "'meta\\x00'" and "a key: NUL" in error.errors[0].message


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "1" * 5000])
def test_numbers_jsonb_cannot_hold_are_refused(number):
    error = refused(b'{"question_id": %s, "turns": ["hi"]}\n' % number.encode(), "mt-bench")
    assert [(e.line, e.field) for e in error.errors] == [(1, "(json)")]


def test_a_raw_nul_byte_in_a_csv_names_the_line():
    error = refused(b"prompt,category\nfine,x\nbad\x00prompt,x\n", "csv")
    assert [(e.line, e.field) for e in error.errors] == [(3, "(text)")] and "NUL" in error.errors[0].message


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (b"\x1f\x8b" + b"definitely not deflate data" * 10, "p.jsonl"),  # magic bytes, then garbage
        (gzip.compress(b'{"prompt": "a"}\n' * 1000)[:-40], "p.jsonl.gz"),  # a real gzip file cut short
        (b'{"prompt": "not compressed"}\n', "p.jsonl.gz"),  # named .gz, but plain text
        (gzip.compress(b'{"prompt": "a"}\n') + b"trailing junk", "p.jsonl.gz"),
    ],
)
def test_a_broken_gzip_file_is_a_clear_error(content, name):
    error = refused(content, "jsonl", name=name)
    assert [(e.line, e.field) for e in error.errors] == [(0, "(file)")] and "not a valid gzip file" in error.errors[0].message
    assert str(error.errors[0]).startswith("(file): not a valid gzip file")  # no "line 0"


def test_a_gzip_bomb_is_refused_at_the_decompressed_limit(settings):
    settings.IMPORT_LIMITS = {"max_decompressed_bytes": 2**20}
    bomb = gzip.compress(b'{"prompt": "x"}\n' * 200_000)  # 3.2 MB of text in ~10 KB
    error = refused(bomb, "jsonl", name="bomb.jsonl.gz")
    assert "larger than 1 MiB once decompressed (ARBITER_IMPORT_MAX_DECOMPRESSED_BYTES)" in str(error)


def test_too_many_lines_is_refused_whole(settings):
    settings.IMPORT_LIMITS = {"max_lines": 100}
    error = refused(b"\n" * 101, "jsonl")
    assert "more than 100 lines (ARBITER_IMPORT_MAX_LINES)" in str(error)


def test_an_unterminated_csv_quote_names_the_line_where_its_row_starts():
    content = b'prompt,category\nfine,x\nalso fine,y\n"this quote never closes,z\nmore text\nand more\n'
    error = refused(content, "csv")
    assert [(e.line, e.field) for e in error.errors] == [(4, "(csv)")]
    assert "never closed" in error.errors[0].message


def test_a_csv_field_up_to_the_apps_limit_imports_and_past_it_names_its_line():
    project = ProjectFactory()
    big = b"q" * 150_000  # past Python's csv default of 131,072, within the app's 200,000
    result = import_file(project=project, file=b"prompt\n" + big + b"\n", name="p.csv", format="csv")
    assert result.prompts_created == 1 and len(Prompt.objects.get().messages[0]["content"]) == 150_000
    error = refused(b'prompt,category\n"' + b"q" * 250_000 + b'",x\n', "csv")
    assert [(e.line, e.field) for e in error.errors] == [(2, "(csv)")]
    assert "longer than 200,000 characters (ARBITER_IMPORT_MAX_FIELD_CHARS)" in error.errors[0].message


def test_a_json_string_past_the_field_limit_names_the_field(settings):
    settings.IMPORT_LIMITS = {"max_field_chars": 100}
    error = refused(b'{"prompt": "ok"}\n{"prompt": "' + b"x" * 101 + b'"}\n', "jsonl")
    assert [(e.line, e.field) for e in error.errors] == [(2, "prompt")] and "ARBITER_IMPORT_MAX_FIELD_CHARS" in error.errors[0].message


@pytest.mark.parametrize("format", ["jsonl", "mt-bench", "hh", "csv"])
@pytest.mark.parametrize("content", [b"", b"\n\n  \n\r\n", b"\xef\xbb\xbf"])
def test_a_file_with_no_records_is_refused(format, content):
    if format == "csv" and content:
        content = b"prompt,category\n"  # a header and nothing else
    error = refused(content, format)
    assert "holds no records" in str(error) or (format == "csv" and "header" in str(error))


def test_an_hh_file_with_no_usable_row_is_refused_and_lists_why():
    content = "\n".join([hh_row("Same.", "Same."), json.dumps({"chosen": transcript(("Human", "a"), ("Assistant", "b")), "rejected": transcript(("Human", "c"), ("Assistant", "d"))})])
    error = refused(content.encode(), "hh")
    assert [(e.line, e.field) for e in error.errors] == [(0, "(file)"), (1, "chosen/rejected"), (2, "chosen/rejected")]
    assert "all 2 were skipped" in error.errors[0].message
    assert "identical or empty" in error.errors[1].message and "different conversations" in error.errors[2].message


def test_invalid_utf8_names_the_line_and_the_byte_offset():
    content = b'{"prompt": "one"}\n{"prompt": "two"}\n{"prompt": "caf\xe9"}\n'
    error = refused(content, "jsonl")
    (only,) = error.errors
    assert (only.line, only.field) == (3, "(text)")
    offset = content.index(b"\xe9")
    assert f"at byte offset {offset} of the file" in only.message


def test_a_byte_order_mark_and_crlf_line_endings_are_fine():
    project = ProjectFactory()
    result = import_file(project=project, file=b'\xef\xbb\xbf{"prompt": "a"}\r\n{"prompt": "b"}\r\n', name="p.jsonl", format="jsonl")
    assert result.prompts_created == 2
    result = import_file(project=project, file=b'\xef\xbb\xbfprompt,category\r\nc,x\r\n', name="p.csv", format="csv")
    assert result.prompts_created == 1


def test_mt_bench_ids_and_categories_too_long_for_their_columns_are_cut_not_a_database_error():
    project = ProjectFactory()
    row = {"question_id": "9" * 4000, "category": "c" * 500, "turns": ["hi"]}
    import_file(project=project, file=json.dumps(row).encode(), name="q.jsonl", format="mt-bench")
    prompt = Prompt.objects.get()
    assert len(prompt.source) == 200 and len(prompt.category) == 100


# --- every way in: the API, the page, the command ---------------------------------------------

HOSTILE = [
    ("jsonl", "deep.jsonl", b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"),
    ("jsonl", "nul.jsonl", b'{"prompt": "a\\u0000b"}\n'),
    ("csv", "nul.csv", b"prompt\na\x00b\n"),
    ("jsonl", "bad.jsonl.gz", b"\x1f\x8bgarbage"),
    ("csv", "quote.csv", b'prompt\n"never closed\n'),
    ("hh", "empty.jsonl", b""),
    ("mt-bench", "latin1.jsonl", b'{"turns": ["caf\xe9"]}\n'),
]


@pytest.mark.parametrize(("format", "name", "content"), HOSTILE)
def test_the_api_answers_400_with_lines_and_writes_nothing(member_of, format, name, content):
    project = ProjectFactory()
    lead = APIClient()
    lead.force_authenticate(member_of(project, Role.LEAD))
    before = counts()
    answer = lead.post(reverse("api-imports", kwargs={"slug": project.slug}), {"format": format, "file": SimpleUploadedFile(name, content)}, format="multipart")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_file" and answer.json()["errors"]
    assert counts() == before


@pytest.mark.parametrize(("format", "name", "content"), HOSTILE)
def test_the_page_says_nothing_was_imported(client, member_of, format, name, content):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.LEAD))
    before = counts()
    page = client.post(reverse("import-upload", kwargs={"slug": project.slug}), {"format": format, "file": SimpleUploadedFile(name, content)}, follow=True)
    assert page.status_code == 200 and "Nothing was imported" in page.content.decode()
    assert counts() == before


@pytest.mark.parametrize(("format", "name", "content"), HOSTILE)
def test_the_command_exits_non_zero_without_a_traceback(tmp_path, format, name, content):
    project = ProjectFactory()
    path = tmp_path / name
    path.write_bytes(content)
    before = counts()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_prompts", project.slug, str(path), "--format", format, stderr=io.StringIO())
    assert counts() == before


def test_the_page_lists_skipped_hh_rows_with_their_reasons(client, member_of):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.LEAD))
    content = "\n".join([hh_row(), hh_row("Same.", "Same.", prompt="Other")]).encode()
    page = client.post(reverse("import-upload", kwargs={"slug": project.slug}), {"format": "hh", "file": SimpleUploadedFile("hh.jsonl", content)}, follow=True)
    text = page.content.decode()
    assert "1 unusable rows skipped" in text and "line 2: chosen/rejected: the two endings are identical or empty" in text
