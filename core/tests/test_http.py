"""The REST client (transport/http.py) against the loopback server: retries, Retry-After, 4xx, timeouts."""

from __future__ import annotations

import email.utils
from collections.abc import Callable

import anyio
import anyio.abc
import pytest

from marketfeeder.transport.http import HttpClient, HttpError
from marketfeeder.transport.server import HttpReply, HttpRequest, LoopbackServer, ServerWebSocket

pytestmark = pytest.mark.anyio

OK = HttpReply(200, b'{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[]}')


async def no_ws(ws: ServerWebSocket) -> None:
    raise AssertionError("no WebSocket expected")


class Script:
    """Answers requests from a list of replies, in order; repeats the last one. Records each request."""

    def __init__(self, *replies: HttpReply) -> None:
        self.replies = list(replies)
        self.requests: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> HttpReply:
        self.requests.append(request)
        return self.replies[min(len(self.requests), len(self.replies)) - 1]


def client(
    *,
    timeout: float = 5.0,
    retries: int = 3,
    backoff_initial: float = 0.001,
    backoff_max: float = 0.002,
    max_retry_after: float = 60.0,
) -> HttpClient:
    return HttpClient(
        timeout=timeout,
        retries=retries,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        max_retry_after=max_retry_after,
    )


def serve(script: Callable[[HttpRequest], HttpReply]) -> LoopbackServer:
    return LoopbackServer(ws_handler=no_ws, http_handler=script)


async def test_get_json_passes_params_and_parses_the_body() -> None:
    script = Script(OK)
    async with serve(script) as server, client() as http:
        data = await http.get_json(server.http_url + "/api/v3/depth", {"symbol": "BNBBTC", "limit": 5})
    assert data["lastUpdateId"] == 1027024
    (request,) = script.requests
    assert request.path == "/api/v3/depth"
    assert request.query == {"symbol": "BNBBTC", "limit": "5"}
    assert request.headers["User-Agent"] == "marketfeeder"


async def test_retries_on_500_then_succeeds() -> None:
    script = Script(HttpReply(500, b"oops"), HttpReply(502, b"bad gateway"), OK)
    async with serve(script) as server, client() as http:
        data = await http.get_json(server.http_url + "/depth")
    assert data["lastUpdateId"] == 1027024
    assert len(script.requests) == 3
    assert (http.stats.requests, http.stats.retries, http.stats.failures) == (3, 2, 0)


async def test_gives_up_after_the_retry_budget() -> None:
    script = Script(HttpReply(503, b"maintenance"))
    async with serve(script) as server, client(retries=2) as http:
        with pytest.raises(HttpError) as info:
            await http.get(server.http_url + "/depth")
    assert info.value.status == 503
    assert info.value.body == "maintenance"
    assert "gave up after 3 attempts" in str(info.value)
    assert len(script.requests) == 3
    assert http.stats.failures == 1


async def test_429_honours_retry_after_seconds() -> None:
    limited = HttpReply(429, b'{"code":-1003}', headers={"Retry-After": "0.05"})
    script = Script(limited, OK)
    # Exponential backoff would sleep up to 60 s here: only Retry-After can make this quick.
    async with serve(script) as server, client(backoff_initial=60, backoff_max=60) as http:
        with anyio.fail_after(10):
            await http.get_json(server.http_url + "/depth")
    assert len(script.requests) == 2
    assert http.stats.rate_limited == 1


async def test_429_honours_retry_after_http_date() -> None:
    past = email.utils.formatdate(0, usegmt=True)  # already elapsed: retry at once
    script = Script(HttpReply(429, b"", headers={"Retry-After": past}), OK)
    async with serve(script) as server, client(backoff_initial=60, backoff_max=60) as http:
        with anyio.fail_after(10):
            await http.get_json(server.http_url + "/depth")
    assert len(script.requests) == 2


async def test_retry_after_is_capped() -> None:
    script = Script(HttpReply(429, b"", headers={"Retry-After": "3600"}), OK)
    async with serve(script) as server, client(max_retry_after=0.01) as http:
        with anyio.fail_after(10):
            await http.get_json(server.http_url + "/depth")
    assert len(script.requests) == 2


async def test_no_retry_on_400() -> None:
    script = Script(HttpReply(400, b'{"code":-1121,"msg":"Invalid symbol."}'), OK)
    async with serve(script) as server, client() as http:
        with pytest.raises(HttpError) as info:
            await http.get_json(server.http_url + "/depth", {"symbol": "NOPE"})
    assert info.value.status == 400
    assert "Invalid symbol." in info.value.body
    assert len(script.requests) == 1
    assert http.stats.retries == 0


async def test_timeout_is_retried_then_fails() -> None:
    calls = 0

    async def slow(request: HttpRequest) -> HttpReply:
        nonlocal calls
        calls += 1
        await anyio.sleep(30)
        return OK

    async with (
        LoopbackServer(ws_handler=no_ws, http_handler=slow) as server,
        client(timeout=0.2, retries=1) as http,
    ):
        with anyio.fail_after(10), pytest.raises(HttpError) as info:
            await http.get(server.http_url + "/depth")
    assert info.value.status is None
    assert "Timeout" in str(info.value)
    assert calls == 2


async def test_timeout_then_success() -> None:
    calls = 0

    async def first_slow(request: HttpRequest) -> HttpReply:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep(30)
        return OK

    async with (
        LoopbackServer(ws_handler=no_ws, http_handler=first_slow) as server,
        client(timeout=0.2) as http,
    ):
        with anyio.fail_after(10):
            data = await http.get_json(server.http_url + "/depth")
    assert data["lastUpdateId"] == 1027024
    assert calls == 2


async def test_non_json_body_is_a_clear_error() -> None:
    script = Script(HttpReply(200, b"<html>maintenance</html>", "text/html"))
    async with serve(script) as server, client() as http:
        with pytest.raises(HttpError, match="not JSON") as info:
            await http.get_json(server.http_url + "/depth")
    assert info.value.body == "<html>maintenance</html>"


async def test_connection_refused_is_retried_then_reported() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with client(retries=1) as http:
        with pytest.raises(HttpError) as info:
            await http.get(f"http://127.0.0.1:{port}/depth")
    assert info.value.status is None
    assert http.stats.requests == 2
