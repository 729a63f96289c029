"""The Feeder end to end against the toy exchange on loopback: delivery, books, faults, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import pytest
from toy_exchange import ToyConnector, ToyExchange

from marketfeeder import Feeder
from marketfeeder.connector import ConnectionLimits
from marketfeeder.hookspecs import hookimpl
from marketfeeder.models import (
    BookState,
    BookStatus,
    Connection,
    ConnectionStatus,
    DataType,
    Event,
    Gap,
    Instrument,
    Side,
    Trade,
    ValidationFailure,
)
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.runtime.connections import FeederError
from marketfeeder.sinks.memory import MemorySink
from marketfeeder.validators.base import Verdict

pytestmark = pytest.mark.anyio

FAST_RUNTIME = {"stale_min_seconds": 1.0, "reconnect_initial_delay": 0.05, "reconnect_max_delay": 0.2,
                "shutdown_timeout": 5.0, "http_retries": 1, "http_timeout": 2.0}


@pytest.fixture
async def venue(anyio_backend: str) -> AsyncIterator[ToyExchange]:
    async with ToyExchange() as exchange:
        yield exchange


def make_config(venue: ToyExchange, **overrides: Any) -> dict[str, Any]:
    exchange = venue.exchange_config(
        overrides.pop("symbols", ("BTC-USD", "ETH-USD")),
        overrides.pop("data_types", ("trades", "orderbook", "ticker")),
    )
    runtime = {**FAST_RUNTIME, **overrides.pop("runtime", {})}
    return {"exchanges": {"toy": exchange}, "enable_validation": False, "runtime": runtime, **overrides}


async def wait_for(condition: Callable[[], bool], limit: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` (state of the feeder, not an event we could wait on) for up to ``limit`` s."""
    try:
        with anyio.fail_after(limit):
            while not condition():  # noqa: ASYNC110
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit} s waiting for {what}") from None


def seqs(events: Sequence[Event], symbol: str) -> list[int]:
    return [e.seq for e in events if isinstance(e, Trade) and e.symbol == symbol and e.seq is not None]


def plugin_manager(*plugins: object) -> Any:
    pm = get_plugin_manager(load_entry_points=False)
    for index, plugin in enumerate(plugins):
        pm.register(plugin, name=f"test-plugin-{index}")
    return pm


# --- delivery --------------------------------------------------------------------------------------


async def test_events_books_latest_and_stats(venue: ToyExchange) -> None:
    trades: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe("toy", "BTC-USD", DataType.TRADES, trades.append)
        await wait_for(lambda: len(trades) >= 5 and feeder.book("toy", "ETH-USD").is_live
                       and feeder.book("toy", "BTC-USD").is_live)
        book = feeder.book("toy", "BTC-USD")
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None and bid[0] < ask[0]
        bids, asks = book.top(3)
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        assert book.state is BookStatus.LIVE and book.update_id is not None
        latest = feeder.get_latest_data("toy", "BTC-USD", DataType.TRADES, 3)
        assert len(latest) == 3 and latest[0].seq > latest[1].seq > latest[2].seq  # type: ignore[operator]
        assert feeder.get_latest_data("toy", "BTC-USD", Trade, 1) == latest[:1]
        stats = feeder.get_performance_stats()
        btc = stats["toy:BTC-USD"]
        assert btc["message_count"] > 0 and btc["book_state"] == "live"
        assert set(btc["latency_ms"]) == {"exchange_to_receive", "receive_to_delivered"}
        assert set(btc["latency_ms"]["receive_to_delivered"]) == {"count", "avg", "p50", "p99", "max"}
        assert btc["by_type"]["Trade"] > 0
        assert stats["connections"]["toy#0"]["connected"] is True
        assert feeder.statistics()["running"] is True
    assert all(isinstance(e, Trade) and e.symbol == "BTC-USD" for e in trades)
    assert seqs(trades, "BTC-USD") == sorted(set(seqs(trades, "BTC-USD")))


