"""The exchange-agnostic connection manager: it drives any :class:`~marketfeeder.connector.Connector`.

Per exchange, an :class:`ExchangeManager` loads instruments, turns (symbol, data type) pairs into
wire streams, shards them into connections of at most ``limits.max_streams_per_connection`` and
runs one :class:`ConnectionWorker` per shard plus one snapshot task per order book.

A worker keeps its shard connected forever: connect (under the exchange's attempt budget),
subscribe (paced by ``limits.max_control_messages_per_second``), read, and on any loss emit
``Connection(DOWN)``, mark its books stale and reconnect after a jittered backoff. A *session* is
one physical WebSocket; a worker has one active session, and briefly two during a planned rotation
(``limits.max_connection_lifetime`` or a ``ServerShutdown``): the replacement is opened and
subscribed first, takes over when it delivers its first event, and the old one is closed. Frames of
both are processed during the overlap; sequence ids remove the duplicates.

The stale-feed watchdog learns each stream's usual interval (an EWMA) and calls a stream stale after
``stale_factor`` times that interval, never sooner than ``stale_min_seconds``: a quiet but regular
stream is left alone. When nothing at all arrives on a connection for longer than its fastest
stream's threshold, the connection is stalled: it is closed and reconnected.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import anyio.abc

from marketfeeder.book import SnapshotOutcome
from marketfeeder.clock import monotonic_ns, now_ns
from marketfeeder.config import ExchangeConfig, RuntimeConfig
from marketfeeder.connector import Connector, ControlError, ControlMessage, ServerShutdown, SubscribeAck
from marketfeeder.models import (
    Connection,
    ConnectionStatus,
    DataType,
    Event,
    Instrument,
    UnknownSymbolError,
)
from marketfeeder.transport.backoff import AttemptBudget, Backoff, RateLimiter
from marketfeeder.transport.ws import WebSocket, WebSocketClosed, connect_websocket

from .pipeline import BookEntry, ExchangePipeline
from .stats import ConnectionStats

__all__ = ["ConnectionWorker", "ExchangeManager", "FeederError", "StreamSpec"]

log = logging.getLogger("marketfeeder.runtime")

_UP = ConnectionStatus.UP
_DOWN = ConnectionStatus.DOWN
_ROTATED = ConnectionStatus.ROTATED
_STALE_OUTCOME = SnapshotOutcome.STALE
#: Most decode errors logged per connection per minute (the rest are counted).
_LOG_EVERY_NS = 60_000_000_000
#: Control requests remembered per connection while waiting for their acknowledgement.
_MAX_PENDING_REQUESTS = 1000


_CONNECTION_ERRORS = (WebSocketClosed, OSError, TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WebSocketClosed):
        if exc.code is None:
            return f"connection closed ({exc.reason or 'no close frame'})"
        return f"closed by the server (code {exc.code}{': ' + exc.reason if exc.reason else ''})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FeederError(RuntimeError):
    """The feeder cannot do what was asked (unknown symbol, unsupported data type, bad setup)."""


class StreamSpec:
    """One wire stream and the (symbol, data type) it delivers."""

    __slots__ = ("data_type", "name", "symbol")

    def __init__(self, name: str, symbol: str, data_type: DataType) -> None:
        self.name = name
        self.symbol = symbol
        self.data_type = data_type

    def __repr__(self) -> str:
        return f"StreamSpec({self.name!r}, {self.symbol!r}, {self.data_type.value})"


class _Session:
    """One physical WebSocket of a worker (the worker outlives its sessions)."""

    def __init__(self, worker: ConnectionWorker, number: int, *, replacement: bool) -> None:
        self.worker = worker
        self.number = number
        self.replacement = replacement
        self.ws: WebSocket | None = None
        self.scope = anyio.CancelScope()
        self.opened_ns = 0
        self.last_frame_ns = 0
        self.market_events = 0
        self.clocks: dict[tuple[str, DataType], list[int]] = {}
        self.unconfirmed: dict[str, int] = {}  # stream -> monotonic ns when requested
        self.requests: dict[int | str, list[str]] = {}
        self.limiter: RateLimiter | None = None
        self.close_reason = ""
        self.superseded = False
        self.healthy = False
        self.reported_silent: set[str] = set()
        self._last_decode_log = 0

    # --- FrameSource -------------------------------------------------------------------------

    def count_frame(self, receive_ts: int) -> None:
        self.last_frame_ns = receive_ts
        stats = self.worker.stats
        stats.message_count += 1
        stats.last_frame_ns = receive_ts

    def count_decode_error(self, exc: Exception, frame: str | bytes) -> None:
        self.worker.stats.decode_errors += 1
        now = monotonic_ns()
        if now - self._last_decode_log >= _LOG_EVERY_NS:
            self._last_decode_log = now
            log.warning("%s: skipped a frame that does not decode (%s: %s): %.200r",
                        self.worker.id, type(exc).__name__, exc, frame)

    def count_unhandled(self) -> None:
        self.worker.stats.unhandled += 1

    def on_control(self, message: ControlMessage) -> None:
        self.worker.on_control(self, message)

    def first_event(self, key: tuple[str, DataType], receive_ts: int) -> None:
        # The first event of a (symbol, data type) confirms its streams when the exchange sends no acks.
        if self.unconfirmed:
            for name in self.worker.streams_of(key):
                self.unconfirmed.pop(name, None)


class ConnectionWorker:
    """Keeps one shard of streams connected, subscribed, watched and rotated."""

    def __init__(self, manager: ExchangeManager, index: int, streams: Iterable[StreamSpec]) -> None:
        self.manager = manager
        self.index = index
        self.id = f"{manager.exchange}#{index}"
        self.streams: dict[str, StreamSpec] = {spec.name: spec for spec in streams}
        self.stats = ConnectionStats()
        self.stats.streams = len(self.streams)
        self.active: _Session | None = None
        self.pending_replacement: _Session | None = None
        self._sessions = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._lost = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self.backoff = Backoff(manager.runtime.reconnect_initial_delay, manager.runtime.reconnect_max_delay)
        self.subscribe_errors: dict[str, str] = {}
        self.had_session = False

    # --- streams -----------------------------------------------------------------------------

    def streams_of(self, key: tuple[str, DataType]) -> list[str]:
        symbol, data_type = key
        return [s.name for s in self.streams.values() if s.symbol == symbol and s.data_type is data_type]

    def symbols(self) -> set[str]:
        return {spec.symbol for spec in self.streams.values()}

    def book_symbols(self) -> set[str]:
        return {spec.symbol for spec in self.streams.values() if spec.data_type is DataType.ORDERBOOK}

    @property
    def room(self) -> int:
        return self.manager.connector.limits.max_streams_per_connection - len(self.streams)

    def _live_sessions(self) -> list[_Session]:
        """The active session and a replacement being prepared: both must carry every stream."""
        return [s for s in (self.active, self.pending_replacement) if s is not None and s.ws is not None]

    async def add_streams(self, specs: Sequence[StreamSpec]) -> None:
        for spec in specs:
            self.streams[spec.name] = spec
        self.stats.streams = len(self.streams)
        for session in self._live_sessions():
            await self._control_quietly(session, [spec.name for spec in specs], subscribe=True)

    async def remove_streams(self, names: Sequence[str]) -> None:
        present = [name for name in names if name in self.streams]
        for name in present:
            del self.streams[name]
            self.subscribe_errors.pop(name, None)
        self.stats.streams = len(self.streams)
        if not present:
            return
        for session in self._live_sessions():
            for name in present:
                session.unconfirmed.pop(name, None)
            await self._control_quietly(session, present, subscribe=False)

    async def _control_quietly(self, session: _Session, names: Sequence[str], *, subscribe: bool) -> None:
        # A connection closing under us is fine: its successor subscribes to every current stream.
        try:
            await self._control(session, names, subscribe=subscribe)
        except _CONNECTION_ERRORS as exc:
            log.info("%s: control message not sent (%s); the next connection carries it", self.id, exc)

    # --- the supervisor ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect forever with backoff; returns only when cancelled."""
        budget = self.manager.budget
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            while True:
                self._lost = anyio.Event()
                if budget is not None:
                    await budget.wait_for_slot()
                tg.start_soon(self._session_main, self._new_session(replacement=False))
                await self._lost.wait()
                delay = self.backoff.next_delay()
                await anyio.sleep(delay)

    def _new_session(self, *, replacement: bool) -> _Session:
        return _Session(self, next(self._sessions), replacement=replacement)

    def _url(self) -> str:
        return self.manager.connector.connection_url(list(self.streams))

    async def _session_main(self, session: _Session) -> None:
        manager = self.manager
        runtime = manager.runtime
        limits = manager.connector.limits
        url = self._url()
        self.stats.url = url
        reason = "closed"
        try:
            with session.scope:
                if session.replacement and manager.budget is not None:
                    await manager.budget.wait_for_slot()  # a replacement is a connection attempt too
                async with connect_websocket(
                    url,
                    open_timeout=runtime.connect_timeout,
                    max_frame_size=runtime.max_frame_size,
                    ping_interval=limits.client_ping_interval,
                    pong_timeout=limits.pong_timeout,
                ) as ws:
                    session.ws = ws
                    session.opened_ns = monotonic_ns()
                    if limits.max_control_messages_per_second:
                        session.limiter = RateLimiter(limits.max_control_messages_per_second, 1)
                    if session.replacement:
                        self.pending_replacement = session
                    else:
                        await self._became_active(session, url)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._watchdog, session)
                        if limits.max_connection_lifetime:
                            tg.start_soon(self._rotation_timer, session, limits.max_connection_lifetime)
                        names = list(self.streams)
                        if manager.connector.streams_in_url:
                            now = monotonic_ns()
                            if not limits.subscribe_ack:
                                session.unconfirmed.update(dict.fromkeys(names, now))
                        elif names:
                            tg.start_soon(self._subscribe, session, names)
                        reason = await self._read_loop(session, ws)
                        tg.cancel_scope.cancel()
            if session.scope.cancelled_caught:
                reason = session.close_reason or "closed by the runtime"
        except anyio.get_cancelled_exc_class():
            reason = "stopped"
            raise
        except Exception as exc:
            leaf = _first_leaf(exc)  # task groups wrap what their tasks raised
            reason = _describe(leaf)
            if not isinstance(leaf, _CONNECTION_ERRORS):  # a bug or an odd failure: keep the traceback
                log.error("%s: connection failed unexpectedly", self.id, exc_info=exc)
        finally:
            with anyio.CancelScope(shield=True):
                await self._session_ended(session, reason)

    async def _became_active(self, session: _Session, url: str) -> None:
        self.active = session
        stats = self.stats
        stats.connects += 1
        stats.connected = True
        events: list[Event] = []
        now = now_ns()
        if self.had_session:
            stats.reconnects += 1
            for symbol in self.symbols():
                self.manager.dispatcher.stats_for(self.manager.exchange, symbol).reconnects += 1
            for symbol in self.book_symbols():
                entry = self.manager.pipeline.books.get(symbol)
                if entry is not None:
                    entry.sync.reset("reconnected", now, events)
        self.had_session = True
        events.append(Connection.fast(self.manager.exchange, "", None, now, None, self.id, _UP, "", url))
        await self.manager.dispatcher.deliver_wait(events)

    async def _read_loop(self, session: _Session, ws: WebSocket) -> str:
        on_frame = self.manager.pipeline.on_frame
        dispatcher = self.manager.dispatcher
        while True:
            try:
                frame, receive_ts = await ws.receive()
            except WebSocketClosed as exc:
                return _describe(exc)
            if session is not self.active:
                if session.superseded:
                    continue  # the replacement took over: this one only waits to be closed
                pending = on_frame(frame, receive_ts, session)
                if session.market_events:
                    await self._promote(session)
            else:
                pending = on_frame(frame, receive_ts, session)
                if not session.healthy and session.market_events:
                    session.healthy = True
                    self.backoff.reset()  # only a connection that delivers resets the backoff
            if pending:
                await dispatcher.wait(pending)

    async def _promote(self, session: _Session) -> None:
        """The replacement delivered: it becomes active and the old session is closed."""
        old = self.active
        self.active = session
        self.pending_replacement = None
        self.stats.rotations += 1
        now = now_ns()
        event = Connection.fast(self.manager.exchange, "", None, now, None, self.id, _ROTATED,
                                "replacement connection took over", self.stats.url)
        if old is not None:
            old.superseded = True
            old.close_reason = "rotated"
            old.scope.cancel()
        log.info("%s: rotated to a new connection", self.id)
        await self.manager.dispatcher.deliver_wait([event])

    async def _session_ended(self, session: _Session, reason: str) -> None:
        if self.pending_replacement is session:
            self.pending_replacement = None
        if session is not self.active:
            if session.superseded:
                return
            if session.replacement:
                log.warning("%s: replacement connection failed before taking over: %s", self.id, reason)
                return
            # The first connection attempt of this round failed.
            self.stats.last_error = reason
            log.warning("%s: cannot connect: %s", self.id, reason)
            self._lost.set()
            return
        self.active = None
        self.stats.connected = False
        self.stats.last_error = reason
        log.log(logging.INFO if reason == "stopped" else logging.WARNING, "%s: connection lost: %s", self.id, reason)
        now = now_ns()
        events: list[Event] = []
        for symbol in self.book_symbols():
            entry = self.manager.pipeline.books.get(symbol)
            if entry is not None:
                entry.sync.mark_stale(f"connection lost: {reason}", now, events)
        events.append(Connection.fast(self.manager.exchange, "", None, now, None, self.id, _DOWN, reason,
                                      self.stats.url))
        # Events of a lost connection must not wait on a full sink: deliver without blocking.
        pending = self.manager.dispatcher.deliver(events)
        if pending:
            for queue in pending:
                queue.trim_parked()
        self._lost.set()

    # --- control messages --------------------------------------------------------------------

    async def _subscribe(self, session: _Session, names: Sequence[str]) -> None:
        await self._control(session, names, subscribe=True)

    async def _control(self, session: _Session, names: Sequence[str], *, subscribe: bool) -> None:
        connector = self.manager.connector
        chunk = max(1, connector.limits.max_streams_per_control_message)
        ws = session.ws
        if ws is None:
            return
        for start in range(0, len(names), chunk):
            part = list(names[start : start + chunk])
            if session.limiter is not None:
                await session.limiter.acquire()
            request_id = next(self._request_ids)
            if subscribe:
                message = connector.subscribe_message(part, request_id)
                sent = monotonic_ns()
                for name in part:
                    session.unconfirmed[name] = sent
                session.requests[request_id] = part
                if len(session.requests) > _MAX_PENDING_REQUESTS:
                    # Never acknowledged (an exchange without acks): forget the oldest.
                    del session.requests[next(iter(session.requests))]
            else:
                message = connector.unsubscribe_message(part, request_id)
            await ws.send(message)

    def on_control(self, session: _Session, message: ControlMessage) -> None:
        if isinstance(message, SubscribeAck):
            names = session.requests.pop(message.request_id, None) if message.request_id is not None else None
            # Without documented acks a stream is confirmed by its first event, not by a reply.
            if names is not None and self.manager.connector.limits.subscribe_ack:
                for name in names:
                    session.unconfirmed.pop(name, None)
        elif isinstance(message, ControlError):
            self.stats.control_errors += 1
            if message.request_id is not None:
                names = session.requests.pop(message.request_id, None) or []
            else:
                names = list(session.unconfirmed)  # the exchange does not say which: the unconfirmed ones
            text = f"{message.code}: {message.message}" if message.code is not None else message.message
            for name in names:
                session.unconfirmed.pop(name, None)
                if name in self.streams:
                    self.subscribe_errors[name] = text
            log.error("%s: the exchange refused a request (%s) for %s", self.id, text, ", ".join(names) or "?")
        elif isinstance(message, ServerShutdown):
            log.info("%s: the server announced a shutdown; rotating", self.id)
            self.start_replacement()

    # --- rotation ----------------------------------------------------------------------------

    def start_replacement(self) -> None:
        if self.pending_replacement is not None or self._task_group is None or self.active is None:
            return
        session = self._new_session(replacement=True)
        self.pending_replacement = session
        self._task_group.start_soon(self._session_main, session)

    async def _rotation_timer(self, session: _Session, lifetime: float) -> None:
        margin = self.manager.connector.limits.rotate_margin
        await anyio.sleep(max(0.0, lifetime - margin))
        # Retry the replacement until one takes over; the old connection keeps serving meanwhile.
        while session is self.active and not session.superseded:
            self.start_replacement()
            await anyio.sleep(max(1.0, margin / 4))

    # --- the watchdog ------------------------------------------------------------------------

    async def _watchdog(self, session: _Session) -> None:
        runtime = self.manager.runtime
        limits = self.manager.connector.limits
        floor_ns = int(runtime.stale_min_seconds * 1e9)
        factor = runtime.stale_factor
        timeout_ns = int(limits.subscribe_timeout * 1e9)
        period = min(max(runtime.stale_min_seconds / 4, 0.02), 1.0)
        while True:
            await anyio.sleep(period)
            if session.superseded:
                return
            mono = monotonic_ns()
            # Subscriptions never confirmed (no ack, or no first event) within subscribe_timeout.
            silent = [name for name, sent in session.unconfirmed.items() if mono - sent > timeout_ns]
            for name in silent:
                if name not in session.reported_silent:
                    session.reported_silent.add(name)
                    log.warning("%s: stream %s sent nothing and was not confirmed within %.1f s",
                                self.id, name, limits.subscribe_timeout)
            self.stats.silent_streams = silent
            if session is not self.active:
                # A replacement that never delivers is given up, so that the rotation can try again.
                if session.market_events == 0 and mono - session.opened_ns > max(timeout_ns, floor_ns) * 2:
                    session.close_reason = "replacement delivered nothing"
                    session.scope.cancel()
                    return
                continue
            now = now_ns()
            stale: list[str] = []
            fastest: int | None = None
            for (symbol, data_type), (last, ewma, count) in session.clocks.items():
                if count < 2 or ewma <= 0:
                    continue
                threshold = max(int(ewma * factor), floor_ns)
                if fastest is None or threshold < fastest:
                    fastest = threshold
                if now - last > threshold:
                    stale.append(f"{symbol}:{data_type.value}")
            self.stats.stale_streams = stale
            if fastest is not None and now - session.last_frame_ns > fastest:
                quiet = (now - session.last_frame_ns) / 1e9
                self.stats.stalls += 1
                session.close_reason = f"stalled: nothing for {quiet:.1f} s (threshold {fastest / 1e9:.1f} s)"
                log.warning("%s: %s; reconnecting", self.id, session.close_reason)
                session.scope.cancel()
                return

    def statistics(self) -> dict[str, Any]:
        stats = self.stats.as_dict(now_ns())
        stats["subscribe_errors"] = dict(self.subscribe_errors)
        stats["rotating"] = self.pending_replacement is not None
        return stats


