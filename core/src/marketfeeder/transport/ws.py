"""WebSocket client on anyio over websockets' Sans-I/O protocol (asyncio, uvloop and trio alike).

There is no background reader task: :meth:`WebSocket.receive` reads a large chunk from the socket,
feeds it to the protocol, and keeps the decoded frames in a small local deque, each stamped with
the wall-clock time the chunk arrived (before any decoding). Control frames are handled on the
way: server pings are answered at once (the protocol queues the pong, we flush it), and when
``ping_interval`` is set the same read loop sends keepalive pings and enforces ``pong_timeout``.
Pings and pong checks therefore happen while a task is waiting in ``receive`` — which a
connector always is.

Errors: opening raises ``OSError`` (refused, unreachable, TLS), ``TimeoutError`` (``open_timeout``)
or :class:`WebSocketHandshakeError` (the server answered but refused the upgrade). After that,
everything ends in :class:`WebSocketClosed` with the close code (1006 when no close frame came).
"""

from __future__ import annotations

import functools
import logging
import ssl
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import cast

import anyio
import anyio.abc
import attrs
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, Frame
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.uri import WebSocketURI, parse_uri

__all__ = ["WebSocket", "WebSocketClosed", "WebSocketHandshakeError", "WebSocketStats", "connect_websocket"]

READ_SIZE = 65536
#: Close codes that end iteration quietly (normal closure, going away, no status in the frame).
CLEAN_CLOSE_CODES = frozenset({1000, 1001, 1005})
_NETWORK_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class WebSocketClosed(Exception):
    """The WebSocket connection is closed (cleanly or not); ``code`` is None when no close frame came."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"WebSocket closed (code={code}{', reason=' + repr(reason) if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocketHandshakeError(WebSocketClosed):
    """The server did not accept the upgrade; ``status`` is its HTTP status when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(None, message)
        self.args = (message,)
        self.status = status
        self.body = body


@attrs.define
class WebSocketStats:
    frames_received: int = 0  # text/binary messages handed out
    bytes_received: int = 0  # raw bytes read from the socket, framing included
    messages_sent: int = 0
    pings_received: int = 0
    pongs_sent: int = 0
    pings_sent: int = 0
    pongs_received: int = 0


# websockets logs every connection at INFO: keep that on its own logger.
_protocol_log = logging.getLogger(__name__ + ".protocol")


