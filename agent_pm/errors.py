"""The one exception hierarchy of Agent PM's plugin platform.

Every error the platform raises on purpose derives from :class:`AgentPMError`; the HTTP edge maps
each class to one status code (``agent_pm.api``) and nothing else needs to know about HTTP.

    AgentPMError
    ├── ManifestError            the manifest cannot be read, parsed or written
    ├── PluginNotFoundError      no plugin (or entry point) by that name
    ├── PluginExistsError        a plugin by that name is already in the manifest
    ├── PluginLoadError          a plugin's module or class cannot be imported or instantiated
    ├── ConfigValidationError    a config fails the plugin's ``Config`` schema (carries the path)
    │   └── UnloadableChangeError an admin change would leave a manifest ``load`` refuses
    ├── LifecycleError           ``on_enable``/``on_reload`` failed; the previous state still runs
    ├── RevisionConflictError    an ``If-Match`` revision is stale
    │   └── ManifestChangedError the manifest file was edited outside the service meanwhile
    ├── InstallRefusedError      a module is outside the install allowlist
    ├── EmitLoopError            ``emit`` recursed past the bounded depth
    │   └── EmitBudgetError      one root call fanned out to more handler calls than allowed
    ├── FailureNotFoundError     no recorded failure by that id for that plugin
    ├── FailureStoreError        the failure store cannot be opened, read or written
    ├── ReplayError              a recorded failure cannot be replayed now
    │   └── ReplayRateError      too many bulk replays of one plugin in the last minute
    ├── ShuttingDownError        a hook call was cancelled because the service is stopping
    ├── ClusterUnavailableError  cluster mode cannot reach Redis, so nothing is committed
    ├── NodeNotFoundError        no node by that name in the cluster (``?node=``)
    └── IsolationError           a call to an isolated plugin's worker process did not complete
        ├── WorkerTimeoutError   the worker was killed because a call ran past its timeout
        ├── WorkerCrashedError   the worker ended (crash, limit, stop) with the call in flight
        └── NotEncodableError    a payload cannot travel to the worker (not msgpack-encodable)
"""

from __future__ import annotations

__all__ = [
    "AgentPMError",
    "ClusterUnavailableError",
    "ConfigValidationError",
    "EmitBudgetError",
    "EmitLoopError",
    "FailureNotFoundError",
    "FailureStoreError",
    "InstallRefusedError",
    "IsolationError",
    "LifecycleError",
    "ManifestChangedError",
    "ManifestError",
    "NodeNotFoundError",
    "NotEncodableError",
    "PluginExistsError",
    "PluginLoadError",
    "PluginNotFoundError",
    "ReplayError",
    "ReplayRateError",
    "RevisionConflictError",
    "ShuttingDownError",
    "UnloadableChangeError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
]


class AgentPMError(Exception):
    """Base of every error the platform raises deliberately."""


class ManifestError(AgentPMError):
    """Raised when the manifest is not YAML, not a list, unsafe, too large, or cannot be written."""


class PluginNotFoundError(AgentPMError, LookupError):
    """Raised when an operation names a plugin, entry point or hook route that does not exist."""


class PluginExistsError(AgentPMError):
    """Raised when installing a plugin under a name the manifest already holds."""


class PluginLoadError(AgentPMError):
    """Raised when a plugin's module cannot be imported, its class is not a ``PluginBase``, or its
    constructor fails."""


class ConfigValidationError(AgentPMError, ValueError):
    """Raised when a config does not match the plugin's ``Config`` struct.

    ``path`` names the offending field (``$.channel``), ``detail`` says what is wrong with it.
    """

    def __init__(self, detail: str, path: str = "$") -> None:
        super().__init__(f"{detail} (at {path})" if path != "$" else detail)
        self.detail = detail
        self.path = path


class UnloadableChangeError(ConfigValidationError):
    """Raised before anything runs or is written when an admin change would leave a manifest
    that :meth:`Manifest.load` refuses or reads back differently (too large, nested too deep,
    too many nodes, text that is not valid Unicode)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the change would leave a manifest the service cannot load: {detail}")


class LifecycleError(AgentPMError):
    """Raised when a new instance's ``on_enable``/``on_reload`` fails; the old one keeps running."""


class RevisionConflictError(AgentPMError):
    """Raised when an admin operation carries a revision that is no longer the current one."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"revision {expected} is stale; the current revision is {current}")
        self.expected = expected
        self.current = current


class ManifestChangedError(RevisionConflictError):
    """Raised instead of writing the manifest when the file changed on disk since the registry
    last loaded or wrote it: the write would lose that edit. Retry once it has been reloaded."""

    def __init__(self, revision: int) -> None:
        AgentPMError.__init__(
            self,
            "the manifest file was edited outside the service and that edit is not applied yet; "
            "reload and retry",
        )
        self.expected = revision
        self.current = revision


class InstallRefusedError(AgentPMError, PermissionError):
    """Raised when installing a module outside ``PLUGIN_INSTALL_ALLOW``; nothing is imported."""


class EmitLoopError(AgentPMError):
    """Raised when plugins emit to each other deeper than the registry's bounded emit depth."""


class FailureNotFoundError(AgentPMError, LookupError):
    """Raised when a plugin has no recorded failure with the given id."""


class FailureStoreError(AgentPMError):
    """Raised when the failure store under ``DATA_DIR`` cannot be opened, read or written."""


class ReplayError(AgentPMError):
    """Raised when a recorded failure cannot be replayed: the plugin is not active or no longer
    handles the hook, no payload was kept, it was replayed already, or a bulk replay of the
    plugin is running."""


class ReplayRateError(ReplayError):
    """Raised when a plugin's bulk replays come faster than ``REPLAY_BULK_PER_MINUTE``;
    ``retry_after`` says in how many seconds the next one is allowed."""

    def __init__(self, plugin: str, retry_after: float) -> None:
        super().__init__(
            f"too many bulk replays of {plugin!r}; the next is allowed in {retry_after:.0f} s"
        )
        self.retry_after = retry_after


class ShuttingDownError(AgentPMError):
    """Raised to a caller whose hook call the registry cancelled because the service is stopping
    (:meth:`agent_pm.plugins.PluginRegistry.cancel_calls`)."""


class ClusterUnavailableError(AgentPMError):
    """Raised instead of committing an admin change while a cluster node cannot reach Redis:
    committing locally would let the nodes diverge. Retry once the link is back."""


class NodeNotFoundError(AgentPMError):
    """Raised when figures of one node are asked for and no live node has that name (or the
    server runs alone, without a cluster)."""


class EmitBudgetError(EmitLoopError):
    """Raised when the handler calls caused by one root ``fire`` (through every ``emit`` it led
    to) would pass the registry's call budget."""


class IsolationError(AgentPMError):
    """Raised when a call to an isolated plugin's worker process does not complete."""


class WorkerTimeoutError(IsolationError, TimeoutError):
    """Raised for calls in flight on a worker that was killed because a call ran past its
    timeout; dispatch reports them as ``timeout``."""


class WorkerCrashedError(IsolationError):
    """Raised for calls in flight on a worker that ended by itself: a crash, a limit it reached,
    or the plugin being stopped."""


class NotEncodableError(IsolationError, TypeError):
    """Raised when a payload for an isolated plugin holds something msgpack cannot carry."""
