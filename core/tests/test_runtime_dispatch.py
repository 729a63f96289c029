"""The Dispatcher on its own: routing, filters, quarantine, publish without waiting, failing sinks."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from marketfeeder.models import BookState, BookStatus, DataType, Event, Gap, Side, Trade, ValidationFailure
from marketfeeder.runtime.dispatch import Dispatcher, SinkRunner
from marketfeeder.sinks.memory import MemorySink


def trade(i: int, exchange: str = "x", symbol: str = "BTC-USDT") -> Trade:
    return Trade.fast(exchange, symbol, i, 1_000 + i, i, 1.0, 1.0, Side.BUY, None)


def dispatcher() -> Dispatcher:
    return Dispatcher(buffer_size=4, subscriber_queue_size=10, slow_callback_ms=1000)


def test_filters_and_route_refresh() -> None:
    d = dispatcher()
    by_exchange: list[Event] = []
    by_class: list[Event] = []
    d.deliver([trade(0)])  # a route exists before anyone subscribes
    sub = d.subscribe("x", None, None, by_exchange.append)
    d.subscribe(None, "ETH-USDT", Trade, by_class.append)
    d.deliver([trade(1), trade(2, "y"), trade(3, symbol="ETH-USDT")])
    assert [e.seq for e in by_exchange] == [1, 3]
    assert [e.seq for e in by_class] == [3]
    sub.close()
    d.deliver([trade(4)])
    assert [e.seq for e in by_exchange] == [1, 3]
    assert [e.seq for e in d.latest("x", "BTC-USDT", DataType.TRADES, 10)] == [4, 1, 0]


def test_ring_buffers_are_bounded_and_per_data_type() -> None:
    d = dispatcher()
    d.deliver([trade(i) for i in range(10)])
    d.deliver([BookState.fast("x", "BTC-USDT", None, 5, None, BookStatus.LIVE, "")])
    assert [e.seq for e in d.latest("x", "BTC-USDT", DataType.TRADES, 100)] == [9, 8, 7, 6]
    assert len(d.latest("x", "BTC-USDT", DataType.STATUS, 100)) == 1
    assert d.latest("x", "NOPE-USDT", DataType.TRADES, 1) == []


def test_status_events_update_symbol_stats() -> None:
    d = dispatcher()
    d.deliver([
        BookState.fast("x", "BTC-USDT", None, 1, None, BookStatus.RESYNCING, "gap"),
        Gap.fast("x", "BTC-USDT", None, 1, None, DataType.ORDERBOOK, 5, 7, "ids missing", None),
        Gap.fast("x", "BTC-USDT", None, 1, None, DataType.TRADES, None, None, "backpressure:s", 3),
        ValidationFailure.fast("x", "BTC-USDT", None, 1, 1, "prices", "bad", "annotate", "Trade", 1),
    ])
    stats = d.stats_for("x", "BTC-USDT").as_dict(10)
    assert stats["resyncs"] == 1 and stats["gaps"] == 1  # backpressure markers are not exchange gaps
    assert stats["book_state"] == "resyncing"
    assert stats["validation_failures"] == {"prices": 1} and stats["error_count"] == 1
    assert stats["message_count"] == 0  # control events are not market messages


def test_quarantined_events_reach_sinks_only() -> None:
    d = dispatcher()
    seen: list[Event] = []
    d.subscribe(None, None, None, seen.append)
    runner = SinkRunner("mem", MemorySink(), queue_size=10, overflow="block", batch_size=10, flush_interval=0.01)
    d.add_sink(runner)
    d.deliver([trade(1), trade(2)], quarantined={1})
    assert [e.seq for e in seen] == [1]
    assert [e.seq for e in runner.queue._items] == [1, 2]
    assert [e.seq for e in d.latest("x", "BTC-USDT", DataType.TRADES, 5)] == [1]


def test_raising_and_slow_sync_callbacks_are_counted() -> None:
    d = Dispatcher(buffer_size=4, subscriber_queue_size=10, slow_callback_ms=0.001)
    after: list[Event] = []

    def boom(event: Event) -> None:
        raise KeyError("oops")

    def slow(event: Event) -> None:
        sum(range(20_000))

    bad = d.subscribe(None, None, None, boom)
    lazy = d.subscribe(None, None, None, slow)
    d.subscribe(None, None, None, after.append)
    d.deliver([trade(i) for i in range(3)])
    assert bad.errors == 3 and len(after) == 3
    assert lazy.slow == 3 and lazy.statistics()["max_ms"] > 0
    assert d.stats_for("x", "BTC-USDT").callback_errors == 3


def test_subscribe_rejects_bad_arguments() -> None:
    d = dispatcher()
    with pytest.raises(TypeError, match="callable"):
        d.subscribe(None, None, None, "print")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DataType"):
        d.subscribe(None, None, 42, print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown data type"):
        d.subscribe(None, None, "candles", print)


def test_publish_nowait_keeps_a_full_block_sink_bounded() -> None:
    d = dispatcher()
    runner = SinkRunner("mem", MemorySink(), queue_size=3, overflow="block", batch_size=10, flush_interval=0.01)
    d.add_sink(runner)
    for i in range(20):
        d.publish_nowait(trade(i))
    stats = runner.queue.statistics()
    assert stats["queued"] == 3 and stats["parked"] <= 4
    assert stats["dropped_by_backpressure"] == 20 - stats["queued"] - stats["parked"]
    assert d.stats_for("x", "BTC-USDT").dropped_by_backpressure == stats["dropped_by_backpressure"]


class BrokenSink(MemorySink):
    async def write_batch(self, events: Sequence[Event]) -> None:
        raise OSError("gone")


@pytest.mark.anyio
async def test_a_failed_sink_is_dropped_from_routes() -> None:
    d = dispatcher()
    broken = SinkRunner("broken", BrokenSink(), queue_size=2, overflow="block", batch_size=1, flush_interval=0.01)
    await broken.open()
    d.add_sink(broken)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(broken.run)
            await d.deliver_wait([trade(0)])
            while not broken.failed:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            # The failed sink no longer takes events, so a "block" sink cannot stall the feed.
            for i in range(1, 50):
                assert d.deliver([trade(i)]) is None
    assert broken.closed and "gone" in (broken.error or "")
    assert broken.statistics()["failed"]


@pytest.mark.anyio
async def test_async_callback_runs_in_its_own_task() -> None:
    d = dispatcher()
    got: list[int | None] = []

    async def handler(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        got.append(event.seq)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            sub = d.subscribe(None, None, Trade, handler)
            d.attach(tg)
            d.deliver([trade(i) for i in range(5)])
            while len(got) < 5:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            d.close()
    assert got == [0, 1, 2, 3, 4] and sub.is_async and sub.calls == 5


def test_inlined_latency_recording_matches_the_histogram() -> None:
    """deliver() inlines LatencyHistogram.record for speed: both must put a latency in the same bucket."""
    from marketfeeder.runtime.stats import LatencyHistogram

    latencies = [0, 1, 15, 16, 17, 999, 1_000_000, 2_345_678, 10**9, 3 * 10**12, 10**18]
    d = dispatcher()
    base = 2 * 10**18
    d.deliver([Trade.fast("x", "BTC-USDT", base - ns, base, i, 1.0, 1.0, Side.BUY, None)
               for i, ns in enumerate(latencies)])
    got = d.stats_for("x", "BTC-USDT").exchange_latency
    reference = LatencyHistogram()
    for ns in latencies:
        reference.record(ns)
    assert got._buckets == reference._buckets
    assert (got.total_ns, got.max_ns) == (reference.total_ns, reference.max_ns)
