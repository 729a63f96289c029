"""The :class:`Feeder`: what users embed.

``async with Feeder(config) as feeder:`` loads every enabled exchange's instruments, opens the sinks
and starts connections, order-book snapshot tasks, async callbacks, sink writers and strategies in
its own task group. Leaving the block stops the connections and strategies, drains everything
already accepted into every sink (within ``runtime.shutdown_timeout``, shielded from cancellation)
and closes them. The same code runs under asyncio, uvloop and trio (anyio only).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pluggy

from marketfeeder.book import BookSync
from marketfeeder.clock import now_ns
from marketfeeder.config import Config, SinkConfig, load_config
from marketfeeder.connector import Connector
from marketfeeder.models import BookStatus, DataType, Event, Instrument, Level
from marketfeeder.plugins import call_lifecycle, collect, get_plugin_manager
from marketfeeder.sinks.base import Sink
from marketfeeder.source import Source
from marketfeeder.timesync import ClockSync
from marketfeeder.transport.http import HttpClient

from .buffers import Overflow
from .connections import ExchangeManager, FeederError
from .dispatch import Callback, Dispatcher, EventStream, SinkRunner, Subscription, TypeSelector
from .ingest import SourceIngest
from .pipeline import ExchangePipeline

__all__ = ["BookView", "Feeder", "FeederError"]

log = logging.getLogger("marketfeeder.runtime")

#: Seconds between server-time samples per exchange.
SERVER_TIME_INTERVAL = 60.0
#: Quick server-time samples at start-up, and the pause between them (s).
SERVER_TIME_WARMUP = 5
SERVER_TIME_WARMUP_INTERVAL = 0.2

ConfigSource = Config | Mapping[str, Any] | str | os.PathLike[str]


class BookView:
    """A read-only view of one local order book (live: it follows the book as it changes)."""

    __slots__ = ("_sync",)

    def __init__(self, sync: BookSync) -> None:
        self._sync = sync

    @property
    def exchange(self) -> str:
        return self._sync.exchange

    @property
    def symbol(self) -> str:
        return self._sync.symbol

    @property
    def state(self) -> BookStatus:
        return self._sync.state

    @property
    def is_live(self) -> bool:
        return self._sync.state is BookStatus.LIVE

    @property
    def update_id(self) -> int | None:
        return self._sync.update_id

    def best_bid(self) -> tuple[float, float] | None:
        return self._sync.book.best_bid()

    def best_ask(self) -> tuple[float, float] | None:
        return self._sync.book.best_ask()

    def top(self, n: int = 10) -> tuple[list[Level], list[Level]]:
        """The best ``n`` bids (descending) and asks (ascending)."""
        return self._sync.book.top(n)

    def is_crossed(self) -> bool:
        return self._sync.book.is_crossed()

    def statistics(self) -> dict[str, Any]:
        return self._sync.statistics()

    def __repr__(self) -> str:
        return (f"<BookView {self.exchange}:{self.symbol} {self.state.value} bid={self.best_bid()} "
                f"ask={self.best_ask()} update_id={self.update_id}>")


def _build(registry: Any, kind: str, name: str, options: Mapping[str, Any], where: str) -> Any:
    """A registered plugin object from its options; a FeederError naming ``where`` when it cannot be."""
    if name not in registry:
        known = ", ".join(registry.names()) or "none"
        raise FeederError(f"{where}: no {kind} named {name!r} is installed (installed: {known})")
    try:
        return registry[name](options)
    except (ValueError, TypeError) as exc:
        raise FeederError(f"{where}.{name}: {exc}") from None


class Feeder:
    """Market data from every configured exchange, to callbacks, streams, buffers and sinks.

    ``connectors`` (mostly for tests) maps exchange names to connector instances or classes, used
    instead of the plugin registry for those exchanges.
    """

    def __init__(
        self,
        config: ConfigSource,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        connectors: Mapping[str, Connector | type[Connector]] | None = None,
    ) -> None:
        self.config = load_config(config)
        #: The metrics page's port once it serves (``[metrics] enabled``), else None.
        self.metrics_port: int | None = None
        self._pm = plugin_manager
        self._given_connectors = dict(connectors or {})
        runtime = self.config.runtime
        self.dispatcher = Dispatcher(
            buffer_size=self.config.buffer_size,
            subscriber_queue_size=runtime.subscriber_queue_size,
            slow_callback_ms=runtime.slow_callback_ms,
        )
        self.connectors: dict[str, Connector] = {}
        self.managers: dict[str, ExchangeManager] = {}
        self.pipelines: dict[str, ExchangePipeline] = {}
        self.instruments: dict[tuple[str, str], Instrument] = {}
        self.sinks: list[SinkRunner] = []
        #: Running sources (``[[sources]]``) by label, with their ingest paths.
        self.sources: dict[str, tuple[Source, SourceIngest]] = {}
        self.source_errors: dict[str, str] = {}
        self.strategy_errors: dict[str, str] = {}
        self.plugin_errors: list[str] = []
        self.validation: Any = None
        #: Per-exchange clock offsets (REST server time + stream frames), for corrected_time().
        self.clock = ClockSync()
        self.http: HttpClient | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._sources = anyio.CancelScope()
        self._sources_done = anyio.Event()
        self._sinks_done: list[anyio.Event] = []
        self._sink_scopes: list[anyio.CancelScope] = []
        self._running = False
        self._stopped = False
        self._started_ns = 0

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        if self._pm is None:
            self._pm = get_plugin_manager()
        return self._pm

    @property
    def running(self) -> bool:
        return self._running

    async def __aenter__(self) -> Feeder:
        if self._running or self._stopped:
            raise RuntimeError("a Feeder runs once; create a new one")
        runtime = self.config.runtime
        _ = self.plugin_manager  # load plugins now: entry points import synchronously
        self.http = HttpClient(timeout=runtime.http_timeout, retries=runtime.http_retries)
        await self.http.__aenter__()
        try:
            self._build_connectors()
            self._build_validation()
            self._build_sources()
            for manager in self.managers.values():
                await manager.load()
            await self._open_sinks()
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
        except BaseException:
            self._stopped = True
            with anyio.CancelScope(shield=True):
                for runner in self.sinks:
                    await runner.close()
                await self.http.aclose()
            raise
        self._running = True
        self._started_ns = now_ns()
        tg = self._tg
        try:
            self.dispatcher.attach(tg)
            for runner in self.sinks:
                done = anyio.Event()
                self._sinks_done.append(done)
                tg.start_soon(self._run_sink, runner, done, name=f"sink {runner.name}")
            await tg.start(self._run_sources, name="feeder sources")
            if self.config.metrics.enabled:
                from ..metrics import MetricsServer

                metrics = MetricsServer(self.get_performance_stats, host=self.config.metrics.host, port=self.config.metrics.port)
                self.metrics_port = await tg.start(metrics.serve, name="metrics")
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        call_lifecycle(self.plugin_manager, "marketfeeder_startup", self._lifecycle_error, feeder=self)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._tg is not None
        try:
            with anyio.CancelScope(shield=True):
                await self._drain()
                call_lifecycle(self.plugin_manager, "marketfeeder_shutdown", self._lifecycle_error, feeder=self)
        finally:
            for scope in self._sink_scopes:
                scope.cancel()
            self._tg.cancel_scope.cancel()
            try:
                # The body's own exception (if any) propagates as it is, not wrapped in a group:
                # our tasks were cancelled on purpose and report their failures themselves.
                await self._tg.__aexit__(None, None, None)
            finally:
                self._running = False
                self._stopped = True
                if self.http is not None:
                    await self.http.aclose()

    async def _drain(self) -> None:
        """Stop the sources, then let every sink write what it accepted (bounded by shutdown_timeout)."""
        self._sources.cancel()
        await self._sources_done.wait()
        self.dispatcher.close()
        for runner in self.sinks:
            runner.queue.close()
        timeout = self.config.runtime.shutdown_timeout
        with anyio.move_on_after(timeout) as scope:
            for done in self._sinks_done:
                await done.wait()
        if scope.cancelled_caught:
            unfinished = [runner.name for runner in self.sinks if not runner.closed]
            log.error("shutdown: sinks %s did not drain within %.1f s; their remaining events are lost",
                      ", ".join(unfinished), timeout)

    def _lifecycle_error(self, plugin: str, exc: BaseException) -> None:
        self.plugin_errors.append(f"{plugin}: {type(exc).__name__}: {exc}")
        log.error("plugin %s failed in a lifecycle hook: %s", plugin, exc, exc_info=exc)

    def _build_connectors(self) -> None:
        registry = None
        assert self.http is not None
        for name, exchange_config in self.config.enabled_exchanges().items():
            given = self._given_connectors.get(name)
            if given is None:
                if registry is None:
                    registry = collect(self.plugin_manager, "marketfeeder_register_connectors", "connector")
                if name not in registry:
                    known = ", ".join(registry.names()) or "none"
                    raise FeederError(f"no connector for exchange {name!r} is installed (installed: {known})")
                given = registry[name]
            connector = given(exchange_config, self.http) if isinstance(given, type) else given
            if connector.name != name:
                raise FeederError(f"exchange {name!r} is configured but its connector calls itself {connector.name!r}")
            self.connectors[name] = connector
        for name, connector in self.connectors.items():
            pipeline = ExchangePipeline(
                connector,
                self.dispatcher,
                validation=None,
                validation_policy=self.config.validation.policy,
            )
            pipeline.clock = self.clock.clock(name)
            self.pipelines[name] = pipeline
            self.managers[name] = ExchangeManager(
                connector, self.config.exchanges[name], self.config.runtime, pipeline, self.instruments
            )

    def _build_validation(self) -> None:
        if not self.config.enable_validation:
            return
        from marketfeeder.validators.engine import StaticContext, ValidationEngine

        registry = collect(self.plugin_manager, "marketfeeder_register_validators", "validator")
        names = self.config.validation.checks if self.config.validation.checks is not None else registry.names()
        validators = []
        for name in names:
            if name not in registry:
                known = ", ".join(registry.names()) or "none"
                raise FeederError(f"validation.checks: no check named {name!r} (installed: {known})")
            try:
                validators.append(registry[name](self.config.validation.options.get(name, {})))
            except (ValueError, TypeError) as exc:
                raise FeederError(f"validation.options.{name}: {exc}") from None
        unknown = set(self.config.validation.options) - set(names)
        if unknown:
            raise FeederError(f"validation.options: options for checks that do not run: {', '.join(sorted(unknown))}")
        self.validation = ValidationEngine(validators, StaticContext(self.instruments, now_ns))
        for pipeline in self.pipelines.values():
            pipeline.validation = self.validation

    def _build_sources(self) -> None:
        if not self.config.sources:
            return
        from marketfeeder.sequence import SequencePolicy

        registry = collect(self.plugin_manager, "marketfeeder_register_sources", "source")
        connectors: Any = None

        def policy_for(exchange: str) -> SequencePolicy:
            nonlocal connectors
            if exchange in self.connectors:
                return self.connectors[exchange].sequence_policy
            if connectors is None:
                connectors = collect(self.plugin_manager, "marketfeeder_register_connectors", "connector")
            cls = connectors.get(exchange)
            policy = getattr(cls, "sequence_policy", None)
            return policy if isinstance(policy, SequencePolicy) else SequencePolicy()

        for index, source_config in enumerate(self.config.sources):
            source = _build(registry, "source", source_config.type, source_config.options, f"sources[{index}]")
            ingest = SourceIngest(
                source_config.type,
                self.dispatcher,
                lambda: self.sinks,
                policy_for=policy_for,
                clock=self.clock,
                validation=self.validation,
                validation_policy=self.config.validation.policy,
            )
            self.sources[f"{source_config.type}#{index}"] = (source, ingest)

    async def _run_source(self, label: str, source: Source, ingest: SourceIngest) -> None:
        try:
            await source.run(ingest)
        except Exception as exc:
            self.source_errors[label] = f"{type(exc).__name__}: {exc}"
            log.error("source %s failed and was stopped: %s", label, exc, exc_info=exc)

    async def _open_sinks(self) -> None:
        if not self.config.enable_historical_storage or not self.config.sinks:
            return
        registry = collect(self.plugin_manager, "marketfeeder_register_sinks", "sink")
        names: dict[str, int] = {}
        for sink_config in self.config.sinks:
            sink = _build(registry, "sink", sink_config.type, sink_config.options, "sinks")
            count = names.get(sink_config.type, 0)
            names[sink_config.type] = count + 1
            name = sink_config.type if count == 0 else f"{sink_config.type}#{count + 1}"
            await self._open_sink(name, sink, sink_config)

    async def _open_sink(self, name: str, sink: Sink, cfg: SinkConfig) -> SinkRunner:
        runner = SinkRunner(
            name,
            sink,
            queue_size=cfg.queue_size,
            overflow=cfg.overflow,
            batch_size=cfg.batch_size,
            flush_interval=cfg.flush_interval,
        )
        try:
            await runner.open()
        except Exception as exc:
            raise FeederError(f"sink {name!r} failed to open: {type(exc).__name__}: {exc}") from exc
        self.sinks.append(runner)
        self.dispatcher.add_sink(runner)
        return runner

    async def _run_sink(self, runner: SinkRunner, done: anyio.Event) -> None:
        # Shielded: a cancellation from outside the feeder must not cut the drain short; the feeder
        # cancels this scope itself once shutdown_timeout has passed.
        scope = anyio.CancelScope(shield=True)
        self._sink_scopes.append(scope)
        try:
            with scope:
                await runner.run()
        finally:
            done.set()

    async def _run_sources(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._sources:
                async with anyio.create_task_group() as tg:
                    for manager in self.managers.values():
                        await tg.start(manager.run, name=f"exchange {manager.exchange}")
                        tg.start_soon(self._sample_server_time, manager.connector, name=f"clock {manager.exchange}")
                    tg.start_soon(self._sample_rates, name="feeder rates")
                    for label, (source, ingest) in self.sources.items():
                        tg.start_soon(self._run_source, label, source, ingest, name=f"source {label}")
                    self._start_strategies(tg)
                    task_status.started()
        finally:
            self._sources_done.set()

    async def _sample_server_time(self, connector: Connector) -> None:
        """Ask the exchange's time endpoint now and then (NTP-style samples for the clock offset)."""
        estimator = self.clock.clock(connector.name)
        timeout = self.config.runtime.http_timeout * (self.config.runtime.http_retries + 1) + 5.0
        samples = 0
        while True:
            sent = now_ns()
            try:
                with anyio.fail_after(timeout):
                    server = await connector.server_time()
            except Exception as exc:
                log.info("%s: server time unavailable (%s: %s)", connector.name, type(exc).__name__, exc)
                server = -1
            if server is None:
                return  # the exchange has no time endpoint: stream samples only
            if server >= 0:
                estimator.add_rest_sample(sent, server, now_ns())
            samples += 1
            # A few quick round trips first: the first one pays for a cold connection, and the
            # offset is taken from the fastest round trip.
            await anyio.sleep(SERVER_TIME_WARMUP_INTERVAL if samples < SERVER_TIME_WARMUP else SERVER_TIME_INTERVAL)

    async def _sample_rates(self) -> None:
        """Once a second, sample every running count so that msgs/s covers the last few seconds."""
        while True:
            await anyio.sleep(1.0)
            now = now_ns()
            for stats in list(self.dispatcher.symbol_stats.values()):
                stats.rate.sample(now, stats.message_count)
            for manager in self.managers.values():
                for worker in manager.workers:
                    worker.stats.rate.sample(now, worker.stats.message_count)

    def corrected_time(self, exchange: str, exchange_ts: int) -> int:
        """``exchange_ts`` on the local time line, using the estimated clock offset of ``exchange``."""
        return self.clock.corrected(exchange, exchange_ts)

    def _start_strategies(self, tg: anyio.abc.TaskGroup) -> None:
        if not self.config.strategies:
            return
        registry = collect(self.plugin_manager, "marketfeeder_register_strategies", "strategy")
        for index, strategy_config in enumerate(self.config.strategies):
            label = f"{strategy_config.type}#{index}"
            try:
                strategy = registry[strategy_config.type](strategy_config.options)
            except Exception as exc:
                self.strategy_errors[label] = f"{type(exc).__name__}: {exc}"
                log.error("strategy %s could not be created: %s", label, exc)
                continue
            tg.start_soon(self._run_strategy, label, strategy, name=f"strategy {label}")

    async def _run_strategy(self, label: str, strategy: Any) -> None:
        try:
            await strategy.run(self)
        except Exception as exc:
            self.strategy_errors[label] = f"{type(exc).__name__}: {exc}"
            log.error("strategy %s failed and was stopped: %s", label, exc, exc_info=exc)

    # --- public API ----------------------------------------------------------------------------

    def subscribe(
        self,
        exchange: str | None,
        symbol: str | None,
        data_type: TypeSelector | None,
        callback: Callback,
    ) -> Subscription:
        """Call ``callback(event)`` for matching events (None matches anything). Sync callbacks run
        inline; async ones in their own task behind a bounded queue (drop-oldest, counted)."""
        return self.dispatcher.subscribe(exchange, symbol, data_type, callback)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.dispatcher.unsubscribe(subscription)

    def get_latest_data(
        self, exchange: str, symbol: str, data_type: TypeSelector, n: int = 1
    ) -> list[Event]:
        """The newest ``n`` events of (exchange, symbol, data type), newest first."""
        if isinstance(data_type, type) and issubclass(data_type, Event):
            events = self.dispatcher.latest(exchange, symbol, data_type.data_type, self.config.buffer_size)
            return [event for event in events if isinstance(event, data_type)][:n]
        if isinstance(data_type, str) and not isinstance(data_type, DataType):
            data_type = DataType.parse(data_type)
        if not isinstance(data_type, DataType):
            raise TypeError(f"data_type must be a DataType or an event class, got {data_type!r}")
        return self.dispatcher.latest(exchange, symbol, data_type, n)

    def book(self, exchange: str, symbol: str) -> BookView:
        """The live local order book of ``symbol`` (requires the ``orderbook`` data type)."""
        pipeline = self.pipelines.get(exchange)
        if pipeline is None:
            replica = self._replica(exchange, symbol)
            if replica is not None:
                return BookView(replica)
            running = sorted({*self.pipelines, *(ex for _, i in self.sources.values() for ex, _ in i.books)})
            raise KeyError(f"exchange {exchange!r} has no book for {symbol!r} (running: {', '.join(running) or 'none'})")
        entry = pipeline.books.get(symbol)
        if entry is None:
            raise KeyError(f"{exchange}: no order book for {symbol!r} (is 'orderbook' among its data types?)")
        return BookView(entry.sync)

    def books(self) -> dict[str, BookView]:
        views = {
            f"{exchange}:{symbol}": BookView(entry.sync)
            for exchange, pipeline in self.pipelines.items()
            for symbol, entry in pipeline.books.items()
        }
        for _, ingest in self.sources.values():
            for (exchange, symbol), sync in ingest.books.items():
                views.setdefault(f"{exchange}:{symbol}", BookView(sync))
        return views

    @asynccontextmanager
    async def stream(
        self,
        exchanges: Collection[str] | str | None = None,
        symbols: Collection[str] | str | None = None,
        types: Iterable[TypeSelector] | TypeSelector | None = None,
        *,
        buffer: int | None = None,
        overflow: Overflow = "block",
    ) -> AsyncIterator[EventStream]:
        """``async with feeder.stream(types={DataType.TRADES}) as events: async for e in events: ...``

        The stream has its own bounded buffer (``buffer``, default ``runtime.subscriber_queue_size``).
        With ``overflow="block"`` a consumer that falls behind slows the feed down; with
        ``"drop_oldest"`` it loses the oldest events and receives a ``Gap`` marker saying how many.
        The iteration ends when the feeder stops.
        """
        if isinstance(exchanges, str):
            exchanges = (exchanges,)
        if isinstance(symbols, str):
            symbols = (symbols,)
        if isinstance(types, DataType | str) or (isinstance(types, type) and issubclass(types, Event)):
            types = (types,)
        size = buffer if buffer is not None else self.config.runtime.subscriber_queue_size
        events = self.dispatcher.open_stream(exchanges, symbols, types, size, overflow)
        try:
            yield events
        finally:
            self.dispatcher.close_stream(events)

    def publish(self, event: Event) -> None:
        """Inject an event (e.g. a strategy's signal); it flows to callbacks, streams and sinks.

        Never blocks: a full ``block`` sink keeps a bounded overflow, beyond which the oldest is
        dropped and marked with a ``Gap``.
        """
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event, got {type(event).__name__}")
        self.dispatcher.publish_nowait(event)

    async def add_symbols(self, exchange: str, symbols: Iterable[str]) -> list[str]:
        """Subscribe ``symbols`` on ``exchange`` (its configured data types) while running."""
        return await self._manager(exchange).add_symbols(list(symbols))

    async def remove_symbols(self, exchange: str, symbols: Iterable[str]) -> list[str]:
        """Unsubscribe ``symbols`` on ``exchange`` while running."""
        return await self._manager(exchange).remove_symbols(list(symbols))

    def _manager(self, exchange: str) -> ExchangeManager:
        manager = self.managers.get(exchange)
        if manager is None:
            raise FeederError(f"exchange {exchange!r} is not running (running: {', '.join(self.managers) or 'none'})")
        if not self._running:
            raise FeederError("the feeder is not running: use it inside 'async with Feeder(...)'")
        return manager

    def symbols(self, exchange: str) -> list[str]:
        manager = self.managers.get(exchange)
        return sorted(manager.symbols) if manager is not None else []

    # --- stats ---------------------------------------------------------------------------------

    def get_performance_stats(self) -> dict[str, Any]:
        """A snapshot of every counter, as plain data.

        ``"exchange:SYMBOL"`` (one per symbol seen): ``message_count``, ``error_count`` (validation
        failures + callback errors), ``msgs_per_s`` (last ~5 s), ``latency_ms`` with
        ``exchange_to_receive`` and ``receive_to_delivered``, each ``{count, avg, p50, p99, max}``,
        ``gaps``, ``resyncs``, ``reconnects``, ``dropped_by_backpressure``, ``validation_failures``
        (by check), ``callback_errors``, ``book_state`` (None without a book) and ``by_type`` (events
        per class).

        ``"connections"``: by connection id (``"binance#0"``): ``connected``, ``url``, ``streams``,
        ``message_count``, ``msgs_per_s``, ``error_count``, ``decode_errors``, ``unhandled``,
        ``control_errors``, ``connects``, ``reconnects``, ``rotations``, ``stalls``, ``last_error``,
        ``last_frame_age_s``, ``silent_streams``, ``stale_streams``, ``subscribe_errors``, ``rotating``.

        ``"sinks"``: by sink name: ``written``, ``batches``, ``flushes``, ``failed``, ``error``,
        ``lag`` (events waiting) and ``queue`` (its bounded queue's statistics, with
        ``dropped_by_backpressure``). ``"callbacks"`` and ``"streams"``: one entry per subscription /
        open stream.
        """
        now = now_ns()
        result: dict[str, Any] = {}
        by_type = self.dispatcher.counts_by_type()
        for (exchange, symbol), stats in self.dispatcher.symbol_stats.items():
            entry = stats.as_dict(now)
            entry["by_type"] = by_type.get((exchange, symbol), {})
            pipeline = self.pipelines.get(exchange)
            book = pipeline.books.get(symbol) if pipeline is not None else None
            sync = book.sync if book is not None else self._replica(exchange, symbol)
            if sync is not None:
                entry["book_state"] = sync.state.value
                entry["gaps"] = max(entry["gaps"], sync.gaps)
            result[f"{exchange}:{symbol}"] = entry
        for exchange, pipeline in self.pipelines.items():
            for symbol, book in pipeline.books.items():
                key = f"{exchange}:{symbol}"
                if key not in result:
                    entry = self.dispatcher.stats_for(exchange, symbol).as_dict(now)
                    entry["book_state"] = book.sync.state.value
                    result[key] = entry
        result["connections"] = {
            worker.id: worker.statistics() for manager in self.managers.values() for worker in manager.workers
        }
        result["sinks"] = {runner.name: runner.statistics() for runner in self.sinks}
        result["callbacks"] = [sub.statistics() for sub in self.dispatcher.subscriptions()]
        result["streams"] = [stream.statistics() for stream in self.dispatcher.streams()]
        return result

    def _replica(self, exchange: str, symbol: str) -> BookSync | None:
        for _, ingest in self.sources.values():
            sync = ingest.books.get((exchange, symbol))
            if sync is not None:
                return sync
        return None

    def statistics(self) -> dict[str, Any]:
        """A summary of the whole feeder."""
        return {
            "running": self._running,
            "uptime_s": round((now_ns() - self._started_ns) / 1e9, 3) if self._started_ns else 0.0,
            "exchanges": {name: manager.statistics() for name, manager in self.managers.items()},
            "subscriptions": len(self.dispatcher.subscriptions()),
            "streams": len(self.dispatcher.streams()),
            "callback_errors": self.dispatcher.callback_errors,
            "sinks": {runner.name: {"failed": runner.failed, "error": runner.error} for runner in self.sinks},
            "strategy_errors": dict(self.strategy_errors),
            "sources": {
                label: {
                    **ingest.statistics(),
                    "source": source.statistics() if hasattr(source, "statistics") else {},
                    "error": self.source_errors.get(label),
                }
                for label, (source, ingest) in self.sources.items()
            },
            "plugin_errors": list(self.plugin_errors),
            "validation": self.validation.statistics() if self.validation is not None else None,
            "clocks": {name: estimate.as_dict() for name, estimate in self.clock.estimates().items()},
            "http": {
                "requests": self.http.stats.requests if self.http else 0,
                "retries": self.http.stats.retries if self.http else 0,
                "failures": self.http.stats.failures if self.http else 0,
            },
        }

