"""The simulator server: the market engine served on loopback through each venue's wire codec.

One :class:`~marketfeeder.transport.server.LoopbackServer` per venue carries both its WebSocket
streams and its REST endpoints. A market task runs the engine, paced to ``rate`` records per second
of wall time (or as fast as clients read, for benchmarks), encodes each record once per venue for
the union of subscribed streams, and fans the frames out to per-connection outboxes, applying
faults on the way. Each connection has a sender task (drains its outbox), a reader task (routes
control messages to the venue) and a keeper task (the venue's rules: pings and pong timeout,
maximum lifetime with its shutdown notice, incoming message rate, scheduled disconnects)::

    async with SimServer({"binance": BinanceVenue}, seed=1, rate=2000) as sim:
        urls = sim.endpoints()["binance"]      # {"ws_url": ..., "rest_url": ...}
        await sim.serve_forever()
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import orjson

from marketfeeder.sim.engine import MarketEngine, default_instruments, instruments_for
from marketfeeder.sim.faults import (
    ABORT,
    ConnectionFaults,
    Delay,
    FaultCounters,
    FaultPlan,
    OutItem,
    RecordFaults,
)
from marketfeeder.sim.model import SimBookTicker, SimEvent, SimInstrument, SimTrade
from marketfeeder.sim.venue import HttpReply, HttpRequest, Venue, VenueRules, WsReject
from marketfeeder.transport.server import LoopbackServer, ServerWebSocket
from marketfeeder.transport.ws import WebSocketClosed

__all__ = ["SimServer", "sim_config_for", "venues_from_plugins"]

_log = logging.getLogger(__name__)

_RULE_FIELDS = frozenset(f.name for f in attrs.fields(VenueRules))
#: Engine clock rate when the server runs "as fast as possible". With an unpinned clock the engine is
#: also kept up with wall time at every batch, so records carry current times either way.
MAX_MODE_CLOCK_RATE = 200_000.0
#: Snapshot lag (in book updates) per venue name when neither options nor the venue class set one.
DEFAULT_SNAPSHOT_LAG = {"backpack": 3}


class _Conn:
    """A client connection (implements :class:`marketfeeder.sim.venue.SimConnection`)."""

    def __init__(self, conn_id: int, path: str, query: Mapping[str, str]) -> None:
        self.id = conn_id
        self.path = path
        self.query = query
        self.streams: set[str] = set()
        self.state: dict[str, Any] = {}
        self.ws: ServerWebSocket | None = None
        self.outbox: deque[OutItem] = deque()
        self.wakeup = anyio.Event()
        self.faults: ConnectionFaults | None = None
        self.opened = time.monotonic()
        self.frames = 0
        #: Why the server ended the connection (None: the client left or the server stopped).
        self.ended_by: str | None = None
        #: Arrival times of the latest incoming frames (max_incoming_per_second + 1 of them).
        self.arrivals: deque[float] = deque(maxlen=1)
        self.texts = 0  # text/binary messages read
        self.control_seen = 0  # pings and pongs accounted for


class _VenueState:
    def __init__(self, name: str, venue: Venue, rules: VenueRules, rest_rng: random.Random) -> None:
        self.name = name
        self.venue = venue
        self.rules = rules
        self.server: LoopbackServer | None = None
        self.conns: list[_Conn] = []
        #: The union of the open connections' streams: what the venue encodes.
        self.wanted: set[str] = set()
        # id(request headers) -> (headers, connection prepared by ws_accept); the handler picks it up.
        self.pending: dict[int, tuple[object, _Conn]] = {}
        self.next_conn = 0
        self.rest_rng = rest_rng
        self.tick_sizes: dict[str, str] = {}

    def update_wanted(self) -> None:
        wanted: set[str] = set()
        for conn in self.conns:
            wanted |= conn.streams
        self.wanted = wanted


def _rate_arg(rate: float | str) -> float:
    if isinstance(rate, str):
        if rate.strip().lower() in ("max", "0"):
            return 0.0
        try:
            rate = float(rate)
        except ValueError:
            raise ValueError(f"rate must be records per second or 'max', not {rate!r}") from None
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a non-negative number of records per second, not {rate!r}")
    return float(rate)


class SimServer:
    """Serve a seeded market on loopback, one port per venue: ``async with SimServer(...) as sim:``.

    ``venues``: name -> :class:`Venue` subclass (what ``marketfeeder_register_venues`` collected).
    ``rate``: market records per second (all venues together); ``0`` or ``"max"`` runs as fast as the
    clients read. ``symbols``: restrict every venue to these normalized symbols (each must be listed by
    some venue). ``faults``: a :class:`FaultPlan` or its spec string. ``venue_options[name]`` goes to the
    venue's constructor; the server itself reads from it :class:`VenueRules` field names (or a
    ``"rules"`` dict of them) to override the venue's rules for this run, ``snapshot_lag_updates``
    (REST snapshots that many book updates old; default: the venue class's ``snapshot_lag_updates``
    attribute, else 3 for ``backpack`` and 0 for others), ``instruments`` (a list of
    :class:`SimInstrument`) or ``symbols`` (normalized symbols, unknown ones get a generic instrument),
    and ``clock_offset_ms`` (the venue's clock runs that far ahead of the market's, negative: behind;
    every time it prints, streamed or REST, carries the skew).
    ``port``: 0 picks free ports; N serves the venues on N, N+1, ... in the order given.
    ``autostart=False`` keeps the market still until :meth:`start_market` (reproducible frame
    sequences: connect and subscribe first). ``engine_options`` go to :class:`MarketEngine`.
    """

    def __init__(
        self,
        venues: Mapping[str, type[Venue]],
        *,
        seed: int = 0,
        rate: float | str = 1_000.0,
        symbols: Sequence[str] | None = None,
        faults: FaultPlan | str | None = None,
        venue_options: Mapping[str, Mapping[str, Any]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_ns: int | None = None,
        autostart: bool = True,
        batch: int = 256,
        max_outbox: int = 100_000,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not venues:
            raise ValueError("SimServer needs at least one venue")
        options = {name: dict(venue_options.get(name, {})) for name in venues} if venue_options else {}
        if venue_options:
            unknown = sorted(set(venue_options) - set(venues))
            if unknown:
                raise ValueError(f"venue_options for venues not served: {', '.join(unknown)}")
        self.rate = _rate_arg(rate)
        self.seed = seed
        self.host = host
        self.port = port
        self.faults = FaultPlan.parse(faults) if isinstance(faults, str) else faults or FaultPlan()
        self.counters = FaultCounters()
        self._fault_seed = self.seed if self.faults.seed is None else self.faults.seed
        self._batch = max(1, batch)
        self._max_outbox = max_outbox
        self._stats: dict[str, int] = {
            "frames_sent": 0,
            "replies_sent": 0,
            "connections": 0,
            "rejected": 0,
            "http_requests": 0,
            "venue_errors": 0,
            "pong_timeout": 0,
            "rate_limited": 0,
            "lifetime": 0,
            "shutdown_notices": 0,
            "slow_consumer": 0,
            "stalled_frames": 0,
        }

        instruments: dict[str, list[SimInstrument]] = {}
        for name in venues:
            listed = options.get(name, {}).get("instruments")
            listed_symbols = options.get(name, {}).get("symbols")
            if listed is not None:
                instruments[name] = list(listed)
            elif listed_symbols is not None:
                instruments[name] = instruments_for(name, list(listed_symbols))
            else:
                instruments[name] = default_instruments(name)
        if symbols is not None:
            wanted = set(symbols)
            known = {i.symbol for insts in instruments.values() for i in insts}
            missing = sorted(wanted - known)
            if missing:
                raise ValueError(
                    f"symbols not listed by any venue: {', '.join(missing)} (listed: {', '.join(sorted(known))})"
                )
            instruments = {v: [i for i in insts if i.symbol in wanted] for v, insts in instruments.items()}
        lags: dict[str, int] = {}
        for name, cls in venues.items():
            lag = options.get(name, {}).get("snapshot_lag_updates")
            if lag is None:
                lag = getattr(cls, "snapshot_lag_updates", DEFAULT_SNAPSHOT_LAG.get(name, 0))
            lags[name] = int(lag or 0)
        engine_kwargs = dict(engine_options or {})
        engine_kwargs.setdefault("snapshot_lag_updates", lags)
        clock_offsets = {
            name: opts["clock_offset_ms"] for name, opts in options.items() if "clock_offset_ms" in opts
        }
        if clock_offsets:
            engine_kwargs["clock_offset_ms"] = {**engine_kwargs.get("clock_offset_ms", {}), **clock_offsets}
        self.engine = MarketEngine(
            seed,
            instruments,
            list(venues),
            rate=self.rate or MAX_MODE_CLOCK_RATE,
            start_ns=time.time_ns() if start_ns is None else start_ns,
            **engine_kwargs,
        )

        self._venues: dict[str, _VenueState] = {}
        for name, cls in venues.items():
            opts = options.get(name, {})
            venue = cls(self.engine.view(name), opts)
            rules = venue.rules
            overrides = {k: v for k, v in opts.items() if k in _RULE_FIELDS}
            overrides.update(opts.get("rules", {}))
            bad = sorted(set(overrides) - _RULE_FIELDS)
            if bad:
                raise ValueError(f"venue_options[{name!r}]['rules']: unknown rule(s) {', '.join(bad)}")
            if overrides:
                rules = attrs.evolve(rules, **overrides)
                # The venue answers stream limits itself: it must see the same numbers.
                setattr(venue, "rules", rules)  # noqa: B010
            state = _VenueState(name, venue, rules, random.Random(f"{self._fault_seed}:{name}:rest"))
            state.tick_sizes = {i.symbol: i.tick_size for i in self.engine.instruments(name)}
            self._venues[name] = state
        self._record_faults = (
            RecordFaults(self.faults, self.counters, f"{self._fault_seed}:records")
            if self.faults.record_faults
            else None
        )
        self._frame_faults = self.faults.frame_faults
        #: Unpinned clock: records carry wall-clock times, also after a pause.
        self._live_clock = start_ns is None
        self._tg: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._paused = not autostart
        self._resume: anyio.Event | None = None  # made when the market task waits
        self._running = False

    # --- public ----------------------------------------------------------------------------------

    @property
    def venues(self) -> dict[str, Venue]:
        return {name: state.venue for name, state in self._venues.items()}

    def rules(self, venue: str) -> VenueRules:
        """The rules enforced on ``venue`` in this run (the venue's own, with overrides)."""
        return self._venues[venue].rules

    def endpoints(self) -> dict[str, dict[str, str]]:
        """``{venue: {"ws_url": ..., "rest_url": ...}}`` (once started)."""
        out: dict[str, dict[str, str]] = {}
        for name, state in self._venues.items():
            if state.server is None:
                raise RuntimeError("SimServer is not running: use `async with SimServer(...) as sim:`")
            out[name] = {"ws_url": state.server.ws_url, "rest_url": state.server.http_url}
        return out

    def endpoint_lines(self) -> list[str]:
        """One JSON line per venue, ``{"venue": ..., "ws_url": ..., "rest_url": ...}`` (``sim serve``)."""
        return [orjson.dumps({"venue": name, **urls}).decode() for name, urls in self.endpoints().items()]

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._stats)
        stats["open_connections"] = {name: len(s.conns) for name, s in self._venues.items()}
        stats["faults"] = self.counters.as_dict()
        stats["engine"] = self.engine.statistics()
        return stats

    def connections(self, venue: str) -> list[_Conn]:
        """The open connections of ``venue`` (their ``streams``, ``frames`` and ``state``)."""
        return list(self._venues[venue].conns)

    def start_market(self) -> None:
        """Start (or resume) the market: made with ``autostart=False``, or after :meth:`pause_market`."""
        self._paused = False
        if self._resume is not None:
            self._resume.set()

    def clear_faults(self) -> None:
        """Inject no more faults from now on (REST, frames and records); the counters keep what was
        injected. Tests use it to let a client settle before comparing its state with the market."""
        self.faults = FaultPlan()
        self._record_faults = None
        self._frame_faults = False
        for state in self._venues.values():
            for conn in state.conns:
                conn.faults = None

    def pause_market(self) -> None:
        """Freeze the market after the current batch (connections stay open; tests compare books)."""
        self._paused = True

    @property
    def market_running(self) -> bool:
        return not self._paused

    async def serve_forever(self) -> None:
        await anyio.sleep_forever()

    async def __aenter__(self) -> SimServer:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            for index, state in enumerate(self._venues.values()):
                server = LoopbackServer(
                    ws_handler=self._ws_handler(state),
                    http_handler=self._http_handler(state),
                    ws_accept=self._ws_accept(state),
                    host=self.host,
                    port=self.port + index if self.port else 0,
                )
                await stack.enter_async_context(server)
                state.server = server
            # Innermost, so the market stops before the servers close their connections.
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(self._run_market)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            for state in self._venues.values():
                state.server = None
            raise
        self._tg = tg
        self._stack = stack
        self._running = True
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        tg, self._tg = self._tg, None
        self._running = False
        if stack is None:
            return
        if tg is not None:
            tg.cancel_scope.cancel()
        try:
            # The body's own exception propagates by itself; the task groups need not wrap it.
            await stack.__aexit__(None, None, None)
        finally:
            for state in self._venues.values():
                state.server = None

    # --- market ----------------------------------------------------------------------------------

    async def _wait_running(self) -> bool:
        """Wait while paused; True when the market was paused (pacing restarts from now)."""
        if not self._paused:
            return False
        while self._paused:
            self._resume = anyio.Event()
            await self._resume.wait()
        return True

    async def _run_market(self) -> None:
        await self._wait_running()
        engine = self.engine
        step, dispatch = engine.step, self._dispatch
        batch = self._batch
        if self.rate == 0:
            while True:
                await self._wait_running()
                await self._backpressure()
                if not any(s.wanted for s in self._venues.values()):
                    await anyio.sleep(0.005)  # nobody listens: do not spin
                    continue
                if self._live_clock:
                    engine.skip_to(time.time_ns())
                n = 0
                while n < batch:
                    records = step()
                    dispatch(records)
                    n += len(records)
                self._wake_all()
                await anyio.lowlevel.checkpoint()
        ns_per_record = 1e9 / self.rate
        if self._live_clock:
            engine.skip_to(time.time_ns())
        t0 = time.monotonic_ns()
        sim0 = engine.now_ns()
        while True:
            if await self._wait_running():
                if self._live_clock:
                    engine.skip_to(time.time_ns())
                t0, sim0 = time.monotonic_ns(), engine.now_ns()
            due = time.monotonic_ns() - t0
            n = 0
            # Generate what is due (bounded per turn so sender tasks keep up).
            while engine.now_ns() - sim0 <= due and n < 4 * batch:
                records = step()
                dispatch(records)
                n += len(records)
            self._check_outboxes()
            self._wake_all()
            if n >= 4 * batch:
                await anyio.lowlevel.checkpoint()
            else:
                ahead = (engine.now_ns() - sim0 - due) / 1e9
                await anyio.sleep(min(0.05, max(0.001, ahead, ns_per_record / 1e9)))

    async def _backpressure(self) -> None:
        """In "max" mode, wait while some connection has a long queue (the client reads slower)."""
        high = 4 * self._batch
        while True:
            busy = [c for s in self._venues.values() for c in s.conns if len(c.outbox) > high]
            if not busy:
                return
            await anyio.sleep(0.0005)

    def _wake_all(self) -> None:
        for state in self._venues.values():
            for conn in state.conns:
                if conn.outbox:
                    conn.wakeup.set()

    def _dispatch(self, records: list[tuple[str, SimEvent]]) -> None:
        """Encode records and queue the frames for every subscribed connection (sync hot path)."""
        venues = self._venues
        record_faults = self._record_faults
        frame_faults = self._frame_faults
        now = time.monotonic()
        for venue_name, record in records:
            state = venues[venue_name]
            if not state.wanted:
                continue
            fault = None
            if record_faults is not None and isinstance(record, SimBookTicker | SimTrade):
                record, fault = record_faults.apply(record, state.tick_sizes[record.symbol])
            venue = state.venue
            try:
                frames = venue.encode(record, state.wanted)
                if not frames:
                    continue
                if fault is not None:
                    self.counters.add(fault)
                wrap = venue.wrap
                for frame in frames:
                    stream = frame.stream
                    for conn in state.conns:
                        if stream in conn.streams and conn.ended_by is None:
                            if frame_faults and conn.faults is not None:
                                conn.faults.apply(conn, frame, wrap, conn.outbox, now)
                            else:
                                conn.outbox.append(wrap(conn, frame))
            except Exception:
                # A venue bug must not stop the market for everyone: count it, log the first few.
                self._stats["venue_errors"] += 1
                if self._stats["venue_errors"] <= 10:
                    _log.exception("venue %s failed to encode %r", venue_name, record)

    # --- WebSocket -------------------------------------------------------------------------------

    def _ws_accept(self, state: _VenueState) -> Any:
        def accept(request: HttpRequest) -> HttpReply | None:
            state.next_conn += 1
            conn = _Conn(state.next_conn, request.path, request.query)
            try:
                state.venue.on_connect(conn)
            except WsReject as exc:
                self._stats["rejected"] += 1
                body = orjson.dumps({"code": exc.status, "msg": exc.message})
                return HttpReply(exc.status, body)
            if len(state.pending) > 1_000:  # handshakes that never completed
                state.pending.pop(next(iter(state.pending)))
            state.pending[id(request.headers)] = (request.headers, conn)
            return None

        return accept

    def _ws_handler(self, state: _VenueState) -> Any:
        async def handler(ws: ServerWebSocket) -> None:
            entry = state.pending.pop(id(ws.headers), None)
            if entry is not None:
                conn = entry[1]
            else:  # accept was bypassed: connect now
                state.next_conn += 1
                conn = _Conn(state.next_conn, ws.path, ws.query)
                try:
                    state.venue.on_connect(conn)
                except WsReject as exc:
                    await ws.close(1008, exc.message)
                    return
            conn.ws = ws
            conn.opened = time.monotonic()
            limit = state.rules.max_incoming_per_second
            if limit is not None:
                conn.arrivals = deque(maxlen=int(limit) + 1)
            if self._frame_faults:
                conn.faults = ConnectionFaults(
                    self.faults, self.counters, f"{self._fault_seed}:{state.name}:{conn.id}", conn.opened
                )
            self._stats["connections"] += 1
            state.conns.append(conn)
            state.update_wanted()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._sender, state, conn)
                    tg.start_soon(self._keeper, state, conn)
                    await self._reader(state, conn)
                    if conn.ended_by is None:
                        tg.cancel_scope.cancel()
                    # else: the sender is closing the connection for a rule violation
            except* WebSocketClosed:
                pass
            finally:
                if conn.faults is not None:
                    self._stats["stalled_frames"] += conn.faults.stalled_frames
                state.conns.remove(conn)
                state.update_wanted()

        return handler

    async def _reader(self, state: _VenueState, conn: _Conn) -> None:
        ws = conn.ws
        assert ws is not None
        venue = state.venue
        limit = state.rules.max_incoming_per_second
        while True:
            try:
                message = await ws.receive()
            except WebSocketClosed:
                return
            conn.texts += 1
            if limit is not None and self._over_rate(conn, 1):
                return
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            try:
                replies = venue.on_message(conn, text)
            except Exception:
                self._stats["venue_errors"] += 1
                _log.exception("venue %s failed on a message from connection %d", state.name, conn.id)
                continue
            state.update_wanted()
            if replies:
                conn.outbox.extend(replies)
                self._stats["replies_sent"] += len(replies)
                conn.wakeup.set()

    def _over_rate(self, conn: _Conn, frames: int) -> bool:
        """Note ``frames`` incoming frames now; True (and the client is disconnected) when more than
        ``max_incoming_per_second`` arrived within one second. Text messages are stamped as they
        are read; control frames (pings, pongs), which the transport answers itself, when the
        keeper notices them (at most one keeper tick late)."""
        window = conn.arrivals
        now = time.monotonic()
        for _ in range(min(frames, window.maxlen or 1)):
            window.append(now)
        if len(window) == window.maxlen and now - window[0] < 1.0:
            self._end(conn, "rate_limited")
            return True
        return False

    def _control_frames(self, conn: _Conn) -> int:
        """Pings and pongs received since the last call."""
        ws = conn.ws
        assert ws is not None
        seen = ws.pings_received + ws.pongs_received
        new = seen - conn.control_seen
        conn.control_seen = seen
        return max(0, new)

    def _end(self, conn: _Conn, reason: str) -> None:
        """Close ``conn`` for a rule violation (counted under ``reason``); the sender does the I/O."""
        if conn.ended_by is not None:
            return
        conn.ended_by = reason
        self._stats[reason] = self._stats.get(reason, 0) + 1
        conn.outbox.clear()
        conn.wakeup.set()

    async def _sender(self, state: _VenueState, conn: _Conn) -> None:
        ws = conn.ws
        assert ws is not None
        outbox = conn.outbox
        while True:
            await conn.wakeup.wait()
            conn.wakeup = anyio.Event()
            if conn.ended_by is not None:
                await self._close_for(conn, conn.ended_by)
                return
            while outbox:
                texts: list[str] = []
                marker: OutItem | None = None
                while outbox:
                    item = outbox.popleft()
                    if isinstance(item, str):
                        texts.append(item)
                        if len(texts) >= 512:
                            break
                    else:
                        marker = item
                        break
                if texts:
                    await ws.send_many(texts)
                    conn.frames += len(texts)
                    self._stats["frames_sent"] += len(texts)
                if marker is ABORT:
                    conn.ended_by = "drop_conn"
                    await ws.abort()
                    raise WebSocketClosed(1006, "dropped by fault injection")
                if isinstance(marker, Delay):
                    await anyio.sleep(marker.seconds)
                if conn.ended_by is not None:
                    await self._close_for(conn, conn.ended_by)
                    return

    def _check_outboxes(self) -> None:
        """Paced mode: a client that lets ``max_outbox`` frames pile up is cut (as exchanges do)."""
        for state in self._venues.values():
            for conn in state.conns:
                if len(conn.outbox) > self._max_outbox and conn.ended_by is None:
                    self._end(conn, "slow_consumer")

    async def _close_for(self, conn: _Conn, reason: str) -> None:
        ws = conn.ws
        assert ws is not None
        if reason == "pong_timeout":
            await ws.abort()  # a peer that does not answer pings will not answer a close either
        elif reason == "rate_limited":
            await ws.close(1008, "too many messages")
        elif reason == "slow_consumer":
            await ws.close(1008, "slow consumer")
        elif reason in ("lifetime", "disconnect_every"):
            await ws.close(1001, "going away")
        else:
            await ws.close(1000, reason)
        raise WebSocketClosed(ws.close_code, reason)

    async def _keeper(self, state: _VenueState, conn: _Conn) -> None:
        """Enforce the venue's rules and scheduled faults on one connection."""
        ws = conn.ws
        assert ws is not None
        rules = state.rules
        plan = self.faults
        opened = conn.opened
        interval = rules.ping_interval
        lifetime = rules.max_lifetime
        notice_at = (
            opened + lifetime - rules.shutdown_notice_before
            if lifetime is not None and rules.shutdown_notice_before is not None
            else None
        )
        disconnect_at = opened + plan.disconnect_every if plan.disconnect_every is not None else None
        next_ping = opened + interval if interval is not None else None
        unanswered_since: int | None = None  # wall ns of the oldest ping not answered yet
        limit = rules.max_incoming_per_second
        candidates = [x for x in (interval, rules.pong_timeout, lifetime, plan.disconnect_every) if x]
        tick = min(0.25, max(0.005, min(candidates, default=1.0) / 10))
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            if disconnect_at is not None and now >= disconnect_at:
                self.counters.add("disconnect_every")
                conn.ended_by = "disconnect_every"
                conn.wakeup.set()
                return
            if lifetime is not None:
                if notice_at is not None and now >= notice_at:
                    notice_at = None
                    text = state.venue.shutdown_notice(self.engine.now_ns() + self.engine.clock_offset_ns(state.name))
                    if text is not None:
                        conn.outbox.append(text)
                        conn.wakeup.set()
                        self._stats["shutdown_notices"] += 1
                if now >= opened + lifetime:
                    self._end(conn, "lifetime")
                    return
            if limit is not None:
                control = self._control_frames(conn)
                if control and self._over_rate(conn, control):
                    return
            if next_ping is not None and interval is not None:
                last_pong = ws.last_pong_ns
                if unanswered_since is not None and last_pong is not None and last_pong >= unanswered_since:
                    unanswered_since = None
                if (
                    unanswered_since is not None
                    and time.time_ns() - unanswered_since > rules.pong_timeout * 1e9
                ):
                    self._end(conn, "pong_timeout")
                    # Drop it now: the sender may be stuck writing to a peer that stopped reading.
                    await ws.abort()
                    return
                if now >= next_ping:
                    next_ping = now + interval
                    sent = time.time_ns()
                    try:
                        await ws.ping(str(sent).encode())
                    except WebSocketClosed:
                        return
                    if unanswered_since is None:
                        unanswered_since = sent

    # --- REST ------------------------------------------------------------------------------------

    def _http_handler(self, state: _VenueState) -> Any:
        plan = self.faults
        paths = state.venue.fault_paths
        rest_faults = plan.rest_faults

        async def handle(request: HttpRequest) -> HttpReply:
            self._stats["http_requests"] += 1
            if rest_faults and (not paths or request.path.startswith(paths)):
                rng = state.rest_rng
                if plan.rest_500 and rng.random() < plan.rest_500:
                    self.counters.add("rest_500")
                    return HttpReply(500, b'{"code":-1000,"msg":"simulated internal error"}')
                if plan.rest_429 and rng.random() < plan.rest_429:
                    self.counters.add("rest_429")
                    return HttpReply(
                        429,
                        b'{"code":-1003,"msg":"simulated rate limit"}',
                        headers={"Retry-After": str(plan.retry_after)},
                    )
                if plan.rest_timeout and rng.random() < plan.rest_timeout:
                    self.counters.add("rest_timeout")
                    await anyio.sleep(plan.rest_delay)
                    return HttpReply(504, b'{"code":-1007,"msg":"simulated timeout"}')
            try:
                return state.venue.handle_http(request)
            except Exception:
                self._stats["venue_errors"] += 1
                _log.exception("venue %s failed on %s %s", state.name, request.method, request.path)
                return HttpReply(500, b'{"code":-1000,"msg":"venue error"}')

        return handle


