"""A small loopback WebSocket + HTTP server on anyio (websockets' Sans-I/O protocol).

Used by the simulator and by tests; it binds to loopback only. One port serves both WebSocket
upgrades and plain HTTP requests (one request per connection, ``Connection: close``).

Every connection runs in its own task. A WebSocket handler that raises closes its own connection
with 1011 (and the error is logged); the server and the other connections carry on. Writes on a
connection are serialized by a lock and bounded by ``send_timeout``: a client that stops reading
is dropped rather than allowed to stall the task that feeds it.
"""

from __future__ import annotations

import email.utils
import http
import inspect
import ipaddress
import itertools
import logging
import socket
import struct
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.datastructures import Headers
from websockets.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, Frame
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, OPEN
from websockets.server import ServerProtocol

from .ws import WebSocketClosed

__all__ = [
    "HttpReply",
    "HttpRequest",
    "LoopbackServer",
    "ServerWebSocket",
    "WebSocketClosed",
    "encode_frames",
]

_log = logging.getLogger(__name__)
# websockets logs "connection open/closed" at INFO for every connection: keep that on its own logger.
_protocol_log = logging.getLogger(__name__ + ".protocol")

_READ_SIZE = 65536
_NETWORK_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


@attrs.frozen
class HttpRequest:
    method: str
    path: str  # without the query string
    query: Mapping[str, str]
    headers: Mapping[str, str]


@attrs.frozen
class HttpReply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = attrs.field(factory=dict)


WsHandler = Callable[["ServerWebSocket"], Awaitable[None]]
HttpHandler = Callable[[HttpRequest], "Awaitable[HttpReply] | HttpReply"]
WsAccept = Callable[[HttpRequest], "HttpReply | None"]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reply_response(reply: HttpReply) -> Response:
    try:
        phrase = http.HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = ""
    headers = Headers()
    headers["Date"] = email.utils.formatdate(usegmt=True)
    headers["Connection"] = "close"
    headers["Content-Type"] = reply.content_type
    headers["Content-Length"] = str(len(reply.body))
    for name, value in reply.headers.items():
        if name.lower() in ("content-length", "connection"):
            continue  # framing headers are ours: the body length and one request per connection
        if name.lower() == "content-type":
            del headers["Content-Type"]
        headers[name] = value
    return Response(reply.status, phrase, headers, reply.body)


def _error_reply(status: int, message: str) -> HttpReply:
    return HttpReply(status, message.encode(), "text/plain; charset=utf-8")


def encode_frames(messages: Iterable[str | bytes]) -> bytes:
    """Server-side wire bytes of text (``str``) and binary (``bytes``) messages, for
    :meth:`ServerWebSocket.send_encoded`."""
    parts = []
    for message in messages:
        if isinstance(message, str):
            parts.append(Frame(TEXT, message.encode()).serialize(mask=False))
        else:
            parts.append(Frame(BINARY, message).serialize(mask=False))
    return b"".join(parts)


