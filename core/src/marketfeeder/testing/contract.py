"""Contract test suites every sink and every connector runs (fsspec-style abstract tests).

A plugin subclasses the suite in its own tests and supplies a few fixtures; pytest collects the
inherited tests, on both anyio backends::

    from marketfeeder.testing.contract import SinkContract

    class TestCsvSink(SinkContract):
        def make_sink(self, tmp_path):
            return CsvSink({"target": str(tmp_path)})

        def read_back(self, sink):
            return [...]  # what the sink stored, in order: events, or dicts with "type" + fields

    from marketfeeder.testing.contract import ConnectorContract

    class TestMyConnector(ConnectorContract):
        @pytest.fixture
        def connector_class(self):
            return MyConnector

        @pytest.fixture
        async def connector_config(self):
            async with MyVenue() as venue:       # a loopback simulator of the exchange
                yield ExchangeConfig(ws_url=venue.ws_url, rest_url=venue.http_url, symbols=["BTC-USDT"])

The suites only use the public contracts (:class:`~marketfeeder.sinks.base.Sink`,
:class:`~marketfeeder.connector.Connector`) and the runtime's public pieces.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import orjson
import pytest

from marketfeeder.clock import now_ns
from marketfeeder.config import ExchangeConfig
from marketfeeder.connector import ConnectionLimits, Connector, ControlMessage, DecodeError
from marketfeeder.models import (
    MARKET_DATA_TYPES,
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    BookTicker,
    Connection,
    ConnectionStatus,
    DataType,
    Event,
    Gap,
    Instrument,
    Kline,
    MarkPrice,
    Side,
    Ticker,
    Trade,
    ValidationFailure,
)
from marketfeeder.sequence import SequencePolicy
from marketfeeder.sinks.base import Sink
from marketfeeder.testing.pytest_plugin import BACKENDS

__all__ = ["ConnectorContract", "SinkContract", "event_identity", "sample_events"]

_T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
#: Earliest plausible exchange time (2015) and how far in the future one may be (a day), in ns.
_MIN_TS = 1_420_070_400_000_000_000
_MAX_AHEAD = 86_400_000_000_000


def sample_events(exchange: str = "test", symbol: str = "BTC-USDT", start: int = 0) -> list[Event]:
    """One event of every built-in class, with distinct receive times from ``_T0 + start`` ns."""
    t = _T0 + start
    return [
        Ticker(exchange, symbol, t, t + 1, 11, 100.5, 100.0, 1.5, 101.0, 2.5, 99.0, 102.0, 98.0, 1234.5, 123456.7,
               789, 1.5, 1.51, 100.2),
        BookTicker(exchange, symbol, None, t + 2, 12, 100.0, 1.5, 101.0, 2.5),
        Trade(exchange, symbol, t, t + 3, 13, 100.5, 0.25, Side.BUY, t),
        Kline(exchange, symbol, t, t + 4, None, "1m", t - 60_000_000_000, t - 1, 100.0, 101.0, 99.5, 100.5, 12.5,
              False, 1250.0, 42),
        BookSnapshot(exchange, symbol, None, t + 5, 14, ((100.0, 1.0), (99.5, 2.0)), ((101.0, 1.5), (101.5, 3.0))),
        BookDelta(exchange, symbol, t, t + 6, 16, 15, ((100.0, 0.0),), ((101.0, 2.0),)),
        MarkPrice(exchange, symbol + "-PERP", t, t + 7, None, 100.4, 100.3, 0.0001, t + 3_600_000_000_000),
        BookState(exchange, symbol, None, t + 8, 16, BookStatus.LIVE, "snapshot applied"),
        Gap(exchange, symbol, None, t + 9, 20, DataType.ORDERBOOK, 17, 19, "update ids 17..19 missing"),
        Connection(exchange, "", None, t + 10, None, f"{exchange}#0", ConnectionStatus.UP, "", "ws://127.0.0.1:1/ws"),
        ValidationFailure(exchange, symbol, t, t + 11, 13, "prices", "trade price -1.0 is not positive", "annotate",
                          "Trade", t + 3),
    ]


def event_identity(record: Any) -> tuple[str, str, str, int, int | None]:
    """(type, exchange, symbol, receive_ts, seq) of an Event or of a stored dict/row with those keys."""
    if isinstance(record, Event):
        return (type(record).__name__, record.exchange, record.symbol, record.receive_ts, record.seq)
    if isinstance(record, Mapping):
        return (str(record["type"]), record["exchange"], record["symbol"], int(record["receive_ts"]),
                None if record.get("seq") is None else int(record["seq"]))
    raise TypeError(f"read_back must return Events or mappings, got {type(record).__name__}")


def _trades(n: int, start: int = 0) -> list[Event]:
    return [Trade("test", "ETH-USDT", _T0 + i, _T0 + 100 + i, i, 2000.0 + i, 0.5, Side.SELL, _T0 + i)
            for i in range(start, start + n)]


class _BothBackends:
    @pytest.fixture(params=BACKENDS)
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)


class _FailingSink:
    """A sink that fails on its second batch (to prove a failure stays with its sink)."""

    def __init__(self) -> None:
        self.batches = 0

    async def open(self) -> None:
        pass

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.batches += 1
        if self.batches >= 2:
            raise OSError("disk on fire")

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.mark.marketfeeder_contract
class SinkContract(_BothBackends):
    """Tests every sink passes. Subclass and implement :meth:`make_sink` and :meth:`read_back`."""

    #: Does the sink keep control events (Gap, BookState, Connection, ValidationFailure)?
    stores_control_events: ClassVar[bool] = True

    def make_sink(self, tmp_path: Path) -> Sink:
        raise NotImplementedError("SinkContract subclasses implement make_sink(tmp_path)")

    def read_back(self, sink: Any) -> Any:
        """What the sink stored, oldest first: Events or mappings with "type" and the event fields.
        May be async. Called after ``close()``."""
        raise NotImplementedError("SinkContract subclasses implement read_back(sink)")

    async def _read(self, sink: Any) -> list[Any]:
        result = self.read_back(sink)
        if inspect.isawaitable(result):
            result = await result
        return list(result)

    @pytest.fixture
    def sink(self, tmp_path: Path) -> Sink:
        return self.make_sink(tmp_path)

    def _expected(self, events: Sequence[Event]) -> list[tuple[str, str, str, int, int | None]]:
        keep = [e for e in events if self.stores_control_events or e.data_type in MARKET_DATA_TYPES]
        return [event_identity(e) for e in keep]

    @pytest.mark.anyio
    async def test_is_a_sink(self, sink: Sink) -> None:
        assert isinstance(sink, Sink)

    @pytest.mark.anyio
    async def test_open_write_flush_close(self, sink: Sink) -> None:
        events = _trades(10)
        await sink.open()
        await sink.write_batch(events)
        await sink.flush()
        await sink.close()
        assert [event_identity(r) for r in await self._read(sink)] == self._expected(events)

    @pytest.mark.anyio
    async def test_every_event_type_is_accepted(self, sink: Sink) -> None:
        events = sample_events()
        await sink.open()
        await sink.write_batch(events)
        await sink.close()
        stored = [event_identity(r) for r in await self._read(sink)]
        assert sorted(stored, key=repr) == sorted(self._expected(events), key=repr)

    @pytest.mark.anyio
    async def test_order_is_preserved_across_batches(self, sink: Sink) -> None:
        events = _trades(300)
        await sink.open()
        for start in range(0, 300, 70):
            await sink.write_batch(events[start : start + 70])
        await sink.close()
        assert [event_identity(r) for r in await self._read(sink)] == self._expected(events)

    @pytest.mark.anyio
    async def test_close_flushes(self, sink: Sink) -> None:
        events = _trades(25)
        await sink.open()
        await sink.write_batch(events)
        await sink.close()  # no flush() first
        assert len(await self._read(sink)) == len(self._expected(events))

    @pytest.mark.anyio
    async def test_empty_batch(self, sink: Sink) -> None:
        await sink.open()
        await sink.write_batch([])
        await sink.flush()
        await sink.close()
        assert await self._read(sink) == []

    @pytest.mark.anyio
    async def test_field_values_survive(self, sink: Sink) -> None:
        trade = _trades(1)[0]
        await sink.open()
        await sink.write_batch([trade])
        await sink.close()
        (record,) = await self._read(sink)
        if isinstance(record, Event):
            assert record == trade
        else:
            assert float(record["price"]) == trade.price  # type: ignore[attr-defined]
            assert float(record["size"]) == trade.size  # type: ignore[attr-defined]
            assert str(record["side"]) == trade.side.value  # type: ignore[attr-defined]

    @pytest.mark.anyio
    async def test_another_sinks_failure_is_isolated(self, sink: Sink) -> None:
        """Run by the runtime next to a sink that fails: this one still gets every event."""
        from marketfeeder.runtime.dispatch import Dispatcher, SinkRunner

        dispatcher = Dispatcher(buffer_size=10, subscriber_queue_size=100, slow_callback_ms=1000)
        good = SinkRunner("under-test", sink, queue_size=50, overflow="block", batch_size=20, flush_interval=0.01)
        bad = SinkRunner("failing", _FailingSink(), queue_size=50, overflow="block", batch_size=20,
                         flush_interval=0.01)
        events = _trades(200)
        await good.open()
        await bad.open()
        dispatcher.add_sink(good)
        dispatcher.add_sink(bad)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(good.run)
                tg.start_soon(bad.run)
                for start in range(0, 200, 10):
                    await dispatcher.deliver_wait(events[start : start + 10])
                good.queue.close()
                bad.queue.close()
        assert bad.failed and "disk on fire" in (bad.error or "")
        assert not good.failed
        assert [event_identity(r) for r in await self._read(sink)] == self._expected(events)


@pytest.mark.marketfeeder_contract
class ConnectorContract(_BothBackends):
    """Tests every connector passes against its venue simulator.

    Fixtures to provide: ``connector_class`` (the Connector subclass) and ``connector_config`` (an
    :class:`ExchangeConfig` whose URLs point at a running loopback venue and whose ``symbols`` it
    lists; usually an async generator fixture that runs the venue).
    """

    #: Seconds to collect live frames from the venue.
    collect_seconds: ClassVar[float] = 1.5
    #: Frames that must decode into at least one event within ``collect_seconds``.
    min_events: ClassVar[int] = 3

    @pytest.fixture
    def connector_class(self) -> type[Connector]:
        raise NotImplementedError("ConnectorContract subclasses provide a connector_class fixture")

    @pytest.fixture
    def connector_config(self) -> ExchangeConfig:
        raise NotImplementedError("ConnectorContract subclasses provide a connector_config fixture")

    @pytest.fixture
    async def connector(
        self, connector_class: type[Connector], connector_config: ExchangeConfig, anyio_backend: str
    ) -> AsyncIterator[Connector]:
        from marketfeeder.transport.http import HttpClient

        async with HttpClient(timeout=5.0, retries=1) as http:
            yield connector_class(connector_config, http)

    def test_class_attributes(self, connector_class: type[Connector]) -> None:
        assert isinstance(connector_class.name, str) and connector_class.name
        assert connector_class.name == connector_class.name.lower()
        assert isinstance(connector_class.limits, ConnectionLimits)
        assert isinstance(connector_class.sequence_policy, SequencePolicy)
        assert connector_class.supported_data_types, "a connector supports at least one data type"
        assert connector_class.supported_data_types <= MARKET_DATA_TYPES
        assert connector_class.limits.max_streams_per_connection >= 1

    @pytest.mark.anyio
    async def test_instruments_round_trip(self, connector: Connector) -> None:
        table = await connector.load_instruments()
        assert len(table) > 0
        assert connector.instruments is table
        for instrument in table:
            assert isinstance(instrument, Instrument)
            assert instrument.exchange == connector.name
            assert instrument.symbol == Instrument.normalized(instrument.base, instrument.quote, instrument.kind)
            assert table.to_symbol(instrument.native) == instrument.symbol
            assert table.to_native(instrument.symbol) == instrument.native
            assert instrument.tick_size > 0 and instrument.step_size > 0

    @pytest.mark.anyio
    async def test_configured_symbols_are_listed(self, connector: Connector) -> None:
        table = await connector.load_instruments()
        for symbol in connector.config.symbols:
            assert table.require_tradable(symbol).symbol == symbol

    @pytest.mark.anyio
    async def test_streams_and_control_messages(self, connector: Connector) -> None:
        table = await connector.load_instruments()
        instrument = table.require_tradable(connector.config.symbols[0])
        streams: list[str] = []
        for data_type in sorted(connector.supported_data_types):
            names = connector.streams_for(instrument, data_type)
            assert names and all(isinstance(n, str) and n for n in names)
            streams.extend(names)
        for data_type in set(DataType) - set(connector.supported_data_types):
            with pytest.raises(ValueError):
                connector.streams_for(instrument, data_type)
        for message in (connector.subscribe_message(streams, 7), connector.unsubscribe_message(streams, 8)):
            assert isinstance(message, str)
            orjson.loads(message)  # valid JSON
            for name in streams:
                assert name in message or name.split("@")[0] in message
        assert isinstance(connector.connection_url(streams), str)

    def test_malformed_frames_raise_decode_error(self, connector_class: type[Connector],
                                                connector_config: ExchangeConfig) -> None:
        connector = connector_class(connector_config, None)  # type: ignore[arg-type]
        for frame in ("{not json", "\x00\x01garbage", b"\xff\xfe"):
            with pytest.raises(DecodeError):
                connector.decode(frame, now_ns())
        for frame in ("{}", "[]", "null", '{"stream": 5, "data": "x"}', '{"e": "trade"}'):
            try:
                result = connector.decode(frame, now_ns())
            except DecodeError:
                continue
            assert isinstance(result, list)

    @pytest.mark.anyio
    async def test_snapshot_is_sorted(self, connector: Connector) -> None:
        table = await connector.load_instruments()
        instrument = table.require_tradable(connector.config.symbols[0])
        with anyio.fail_after(10):
            snapshot = await connector.fetch_snapshot(instrument, connector.depth_limit())
        assert isinstance(snapshot, BookSnapshot)
        assert snapshot.exchange == connector.name and snapshot.symbol == instrument.symbol
        assert isinstance(snapshot.seq, int)
        bids = [price for price, _ in snapshot.bids]
        asks = [price for price, _ in snapshot.asks]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        if bids and asks:
            assert bids[0] < asks[0]
        assert all(size > 0 and math.isfinite(size) for _, size in snapshot.bids + snapshot.asks)

    @pytest.mark.anyio
    async def test_live_frames_decode(self, connector: Connector) -> None:
        from marketfeeder.transport.ws import connect_websocket

        table = await connector.load_instruments()
        streams: list[str] = []
        for symbol in connector.config.symbols:
            instrument = table.require_tradable(symbol)
            for data_type in connector.config.data_types:
                if data_type in connector.supported_data_types:
                    streams.extend(connector.streams_for(instrument, data_type))
        events: list[Event] = []
        controls: list[ControlMessage] = []
        with anyio.fail_after(self.collect_seconds + 10):
            async with connect_websocket(connector.connection_url(streams), open_timeout=5) as ws:
                if not connector.streams_in_url:
                    await ws.send(connector.subscribe_message(streams, 1))
                with anyio.move_on_after(self.collect_seconds):
                    while len(events) < 200:
                        frame, receive_ts = await ws.receive()
                        try:
                            results = connector.decode(frame, receive_ts)
                        except DecodeError:
                            continue
                        for result in results:
                            if isinstance(result, Event):
                                assert result.receive_ts == receive_ts
                                events.append(result)
                            else:
                                assert isinstance(result, ControlMessage)
                                controls.append(result)
        assert len(events) >= self.min_events, f"only {len(events)} events decoded in {self.collect_seconds} s"
        now = now_ns()
        for event in events:
            assert event.exchange == connector.name
            assert event.symbol in table, f"symbol {event.symbol!r} is not normalized"
            assert event.symbol in connector.config.symbols
            if event.exchange_ts is not None:
                assert isinstance(event.exchange_ts, int)
                assert _MIN_TS < event.exchange_ts < now + _MAX_AHEAD, "exchange_ts must be ns since the epoch"
            if isinstance(event, BookDelta):
                assert event.first_seq <= event.seq
            if isinstance(event, BookSnapshot | BookDelta):
                for price, size in event.bids + event.asks:
                    assert isinstance(price, float) and isinstance(size, float)
