"""Property-based API testing: schemathesis drives every operation of ``/openapi.json``.

Each generated case is sent three times, in-process, to one app whose registry a fixture keeps
open: with the admin key, with the read key and with no key. Every response must be documented
(status, content type, body schema, headers) and no response may be a server error. Without a
key every operation but ``/health`` answers 401; with the read key every write answers 403.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.case import Case
from starlette.applications import Starlette
from starlette.testclient import TestClient

from agent_pm.api._app import PUBLIC_PATHS, create_app
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN_KEY, MANIFEST, READ_KEY

CASES = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Random path parameters almost never name a real plugin or hook; these make the success paths
# (and the destructive ones, whose later cases then meet documented 404s) part of the run.
KNOWN = {
    "name": [None, "echo", "strict", "routed", "secretive", "unencodable", "broken"],
    "hook": [None, "post_plan", "pre_plan"],
    "module": [None, "tests.fixtures.plugins:Echo", "tests.fixtures.route_plugins:Routed"],
}
KEYS: dict[str, str | None] = {"admin": ADMIN_KEY, "read": READ_KEY, "none": None}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Starlette, TestClient]]:
    """The app and a client on one event loop, the registry entered once for the module.

    Operations that remove or reload plugins change the registry between cases; what they
    answer then (404, 409, 412) is documented, so the state need not be rebuilt.
    """
    directory: Path = tmp_path_factory.mktemp("schemathesis")
    manifest = directory / "plugins.yaml"
    manifest.write_text(MANIFEST)
    env = {
        "PLUGIN_CONFIG_PATH": str(manifest),
        "API_KEY": READ_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "PLUGIN_INSTALL_ALLOW": "tests.fixtures.plugins,tests.fixtures.route_plugins",
        "DATA_DIR": str(directory / "data"),
    }
    api_settings = Settings.from_env(env)
    with start_blocking_portal() as portal:
        registry = PluginRegistry(manifest, api_settings)
        with portal.wrap_async_context_manager(registry):
            app = create_app(api_settings, registry=registry, watch=False)
            with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
                client = TestClient(app, raise_server_exceptions=False)
                client.portal = portal  # requests run on the registry's event loop
                yield app, client


def _document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json", headers={"X-API-Key": READ_KEY})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations() -> list[tuple[str, str]]:
    from agent_pm.api import _audit as audit
    from agent_pm.api import _metrics as metrics
    from agent_pm.api import _openapi as openapi
    from agent_pm.api import _rest as rest

    operations = (*rest.OPERATIONS, metrics.OPERATION, audit.OPERATION, openapi.SELF)
    return [(op.method, op.path) for op in operations]


def _send(client: TestClient, case: Case, key: str | None) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v for k, v in kwargs.pop("headers").items() if k.lower() != "x-api-key"}
    if key is not None:
        headers["X-API-Key"] = key
    assert not kwargs.pop("cookies", None)  # the document declares no cookie parameters
    data = kwargs.pop("data", None)
    if data is not None:
        kwargs["content" if isinstance(data, bytes | str) else "data"] = data
    return client.request(headers=headers, **kwargs)


def _check_auth(case: Case, role: str, response: httpx.Response) -> None:
    path, method = case.operation.path, case.operation.method.upper()
    if role == "none" and path not in PUBLIC_PATHS:
        assert response.status_code == 401, (method, path, response.text)
    if role == "read" and method != "GET":
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["detail"] == "this operation needs the admin key"


@pytest.mark.parametrize(("method", "path"), _operations())
def test_every_operation_answers_as_documented(
    served: tuple[Starlette, TestClient], method: str, path: str
) -> None:
    _, client = served
    document = _document(client)
    schema = schemathesis.openapi.from_dict(document)
    operation = schema[path][method]
    seen = {"cases": 0}
    statuses: Counter[tuple[str, int]] = Counter()

    @given(
        case=operation.as_strategy(),
        known=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in KNOWN.items()}),
    )
    @settings(
        max_examples=CASES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case, known: dict[str, str | None]) -> None:
        seen["cases"] += 1
        for param, value in known.items():
            if value is not None and param in (case.path_parameters or {}):
                case.path_parameters[param] = value
        if known["module"] is not None and path == "/plugins/install":
            case.body = {"module": known["module"], "name": f"fuzz{seen['cases']}"}
        for role, key in KEYS.items():
            response = _send(client, case, key)
            case.validate_response(response, checks=CHECKS)
            _check_auth(case, role, response)
            statuses[role, response.status_code] += 1

    run()
    # The success path (and its response schema) was part of the run, not only refusals.
    assert any(role == "admin" and 200 <= status < 300 for role, status in statuses), statuses
    # An operation with nothing to vary (``/health``: no parameter, no key) is one case.
    raw = document["paths"][path][method.lower()]
    varies = bool(raw["parameters"]) or raw.get("security") != []
    assert seen["cases"] >= (CASES if varies else 1)


def test_a_malformed_if_match_is_a_documented_400(served: tuple[Starlette, TestClient]) -> None:
    _, client = served
    headers = {"X-API-Key": ADMIN_KEY, "If-Match": '"not-a-revision"'}
    response = client.post("/plugins/echo/disable", headers=headers)
    assert response.status_code == 400
    documented = _document(client)["paths"]["/plugins/{name}/disable"]["post"]["responses"]
    assert "400" in documented