async def test_subscribe_unsubscribe_at_run_time_and_wildcards(venue: ToyExchange) -> None:
    first: list[Event] = []
    second: list[Event] = []
    anything: list[Event] = []
    feeder = Feeder(make_config(venue), connectors={"toy": ToyConnector})
    feeder.subscribe(None, None, None, anything.append)  # before start: sees everything from the first event
    async with feeder:
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live)
        sub1 = feeder.subscribe("toy", None, DataType.TRADES, first.append)
        feeder.subscribe(None, "ETH-USD", Trade, second.append)
        await wait_for(lambda: len(second) >= 3 and len(first) >= 6)
        sub1.close()
        count = len(first)
        await wait_for(lambda: len(second) >= 10)
        assert len(first) == count  # nothing after close()
        feeder.unsubscribe(sub1)  # twice is harmless
    assert {e.symbol for e in first} == {"BTC-USD", "ETH-USD"}
    assert {e.symbol for e in second} == {"ETH-USD"} and all(isinstance(e, Trade) for e in second)
    kinds = {type(e).__name__ for e in anything}
    assert {"Trade", "Ticker", "BookDelta", "BookSnapshot", "BookState", "Connection"} <= kinds


async def test_raising_and_async_callbacks_are_isolated(venue: ToyExchange) -> None:
    good: list[Event] = []
    async_got: list[Event] = []

    def bad(event: Event) -> None:
        raise RuntimeError("strategy bug")

    async def slow_async(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        async_got.append(event)

    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        sub_bad = feeder.subscribe("toy", "BTC-USD", DataType.TRADES, bad)
        feeder.subscribe("toy", "BTC-USD", DataType.TRADES, good.append)
        feeder.subscribe("toy", "BTC-USD", DataType.TRADES, slow_async)
        await wait_for(lambda: len(good) >= 10 and len(async_got) >= 10)
        stats = feeder.get_performance_stats()
        assert sub_bad.errors >= 10
        assert stats["toy:BTC-USD"]["callback_errors"] >= 10
        assert any(cb["async"] for cb in stats["callbacks"])
    assert seqs(async_got, "BTC-USD") == sorted(seqs(async_got, "BTC-USD"))


async def test_stream_filters_and_ends_with_the_feeder(venue: ToyExchange) -> None:
    got: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        async with feeder.stream(types={DataType.TRADES}, symbols="ETH-USD") as events:
            async for event in events:
                got.append(event)
                if len(got) == 10:
                    break
            assert events.statistics()["delivered"] >= 10
        assert feeder.get_performance_stats()["streams"] == []
    assert all(isinstance(e, Trade) and e.symbol == "ETH-USD" for e in got)

    # A stream open when the feeder stops ends its iteration.
    async with ToyExchange() as other:
        feeder = Feeder(make_config(other), connectors={"toy": ToyConnector})
        count = 0
        async with feeder, feeder.stream(types=[Trade]) as events, anyio.create_task_group() as tg:

            async def consume() -> None:
                nonlocal count
                async for _ in events:
                    count += 1

            tg.start_soon(consume)
            await wait_for(lambda: count >= 3)
            feeder.dispatcher.close()
        assert count >= 3


async def test_publish_reaches_callbacks_streams_and_buffers(venue: ToyExchange) -> None:
    got: list[Event] = []
    async with Feeder(make_config(venue, sinks=[{"type": "memory"}]), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe("strategy", None, None, got.append)
        signal = Trade("strategy", "BTC-USD", None, 1, 42, 1.0, 2.0, Side.BUY)
        feeder.publish(signal)
        assert got == [signal]
        assert feeder.get_latest_data("strategy", "BTC-USD", DataType.TRADES) == [signal]
        with pytest.raises(TypeError, match="Event"):
            feeder.publish("not an event")  # type: ignore[arg-type]
    sink = feeder.sinks[0].sink
    assert isinstance(sink, MemorySink) and signal in sink.events()


# --- sinks, backpressure and shutdown ---------------------------------------------------------------


class SlowSink(MemorySink):
    delay: ClassVar[float] = 0.05

    async def write_batch(self, events: Sequence[Event]) -> None:
        await anyio.sleep(self.delay)
        await super().write_batch(events)


class FailingSink(MemorySink):
    async def write_batch(self, events: Sequence[Event]) -> None:
        raise OSError("no space left on device")


class SinkPlugin:
    @hookimpl
    def marketfeeder_register_sinks(self, register: Callable[[str, Any], None]) -> None:
        register("slow", SlowSink)
        register("failing", FailingSink)


async def test_block_backpressure_loses_nothing_and_shutdown_flushes(venue: ToyExchange) -> None:
    sinks = [{"type": "slow", "queue_size": 20, "batch_size": 5, "overflow": "block", "flush_interval": 0.01}]
    config = make_config(venue, sinks=sinks, data_types=("trades",))
    async with Feeder(config, plugin_manager=plugin_manager(SinkPlugin()), connectors={"toy": ToyConnector}) as feeder:
        runner = feeder.sinks[0]
        await wait_for(lambda: runner.queue.statistics()["blocked_puts"] > 0, what="the sink queue to fill")
        accepted_before_exit = runner.queue.accepted
    sink = runner.sink
    assert isinstance(sink, SlowSink)
    events = sink.events()
    assert runner.queue.dropped == 0
    assert not any(isinstance(e, Gap) for e in events)
    assert len(events) == runner.queue.accepted >= accepted_before_exit  # everything accepted was written
    for symbol in ("BTC-USD", "ETH-USD"):
        ids = seqs(events, symbol)
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive: nothing lost, order kept
    assert sink.is_closed


async def test_drop_oldest_backpressure_counts_and_marks(venue: ToyExchange) -> None:
    sinks = [{"type": "slow", "queue_size": 5, "batch_size": 5, "overflow": "drop_oldest", "flush_interval": 0.01}]
    config = make_config(venue, sinks=sinks, data_types=("trades",))
    async with Feeder(config, plugin_manager=plugin_manager(SinkPlugin()), connectors={"toy": ToyConnector}) as feeder:
        runner = feeder.sinks[0]
        await wait_for(lambda: runner.queue.dropped >= 20)
        stats = feeder.get_performance_stats()
        dropped = sum(stats[key]["dropped_by_backpressure"] for key in ("toy:BTC-USD", "toy:ETH-USD"))
        assert dropped > 0
    sink = runner.sink
    assert isinstance(sink, SlowSink)
    gaps = [e for e in sink.events() if isinstance(e, Gap)]
    assert gaps and all(g.reason == "backpressure:slow" for g in gaps)
    assert sum(g.count or 0 for g in gaps) == runner.queue.dropped
    assert stats["sinks"]["slow"]["queue"]["dropped_by_backpressure"] > 0


class HangingSink(MemorySink):
    async def write_batch(self, events: Sequence[Event]) -> None:
        await anyio.sleep_forever()


async def test_shutdown_gives_up_on_a_hanging_sink_after_the_timeout(venue: ToyExchange) -> None:
    class Plugin:
        @hookimpl
        def marketfeeder_register_sinks(self, register: Callable[[str, Any], None]) -> None:
            register("hanging", HangingSink)

    config = make_config(venue, sinks=[{"type": "hanging", "flush_interval": 0.01}, {"type": "memory"}],
                         runtime={"shutdown_timeout": 0.3})
    with anyio.fail_after(10):
        async with Feeder(config, plugin_manager=plugin_manager(Plugin()), connectors={"toy": ToyConnector}) as feeder:
            await wait_for(lambda: feeder.sinks[0].queue.accepted > 10)
    hanging, memory = (runner.sink for runner in feeder.sinks)
    assert isinstance(hanging, HangingSink) and hanging.is_closed  # closed even though it never finished
    assert isinstance(memory, MemorySink) and memory.received == feeder.sinks[1].queue.accepted


async def test_an_error_in_the_body_propagates_after_a_clean_shutdown(venue: ToyExchange) -> None:
    config = make_config(venue, sinks=[{"type": "memory", "flush_interval": 0.01}])
    feeder = Feeder(config, connectors={"toy": ToyConnector})

    async def body() -> None:
        async with feeder:
            await wait_for(lambda: feeder.sinks[0].queue.accepted > 5)
            raise ValueError("user code failed")

    with pytest.raises(ValueError, match="user code failed"):
        await body()
    runner = feeder.sinks[0]
    assert runner.closed and runner.written == runner.queue.accepted
    assert not feeder.running
    with pytest.raises(RuntimeError, match="runs once"):
        async with feeder:
            pass


async def test_cancelled_from_outside_still_drains(venue: ToyExchange) -> None:
    config = make_config(venue, sinks=[{"type": "memory", "flush_interval": 5.0}])
    feeder = Feeder(config, connectors={"toy": ToyConnector})
    with anyio.move_on_after(0.5) as scope:
        async with feeder:
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    runner = feeder.sinks[0]
    assert runner.queue.accepted > 0 and runner.written == runner.queue.accepted  # a 5 s batch cut short


async def test_stream_drop_oldest_marks_its_losses(venue: ToyExchange) -> None:
    feeder = Feeder(make_config(venue), connectors={"toy": ToyConnector})
    async with feeder, feeder.stream(types=[Trade], buffer=5, overflow="drop_oldest") as events:
        await wait_for(lambda: events.statistics()["dropped_by_backpressure"] >= 10)
        first = await events.receive()
        assert isinstance(first, Gap) and first.reason == "backpressure:stream#0" and (first.count or 0) >= 1
        assert first.gap_type is DataType.TRADES


async def test_failing_sink_is_stopped_alone(venue: ToyExchange) -> None:
    sinks = [{"type": "failing"}, {"type": "memory", "flush_interval": 0.01}]
    config = make_config(venue, sinks=sinks)
    trades: list[Event] = []
    async with Feeder(config, plugin_manager=plugin_manager(SinkPlugin()), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, Trade, trades.append)
        await wait_for(lambda: feeder.sinks[0].failed)
        count = len(trades)
        await wait_for(lambda: len(trades) > count + 10)
        stats = feeder.get_performance_stats()["sinks"]
        assert stats["failing"]["failed"] and "no space left" in stats["failing"]["error"]
        assert not stats["memory"]["failed"]
    memory = feeder.sinks[1].sink
    assert isinstance(memory, MemorySink) and len(seqs(memory.events(), "BTC-USD")) > 10


# --- connections -----------------------------------------------------------------------------------


def events_of(kind: type[Event], got: list[Event]) -> list[Any]:
    return [e for e in got if isinstance(e, kind)]


async def test_watchdog_reconnects_a_stalled_connection(venue: ToyExchange) -> None:
    got: list[Event] = []
    config = make_config(venue, runtime={"stale_min_seconds": 0.3})
    async with Feeder(config, connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, None, got.append)
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live)
        venue.stall()
        await wait_for(lambda: any(c.status is ConnectionStatus.DOWN for c in events_of(Connection, got)))
        await wait_for(lambda: len([c for c in events_of(Connection, got) if c.status is ConnectionStatus.UP]) == 2)
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live)
        down = next(c for c in events_of(Connection, got) if c.status is ConnectionStatus.DOWN)
        assert "stalled" in down.reason
        conn = feeder.get_performance_stats()["connections"]["toy#0"]
        assert conn["stalls"] >= 1 and conn["reconnects"] >= 1
        assert feeder.get_performance_stats()["toy:BTC-USD"]["reconnects"] >= 1
        states = [s.state for s in events_of(BookState, got) if s.symbol == "BTC-USD"]
        assert BookStatus.STALE in states and states[-1] is BookStatus.LIVE


