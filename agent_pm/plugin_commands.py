"""The ``plugins`` commands of the CLI: argument handling and output.

Results go to stdout (a table, a one-line confirmation, or JSON with ``--json``); warnings and
hints about invalid entries, errors and missing secrets go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from agent_pm.admin_client import AdminClient, AdminError, FailureQuery

__all__ = ["format_table", "parse_assignments", "print_audit", "run"]


# -- --set key=value ----------------------------------------------------------------------------


_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


def _scalar(text: str) -> Any:
    """``text`` read as YAML (``3`` is a number, ``true`` a boolean); plain text otherwise.

    Only a YAML null spelling means null: ``#ops`` is a channel name, not a YAML comment.
    """
    try:
        value = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return text
    return text if value is None and text.strip() not in _NULLS else value


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``a.b=1`` items as a nested dict: ``{"a": {"b": 1}}``."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise AdminError(f"--set expects KEY=VALUE with a non-empty key, got {item!r}")
        target = result
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = _scalar(raw)
    return result


def merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``updates`` merged in, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in updates.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            value = merge(current, value)
        merged[key] = value
    return merged


# -- output ------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _row(plugin: dict[str, Any]) -> list[str]:
    stats = plugin.get("hook_stats", {}).values()
    calls = sum(s["invocations"] for s in stats)
    failures = sum(s["failures"] + s["timeouts"] for s in stats)
    total_ms = sum(s["total_duration_ms"] for s in stats)
    average = f"{total_ms / calls:.1f}" if calls else "-"
    hooks = ",".join(plugin.get("hooks", [])) or "-"
    health = plugin.get("health", {}).get("state", "-")
    error_ratio, p95 = _recent(plugin.get("hook_windows", {}).values())
    return [
        plugin["name"],
        plugin["state"],
        health,
        _where(plugin.get("isolation") or {}),
        hooks,
        str(calls),
        str(failures),
        average,
        error_ratio,
        p95,
    ]


def _where(isolation: dict[str, Any]) -> str:
    """Where a plugin runs, as ``plugins list`` prints it: ``inline`` or ``process``, and for
    an ``auto`` plugin ``auto:inline``, ``auto:promoted`` (moved out by the platform) or
    ``auto:process`` (moved out by an operator)."""
    mode = isolation.get("mode", "inline")
    if isolation.get("declared") != "auto":
        return str(mode)
    return "auto:promoted" if isolation.get("promoted") else f"auto:{mode}"


def _recent(windows: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """The error ratio over every hook of a plugin and its slowest hook's p95, as printed."""
    ran = failed = 0
    p95s = []
    for window in windows:
        counts = window["counts"]
        ran += counts["success"] + counts["error"] + counts["timeout"]
        failed += counts["error"] + counts["timeout"]
        if window.get("p95_ms") is not None:
            p95s.append(window["p95_ms"])
    ratio = f"{failed / ran:.0%}" if ran else "-"
    return ratio, f"{max(p95s):.1f}" if p95s else "-"


def _warnings(plugin: dict[str, Any]) -> Iterable[str]:
    name, error = plugin["name"], plugin.get("error")
    if plugin["state"] == "invalid":
        yield f"warning: {name} is invalid: {error}"
    elif plugin["state"] == "failed":
        yield f"warning: {name} failed to start: {error}"
    elif plugin.get("errors"):
        last = plugin["errors"][-1]
        yield f"warning: {name}: last error ({last['stage']}): {last['message']}"
    health = plugin.get("health") or {}
    if health.get("state") in ("degraded", "failing", "quarantined"):
        yield f"warning: {name} is {health['state']}: {health.get('reason')}"
    blocks = plugin.get("loop_blocks") or {}
    worst = blocks.get("worst") or []
    if worst and worst[0]["ms"] >= blocks["warn_ms"]:
        yield (
            f"warning: {name} held the event loop for {worst[0]['ms']:.0f} ms in one step of "
            f"hook {worst[0]['hook']}; consider isolation: process"
        )
    isolation = plugin.get("isolation") or {}
    if isolation.get("promoted"):
        yield (
            f"warning: {name} was moved to a worker process at {isolation['when']}: it "
            f"{isolation['why']}; move it back with `plugins isolate {name} --inline`"
        )
    if isolation.get("restarts"):
        yield (
            f"warning: {name}'s worker restarted {isolation['restarts']} time(s); "
            f"last: {isolation['last_exit']}"
        )
    missing = plugin.get("secrets", {}).get("missing", [])
    if missing:
        yield (
            f"hint: {name} is missing secret(s) {', '.join(missing)}: set them in the "
            "environment, in config.secrets, or in the PLUGIN_SECRET_PATH file"
        )


