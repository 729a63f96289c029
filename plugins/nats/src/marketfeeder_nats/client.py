"""A small anyio-native NATS client: the protocol subset the bus needs, on asyncio and trio alike.

Why not nats-py: it is asyncio-only, and marketfeeder runs on any anyio backend.

Design: the client owns no background task. Every I/O happens in the task that awaits something:
``publish`` appends to a bounded write buffer (sent when it grows or when a caller waits), and a
caller that waits for a reply, an ack or a message reads the socket itself and dispatches whatever
arrives to every subscription (the read lock is handed over between waiting tasks). This lets one
object be opened in one task and used or closed in another, which the sink contract requires (the
runtime opens a sink in its own task and writes from the sink's task), and keeps cancellation simple:
no task outlives its caller.

Consequences, stated plainly: server PINGs are answered only while some task reads; an idle client
(nobody waiting for anything for minutes) may be disconnected by the server, and is reconnected by the
next call. Plain publishes written while a connection breaks are lost (NATS core is at-most-once);
JetStream publishers keep their un-acked messages and republish them (see :mod:`.sink`).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import orjson

__all__ = [
    "Msg",
    "NatsClient",
    "NatsConnectionError",
    "NatsError",
    "NatsTimeoutError",
    "NoRespondersError",
    "ProtocolError",
    "Subscription",
    "encode_headers",
    "hpub_frame",
    "parse_headers",
    "parse_servers",
]

log = logging.getLogger(__name__)

_CRLF = b"\r\n"
_HDR_LINE = b"NATS/1.0"
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"
_READ_SIZE = 1 << 16


class NatsError(Exception):
    """Base of this client's errors."""


class NatsConnectionError(NatsError):
    """No server could be reached (within the reconnect time), or the client is closed."""


class NatsTimeoutError(NatsError, TimeoutError):
    """A reply, an ack or a message did not arrive in time."""


class NoRespondersError(NatsError):
    """A request reached no subscriber (for JetStream: no stream or API listens on the subject)."""


class ProtocolError(NatsError):
    """The server sent an ``-ERR`` or a line this client cannot parse."""