def _only_closed(exc: BaseException) -> bool:
    """True when ``exc`` is WebSocketClosed, or a group made of nothing else."""
    if isinstance(exc, WebSocketClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(WebSocketClosed)[1] is None
    return False


class ServerWebSocket:
    """One accepted WebSocket, as the server's ``ws_handler`` sees it.

    Received text/binary messages wait in a bounded queue (``queue_size``); when the handler does
    not read and the queue is full, the connection stops reading the socket (TCP backpressure),
    which also stops answering pings: a handler that ignores incoming messages should drain them.
    """

    def __init__(
        self,
        conn_id: int,
        stream: anyio.abc.SocketStream,
        protocol: ServerProtocol,
        *,
        request: HttpRequest,
        send_timeout: float,
        close_timeout: float,
        queue_size: int,
    ) -> None:
        self.id = conn_id
        #: The upgrade request: the very object ``ws_accept`` received (handy as a key to carry
        #: per-connection state from accept to handler).
        self.request = request
        self.path = request.path
        self.query = request.query
        #: Request headers (lookups ignore case); the same object as ``request.headers``.
        self.headers = request.headers
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        #: Every frame received, control frames included (venues count these for rate limits).
        self.incoming_frames = 0
        self.pings_received = 0
        self.pongs_received = 0
        self.last_pong_ns: int | None = None
        self.last_pong_payload = b""
        self.messages_sent = 0
        self._stream = stream
        self._proto = protocol
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._lock = anyio.Lock()
        self._reader_done = anyio.Event()
        self._queue_in: MemoryObjectSendStream[str | bytes]
        self._queue_out: MemoryObjectReceiveStream[str | bytes]
        self._queue_in, self._queue_out = anyio.create_memory_object_stream[str | bytes](queue_size)
        self._fragments: list[bytes] = []
        self._fragment_text = False

    def __repr__(self) -> str:
        return f"<ServerWebSocket id={self.id} path={self.path!r} closed={self.closed}>"

    def statistics(self) -> dict[str, int | None]:
        return {
            "incoming_frames": self.incoming_frames,
            "pings_received": self.pings_received,
            "pongs_received": self.pongs_received,
            "messages_sent": self.messages_sent,
            "queued": self._queue_out.statistics().current_buffer_used,
            "close_code": self.close_code,
        }

    # --- sending -------------------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message; raises WebSocketClosed once closed."""
        self._check_open()
        if isinstance(message, str):
            self._proto.send_text(message.encode())
        else:
            self._proto.send_binary(message)
        self.messages_sent += 1
        await self._flush()

    async def send_many(self, messages: list[str] | list[bytes] | list[str | bytes]) -> None:
        """Send several messages with one socket write (bursts, benchmarks)."""
        self._check_open()
        proto = self._proto
        for message in messages:
            if isinstance(message, str):
                proto.send_text(message.encode())
            else:
                proto.send_binary(message)
        self.messages_sent += len(messages)
        await self._flush()

    async def send_encoded(self, data: bytes, messages: int = 1) -> None:
        """Write frames already encoded by :func:`encode_frames` (``messages`` counts them for stats).

        Fan-out encodes a burst once and writes the same bytes to every connection; valid because
        this server negotiates no extensions and server frames are never masked.
        """
        self._check_open()
        async with self._lock:
            pending = self._proto.data_to_send()  # keep anything queued (a pong) ahead of the burst
            await self._write_locked(b"".join(pending) + data if pending else data)
        self.messages_sent += messages

    async def ping(self, payload: bytes = b"") -> None:
        self._check_open()
        self._proto.send_ping(payload)
        await self._flush()

    def _check_open(self) -> None:
        if self.closed or self._proto.state is not OPEN:
            raise WebSocketClosed(self.close_code, self.close_reason)

    async def _flush(self) -> None:
        """Write whatever the protocol has queued; close TCP when it asks to (end of a close)."""
        async with self._lock:
            chunks = self._proto.data_to_send()
            if not chunks:
                return
            data = b"".join(chunks)
            if data:
                await self._write_locked(data)
            if chunks[-1] == b"":
                with anyio.CancelScope(shield=True):
                    await self._stream.aclose()

    async def _write_locked(self, data: bytes) -> None:
        # Shielded so a cancelled sender never leaves half a frame on the wire; the timeout still
        # bounds it, and abort() breaks a write stuck on a dead peer.
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(self._send_timeout):
                await self._stream.send(data)
        except TimeoutError:
            _log.warning(
                "connection %d: send timed out after %.1f s, dropping it", self.id, self._send_timeout
            )
            await self.abort()
            raise WebSocketClosed(1006, "send timed out") from None
        except _NETWORK_ERRORS:
            self._mark_closed(1006, "connection lost")
            raise WebSocketClosed(self.close_code, self.close_reason) from None

    # --- receiving -----------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next text/binary message; raises WebSocketClosed once the connection is closed."""
        try:
            return await self._queue_out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise WebSocketClosed(self.close_code, self.close_reason) from None

    async def _read_loop(self) -> None:
        proto = self._proto
        try:
            while True:
                try:
                    data = await self._stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    proto.receive_eof()
                    break
                except _NETWORK_ERRORS:
                    break
                proto.receive_data(data)
                events = proto.events_received()
                await self._flush()  # pongs and close echoes go out at once
                for frame in cast("list[Frame]", events):  # only frames once the handshake is done
                    if not await self._on_frame(frame):
                        return
                if proto.state is CLOSED:
                    break
        except WebSocketClosed:
            pass
        finally:
            close = proto.close_rcvd or proto.close_sent
            if close is not None:
                self._mark_closed(int(close.code), close.reason)
            else:
                self._mark_closed(1006, "connection lost")
            self._queue_in.close()
            self._reader_done.set()

    async def _on_frame(self, frame: Frame) -> bool:
        self.incoming_frames += 1
        opcode = frame.opcode
        if opcode is TEXT or opcode is BINARY:
            if not frame.fin:
                self._fragments = [bytes(frame.data)]
                self._fragment_text = opcode is TEXT
                return True
            return await self._deliver(bytes(frame.data), opcode is TEXT)
        if opcode is CONT:
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return True
            data = b"".join(self._fragments)
            self._fragments = []
            return await self._deliver(data, self._fragment_text)
        if opcode is PING:
            self.pings_received += 1
        elif opcode is PONG:
            self.pongs_received += 1
            self.last_pong_ns = time.time_ns()
            self.last_pong_payload = bytes(frame.data)
        elif opcode is CLOSE:
            close = self._proto.close_rcvd
            if close is not None:
                self._mark_closed(int(close.code), close.reason)
        return True

    async def _deliver(self, data: bytes, text: bool) -> bool:
        if text:
            try:
                message: str | bytes = data.decode()
            except UnicodeDecodeError as exc:
                self._proto.fail(1007, f"invalid UTF-8 at position {exc.start}")
                try:
                    await self._flush()
                except WebSocketClosed:
                    pass
                return False
        else:
            message = data
        try:
            await self._queue_in.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        return True

    # --- closing -------------------------------------------------------------------------------

    def _mark_closed(self, code: int | None, reason: str) -> None:
        self.closed = True
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Run the close handshake (bounded by ``close_timeout``), then drop the connection."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._close_timeout) as scope:
                if self._proto.state is OPEN and not self._reader_done.is_set():
                    self.closed = True
                    self._proto.send_close(code, reason)
                    try:
                        await self._flush()
                    except WebSocketClosed:
                        return
                await self._reader_done.wait()
            if scope.cancelled_caught:
                await self.abort()
            self._mark_closed(code, reason)

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame (RST): fault injection, dead peers."""
        self._mark_closed(1006, "aborted")
        with anyio.CancelScope(shield=True):
            try:
                sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, anyio.TypedAttributeLookupError):
                pass
            await self._stream.aclose()

    async def _run(self, handler: WsHandler) -> bool:
        """Run the handler next to the socket reader; False when the handler failed."""
        failed = False
        async with anyio.create_task_group() as tg:

            async def read_then_stop() -> None:
                await self._read_loop()
                tg.cancel_scope.cancel()  # peer gone: the handler has nobody to talk to

            tg.start_soon(read_then_stop)
            try:
                await handler(self)
            except Exception as exc:
                if not _only_closed(exc):
                    failed = True
                    _log.exception("WebSocket handler failed on connection %d (%s)", self.id, self.path)
                    await self.close(1011, "internal error")
            else:
                await self.close(1000)
            tg.cancel_scope.cancel()
        return not failed


class LoopbackServer:
    """WebSocket + HTTP on one loopback port: ``async with LoopbackServer(...) as server:``.

    ``ws_handler`` runs once per accepted WebSocket; when it returns the connection is closed
    with 1000. ``http_handler`` answers every request without ``Upgrade: websocket`` (sync or
    async). ``ws_accept`` may refuse an upgrade by returning the HTTP reply to send instead.
    """

    def __init__(
        self,
        *,
        ws_handler: WsHandler,
        http_handler: HttpHandler,
        ws_accept: WsAccept | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame_size: int = 2**23,
        send_timeout: float = 10.0,
        close_timeout: float = 2.0,
        handshake_timeout: float = 10.0,
        queue_size: int = 1024,
    ) -> None:
        if host == "localhost":
            host = "127.0.0.1"
        if not _is_loopback(host):
            raise ValueError(f"LoopbackServer binds to loopback addresses only, not {host!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.host = host
        self.port = port
        self.connections: set[ServerWebSocket] = set()
        #: Connections accepted so far (HTTP and WebSocket).
        self.accepted = 0
        self.http_requests = 0
        self.handler_errors = 0
        self._ws_handler = ws_handler
        self._http_handler = http_handler
        self._ws_accept = ws_accept
        self._max_frame_size = max_frame_size
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._handshake_timeout = handshake_timeout
        self._queue_size = queue_size
        self._ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self._accept_scope = anyio.CancelScope()

    @property
    def ws_url(self) -> str:
        return f"ws://{self._url_host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    async def __aenter__(self) -> LoopbackServer:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg

        async def serve() -> None:
            with self._accept_scope:
                async with listener:
                    await listener.serve(self._handle_connection, task_group=tg)

        tg.start_soon(serve)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        tg = self._tg
        if tg is None:
            return
        self._tg = None
        self._accept_scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout + 1.0):
            async with anyio.create_task_group() as closers:
                for ws in list(self.connections):
                    closers.start_soon(ws.close, 1001, "server shutdown")
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)

    def statistics(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "open_websockets": len(self.connections),
            "http_requests": self.http_requests,
            "handler_errors": self.handler_errors,
        }

    # --- per connection ---------------------------------------------------------------------------

    async def _handle_connection(self, stream: anyio.abc.SocketStream) -> None:
        conn_id = next(self._ids)
        self.accepted += 1
        try:
            await self._serve(conn_id, stream)
        except Exception:
            self.handler_errors += 1
            _log.exception("connection %d failed", conn_id)
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve(self, conn_id: int, stream: anyio.abc.SocketStream) -> None:
        proto = ServerProtocol(max_size=self._max_frame_size, logger=_protocol_log)
        request: Request | None = None
        with anyio.move_on_after(self._handshake_timeout):
            # The request may arrive in several TCP reads: feed until the parser yields it.
            while request is None:
                try:
                    data = await stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    proto.receive_eof()
                    break
                except _NETWORK_ERRORS:
                    return
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, Request):
                        request = event
                if request is None and proto.handshake_exc is not None:
                    break
        if request is None:
            if proto.handshake_exc is not None:
                # Oversized lines get websockets' own 414/431; anything else malformed gets a 400.
                out = [chunk for chunk in proto.data_to_send() if chunk]
                if out:
                    await self._write(stream, b"".join(out))
                else:
                    await self._write_reply(
                        stream, _error_reply(400, f"bad request: {proto.handshake_exc}\n")
                    )
            return

        path, _, query_string = request.path.partition("?")
        query = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True))
        http_request = HttpRequest(request.method, path, query, request.headers)

        if "websocket" not in request.headers.get("Upgrade", "").lower():
            self.http_requests += 1
            await self._write_reply(stream, await self._answer_http(http_request))
            return

        if self._ws_accept is not None:
            try:
                refusal = self._ws_accept(http_request)
            except Exception:
                self.handler_errors += 1
                _log.exception("ws_accept failed for %s", request.path)
                refusal = _error_reply(500, "internal error\n")
            if refusal is not None:
                await self._write_reply(stream, refusal)
                return

        response = proto.accept(request)
        proto.send_response(response)
        if not await self._write(stream, b"".join(proto.data_to_send())):
            return
        if response.status_code != 101:
            return
        ws = ServerWebSocket(
            conn_id,
            stream,
            proto,
            request=http_request,
            send_timeout=self._send_timeout,
            close_timeout=self._close_timeout,
            queue_size=self._queue_size,
        )
        self.connections.add(ws)
        try:
            if not await ws._run(self._ws_handler):
                self.handler_errors += 1
        finally:
            self.connections.discard(ws)

    async def _answer_http(self, request: HttpRequest) -> HttpReply:
        try:
            result: Any = self._http_handler(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            self.handler_errors += 1
            _log.exception("HTTP handler failed for %s %s", request.method, request.path)
            return _error_reply(500, "internal error\n")
        if not isinstance(result, HttpReply):
            self.handler_errors += 1
            _log.error(
                "HTTP handler returned %r for %s, not an HttpReply", type(result).__name__, request.path
            )
            return _error_reply(500, "internal error\n")
        return result

    async def _write_reply(self, stream: anyio.abc.SocketStream, reply: HttpReply) -> None:
        await self._write(stream, _reply_response(reply).serialize())

    async def _write(self, stream: anyio.abc.SocketStream, data: bytes) -> bool:
        try:
            with anyio.fail_after(self._send_timeout):
                await stream.send(data)
        except (TimeoutError, *_NETWORK_ERRORS):
            return False
        return True
