"""Security headers on every kind of response: pages, API, login, docs; no inline script anywhere we serve."""

import re

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/login/", "/api/v1/sites/", "/healthz", "/api/docs/", "/models/"])
def test_security_headers(client, role_client, url):
    response = (role_client("viewer") if url == "/api/docs/" else client).get(url)
    csp = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";") if part.strip())
    assert directives["default-src"] == "'self'"
    assert "'unsafe-inline'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_pages_and_docs_have_no_inline_script(client, role_client):
    from facility import facility_file
    from facility.management.commands.seed_demo import DEMO_FILE

    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    login = client.get("/login/").content.decode()  # signed out
    assert "<form" in login and not re.search(r"<script(?![^>]*(src=|application/json))[^>]*>", login)
    client = role_client("viewer")
    for url in ["/", "/live/", "/loop/", "/control/approvals/", "/models/", "/api/docs/", "/api/redoc/",
                "/account/api-tokens/"]:
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        for attrs, content in re.findall(r"<script([^>]*)>(.*?)</script>", body, re.S):
            data_only = 'type="application/json"' in attrs
            assert data_only or ("src=" in attrs and not content.strip()), (url, attrs, content[:80])
        assert not re.search(r"\son(click|change|submit|load)=", body), url
    script = client.get("/api/docs/?script")
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content