class WebSocket:
    """An open client connection; get one from :func:`connect_websocket`.

    One task receives at a time; any number of tasks may send (writes are serialized).
    """

    def __init__(
        self,
        url: str,
        stream: anyio.abc.ByteStream,
        protocol: ClientProtocol,
        *,
        ping_interval: float | None,
        pong_timeout: float,
        close_timeout: float,
        send_timeout: float,
    ) -> None:
        self.url = url
        self.stats = WebSocketStats()
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._stream = stream
        self._proto = protocol
        self._pending: deque[tuple[str | bytes, int]] = deque()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._closing = False  # a close frame was sent or received, or the stream ended
        self._fail: tuple[int, str] | None = None
        self._reading = False
        self._transport_closed = anyio.Event()
        self._lock = anyio.Lock()
        self._close_timeout = close_timeout
        self._send_timeout = send_timeout
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._ping_count = 0
        self._ping_outstanding: bytes | None = None
        self._ping_sent_at = 0.0
        self._next_ping_at = anyio.current_time() + ping_interval if ping_interval else 0.0

    def __repr__(self) -> str:
        return f"<WebSocket {self.url} closed={self.closed}>"

    # --- receiving -----------------------------------------------------------------------------

    async def receive(self) -> tuple[str | bytes, int]:
        """The next text (``str``) or binary (``bytes``) message and the ns time its bytes arrived.

        Raises :class:`WebSocketClosed` once every message received before the close is consumed.
        """
        pending = self._pending
        if pending:
            return pending.popleft()
        while True:
            if self._closing:
                await self._finish_close()
                raise WebSocketClosed(self.close_code, self.close_reason)
            await self._read_once()
            if pending:
                return pending.popleft()

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> tuple[str | bytes, int]:
        try:
            return await self.receive()
        except WebSocketClosed as exc:
            if exc.code in CLEAN_CLOSE_CODES:
                raise StopAsyncIteration from None
            raise

    async def _read_once(self) -> None:
        """Read one chunk, feed the protocol, queue its messages, answer its control frames."""
        if self._reading:
            raise RuntimeError("another task is already receiving on this WebSocket")
        self._reading = True
        try:
            data = await self._read_chunk()
        except anyio.EndOfStream:
            self._proto.receive_eof()
            self._closing = True
            return
        except _NETWORK_ERRORS:
            self._closing = True
            return
        finally:
            self._reading = False
        if data is None:
            return
        ts = time.time_ns()
        proto = self._proto
        self.stats.bytes_received += len(data)
        proto.receive_data(data)
        events = proto.events_received()
        if proto.writes:
            await self._flush()
        if events:
            self._on_events(cast("list[Frame]", events), ts)  # only frames once the handshake is done
        if proto.state is not OPEN:
            self._closing = True

    async def _read_chunk(self) -> bytes | None:
        """A chunk from the socket; None when a keepalive deadline passed first."""
        if self._ping_interval is None:
            return await self._stream.receive(READ_SIZE)
        now = anyio.current_time()
        if self._ping_outstanding is not None:
            deadline = self._ping_sent_at + self._pong_timeout
            if now >= deadline:
                await self._keepalive_failed()
                return None
        else:
            deadline = self._next_ping_at
            if now >= deadline:
                await self._send_keepalive_ping(now)
                return None
        with anyio.move_on_after(deadline - now):
            return await self._stream.receive(READ_SIZE)
        return None

    def _on_events(self, events: list[Frame], ts: int) -> None:
        pending = self._pending
        stats = self.stats
        for frame in events:
            opcode = frame.opcode
            if opcode is TEXT:
                if frame.fin:
                    pending.append((frame.data.decode(), ts))  # type: ignore[union-attr]
                    stats.frames_received += 1
                else:
                    self._fragments = [bytes(frame.data)]
                    self._fragment_text = True
            elif opcode is BINARY:
                if frame.fin:
                    pending.append((bytes(frame.data), ts))
                    stats.frames_received += 1
                else:
                    self._fragments = [bytes(frame.data)]
                    self._fragment_text = False
            elif opcode is CONT:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    data = b"".join(self._fragments)
                    self._fragments = []
                    pending.append((data.decode() if self._fragment_text else data, ts))
                    stats.frames_received += 1
            elif opcode is PING:
                stats.pings_received += 1
                stats.pongs_sent += 1  # the protocol queued the pong; _read_once flushed it
            elif opcode is PONG:
                stats.pongs_received += 1
                if self._ping_outstanding is not None and bytes(frame.data) == self._ping_outstanding:
                    self._ping_outstanding = None
            elif opcode is CLOSE:
                self._closing = True

    # --- sending -------------------------------------------------------------------------------

    async def send(self, text: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        self._check_open()
        if isinstance(text, str):
            self._proto.send_text(text.encode())
        else:
            self._proto.send_binary(text)
        self.stats.messages_sent += 1
        await self._flush()

    async def ping(self, payload: bytes = b"") -> None:
        self._check_open()
        self._proto.send_ping(payload)
        self.stats.pings_sent += 1
        await self._flush()

    def _check_open(self) -> None:
        if self._closing or self._proto.state is not OPEN:
            raise WebSocketClosed(self.close_code or self._close_code_now(), self.close_reason)

    async def _flush(self) -> None:
        async with self._lock:
            chunks = self._proto.data_to_send()
            if not chunks:
                return
            # An empty chunk asks for a half-close once the server has closed: _close_transport
            # closes the whole stream right after (TLS streams cannot half-close anyway).
            data = b"".join(chunks)
            if not data:
                return
            # Shielded so a cancelled receive/send never leaves half a frame on the wire (the
            # stream would be corrupt); the send timeout still bounds it.
            try:
                with anyio.CancelScope(shield=True), anyio.fail_after(self._send_timeout):
                    await self._stream.send(data)
            except (TimeoutError, *_NETWORK_ERRORS):
                self._closing = True
                raise WebSocketClosed(1006, "connection lost while sending") from None

    async def _send_keepalive_ping(self, now: float) -> None:
        self._ping_count += 1
        payload = struct.pack("!I", self._ping_count & 0xFFFFFFFF)
        self._ping_outstanding = payload
        self._ping_sent_at = now
        self._next_ping_at = now + (self._ping_interval or 0.0)
        try:
            await self.ping(payload)
        except WebSocketClosed:
            self._closing = True

    async def _keepalive_failed(self) -> None:
        self._fail = (1011, "keepalive ping timeout")
        self._closing = True
        if self._proto.state is OPEN:
            self._proto.fail(1011, "keepalive ping timeout")
        # The peer is presumably gone: tell it anyway, but do not wait for its answer.
        with anyio.CancelScope(shield=True), anyio.move_on_after(min(1.0, self._close_timeout)):
            try:
                await self._flush()
            except WebSocketClosed:
                pass
        await self._close_transport()

    # --- closing -------------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait (at most ``close_timeout``) for the server to end the connection."""
        if self.closed:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._close_timeout):
                if self._proto.state is OPEN:
                    self._proto.send_close(code, reason)
                    self._closing = True
                    try:
                        await self._flush()
                    except WebSocketClosed:
                        pass
                if self._reading:
                    # Another task is in receive(): it sees the server's answer and closes the transport.
                    await self._transport_closed.wait()
                else:
                    await self._drain_until_eof()
            await self._close_transport()

    async def _finish_close(self) -> None:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._close_timeout):
                await self._drain_until_eof()
            await self._close_transport()

    async def _drain_until_eof(self) -> None:
        """After a close frame, read (and drop) until the server closes TCP, as RFC 6455 asks."""
        proto = self._proto
        while not self._transport_closed.is_set():
            try:
                data = await self._stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                proto.receive_eof()
                try:
                    await self._flush()
                except WebSocketClosed:
                    pass
                return
            except _NETWORK_ERRORS:
                return
            proto.receive_data(data)
            proto.events_received()
            try:
                await self._flush()
            except WebSocketClosed:
                return

    def _close_code_now(self) -> int:
        proto = self._proto
        if self._fail is not None:
            return self._fail[0]
        close = proto.close_rcvd or proto.close_sent
        return int(close.code) if close is not None else 1006

    async def _close_transport(self) -> None:
        if self.closed:
            return
        self.closed = True
        proto = self._proto
        if self._fail is not None:
            self.close_code, self.close_reason = self._fail
        else:
            close = proto.close_rcvd or proto.close_sent
            if close is not None:
                self.close_code, self.close_reason = int(close.code), close.reason
            else:
                self.close_code, self.close_reason = 1006, "connection closed without a close frame"
        self._closing = True
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()
        self._transport_closed.set()


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA store costs tens of ms; one verifying context serves every connection.
    return ssl.create_default_context()


