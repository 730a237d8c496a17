"""Static assets under versioned URLs: ``/static/<digest>/<path>``, cached for a year.

The digest is a hash of the file's bytes, so a changed file gets a new URL and browsers never
keep a stale copy; the unchanged ones stay cached across deploys. A request for an outdated
digest (a page rendered before a deploy) still gets the current file, marked ``no-cache``.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

__all__ = ["IMMUTABLE", "AssetFiles"]

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}


class AssetFiles:
    """The files of one directory, each served under its content digest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    @cache  # noqa: B019  # one instance per app; files do not change while it runs
    def digest(self, path: str) -> str:
        return hashlib.sha256(self._file(path).read_bytes()).hexdigest()[:12]

    def url(self, path: str) -> str:
        """The versioned URL of ``path`` (relative to the directory)."""
        return f"/static/{self.digest(path)}/{path}"

    def _file(self, path: str) -> Path:
        file = (self.directory / path).resolve()
        if not file.is_relative_to(self.directory) or not file.is_file():
            raise HTTPException(404, "no such asset")
        return file

    async def serve(self, request: Request) -> Response:
        path = request.path_params["path"]
        file = self._file(path)
        current = request.path_params["digest"] == self.digest(path)
        headers = {"Cache-Control": IMMUTABLE if current else REVALIDATE}
        media_type = _TYPES.get(file.suffix)
        return FileResponse(file, headers=headers, media_type=media_type)

    def route(self) -> Route:
        return Route("/static/{digest}/{path:path}", self.serve, methods=["GET", "HEAD"])
