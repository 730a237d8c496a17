"""The demo console's periodic fault summary."""

from __future__ import annotations

from collections import Counter

from agent_pm.demo.summary import describe_faults


def test_summary_counts_injected_failures_and_abandoned_calls() -> None:
    answered = Counter({201: 30, 200: 5, 503: 7, 429: 2, 499: 1})
    assert describe_faults(answered, 10) == (
        "demo: 45 calls to the stand-ins in 10 s; injected failures: 2 answered 429, "
        "7 answered 503; 1 abandoned by a plugin's timeout"
    )


def test_summary_of_a_quiet_interval() -> None:
    assert describe_faults(Counter({200: 3}), 10) == (
        "demo: 3 calls to the stand-ins in 10 s; injected failures: none"
    )
    assert describe_faults(Counter(), 10) is None
