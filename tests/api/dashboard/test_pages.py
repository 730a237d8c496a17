"""Login, the overview, plugin and admin pages, assets and compression, served in-process."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from starlette.testclient import TestClient

from agent_pm.api.dashboard._render import ASSETS
from tests.api.dashboard.conftest import fire, login, registry
from tests.api.dashboard_app import ADMIN_KEY, READ_KEY, SECRET_VALUE, dashboard_settings


def test_dashboard_without_session_redirects_to_login(client: TestClient) -> None:
    for path in ["/dashboard", "/dashboard/admin", "/dashboard/plugins/echo"]:
        response = client.get(path, follow_redirects=False)
        assert response.status_code in (303, 401), path
    response = client.get("/dashboard", follow_redirects=False)
    assert response.headers["location"] == "/login"


def test_login_page_has_security_headers_and_no_inline_script(client: TestClient) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script>" not in response.text and "style=" not in response.text
    assert re.search(r'<script src="/static/[0-9a-f]{12}/login.js">', response.text)


def test_login_with_wrong_key_is_refused(client: TestClient) -> None:
    response = client.post("/login", data={"api_key": "nope"})
    assert response.status_code == 401 and "That key is not valid." in response.text


def test_login_sets_a_strict_http_only_cookie(client: TestClient) -> None:
    response = client.post("/login", data={"api_key": READ_KEY}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")


def test_login_over_https_sets_a_secure_cookie(manifest: Path) -> None:
    from tests.api.dashboard_app import build_app

    with TestClient(build_app(manifest, dashboard_settings(manifest)), base_url="https://t") as c:
        response = c.post("/login", data={"api_key": READ_KEY}, follow_redirects=False)
    assert "Secure" in response.headers["set-cookie"]


def test_login_from_another_origin_is_refused(client: TestClient) -> None:
    headers = {"Origin": "http://evil.example"}
    response = client.post("/login", data={"api_key": ADMIN_KEY}, headers=headers)
    assert response.status_code == 403


def test_overview_lists_every_plugin_worst_first_with_the_strip(client: TestClient) -> None:
    login(client)
    fire(client, times=3)
    page = client.get("/dashboard").text
    order = re.search(r'data-order="([^"]+)"', page)
    assert order is not None
    names = order.group(1).split(",")
    assert names[:2] == ["broken", "failing"] and set(names) == {
        "echo", "configured", "failing", "secretive", "needs_token", "broken",
    }  # fmt: skip
    strip = page[page.index('id="status-strip"') : page.index("</ul>")]
    assert "<strong>1</strong> plugin invalid" in strip and "plugins healthy" in strip
    assert "is not a PluginBase subclass" in page and "missing secrets API_TOKEN" in page
    assert 'id="c-failing-ratio"' in page and "100 %" in page
    assert 'href="/dashboard/plugins/failing"' in page


def test_overview_state_lives_in_the_url(client: TestClient) -> None:
    login(client)
    page = client.get("/dashboard?plugin=ech&sort=name&dir=desc").text
    assert 'data-order="echo"' in page
    assert 'value="ech"' in page and 'aria-sort="descending"' in page
    assert 'href="/dashboard?plugin=ech&amp;sort=name"' in page  # the header flips the order
    assert "&#34;query&#34;: &#34;plugin=ech&amp;sort=name&amp;dir=desc&#34;" in page
    odd = client.get("/dashboard?plugin=a%26b").text
    assert 'href="/dashboard?plugin=a%26b&amp;sort=name"' in odd
    empty = client.get("/dashboard?health=quarantined").text
    assert "No plugin matches these filters." in empty


def test_plugin_page_shows_hooks_chart_errors_and_filtered_history(client: TestClient) -> None:
    login(client)
    fire(client, times=3)
    fire(client, "pre_plan")
    page = client.get("/dashboard/plugins/failing?status=error").text
    assert "<h1" in page and ">failing</h1>" in page
    assert 'option value="error" selected' in page
    assert page.count('class="mark m-error"') == 3
    assert page.count('<tr data-seq="') == 3
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} UTC", page)
    assert 'data-copy="' in page and "Copy seq" in page
    assert "RuntimeError: handler exploded" in page and "Error groups" in page
    only_success = client.get("/dashboard/plugins/failing?status=success").text
    assert "No success calls of" in only_success
    echo = client.get("/dashboard/plugins/echo?hook=pre_plan").text
    assert 'option value="pre_plan" selected' in echo and echo.count('<tr data-seq="') == 1


def test_plugin_page_shows_config_with_its_schema_and_masks_secrets(client: TestClient) -> None:
    login(client)
    fire(client)
    page = client.get("/dashboard/plugins/configured").text
    assert "<code>retries</code>" in page and "integer" in page and "<code>3</code>" in page
    secret = client.get("/dashboard/plugins/secretive").text
    assert SECRET_VALUE not in secret and "&#34;API_TOKEN&#34;: &#34;***&#34;" in secret
    assert "upstream refused token ***" in secret
    assert ADMIN_KEY not in secret and READ_KEY not in secret


def test_unknown_plugin_page_is_a_404(client: TestClient) -> None:
    login(client)
    response = client.get("/dashboard/plugins/ghost")
    assert response.status_code == 404 and "No plugin named" in response.text


def test_read_only_session_sees_no_admin_controls(client: TestClient) -> None:
    login(client, READ_KEY)
    page = client.get("/dashboard").text
    assert "/dashboard/admin" not in page and "read access" in page
    assert client.get("/dashboard/admin").status_code == 403
    assert client.get("/dashboard/admin/cards/echo").status_code == 403
    assert "Edit in Administration" not in client.get("/dashboard/plugins/echo").text


def test_admin_page_has_cards_with_guards_and_the_install_form(client: TestClient) -> None:
    login(client)
    page = client.get("/dashboard/admin").text
    assert 'id="admin-echo"' in page and 'name="revision"' in page and 'name="base"' in page
    assert "Install a plugin" in page and "hello — hello_plugin.plugin:HelloPlugin" in page
    assert 'id="notices"' in page and 'role="status"' in page


def test_logout_needs_csrf_and_clears_the_session(client: TestClient) -> None:
    csrf = login(client, READ_KEY)
    assert client.post("/logout").status_code == 403
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_assets_have_versioned_urls_with_long_caching(client: TestClient) -> None:
    login(client)
    page = client.get("/dashboard").text
    urls = re.findall(r'(?:src|href)="(/static/[0-9a-f]{12}/[^"]+)"', page)
    assert {u.rsplit("/", 1)[1] for u in urls} >= {"dashboard.css", "htmx.min.js", "console.js"}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    css = client.get(ASSETS.url("dashboard.css"))
    assert css.headers["content-type"].startswith("text/css")
    stale = client.get("/static/000000000000/dashboard.css")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    assert client.get("/static/0/../pyproject.toml").status_code == 404
    assert client.get("/static/0/nothing.js").status_code == 404


def test_pages_are_gzipped_from_one_kilobyte(manifest: Path) -> None:
    from agent_pm.api._app import create_app

    app = create_app(dashboard_settings(manifest), manifest_path=manifest, watch=False)
    with TestClient(app) as client:
        login(client)
        page = client.get("/dashboard", headers={"Accept-Encoding": "gzip"})
        assert page.headers["content-encoding"] == "gzip"
        listing = client.get(
            "/plugins", headers={"Accept-Encoding": "gzip", "X-API-Key": ADMIN_KEY}
        )
        assert listing.headers["content-encoding"] == "gzip"
        small = client.get("/health", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in small.headers
        raw = client.get("/dashboard", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers
        assert len(gzip.compress(raw.content)) < len(raw.content)
    assert registry  # the helper module is shared with the other console tests
