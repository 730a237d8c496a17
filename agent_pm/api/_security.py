"""Who may call the operator surfaces: keys and their roles, named keys, origins and throttling.

The one place for these rules; the auth middleware, the dashboard and its sessions all ask here.

- :class:`ApiKeys`: ``ADMIN_API_KEY`` is admin and ``API_KEY`` read (admin when alone), plus the
  named keys of ``API_KEYS_FILE``. Keys shorter than :data:`MIN_KEY_LENGTH` are refused at start.
- :class:`NamedKeys`: the keys file, one ``NAME ROLE sha256:HEX`` line per key (``#`` comments),
  re-read when its content digest changes, so keys can be added, rotated and revoked without a
  restart. Only the SHA-256 of each key is stored: keys are high-entropy random strings
  (``agent-pm keys hash`` makes one), for which a slow password hash would add nothing but a
  per-request cost.
- :func:`same_origin`: whether a browser request comes from this server's own origin.
- :class:`Throttle`: failed keys and logins per client address, a leaky bucket answering 429.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus
from starlette.requests import HTTPConnection
from starlette.types import Scope

from agent_pm.settings import Settings

__all__ = [
    "ENV_ADMIN",
    "ENV_READ",
    "MIN_KEY_LENGTH",
    "QUERY_KEY_NAMES",
    "ApiKeys",
    "Caller",
    "NamedKey",
    "NamedKeys",
    "Role",
    "Throttle",
    "client_address",
    "key_in_query",
    "named_key_line",
    "same_origin",
]

logger = logging.getLogger(__name__)

Role = Literal["read", "admin"]
ROLES: tuple[Role, ...] = ("read", "admin")
MIN_KEY_LENGTH = 16
MAX_KEYS_FILE_BYTES = 1024 * 1024
ENV_ADMIN, ENV_READ = "ADMIN_API_KEY", "API_KEY"
# Query parameters that look like a key: refused, since a URL ends up in access logs and history.
QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "api-key", "x-api-key", "x_api_key"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_LINE = re.compile(r"(?P<name>\S+)\s+(?P<role>\S+)\s+sha256:(?P<digest>[0-9a-f]{64})")


@dataclass(frozen=True)
class Caller:
    """Who made a request: the key's name (or session's actor) and the role it grants."""

    name: str
    role: Role


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _check_length(variable: str, key: str) -> None:
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(
            f"{variable} is {len(key)} characters long; keys must have at least "
            f"{MIN_KEY_LENGTH} (make one with `agent-pm keys hash`)"
        )


# -- named keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedKey:
    """One line of the keys file: a name, its role and the SHA-256 of its key."""

    name: str
    role: Role
    digest: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """A short public tag of this key, so a session ends when its key is rotated."""
        return hashlib.sha256(b"fingerprint\0" + self.digest).hexdigest()[:12]


def named_key_line(name: str, role: str, key: str) -> str:
    """The keys-file line for ``key``; ``ValueError`` when the name, role or key is unfit."""
    if not _NAME.fullmatch(name) or name in (ENV_ADMIN, ENV_READ):
        raise ValueError(f"key name {name!r}: use 1-64 letters, digits and _.@- (not {ENV_ADMIN})")
    if role not in ROLES:
        raise ValueError(f"role must be read or admin, not {role!r}")
    _check_length("the key", key)
    return f"{name} {role} sha256:{_digest(key).hex()}"


def parse_named_keys(text: str, source: str) -> tuple[NamedKey, ...]:
    """The keys listed in ``text``; ``ValueError`` naming the first bad line."""
    keys: dict[str, NamedKey] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        where = f"{source}, line {number}"
        if match is None:
            raise ValueError(f"{where}: expected `NAME ROLE sha256:HEX` (64 lowercase hex digits)")
        name, role = match["name"], match["role"]
        if not _NAME.fullmatch(name) or name in (ENV_ADMIN, ENV_READ):
            raise ValueError(f"{where}: {name!r} is not a valid key name")
        if role not in ROLES:
            raise ValueError(f"{where}: role must be read or admin, not {role!r}")
        if name in keys:
            raise ValueError(f"{where}: the name {name!r} is listed twice")
        keys[name] = NamedKey(name, role, bytes.fromhex(match["digest"]))
    return tuple(keys.values())


class NamedKeys:
    """The keys of ``API_KEYS_FILE``, re-read whenever its content digest changes.

    A file that cannot be read or parsed at start stops the start; a bad edit later keeps the
    keys last loaded (and logs why), like a bad manifest edit keeps the running plugins. A file
    that disappears revokes every named key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: tuple[NamedKey, ...] = ()
        self._digest: str | None = None
        text = self._read()
        if text is None:
            raise ValueError(f"API_KEYS_FILE {path} cannot be read")
        self._apply(text)

    def _read(self) -> str | None:
        try:
            with self.path.open("rb") as file:
                data = file.read(MAX_KEYS_FILE_BYTES + 1)
        except OSError:
            return None
        if len(data) > MAX_KEYS_FILE_BYTES:
            raise ValueError(f"{self.path} is larger than {MAX_KEYS_FILE_BYTES} bytes")
        return data.decode("utf-8", "replace")

    def _apply(self, text: str) -> bool:
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return False
        self.keys = parse_named_keys(text, str(self.path))
        self._digest = digest
        return True

    def refresh(self) -> bool:
        """Re-read the file; whether the keys changed. Blocking: call it off the event loop."""
        try:
            text = self._read()
            if text is None:
                changed, self.keys, self._digest = bool(self.keys), (), None
                if changed:
                    logger.error("%s is gone: every named key is revoked", self.path)
                return changed
            changed = self._apply(text)
        except ValueError as exc:
            logger.error("keys file not reloaded, the previous keys stay: %s", exc)
            return False
        if changed:
            logger.info("reloaded %d named keys from %s", len(self.keys), self.path)
        return changed

    async def watch(
        self, interval: float = 1.0, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Re-read the file every ``interval`` seconds until cancelled."""
        task_status.started()
        while True:
            await anyio.sleep(interval)
            await anyio.to_thread.run_sync(self.refresh)

    def find(self, digest: bytes) -> NamedKey | None:
        """The key whose digest is ``digest``, compared in constant time against each one."""
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found

    def get(self, name: str) -> NamedKey | None:
        return next((key for key in self.keys if key.name == name), None)


# -- all keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeys:
    """The keys the server accepts; ``generated`` when none was configured.

    ``admin`` and ``read`` are the environment's keys, ``named`` the keys file's. Lookups go
    through :meth:`caller_for`, in constant time.
    """

    admin: str | None = field(default=None, repr=False)
    read: str | None = field(default=None, repr=False)
    generated: bool = False
    named: NamedKeys | None = field(default=None, repr=False)
    admin_name: str = ENV_ADMIN

    def __post_init__(self) -> None:
        for variable, key in ((ENV_ADMIN, self.admin), (ENV_READ, self.read)):
            if key is not None:
                _check_length(variable, key)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        """``ADMIN_API_KEY`` is admin and ``API_KEY`` read; ``API_KEY`` alone grants everything.

        With no key configured anywhere an admin key is generated. ``ValueError`` when a key is
        too short or the keys file is unreadable or malformed.
        """
        named = NamedKeys(settings.api_keys_file) if settings.api_keys_file else None
        if settings.admin_api_key:
            return cls(admin=settings.admin_api_key, read=settings.api_key, named=named)
        if settings.api_key:
            _check_length(ENV_READ, settings.api_key)
            return cls(admin=settings.api_key, named=named, admin_name=ENV_READ)
        if named is not None:
            return cls(named=named)
        return cls(admin=secrets.token_urlsafe(32), generated=True)

    def caller_for(self, key: str) -> Caller | None:
        """Who ``key`` belongs to, or ``None`` when no configured key matches."""
        given = key.encode()
        # Every comparison runs, against a dummy where a key is unset, so timing reveals nothing.
        dummy = b"\0" * MIN_KEY_LENGTH
        is_admin = hmac.compare_digest(given, (self.admin or "").encode() or dummy)
        is_read = hmac.compare_digest(given, (self.read or "").encode() or dummy)
        named = self.named.find(_digest(key)) if self.named is not None else None
        if is_admin and self.admin is not None:
            return Caller(self.admin_name, "admin")
        if is_read and self.read is not None:
            return Caller(ENV_READ, "read")
        return Caller(named.name, named.role) if named is not None else None

    def role_for(self, key: str) -> Role | None:
        """The role ``key`` grants, or ``None``."""
        caller = self.caller_for(key)
        return caller.role if caller is not None else None

    def fingerprint_of(self, caller: Caller) -> str | None:
        """The current fingerprint of ``caller``'s named key; ``""`` for an environment key and
        ``None`` when no such key exists any more (revoked, or its role changed)."""
        if caller.name in (ENV_ADMIN, ENV_READ):
            return ""
        key = self.named.get(caller.name) if self.named is not None else None
        return key.fingerprint if key is not None and key.role == caller.role else None

    @property
    def secret_material(self) -> bytes:
        """The environment keys, for deriving session signing keys (rotation ends sessions)."""
        return b"\0".join(k.encode() for k in (self.admin or "", self.read or ""))


# -- origins, addresses, query strings -------------------------------------------------------


def _normal_origin(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.hostname}:{port}"


def same_origin(conn: HTTPConnection) -> bool:
    """Whether the ``Origin`` header, if any, is this server's own (scheme, host and port)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    scheme = "https" if conn.url.scheme in ("wss", "https") else "http"
    own = _normal_origin(f"{scheme}://{conn.headers.get('host', '')}")
    return own is not None and _normal_origin(origin) == own


def client_address(scope: Scope) -> str:
    """The caller's address as throttling counts it: IPv6 callers by their /64 network."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


def key_in_query(scope: Scope) -> bool:
    """Whether the query string carries something named like an API key."""
    query = scope.get("query_string", b"").decode("latin-1")
    return any(
        name.lower() in QUERY_KEY_NAMES for name, _ in parse_qsl(query, keep_blank_values=True)
    )


# -- throttling ------------------------------------------------------------------------------


class Throttle:
    """Failed attempts per client address: a leaky bucket of ``burst`` that drains ``burst``
    per ``period`` seconds. A full bucket blocks only that address, until it drains by one.

    At most ``max_clients`` addresses are remembered; the least recently failing is forgotten
    first, so memory stays bounded under a flood of addresses.
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        period: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = burst / period
        self.max_clients = max_clients
        self._clock = clock
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Told of every failure counted here (a cluster tells its other nodes).
        self.shared: Callable[[str], None] | None = None

    def _level(self, address: str) -> float:
        level, at = self._levels.get(address, (0.0, 0.0))
        return max(0.0, level - (self._clock() - at) * self.rate)

    def retry_after(self, address: str) -> int | None:
        """Seconds ``address`` must wait before its next attempt, or ``None`` if it may go on."""
        excess = self._level(address) - (self.burst - 1)
        return math.ceil(excess / self.rate) if excess > 0 else None

    def failed(self, address: str) -> None:
        """Count one failed attempt of ``address``, and tell ``shared`` (other nodes)."""
        self.count(address)
        if self.shared is not None:
            self.shared(address)

    def count(self, address: str) -> None:
        """Count one failed attempt of ``address``, made here or on another node."""
        level = self._level(address) + 1
        self._levels[address] = (level, self._clock())
        self._levels.move_to_end(address)
        while len(self._levels) > self.max_clients:
            self._levels.popitem(last=False)
