"""A loopback stand-in for the slice of Jira Cloud's REST API v3 the ticket plugin uses.

Create issue (201 ``{"id", "key", "self"}``), add watcher (204) and add comment (201), behind
basic auth against the configured credentials (401 otherwise); malformed bodies get 400 with
Jira's ``{"errorMessages", "errors"}`` shape and unknown issues 404.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_pm.demo._standin import Faults, StandIn

__all__ = ["JiraStandIn"]


def _error(status: int, message: str, **errors: str) -> JSONResponse:
    return JSONResponse({"errorMessages": [message], "errors": errors}, status_code=status)


def _is_adf(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and node.get("type") == "doc"
        and node.get("version") == 1
        and isinstance(node.get("content"), list)
    )


def _field_errors(fields: dict[str, Any]) -> dict[str, str]:
    errors = {}
    if not isinstance(fields.get("project"), dict) or not fields["project"].get("key"):
        errors["project"] = "project is required"
    if not isinstance(fields.get("summary"), str) or not fields["summary"].strip():
        errors["summary"] = "You must specify a summary of the issue."
    if not isinstance(fields.get("issuetype"), dict) or not fields["issuetype"].get("name"):
        errors["issuetype"] = "Specify an issue type"
    if "description" in fields and not _is_adf(fields["description"]):
        errors["description"] = "Operation value must be an Atlassian Document."
    return errors


class JiraStandIn(StandIn):
    """Jira on loopback; ``issues``, ``watchers`` and ``comments`` hold what it received."""

    def __init__(self, email: str, api_token: str, faults: Faults | None = None) -> None:
        super().__init__(faults)
        token = base64.b64encode(f"{email}:{api_token}".encode()).decode()
        self._authorization = f"Basic {token}"
        self._ids = itertools.count(10001)
        self.issues: dict[str, dict[str, Any]] = {}
        self.watchers: dict[str, list[str]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        issue = "/rest/api/3/issue"
        self.app = Starlette(
            routes=[
                Route(issue, self.endpoint(self._create), methods=["POST"]),
                Route(f"{issue}/{{key}}/watchers", self.endpoint(self._watch), methods=["POST"]),
                Route(f"{issue}/{{key}}/comment", self.endpoint(self._comment), methods=["POST"]),
            ]
        )

    def unauthorized(self, request: Request) -> Response | None:
        """401 unless the request carries the configured basic-auth credentials."""
        if request.headers.get("authorization") == self._authorization:
            return None
        return _error(401, "Client must be authenticated to access this resource.")

    async def _create(self, request: Request, body: Any) -> Response:
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return _error(400, "Request body must be an object with 'fields'.")
        if errors := _field_errors(fields):
            return _error(400, "Invalid fields.", **errors)
        issue_id = next(self._ids)
        key = f"{fields['project']['key']}-{len(self.issues) + 1}"
        self.issues[key] = fields
        url = f"{request.base_url}rest/api/3/issue/{issue_id}"
        return JSONResponse({"id": str(issue_id), "key": key, "self": url}, status_code=201)

    async def _watch(self, request: Request, body: Any) -> Response:
        key = request.path_params["key"]
        if key not in self.issues:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        if not isinstance(body, str) or not body:
            return _error(400, "Request body must be an account id string.")
        self.watchers.setdefault(key, []).append(body)
        return Response(status_code=204)

    async def _comment(self, request: Request, body: Any) -> Response:
        key = request.path_params["key"]
        if key not in self.issues:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        if not isinstance(body, dict) or not _is_adf(body.get("body")):
            return _error(400, "Comment body must be an Atlassian Document.")
        comment_id = str(next(self._ids))
        self.comments.setdefault(key, []).append(body["body"])
        url = f"{request.base_url}rest/api/3/issue/{key}/comment/{comment_id}"
        return JSONResponse({"id": comment_id, "self": url, "body": body["body"]}, status_code=201)