async def test_watchdog_leaves_a_slow_regular_stream_alone(anyio_backend: str) -> None:
    # One ticker every 0.4 s: longer than the 0.25 s floor, but regular.
    async with ToyExchange(intervals={"ticker": 0.4}) as venue:
        config = make_config(venue, data_types=("ticker",), symbols=("BTC-USD",),
                             runtime={"stale_min_seconds": 0.25, "stale_factor": 5.0})
        tickers: list[Event] = []
        async with Feeder(config, connectors={"toy": ToyConnector}) as feeder:
            feeder.subscribe(None, None, DataType.TICKER, tickers.append)
            await wait_for(lambda: len(tickers) >= 5, limit=10)
            conn = feeder.get_performance_stats()["connections"]["toy#0"]
    assert conn["stalls"] == 0 and conn["reconnects"] == 0 and conn["stale_streams"] == []
    assert venue.connections == 1


async def test_reconnects_after_the_server_drops_the_connection(venue: ToyExchange) -> None:
    got: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, Connection, got.append)
        await wait_for(lambda: feeder.book("toy", "ETH-USD").is_live)
        await venue.drop_all()
        await wait_for(lambda: [c.status for c in events_of(Connection, got)][-1:] == [ConnectionStatus.UP]
                       and len(got) >= 3)
        await wait_for(lambda: feeder.book("toy", "ETH-USD").is_live)
    assert [c.status for c in events_of(Connection, got)][:3] == [
        ConnectionStatus.UP, ConnectionStatus.DOWN, ConnectionStatus.UP]


