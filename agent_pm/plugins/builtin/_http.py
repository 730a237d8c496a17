"""Outbound HTTP for the built-in plugins: explicit timeouts and bounded retries.

Retried: 429 (after ``Retry-After`` seconds, capped), 5xx, and failures to connect. A timeout
after the request went out is not retried, so one slow answer cannot turn into two Jira issues.
Errors name the method, the URL path and the status only: headers, query strings and hosts may
carry credentials and never reach an exception message or a log record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar

import anyio
import httpx
import msgspec

from agent_pm.errors import AgentPMError
from agent_pm.plugins.base import PluginBase

__all__ = ["HTTPConfig", "HTTPPlugin", "PluginHTTPError", "RetryingClient", "Sleeper", "decode"]

T = TypeVar("T")
Sleeper = Callable[[float], Awaitable[Any]]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
SKIPPED_MISSING_SECRETS = {"skipped": "missing secrets"}


class PluginHTTPError(AgentPMError):
    """Raised when an outbound call fails for good: a 4xx, retries exhausted, or a bad answer."""

    def __init__(self, method: str, path: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{method} {path} failed: {reason}")
        self.method = method
        self.path = path
        self.status = status


class HTTPConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Timeout and retry settings shared by the plugins that call out over HTTP."""

    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=120)] = 5.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    backoff_seconds: NonNegative = 0.5
    backoff_cap_seconds: NonNegative = 4.0
    retry_after_cap_seconds: NonNegative = 10.0


def decode(response: httpx.Response, type: type[T]) -> T:
    """Decode a JSON answer into ``type``, or raise a :class:`PluginHTTPError` naming the call."""
    try:
        return msgspec.json.decode(response.content, type=type)
    except msgspec.DecodeError:
        request = response.request
        raise PluginHTTPError(
            request.method, request.url.path, "unexpected response body", response.status_code
        ) from None


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _checked(method: str, path: str, response: httpx.Response) -> httpx.Response:
    if response.is_error:
        status = response.status_code
        raise PluginHTTPError(method, path, f"HTTP {status}", status)
    return response


def _retry_after(response: httpx.Response) -> float | None:
    # Only the delta-seconds form; an HTTP-date falls back to exponential backoff.
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


class RetryingClient:
    """An ``httpx.AsyncClient`` wrapper that retries what is safe to retry, within a bound."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        config: HTTPConfig,
        sleep: Sleeper,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._client = client
        self._config = config
        self._sleep = sleep
        self._log = log

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._client.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; return the first 2xx/3xx answer or raise :class:`PluginHTTPError`."""
        path = self._client.build_request(method, url).url.path
        attempt = 0
        while True:
            attempt += 1
            response = await self._send(method, url, path, kwargs)
            if response is not None and not _retryable(response.status_code):
                return _checked(method, path, response)
            status = None if response is None else response.status_code
            reason = "could not connect" if status is None else f"HTTP {status}"
            if attempt > self._config.max_retries:
                raise PluginHTTPError(method, path, f"{reason} after {attempt} attempts", status)
            delay = self._delay(response, attempt)
            self._log.debug("%s %s: %s, retry %d in %.2fs", method, path, reason, attempt, delay)
            await self._sleep(delay)

    async def _send(
        self, method: str, url: str, path: str, kwargs: Mapping[str, Any]
    ) -> httpx.Response | None:
        """One attempt; ``None`` means the connection failed before the request went out."""
        try:
            return await self._client.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return None
        except httpx.HTTPError as exc:
            # ``from None``: the chained httpx error would drag the request into tracebacks.
            raise PluginHTTPError(method, path, type(exc).__name__) from None

    def _delay(self, response: httpx.Response | None, attempt: int) -> float:
        config = self._config
        if response is not None and response.status_code == 429:
            retry_after = _retry_after(response)
            if retry_after is not None:
                return min(retry_after, config.retry_after_cap_seconds)
        return min(config.backoff_seconds * 2.0 ** (attempt - 1), config.backoff_cap_seconds)


class HTTPPlugin(PluginBase):
    """Base of the plugins that call out over HTTP: owns the client from enable to disable.

    ``sleep`` is the pause between retries; replace it before ``on_enable`` to observe or skip
    the delays.
    """

    # Room for a few retries past the platform's default per-hook budget; a call that still
    # runs past it is cancelled by the registry, which httpx handles cleanly.
    timeout = 30.0

    def __init__(self, config: Any = None) -> None:
        config_type = type(self).Config
        # Built with no config (a test, a direct call), the plugin runs on its defaults.
        if config is None and config_type is not None:
            config = config_type()
        super().__init__(config)
        self.sleep: Sleeper = anyio.sleep
        self._http: RetryingClient | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.AsyncClient`` (base URL, auth, headers) for this plugin."""
        raise NotImplementedError

    async def on_enable(self) -> None:
        """Open the connection pool; without the secrets there is nothing to connect to."""
        if self.missing_secrets():
            return
        timeout = httpx.Timeout(self.config.timeout_seconds)
        client = httpx.AsyncClient(timeout=timeout, **self.client_options())
        self._http = RetryingClient(client, self.config, self.sleep, self.log)

    async def on_disable(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def secret(self, key: str) -> str:
        """The value of secret ``key``, empty when it is missing."""
        return self.get_secret(key) or ""

    def skipped(self) -> dict[str, str] | None:
        """The result of a handler called although secrets are missing, else ``None``."""
        return dict(SKIPPED_MISSING_SECRETS) if self.missing_secrets() else None

    @property
    def http(self) -> RetryingClient:
        """The client; only between ``on_enable`` and ``on_disable``."""
        if self._http is None:
            raise RuntimeError(f"plugin {self.plugin_name!r} is not enabled")
        return self._http
