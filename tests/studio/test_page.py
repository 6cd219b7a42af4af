"""The Studio page and its assets as Django serves them (no browser needed): the shell, its
security headers, and every ES module it imports served by whitenoise as JavaScript."""

from __future__ import annotations

import re

from django.test import Client

from tests.conftest import ROOT

STATIC = ROOT / "studio" / "static" / "studio"


def test_the_page_is_served_with_a_policy_that_allows_this_server_only() -> None:
    response = Client().get("/studio/")
    assert response.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"  # no inline code, no CDN
    assert policy["frame-ancestors"] == "'none'" and response["X-Frame-Options"] == "DENY"
    page = response.content.decode()
    assert 'data-api-root="/api/v1/"' in page and 'data-ready-url="/readyz"' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script would need 'unsafe-inline'"
    assert not re.search(r"https?://", page), "the page references another host"
    assert Client().post("/studio/").status_code == 405


def test_every_module_is_served_as_javascript_and_imports_only_its_siblings() -> None:
    client = Client()
    modules = sorted(STATIC.glob("*.js"))
    assert {path.name for path in modules} >= {"main.js", "api.js", "rle.js", "render.js", "stage.js", "image.js", "video.js"}
    for path in modules:
        response = client.get(f"/static/studio/{path.name}")
        assert response.status_code == 200, path.name
        assert response["Content-Type"].startswith("text/javascript"), response["Content-Type"]
        for imported in re.findall(r'^import .* from "([^"]+)";$', path.read_text(), flags=re.MULTILINE):
            assert imported.startswith("./") and (STATIC / imported).is_file(), f"{path.name} imports {imported}"
    assert client.get("/static/studio/studio.css")["Content-Type"].startswith("text/css")


def test_the_site_root_leads_to_studio() -> None:
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"] == "/studio/"