async def test_decode_errors_are_counted_and_skipped(venue: ToyExchange) -> None:
    trades: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, Trade, trades.append)
        await wait_for(lambda: len(trades) > 0)
        await venue.broadcast_raw("{this is not json")
        await venue.broadcast_raw('{"e": "trade", "s": "BTCUSD"}')  # fields missing
        await venue.broadcast_raw('{"e": "mystery", "s": "BTCUSD", "E": 1}')  # well formed, unknown
        conn = lambda: feeder.get_performance_stats()["connections"]["toy#0"]  # noqa: E731
        await wait_for(lambda: conn()["decode_errors"] >= 2 and conn()["unhandled"] >= 1)
        count = len(trades)
        await wait_for(lambda: len(trades) > count + 5)
        assert conn()["reconnects"] == 0


async def test_gap_on_one_symbol_resyncs_only_that_symbol(venue: ToyExchange) -> None:
    status: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe("toy", None, DataType.STATUS, status.append)
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live and feeder.book("toy", "ETH-USD").is_live)
        eth_changes = len([s for s in events_of(BookState, status) if s.symbol == "ETH-USD"])
        venue.skip_depth("BTCUSD", 3)
        await wait_for(lambda: any(g.symbol == "BTC-USD" for g in events_of(Gap, status)))
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live)
        assert feeder.book("toy", "ETH-USD").is_live
        assert len([s for s in events_of(BookState, status) if s.symbol == "ETH-USD"]) == eth_changes
        stats = feeder.get_performance_stats()
        assert stats["toy:BTC-USD"]["gaps"] >= 1 and stats["toy:BTC-USD"]["resyncs"] >= 1
        assert stats["toy:ETH-USD"]["gaps"] == 0
        btc = [s.state for s in events_of(BookState, status) if s.symbol == "BTC-USD"]
        assert btc[-2:] == [BookStatus.RESYNCING, BookStatus.LIVE]
    gap = next(g for g in events_of(Gap, status) if g.symbol == "BTC-USD")
    assert gap.gap_type is DataType.ORDERBOOK and gap.to_seq - gap.from_seq == 2


