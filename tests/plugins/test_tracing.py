"""Spans of hook calls: the tree under the caller's span, attributes, errors, threads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import StatusCode

from agent_pm.plugins import context
from agent_pm.plugins.tracing import Tracing
from tests.plugins.test_dispatch import steppers

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Spans:
    """A tracer provider exporting to memory, and the spans it finished."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        [span] = [s for s in self.finished() if s.name == name]
        return span

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        return next(s for s in self.finished() if s.context.span_id == span.parent.span_id)


@pytest.fixture
def spans() -> Iterator[Spans]:
    collected = Spans()
    yield collected
    collected.provider.shutdown()


async def test_span_tree_nests_handlers_and_emits_under_the_caller(
    registry_factory, entry, spans: Spans
) -> None:
    entries = [
        *steppers(entry, ["relay"], 30),
        entry("SpanProbe", name="probe", timeout_seconds=60),
    ]
    tracer = spans.provider.get_tracer("caller")
    async with registry_factory(*entries, tracer_provider=spans.provider) as registry:
        with tracer.start_as_current_span("request"):
            [result] = await registry.fire("step")
    request = spans.named("request")
    fire, relay = spans.named("fire step"), spans.named("step relay")
    emit, probe = spans.named("emit measure"), spans.named("measure probe")
    assert spans.parent_of(fire) is request
    assert spans.parent_of(relay) is fire
    assert spans.parent_of(emit) is relay
    assert spans.parent_of(probe) is emit
    # In the sync handler's worker thread, the current span is the handler's own.
    assert result.value == [format(probe.context.span_id, "016x")]
    assert {s.context.trace_id for s in spans.finished()} == {request.context.trace_id}
    assert emit.attributes is not None and emit.attributes["agent_pm.source"] == "relay"


async def test_handler_span_attributes_and_recorded_errors(
    registry_factory, entry, spans: Spans
) -> None:
    entries = [*steppers(entry, ["once", "raise_after", "forever"], 0.2), entry("Secretive")]
    async with registry_factory(*entries, tracer_provider=spans.provider) as registry:
        token = context.request_id.set("req-7")
        try:
            with anyio.fail_after(10):
                await registry.fire("step", timeout=5)
        finally:
            context.request_id.reset(token)
        await registry.fire("post_plan")
    once, failed, cut = (spans.named(f"step {m}") for m in ("once", "raise_after", "forever"))
    assert once.attributes is not None
    assert {k: once.attributes[k] for k in once.attributes if k != "agent_pm.duration_ms"} == {
        "agent_pm.plugin": "once",
        "agent_pm.hook": "step",
        "agent_pm.timeout_s": 0.2,
        "agent_pm.request_id": "req-7",
        "agent_pm.status": "success",
        "agent_pm.quarantined": False,
    }
    assert once.status.status_code is not StatusCode.ERROR
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: after"
    assert [e.name for e in failed.events] == ["exception"]
    assert cut.attributes is not None and cut.attributes["agent_pm.status"] == "timeout"
    assert cut.attributes["agent_pm.duration_ms"] >= 200
    assert spans.named("fire step").attributes["agent_pm.budget_s"] <= 5  # type: ignore[index]
    skipped = spans.named("post_plan secretive")
    assert skipped.attributes is not None and skipped.attributes["agent_pm.status"] == "skipped"


async def test_span_error_text_is_redacted(registry_factory, entry, spans: Spans, tmp_path) -> None:
    from agent_pm.settings import Settings

    settings = Settings.from_env({"API_TOKEN": "s3cret-canary-token"})
    async with registry_factory(
        entry("Secretive"), settings_=settings, tracer_provider=spans.provider
    ) as registry:
        await registry.fire("post_plan")
    span = spans.named("post_plan secretive")
    assert span.status.description is not None
    assert "s3cret-canary-token" not in span.status.description
    assert "s3cret-canary-token" not in str(span.events[0].attributes)


def test_a_call_that_raises_ends_its_span_with_the_error(spans: Spans) -> None:
    tracing = Tracing(spans.provider)
    with pytest.raises(RuntimeError), tracing.call("post_plan", "relay", 2.0):
        assert trace.get_current_span().is_recording()
        raise RuntimeError("boom")
    assert not trace.get_current_span().is_recording()  # the caller's context is back
    span = spans.named("emit post_plan")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: boom"
    assert [event.name for event in span.events] == ["exception"]
    assert span.attributes is not None and span.attributes["agent_pm.budget_s"] == 2.0


class CountingSampler(Sampler):
    """Samples every span (or none) and counts the spans asked about, by name."""

    def __init__(self, record: bool) -> None:
        self.decision = Decision.RECORD_AND_SAMPLE if record else Decision.DROP
        self.asked: list[str] = []

    def should_sample(self, parent_context, trace_id, name, *args, **kwargs) -> SamplingResult:
        self.asked.append(name)
        return SamplingResult(self.decision)

    def get_description(self) -> str:
        return "counting"


@pytest.mark.parametrize("record", [True, False])
async def test_handler_spans_are_made_only_under_a_recording_call(
    registry_factory, entry, record: bool
) -> None:
    # A call span that records nothing (sampled out, or no SDK at all) has children that would
    # record nothing either: they are not made, so tracing costs no more than one span per call.
    sampler = CountingSampler(record)
    provider = TracerProvider(sampler=sampler)
    entries = [entry("Echo", name=f"echo{i}") for i in range(3)]
    async with registry_factory(*entries, tracer_provider=provider) as registry:
        results = await registry.fire("post_plan", x=1)
    assert [r.status for r in results] == ["success"] * 3
    handlers = [f"post_plan echo{i}" for i in range(3)] if record else []
    # trio's tasks start the handlers' spans in any order.
    assert sampler.asked[0] == "fire post_plan" and sorted(sampler.asked[1:]) == handlers
    provider.shutdown()


def test_platform_works_without_opentelemetry(tmp_path) -> None:
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text("- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n")
    script = f"""
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import anyio
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.tracing import tracing_for
from agent_pm.settings import Settings

async def main():
    assert tracing_for(True) is None
    async with PluginRegistry({str(manifest)!r}, Settings.from_env({{}})) as registry:
        [result] = await registry.fire("post_plan", timeout=1)
    print(result.status)

anyio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "success"