class Msg:
    """One delivered message. ``status`` is set on NATS status messages (503 no responders, 404/408
    at the end of a pull request, 100 heartbeats); their ``data`` is empty."""

    __slots__ = ("data", "description", "headers", "reply", "sid", "status", "subject")

    def __init__(
        self,
        subject: str,
        reply: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        description: str = "",
        sid: int = 0,
    ) -> None:
        self.subject = subject
        self.reply = reply
        self.data = data
        self.headers = headers
        self.status = status
        self.description = description
        self.sid = sid

    def __repr__(self) -> str:
        extra = f" status={self.status} {self.description!r}" if self.status is not None else ""
        return f"<Msg {self.subject} reply={self.reply!r} {len(self.data)} bytes{extra}>"


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The NATS/1.0 header block for ``headers`` (keys and values must not contain CR/LF)."""
    parts = [_HDR_LINE]
    for key, value in headers.items():
        if "\r" in key or "\n" in key or ":" in key or "\r" in value or "\n" in value:
            raise ValueError(f"invalid NATS header {key!r}: {value!r} (no CR, LF, or ':' in keys)")
        parts.append(f"{key}: {value}".encode())
    return _CRLF.join(parts) + _CRLF + _CRLF


def parse_headers(raw: bytes) -> tuple[dict[str, str], int | None, str]:
    """Headers, status code and status description of a header block."""
    lines = raw.split(_CRLF)
    first = lines[0]
    if not first.startswith(_HDR_LINE):
        raise ProtocolError(f"bad header block start {first[:40]!r}")
    status: int | None = None
    description = ""
    rest = first[len(_HDR_LINE) :].strip()
    if rest:
        code, _, text = rest.partition(b" ")
        status = int(code)
        description = text.decode(errors="replace")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:60]!r}")
        headers[key.decode().strip()] = value.decode().strip()
    return headers, status, description


def parse_servers(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"nats://h1:4222,nats://h2:4222"`` or a list of URLs -> [(host, port)]; port defaults to 4222."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    result: list[tuple[str, int]] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        if "://" not in text:
            text = "nats://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("nats", "tcp"):
            raise ValueError(f"unsupported NATS URL {item!r}: only nats:// (no TLS) is supported")
        if not parts.hostname:
            raise ValueError(f"NATS URL {item!r} has no host")
        result.append((parts.hostname, parts.port or 4222))
    if not result:
        raise ValueError("no NATS server URL given")
    return result


class Subscription:
    """Messages on one subject. Without a callback they queue in a bounded deque: beyond
    ``max_pending`` the oldest is dropped and counted in ``dropped`` (a NATS "slow consumer")."""

    __slots__ = ("_client", "callback", "delivered", "dropped", "max_pending", "pending", "queue", "sid", "subject")

    def __init__(
        self,
        client: NatsClient,
        sid: int,
        subject: str,
        queue: str,
        max_pending: int,
        callback: Callable[[Msg], None] | None,
    ) -> None:
        self._client = client
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.max_pending = max_pending
        self.callback = callback
        self.pending: deque[Msg] = deque()
        self.delivered = 0
        self.dropped = 0

    def _deliver(self, msg: Msg) -> None:
        self.delivered += 1
        if self.callback is not None:
            self.callback(msg)
            return
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append(msg)

    def pop_nowait(self) -> Msg | None:
        return self.pending.popleft() if self.pending else None

    async def next_msg(self, max_wait: float) -> Msg:
        """The next message; :class:`NatsTimeoutError` if none arrives within ``max_wait`` seconds."""
        pending = self.pending
        if not pending:
            await self._client.wait_until(lambda: bool(pending), max_wait, what=f"a message on {self.subject}")
        return pending.popleft()

    async def unsubscribe(self) -> None:
        await self._client.unsubscribe(self)


class NatsClient:
    """A NATS connection with reconnect. Use as ``async with NatsClient(url) as nc:`` or call
    :meth:`connect` / :meth:`close`.

    ``reconnect_timeout``: seconds a call keeps trying to reach a server before raising
    :class:`NatsConnectionError` (None: forever). ``write_buffer``: bytes buffered before a publish
    waits for the socket (the bound of the write side).
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        name: str = "marketfeeder",
        connect_timeout: float = 2.0,
        reconnect_timeout: float | None = 60.0,
        max_backoff: float = 2.0,
        write_buffer: int = 1 << 16,
    ) -> None:
        if write_buffer <= 0:
            raise ValueError("write_buffer must be positive")
        self.servers = parse_servers(servers)
        self.name = name
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.max_backoff = max_backoff
        self.write_buffer = write_buffer
        self.server_info: dict[str, Any] = {}
        self.max_payload = 1 << 20
        #: Incremented on every (re)connect: callers compare it to notice a reconnect.
        self.generation = 0
        self.reconnects = 0
        self.last_error: str = ""
        self._stream: anyio.abc.SocketStream | None = None
        self._server_index = 0
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._send_lock = anyio.Lock()
        self._connect_lock = anyio.Lock()
        self._reading = False
        self._tick = anyio.Event()
        self._closed = False
        self._sids = itertools.count(1)
        self._subs: dict[int, Subscription] = {}
        self._pings = 0
        self._pongs = 0
        self._err: str | None = None
        self._nuid = os.urandom(8).hex()
        self._inbox_seq = itertools.count(1)
        self._resp_sub: Subscription | None = None
        self._resp_prefix = f"_INBOX.{self._nuid}.r."
        self._responses: dict[str, Msg] = {}
        self._waiting: set[str] = set()
        self._req_seq = itertools.count(1)
        self.stats = {"msgs_in": 0, "bytes_in": 0, "msgs_out": 0, "bytes_out": 0, "server_pings": 0}

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> NatsClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    @property
    def is_connected(self) -> bool:
        return self._stream is not None

    async def connect(self) -> None:
        """Connect (or raise :class:`NatsConnectionError` after ``reconnect_timeout``)."""
        if self._closed:
            raise NatsConnectionError("client is closed")
        await self._ensure_connected()

    async def close(self) -> None:
        """Send what is buffered (best effort, briefly) and close the connection."""
        if self._closed:
            return
        with anyio.CancelScope(shield=True):
            if self._stream is not None and self._wbuf:
                with anyio.move_on_after(1.0):
                    await self._flush_wbuf()
            self._closed = True
            await self._drop_connection("closed")

    def statistics(self) -> dict[str, Any]:
        return {
            **self.stats,
            "connected": self.is_connected,
            "generation": self.generation,
            "reconnects": self.reconnects,
            "subscriptions": len(self._subs),
            "write_buffered": len(self._wbuf),
            "last_error": self.last_error,
        }

    # --- connection management -----------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._stream is not None:
            return
        async with self._connect_lock:
            if self._stream is not None:
                return
            if self._closed:
                raise NatsConnectionError("client is closed")
            backoff = 0.05
            errors: list[str] = []
            with anyio.move_on_after(self.reconnect_timeout if self.reconnect_timeout is not None else float("inf")):
                while True:
                    host, port = self.servers[self._server_index % len(self.servers)]
                    try:
                        await self._handshake(host, port)
                        return
                    except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, TimeoutError, NatsError) as exc:
                        await self._drop_connection(f"{type(exc).__name__}: {exc}")
                        errors.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
                        del errors[:-3]
                        self._server_index += 1
                    await anyio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, self.max_backoff)
            raise NatsConnectionError(
                f"could not connect to NATS within {self.reconnect_timeout} s; last errors: {'; '.join(errors)}"
            )

    async def _handshake(self, host: str, port: int) -> None:
        # The stream becomes ``self._stream`` only once the server accepted CONNECT, so no other
        # task reads from or writes to it before that.
        self._rbuf.clear()
        self._wbuf.clear()
        self._pings = self._pongs = 0
        self._err = None
        self.server_info = {}
        with anyio.fail_after(self.connect_timeout):
            stream = await anyio.connect_tcp(host, port)
        try:
            with anyio.fail_after(self.connect_timeout):
                while not self.server_info.get("_fresh"):  # INFO comes first; the parser stores it
                    await self._receive_into(stream)
                self.server_info.pop("_fresh", None)
                connect = {
                    "verbose": False,
                    "pedantic": False,
                    "tls_required": False,
                    "name": self.name,
                    "lang": "python-anyio",
                    "version": "0.1.0",
                    "protocol": 1,
                    "headers": True,
                    "no_responders": True,
                }
                await stream.send(b"CONNECT " + orjson.dumps(connect) + _CRLF + _PING)
                self._pings = 1
                while self._pongs < 1:
                    if self._err is not None:
                        raise ProtocolError(f"server refused the connection: {self._err}")
                    await self._receive_into(stream)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
        self._stream = stream
        self.generation += 1
        if self.generation > 1:
            self.reconnects += 1
            log.info("reconnected to nats://%s:%d (generation %d)", host, port, self.generation)
        # Re-subscribe everything (same sids) so deliveries resume on the new connection.
        for sub in self._subs.values():
            self._wbuf += self._sub_line(sub)
        await self._flush_wbuf()

    async def _receive_into(self, stream: anyio.abc.SocketStream) -> None:
        data = await stream.receive(_READ_SIZE)
        self._rbuf += data
        self._parse()

    async def _drop_connection(self, reason: str) -> None:
        stream, self._stream = self._stream, None
        self._wbuf.clear()
        self._rbuf.clear()
        if reason != "closed":
            self.last_error = reason
        if stream is not None:
            if reason != "closed":
                log.warning("NATS connection lost: %s", reason)
            with anyio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except Exception:
                    pass

    def _lost(self, exc: BaseException, *, cancelled: bool = False) -> None:
        # Synchronous variant for use in except clauses: the stream is closed without awaiting.
        stream, self._stream = self._stream, None
        self._wbuf.clear()
        self._rbuf.clear()
        self.last_error = "cancelled mid-send" if cancelled else f"{type(exc).__name__}: {exc}"
        if stream is not None:
            (log.debug if cancelled else log.warning)("NATS connection dropped: %s", self.last_error)
            try:
                raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.close()
            except Exception:
                pass

    # --- writing -----------------------------------------------------------------------------

    async def _flush_wbuf(self) -> None:
        if not self._wbuf:
            return
        async with self._send_lock:
            stream = self._stream
            if not self._wbuf or stream is None:
                return
            data, self._wbuf = self._wbuf, bytearray()
            try:
                await stream.send(bytes(data))
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self._lost(exc)
            except BaseException as exc:
                # Cancelled mid-send: the byte stream may hold half a message, so drop the connection.
                self._lost(exc, cancelled=True)
                raise
            self.stats["bytes_out"] += len(data)

    async def _append(self, data: bytes) -> None:
        if self._stream is None:
            await self._ensure_connected()
        self._wbuf += data
        if len(self._wbuf) >= self.write_buffer:
            await self._flush_wbuf()

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue a message (PUB, or HPUB with headers). It is sent when the write buffer fills or a
        caller waits (``flush``, ``request``, ``next_msg``); call :meth:`flush_writes` to push it now."""
        if self._stream is None:
            await self._ensure_connected()
        if len(payload) > self.max_payload:
            raise ValueError(f"payload of {len(payload)} bytes exceeds the server's max_payload {self.max_payload}")
        self._wbuf += _pub_bytes(subject, reply, payload, headers)
        self.stats["msgs_out"] += 1
        if len(self._wbuf) >= self.write_buffer:
            await self._flush_wbuf()

    async def write_raw(self, frame: bytes) -> None:
        """Queue pre-built protocol bytes (a whole PUB/HPUB frame); for publishers that build frames
        themselves on their hot path (see :func:`hpub_frame`)."""
        if self._stream is None:
            await self._ensure_connected()
        self._wbuf += frame
        self.stats["msgs_out"] += 1
        if len(self._wbuf) >= self.write_buffer:
            await self._flush_wbuf()

    async def flush_writes(self) -> None:
        """Send the write buffer now (no round trip)."""
        await self._flush_wbuf()

    async def flush(self, max_wait: float = 5.0) -> None:
        """Round trip (PING/PONG): the server has processed everything sent before."""
        await self._ensure_connected()
        gen = self.generation
        self._wbuf += _PING
        self._pings += 1
        target = self._pings
        await self.wait_until(lambda: self._pongs >= target or self.generation != gen, max_wait, what="PONG")
        if self.generation != gen:
            raise NatsConnectionError("connection lost during flush")

    # --- reading -----------------------------------------------------------------------------

    async def wait_until(self, cond: Callable[[], bool], max_wait: float, *, what: str = "a reply") -> None:
        """Read and dispatch incoming data until ``cond()`` holds; :class:`NatsTimeoutError` after
        ``max_wait`` seconds. Several tasks may wait at once: one reads, the others are woken after
        each chunk it dispatched."""
        if cond():
            return
        try:
            with anyio.fail_after(max_wait):
                while not cond():
                    if self._stream is None:
                        await self._ensure_connected()
                        continue
                    if self._wbuf:
                        await self._flush_wbuf()
                        if cond():
                            return
                    if self._reading:
                        await self._tick.wait()
                        continue
                    self._reading = True
                    try:
                        await self._read_once()
                    finally:
                        self._reading = False
                        tick, self._tick = self._tick, anyio.Event()
                        tick.set()
        except TimeoutError:
            raise NatsTimeoutError(f"timed out after {max_wait} s waiting for {what}") from None

    async def _read_once(self) -> None:
        stream = self._stream
        if stream is None:
            return
        try:
            data = await stream.receive(_READ_SIZE)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream) as exc:
            self._lost(exc)
            return
        self.stats["bytes_in"] += len(data)
        self._rbuf += data
        try:
            self._parse()
        except (ProtocolError, ValueError, IndexError) as exc:
            self._lost(ProtocolError(f"unparseable data from server: {exc}"))
            return
        if self._wbuf:  # PONGs owed to the server
            await self._flush_wbuf()

    def _parse(self) -> None:
        buf = self._rbuf
        pos = 0
        size = len(buf)
        subs = self._subs
        while pos < size:
            end = buf.find(_CRLF, pos)
            if end < 0:
                break
            first = buf[pos]
            if first == 77 or first == 72:  # 'M' (MSG) or 'H' (HMSG)
                parts = bytes(buf[pos:end]).split()
                hmsg = parts[0] == b"HMSG"
                if hmsg:
                    total = int(parts[-1])
                    hdr_len = int(parts[-2])
                    reply = parts[3].decode() if len(parts) == 6 else ""
                else:
                    total = int(parts[-1])
                    hdr_len = 0
                    reply = parts[3].decode() if len(parts) == 5 else ""
                start = end + 2
                stop = start + total
                if stop + 2 > size:
                    break  # wait for the rest of the payload
                sid = int(parts[2])
                pos = stop + 2
                self.stats["msgs_in"] += 1
                sub = subs.get(sid)
                if sub is None:
                    continue  # unsubscribed meanwhile
                if hmsg:
                    headers, status, description = parse_headers(bytes(buf[start : start + hdr_len]))
                    msg = Msg(parts[1].decode(), reply, bytes(buf[start + hdr_len : stop]), headers, status,
                              description, sid)
                else:
                    msg = Msg(parts[1].decode(), reply, bytes(buf[start:stop]), None, None, "", sid)
                sub._deliver(msg)
                continue
            line = bytes(buf[pos:end])
            pos = end + 2
            if line == b"PING":
                self.stats["server_pings"] += 1
                self._wbuf += _PONG
            elif line == b"PONG":
                self._pongs += 1
            elif line == b"+OK":
                pass
            elif line.startswith(b"INFO "):
                info = orjson.loads(line[5:])
                self.server_info = info
                self.server_info["_fresh"] = True
                self.max_payload = int(info.get("max_payload", self.max_payload))
            elif line.startswith(b"-ERR"):
                self._err = line[4:].strip().decode(errors="replace").strip("'")
                self.last_error = self._err
                log.error("NATS server error: %s", self._err)
            else:
                raise ProtocolError(f"unknown protocol line {line[:60]!r}")
        if pos:
            del buf[:pos]

    # --- subscriptions -----------------------------------------------------------------------

    @staticmethod
    def _sub_line(sub: Subscription) -> bytes:
        if sub.queue:
            return f"SUB {sub.subject} {sub.queue} {sub.sid}\r\n".encode()
        return f"SUB {sub.subject} {sub.sid}\r\n".encode()

    async def subscribe(
        self,
        subject: str,
        *,
        queue: str = "",
        max_pending: int = 65536,
        callback: Callable[[Msg], None] | None = None,
    ) -> Subscription:
        """Subscribe to ``subject`` (wildcards allowed). ``callback`` (sync, fast) is called while the
        data is dispatched; otherwise messages queue in the subscription (bounded by ``max_pending``)."""
        if not subject or " " in subject:
            raise ValueError(f"invalid subject {subject!r}")
        if max_pending <= 0:
            raise ValueError("max_pending must be positive")
        sub = Subscription(self, next(self._sids), subject, queue, max_pending, callback)
        self._subs[sub.sid] = sub
        await self._append(self._sub_line(sub))
        await self._flush_wbuf()  # sent now; call flush() to know the server has it
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.sid, None) is not None and self._stream is not None:
            await self._append(f"UNSUB {sub.sid}\r\n".encode())

    def new_inbox(self) -> str:
        return f"_INBOX.{self._nuid}.{next(self._inbox_seq)}"

    # --- request / reply ---------------------------------------------------------------------

    def _on_response(self, msg: Msg) -> None:
        token = msg.subject[len(self._resp_prefix) :]
        if token in self._waiting:
            self._responses[token] = msg

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        max_wait: float = 5.0,
    ) -> Msg:
        """Publish with a reply inbox and wait for the first reply.

        Raises :class:`NoRespondersError` when nothing listens, :class:`NatsTimeoutError` on timeout."""
        if self._resp_sub is None:
            self._resp_sub = await self.subscribe(self._resp_prefix + "*", callback=self._on_response)
        token = str(next(self._req_seq))
        self._waiting.add(token)
        responses = self._responses
        try:
            await self.publish(subject, payload, reply=self._resp_prefix + token, headers=headers)
            await self.wait_until(lambda: token in responses, max_wait, what=f"a reply on {subject}")
            msg = responses.pop(token)
        finally:
            self._waiting.discard(token)
            responses.pop(token, None)
        if msg.status == 503:
            raise NoRespondersError(f"no responders on {subject}")
        return msg


def _pub_bytes(subject: str, reply: str, payload: bytes, headers: Mapping[str, str] | None) -> bytes:
    if headers:
        hdr = encode_headers(headers)
        head = f"HPUB {subject} {reply} {len(hdr)} {len(hdr) + len(payload)}\r\n" if reply else (
            f"HPUB {subject} {len(hdr)} {len(hdr) + len(payload)}\r\n"
        )
        return head.encode() + hdr + payload + _CRLF
    head = f"PUB {subject} {reply} {len(payload)}\r\n" if reply else f"PUB {subject} {len(payload)}\r\n"
    return head.encode() + payload + _CRLF


def hpub_frame(subject: str, reply: str, msg_id: str, payload: bytes) -> bytes:
    """An HPUB frame whose only header is ``Nats-Msg-Id`` (built without the generic header encoder)."""
    hdr = b"NATS/1.0\r\nNats-Msg-Id: " + msg_id.encode() + b"\r\n\r\n"
    hlen = len(hdr)
    return f"HPUB {subject} {reply} {hlen} {hlen + len(payload)}\r\n".encode() + hdr + payload + _CRLF