async def test_snapshot_errors_are_retried(venue: ToyExchange) -> None:
    venue.refuse_snapshots = True
    async with Feeder(make_config(venue, data_types=("orderbook",)), connectors={"toy": ToyConnector}) as feeder:
        await wait_for(lambda: feeder.statistics()["exchanges"]["toy"]["snapshot_failures"] >= 4)
        assert feeder.book("toy", "BTC-USD").state is BookStatus.SYNCING
        venue.refuse_snapshots = False
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live and feeder.book("toy", "ETH-USD").is_live)


async def test_duplicated_frames_are_dropped(venue: ToyExchange) -> None:
    venue.duplicate_frames = True
    trades: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, Trade, trades.append)
        await wait_for(lambda: len(trades) >= 20 and feeder.book("toy", "BTC-USD").is_live)
        assert feeder.statistics()["exchanges"]["toy"]["duplicates_dropped"] > 0
    for symbol in ("BTC-USD", "ETH-USD"):
        assert len(seqs(trades, symbol)) == len(set(seqs(trades, symbol)))


async def test_add_and_remove_symbols_at_run_time(venue: ToyExchange) -> None:
    trades: list[Event] = []
    async with Feeder(make_config(venue, symbols=("BTC-USD",)), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, Trade, trades.append)
        await wait_for(lambda: len(trades) > 3)
        assert not seqs(trades, "ETH-USD")
        assert await feeder.add_symbols("toy", ["ETH-USD"]) == ["ETH-USD"]
        await wait_for(lambda: len(seqs(trades, "ETH-USD")) > 3 and feeder.book("toy", "ETH-USD").is_live)
        assert feeder.symbols("toy") == ["BTC-USD", "ETH-USD"]
        assert await feeder.add_symbols("toy", ["ETH-USD"]) == []  # already there
        with pytest.raises(FeederError, match="unknown symbol 'XRP-USD'"):
            await feeder.add_symbols("toy", ["XRP-USD"])
        with pytest.raises(FeederError, match="not trading"):
            await feeder.add_symbols("toy", ["DOGE-USD"])
        with pytest.raises(FeederError, match="not running"):
            await feeder.add_symbols("nope", ["BTC-USD"])
        assert await feeder.remove_symbols("toy", ["ETH-USD"]) == ["ETH-USD"]
        await anyio.sleep(0.2)  # unsubscribe round trip
        count = len(seqs(trades, "ETH-USD"))
        btc = len(seqs(trades, "BTC-USD"))
        await wait_for(lambda: len(seqs(trades, "BTC-USD")) > btc + 10)
        assert len(seqs(trades, "ETH-USD")) == count
        with pytest.raises(KeyError, match="no order book"):
            feeder.book("toy", "ETH-USD")
    assert venue.connections == 1  # all without a reconnect


