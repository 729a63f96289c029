"""The ``nats`` source: a feeder on "another host" gets the published events back through the core's
source seam (replica books, checkpoints, positioned sinks)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import pytest
from nats_helpers import (
    LEDGERS,
    acks_settled,
    consumer_config,
    nats_source,
    plugin_manager,
    unique_prefixes,
    wait_until,
)
from natsserver import NatsServer

from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BusCheckpoint,
    DataType,
    Event,
    Gap,
    Side,
    Trade,
)
from marketfeeder.runtime.feeder import Feeder
from marketfeeder.testing.contract import sample_events
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.jetstream import JetStream
from marketfeeder_nats.sink import NatsSink
from marketfeeder_nats.source import NatsSource
from marketfeeder_nats.subjects import stream_name

pytestmark = pytest.mark.anyio
T0 = 1_767_225_600_000_000_000


def trades(n: int, start: int = 0) -> list[Event]:
    return [Trade("binance", "ETH-USDT", T0 + i, T0 + 10 + i, i, 2000.0 + i, 0.5, Side.SELL, None)
            for i in range(start, start + n)]


async def publish(url: str, prefixes: dict[str, str], events: list[Event], **options: Any) -> None:
    sink = NatsSink({"url": url, "storage": "memory", **prefixes, **options})
    await sink.open()
    await sink.write_batch(events)
    await sink.close()
    assert sink.acked == len(events)


def stored(feeder: Feeder) -> list[Event]:
    return feeder.sinks[0].sink.events()  # type: ignore[attr-defined, no-any-return]


def market(events: list[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, BusCheckpoint | Gap)]


async def consume(url: str, prefixes: dict[str, str], until: int, *, settle: float = 0.0,
                  **options: Any) -> tuple[list[Event], NatsSource]:
    """What a consumer feeder's memory sink stores until ``until`` market events arrived (then
    ``settle`` s more, to catch extras); the acks are settled before it stops."""
    with anyio.fail_after(20):
        async with Feeder(consumer_config(url, prefixes, **options)) as feeder:
            source = nats_source(feeder)
            await wait_until(lambda: len(market(stored(feeder))) >= until)
            await anyio.sleep(settle)
            await acks_settled(source)
    assert not feeder.source_errors
    return stored(feeder), source


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        NatsSource({"topic": "x"})
    with pytest.raises(ValueError, match="durable must be a plain name"):
        NatsSource({"durable": "a.b"})
    with pytest.raises(ValueError, match="start must be"):
        NatsSource({"start": "yesterday-ish"})
    with pytest.raises(ValueError, match="unknown data type"):
        NatsSource({"types": ["candles"]})
    source = NatsSource({"exchange": "binance", "types": "trades", "start": 0})
    assert source.options.filter_subject("trades") == "md.binance.*.trades.*"
    assert source.options.start_time == "1970-01-01T00:00:00.000000000Z"


async def test_feeder_on_another_host_gets_the_same_events(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    events = sample_events("binance") + trades(200)
    await publish(nats_server.url, prefixes, events)
    config = consumer_config(nats_server.url, prefixes, durable="app1")
    seen: list[Event] = []
    async with Feeder(config) as feeder:
        feeder.subscribe("binance", "ETH-USDT", DataType.TRADES, seen.append)
        with anyio.fail_after(20):
            await wait_until(lambda: any(isinstance(e, Trade) and e.seq == 199 for e in stored(feeder)))
            await wait_until(lambda: feeder.book("binance", "BTC-USDT").update_id == 16)
        book = feeder.book("binance", "BTC-USDT")
        assert book.is_live
        # The sample's image and its one diff, rebuilt by the replica book.
        assert book.top(10) == ([(99.5, 2.0)], [(101.0, 2.0), (101.5, 3.0)])
        latest = feeder.get_latest_data("binance", "ETH-USDT", DataType.TRADES)
        statistics = feeder.statistics()["sources"]["nats#0"]
    got = stored(feeder)
    books = (BookSnapshot, BookDelta, BookState)
    expected = [e for e in events if not isinstance(e, books)]
    assert sorted([e for e in got if not isinstance(e, (*books, BusCheckpoint))], key=repr) == sorted(expected, key=repr)
    assert [e for e in got if isinstance(e, Trade) and e.symbol == "ETH-USDT"] == trades(200)  # in order
    assert seen == trades(200)
    assert latest == [trades(200)[-1]]
    assert statistics["source"]["delivered"] == len(events)
    assert statistics["books"] == {"binance:BTC-USDT": "live"}
    assert not feeder.source_errors


async def test_checkpoints_follow_their_events(nats_server: NatsServer) -> None:
    """Every batch reaches the sink as its events then its BusCheckpoint, which counts them."""
    prefixes = unique_prefixes()
    await publish(nats_server.url, prefixes, trades(300))
    got, source = await consume(nats_server.url, prefixes, 300, durable="ckpt", types=["trades"], batch=32)
    stream = stream_name(prefixes["stream_prefix"], "trades")
    checkpoints = [e for e in got if isinstance(e, BusCheckpoint)]
    assert len(checkpoints) >= 300 // 32
    assert all((c.exchange, c.symbol, c.consumer) == ("nats", stream, "ckpt") for c in checkpoints)
    assert [c.seq for c in checkpoints] == sorted({c.seq for c in checkpoints})  # strictly increasing
    assert checkpoints[-1].seq == 300 and sum(c.count for c in checkpoints) == 300
    assert isinstance(got[-1], BusCheckpoint)
    run = 0
    for event in got:  # each checkpoint closes exactly the run of events since the previous one
        if isinstance(event, BusCheckpoint):
            assert event.count == run
            run = 0
        else:
            run += 1
    assert source.statistics()["checkpoints"] == len(checkpoints)


async def test_durable_consumer_resumes_without_loss_or_duplicates(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    options: dict[str, Any] = {"durable": "resume", "types": ["trades"], "batch": 16}
    await publish(nats_server.url, prefixes, trades(100))
    first, _ = await consume(nats_server.url, prefixes, 100, **options)
    await publish(nats_server.url, prefixes, trades(50, start=100))
    second, _ = await consume(nats_server.url, prefixes, 50, settle=0.3, **options)
    assert market(first) == trades(100)
    assert market(second) == trades(50, start=100)


async def test_positioned_sink_resumes_exactly_after_its_commit(nats_server: NatsServer) -> None:
    """The bus acked more than the sink committed (the process died before its commit): the next
    run starts right after the sink's position, so the sink holds every event exactly once."""
    prefixes = unique_prefixes()
    ledger_name = f"ledger-{prefixes['stream_prefix']}"
    stream = stream_name(prefixes["stream_prefix"], "trades")
    pm = plugin_manager()
    config = consumer_config(nats_server.url, prefixes, sinks=[{"type": "ledger", "options": {"ledger": ledger_name}}],
                             durable="exact", types=["trades"], batch=20)
    await publish(nats_server.url, prefixes, trades(100))
    with anyio.fail_after(20):
        async with Feeder(config, plugin_manager=pm) as feeder:
            ledger = LEDGERS[ledger_name]
            await wait_until(lambda: len(ledger.events()) >= 40)
            ledger.frozen = True  # what follows is acked on the bus but never committed
            await publish(nats_server.url, prefixes, trades(100, start=100))
            await wait_until(lambda: nats_source(feeder).last_stream_seq.get(stream, 0) == 200)
            await acks_settled(nats_source(feeder))
        committed = ledger.positions[("nats", "exact")][stream]
        assert 40 <= committed < 200
        assert ledger.events() == trades(committed)
        ledger.frozen = False
        await publish(nats_server.url, prefixes, trades(50, start=200))

        async with Feeder(config, plugin_manager=pm) as feeder:  # a restart: resume from the ledger
            source = nats_source(feeder)
            await wait_until(lambda: ledger.positions[("nats", "exact")][stream] == 250)
        assert source.positions == {stream: committed}
        assert source.repositioned == 1  # the durable had acked up to 200: it was moved back
        assert ledger.events() == trades(250)
        assert not feeder.source_errors

        # A clean restart: the durable is where the ledger is, so it is kept.
        await publish(nats_server.url, prefixes, trades(10, start=250))
        async with Feeder(config, plugin_manager=pm) as feeder:
            source = nats_source(feeder)
            await wait_until(lambda: ledger.positions[("nats", "exact")][stream] == 260)
        assert source.positions == {stream: 250} and source.repositioned == 0
        assert ledger.events() == trades(260)


