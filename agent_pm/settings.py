"""Settings: the one place that reads the process environment.

Everything else receives a :class:`Settings` instance as an argument, so tests build their own
with :meth:`Settings.from_env` on a dictionary instead of patching ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["DEFAULT_MANIFEST", "Settings"]

DEFAULT_MANIFEST = Path("config/plugins.yaml")
IsolationDefault = Literal["inline", "process", "auto"]
_ISOLATIONS: tuple[IsolationDefault, ...] = ("inline", "process", "auto")


def _float(environ: Mapping[str, str], key: str, default: float, unit: str = "seconds") -> float:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number of {unit}, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{key} must be positive, got {raw!r}")
    return value


def _flag(environ: Mapping[str, str], key: str, default: bool) -> bool:
    raw = (environ.get(key) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{key} must be true or false, got {environ.get(key)!r}")


def _count(environ: Mapping[str, str], key: str, default: int) -> int:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) == 0:
        raise ValueError(f"{key} must be a positive whole number, got {raw!r}")
    return int(raw)


def _isolation(environ: Mapping[str, str]) -> IsolationDefault:
    raw = (environ.get("ISOLATION_DEFAULT") or "inline").strip().lower()
    for choice in _ISOLATIONS:
        if raw == choice:
            return choice
    given = environ.get("ISOLATION_DEFAULT")
    raise ValueError(f"ISOLATION_DEFAULT must be inline, process or auto, got {given!r}")


def _prefixes(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _optional_list(environ: Mapping[str, str], key: str) -> tuple[str, ...] | None:
    """A comma-separated list; ``None`` when the variable is not set at all."""
    return _prefixes(environ[key]) if key in environ else None


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Environment-driven configuration of the service.

    Secret-bearing fields are excluded from ``repr`` so a logged ``Settings`` leaks nothing.
    Attributes named after a plugin secret (``slack_bot_token`` for ``SLACK_BOT_TOKEN``) are step
    three of the secret resolution chain.
    """

    plugin_config_path: Path = DEFAULT_MANIFEST
    plugin_secret_path: Path | None = None
    hook_timeout_seconds: float = 10.0
    plugin_install_allow: tuple[str, ...] = ()
    api_keys_file: Path | None = None
    # Names ``{env: NAME}`` may read; ``None``: each plugin's own declared secret names.
    plugin_secret_env_allow: tuple[str, ...] | None = None
    api_key: str | None = field(default=None, repr=False)
    admin_api_key: str | None = field(default=None, repr=False)
    session_secret: str | None = field(default=None, repr=False)
    jira_base_url: str | None = None
    jira_email: str | None = field(default=None, repr=False)
    jira_api_token: str | None = field(default=None, repr=False)
    slack_bot_token: str | None = field(default=None, repr=False)
    # Every file path in a plugin config resolves inside this directory (created when needed).
    data_dir: Path = Path("data")
    record_failures: bool = False
    failures_max_count: int = 10_000
    failures_max_bytes: int = 64 * 1024 * 1024
    replay_rate: float = 10.0
    replay_bulk_per_minute: int = 6
    # Cluster mode (docs/DEPLOYMENT.md); the URL may carry a password, so it stays out of repr.
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "agent_pm:"
    node_name: str | None = None
    tracing: bool = True
    # Loop-block attribution of inline async handlers; a step longer than this is warned about.
    loop_block_tracking: bool = True
    loop_block_warn_ms: float = 100.0
    # Where a plugin whose manifest entry sets no ``isolation`` runs.
    isolation_default: IsolationDefault = "inline"
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment)."""
        env = dict(os.environ if environ is None else environ)
        secret_path = env.get("PLUGIN_SECRET_PATH")
        keys_file = env.get("API_KEYS_FILE")
        return cls(
            plugin_config_path=Path(env.get("PLUGIN_CONFIG_PATH") or DEFAULT_MANIFEST),
            plugin_secret_path=Path(secret_path) if secret_path else None,
            hook_timeout_seconds=_float(env, "HOOK_TIMEOUT_SECONDS", 10.0),
            plugin_install_allow=_prefixes(env.get("PLUGIN_INSTALL_ALLOW")),
            api_keys_file=Path(keys_file) if keys_file else None,
            plugin_secret_env_allow=_optional_list(env, "PLUGIN_SECRET_ENV_ALLOW"),
            api_key=env.get("API_KEY") or None,
            admin_api_key=env.get("ADMIN_API_KEY") or None,
            session_secret=env.get("SESSION_SECRET") or None,
            jira_base_url=env.get("JIRA_BASE_URL") or None,
            jira_email=env.get("JIRA_EMAIL") or None,
            jira_api_token=env.get("JIRA_API_TOKEN") or None,
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            data_dir=Path(env.get("DATA_DIR") or "data"),
            record_failures=_flag(env, "RECORD_FAILURES", False),
            failures_max_count=_count(env, "FAILURES_MAX_COUNT", 10_000),
            failures_max_bytes=_count(env, "FAILURES_MAX_BYTES", 64 * 1024 * 1024),
            replay_rate=_float(env, "REPLAY_RATE", 10.0, "calls per second"),
            replay_bulk_per_minute=_count(env, "REPLAY_BULK_PER_MINUTE", 6),
            redis_url=env.get("AGENT_PM_REDIS_URL") or None,
            redis_prefix=env.get("AGENT_PM_REDIS_PREFIX") or "agent_pm:",
            node_name=env.get("AGENT_PM_NODE") or None,
            tracing=_flag(env, "TRACING", True),
            loop_block_tracking=_flag(env, "LOOP_BLOCK_TRACKING", True),
            loop_block_warn_ms=_float(env, "LOOP_BLOCK_WARN_MS", 100.0, "milliseconds"),
            isolation_default=_isolation(env),
            environ=env,
        )