def _print_json(data: Any, out: TextIO) -> None:
    out.write(msgspec.json.format(msgspec.json.encode(data)).decode() + "\n")


# -- commands ----------------------------------------------------------------------------------


def print_audit(records: list[dict[str, Any]], out: TextIO, *, as_json: bool = False) -> None:
    """Audit records as a table (oldest first), or as one JSON document per line."""
    if as_json:
        for record in records:
            out.write(msgspec.json.encode(record).decode() + "\n")
        return
    headers = (
        "ID",
        "TIME",
        "ACTOR",
        "SOURCE",
        "ACTION",
        "PLUGIN",
        "OUTCOME",
        "REVISION",
        "CHANGE",
        "REASON",
    )
    rows = [
        [
            str(r["id"]),
            str(r["time"])[:19],
            f"{r['actor']} ({r['role']})",
            r["source"],
            r["action"],
            r["plugin"] or "-",
            r["outcome"] if not r.get("error") else f"{r['outcome']}: {r['error']}",
            f"{r['revision_before']}->{r['revision_after']}",
            ", ".join(sorted({*r["before"], *r["after"]})) or "-",
            r.get("reason") or "-",
        ]
        for r in records
    ]
    out.write(format_table(headers, rows) + "\n")


def _print_plugins(plugins: list[dict[str, Any]], out: TextIO) -> None:
    if not plugins:
        out.write("no plugins in the manifest\n")
        return
    headers = (
        "NAME",
        "STATE",
        "HEALTH",
        "ISOLATION",
        "HOOKS",
        "CALLS",
        "FAILED",
        "AVG MS",
        "ERR 5M",
        "P95 5M",
    )
    out.write(format_table(headers, [_row(plugin) for plugin in plugins]) + "\n")


