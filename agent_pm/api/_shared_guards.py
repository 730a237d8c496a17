"""Console sessions and login throttling shared by every node of a cluster.

Without a cluster both live in the process. With one (``--workers N``, several hosts), a user
must not be logged out by landing on another worker, a logout must end the session everywhere,
and guessing keys must not get ``N`` times the attempts. So, as cluster events
(:mod:`agent_pm.plugins.cluster.events`):

- **session secret**: without ``SESSION_SECRET``, the nodes sign sessions with one secret kept in
  Redis (``{prefix}session-secret``, created by the first node). The signing key also mixes in
  the API keys, so the stored secret alone cannot forge a session;
- **revocations**: a logout (or any revocation) is told to every node and kept in the sorted set
  ``{prefix}revoked`` (CSRF token, scored by expiry) for nodes that join later;
- **failed logins**: each failure is told to every node, which counts it in its own throttle, so
  an address gets the same number of attempts from the cluster as from one process.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import msgspec

from agent_pm.api._security import Throttle
from agent_pm.api._session import SessionManager

if TYPE_CHECKING:
    from agent_pm.plugins.cluster.events import ClusterEvents
    from agent_pm.plugins.cluster.link import Redis

__all__ = ["FailedLogins", "Revocations", "share_guards"]


class _Revoked(msgspec.Struct, frozen=True, array_like=True):
    csrf: str
    expires: int


_decode_revoked = msgspec.json.Decoder(_Revoked).decode


class Revocations:
    """The ``session`` topic: the signing secret and revoked sessions of the cluster."""

    kind = "session"

    def __init__(self, events: ClusterEvents, manager: SessionManager, prefix: str) -> None:
        self._events = events
        self._manager = manager
        self._secret = f"{prefix}session-secret"
        self._key = f"{prefix}revoked"
        self._shared: bytes | None = None
        manager.revoked = self._revoked

    def _revoked(self, csrf: str, expires: int) -> None:
        self._events.send(self.kind, msgspec.json.encode(_Revoked(csrf, expires)))

    async def join(self, redis: Redis) -> None:
        manager = self._manager
        if not manager.configured:
            # After a Redis restart, the first node back brings the secret the cluster used, so
            # sessions survive it.
            await redis.setnx(self._secret, self._shared or secrets.token_bytes(32))
            secret = await redis.get(self._secret)
            if secret is not None and secret != self._shared:
                manager.rekey(secret)
                self._shared = secret
        await redis.zremrangebyscore(self._key, float("-inf"), time.time())
        for csrf, expires in manager.revocations().items():  # revoked while cut off
            self._revoked(csrf, expires)
        for member, score in await redis.zrange(self._key, 0, -1, withscores=True):
            csrf = member.decode() if isinstance(member, bytes) else member
            manager.forget(csrf, int(score))

    def store(self, pipe: Any, payload: bytes) -> None:
        revoked = _decode_revoked(payload)
        pipe.zadd(self._key, {revoked.csrf: revoked.expires})

    def apply(self, payload: bytes) -> None:
        revoked = _decode_revoked(payload)
        self._manager.forget(revoked.csrf, revoked.expires)


class FailedLogins:
    """The ``login`` topic: failed key attempts, counted by every node's throttle."""

    kind = "login"

    def __init__(self, events: ClusterEvents, throttle: Throttle) -> None:
        self._events = events
        self._throttle = throttle
        throttle.shared = self._failed

    def _failed(self, address: str) -> None:
        self._events.send(self.kind, address.encode())

    async def join(self, redis: Redis) -> None:
        """Nothing to catch up with: attempts older than the throttle's period do not count."""

    def store(self, pipe: Any, payload: bytes) -> None:
        """Nothing lasting: the event is the whole fact."""

    def apply(self, payload: bytes) -> None:
        self._throttle.count(payload.decode())


def share_guards(
    events: ClusterEvents, manager: SessionManager, throttle: Throttle, prefix: str
) -> None:
    """Share ``manager``'s sessions and ``throttle``'s counts through ``events``."""
    events.add(Revocations(events, manager, prefix))
    events.add(FailedLogins(events, throttle))
