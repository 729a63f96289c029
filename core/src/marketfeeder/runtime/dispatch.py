"""Delivery: latest values, ring buffers, callbacks, ``stream()`` consumers and sinks.

:meth:`Dispatcher.deliver` is plain synchronous code on the per-message path. Each event finds its
*route* with one dict lookup on ``(exchange, symbol, event class)``; a route holds the ring buffer,
the stats and the subscribers that match it, computed once and refreshed only when a subscription
changes. Sync callbacks run inline, isolated and timed; async callbacks, streams and sinks each sit
behind their own :class:`~marketfeeder.runtime.buffers.EventQueue`. When a ``block`` queue is full,
``deliver`` returns the queues the producer must wait for (``await Dispatcher.wait(...)``) before it
produces more.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any

import anyio
import anyio.abc

from marketfeeder.clock import monotonic_ns, now_ns
from marketfeeder.models import BookState, BookStatus, DataType, Event, Gap, ValidationFailure
from marketfeeder.sinks.base import Sink

from .buffers import EventQueue, Overflow, QueueClosed, RingBuffer
from .stats import _LAST_BUCKET, _LINEAR, _N_BUCKETS, SymbolStats

__all__ = ["Dispatcher", "EventStream", "SinkRunner", "Subscription"]

log = logging.getLogger("marketfeeder.runtime")

Callback = Callable[[Event], Any]
TypeSelector = DataType | type[Event] | str

_STATUS = DataType.STATUS
_RESYNCING = BookStatus.RESYNCING
_perf_ns = time.perf_counter_ns


def _resolve_type(selector: TypeSelector | None) -> tuple[DataType | None, type[Event] | None]:
    if selector is None:
        return None, None
    if isinstance(selector, DataType):
        return selector, None
    if isinstance(selector, str):
        return DataType.parse(selector), None
    if isinstance(selector, type) and issubclass(selector, Event):
        return None, selector
    raise TypeError(f"data type must be a DataType, its name or an event class, got {selector!r}")


class _Filter:
    """Exchange / symbol / type selectors; None means any."""

    __slots__ = ("classes", "data_types", "exchanges", "symbols")

    def __init__(
        self,
        exchanges: Collection[str] | None,
        symbols: Collection[str] | None,
        types: Iterable[TypeSelector] | None,
    ) -> None:
        self.exchanges = frozenset(exchanges) if exchanges is not None else None
        self.symbols = frozenset(symbols) if symbols is not None else None
        if types is None:
            self.data_types: frozenset[DataType] | None = None
            self.classes: tuple[type[Event], ...] | None = None
        else:
            data_types: set[DataType] = set()
            classes: list[type[Event]] = []
            for selector in types:
                data_type, cls = _resolve_type(selector)
                if data_type is not None:
                    data_types.add(data_type)
                if cls is not None:
                    classes.append(cls)
            self.data_types = frozenset(data_types)
            self.classes = tuple(classes)

    def matches(self, exchange: str, symbol: str, cls: type[Event]) -> bool:
        if self.exchanges is not None and exchange not in self.exchanges:
            return False
        if self.symbols is not None and symbol not in self.symbols:
            return False
        if self.data_types is None:
            return True
        assert self.classes is not None
        return cls.data_type in self.data_types or issubclass(cls, self.classes)


class Subscription:
    """A callback registered with :meth:`Feeder.subscribe`; ``close()`` removes it."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        exchange: str | None,
        symbol: str | None,
        data_type: TypeSelector | None,
        callback: Callback,
    ) -> None:
        self._dispatcher = dispatcher
        self.exchange = exchange
        self.symbol = symbol
        self.data_type = data_type
        self.callback = callback
        self.filter = _Filter(
            None if exchange is None else (exchange,),
            None if symbol is None else (symbol,),
            None if data_type is None else (data_type,),
        )
        self.is_async = inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004 - an async __call__ makes an async callback
        )
        self.name = getattr(callback, "__qualname__", None) or repr(callback)
        self.queue: EventQueue | None = None
        self.calls = 0
        self.errors = 0
        self.slow = 0
        self.max_ms = 0.0
        self.closed = False

    def close(self) -> None:
        self._dispatcher.unsubscribe(self)

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "callback": self.name,
            "async": self.is_async,
            "calls": self.calls,
            "errors": self.errors,
            "slow": self.slow,
            "max_ms": round(self.max_ms, 3),
            "closed": self.closed,
        }
        if self.queue is not None:
            stats["queue"] = self.queue.statistics()
        return stats

    def __repr__(self) -> str:
        return f"<Subscription {self.exchange or '*'}:{self.symbol or '*'}:{self.data_type or '*'} -> {self.name}>"