def _list(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    data = client.list_plugins(args.node)
    if args.json:
        _print_json(data, out)
    else:
        _print_plugins(data["plugins"], out)
        out.write(_scope_line(data.get("figures")))
    for problem in data.get("config_errors", []):
        err.write(f"error: manifest: {problem}\n")
    for plugin in data["plugins"]:
        for line in _warnings(plugin):
            err.write(line + "\n")
    return 0


def _discover(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    entries = client.discover()
    if args.json:
        _print_json(entries, out)
    elif entries:
        headers = ("ENTRY POINT", "PLUGIN", "DISTRIBUTION", "CONFIGURED", "DESCRIPTION")
        rows = [
            [
                e["entry_point"],
                e.get("plugin_name") or "-",
                f"{e.get('distribution') or '-'} {e.get('version') or ''}".strip(),
                "yes" if e.get("configured") else "no",
                e.get("description") or "",
            ]
            for e in entries
        ]
        out.write(format_table(headers, rows) + "\n")
    else:
        out.write("no plugin entry points installed\n")
    for entry in entries:
        if entry.get("error"):
            err.write(f"warning: entry point {entry['entry_point']}: {entry['error']}\n")
    return 0


def _answer(args: argparse.Namespace, data: Any, line: str, out: TextIO) -> int:
    """Print ``data`` as JSON with ``--json``, else the one ``line`` that sums it up."""
    if args.json:
        _print_json(data, out)
    else:
        out.write(line + "\n")
    return 0


def _report(args: argparse.Namespace, verb: str, metadata: dict[str, Any], out: TextIO) -> int:
    line = f"{verb} {metadata['name']} (state: {metadata['state']})"
    return _answer(args, metadata, line, out)


def _enable(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    return _report(args, "enabled", client.set_enabled(args.name, True), out)


def _disable(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    return _report(args, "disabled", client.set_enabled(args.name, False), out)


def _reload(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    data = client.reload(args.name)
    if args.name is not None:
        return _report(args, "reloaded", data["plugin"], out)
    return _answer(args, data, f"reloaded the manifest: {len(data['plugins'])} plugin(s)", out)


def _update(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    updates = parse_assignments(args.set)
    current = client.get(args.name).get("config") or {}
    return _report(args, "updated", client.update_config(args.name, merge(current, updates)), out)


def _install(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    metadata = client.install(
        entry_point=args.entry_point,
        module=args.module,
        name=args.name,
        enabled=args.enable,
        description=args.description,
        config=parse_assignments(args.set),
    )
    return _report(args, "installed", metadata, out)


def _remove(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    removed = client.remove(args.name)
    return _answer(args, {"removed": removed}, f"removed {removed}", out)


def _query(args: argparse.Namespace) -> FailureQuery:
    if args.limit is not None and args.limit < 1:
        raise AdminError("--limit must be at least 1")
    return FailureQuery(args.hook, args.since, args.limit or 100)


def _failure_row(failure: dict[str, Any]) -> list[str]:
    return [
        str(failure["id"]),
        failure["recorded_at"],
        failure["hook"],
        failure["status"],
        failure["state"],
        str(failure["attempts"]),
        failure.get("request_id") or "-",
        failure.get("error") or "",
    ]


def _failures(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    data = client.failures(args.name, _query(args))
    if args.json:
        _print_json(data, out)
        return 0
    failures = data["failures"]
    if not failures:
        out.write(f"no recorded failures of {args.name} match\n")
        return 0
    headers = ("ID", "RECORDED", "HOOK", "STATUS", "STATE", "REPLAYS", "REQUEST", "ERROR")
    out.write(format_table(headers, [_failure_row(f) for f in failures]) + "\n")
    if data["matched"] > len(failures):
        err.write(f"showing the newest {len(failures)} of {data['matched']}; see --limit\n")
    return 0


def _outcome_line(outcome: dict[str, Any]) -> str:
    result = outcome.get("result")
    if result is None:
        return f"  #{outcome['failure']} {outcome['hook']}: not replayed: {outcome['refused']}"
    error = f": {result['error']}" if result.get("error") else ""
    return f"  #{outcome['failure']} {outcome['hook']}: {result['status']}{error}"


def _replay(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    if args.id is not None:
        outcome = client.replay_one(args.name, args.id, force=args.force)
        if args.json:
            _print_json(outcome, out)
        else:
            out.write(f"replayed failure of {args.name}:\n{_outcome_line(outcome)}\n")
        return 0 if (outcome.get("result") or {}).get("status") == "success" else 1
    report = client.replay(args.name, _query(args), dry_run=args.dry_run)
    if args.json:
        _print_json(report, out)
    elif args.dry_run:
        out.write(f"{report['matched']} pending failure(s) of {args.name} would be replayed\n")
    else:
        out.write(
            f"replayed {len(report['outcomes'])} of {report['matched']} pending failure(s) of "
            f"{args.name}: {report['succeeded']} succeeded, {report['failed']} failed\n"
        )
        out.writelines(_outcome_line(outcome) + "\n" for outcome in report["outcomes"])
        if report["remaining"]:
            err.write(f"{report['remaining']} more pending; run again or raise --limit\n")
    return 1 if report["failed"] else 0


_SPARK = " ▁▂▃▄▅▆▇█"
_STATUSES = ("success", "error", "timeout", "skipped", "quarantined")


def sparkline(values: Sequence[float]) -> str:
    """``values`` as a row of block characters, the largest one full height."""
    top = max(values, default=0) or 1
    return "".join(_SPARK[round(v / top * (len(_SPARK) - 1))] for v in values)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _stats(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    data = client.stats(args.name, args.window, args.hook, args.node)
    if args.json:
        _print_json(data, out)
        return 0
    health = data["health"]
    out.write(f"{data['plugin']}: {health['state']} ({health['reason']})\n")
    out.write(f"window {data['window']}, {data['points']} points per series\n")
    headers = (
        *("HOOK", "HEALTH", "CALLS", "RATE/S", "OK", "ERR", "TIMEOUT", "SKIP", "QUAR"),
        *("ERR %", "P50 MS", "P95 MS", "P99 MS", "QUARANTINE", "CALLS OVER TIME"),
    )
    rows = []
    for hook, view in data["hooks"].items():
        stats, counts = view["stats"], view["stats"]["counts"]
        quarantine = view.get("quarantine") or {}
        rows.append(
            [
                hook,
                (view.get("health") or {}).get("state", "-"),
                str(stats["calls"]),
                f"{stats['rate']:.2f}",
                *(
                    str(counts[k])
                    for k in ("success", "error", "timeout", "skipped", "quarantined")
                ),
                f"{stats['error_ratio']:.1%}",
                _ms(stats["p50_ms"]),
                _ms(stats["p95_ms"]),
                _ms(stats["p99_ms"]),
                quarantine.get("state", "off"),
                sparkline([point["calls"] for point in view["series"]]),
            ]
        )
    out.write(format_table(headers, rows) + "\n" if rows else "no hooks\n")
    _print_nodes(data["hooks"], out)
    out.write(_scope_line(data.get("figures")))
    for hook, view in data["hooks"].items():
        quarantine = view.get("quarantine") or {}
        if quarantine.get("state") in ("open", "probing"):
            err.write(f"warning: {data['plugin']}.{hook} quarantined: {quarantine['reason']}\n")
    return 0


def _print_nodes(hooks: dict[str, Any], out: TextIO) -> None:
    """Each hook's figures per cluster node, when the answer is a cluster's sum."""
    rows = [
        [hook, node, str(stats["calls"]), f"{stats['error_ratio']:.1%}", _ms(stats["p95_ms"])]
        for hook, view in hooks.items()
        for node, stats in view.get("nodes", {}).items()
    ]
    if rows:
        out.write("\n" + format_table(("HOOK", "NODE", "CALLS", "ERR %", "P95 MS"), rows) + "\n")


def _scope_line(scope: dict[str, Any] | None) -> str:
    """Whose figures were shown: nothing to say for a server running alone."""
    if not scope or (scope["figures"] == "local" and not scope["nodes"]):
        return ""
    nodes = ", ".join(scope["nodes"])
    return {
        "cluster": f"figures: the sum over nodes {nodes}\n",
        "node": f"figures: node {nodes} alone\n",
        "local": f"figures: node {nodes} alone (Redis unreachable)\n",
    }[scope["figures"]]


def _quarantine(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    metadata = client.reset_quarantine(args.name, args.hook)
    scope = f"{args.name}.{args.hook}" if args.hook else args.name
    line = f"reset quarantine of {scope} (health: {metadata['health']['state']})"
    return _answer(args, metadata, line, out)


def _isolate(args: argparse.Namespace, client: AdminClient, out: TextIO, err: TextIO) -> int:
    metadata = client.set_isolation(args.name, args.mode)
    if args.json:
        _print_json(metadata, out)
        return 0
    isolation = metadata["isolation"]
    where = "a worker process" if isolation["mode"] == "process" else "inline"
    out.write(f"{args.name} runs {where} ({_where(isolation)})\n")
    if isolation.get("hold_until"):
        out.write(f"not promoted automatically before {isolation['hold_until']}\n")
    return 0


Command = Callable[[argparse.Namespace, AdminClient, TextIO, TextIO], int]
COMMANDS: dict[str, Command] = {
    "list": _list,
    "discover": _discover,
    "enable": _enable,
    "disable": _disable,
    "reload": _reload,
    "update": _update,
    "install": _install,
    "remove": _remove,
    "failures": _failures,
    "replay": _replay,
    "stats": _stats,
    "quarantine": _quarantine,
    "isolate": _isolate,
}


def run(
    args: argparse.Namespace,
    client: AdminClient,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the parsed ``plugins`` command against ``client``."""
    return COMMANDS[args.command](args, client, out or sys.stdout, err or sys.stderr)