async def test_positions_on_a_new_durable_start_after_the_commit(nats_server: NatsServer) -> None:
    """A sink that holds positions for a durable the server lost: created at position + 1, nothing older."""
    prefixes = unique_prefixes()
    ledger_name = f"ledger-{prefixes['stream_prefix']}"
    stream = stream_name(prefixes["stream_prefix"], "trades")
    LEDGERS.pop(ledger_name, None)
    pm = plugin_manager()
    config = consumer_config(nats_server.url, prefixes, sinks=[{"type": "ledger", "options": {"ledger": ledger_name}}],
                             durable="fresh", types=["trades"])
    await publish(nats_server.url, prefixes, trades(30))
    with anyio.fail_after(20):
        async with Feeder(config, plugin_manager=pm) as feeder:
            ledger = LEDGERS[ledger_name]
            await wait_until(lambda: ledger.positions.get(("nats", "fresh"), {}).get(stream) == 30)
        async with NatsClient(nats_server.url) as nc:
            assert await JetStream(nc).delete_consumer(stream, "fresh")
        await publish(nats_server.url, prefixes, trades(5, start=30))
        async with Feeder(config, plugin_manager=pm) as feeder:
            await wait_until(lambda: ledger.positions[("nats", "fresh")][stream] == 35)
            await anyio.sleep(0.2)
    assert ledger.events() == trades(35)
    assert nats_source(feeder).positions == {stream: 30}


