"""Error groups: one group per message shape, counted with first and last seen."""

from __future__ import annotations

from agent_pm.api.dashboard._fingerprint import fingerprint, group_errors


def test_fingerprint_sets_numbers_ids_and_quoted_values_aside() -> None:
    assert fingerprint("Jira answered 503 after 3 tries") == "Jira answered # after # tries"
    assert fingerprint("issue OPS-123 not found") == fingerprint("issue OPS-9 not found")
    uuid = "550e8400-e29b-41d4-a716-446655440000"
    assert fingerprint(f"id {uuid} missing") == "id # missing"
    assert fingerprint("request 3f2a9c1b7d failed") == "request # failed"
    assert fingerprint("KeyError: 'channel'") == "KeyError: '…'"
    assert fingerprint("handler exploded") == "handler exploded"


def test_group_errors_counts_and_keeps_the_newest_example() -> None:
    entries = [
        ("2026-12-02T03:00:01+00:00", "error", "timeout after 30 s", 1),
        ("2026-12-02T03:00:02+00:00", "error", "Jira answered 503", 2),
        ("2026-12-02T03:00:03+00:00", "timeout", "timeout after 31 s", 3),
        ("2026-12-02T03:00:04+00:00", "error", "Jira answered 502", 4),
        ("2026-12-02T03:00:05+00:00", "error", "Jira answered 500", 5),
    ]
    groups = group_errors(entries)
    assert [(g.fingerprint, g.count) for g in groups] == [
        ("Jira answered #", 3),
        ("timeout after # s", 2),
    ]
    jira = groups[0]
    assert jira.first_seen.endswith("03:00:02+00:00") and jira.last_seen.endswith("03:00:05+00:00")
    assert (jira.example, jira.example_seq) == ("Jira answered 500", 5)
    assert groups[1].statuses == {"error", "timeout"}
    assert group_errors([]) == []
