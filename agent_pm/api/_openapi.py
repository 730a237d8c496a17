"""The OpenAPI 3.1 document, generated from the msgspec structs the endpoints speak.

Each endpoint module describes its endpoints as :class:`Operation` values next to the handlers;
this module turns the list into paths, parameters, error responses and the API-key scheme.
msgspec's JSON Schema (draft 2020-12) is what OpenAPI 3.1 uses, so the component schemas need no
translation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api._auth import READ_METHODS
from agent_pm.api._errors import ErrorBody

__all__ = ["Operation", "build_document", "routes"]

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_WORDS = re.compile(r"\W+")
TEXT = "text"


@dataclass(frozen=True)
class Operation:
    """One endpoint as the document describes it.

    ``response`` is a struct type, or ``TEXT`` for a plain-text body; ``query`` lists
    ``(name, type, description)``; ``errors`` are the statuses beyond the auth ones.
    """

    method: str
    path: str
    summary: str
    response: Any
    status: int = 200
    body: Any = None
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, type, str], ...] = ()
    public: bool = False

    @property
    def admin(self) -> bool:
        return self.method not in READ_METHODS


def _schema_types(operations: Sequence[Operation]) -> list[Any]:
    types: list[Any] = [ErrorBody]
    for op in operations:
        for kind in (op.body, op.response):
            if kind is not None and kind != TEXT and kind not in types:
                types.append(kind)
    return types


def _content(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": schema}}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    for name, kind, description in op.query:
        schema = msgspec.json.schema(kind)
        params.append({"name": name, "in": "query", "description": description, "schema": schema})
    if op.admin:
        params.append(
            {
                "name": "If-Match",
                "in": "header",
                "description": "Registry revision the change is based on; stale means 412.",
                "schema": {"type": "string"},
            }
        )
    return params


def _responses(op: Operation, schemas: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if op.response == TEXT:
        ok = _content({"type": "string"}, "text/plain")
    else:
        ok = _content(schemas[op.response])
    responses: dict[str, Any] = {str(op.status): {"description": "success", "content": ok}}
    statuses = set(op.errors)
    if not op.public:
        statuses |= {401, 403, 429}  # 429: too many wrong keys from the caller's address
    if op.admin:
        # 400: an If-Match that is not a revision number; 503: a cluster node without Redis.
        statuses |= {400, 412, 503}
    if op.body is not None:
        statuses |= {400, 413}
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": _content(schemas[ErrorBody]),
        }
    return responses


def _operation(op: Operation, schemas: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}_{_WORDS.sub('_', op.path).strip('_')}",
        "parameters": _parameters(op),
        "responses": _responses(op, schemas),
    }
    if op.public:
        doc["security"] = []
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": _content(schemas[op.body])}
    return doc


def build_document(operations: Sequence[Operation], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations``."""
    types = _schema_types(operations)
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    schemas = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agent PM plugin platform", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"ApiKey": []}],
    }


class OpenAPIDocument(msgspec.Struct):
    """Stands for the document in its own entry (its shape is the OpenAPI 3.1 schema)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


SELF = Operation("GET", "/openapi.json", "This OpenAPI document", OpenAPIDocument)


def routes(operations: Sequence[Operation], version: str) -> list[BaseRoute]:
    """The ``/openapi.json`` route describing ``operations`` (and itself)."""
    everything = (*operations, SELF)

    @cache  # built on first request, not at start-up: nothing changes it at run time
    def encoded() -> bytes:
        return msgspec.json.encode(build_document(everything, version))

    async def openapi(request: Request) -> Response:
        return Response(encoded(), media_type="application/json")

    return [Route(SELF.path, openapi, methods=["GET"])]
