"""Caller context over REST: the request id in every record of a call, the span tree of a
REST-triggered hook, and the caller's budget as ``?timeout=``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_pm.api._app import create_app
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN

pytestmark = pytest.mark.anyio

MANIFEST = """\
- name: relay
  module: tests.fixtures.plugins:Stepper
  enabled: true
  timeout_seconds: 30
  config: {mode: relay}
- name: probe
  module: tests.fixtures.plugins:SpanProbe
  enabled: true
  timeout_seconds: 60
- name: failing
  module: tests.fixtures.plugins:Failing
  enabled: true
- name: forever
  module: tests.fixtures.plugins:Stepper
  enabled: true
  timeout_seconds: 30
  config: {mode: forever}
"""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    write_manifest: Callable[[str], Path], api_settings: Settings, exporter: InMemorySpanExporter
) -> AsyncIterator[httpx.AsyncClient]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    path = write_manifest(MANIFEST)
    async with PluginRegistry(path, api_settings, tracer_provider=provider) as registry:
        app = create_app(api_settings, registry=registry)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield client
    provider.shutdown()


async def test_rest_hook_call_carries_its_request_id_everywhere(
    traced: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    headers = {**ADMIN, "X-Request-ID": "req-rest-1"}
    reply = await traced.post("/hooks/post_plan", headers=headers, json={})
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "req-rest-1"
    failing = (await traced.get("/plugins/failing", headers=ADMIN)).json()["plugin"]
    history = (await traced.get("/plugins/failing/history", headers=ADMIN)).json()["history"]
    assert history["post_plan"][-1]["request_id"] == "req-rest-1"
    assert failing["errors"][-1]["request_id"] == "req-rest-1"
    [span] = [s for s in exporter.get_finished_spans() if s.name == "post_plan failing"]
    assert span.attributes is not None and span.attributes["agent_pm.request_id"] == "req-rest-1"


async def test_rest_triggered_hook_span_tree_with_an_emit_inside(
    traced: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    headers = {**ADMIN, "X-Request-ID": "req-tree"}
    reply = await traced.post("/hooks/step?timeout=1", headers=headers, json={})
    [relay_result] = [r for r in reply.json()["results"] if r["plugin"] == "relay"]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    fire, relay = spans["fire step"], spans["step relay"]
    emit, probe = spans["emit measure"], spans["measure probe"]
    assert fire.parent is None
    assert relay.parent is not None and relay.parent.span_id == fire.context.span_id
    assert emit.parent is not None and emit.parent.span_id == relay.context.span_id
    assert probe.parent is not None and probe.parent.span_id == emit.context.span_id
    assert relay_result["value"] == [format(probe.context.span_id, "016x")]
    for span in (fire, relay, emit, probe):
        assert span.attributes is not None and span.attributes["agent_pm.request_id"] == "req-tree"


async def test_rest_timeout_is_the_caller_budget_and_reserved_in_payloads(
    traced: httpx.AsyncClient,
) -> None:
    reply = await traced.post("/hooks/step?timeout=0.2", headers=ADMIN, json={})
    assert reply.status_code == 200
    [cut] = [r for r in reply.json()["results"] if r["plugin"] == "forever"]
    assert cut["status"] == "deadline"
    metrics = (await traced.get("/metrics", headers=ADMIN)).text
    assert 'agent_pm_hook_deadlines_total{plugin="forever",hook="step"} 1' in metrics
    assert 'agent_pm_hook_timeouts_total{plugin="forever",hook="step"} 0' in metrics
    reserved = await traced.post("/hooks/step", headers=ADMIN, json={"timeout": 1})
    assert reserved.status_code == 400 and "timeout" in reserved.json()["detail"]
    for bad in ("soon", "0", "-1", "inf"):
        answer = await traced.post(f"/hooks/step?timeout={bad}", headers=ADMIN, json={})
        assert answer.status_code == 400, bad
        assert "timeout" in answer.json()["detail"]
