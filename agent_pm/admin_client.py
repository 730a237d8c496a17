"""Plugin administration for the CLI: on the manifest file directly, or through a running server.

Both clients offer the same operations and return the same JSON-ready shapes as the REST API, so
the CLI formats their answers without knowing which one it talks to. Failures raise
:class:`AdminError` (or a platform error in file mode) carrying one printable line.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import anyio
import msgspec

from agent_pm.audit import CLI_USER_AGENT, Actor, AuditLog
from agent_pm.audited import AuditedAdmin
from agent_pm.plugins.failures import FailureFilter, parse_since
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.replay import replay_effect
from agent_pm.settings import Settings

__all__ = [
    "AdminClient",
    "AdminError",
    "FailureQuery",
    "FileClient",
    "HttpClient",
    "RefusedChangeError",
]

T = TypeVar("T")


class AdminError(Exception):
    """An administration request failed; the message is one line for the operator."""


class RefusedChangeError(AdminError):
    """The server refused a change as invalid (HTTP 422), or it cannot even be sent (text that
    is not valid Unicode, such as a non-UTF-8 byte in an argument); nothing was written."""


@dataclass(frozen=True)
class FailureQuery:
    """Which recorded failures a command is about, as the CLI options give them."""

    hook: str | None = None
    since: str | None = None
    limit: int = 100

    def params(self) -> dict[str, str]:
        given = {"hook": self.hook, "since": self.since, "limit": self.limit}
        return {key: str(value) for key, value in given.items() if value is not None}

    def where(self, plugin: str) -> FailureFilter:
        since = parse_since(self.since) if self.since is not None else None
        return FailureFilter(plugin, self.hook, since)


class AdminClient(Protocol):
    """The plugin operations the CLI needs."""

    def list_plugins(self, node: str | None = None) -> dict[str, Any]: ...
    def get(self, name: str) -> dict[str, Any]: ...
    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]: ...
    def reload(self, name: str | None) -> dict[str, Any]: ...
    def update_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]: ...
    def discover(self) -> list[dict[str, Any]]: ...
    def install(self, *, entry_point: str | None, module: str | None, **options: Any) -> Any: ...
    def remove(self, name: str) -> str: ...
    def failures(self, name: str, query: FailureQuery) -> dict[str, Any]: ...
    def replay(self, name: str, query: FailureQuery, *, dry_run: bool) -> dict[str, Any]: ...
    def replay_one(self, name: str, failure_id: int, *, force: bool) -> dict[str, Any]: ...
    def audit(self, since: str | None, limit: int | None) -> list[dict[str, Any]]: ...
    def stats(
        self, name: str, window: str, hook: str | None, node: str | None = None
    ) -> dict[str, Any]: ...
    def reset_quarantine(self, name: str, hook: str | None) -> dict[str, Any]: ...
    def set_isolation(self, name: str, mode: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


class FileClient:
    """Works on the manifest file: each operation opens a registry on it, acts, and closes it.

    Changes are audited under ``DATA_DIR`` as the operating system user running the command.
    """

    def __init__(self, manifest: Path, settings: Settings) -> None:
        self.manifest = manifest
        self.settings = settings
        self.audit_log = AuditLog(settings.data_dir / "audit")
        self.actor = Actor(_os_user(), "admin", "cli")

    def _run(self, operation: Callable[[PluginRegistry], Awaitable[T]]) -> T:
        async def main() -> T:
            async with PluginRegistry(self.manifest, self.settings) as registry:
                return await operation(registry)

        return anyio.run(main)

    def _admin(self, operation: Callable[[AuditedAdmin], Awaitable[T]]) -> T:
        def audited(registry: PluginRegistry) -> Awaitable[T]:
            return operation(AuditedAdmin(registry, self.audit_log, self.actor))

        return self._run(audited)

    def list_plugins(self, node: str | None = None) -> dict[str, Any]:
        if node is not None:
            raise AdminError(_NEEDS_SERVER.format(what="a cluster node's figures"))

        async def read(registry: PluginRegistry) -> dict[str, Any]:
            return {
                "plugins": [_plain(info) for info in registry.list_metadata()],
                "revision": registry.revision,
                "config_errors": list(registry.config_errors),
            }

        return self._run(read)

    def get(self, name: str) -> dict[str, Any]:
        async def read(registry: PluginRegistry) -> dict[str, Any]:
            return _plain(registry.metadata_for(name))

        return self._run(read)

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        async def set_enabled(admin: AuditedAdmin) -> dict[str, Any]:
            return _plain(await admin.set_enabled(name, enabled))

        return self._admin(set_enabled)

    def reload(self, name: str | None) -> dict[str, Any]:
        async def reload(admin: AuditedAdmin) -> dict[str, Any]:
            if name is not None:
                return {"plugin": _plain(await admin.reload_plugin(name))}
            plugins = [_plain(info) for info in await admin.reload()]
            return {"plugins": plugins, "revision": admin.registry.revision}

        return self._admin(reload)

    def update_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        async def update(admin: AuditedAdmin) -> dict[str, Any]:
            return _plain(await admin.update_config(name, config))

        return self._admin(update)

    def discover(self) -> list[dict[str, Any]]:
        async def discover(registry: PluginRegistry) -> list[dict[str, Any]]:
            return [msgspec.to_builtins(entry) for entry in await registry.discover_plugins()]

        return self._run(discover)

    def install(
        self, *, entry_point: str | None, module: str | None, **options: Any
    ) -> dict[str, Any]:
        async def install(admin: AuditedAdmin) -> dict[str, Any]:
            if entry_point is not None:
                return _plain(await admin.install_entry_point(entry_point, **options))
            assert module is not None
            return _plain(await admin.install(module, **options))

        return self._admin(install)

    def remove(self, name: str) -> str:
        async def remove(admin: AuditedAdmin) -> str:
            await admin.remove(name)
            return name

        return self._admin(remove)

    def audit(self, since: str | None, limit: int | None) -> list[dict[str, Any]]:
        """The local audit log's records, read like ``GET /audit`` reads them."""
        from agent_pm.api import AUDIT_PAGE_SIZE, parse_audit_since

        records = anyio.run(self.audit_log.read, parse_audit_since(since), limit or AUDIT_PAGE_SIZE)
        return [msgspec.to_builtins(record) for record in records]

    def failures(self, name: str, query: FailureQuery) -> dict[str, Any]:
        async def read(registry: PluginRegistry) -> dict[str, Any]:
            registry.metadata_for(name, history=False)  # an unknown plugin is an error
            store = registry.failures.store
            where = query.where(name)
            failures, matched = await anyio.to_thread.run_sync(
                lambda: store.page(where, query.limit, payloads=True)
            )
            stats = await anyio.to_thread.run_sync(store.stats)
            listing = {"plugin": name, "failures": failures, "matched": matched, "store": stats}
            data: dict[str, Any] = msgspec.to_builtins(listing)
            return data

        return self._run(read)

    def replay(self, name: str, query: FailureQuery, *, dry_run: bool) -> dict[str, Any]:
        async def replay(admin: AuditedAdmin) -> dict[str, Any]:
            registry = admin.registry
            registry.metadata_for(name, history=False)
            where = query.where(name)

            def matching() -> Any:
                return registry.replays.replay_matching(where, limit=query.limit, dry_run=dry_run)

            # A dry run changes nothing, so only real replays are audited.
            report = await (
                matching()
                if dry_run
                else admin.run("replay_all", name, matching, effect=replay_effect)
            )
            data: dict[str, Any] = msgspec.to_builtins(report)
            return data

        return self._admin(replay)

    def replay_one(self, name: str, failure_id: int, *, force: bool) -> dict[str, Any]:
        async def replay(admin: AuditedAdmin) -> dict[str, Any]:
            replays = admin.registry.replays
            one = lambda: replays.replay(name, failure_id, force=force)  # noqa: E731
            outcome = await admin.run("replay", name, one, effect=replay_effect)
            data: dict[str, Any] = msgspec.to_builtins(outcome)
            return data

        return self._admin(replay)

    def stats(
        self, name: str, window: str, hook: str | None, node: str | None = None
    ) -> dict[str, Any]:
        raise AdminError(_NEEDS_SERVER.format(what="windowed stats"))

    def reset_quarantine(self, name: str, hook: str | None) -> dict[str, Any]:
        raise AdminError(_NEEDS_SERVER.format(what="quarantine"))

    def set_isolation(self, name: str, mode: str) -> dict[str, Any]:
        raise AdminError(_NEEDS_SERVER.format(what="moves in and out of process"))

    def close(self) -> None:
        """Nothing stays open between operations."""


