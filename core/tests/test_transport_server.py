"""LoopbackServer: WebSocket and HTTP on one loopback port, against real sockets."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.transport.server import (
    HttpReply,
    HttpRequest,
    LoopbackServer,
    ServerWebSocket,
    encode_frames,
)
from marketfeeder.transport.ws import WebSocketClosed, WebSocketHandshakeError, connect_websocket

pytestmark = pytest.mark.anyio


async def echo(ws: ServerWebSocket) -> None:
    while True:
        await ws.send(await ws.receive())


def json_reply(request: HttpRequest) -> HttpReply:
    body = f'{{"method":"{request.method}","path":"{request.path}","symbol":"{request.query.get("symbol", "")}"}}'
    return HttpReply(200, body.encode(), headers={"X-Weight": "5"})


async def no_ws(ws: ServerWebSocket) -> None:
    raise AssertionError("no WebSocket expected")


async def read_http_reply(stream: anyio.abc.ByteStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    with anyio.fail_after(5):
        while True:
            try:
                chunks.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return b"".join(chunks)


async def test_websocket_echo_round_trip() -> None:
    async with LoopbackServer(ws_handler=echo, http_handler=json_reply) as server:
        assert server.ws_url == f"ws://127.0.0.1:{server.port}"
        async with connect_websocket(server.ws_url + "/stream?streams=a@trade&x=") as ws:
            await ws.send("hello")
            await ws.send(b"\x00\x01")
            assert (await ws.receive())[0] == "hello"
            assert (await ws.receive())[0] == b"\x00\x01"
            (conn,) = server.connections
            assert conn.path == "/stream"
            assert conn.query == {"streams": "a@trade", "x": ""}
            assert conn.headers["upgrade"].lower() == "websocket"  # lookups ignore case
            assert conn.incoming_frames == 2
            assert not conn.closed


async def test_http_get_on_the_same_port() -> None:
    async def async_reply(request: HttpRequest) -> HttpReply:
        await anyio.lowlevel.checkpoint()
        return json_reply(request)

    for handler in (json_reply, async_reply):
        async with LoopbackServer(ws_handler=no_ws, http_handler=handler) as server:
            async with httpx.AsyncClient() as client:
                response = await client.get(server.http_url + "/api/v3/depth", params={"symbol": "BTCUSDT"})
            assert response.status_code == 200
            assert response.json() == {"method": "GET", "path": "/api/v3/depth", "symbol": "BTCUSDT"}
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-weight"] == "5"
            assert response.headers["connection"] == "close"
            assert server.http_requests == 1


async def test_http_status_and_content_type_are_passed_through() -> None:
    def reply(request: HttpRequest) -> HttpReply:
        return HttpReply(429, b"slow down", "text/plain", headers={"Retry-After": "7"})

    async with LoopbackServer(ws_handler=no_ws, http_handler=reply) as server, httpx.AsyncClient() as client:
        response = await client.get(server.http_url + "/x")
    assert response.status_code == 429
    assert response.text == "slow down"
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["retry-after"] == "7"


async def test_request_split_across_many_tcp_reads() -> None:
    async with LoopbackServer(ws_handler=no_ws, http_handler=json_reply) as server:
        request = b"GET /api/v3/time?symbol=ETHUSDT HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            for i in range(0, len(request), 7):
                await stream.send(request[i : i + 7])
                await anyio.sleep(0.002)  # give the server a chance to read each piece on its own
            reply = await read_http_reply(stream)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b'{"method":"GET","path":"/api/v3/time","symbol":"ETHUSDT"}'


async def test_websocket_upgrade_split_across_tcp_reads() -> None:
    """A raw upgrade request dribbled byte by byte still gets its 101."""
    async with LoopbackServer(ws_handler=echo, http_handler=json_reply) as server:
        request = (
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            for i in range(0, len(request), 5):
                await stream.send(request[i : i + 5])
                await anyio.sleep(0.001)
            with anyio.fail_after(5):
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head


async def test_malformed_request_gets_400_and_server_lives_on() -> None:
    async with LoopbackServer(ws_handler=no_ws, http_handler=json_reply) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(b"NONSENSE\r\n\r\n")
            reply = await read_http_reply(stream)
        assert reply.startswith(b"HTTP/1.1 400 ")
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.http_url + "/ok")).status_code == 200


async def test_http_handler_error_is_a_500_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: HttpRequest) -> HttpReply:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return json_reply(request)

    async with LoopbackServer(ws_handler=no_ws, http_handler=broken) as server, httpx.AsyncClient() as client:
        with caplog.at_level(logging.ERROR):
            assert (await client.get(server.http_url + "/boom")).status_code == 500
        assert (await client.get(server.http_url + "/fine")).status_code == 200
        assert server.handler_errors == 1
    assert "handler bug" in caplog.text


async def test_ws_accept_refuses_upgrade_with_its_reply() -> None:
    accepted: list[HttpRequest] = []
    handled: list[HttpRequest] = []

    def accept(request: HttpRequest) -> HttpReply | None:
        if request.path != "/ws":
            return HttpReply(404, b'{"error":"unknown path"}')
        accepted.append(request)
        return None

    async def handler(ws: ServerWebSocket) -> None:
        handled.append(ws.request)
        await echo(ws)

    async with LoopbackServer(ws_handler=handler, http_handler=json_reply, ws_accept=accept) as server:
        with pytest.raises(WebSocketHandshakeError) as info:
            async with connect_websocket(server.ws_url + "/nope"):
                pass
        assert info.value.status == 404
        assert info.value.body == b'{"error":"unknown path"}'
        async with connect_websocket(server.ws_url + "/ws") as ws:
            await ws.send("ok")
            assert (await ws.receive())[0] == "ok"
    assert len(handled) == 1
    assert handled[0] is accepted[0]  # the handler sees the very request ws_accept saw


async def test_handler_exception_closes_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(ws: ServerWebSocket) -> None:
        while True:
            message = await ws.receive()
            if message == "crash":
                raise ValueError("venue bug")
            await ws.send(message)

    async with (
        LoopbackServer(ws_handler=handler, http_handler=json_reply) as server,
        connect_websocket(server.ws_url) as healthy,
        connect_websocket(server.ws_url) as doomed,
    ):
        with caplog.at_level(logging.ERROR):
            await doomed.send("crash")
            with pytest.raises(WebSocketClosed) as info:
                await doomed.receive()
        assert info.value.code == 1011
        await healthy.send("still here")
        assert (await healthy.receive())[0] == "still here"
    assert server.handler_errors == 1
    assert "venue bug" in caplog.text


async def test_handler_return_closes_with_1000() -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.send("only message")

    async with LoopbackServer(ws_handler=handler, http_handler=json_reply) as server:
        async with connect_websocket(server.ws_url) as ws:
            received = [message async for message, _ in ws]
        assert received == ["only message"]
        assert ws.close_code == 1000


async def test_server_answers_client_pings_and_counts_every_frame() -> None:
    async with (
        LoopbackServer(ws_handler=echo, http_handler=json_reply) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        await ws.ping(b"p1")
        await ws.ping(b"p2")
        await ws.send("sync")
        assert (await ws.receive())[0] == "sync"  # pongs were read on the way
        assert ws.stats.pongs_received == 2
        (conn,) = server.connections
        assert conn.pings_received == 2
        assert conn.incoming_frames == 3


async def test_server_ping_gets_a_pong_with_the_same_payload() -> None:
    pinged = anyio.Event()
    conns: list[ServerWebSocket] = []

    async def handler(ws: ServerWebSocket) -> None:
        conns.append(ws)
        await ws.ping(b"venue-ping-42")
        pinged.set()
        await echo(ws)

    async with (
        LoopbackServer(ws_handler=handler, http_handler=json_reply) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        await pinged.wait()
        await ws.send("sync")
        assert (await ws.receive())[0] == "sync"  # the ping was read (and answered) on the way
        await ws.send("sync again")  # the pong went out before this: the server has read it
        assert (await ws.receive())[0] == "sync again"
        assert ws.stats.pings_received == 1
        assert ws.stats.pongs_sent == 1
        (conn,) = conns
        assert conn.pongs_received == 1
        assert conn.last_pong_payload == b"venue-ping-42"
        assert conn.last_pong_ns is not None


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4001, "rotate")])
async def test_server_initiated_close_codes(code: int, reason: str) -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.receive()
        await ws.close(code, reason)
        assert ws.closed

    async with LoopbackServer(ws_handler=handler, http_handler=json_reply) as server:
        async with connect_websocket(server.ws_url) as ws:
            await ws.send("go")
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
        assert (info.value.code, info.value.reason) == (code, reason)
        assert (ws.close_code, ws.close_reason) == (code, reason)


async def test_client_initiated_close_code_reaches_the_server() -> None:
    seen: list[tuple[int | None, str]] = []
    done = anyio.Event()

    async def handler(ws: ServerWebSocket) -> None:
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            seen.append((exc.code, exc.reason))
            done.set()

    async with LoopbackServer(ws_handler=handler, http_handler=json_reply) as server:
        async with connect_websocket(server.ws_url) as ws:
            await ws.close(4002, "done here")
        assert ws.close_code == 4002
        with anyio.fail_after(5):
            await done.wait()
    assert seen == [(4002, "done here")]


async def test_abort_drops_the_connection_without_close_frame() -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.send("before")
        await ws.receive()
        await ws.abort()

    async with LoopbackServer(ws_handler=handler, http_handler=json_reply) as server:
        async with connect_websocket(server.ws_url) as ws:
            assert (await ws.receive())[0] == "before"
            await ws.send("abort now")
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
        assert info.value.code == 1006


async def test_server_shutdown_closes_clients_with_1001() -> None:
    errors: list[WebSocketClosed] = []
    connected = anyio.Event()

    async def client(url: str) -> None:
        async with connect_websocket(url) as ws:
            await ws.send("x")
            assert (await ws.receive())[0] == "x"
            connected.set()
            try:
                await ws.receive()
            except WebSocketClosed as exc:
                errors.append(exc)

    async with anyio.create_task_group() as tg:
        async with LoopbackServer(ws_handler=echo, http_handler=json_reply) as server:
            tg.start_soon(client, server.ws_url)
            await connected.wait()
        assert not server.connections
    assert [exc.code for exc in errors] == [1001]


async def test_slow_reader_is_dropped_after_send_timeout() -> None:
    """A client that never reads cannot hold the sender forever."""
    outcome: list[BaseException] = []
    dropped = anyio.Event()
    big = "x" * (1 << 20)

    async def handler(ws: ServerWebSocket) -> None:
        try:
            for _ in range(1000):  # far more than any socket buffer holds
                await ws.send(big)
        except WebSocketClosed as exc:
            outcome.append(exc)
            dropped.set()

    async with LoopbackServer(
        ws_handler=handler, http_handler=json_reply, send_timeout=0.2, max_frame_size=2**21
    ) as server:
        request = (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(request)
            with anyio.fail_after(10):
                await dropped.wait()
    assert isinstance(outcome[0], WebSocketClosed)


async def test_receive_queue_is_bounded_and_messages_arrive_in_order() -> None:
    got: list[str | bytes] = []
    done = anyio.Event()

    async def handler(ws: ServerWebSocket) -> None:
        await anyio.sleep(0.05)  # let the client run ahead of a 4-slot queue
        for _ in range(50):
            got.append(await ws.receive())
        done.set()
        await anyio.sleep_forever()

    async with (
        LoopbackServer(ws_handler=handler, http_handler=json_reply, queue_size=4) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        for i in range(50):
            await ws.send(str(i))
        with anyio.fail_after(5):
            await done.wait()
    assert got == [str(i) for i in range(50)]


def test_refuses_non_loopback_hosts() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            LoopbackServer(ws_handler=echo, http_handler=json_reply, host=host)


async def test_encoded_frames_reach_every_connection() -> None:
    burst = encode_frames(["a", b"\x00b", "ü" * 300])
    conns: list[ServerWebSocket] = []

    async def handler(ws: ServerWebSocket) -> None:
        await ws.send("first")
        await ws.send_encoded(burst, 3)
        conns.append(ws)
        await ws.receive()

    async with (
        LoopbackServer(ws_handler=handler, http_handler=json_reply) as server,
        connect_websocket(server.ws_url) as one,
        connect_websocket(server.ws_url) as two,
    ):
        for ws in (one, two):
            assert [(await ws.receive())[0] for _ in range(4)] == ["first", "a", b"\x00b", "ü" * 300]
    assert [conn.messages_sent for conn in conns] == [4, 4]


@settings(max_examples=25, deadline=None)
@given(
    symbol=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 200), max_size=6),
)
async def test_any_split_of_a_request_gets_the_same_reply(symbol: str, cuts: list[int]) -> None:
    request = f"GET /api/v3/depth?symbol={symbol}&limit=5 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n".encode()
    points = sorted({cut % len(request) for cut in cuts} - {0})
    async with (
        LoopbackServer(ws_handler=no_ws, http_handler=json_reply) as server,
        await anyio.connect_tcp("127.0.0.1", server.port) as stream,
    ):
        for start, end in zip([0, *points], [*points, len(request)], strict=True):
            await stream.send(request[start:end])
            await anyio.sleep(0.001)
        reply = await read_http_reply(stream)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == f'{{"method":"GET","path":"/api/v3/depth","symbol":"{symbol}"}}'.encode()
