"""The WebSocket client against real loopback servers: ours, and bare Sans-I/O ones for misbehaviour."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSListener
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.http11 import Request
from websockets.server import ServerProtocol

from marketfeeder.transport.server import HttpReply, HttpRequest, LoopbackServer, ServerWebSocket
from marketfeeder.transport.ws import WebSocket, WebSocketClosed, WebSocketHandshakeError, connect_websocket

pytestmark = pytest.mark.anyio


def no_http(request: HttpRequest) -> HttpReply:
    return HttpReply(404, b"")


async def echo(ws: ServerWebSocket) -> None:
    while True:
        await ws.send(await ws.receive())


# --- a bare server for what LoopbackServer will not do (ignore pings, fragment, glue frames to the 101)


RawHandler = Callable[[anyio.abc.ByteStream, ServerProtocol], Awaitable[None]]


async def raw_accept(stream: anyio.abc.ByteStream) -> ServerProtocol:
    """Read the upgrade request and queue the 101 (not sent yet: the caller may glue frames to it)."""
    proto = ServerProtocol()
    request = None
    while request is None:
        proto.receive_data(await stream.receive())
        for event in proto.events_received():
            if isinstance(event, Request):
                request = event
    proto.send_response(proto.accept(request))
    return proto


async def flush(stream: anyio.abc.ByteStream, proto: ServerProtocol) -> None:
    chunks = proto.data_to_send()
    data = b"".join(chunks)
    if data:
        await stream.send(data)
    if chunks and chunks[-1] == b"":  # the protocol asks to close TCP (end of the close handshake)
        await stream.aclose()


@asynccontextmanager
async def raw_server(handler: RawHandler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[anyio.abc.ByteStream] = (
        TLSListener(tcp, tls, standard_compatible=False) if tls is not None else tcp
    )

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            try:
                await handler(stream, await raw_accept(stream))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield port
        tg.cancel_scope.cancel()


async def drain_without_answering(stream: anyio.abc.ByteStream, proto: ServerProtocol) -> None:
    """Read forever and never flush: pings stay unanswered."""
    await flush(stream, proto)
    while True:
        proto.receive_data(await stream.receive())
        proto.events_received()
        proto.data_to_send()  # dropped on the floor


# --- tests


async def test_echo_round_trip_with_receive_timestamps() -> None:
    async with LoopbackServer(ws_handler=echo, http_handler=no_http) as server:
        async with connect_websocket(server.ws_url) as ws:
            assert ws.url == server.ws_url
            for message in ("text", b"\xffbinary", "ünïcode", ""):
                before = time.time_ns()
                await ws.send(message)
                frame, receive_ts = await ws.receive()
                assert frame == message
                assert type(frame) is type(message)
                assert before <= receive_ts <= time.time_ns()
            assert ws.stats.frames_received == 4
            assert ws.stats.messages_sent == 4
            assert ws.stats.bytes_received > 0
        assert ws.closed
        assert ws.close_code == 1000


async def test_many_frames_in_one_chunk_share_its_timestamp() -> None:
    async def burst(ws: ServerWebSocket) -> None:
        await ws.send_many([f"m{i}" for i in range(200)])
        await ws.receive()

    async with (
        LoopbackServer(ws_handler=burst, http_handler=no_http) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        received = [await ws.receive() for _ in range(200)]
    assert [frame for frame, _ in received] == [f"m{i}" for i in range(200)]
    timestamps = [ts for _, ts in received]
    assert timestamps == sorted(timestamps)
    assert len(set(timestamps)) < 200  # one write of 200 small frames arrives in few chunks


async def test_client_answers_server_ping_with_same_payload() -> None:
    conns: list[ServerWebSocket] = []

    async def handler(ws: ServerWebSocket) -> None:
        conns.append(ws)
        await ws.ping(b"\x01payload\x02")
        await ws.send("after ping")
        await echo(ws)

    async with (
        LoopbackServer(ws_handler=handler, http_handler=no_http) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        assert (await ws.receive())[0] == "after ping"
        await ws.send("sync")  # sent after the pong: once echoed, the server has the pong
        assert (await ws.receive())[0] == "sync"
    assert conns[0].last_pong_payload == b"\x01payload\x02"
    assert ws.stats.pings_received == ws.stats.pongs_sent == 1


async def test_keepalive_closes_when_no_pong_arrives() -> None:
    async with (
        raw_server(drain_without_answering) as port,
        connect_websocket(f"ws://127.0.0.1:{port}", ping_interval=0.05, pong_timeout=0.1) as ws,
    ):
        with anyio.fail_after(5), pytest.raises(WebSocketClosed) as info:
            await ws.receive()
    assert info.value.code == 1011
    assert info.value.reason == "keepalive ping timeout"
    assert ws.stats.pings_sent == 1
    assert ws.stats.pongs_received == 0


async def test_keepalive_pings_an_idle_connection_and_stays_up() -> None:
    async def silent(ws: ServerWebSocket) -> None:
        await anyio.sleep_forever()

    async with (
        LoopbackServer(ws_handler=silent, http_handler=no_http) as server,
        connect_websocket(server.ws_url, ping_interval=0.02, pong_timeout=5.0) as ws,
    ):
        with anyio.move_on_after(0.2):
            await ws.receive()
        assert not ws.closed
        assert ws.stats.pings_sent >= 2
        assert ws.stats.pongs_received >= ws.stats.pings_sent - 1
        (conn,) = server.connections
        assert conn.pings_received >= 2


async def test_server_abort_raises_websocket_closed() -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.receive()
        await ws.abort()

    async with (
        LoopbackServer(ws_handler=handler, http_handler=no_http) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        await ws.send("cut me off")
        with anyio.fail_after(5), pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1006
        with pytest.raises(WebSocketClosed):
            await ws.send("too late")


async def test_frame_over_max_size_closes_with_1009() -> None:
    server_saw: list[int | None] = []
    saw = anyio.Event()

    async def handler(ws: ServerWebSocket) -> None:
        await ws.send("x" * 1000)
        await ws.send("y" * 1001)
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            server_saw.append(exc.code)
            saw.set()

    async with LoopbackServer(ws_handler=handler, http_handler=no_http) as server:
        async with connect_websocket(server.ws_url, max_frame_size=1000) as ws:
            assert (await ws.receive())[0] == "x" * 1000  # exactly at the limit is fine
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
        assert info.value.code == 1009
        with anyio.fail_after(5):
            await saw.wait()
    assert server_saw == [1009]


async def test_iteration_ends_on_clean_close_after_pending_messages() -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.send_many(["a", "b", "c"])
        await ws.close(1000)

    async with LoopbackServer(ws_handler=handler, http_handler=no_http) as server:
        async with connect_websocket(server.ws_url) as ws:
            assert [frame async for frame, _ in ws] == ["a", "b", "c"]
        assert ws.close_code == 1000


async def test_iteration_raises_on_error_close() -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.send("a")
        await ws.close(4003, "policy")

    async with (
        LoopbackServer(ws_handler=handler, http_handler=no_http) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        frames = [(await ws.receive())[0]]
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
    assert frames == ["a"]
    assert (info.value.code, info.value.reason) == (4003, "policy")


async def test_fragmented_messages_and_frames_glued_to_the_handshake() -> None:
    async def handler(stream: anyio.abc.ByteStream, proto: ServerProtocol) -> None:
        proto.send_text(b"early")  # same write as the 101
        await flush(stream, proto)
        proto.send_text(b"frag", fin=False)
        proto.send_continuation(b"ment", fin=False)
        proto.send_continuation(b"ed", fin=True)
        await flush(stream, proto)
        proto.send_binary(b"\x00\x01", fin=False)
        await flush(stream, proto)
        await anyio.sleep(0.01)  # the rest of the message comes in a later chunk
        proto.send_continuation(b"\x02", fin=True)
        proto.send_close(1000)
        await flush(stream, proto)
        while True:
            proto.receive_data(await stream.receive())
            await flush(stream, proto)

    async with raw_server(handler) as port, connect_websocket(f"ws://127.0.0.1:{port}") as ws:
        frames = [frame async for frame, _ in ws]
    assert frames == ["early", "fragmented", b"\x00\x01\x02"]
    assert ws.stats.frames_received == 3


async def test_receive_survives_cancellation() -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await ws.receive()
        await ws.send("late")
        await echo(ws)

    async with (
        LoopbackServer(ws_handler=handler, http_handler=no_http) as server,
        connect_websocket(server.ws_url) as ws,
    ):
        with anyio.move_on_after(0.01) as scope:
            await ws.receive()
        assert scope.cancelled_caught
        await ws.send("now")
        assert (await ws.receive())[0] == "late"


async def test_only_one_receiver_at_a_time() -> None:
    async def handler(ws: ServerWebSocket) -> None:
        await anyio.sleep_forever()

    async with (
        LoopbackServer(ws_handler=handler, http_handler=no_http) as server,
        connect_websocket(server.ws_url) as ws,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(ws.receive)
        await anyio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already receiving"):
            await ws.receive()
        tg.cancel_scope.cancel()


async def test_extra_headers_reach_the_server() -> None:
    headers: list[str] = []

    async def handler(ws: ServerWebSocket) -> None:
        headers.append(ws.headers["X-Api-Key"])

    async with (
        LoopbackServer(ws_handler=handler, http_handler=no_http) as server,
        connect_websocket(server.ws_url, extra_headers={"X-Api-Key": "k1"}) as ws,
    ):
        assert [frame async for frame, _ in ws] == []
    assert headers == ["k1"]


async def test_refused_upgrade_raises_handshake_error() -> None:
    async with LoopbackServer(
        ws_handler=echo, http_handler=no_http, ws_accept=lambda r: HttpReply(429, b"too many connections")
    ) as server:
        with pytest.raises(WebSocketHandshakeError) as info:
            async with connect_websocket(server.ws_url):
                pass
    assert info.value.status == 429
    assert "429" in str(info.value)


async def test_plain_http_server_is_not_a_websocket() -> None:
    async def http_only(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, http_only)
        with pytest.raises(WebSocketHandshakeError) as info:
            async with connect_websocket(f"ws://127.0.0.1:{port}", open_timeout=5):
                pass
        assert info.value.status == 200
        tg.cancel_scope.cancel()


async def test_open_timeout_when_the_server_never_answers() -> None:
    async def mute(stream: anyio.abc.SocketStream) -> None:
        await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, mute)
        with pytest.raises(TimeoutError):
            async with connect_websocket(f"ws://127.0.0.1:{port}", open_timeout=0.2):
                pass
        tg.cancel_scope.cancel()


async def test_connection_refused_is_an_oserror() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(OSError):
        async with connect_websocket(f"ws://127.0.0.1:{port}", open_timeout=5):
            pass


async def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        async with connect_websocket("http://127.0.0.1:1/x"):
            pass


# --- TLS (a throwaway self-signed certificate for 127.0.0.1)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def tls_echo(stream: anyio.abc.ByteStream, proto: ServerProtocol) -> None:
    await flush(stream, proto)
    while True:
        proto.receive_data(await stream.receive())
        for event in proto.events_received():
            if getattr(event, "opcode", None) is not None and event.opcode.name == "TEXT":  # type: ignore[union-attr]
                proto.send_text(event.data)  # type: ignore[union-attr]
        await flush(stream, proto)


async def test_wss_verifies_certificates(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with raw_server(tls_echo, tls=server_context) as port:
        url = f"wss://127.0.0.1:{port}"
        # Verification is on by default: a self-signed certificate is refused.
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect_websocket(url, open_timeout=5):
                pass
        trusting = ssl.create_default_context(cafile=str(cert))
        async with connect_websocket(url, ssl_context=trusting, open_timeout=5) as ws:
            await ws.send("over tls")
            assert (await ws.receive())[0] == "over tls"


# --- property: whatever way the bytes are cut into TCP reads, the same messages come out


message_strategy = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.sampled_from([125, 126, 127, 65535, 65536, 70000]).map(lambda n: "z" * n),  # length encodings
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    messages=st.lists(message_strategy, min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 2**17), max_size=8),
)
async def test_messages_survive_any_split_into_tcp_reads(
    messages: list[str | bytes], cuts: list[int]
) -> None:
    async def handler(stream: anyio.abc.ByteStream, proto: ServerProtocol) -> None:
        await flush(stream, proto)
        for message in messages:
            if isinstance(message, str):
                proto.send_text(message.encode())
            else:
                proto.send_binary(message)
        wire = b"".join(proto.data_to_send())
        points = sorted({cut % len(wire) for cut in cuts} - {0})
        for start, end in zip([0, *points], [*points, len(wire)], strict=True):
            await stream.send(wire[start:end])
            await anyio.sleep(0.001)  # let the client read each piece on its own
        while True:  # answer the client's close
            proto.receive_data(await stream.receive())
            await flush(stream, proto)

    async with raw_server(handler) as port, connect_websocket(f"ws://127.0.0.1:{port}") as ws:
        received = [(await ws.receive())[0] for _ in messages]
    assert received == messages


async def test_close_from_another_task_ends_a_pending_receive() -> None:
    async def silent(ws: ServerWebSocket) -> None:
        await anyio.sleep_forever()

    errors: list[WebSocketClosed] = []

    async def reader(ws: WebSocket) -> None:
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            errors.append(exc)

    async with LoopbackServer(ws_handler=silent, http_handler=no_http) as server:
        async with connect_websocket(server.ws_url) as ws, anyio.create_task_group() as tg:
            tg.start_soon(reader, ws)
            await anyio.sleep(0.01)  # the reader is waiting on the socket
            with anyio.fail_after(5):
                await ws.close(4000, "rotating")
        assert ws.closed
    assert [(exc.code, exc.reason) for exc in errors] == [(4000, "rotating")]
