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

Security: credentials come from the URL (``nats://user:pass@host``, ``nats://TOKEN@host``) or from
arguments, and are sent in CONNECT only to a server whose INFO asks for them. TLS is used for
``tls://`` URLs, when a CA, client certificate or SSL context is given, or when the server's INFO
requires it: the TCP stream is upgraded after INFO (the NATS 2.x order), before CONNECT. Credentials
never appear in logs, errors, ``repr`` or :meth:`NatsClient.statistics` (servers are shown as
``host:port``). A server refusing the credentials, or a failed TLS handshake, raises at once on the
first connect (:class:`NatsAuthError`, :class:`NatsTLSError`): that is configuration, not a network
blip; after the first connect the client keeps retrying them under ``reconnect_timeout`` (a cluster
rotating credentials or certificates heals).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import ssl
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
import orjson
from anyio.streams.tls import TLSStream

__all__ = [
    "CREDENTIAL_ENV",
    "SECURITY_OPTIONS",
    "Msg",
    "NatsAuthError",
    "NatsClient",
    "NatsConnectionError",
    "NatsTLSError",
    "NatsError",
    "NatsTimeoutError",
    "NoRespondersError",
    "ProtocolError",
    "Subscription",
    "encode_headers",
    "hpub_frame",
    "parse_headers",
    "parse_servers",
    "security_options",
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


class NatsAuthError(NatsConnectionError):
    """The server refused the credentials (``-ERR 'Authorization Violation'`` and the like)."""


class NatsTLSError(NatsConnectionError):
    """TLS could not be set up: the certificate did not verify, the server does not offer TLS, or the
    server rejected the client certificate."""


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


class _Server:
    """One server URL, parsed. Its credentials stay out of ``repr`` (and out of every message)."""

    __slots__ = ("host", "password", "port", "tls", "token", "user")

    def __init__(self, host: str, port: int, tls: bool, user: str, password: str, token: str) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.user = user
        self.password = password
        self.token = token

    def __repr__(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


def _redacted(item: str) -> str:
    # For error messages about a URL: whatever precedes '@' may be a password or a token.
    scheme, sep, rest = item.strip().rpartition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def _parse_urls(servers: str | Sequence[str]) -> list[_Server]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    result: list[_Server] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        if "://" not in text:
            text = "nats://" + text
        try:
            parts = urlsplit(text)
            port = parts.port or 4222
        except ValueError as exc:
            raise ValueError(f"invalid NATS URL {_redacted(item)!r}: {exc}") from None
        if parts.scheme not in ("nats", "tcp", "tls"):
            raise ValueError(f"unsupported NATS URL {_redacted(item)!r}: the scheme must be nats://, tcp:// or tls://")
        if not parts.hostname:
            raise ValueError(f"NATS URL {_redacted(item)!r} has no host")
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        token = ""
        if user and parts.password is None:
            user, token = "", user  # nats://TOKEN@host
        result.append(_Server(parts.hostname, port, parts.scheme == "tls", user, password, token))
    if not result:
        raise ValueError("no NATS server URL given")
    return result


def parse_servers(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"nats://h1:4222,tls://h2:4222"`` or a list of URLs -> [(host, port)]; port defaults to 4222.
    Credentials in the URLs are accepted and left out of the result."""
    return [(s.host, s.port) for s in _parse_urls(servers)]


#: Sink and source options passed through to :class:`NatsClient` (see :func:`security_options`).
SECURITY_OPTIONS = frozenset({"user", "password", "token", "tls_ca", "tls_cert", "tls_key", "tls_hostname"})
_SECRET_OPTIONS = frozenset({"password", "token"})


class _SecurityOptions(dict[str, Any]):
    """Keyword arguments for :class:`NatsClient` whose ``repr`` hides the secrets."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {'***' if k in _SECRET_OPTIONS else repr(v)}" for k, v in self.items()) + "}"


#: Where credentials come from when the options name none (secrets need not live in config files).
CREDENTIAL_ENV = {"user": "MARKETFEEDER_NATS_USER", "password": "MARKETFEEDER_NATS_PASSWORD",
                  "token": "MARKETFEEDER_NATS_TOKEN"}


def security_options(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The :data:`SECURITY_OPTIONS` present in ``options``, as ``NatsClient`` keyword arguments. When
    none of ``user``, ``password``, ``token`` is given, they are read from :data:`CREDENTIAL_ENV`."""
    result = _SecurityOptions({k: str(options[k]) for k in sorted(SECURITY_OPTIONS) if options.get(k)})
    if not any(k in result for k in CREDENTIAL_ENV):
        env = os.environ if environ is None else environ
        result.update({k: env[name] for k, name in CREDENTIAL_ENV.items() if env.get(name)})
    return result


def _is_auth_error(err: str) -> bool:
    text = err.lower()
    return "authorization" in text or "authentication" in text


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

    Security: ``user``/``password`` or ``token`` for servers whose URL carries no credentials (a URL's
    own ``user:pass@`` or ``TOKEN@``, percent-decoded, wins for that server). ``tls_ca`` (a PEM CA
    file; default: the system's CAs), ``tls_cert``/``tls_key`` (client certificate for mutual TLS) or
    ``tls_context`` (a ready :class:`ssl.SSLContext`) make TLS mandatory on every server;
    ``tls_hostname`` is the name the server certificate must carry (default: the URL's host).
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
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if write_buffer <= 0:
            raise ValueError("write_buffer must be positive")
        if password and not user:
            raise ValueError("password given without user")
        if token and user:
            raise ValueError("give either user/password or token, not both")
        if tls_key and not tls_cert:
            raise ValueError("tls_key given without tls_cert")
        self._targets = _parse_urls(servers)
        self._user = user or ""
        self._password = password or ""
        self._token = token or ""
        #: (host, port) of every server, credentials left out.
        self.servers = [(s.host, s.port) for s in self._targets]
        self.tls_hostname = tls_hostname
        self._tls_forced = bool(tls_ca or tls_cert or tls_context is not None)
        self._has_client_cert = bool(tls_cert or tls_context is not None)
        self._ssl_context = tls_context or (_ssl_context(tls_ca, tls_cert, tls_key) if self._tls_forced else None)
        self.tls = False
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
        self._stream: anyio.abc.ByteStream | None = None
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

    def __repr__(self) -> str:
        state = "connected" if self._stream is not None else "closed" if self._closed else "not connected"
        return f"<NatsClient {','.join(map(repr, self._targets))} {state}>"

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
            "tls": self.tls,
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
                    server = self._targets[self._server_index % len(self._targets)]
                    host, port = server.host, server.port
                    try:
                        await self._handshake(server)
                        return
                    except (NatsAuthError, NatsTLSError) as exc:
                        # Wrong credentials or certificates: fail fast on the first connect; once
                        # connected, retry them like any failure (rotations heal within the timeout).
                        await self._drop_connection(f"{type(exc).__name__}: {exc}")
                        if self.generation == 0:
                            raise
                        errors.append(f"{type(exc).__name__}: {exc}")
                        del errors[:-3]
                        self._server_index += 1
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

    def _client_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # a tls:// URL or a server requiring TLS: the system's CAs
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def _handshake(self, server: _Server) -> None:
        host, port = server.host, server.port
        # The stream becomes ``self._stream`` only once the server accepted CONNECT, so no other
        # task reads from or writes to it before that.
        self._rbuf.clear()
        self._wbuf.clear()
        self._pings = self._pongs = 0
        self._err = None
        self.server_info = {}
        with anyio.fail_after(self.connect_timeout):
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
        tls = False
        try:
            with anyio.fail_after(self.connect_timeout):
                while not self.server_info.get("_fresh"):  # INFO comes first; the parser stores it
                    await self._receive_into(stream)
                info = self.server_info
                info.pop("_fresh", None)
                offered = bool(info.get("tls_required") or info.get("tls_available"))
                if (server.tls or self._tls_forced) and not offered:
                    raise NatsTLSError(f"NATS server {host}:{port} does not offer TLS, which is required")
                if server.tls or self._tls_forced or info.get("tls_required"):
                    try:
                        stream = await TLSStream.wrap(
                            stream,
                            hostname=self.tls_hostname or host,
                            ssl_context=self._client_ssl_context(),
                            standard_compatible=False,
                        )
                    except ssl.SSLError as exc:
                        verify = getattr(exc, "verify_message", "")
                        hint = " (check tls_ca and tls_hostname)" if verify else ""
                        reason = verify or exc.reason or str(exc)
                        raise NatsTLSError(f"TLS handshake with NATS server {host}:{port} failed: {reason}{hint}") from exc
                    tls = True
                    self._rbuf.clear()
                connect: dict[str, Any] = {
                    "verbose": False,
                    "pedantic": False,
                    "tls_required": tls,
                    "name": self.name,
                    "lang": "python-anyio",
                    "version": "0.1.0",
                    "protocol": 1,
                    "headers": True,
                    "no_responders": True,
                }
                credentials = bool(server.user or server.token or self._user or self._token)
                if info.get("auth_required"):  # secrets go only to a server that asks for them
                    if server.user or server.token:
                        user, password, token = server.user, server.password, server.token
                    else:
                        user, password, token = self._user, self._password, self._token
                    if token:
                        connect["auth_token"] = token
                    elif user:
                        connect["user"] = user
                        connect["pass"] = password
                await stream.send(b"CONNECT " + orjson.dumps(connect) + _CRLF + _PING)
                self._pings = 1
                try:
                    while self._pongs < 1:
                        if self._err is not None:
                            if _is_auth_error(self._err):
                                given = "" if credentials else " (no credentials given)"
                                raise NatsAuthError(f"NATS server {host}:{port} refused the connection: {self._err}{given}")
                            raise ProtocolError(f"NATS server {host}:{port} refused the connection: {self._err}")
                        await self._receive_into(stream)
                except ssl.SSLError as exc:  # e.g. the server rejected our client certificate (TLS 1.3)
                    hint = "" if self._has_client_cert else " (the server may require a client certificate: tls_cert)"
                    raise NatsTLSError(f"TLS with NATS server {host}:{port} failed: {exc.reason or exc}{hint}") from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
        self._stream = stream
        self.tls = tls
        self.generation += 1
        if self.generation > 1:
            self.reconnects += 1
            log.info("reconnected to %r (generation %d)", server, self.generation)
        # Re-subscribe everything (same sids) so deliveries resume on the new connection.
        for sub in self._subs.values():
            self._wbuf += self._sub_line(sub)
        await self._flush_wbuf()

    async def _receive_into(self, stream: anyio.abc.ByteStream) -> None:
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


def _ssl_context(cafile: str | None, certfile: str | None, keyfile: str | None) -> ssl.SSLContext:
    """A client context verifying the server against ``cafile`` (or the system's CAs), presenting
    ``certfile``/``keyfile`` when given. A missing or unreadable file is reported here, not at connect."""
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_ca {cafile!r}: cannot load the CA file ({exc})") from None
    if certfile:
        try:
            ctx.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls_cert {certfile!r} / tls_key {keyfile!r}: cannot load ({exc})") from None
    return ctx


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
