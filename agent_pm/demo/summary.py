"""A quiet demo console: one line every few seconds summing up what the stand-ins injected.

The plugins retry injected 503 and 429 answers without a log line each (``_http`` logs retries
at DEBUG); this summary says how many there were, so a demo run shows its faults in a glance.
"""

from __future__ import annotations

from collections import Counter

import anyio

from agent_pm.demo._standin import CLIENT_GONE
from agent_pm.demo.environment import DemoServices

__all__ = ["SUMMARY_SECONDS", "describe_faults", "report_faults"]

SUMMARY_SECONDS = 10.0


def describe_faults(answered: Counter[int], seconds: float) -> str | None:
    """One line for what the stand-ins answered in the last ``seconds``; ``None`` if nothing."""
    total = answered.total()
    if not total:
        return None
    failed = sorted((s, n) for s, n in answered.items() if s >= 400 and s != CLIENT_GONE)
    faults = ", ".join(f"{count} answered {status}" for status, count in failed) or "none"
    gone = answered[CLIENT_GONE]
    line = f"demo: {total} calls to the stand-ins in {seconds:g} s; injected failures: {faults}"
    return line + (f"; {gone} abandoned by a plugin's timeout" if gone else "")


async def report_faults(services: DemoServices, every: float = SUMMARY_SECONDS) -> None:
    """Print :func:`describe_faults` of both stand-ins every ``every`` seconds, forever."""
    seen: Counter[int] = Counter()
    while True:
        await anyio.sleep(every)  # a periodic report, not waiting for a condition
        answered = services.jira.answered + services.slack.answered
        line = describe_faults(answered - seen, every)
        seen = answered
        if line:
            print(line, flush=True)
