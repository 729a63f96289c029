"""REST client shared by connectors: httpx (anyio-native), timeouts, retries on 429/5xx.

Retries honour ``Retry-After`` (seconds or an HTTP date), capped at ``max_retry_after``; other
failures back off exponentially with full jitter. 4xx answers other than 429 are not retried: they
are the caller's mistake and surface at once as :class:`HttpError` with the body the server sent.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from typing import Any

import anyio
import attrs
import httpx
import orjson

__all__ = ["HttpClient", "HttpError", "HttpStats"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class HttpError(Exception):
    """A REST request failed for good (after retries, or at once for a client error)."""

    def __init__(self, message: str, *, url: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


@attrs.define
class HttpStats:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    rate_limited: int = 0


class HttpClient:
    """Use as ``async with HttpClient() as http: data = await http.get_json(url, params)``."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        max_retry_after: float = 60.0,
        verify: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.stats = HttpStats()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            verify=verify,
            headers={"User-Agent": "marketfeeder", **dict(headers or {})},
            follow_redirects=False,
        )

    async def __aenter__(self) -> HttpClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await self._client.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._client.aclose()

    async def get_json(self, url: str, params: Mapping[str, str | int] | None = None) -> Any:
        response = await self.get(url, params)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise HttpError(
                f"GET {url}: response is not JSON ({exc})", url=url, status=response.status_code,
                body=response.text[:500],
            ) from None

    async def get_text(self, url: str, params: Mapping[str, str | int] | None = None) -> str:
        return (await self.get(url, params)).text

    async def get(self, url: str, params: Mapping[str, str | int] | None = None) -> httpx.Response:
        """GET with retries; returns a 2xx response or raises :class:`HttpError`."""
        attempt = 0
        while True:
            self.stats.requests += 1
            delay: float | None
            try:
                with anyio.fail_after(self.timeout + 1.0):
                    response = await self._client.get(url, params=dict(params) if params else None)
            except (httpx.TransportError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                status = None
                body = ""
                delay = self._backoff(attempt)
            else:
                if response.status_code < 300:
                    return response
                status = response.status_code
                body = response.text[:500]
                reason = f"HTTP {status}"
                if status not in RETRY_STATUSES:
                    self.stats.failures += 1
                    raise HttpError(f"GET {url}: {reason}: {body}", url=url, status=status, body=body)
                if status == 429:
                    self.stats.rate_limited += 1
                delay = self._retry_after(response)
                if delay is None:  # "Retry-After: 0" (or a past date) means now, not "use the backoff"
                    delay = self._backoff(attempt)
            if attempt >= self.retries:
                self.stats.failures += 1
                raise HttpError(
                    f"GET {url}: {reason} (gave up after {attempt + 1} attempts)", url=url, status=status, body=body
                )
            attempt += 1
            self.stats.retries += 1
            await anyio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff_initial * (2**attempt)))

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            if parsed is None:
                return None
            seconds = parsed.timestamp() - time.time()
        return max(0.0, min(seconds, self.max_retry_after))