def _os_user() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name for this uid (a bare container)
        return f"os:uid-{os.getuid()}"


_NEEDS_SERVER = (
    "{what} live in a running server, not in the manifest file: pass --url (or set"
    " PLUGINS_API_URL) to ask one"
)


def _plain(metadata: PluginInfo) -> dict[str, Any]:
    """Typed metadata as the JSON-shaped mapping the REST API answers with."""
    plain: dict[str, Any] = msgspec.to_builtins(metadata)
    return plain


class HttpClient:
    """Talks to a running server's REST API."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float = 30.0) -> None:
        import httpx  # only the HTTP mode pays for importing it

        headers = {"User-Agent": CLI_USER_AGENT}
        if api_key:
            headers["X-API-Key"] = api_key
        self._httpx = httpx
        self._etag: str | None = None
        self._read_at: dict[str, str] = {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        path = "/".join(quote(part, safe="") for part in path.split("/"))
        try:
            content = msgspec.json.encode(body) if body is not None else None
        except UnicodeEncodeError as exc:
            raise RefusedChangeError(f"not valid Unicode text (a non-UTF-8 byte?): {exc}") from None
        headers = dict(headers or {})
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._client.request(
                method, path, content=content, headers=headers, params=params
            )
        except self._httpx.HTTPError as exc:
            raise AdminError(f"cannot reach {self._client.base_url}: {exc}") from None
        try:
            data = msgspec.json.decode(response.content) if response.content else {}
        except msgspec.DecodeError:
            data = {}
        if response.is_error:
            detail = data.get("detail") if isinstance(data, dict) else None
            error = RefusedChangeError if response.status_code == 422 else AdminError
            raise error(f"{detail or response.reason_phrase} (HTTP {response.status_code})")
        self._etag = response.headers.get("etag")
        return data

    def list_plugins(self, node: str | None = None) -> dict[str, Any]:
        params = {"node": node} if node else None
        data: dict[str, Any] = self._call("GET", "/plugins", params=params)
        return data

    def get(self, name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = self._call("GET", f"/plugins/{name}")["plugin"]
        if self._etag is not None:
            self._read_at[name] = self._etag
        return metadata

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        action = "enable" if enabled else "disable"
        metadata: dict[str, Any] = self._call("POST", f"/plugins/{name}/{action}")["plugin"]
        return metadata

    def reload(self, name: str | None) -> dict[str, Any]:
        data: dict[str, Any] = self._call(
            "POST", f"/plugins/{name}/reload" if name else "/plugins/reload"
        )
        return data

    def update_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Replace the config; if it was read with :meth:`get`, only if nothing changed since."""
        # The CLI merges into the config it read: a change in between must fail (412), not be
        # silently overwritten.
        read_at = self._read_at.get(name)
        headers = {"If-Match": read_at} if read_at else {}
        body = {"config": config}
        response = self._call("POST", f"/plugins/{name}/config", body, headers)
        metadata: dict[str, Any] = response["plugin"]
        return metadata

    def discover(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self._call("GET", "/plugins/discover")["entry_points"]
        return entries

    def install(
        self, *, entry_point: str | None, module: str | None, **options: Any
    ) -> dict[str, Any]:
        body = {"entry_point": entry_point, "module": module, **options}
        body = {key: value for key, value in body.items() if value is not None}
        metadata: dict[str, Any] = self._call("POST", "/plugins/install", body)["plugin"]
        return metadata

    def remove(self, name: str) -> str:
        removed: str = self._call("DELETE", f"/plugins/{name}")["removed"]
        return removed

    def failures(self, name: str, query: FailureQuery) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", f"/plugins/{name}/failures", params=query.params())
        return data

    def replay(self, name: str, query: FailureQuery, *, dry_run: bool) -> dict[str, Any]:
        given = {"hook": query.hook, "since": query.since, "limit": query.limit}
        body = {key: value for key, value in given.items() if value is not None}
        body["dry_run"] = dry_run
        data: dict[str, Any] = self._call("POST", f"/plugins/{name}/failures/replay", body)
        return data

    def replay_one(self, name: str, failure_id: int, *, force: bool) -> dict[str, Any]:
        params = {"force": "true"} if force else None
        path = f"/plugins/{name}/failures/{failure_id}/replay"
        data: dict[str, Any] = self._call("POST", path, params=params)
        return data

    def audit(self, since: str | None, limit: int | None) -> list[dict[str, Any]]:
        params = {"since": since, "limit": str(limit) if limit is not None else None}
        query = {key: value for key, value in params.items() if value is not None}
        records: list[dict[str, Any]] = self._call("GET", "/audit", params=query)["records"]
        return records

    def stats(
        self, name: str, window: str, hook: str | None, node: str | None = None
    ) -> dict[str, Any]:
        params = {"window": window, **({"hook": hook} if hook else {})}
        if node:
            params["node"] = node
        data: dict[str, Any] = self._call("GET", f"/plugins/{name}/stats", params=params)
        return data

    def reset_quarantine(self, name: str, hook: str | None) -> dict[str, Any]:
        params = {"hook": hook} if hook else None
        path = f"/plugins/{name}/quarantine/reset"
        plugin: dict[str, Any] = self._call("POST", path, params=params)["plugin"]
        return plugin

    def set_isolation(self, name: str, mode: str) -> dict[str, Any]:
        path = f"/plugins/{name}/isolation"
        plugin: dict[str, Any] = self._call("POST", path, {"mode": mode})["plugin"]
        return plugin

    def close(self) -> None:
        self._client.close()
