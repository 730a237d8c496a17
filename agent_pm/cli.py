"""``agent-pm``: run the server (``serve``) and administer plugins (``plugins ...``).

Only ``argparse`` is imported up front so ``agent-pm --help`` answers at once; each command
imports what it needs. ``scripts/manage_plugins.py`` runs :func:`plugins_main`, the same
``plugins`` commands without the prefix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from agent_pm.admin_client import AdminClient
    from agent_pm.api import ApiKeys
    from agent_pm.settings import Settings

__all__ = ["build_parser", "main", "plugins_main"]

PROG = "agent-pm"
LOGIN_PATH = "/login"


# -- parsers ---------------------------------------------------------------------------------


def _add_serve(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the operator API server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument("--manifest", help="plugin manifest (default: PLUGIN_CONFIG_PATH)")
    serve.add_argument("--demo", action="store_true", help="also run the demo traffic source")
    serve.add_argument("--no-watch", action="store_true", help="do not watch the manifest file")
    serve.add_argument(
        "--redis", metavar="URL", help="share telemetry and plugins through Redis (cluster mode)"
    )
    serve.add_argument("--node", help="this node's name in cluster mode (default: host:pid)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes on one port (above 1 needs Redis)"
    )
    serve.set_defaults(run=_serve)


def _add_demo(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="send demo traffic to a running server")
    demo.add_argument("--url", help="the server (default: PLUGINS_API_URL)")
    demo.add_argument("--api-key", help="its admin API key (default: PLUGINS_API_KEY)")
    demo.add_argument("--rate", type=float, default=4.0, help="requests per second (default 4)")
    demo.add_argument("--count", type=int, help="stop after this many requests")
    demo.add_argument("--seed", type=int, help="make the scenario repeatable")
    demo.set_defaults(run=_demo)


def _add_plugin_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", help="manifest file (default: PLUGIN_CONFIG_PATH)")
    parser.add_argument("--url", help="server to talk to (default: PLUGINS_API_URL)")
    parser.add_argument("--api-key", help="API key for --url (default: PLUGINS_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="list plugins and their state")
    listing.add_argument("--node", help="one cluster node's figures (default: every node's sum)")
    commands.add_parser("discover", help="list installed plugin entry points")
    for name, help_text in (("enable", "enable a plugin"), ("disable", "disable a plugin")):
        commands.add_parser(name, help=help_text).add_argument("name")
    commands.add_parser("reload", help="reload one plugin, or the manifest").add_argument(
        "name", nargs="?"
    )
    commands.add_parser("remove", help="remove a plugin's entry").add_argument("name")
    update = commands.add_parser("update", help="merge config values into a plugin's config")
    update.add_argument("name")
    update.add_argument("--set", action="append", required=True, metavar="KEY=VALUE")
    stats = commands.add_parser("stats", help="a plugin's windowed telemetry (needs --url)")
    stats.add_argument("name")
    stats.add_argument("--window", default="5m", choices=("1m", "5m", "1h", "24h", "all"))
    stats.add_argument("--hook", help="only this hook")
    stats.add_argument("--node", help="one cluster node's figures (default: every node's sum)")
    quarantine = commands.add_parser("quarantine", help="quarantine controls (needs --url)")
    quarantine_commands = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    reset = quarantine_commands.add_parser("reset", help="close a plugin's breakers")
    reset.add_argument("name")
    reset.add_argument("--hook", help="only this hook's breaker")
    isolate = commands.add_parser(
        "isolate", help="move a plugin to a worker process or back inline (needs --url)"
    )
    isolate.add_argument("name")
    where = isolate.add_mutually_exclusive_group(required=True)
    where.add_argument("--process", dest="mode", action="store_const", const="process")
    where.add_argument("--inline", dest="mode", action="store_const", const="inline")
    tail = commands.add_parser("tail", help="print the live telemetry stream (needs --url)")
    tail.add_argument("--plugin", action="append", help="only this plugin (repeatable)")
    tail.add_argument("--hook", action="append", help="only this hook (repeatable)")
    tail.set_defaults(run=_tail)
    _add_failure_commands(commands)
    install = commands.add_parser("install", help="add a plugin to the manifest")
    source = install.add_mutually_exclusive_group(required=True)
    source.add_argument("--entry-point", help="an entry point from `discover`")
    source.add_argument("--module", help="pkg.module:Class (must be in PLUGIN_INSTALL_ALLOW)")
    install.add_argument("--name")
    install.add_argument("--enable", action="store_true")
    install.add_argument("--description")
    install.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")


def _add_failure_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--hook", help="only failures of this hook")
    parser.add_argument("--since", help="only failures since: ISO 8601 time, or 15m, 2h, 7d back")
    parser.add_argument("--limit", type=int, help="at most this many (default 100)")


def _add_failure_commands(commands: Any) -> None:
    failures = commands.add_parser("failures", help="list a plugin's recorded failed calls")
    _add_failure_filter(failures)
    replay = commands.add_parser(
        "replay", help="replay a plugin's pending recorded failures (oldest first)"
    )
    _add_failure_filter(replay)
    replay.add_argument("--dry-run", action="store_true", help="only count what would replay")
    replay.add_argument("--id", type=int, help="replay this one failure instead")
    replay.add_argument("--force", action="store_true", help="with --id: even if replayed")


def _add_audit(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="show the audit log of admin actions")
    audit.add_argument("--manifest", help=argparse.SUPPRESS)
    audit.add_argument(
        "--url", help="read a server's log (default: PLUGINS_API_URL; else DATA_DIR)"
    )
    audit.add_argument("--api-key", help="its admin API key (default: PLUGINS_API_KEY)")
    audit.add_argument("--since", help="only records after this id or ISO 8601 time")
    audit.add_argument("--limit", type=int, help="at most this many records (default 100)")
    audit.add_argument("--json", action="store_true", help="print the records as JSON lines")
    audit.set_defaults(run=_audit)


def _add_keys(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="manage named API keys (API_KEYS_FILE)")
    commands = keys.add_subparsers(dest="command", required=True, metavar="COMMAND")
    hash_ = commands.add_parser(
        "hash", help="make a key and print its API_KEYS_FILE line (the key is shown once)"
    )
    hash_.add_argument("name", help="who the key is for, e.g. ci-bot")
    hash_.add_argument("role", choices=("read", "admin"))
    hash_.add_argument(
        "--key-stdin", action="store_true", help="hash a key read from stdin instead"
    )
    hash_.set_defaults(run=_keys_hash)


def build_parser() -> argparse.ArgumentParser:
    """The ``agent-pm`` argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description="Agent PM's plugin platform.")
    subparsers = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_serve(subparsers)
    _add_demo(subparsers)
    _add_audit(subparsers)
    _add_keys(subparsers)
    plugins = subparsers.add_parser("plugins", help="administer plugins")
    _add_plugin_commands(plugins)
    plugins.set_defaults(run=_plugins)
    return parser


