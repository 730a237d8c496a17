"""The OpenAPI document covers every route, its errors and the auth scheme."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from tests.api.conftest import READ, is_dashboard

pytestmark = pytest.mark.anyio


async def document(client: httpx.AsyncClient) -> dict:
    response = await client.get("/openapi.json", headers=READ)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def test_openapi_covers_every_route(app: Starlette, client: httpx.AsyncClient) -> None:
    doc = await document(client)
    assert doc["openapi"] == "3.1.0"
    templates = {re.sub(r"{\w+}", "{}", path): path for path in doc["paths"]}
    for route in app.routes:
        if isinstance(route, Route) and not is_dashboard(route.path):
            documented = doc["paths"][templates[re.sub(r"{\w+}", "{}", route.path)]]
            for method in route.methods or ():
                if method != "HEAD":
                    assert method.lower() in documented, (method, route.path)


async def test_openapi_describes_bodies_errors_and_auth(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert doc["security"] == [{"ApiKey": []}]
    assert doc["paths"]["/health"]["get"]["security"] == []
    install = doc["paths"]["/plugins/install"]["post"]
    body = install["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InstallBody"}
    assert {"entry_point", "module", "config"} <= set(
        doc["components"]["schemas"]["InstallBody"]["properties"]
    )
    assert {"201", "400", "401", "403", "404", "409", "412", "413", "422"} <= set(
        install["responses"]
    )
    error = install["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorBody"}
    assert {"error", "detail"} <= set(doc["components"]["schemas"]["ErrorBody"]["properties"])
    params = {p["name"]: p for p in install["parameters"]}
    assert params["If-Match"]["in"] == "header"
    history = doc["paths"]["/plugins/{name}/history"]["get"]
    names = {(p["name"], p["in"]) for p in history["parameters"]}
    assert names == {("name", "path"), ("hook", "query"), ("limit", "query")}
    assert "412" not in history["responses"]
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in metrics


async def test_every_reference_resolves(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    schemas = doc["components"]["schemas"]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.removeprefix("#/components/schemas/") in schemas, ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