async def test_replay_from_a_start_time(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    await publish(nats_server.url, prefixes, trades(30))
    await anyio.sleep(0.05)
    start = time.time_ns()
    await anyio.sleep(0.05)
    await publish(nats_server.url, prefixes, trades(20, start=30))
    options: dict[str, Any] = {"durable": "replay", "types": ["trades"], "start": start}
    got, _ = await consume(nats_server.url, prefixes, 20, settle=0.3, **options)
    assert market(got) == trades(20, start=30)
    warm: dict[str, Any] = {**options, "durable": "warm", "start": "last_per_subject"}
    got, _ = await consume(nats_server.url, prefixes, 1, settle=0.3, **warm)
    assert market(got) == trades(20, start=30)[-1:]  # last value per subject


async def test_consumer_behind_retention_gets_an_explicit_gap(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    keep = {"retention": {"trades": 1.0}}
    options: dict[str, Any] = {"durable": "slow", "types": ["trades"]}
    await publish(nats_server.url, prefixes, trades(10), **keep)
    got, _ = await consume(nats_server.url, prefixes, 10, **options)
    assert market(got) == trades(10)
    await publish(nats_server.url, prefixes, trades(10, start=10), **keep)  # never read ...
    async with NatsClient(nats_server.url) as nc:
        js = JetStream(nc)
        with anyio.fail_after(15):
            while (await js.stream_info(stream_name(prefixes["stream_prefix"], "trades")) or {})["state"]["messages"]:  # noqa: ASYNC110 - polling what has no event
                await anyio.sleep(0.1)  # ... and expired by max_age
    await publish(nats_server.url, prefixes, trades(5, start=20), **keep)
    got, source = await consume(nats_server.url, prefixes, 5, **options)
    gap, checkpoint, *rest = got
    assert isinstance(gap, Gap) and isinstance(checkpoint, BusCheckpoint)
    assert (gap.gap_type, gap.from_seq, gap.to_seq, gap.count) == (DataType.TRADES, 11, 20, 10)
    assert "retention" in gap.reason
    assert (checkpoint.seq, checkpoint.count) == (20, 1)  # the removed range is behind us
    assert market(rest) == trades(5, start=20)
    assert source.gaps == 1


async def test_consumer_and_publisher_resume_after_a_server_crash(own_nats_server: NatsServer) -> None:
    server = own_nats_server.start()
    prefixes = unique_prefixes()
    sink = NatsSink({"url": server.url, "ack_timeout": 0.5, **prefixes})  # file storage: survives kill -9
    await sink.open()
    events = trades(600)
    config = consumer_config(server.url, prefixes, durable="crash", types=["trades"], expires=1.0)
    with anyio.fail_after(30):
        async with Feeder(config) as feeder:
            await sink.write_batch(events[:300])
            await sink.flush()
            await wait_until(lambda: len(market(stored(feeder))) >= 300)
            server.kill()
            server.start()
            await sink.write_batch(events[300:])
            await sink.flush()
            await wait_until(lambda: len(market(stored(feeder))) >= 600)
            await anyio.sleep(0.2)
            source = nats_source(feeder)
    assert sink.nc.reconnects >= 1
    await sink.close()
    # In order, nothing lost; the feeder drops any repeated trade id, and after the reconnect the
    # consumer restarted right after the last message it handled.
    assert market(stored(feeder)) == events
    assert source.repositioned >= 1
    counts = Counter(c.symbol for c in stored(feeder) if isinstance(c, BusCheckpoint))
    assert list(counts) == [stream_name(prefixes["stream_prefix"], "trades")]


async def test_consume_hands_the_raw_events_to_a_callable(nats_server: NatsServer) -> None:
    """Without a feeder (tools, benchmarks): the events in bus order, no checkpoints."""
    prefixes = unique_prefixes()
    await publish(nats_server.url, prefixes, trades(40))
    source = NatsSource({"url": nats_server.url, "durable": "raw", "types": ["trades"], "batch": 8, **prefixes})
    got: list[Event] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.consume, got.append)
            await wait_until(lambda: len(got) >= 40)
            tg.cancel_scope.cancel()
    assert got == trades(40)
    assert source.statistics()["checkpoints"] >= 5