def _plugins_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Administer Agent PM's plugins.")
    _add_plugin_commands(parser)
    parser.set_defaults(run=_plugins)
    return parser


# -- entry points ----------------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    from agent_pm.admin_client import AdminError, RefusedChangeError
    from agent_pm.errors import AgentPMError, ConfigValidationError
    from agent_pm.settings import Settings

    try:
        settings = Settings.from_env()
        code: int = args.run(args, settings)
    except (ConfigValidationError, RefusedChangeError) as exc:
        return _fail(str(exc), 2)  # a refused change, as a refused argument: nothing written
    except (AgentPMError, AdminError, ValueError, OSError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``agent-pm``; returns the exit status."""
    return _dispatch(build_parser().parse_args(argv))


def plugins_main(argv: Sequence[str] | None = None, prog: str = "manage_plugins.py") -> int:
    """Run the ``plugins`` commands without the ``plugins`` prefix."""
    return _dispatch(_plugins_parser(prog).parse_args(argv))


# -- serve -----------------------------------------------------------------------------------


def _login_url(host: str, port: int, key: str) -> str:
    # Compares against the wildcard address, never binds to it.
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host  # noqa: S104  # nosec B104
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    # The key rides in the fragment, which browsers never send: it stays out of access logs.
    return f"http://{shown}:{port}{LOGIN_PATH}#key={key}"


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pm.api import ApiKeys

    settings = _cluster_settings(args, settings)
    if args.workers < 1:
        return _fail("--workers must be at least 1")
    if args.workers > 1 and not settings.redis_url:
        return _fail(
            "--workers above 1 needs Redis (--redis URL or AGENT_PM_REDIS_URL): separate worker "
            "processes would each have their own plugins, telemetry and revision"
        )
    if args.workers > 1 and args.demo:
        return _fail("--demo runs in one process; drop --workers or --demo")
    keys = ApiKeys.from_settings(settings)
    if keys.generated and keys.admin:
        # Printed once, to stdout only: the key must never reach the logs.
        print(f"No API key configured; log in at {_login_url(args.host, args.port, keys.admin)}")
        sys.stdout.flush()
    manifest = args.manifest or str(settings.plugin_config_path)
    if args.workers > 1:
        _serve_workers(args, settings, keys, manifest)
        return 0
    from agent_pm.api import create_app
    from agent_pm.server import run

    build: Callable[..., Starlette] = create_app
    if args.demo:
        from agent_pm.demo.run import DemoApp as build
    app = build(settings, manifest_path=manifest, keys=keys, watch=not args.no_watch)
    run(app, args.host, args.port)
    return 0


def _serve_workers(
    args: argparse.Namespace, settings: Settings, keys: ApiKeys, manifest: str
) -> None:
    import dataclasses

    from agent_pm.workers import ServeOptions, run_workers

    # Every worker must accept the same keys: settle a generated one here, once. Sessions are
    # signed with SESSION_SECRET, or else with a secret the cluster keeps in Redis.
    settings = dataclasses.replace(
        settings, admin_api_key=keys.admin if keys.generated else settings.admin_api_key
    )
    options = ServeOptions(manifest, watch=not args.no_watch, workers=args.workers)
    run_workers(settings, options, args.host, args.port)


def _cluster_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """``settings`` with ``--redis`` and ``--node`` applied; checks the Redis client is there."""
    import dataclasses
    import importlib.util

    settings = dataclasses.replace(
        settings,
        redis_url=args.redis or settings.redis_url,
        node_name=args.node or settings.node_name,
    )
    if settings.redis_url and importlib.util.find_spec("coredis") is None:
        raise ValueError("--redis needs the Redis client: install agent-pm[redis]")
    return settings


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    from agent_pm.demo.traffic import DemoTraffic

    url = args.url or settings.environ.get("PLUGINS_API_URL")
    key = args.api_key or settings.environ.get("PLUGINS_API_KEY")
    if not url or not key:
        return _fail("demo needs --url and --api-key (or PLUGINS_API_URL and PLUGINS_API_KEY)")
    traffic = DemoTraffic(url, key, rate=args.rate, seed=args.seed)
    anyio.run(traffic.run, args.count)
    sent, failed = sum(traffic.sent.values()), sum(traffic.failed.values())
    print(f"demo: {sent} requests answered, {failed} failed")
    return 0 if sent or not failed else 1


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    from agent_pm.client import stream_url, tail

    url = args.url or settings.environ.get("PLUGINS_API_URL")
    key = args.api_key or settings.environ.get("PLUGINS_API_KEY")
    if not url or not key:
        return _fail("tail needs --url and --api-key (or PLUGINS_API_URL and PLUGINS_API_KEY)")
    anyio.run(tail, stream_url(url), key, args.plugin, args.hook, sys.stdout)
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pm import plugin_commands

    client = _client(args, settings)
    try:
        records = client.audit(args.since, args.limit)
    finally:
        client.close()
    plugin_commands.print_audit(records, sys.stdout, as_json=args.json)
    return 0


def _keys_hash(args: argparse.Namespace, settings: Settings) -> int:
    import secrets

    from agent_pm.api import named_key_line

    key = sys.stdin.readline().rstrip("\n") if args.key_stdin else secrets.token_urlsafe(32)
    line = named_key_line(args.name, args.role, key)
    if not args.key_stdin:
        print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print(f"line for API_KEYS_FILE: {line}")
    return 0


# -- plugins ---------------------------------------------------------------------------------


def _client(args: argparse.Namespace, settings: Settings) -> AdminClient:
    from pathlib import Path

    from agent_pm.admin_client import FileClient, HttpClient

    # Read through Settings' snapshot of the environment, like every other setting.
    url = args.url or settings.environ.get("PLUGINS_API_URL")
    if url:
        return HttpClient(url, args.api_key or settings.environ.get("PLUGINS_API_KEY"))
    manifest = Path(args.manifest) if args.manifest else settings.plugin_config_path
    return FileClient(manifest, settings)


def _plugins(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from agent_pm import plugin_commands

    # The commands report problems themselves; the registry's log lines would repeat them.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s: %(message)s")
    client = _client(args, settings)
    try:
        return plugin_commands.run(args, client)
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
