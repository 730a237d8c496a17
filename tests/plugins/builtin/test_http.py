from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from agent_pm.plugins.builtin._http import (
    HTTPConfig,
    HTTPPlugin,
    PluginHTTPError,
    RetryingClient,
    decode,
)


def _client(answers: Iterator[httpx.Response], sleeper: Any, **config: Any) -> RetryingClient:
    transport = httpx.MockTransport(lambda request: next(answers))
    client = httpx.AsyncClient(transport=transport, base_url="http://service/api")
    return RetryingClient(client, HTTPConfig(**config), sleeper, logging.getLogger("test"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 0.5),
        ({}, 0.5),
        ({"Retry-After": "-3"}, 0),
    ],
)
async def test_429_without_usable_retry_after_backs_off(
    sleeper: Any, headers: dict[str, str], delay: float
) -> None:
    answers = iter([httpx.Response(429, headers=headers), httpx.Response(200)])
    client = _client(answers, sleeper)

    response = await client.request("GET", "/thing")
    await client.aclose()

    assert response.status_code == 200
    assert sleeper.delays == [delay]


@pytest.mark.anyio
async def test_backoff_doubles_up_to_the_cap(sleeper: Any) -> None:
    answers = iter([httpx.Response(500)] * 6)
    client = _client(answers, sleeper, max_retries=5, backoff_seconds=1, backoff_cap_seconds=3)

    with pytest.raises(
        PluginHTTPError, match=r"^GET /api/thing failed: HTTP 500 after 6 attempts$"
    ):
        await client.request("GET", "/thing?token=secret")

    assert sleeper.delays == [1, 2, 3, 3, 3]


@pytest.mark.anyio
async def test_unexpected_body_names_only_the_call(sleeper: Any) -> None:
    class Answer(msgspec.Struct):
        key: str

    client = _client(iter([httpx.Response(201, content=b"<html>")]), sleeper)
    response = await client.request("POST", "/thing?token=secret")

    with pytest.raises(PluginHTTPError) as caught:
        decode(response, Answer)
    assert str(caught.value) == "POST /api/thing failed: unexpected response body"
    assert caught.value.status == 201


def test_plugin_client_exists_only_while_enabled() -> None:
    class Plugin(HTTPPlugin):
        name = "probe"

    with pytest.raises(RuntimeError, match="'probe' is not enabled"):
        _ = Plugin().http
    with pytest.raises(NotImplementedError):
        Plugin().client_options()
