from django.core.management import call_command


def test_the_openapi_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = out.read_text()
    for path in ("/api/v1/projects/{slug}/next/", "/api/v1/assignments/{assignment_id}/submit/",
                 "/api/v1/projects/{slug}/sampling/", "/api/v1/projects/{slug}/rounds/", "/api/v1/members/"):
        assert path in schema