class ExchangeManager:
    """All connections and books of one exchange."""

    def __init__(
        self,
        connector: Connector,
        config: ExchangeConfig,
        runtime: RuntimeConfig,
        pipeline: ExchangePipeline,
        instruments: dict[tuple[str, str], Instrument],
    ) -> None:
        self.connector = connector
        self.exchange = connector.name
        self.config = config
        self.runtime = runtime
        self.pipeline = pipeline
        self.dispatcher = pipeline.dispatcher
        self._instrument_map = instruments
        limits = connector.limits
        self.budget = AttemptBudget(*limits.connect_attempts) if limits.connect_attempts else None
        self.workers: list[ConnectionWorker] = []
        self.symbols: dict[str, Instrument] = {}
        self.data_types: list[DataType] = list(config.data_types)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._lock = anyio.Lock()
        self.snapshot_failures = 0

    # --- start-up ------------------------------------------------------------------------------

    async def load(self) -> None:
        """Load the instrument table and check every configured symbol and data type."""
        timeout = self.runtime.http_timeout * (self.runtime.http_retries + 1) + 5.0
        try:
            with anyio.fail_after(timeout):
                table = await self.connector.load_instruments()
        except TimeoutError:
            raise FeederError(f"{self.exchange}: loading instruments timed out after {timeout:.0f} s") from None
        except Exception as exc:
            raise FeederError(f"{self.exchange}: cannot load instruments: {exc}") from exc
        for instrument in table:
            self._instrument_map[(self.exchange, instrument.symbol)] = instrument
        unsupported = [dt for dt in self.data_types if self.connector.supported_data_types
                       and dt not in self.connector.supported_data_types]
        if unsupported:
            offered = ", ".join(sorted(dt.value for dt in self.connector.supported_data_types))
            raise FeederError(
                f"{self.exchange}: data type(s) {', '.join(dt.value for dt in unsupported)} not offered "
                f"(offered: {offered})"
            )
        specs = self._resolve(self.config.symbols)
        limit = max(1, self.connector.limits.max_streams_per_connection)
        for start in range(0, len(specs), limit):
            self.workers.append(ConnectionWorker(self, len(self.workers), specs[start : start + limit]))

    def _resolve(self, symbols: Iterable[str]) -> list[StreamSpec]:
        specs: list[StreamSpec] = []
        for symbol in symbols:
            try:
                instrument = self.connector.instruments.require_tradable(symbol)
            except UnknownSymbolError as exc:
                raise FeederError(str(exc)) from None
            for data_type in self.data_types:
                try:
                    names = self.connector.streams_for(instrument, data_type)
                except ValueError as exc:
                    raise FeederError(f"{self.exchange} {symbol}: {exc}") from None
                specs.extend(StreamSpec(name, symbol, data_type) for name in names)
            self.symbols[symbol] = instrument
        return specs

    # --- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            for instrument in self.symbols.values():
                if DataType.ORDERBOOK in self.data_types:
                    self._start_book(instrument)
            for worker in self.workers:
                tg.start_soon(worker.run, name=f"connection {worker.id}")
            task_status.started()

    def _start_book(self, instrument: Instrument) -> None:
        entry = self.pipeline.add_book(instrument)
        assert self._task_group is not None
        if entry.scope is None:
            entry.scope = anyio.CancelScope()
            self._task_group.start_soon(self._book_task, entry, name=f"book {self.exchange}:{instrument.symbol}")

    async def _book_task(self, entry: BookEntry) -> None:
        """Fetch a snapshot whenever the book asks for one (first sync, after a gap, after a reconnect)."""
        assert entry.scope is not None
        sync = entry.sync
        policy = sync.policy
        backoff = Backoff(max(policy.snapshot_retry_delay, 0.05), 10.0)
        timeout = self.runtime.http_timeout * (self.runtime.http_retries + 1) + 5.0
        with entry.scope:
            while True:
                await entry.kick.wait()
                entry.kick = anyio.Event()
                while sync.wants_snapshot(now_ns()):
                    sync.snapshot_requested()
                    try:
                        with anyio.fail_after(timeout):
                            snapshot = await self.connector.fetch_snapshot(entry.instrument, self.connector.depth_limit())
                        if self.pipeline.books.get(entry.instrument.symbol) is not entry:
                            return  # unsubscribed meanwhile
                        out: list[Event] = []
                        outcome = sync.on_snapshot(snapshot, out)
                    except Exception as exc:  # HTTP, timeout, or a snapshot the connector got wrong
                        sync.snapshot_failed(now_ns())
                        self.snapshot_failures += 1
                        log.warning("%s %s: snapshot failed (%s: %s); retrying", self.exchange,
                                    entry.instrument.symbol, type(exc).__name__, exc)
                        await anyio.sleep(max(backoff.next_delay(), policy.snapshot_retry_delay))
                        continue
                    if out:
                        pending = self.pipeline.finish(out)
                        if pending:
                            await self.dispatcher.wait(pending)
                    if outcome is _STALE_OUTCOME:
                        await anyio.sleep(policy.snapshot_retry_delay)
                    else:
                        backoff.reset()

    # --- changes at run time -------------------------------------------------------------------

    async def add_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Subscribe more symbols (all configured data types) without a restart; returns those added."""
        async with self._lock:
            new = [s for s in dict.fromkeys(symbols) if s not in self.symbols]
            if not new:
                return []
            specs = self._resolve(new)  # raises FeederError before anything changes
            if self._task_group is not None and DataType.ORDERBOOK in self.data_types:
                for symbol in new:
                    self._start_book(self.symbols[symbol])
            remaining = list(specs)
            for worker in self.workers:
                if not remaining:
                    break
                take = min(worker.room, len(remaining))
                if take > 0:
                    await worker.add_streams(remaining[:take])
                    remaining = remaining[take:]
            limit = max(1, self.connector.limits.max_streams_per_connection)
            while remaining:
                worker = ConnectionWorker(self, len(self.workers), remaining[:limit])
                remaining = remaining[limit:]
                self.workers.append(worker)
                if self._task_group is not None:
                    self._task_group.start_soon(worker.run, name=f"connection {worker.id}")
            return new

    async def remove_symbols(self, symbols: Sequence[str]) -> list[str]:
        async with self._lock:
            gone = [s for s in dict.fromkeys(symbols) if s in self.symbols]
            for worker in self.workers:
                names = [spec.name for spec in worker.streams.values() if spec.symbol in gone]
                if names:
                    await worker.remove_streams(names)
            for symbol in gone:
                del self.symbols[symbol]
                self.pipeline.remove_book(symbol)
                self.pipeline.forget(symbol)
            return gone

    def statistics(self) -> dict[str, Any]:
        return {
            "symbols": sorted(self.symbols),
            "connections": [worker.id for worker in self.workers],
            "duplicates_dropped": self.pipeline.duplicates,
            "snapshot_failures": self.snapshot_failures,
        }
