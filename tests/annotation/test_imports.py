"""Prompt imports from JSONL and CSV, through the page, the API and the command. All or nothing."""

import gzip
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from annotation.importers import ImportValidationError, parse_prompt_csv, parse_prompt_jsonl
from annotation.models import Prompt, Role
from annotation.services.uploads import import_file
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def test_jsonl_takes_chat_messages_or_a_prompt_string():
    lines = [
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "category": "chat"}),
        json.dumps({"prompt": "Write a haiku.", "system": "You are a poet.", "tags": ["poetry", "short"]}),
        json.dumps({"prompt": "Sum 2 and 2.", "tags": "math;easy", "source": "my-set:7"}),
    ]
    chat, poem, math = parse_prompt_jsonl(lines)
    assert chat.messages[0] == {"role": "system", "content": "Be brief."} and chat.category == "chat"
    assert poem.messages == [{"role": "system", "content": "You are a poet."}, {"role": "user", "content": "Write a haiku."}]
    assert poem.tags == ["poetry", "short"] and math.tags == ["math", "easy"] and math.source == "my-set:7"


def test_csv_keeps_formula_like_text_as_text():
    (row,) = parse_prompt_csv(["prompt,category,tags\n", '"=HYPERLINK(""http://x"")",coding,a;b\n'])
    assert row.messages == [{"role": "user", "content": '=HYPERLINK("http://x")'}] and row.tags == ["a", "b"]


@pytest.mark.parametrize(
    ("format", "content", "expected"),
    [
        ("jsonl", '{"prompt": "ok"}\n{"messages": [{"role": "user"}]}\n{"prompt": ""}\n', [(2, "messages"), (3, "messages/prompt")]),
        ("jsonl", '{"prompt": "ok", "tags": 5}\n', [(1, "tags")]),
        ("csv", "question\nhello\n", [(1, "(header)")]),
        ("csv", "prompt,category\nfine,x\nextra,x,y\n", [(3, "(row)")]),
    ],
)
def test_bad_lines_are_listed_and_nothing_is_written(format, content, expected):
    project = ProjectFactory()
    with pytest.raises(ImportValidationError) as caught:
        import_file(project=project, file=content.encode(), name=f"f.{format}", format=format)
    assert [(e.line, e.field) for e in caught.value.errors] == expected
    assert not Prompt.objects.exists()


def test_gzip_and_non_utf8_files():
    project = ProjectFactory()
    raw = gzip.compress(b'{"prompt": "compressed"}\n')
    assert import_file(project=project, file=raw, name="p.jsonl.gz", format="jsonl").prompts_created == 1
    with pytest.raises(ImportValidationError, match="not UTF-8"):
        import_file(project=project, file='{"prompt": "caf\xe9"}'.encode("latin-1"), name="p.jsonl", format="jsonl")


def test_duplicates_within_the_file_and_the_project_are_counted():
    project = ProjectFactory()
    raw = b'{"prompt": "a"}\n{"prompt": "a"}\n{"prompt": "b"}\n'
    first = import_file(project=project, file=raw, name="p.jsonl", format="jsonl")
    second = import_file(project=project, file=raw, name="p.jsonl", format="jsonl")
    assert (first.prompts_created, first.duplicates, second.prompts_created, second.duplicates) == (2, 1, 0, 3)


def test_the_api_imports_for_leads_and_reports_line_errors(member_of):
    project = ProjectFactory()
    url = reverse("api-imports", kwargs={"slug": project.slug})
    lead = APIClient()
    lead.force_authenticate(member_of(project, Role.LEAD))
    ok = lead.post(url, {"format": "csv", "file": SimpleUploadedFile("p.csv", b"prompt\nhello\nworld\n")}, format="multipart")
    assert ok.status_code == 201 and ok.json()["prompts_created"] == 2
    bad = lead.post(url, {"format": "jsonl", "file": SimpleUploadedFile("p.jsonl", b'{"prompt": "x"}\nnope\n')}, format="multipart")
    assert bad.status_code == 400 and bad.json()["errors"] == [{"line": 2, "field": "(json)", "message": bad.json()["errors"][0]["message"]}]
    assert Prompt.objects.count() == 2
    labeler = APIClient()
    labeler.force_authenticate(member_of(project, Role.LABELER))
    denied = labeler.post(url, {"format": "csv", "file": SimpleUploadedFile("p.csv", b"prompt\nsneaky\n")}, format="multipart")
    assert denied.status_code == 403 and Prompt.objects.count() == 2


def test_the_project_page_upload_form(client, member_of):
    project = ProjectFactory()
    client.force_login(member_of(project, Role.LEAD))
    response = client.post(
        reverse("import-upload", kwargs={"slug": project.slug}),
        {"format": "jsonl", "file": SimpleUploadedFile("p.jsonl", b'{"prompt": "from the page"}\n')},
        follow=True,
    )
    assert "Imported 1 prompts" in response.content.decode() and Prompt.objects.get().messages[0]["content"] == "from the page"
    response = client.post(
        reverse("import-upload", kwargs={"slug": project.slug}),
        {"format": "jsonl", "file": SimpleUploadedFile("p.jsonl", b"garbage\n")},
        follow=True,
    )
    assert "Nothing was imported: 1 problem(s)" in response.content.decode() and Prompt.objects.count() == 1


def test_an_oversized_file_or_line_is_refused_whole(member_of, settings):
    project = ProjectFactory()
    url = reverse("api-imports", kwargs={"slug": project.slug})
    lead = APIClient()
    lead.force_authenticate(member_of(project, Role.LEAD))
    # A 1 KiB limit stands in for the 200 MiB one: the same code paths, without writing 200 MiB.
    settings.IMPORT_LIMITS = {"max_bytes": 1024}
    big = b"prompt\n" + b"hello there\n" * 200
    answer = lead.post(url, {"format": "csv", "file": SimpleUploadedFile("p.csv", big)}, format="multipart")
    assert answer.status_code == 400 and answer.json()["error"] == "too_large"
    assert "ARBITER_IMPORT_MAX_BYTES" in answer.json()["detail"]
    with pytest.raises(ImportValidationError, match="larger than 1,024 bytes"):
        import_file(project=project, file=big, name="p.csv", format="csv")  # the reader counts too (command path)
    settings.IMPORT_LIMITS = {"max_line_bytes": 64}
    long_line = b'{"prompt": "fine"}\n{"prompt": "' + b"x" * 60 + b'"}\n{"prompt": "also fine"}\n'
    with pytest.raises(ImportValidationError) as refused:
        import_file(project=project, file=long_line, name="p.jsonl", format="jsonl")
    assert [(e.line, e.field) for e in refused.value.errors] == [(2, "(line)")]
    assert "ARBITER_IMPORT_MAX_LINE_BYTES" in refused.value.errors[0].message
    assert Prompt.objects.count() == 0
