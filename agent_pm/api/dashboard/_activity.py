"""The activity feed: every admin action and every rejected manifest edit, from the audit log.

Rows come from :class:`~agent_pm.audit.AuditLog` records, newest first: when, who (the key's
name, through a dashboard session or not), from where (dashboard, REST, CLI, the file watcher
or the platform itself), what it did to which plugin, what changed (setting by setting, as the
audit log keeps it: secrets are masked there, and long values are cut here) and how it ended.
The page's URL keeps its filters (``source``, ``outcome``, ``plugin``); the live channel
prepends the records written after the newest one the page shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, get_args
from urllib.parse import urlencode

from markupsafe import Markup

from agent_pm.api.dashboard._render import render
from agent_pm.audit import AuditRecord, Outcome, Source

__all__ = [
    "FEED_ROWS",
    "SCAN_LIMIT",
    "SOURCES",
    "ActivityFilters",
    "Change",
    "feed_rows",
    "record_changes",
    "row_html",
    "rows_html",
]

FEED_ROWS = 100
# Records read to fill a filtered page: past this, older matches are left for the REST API.
SCAN_LIMIT = 1_000
VALUE_CHARS = 120
SOURCES: dict[str, str] = {
    "dashboard": "dashboard",
    "rest": "REST",
    "cli": "CLI",
    "watcher": "file watcher",
    "platform": "platform",
}
ACTIONS: dict[str, str] = {
    "enable": "enabled",
    "disable": "disabled",
    "update_config": "changed the config of",
    "reload": "reloaded",
    "reload_all": "applied the manifest",
    "remove": "removed",
    "install": "installed",
    "reset_quarantine": "reset the quarantine of",
}


@dataclass(frozen=True)
class ActivityFilters:
    """The feed's filters, read from and written back to the URL."""

    source: str = ""
    outcome: str = ""
    plugin: str = ""

    OUTCOMES: ClassVar[tuple[str, ...]] = get_args(Outcome)
    SOURCE_KEYS: ClassVar[tuple[str, ...]] = get_args(Source)

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ActivityFilters:
        source, outcome = query.get("source", ""), query.get("outcome", "")
        return cls(
            source if source in cls.SOURCE_KEYS else "",
            outcome if outcome in cls.OUTCOMES else "",
            query.get("plugin", "").strip(),
        )

    def query(self) -> str:
        values = {"source": self.source, "outcome": self.outcome, "plugin": self.plugin}
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def active(self) -> bool:
        return bool(self.source or self.outcome or self.plugin)

    def keeps(self, record: AuditRecord) -> bool:
        return (
            (not self.source or record.source == self.source)
            and (not self.outcome or record.outcome == self.outcome)
            and self.plugin.lower() in (record.plugin or "").lower()
        )


@dataclass(frozen=True)
class Change:
    """One setting an action changed: its dotted path and its value before and after."""

    path: str
    before: str
    after: str


def _shown(values: dict[str, Any], path: str) -> str:
    if path not in values:
        return "(unset)"
    text = json.dumps(values[path], ensure_ascii=False, default=str)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def record_changes(record: AuditRecord) -> list[Change]:
    """What ``record``'s action changed, setting by setting."""
    paths = sorted(record.before.keys() | record.after.keys())
    return [Change(p, _shown(record.before, p), _shown(record.after, p)) for p in paths]


def feed_rows(records: list[AuditRecord], filters: ActivityFilters) -> list[AuditRecord]:
    """The records ``filters`` keep, newest first, at most :data:`FEED_ROWS`."""
    kept = [record for record in reversed(records) if filters.keeps(record)]
    return kept[:FEED_ROWS]


def _action(record: AuditRecord) -> str:
    if record.source == "watcher" and record.action == "reload_all":
        done = "applied" if record.outcome == "ok" else "rejected"
        return f"an edit of the manifest file, {done}"
    return ACTIONS.get(record.action, record.action.replace("_", " "))


def row_html(record: AuditRecord) -> Markup:
    return render(
        "partials/activity_row.html",
        r=record,
        changes=record_changes(record),
        source=SOURCES.get(record.source, record.source),
        action=_action(record),
    )


def rows_html(records: list[AuditRecord]) -> Markup:
    """Rows of ``records`` in the order given."""
    return Markup("").join(row_html(record) for record in records)
