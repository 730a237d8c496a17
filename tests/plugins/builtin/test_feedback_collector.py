from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from agent_pm.errors import EmitLoopError
from agent_pm.plugins.builtin.feedback_collector import FeedbackCollectorPlugin

VALID = {"title": "Love the plans", "rating": 5, "submitted_by": "ana"}


def _plugin(database: Path, emitter: Any = None) -> FeedbackCollectorPlugin:
    plugin = FeedbackCollectorPlugin(FeedbackCollectorPlugin.Config(str(database)))
    plugin.bind("feedback_collector", {}, [], emitter)
    return plugin


def _client(plugin: FeedbackCollectorPlugin) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=Starlette(routes=plugin.routes()))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "feedback.sqlite3"


@pytest.fixture
async def plugin(database: Path, emitter: Any) -> AsyncIterator[FeedbackCollectorPlugin]:
    plugin = _plugin(database, emitter)
    await plugin.on_enable()
    yield plugin
    await plugin.on_disable()


@pytest.fixture
async def client(plugin: FeedbackCollectorPlugin) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(plugin) as client:
        yield client


@pytest.mark.anyio
async def test_submit_stores_record_and_emits_on_feedback(
    client: httpx.AsyncClient, emitter: Any, database: Path
) -> None:
    response = await client.post("/feedback", json={**VALID, "comment": "More please"})

    assert response.status_code == 201
    record = response.json()
    assert record["id"] == 1
    assert record["created_at"].endswith("Z")
    assert datetime.fromisoformat(record["created_at"]).utcoffset().total_seconds() == 0
    assert {key: record[key] for key in VALID} == VALID
    assert (record["comment"], record["source"]) == ("More please", "api")
    assert emitter.calls == [("feedback_collector", "on_feedback", {"feedback": record})]
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"rating": 5, "submitted_by": "ana"},
        {**VALID, "rating": 0},
        {**VALID, "rating": 6},
        {**VALID, "rating": "5"},
        {**VALID, "title": ""},
        {**VALID, "title": "x" * 201},
        {**VALID, "comment": "x" * 4001},
        {**VALID, "unknown": True},
        [VALID],
    ],
)
async def test_invalid_body_is_422(client: httpx.AsyncClient, emitter: Any, body: Any) -> None:
    response = await client.post("/feedback", json=body)

    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert response.json()["detail"]
    assert emitter.calls == []


@pytest.mark.anyio
async def test_non_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/feedback", content=b"title=hello")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


@pytest.mark.anyio
async def test_body_over_64_kib_is_413(client: httpx.AsyncClient) -> None:
    declared = await client.post("/feedback", json={**VALID, "comment": "x" * 70_000})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b"x" * 1024

    # Streamed without Content-Length: the limit holds while reading, too.
    streamed = await client.post("/feedback", content=chunks())

    assert declared.status_code == streamed.status_code == 413
    assert streamed.json()["error"] == "payload_too_large"


@pytest.mark.anyio
async def test_listing_is_newest_first_and_paginated(client: httpx.AsyncClient) -> None:
    for number in range(5):
        await client.post("/feedback", json={**VALID, "title": f"t{number}"})

    first = (await client.get("/feedback", params={"limit": 2})).json()
    second = (await client.get("/feedback", params={"limit": 2, "offset": 2})).json()
    everything = (await client.get("/feedback")).json()

    assert [item["title"] for item in first["items"]] == ["t4", "t3"]
    assert [item["title"] for item in second["items"]] == ["t2", "t1"]
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert (everything["limit"], len(everything["items"])) == (50, 5)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "ten"},
        {"offset": -1},
        {"limit": "²"},
        {"offset": "9" * 5000},
    ],
)
async def test_bad_paging_numbers_are_400(client: httpx.AsyncClient, params: Any) -> None:
    response = await client.get("/feedback", params=params)

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


@pytest.mark.anyio
async def test_fifty_concurrent_submissions_are_all_stored(
    client: httpx.AsyncClient, emitter: Any
) -> None:
    statuses: list[int] = []

    async def submit(number: int) -> None:
        response = await client.post("/feedback", json={**VALID, "title": f"c{number}"})
        statuses.append(response.status_code)

    async with anyio.create_task_group() as tg:
        for number in range(50):
            tg.start_soon(submit, number)

    listing = (await client.get("/feedback", params={"limit": 200})).json()
    assert statuses == [201] * 50
    assert listing["total"] == 50
    assert sorted(item["title"] for item in listing["items"]) == sorted(f"c{n}" for n in range(50))
    assert sorted(item["id"] for item in listing["items"]) == list(range(1, 51))
    assert len(emitter.calls) == 50


@pytest.mark.anyio
async def test_records_survive_disable_and_enable(database: Path) -> None:
    first = _plugin(database)
    await first.on_enable()
    async with _client(first) as client:
        await client.post("/feedback", json=VALID)
    await first.on_disable()

    second = _plugin(database)
    await second.on_enable()
    async with _client(second) as client:
        await client.post("/feedback", json={**VALID, "title": "after restart"})
        listing = (await client.get("/feedback")).json()
    await second.on_disable()

    assert [item["title"] for item in listing["items"]] == ["after restart", VALID["title"]]


@pytest.mark.anyio
async def test_disabled_plugin_answers_503(database: Path) -> None:
    plugin = _plugin(database)
    async with _client(plugin) as client:
        response = await client.get("/feedback")

    assert response.status_code == 503
    assert not await anyio.Path(database).exists()


@pytest.mark.anyio
async def test_emit_failure_still_answers_201(
    client: httpx.AsyncClient, emitter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(source: str, hook: str, payload: dict[str, Any]) -> list[Any]:
        raise EmitLoopError("too deep")

    emitter.emit = failing
    response = await client.post("/feedback", json=VALID)

    assert response.status_code == 201
    assert "emitting on_feedback" in caplog.text


@pytest.mark.anyio
async def test_submit_over_a_real_socket(
    plugin: FeedbackCollectorPlugin, serve_here: Callable[[Any], Any]
) -> None:
    app = Starlette(routes=plugin.routes())
    async with serve_here(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        created = await client.post("/feedback", content=msgspec.json.encode(VALID))
        listing = await client.get("/feedback")

    assert created.status_code == 201
    assert listing.json()["items"] == [created.json()]


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"path": "x"}, FeedbackCollectorPlugin.Config)