async def test_unknown_symbol_or_exchange_fails_at_start(venue: ToyExchange) -> None:
    with pytest.raises(FeederError, match="unknown symbol 'XRP-USD'"):
        async with Feeder(make_config(venue, symbols=("XRP-USD",)), connectors={"toy": ToyConnector}):
            pass
    with pytest.raises(FeederError, match="not offered"):
        async with Feeder(make_config(venue, data_types=("klines",)), connectors={"toy": ToyConnector}):
            pass
    with pytest.raises(FeederError, match="no connector for exchange 'toy'"):
        async with Feeder(make_config(venue), plugin_manager=plugin_manager()):
            pass


class ShardedToy(ToyConnector):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits(
        max_streams_per_connection=2, max_streams_per_control_message=1, max_control_messages_per_second=100.0
    )


async def test_streams_are_sharded_and_subscriptions_paced(venue: ToyExchange) -> None:
    async with Feeder(make_config(venue), connectors={"toy": ShardedToy}) as feeder:
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live and feeder.book("toy", "ETH-USD").is_live)
        connections = feeder.get_performance_stats()["connections"]
        assert sorted(connections) == ["toy#0", "toy#1", "toy#2"]
        assert all(c["streams"] == 2 and c["connected"] for c in connections.values())
        await feeder.add_symbols("toy", [])  # nothing to do
    assert venue.connections == 3
    assert len(venue.subscribe_requests) == 6 and all(len(r) == 1 for r in venue.subscribe_requests)


class BogusStreamToy(ShardedToy):
    def streams_for(self, instrument: Instrument, data_type: DataType) -> list[str]:
        names = super().streams_for(instrument, data_type)
        return [*names, f"{instrument.native.lower()}@bogus"] if data_type is DataType.TICKER else names


@pytest.mark.parametrize("with_id", [True, False])
async def test_refused_subscriptions_are_reported(venue: ToyExchange, with_id: bool) -> None:
    venue.errors_without_id = not with_id
    config = make_config(venue, symbols=("BTC-USD",), data_types=("trades", "ticker"))
    async with Feeder(config, connectors={"toy": BogusStreamToy}) as feeder:
        conn = lambda: feeder.get_performance_stats()["connections"]  # noqa: E731
        await wait_for(lambda: any(c["subscribe_errors"] for c in conn().values()))
        errors = {name: text for c in conn().values() for name, text in c["subscribe_errors"].items()}
        assert list(errors) == ["btcusd@bogus"] and "invalid stream" in errors["btcusd@bogus"]
        assert sum(c["control_errors"] for c in conn().values()) == 1
        await wait_for(lambda: bool(feeder.get_latest_data("toy", "BTC-USD", DataType.TRADES)))  # the rest streams on


class SilentToy(ToyConnector):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits(subscribe_ack=False, subscribe_timeout=0.3)

    def streams_for(self, instrument: Instrument, data_type: DataType) -> list[str]:
        if data_type is DataType.TICKER:
            return [f"{instrument.native.lower()}@quiet"]
        return super().streams_for(instrument, data_type)


async def test_silent_stream_is_reported_without_acks(venue: ToyExchange) -> None:
    config = make_config(venue, symbols=("BTC-USD",), data_types=("trades", "ticker"))
    async with Feeder(config, connectors={"toy": SilentToy}) as feeder:
        conn = lambda: feeder.get_performance_stats()["connections"]["toy#0"]  # noqa: E731
        await wait_for(lambda: conn()["silent_streams"] != [])
        assert conn()["silent_streams"] == ["btcusd@quiet"]  # the trade stream was confirmed by its events
        assert conn()["reconnects"] == 0


