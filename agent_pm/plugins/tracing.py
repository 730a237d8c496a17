"""Tracing: an OpenTelemetry span for every hook call and for each handler it runs.

Optional: with the ``otel`` extra installed, :func:`tracing_for` gives a :class:`Tracing` that
records through OpenTelemetry's API (the global tracer provider unless one is given); without
it, it gives ``None`` and dispatch takes no tracing step at all. A hook call's span is a child
of the caller's current span; each handler's span is a child of the call's and is the current
span while the handler runs (in its task, and in its worker thread for a sync handler), so a
hook a handler emits nests under it. Error text on spans is the redacted text samples carry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import Context, ContextVar
from typing import TYPE_CHECKING, Any

from agent_pm.plugins.context import request_id

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["Tracing", "tracing_for"]

SCOPE = "agent_pm.plugins"
FAILED = frozenset({"error", "timeout", "deadline"})
# Whether the current hook call's span records: when it does not (no SDK configured, or the call
# sampled out), its handlers' spans would not either, and are not made.
_recording: ContextVar[bool] = ContextVar("agent_pm_span_recording", default=True)


class Tracing:
    """Starts and ends the spans of hook calls through OpenTelemetry's API."""

    def __init__(self, provider: Any = None) -> None:
        from opentelemetry import context, trace

        self._tracer = trace.get_tracer(SCOPE, tracer_provider=provider)
        self._attach = context.attach
        self._detach = context.detach
        self._status = trace.Status
        self._in_context = trace.set_span_in_context
        self._error = trace.StatusCode.ERROR

    @contextlib.contextmanager
    def call(self, hook: str, source: str | None, budget: float | None) -> Iterator[Span]:
        """The span of one ``fire`` (or an ``emit`` by plugin ``source``), current inside."""
        attributes: dict[str, Any] = {"agent_pm.hook": hook}
        if source is not None:
            attributes["agent_pm.source"] = source
        if budget is not None:
            attributes["agent_pm.budget_s"] = budget
        rid = request_id.get()
        if rid is not None:
            attributes["agent_pm.request_id"] = rid
        name = f"emit {hook}" if source is not None else f"fire {hook}"
        # What ``start_as_current_span`` does, without its three layers of context managers.
        span = self._tracer.start_span(name, attributes=attributes)
        recording = span.is_recording()
        token, flag = self._attach(self._in_context(span)), _recording.set(recording)
        try:
            yield span
        except Exception as exc:
            if recording:
                span.record_exception(exc)
                span.set_status(self._status(self._error, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            _recording.reset(flag)
            self._detach(token)
            span.end()

    def recording(self) -> bool:
        """Whether the current hook call's span records (handlers' spans are made only then)."""
        return _recording.get()

    def start(self, plugin: str, hook: str, timeout: float) -> Span | None:
        """A handler's span, a child of the current one; ``None`` when the current span records
        nothing (no SDK configured, or the call sampled out), as its children would not either."""
        if not _recording.get():
            return None
        attributes: dict[str, Any] = {
            "agent_pm.plugin": plugin,
            "agent_pm.hook": hook,
            "agent_pm.timeout_s": timeout,
        }
        rid = request_id.get()
        if rid is not None:
            attributes["agent_pm.request_id"] = rid
        return self._tracer.start_span(f"{hook} {plugin}", attributes=attributes)

    def activate(self, span: Span, context: Context | None = None) -> None:
        """Make ``span`` the current span in ``context`` (``None``: the current context), for
        the rest of that context's life: a handler's task or thread context."""
        current = self._in_context(span)
        if context is None:
            self._attach(current)
        else:
            context.run(self._attach, current)

    def end(self, span: Span, status: str, duration_ms: float, error: str | None) -> None:
        """Record the outcome on a handler's span and end it."""
        span.set_attributes(
            {
                "agent_pm.status": status,
                "agent_pm.duration_ms": duration_ms,
                "agent_pm.quarantined": status == "quarantined",
            }
        )
        if status in FAILED:
            message = error or status
            span.add_event("exception", {"exception.type": status, "exception.message": message})
            span.set_status(self._error, message)
        span.end()


def tracing_for(enabled: bool, provider: Any = None) -> Tracing | None:
    """Tracing through ``provider`` (default: the global one) if enabled and OpenTelemetry is
    installed; ``None`` otherwise."""
    if not enabled:
        return None
    try:
        return Tracing(provider)
    except ImportError:
        return None