@asynccontextmanager
async def connect_websocket(
    url: str,
    *,
    open_timeout: float = 10.0,
    max_frame_size: int = 2**23,
    ping_interval: float | None = None,
    pong_timeout: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
    extra_headers: Mapping[str, str] | None = None,
    close_timeout: float = 5.0,
    send_timeout: float = 30.0,
) -> AsyncIterator[WebSocket]:
    """Open a ``ws://`` or ``wss://`` connection; closes it (bounded handshake) on exit.

    ``wss://`` verifies the certificate by default (``ssl.create_default_context()``, SNI = host).
    A message larger than ``max_frame_size`` closes the connection with 1009.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(f"not a WebSocket URL: {url!r} ({exc})") from None
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError(f"ping_interval must be positive or None, got {ping_interval}")
    if uri.secure and ssl_context is None:
        ssl_context = _default_ssl_context()
    ws = await _open(
        url,
        uri,
        open_timeout=open_timeout,
        max_frame_size=max_frame_size,
        ssl_context=ssl_context if uri.secure else None,
        extra_headers=extra_headers,
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
        close_timeout=close_timeout,
        send_timeout=send_timeout,
    )
    try:
        yield ws
    finally:
        await ws.close()


async def _open(
    url: str,
    uri: WebSocketURI,
    *,
    open_timeout: float,
    max_frame_size: int,
    ssl_context: ssl.SSLContext | None,
    extra_headers: Mapping[str, str] | None,
    ping_interval: float | None,
    pong_timeout: float,
    close_timeout: float,
    send_timeout: float,
) -> WebSocket:
    host, port = uri.host, uri.port
    proto = ClientProtocol(uri, max_size=max_frame_size, logger=_protocol_log)
    with anyio.fail_after(open_timeout):
        if ssl_context is not None:
            try:
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                    host, port, ssl_context=ssl_context, tls_hostname=host, tls_standard_compatible=False
                )
            except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                raise ConnectionError(f"{url}: connection lost during the TLS handshake") from exc
        else:
            stream = await anyio.connect_tcp(host, port)
        try:
            request = proto.connect()
            for name, value in (extra_headers or {}).items():
                request.headers[name] = value
            proto.send_request(request)
            await stream.send(b"".join(proto.data_to_send()))
            response: Response | None = None
            early: list[Frame] = []
            ts = 0
            while response is None:
                try:
                    data = await stream.receive(READ_SIZE)
                except (anyio.EndOfStream, *_NETWORK_ERRORS):
                    raise WebSocketHandshakeError(
                        f"{url}: connection closed during the opening handshake"
                    ) from None
                ts = time.time_ns()
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, Response):
                        response = event
                    elif isinstance(event, Frame):
                        early.append(event)  # frames that came in the same chunk as the 101
                if proto.handshake_exc is not None:
                    failure = proto.handshake_exc
                    if isinstance(failure, InvalidStatus):
                        status = failure.response.status_code
                        body = bytes(failure.response.body)
                        raise WebSocketHandshakeError(
                            f"{url}: server refused the upgrade with HTTP {status}: {body[:200]!r}",
                            status=status,
                            body=body,
                        )
                    raise WebSocketHandshakeError(f"{url}: opening handshake failed: {failure}")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
    ws = WebSocket(
        url,
        stream,
        proto,
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
        close_timeout=close_timeout,
        send_timeout=send_timeout,
    )
    if early:
        ws._on_events(early, ts)
    return ws