class BudgetToy(ToyConnector):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits(connect_attempts=(2, 1.0))


async def test_connection_attempts_respect_the_budget(venue: ToyExchange) -> None:
    venue.refuse_connections = True
    config = make_config(venue, runtime={"reconnect_initial_delay": 0.01, "reconnect_max_delay": 0.02})
    async with Feeder(config, connectors={"toy": BudgetToy}) as feeder:
        await wait_for(lambda: venue.refused >= 4, limit=10)
        # Without the budget the backoff would allow an attempt every few ms; with it, two per second.
        times = venue.refused_at
        assert all(later - earlier > 0.9 for earlier, later in zip(times, times[2:], strict=False))
        venue.refuse_connections = False
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live, limit=10)
        assert "503" in feeder.get_performance_stats()["connections"]["toy#0"]["last_error"]


class RotatingToy(ToyConnector):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits(max_connection_lifetime=0.8, rotate_margin=0.4)


async def test_planned_rotation_switches_without_loss_or_duplicates(venue: ToyExchange) -> None:
    got: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": RotatingToy}) as feeder:
        feeder.subscribe(None, None, None, got.append)
        await wait_for(lambda: len([c for c in events_of(Connection, got)
                                    if c.status is ConnectionStatus.ROTATED]) >= 2, limit=10)
        assert feeder.book("toy", "BTC-USD").is_live
        assert feeder.get_performance_stats()["connections"]["toy#0"]["rotations"] >= 2
    statuses = [c.status for c in events_of(Connection, got)]
    assert ConnectionStatus.DOWN not in statuses[:-1]  # only the final shutdown closes without a successor
    for symbol in ("BTC-USD", "ETH-USD"):
        ids = seqs(got, symbol)
        assert len(ids) == len(set(ids))
        assert ids == sorted(ids)
    assert not [g for g in events_of(Gap, got)]  # books stayed continuous across rotations


async def test_server_shutdown_notice_rotates(venue: ToyExchange) -> None:
    got: list[Event] = []
    async with Feeder(make_config(venue), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, Connection, got.append)
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live)
        await venue.broadcast_raw('{"e": "shutdown", "E": 1}')
        await wait_for(lambda: any(c.status is ConnectionStatus.ROTATED for c in events_of(Connection, got)))
    assert venue.connections == 2


# --- validation, strategies, lifecycle --------------------------------------------------------------


class EveryFifthTrade:
    name = "every_fifth"
    event_types = (Trade,)

    def __init__(self, options: Any) -> None:
        pass

    def check(self, event: Event, context: Any) -> Verdict | None:
        if event.seq is not None and event.seq % 5 == 0:
            return Verdict(self.name, f"trade {event.seq} is a multiple of five")
        return None


class ValidatorPlugin:
    @hookimpl
    def marketfeeder_register_validators(self, register: Callable[[str, Any], None]) -> None:
        register("every_fifth", EveryFifthTrade)


@pytest.mark.parametrize("policy", ["annotate", "quarantine", "drop"])
async def test_validation_policies(venue: ToyExchange, policy: str) -> None:
    config = make_config(venue, enable_validation=True, data_types=("trades",),
                         validation={"policy": policy, "checks": ["every_fifth"]},
                         sinks=[{"type": "memory", "flush_interval": 0.01}])
    seen: list[Event] = []
    pm = plugin_manager(ValidatorPlugin())
    async with Feeder(config, plugin_manager=pm, connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, None, seen.append)
        await wait_for(lambda: len(seqs(seen, "BTC-USD")) >= 12)
        failures = feeder.get_performance_stats()["toy:BTC-USD"]["validation_failures"]
    assert failures.get("every_fifth", 0) >= 1
    sink = feeder.sinks[0].sink
    assert isinstance(sink, MemorySink)
    stored = sink.events()
    flagged_seen = [s for s in seqs(seen, "BTC-USD") if s % 5 == 0]
    flagged_stored = [s for s in seqs(stored, "BTC-USD") if s % 5 == 0]
    failures_seen = events_of(ValidationFailure, seen)
    if policy == "annotate":
        assert flagged_seen and failures_seen and flagged_stored
    elif policy == "quarantine":
        assert not flagged_seen and failures_seen and flagged_stored
        index = next(i for i, e in enumerate(stored) if isinstance(e, Trade) and e.seq == flagged_stored[0])
        after = stored[index + 1]
        assert isinstance(after, ValidationFailure) and after.action == "quarantine" and after.seq == flagged_stored[0]
    else:
        assert not flagged_seen and not failures_seen and not flagged_stored


