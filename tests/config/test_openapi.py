from django.core.management import call_command


def test_the_openapi_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = out.read_text()
    for path in ("/api/v1/projects/{slug}/next/", "/api/v1/assignments/{assignment_id}/submit/",
                 "/api/v1/projects/{slug}/sampling/", "/api/v1/projects/{slug}/rounds/", "/api/v1/members/"):
        assert path in schema


def test_the_api_docs_load_their_assets_from_our_static_files(admin_client):
    html = admin_client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