class EventStream:
    """The async iterator ``Feeder.stream()`` yields: bounded, with its own overflow policy."""

    def __init__(self, queue: EventQueue, event_filter: _Filter) -> None:
        self.queue = queue
        self.filter = event_filter

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.queue.get()
        except QueueClosed:
            raise StopAsyncIteration from None

    async def receive(self) -> Event:
        """The next event; raises ``anyio.EndOfStream`` when the feeder stopped."""
        try:
            return await self.queue.get()
        except QueueClosed:
            raise anyio.EndOfStream from None

    def statistics(self) -> dict[str, Any]:
        return self.queue.statistics()


class SinkRunner:
    """One sink behind its own bounded queue; batches, flushes, and stops alone if the sink fails."""

    def __init__(
        self,
        name: str,
        sink: Sink,
        *,
        queue_size: int,
        overflow: Overflow,
        batch_size: int,
        flush_interval: float,
        on_drop: Callable[[Event], None] | None = None,
    ) -> None:
        self.name = name
        self.sink = sink
        self.queue = EventQueue(name, queue_size, overflow, on_drop=on_drop)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.written = 0
        self.batches = 0
        self.flushes = 0
        self.error: str | None = None
        self.opened = False
        self.closed = False
        self.on_failure: Callable[[SinkRunner], None] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    async def open(self) -> None:
        await self.sink.open()
        self.opened = True

    async def run(self) -> None:
        """Write batches until the queue is closed and drained, then flush and close the sink."""
        last_flush = monotonic_ns()
        interval_ns = int(self.flush_interval * 1e9)
        try:
            while True:
                try:
                    batch = await self.queue.get_batch(self.batch_size, self.flush_interval)
                except QueueClosed:
                    break
                await self.sink.write_batch(batch)
                self.written += len(batch)
                self.batches += 1
                now = monotonic_ns()
                if not len(self.queue) or now - last_flush >= interval_ns:
                    await self.sink.flush()
                    self.flushes += 1
                    last_flush = now
            if not self.failed:
                await self.sink.flush()
                self.flushes += 1
        except Exception as exc:
            self._fail(exc)
        finally:
            await self.close()

    def _fail(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        log.error("sink %s failed and was stopped: %s", self.name, self.error, exc_info=exc)
        self.queue.kill()
        if self.on_failure is not None:
            self.on_failure(self)

    async def close(self) -> None:
        if self.closed or not self.opened:
            return
        self.closed = True
        with anyio.CancelScope(shield=True):
            try:
                await self.sink.close()
            except Exception as exc:
                if self.error is None:
                    self.error = f"close: {type(exc).__name__}: {exc}"
                log.error("sink %s failed to close: %s", self.name, exc)

    def statistics(self) -> dict[str, Any]:
        stats = self.queue.statistics()
        return {
            "written": self.written,
            "batches": self.batches,
            "flushes": self.flushes,
            "failed": self.failed,
            "error": self.error,
            "lag": stats["queued"] + stats["parked"],
            "queue": stats,
        }


class _Route:
    """Where events of one (exchange, symbol, event class) go."""

    __slots__ = (
        "callbacks",
        "cls",
        "count",
        "exchange",
        "queues",
        "ring",
        "ring_append",
        "sink_queues",
        "stats",
        "status",
        "symbol",
        "version",
    )

    def __init__(self, exchange: str, symbol: str, cls: type[Event], ring: RingBuffer, stats: SymbolStats | None) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.cls = cls
        self.ring = ring
        self.ring_append = ring.appender()
        self.stats = stats
        self.status = cls.data_type is _STATUS
        self.callbacks: list[Subscription] = []
        self.queues: list[EventQueue] = []
        self.sink_queues: list[EventQueue] = []
        self.version = -1
        self.count = 0


class Dispatcher:
    """The delivery hub shared by every producer of one feeder."""

    def __init__(self, *, buffer_size: int, subscriber_queue_size: int, slow_callback_ms: float) -> None:
        self.buffer_size = buffer_size
        self.subscriber_queue_size = subscriber_queue_size
        self._slow_ns = int(slow_callback_ms * 1e6)
        self._routes: dict[tuple[str, str, type[Event]], _Route] = {}
        self._rings: dict[tuple[str, str, DataType], RingBuffer] = {}
        self.symbol_stats: dict[tuple[str, str], SymbolStats] = {}
        self._subscriptions: list[Subscription] = []
        self._streams: list[EventStream] = []
        self.sinks: list[SinkRunner] = []
        self._version = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self.closed = False
        self.callback_errors = 0
        self._last_error_log = 0

    # --- wiring ------------------------------------------------------------------------------

    def attach(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start delivering to async callbacks (their tasks run in ``task_group``)."""
        self._task_group = task_group
        for sub in self._subscriptions:
            if sub.is_async and sub.queue is not None:
                task_group.start_soon(self._run_async_callback, sub, name=f"callback {sub.name}")

    def add_sink(self, runner: SinkRunner) -> None:
        self.sinks.append(runner)
        if runner.queue.on_drop is None:
            runner.queue.on_drop = self._count_drop
        runner.on_failure = lambda _runner: self._changed()
        self._changed()

    def _changed(self) -> None:
        self._version += 1

    def subscribe(
        self, exchange: str | None, symbol: str | None, data_type: TypeSelector | None, callback: Callback
    ) -> Subscription:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        if self.closed:
            raise RuntimeError("the feeder has stopped; cannot subscribe")
        sub = Subscription(self, exchange, symbol, data_type, callback)
        if sub.is_async:
            # Async callbacks never see Gap markers for their own drops: they are counted instead.
            sub.queue = EventQueue(f"callback:{sub.name}", self.subscriber_queue_size, "drop_oldest", gap_markers=False)
            if self._task_group is not None:
                self._task_group.start_soon(self._run_async_callback, sub, name=f"callback {sub.name}")
        self._subscriptions.append(sub)
        self._changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.closed = True
        try:
            self._subscriptions.remove(sub)
        except ValueError:
            pass
        if sub.queue is not None:
            sub.queue.kill()
        self._changed()

    def open_stream(
        self,
        exchanges: Collection[str] | None,
        symbols: Collection[str] | None,
        types: Iterable[TypeSelector] | None,
        buffer: int,
        overflow: Overflow,
    ) -> EventStream:
        if self.closed:
            raise RuntimeError("the feeder has stopped; cannot open a stream")
        queue = EventQueue(f"stream#{len(self._streams)}", buffer, overflow, on_drop=self._count_drop)
        stream = EventStream(queue, _Filter(exchanges, symbols, types))
        self._streams.append(stream)
        self._changed()
        return stream

    def close_stream(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
        stream.queue.kill()
        self._changed()

    def close(self) -> None:
        """End every stream and async callback queue (sinks are closed by the feeder's drain)."""
        self.closed = True
        for stream in self._streams:
            stream.queue.close()
        for sub in self._subscriptions:
            if sub.queue is not None:
                sub.queue.close()

    # --- reading -----------------------------------------------------------------------------

    def latest(self, exchange: str, symbol: str, data_type: DataType, n: int) -> list[Event]:
        ring = self._rings.get((exchange, symbol, data_type))
        return [] if ring is None else ring.newest(n)

    def stats_for(self, exchange: str, symbol: str) -> SymbolStats:
        key = (exchange, symbol)
        stats = self.symbol_stats.get(key)
        if stats is None:
            stats = self.symbol_stats[key] = SymbolStats()
        return stats

    def counts_by_type(self) -> dict[tuple[str, str], dict[str, int]]:
        """Events delivered per (exchange, symbol) and event class name."""
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for route in self._routes.values():
            if route.count:
                counts.setdefault((route.exchange, route.symbol), {})[route.cls.__name__] = route.count
        return counts

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    def streams(self) -> list[EventStream]:
        return list(self._streams)

    # --- per message -------------------------------------------------------------------------

    def _route(self, exchange: str, symbol: str, cls: type[Event]) -> _Route:
        key = (exchange, symbol, cls)
        route = self._routes.get(key)
        if route is None:
            ring_key = (exchange, symbol, cls.data_type)
            ring = self._rings.get(ring_key)
            if ring is None:
                ring = self._rings[ring_key] = RingBuffer(self.buffer_size)
            stats = self.stats_for(exchange, symbol) if symbol else None
            route = self._routes[key] = _Route(exchange, symbol, cls, ring, stats)
        self._refresh(route)
        return route

    def _refresh(self, route: _Route) -> None:
        exchange, symbol, cls = route.exchange, route.symbol, route.cls
        route.callbacks = [
            s for s in self._subscriptions if not s.is_async and s.filter.matches(exchange, symbol, cls)
        ]
        queues: list[EventQueue] = [
            s.queue
            for s in self._subscriptions
            if s.is_async and s.queue is not None and s.filter.matches(exchange, symbol, cls)
        ]
        queues.extend(st.queue for st in self._streams if st.filter.matches(exchange, symbol, cls))
        route.sink_queues = [runner.queue for runner in self.sinks if not runner.failed]
        queues.extend(route.sink_queues)
        route.queues = queues
        route.version = self._version

    def deliver(self, events: Sequence[Event], quarantined: Collection[int] = ()) -> list[EventQueue] | None:
        """Hand ``events`` to everything that wants them. Returns the full ``block`` queues the caller
        must ``await wait(...)`` for, or None. Indices in ``quarantined`` go to sinks only."""
        if quarantined:
            return self._deliver_some_quarantined(events, quarantined)
        # The per-message path: locals only, the latency histograms, the callback calls and the queue
        # puts inlined (same arithmetic as LatencyHistogram.record, _call and EventQueue.put_nowait).
        pending: list[EventQueue] | None = None
        routes = self._routes
        version = self._version
        now = now_ns()
        perf = _perf_ns
        for event in events:
            cls = event.__class__
            route = routes.get((event.exchange, event.symbol, cls))
            if route is None or route.version != version:
                route = self._route(event.exchange, event.symbol, cls)
            route.ring_append(event)
            route.count += 1
            stats = route.stats
            if stats is not None:
                if route.status:
                    self._status_stats(event, stats)
                else:
                    stats.message_count += 1
                    receive_ts = event.receive_ts
                    exchange_ts = event.exchange_ts
                    if exchange_ts is not None:
                        ns = receive_ts - exchange_ts
                        hist = stats.exchange_latency
                        if ns < _LINEAR:
                            hist.record(ns)
                        else:
                            shift = ns.bit_length() - 4
                            index = (shift << 3) + (ns >> shift)
                            hist._buckets[index if index < _N_BUCKETS else _LAST_BUCKET] += 1
                            hist.total_ns += ns
                            if ns > hist.max_ns:
                                hist.max_ns = ns
                    ns = now - receive_ts
                    hist = stats.delivery_latency
                    if ns < _LINEAR:
                        hist.record(ns)
                    else:
                        shift = ns.bit_length() - 4
                        index = (shift << 3) + (ns >> shift)
                        hist._buckets[index if index < _N_BUCKETS else _LAST_BUCKET] += 1
                        hist.total_ns += ns
                        if ns > hist.max_ns:
                            hist.max_ns = ns
            for sub in route.callbacks:
                start = perf()
                try:
                    sub.callback(event)
                except Exception as exc:
                    self._callback_failed(sub, exc, stats)
                elapsed = perf() - start
                sub.calls += 1
                if elapsed > self._slow_ns:
                    self._callback_slow(sub, elapsed)
            for queue in route.queues:
                # EventQueue.put_nowait inlined (its common case: open, room, nothing parked).
                items = queue._items
                if len(items) < queue._limit:
                    items.append(event)
                    queue.accepted += 1
                    if queue._readable is not None and len(items) >= queue._wake_at:
                        queue._wake_reader()
                elif not queue._put_slow(event):
                    if pending is None:
                        pending = [queue]
                    elif queue not in pending:
                        pending.append(queue)
        return pending

    def _deliver_some_quarantined(
        self, events: Sequence[Event], quarantined: Collection[int]
    ) -> list[EventQueue] | None:
        pending: list[EventQueue] | None = None
        routes = self._routes
        version = self._version
        now = now_ns()
        for index, event in enumerate(events):
            route = routes.get((event.exchange, event.symbol, event.__class__))
            if route is None or route.version != version:
                route = self._route(event.exchange, event.symbol, event.__class__)
            if index in quarantined:
                targets = route.sink_queues
            else:
                route.ring_append(event)
                route.count += 1
                stats = route.stats
                if stats is not None:
                    if route.status:
                        self._status_stats(event, stats)
                    else:
                        stats.message_count += 1
                        exchange_ts = event.exchange_ts
                        if exchange_ts is not None:
                            stats.exchange_latency.record(event.receive_ts - exchange_ts)
                        stats.delivery_latency.record(now - event.receive_ts)
                for sub in route.callbacks:
                    self._call(sub, event, stats)
                targets = route.queues
            for queue in targets:
                if not queue.put_nowait(event):
                    if pending is None:
                        pending = [queue]
                    elif queue not in pending:
                        pending.append(queue)
        return pending

    @staticmethod
    async def wait(pending: Iterable[EventQueue]) -> None:
        for queue in pending:
            await queue.wait_parked()

    async def deliver_wait(self, events: Sequence[Event], quarantined: Collection[int] = ()) -> None:
        pending = self.deliver(events, quarantined)
        if pending:
            await self.wait(pending)

    def publish_nowait(self, event: Event) -> None:
        """Deliver from a caller that cannot wait: full ``block`` queues keep a bounded overflow."""
        pending = self.deliver((event,))
        if pending:
            for queue in pending:
                queue.trim_parked()

    def _status_stats(self, event: Event, stats: SymbolStats) -> None:
        cls = event.__class__
        if cls is BookState:
            state = event.state  # type: ignore[attr-defined]
            stats.book_state = state.value
            if state is _RESYNCING:
                stats.resyncs += 1
        elif cls is Gap:
            if not event.reason.startswith("backpressure:"):  # type: ignore[attr-defined]
                stats.gaps += 1
        elif cls is ValidationFailure:
            check = event.check  # type: ignore[attr-defined]
            stats.validation_failures[check] = stats.validation_failures.get(check, 0) + 1

    def _call(self, sub: Subscription, event: Event, stats: SymbolStats | None) -> None:
        start = _perf_ns()
        try:
            sub.callback(event)
        except Exception as exc:
            self._callback_failed(sub, exc, stats)
        elapsed = _perf_ns() - start
        sub.calls += 1
        if elapsed > self._slow_ns:
            self._callback_slow(sub, elapsed)

    def _callback_failed(self, sub: Subscription, exc: Exception, stats: SymbolStats | None) -> None:
        sub.errors += 1
        self.callback_errors += 1
        if stats is not None:
            stats.callback_errors += 1
        self._log_callback_error(sub, exc)

    @staticmethod
    def _callback_slow(sub: Subscription, elapsed: int) -> None:
        sub.slow += 1
        ms = elapsed / 1e6
        if ms > sub.max_ms:
            sub.max_ms = ms

    def _log_callback_error(self, sub: Subscription, exc: BaseException) -> None:
        # One log line per second at most: a callback failing on every event must not flood the log.
        now = monotonic_ns()
        if now - self._last_error_log >= 1_000_000_000:
            self._last_error_log = now
            log.error("callback %s raised %s: %s (errors so far: %d)", sub.name, type(exc).__name__, exc,
                      sub.errors, exc_info=exc)

    def _count_drop(self, event: Event) -> None:
        if event.symbol:
            self.stats_for(event.exchange, event.symbol).dropped_by_backpressure += 1

    async def _run_async_callback(self, sub: Subscription) -> None:
        queue = sub.queue
        assert queue is not None
        callback: Callable[[Event], Awaitable[Any]] = sub.callback
        while True:
            try:
                event = await queue.get()
            except QueueClosed:
                return
            start = _perf_ns()
            try:
                await callback(event)
            except Exception as exc:
                sub.errors += 1
                self.callback_errors += 1
                if event.symbol:
                    self.stats_for(event.exchange, event.symbol).callback_errors += 1
                self._log_callback_error(sub, exc)
            elapsed = _perf_ns() - start
            sub.calls += 1
            if elapsed > self._slow_ns:
                sub.slow += 1
                sub.max_ms = max(sub.max_ms, elapsed / 1e6)