async def test_unknown_check_is_a_clear_error(venue: ToyExchange) -> None:
    config = make_config(venue, enable_validation=True, validation={"checks": ["nonsense"]})
    with pytest.raises(FeederError, match="no check named 'nonsense'"):
        async with Feeder(config, plugin_manager=plugin_manager(), connectors={"toy": ToyConnector}):
            pass


class Crashing:
    def __init__(self, options: Any) -> None:
        self.options = options

    async def run(self, feeder: Feeder) -> None:
        await anyio.sleep(0.05)
        raise ValueError("strategy blew up")


class Counting:
    runs: ClassVar[list[Feeder]] = []

    def __init__(self, options: Any) -> None:
        pass

    async def run(self, feeder: Feeder) -> None:
        Counting.runs.append(feeder)
        await anyio.sleep_forever()


class Lifecycle:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def marketfeeder_register_strategies(self, register: Callable[[str, Any], None]) -> None:
        register("crashing", Crashing)
        register("counting", Counting)

    @hookimpl
    def marketfeeder_startup(self, feeder: Feeder) -> None:
        self.calls.append("startup")

    @hookimpl
    def marketfeeder_shutdown(self, feeder: Feeder) -> None:
        self.calls.append("shutdown")
        raise RuntimeError("a broken shutdown hook")


async def test_strategies_and_lifecycle_hooks(venue: ToyExchange) -> None:
    plugin = Lifecycle()
    config = make_config(venue, strategies=[{"type": "crashing"}, {"type": "counting"}])
    trades: list[Event] = []
    async with Feeder(config, plugin_manager=plugin_manager(plugin), connectors={"toy": ToyConnector}) as feeder:
        feeder.subscribe(None, None, Trade, trades.append)
        await wait_for(lambda: bool(feeder.strategy_errors) and len(trades) > 5)
        assert "strategy blew up" in feeder.statistics()["strategy_errors"]["crashing#0"]
        assert feeder in Counting.runs
        assert plugin.calls == ["startup"]
    assert plugin.calls == ["startup", "shutdown"]
    assert any("broken shutdown hook" in error for error in feeder.plugin_errors)


async def test_jsonl_sink_through_the_feeder(venue: ToyExchange, tmp_path: Any) -> None:
    import orjson

    config = make_config(venue, sinks=[{"type": "jsonl", "options": {"target": str(tmp_path)}}])
    async with Feeder(config, connectors={"toy": ToyConnector}) as feeder:
        await wait_for(lambda: feeder.book("toy", "BTC-USD").is_live)
    written = feeder.sinks[0].written
    lines = sum(len(p.read_bytes().splitlines()) for p in tmp_path.glob("*.jsonl"))
    assert lines == written > 0
    first = orjson.loads((tmp_path / "orderbook.jsonl").read_bytes().splitlines()[0])
    assert first["type"] in {"BookSnapshot", "BookDelta"}


class TimedToy(ToyConnector):
    async def server_time(self) -> int | None:
        from marketfeeder.clock import now_ns

        return now_ns() + 250_000_000  # the exchange clock runs 250 ms ahead


async def test_clock_offset_from_server_time(venue: ToyExchange) -> None:
    async with Feeder(make_config(venue, data_types=("trades",)), connectors={"toy": TimedToy}) as feeder:
        await wait_for(lambda: feeder.statistics()["clocks"].get("toy", {}).get("rest_samples", 0) >= 1)
        await wait_for(lambda: feeder.statistics()["clocks"]["toy"]["stream_samples"] >= 5)
        corrected = feeder.corrected_time("toy", 10_000_000_000)
        assert abs((10_000_000_000 - corrected) - 250_000_000) < 50_000_000