def venues_from_plugins(pm: Any, names: Sequence[str] | None = None) -> dict[str, type[Venue]]:
    """The venues registered through ``marketfeeder_register_venues`` (all, or ``names`` in that
    order); ``ValueError`` names an unknown venue and lists the installed ones."""
    from marketfeeder.plugins import collect

    registry = collect(pm, "marketfeeder_register_venues", "venue")
    if names is None:
        return {name: registry[name] for name in registry.names()}
    missing = [n for n in names if n not in registry]
    if missing:
        installed = ", ".join(registry.names()) or "none"
        raise ValueError(f"no simulated venue named {', '.join(missing)} (installed: {installed})")
    return {name: registry[name] for name in names}


def sim_config_for(sim: SimServer, exchanges: Sequence[str] | None = None) -> dict[str, Any]:
    """Config overrides pointing connectors at ``sim``:
    ``{"exchanges": {name: {"ws_url": ..., "rest_url": ...}}}`` for ``exchanges`` (default: every
    venue served). ``ValueError`` names an exchange the simulator does not serve."""
    endpoints = sim.endpoints()
    names = list(endpoints) if exchanges is None else list(exchanges)
    missing = [n for n in names if n not in endpoints]
    if missing:
        raise ValueError(
            f"the simulator serves no venue for {', '.join(missing)} (serving: {', '.join(endpoints)})"
        )
    return {
        "exchanges": {
            n: {"ws_url": endpoints[n]["ws_url"], "rest_url": endpoints[n]["rest_url"]} for n in names
        }
    }
