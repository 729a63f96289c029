"""The nats-source strategy: a feeder on "another host" gets the published events back."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from nats_helpers import unique_prefixes
from natsserver import NatsServer

from marketfeeder.models import DataType, Event, Gap, Side, Trade
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


async def collect(source: NatsSource, until: int, *, settle: float = 0.0) -> list[Event]:
    """Events the source delivers until ``until`` arrived (then ``settle`` s more, to catch extras)."""
    got: list[Event] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.consume, got.append)
            while len([e for e in got if not isinstance(e, Gap)]) < until:  # noqa: ASYNC110 - polling what has no event
                await anyio.sleep(0.02)
            await anyio.sleep(settle)
            await _acks_settled(source)
            tg.cancel_scope.cancel()
    return got


async def _acks_settled(source: NatsSource) -> None:
    """Wait until the server has every ack (so a restarted consumer resumes exactly after them)."""
    o = source.options
    async with NatsClient(o.url) as nc:
        js = JetStream(nc)
        for token in o.types:
            stream = stream_name(o.stream_prefix, token)
            for _ in range(200):
                info = await js.consumer_info(stream, o.durable)
                if info is None or info["num_ack_pending"] == 0:
                    break
                await anyio.sleep(0.02)


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
    config = {
        "exchanges": {},
        "sinks": [{"type": "memory", "options": {}}],
        "strategies": [{"type": "nats-source", "options": {"url": nats_server.url, "durable": "app1", **prefixes}}],
    }
    seen: list[Event] = []
    async with Feeder(config) as feeder:
        feeder.subscribe("binance", "ETH-USDT", DataType.TRADES, seen.append)
        memory = feeder.sinks[0].sink
        with anyio.fail_after(20):
            while len(memory) < len(events):  # type: ignore[arg-type]  # noqa: ASYNC110
                await anyio.sleep(0.05)
        latest = feeder.get_latest_data("binance", "ETH-USDT", DataType.TRADES)
    stored = memory.events()  # type: ignore[attr-defined]
    assert sorted(stored, key=repr) == sorted(events, key=repr)
    assert [e for e in stored if isinstance(e, Trade) and e.symbol == "ETH-USDT"] == trades(200)  # in order
    assert seen == trades(200)
    assert latest == [trades(200)[-1]]
    assert not feeder.strategy_errors


async def test_durable_consumer_resumes_without_loss_or_duplicates(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    options = {"url": nats_server.url, "durable": "resume", "types": ["trades"], "batch": 16, **prefixes}
    await publish(nats_server.url, prefixes, trades(100))
    first = await collect(NatsSource(options), 100)
    await publish(nats_server.url, prefixes, trades(50, start=100))
    second = await collect(NatsSource(options), 50, settle=0.3)
    assert first == trades(100)
    assert second == trades(50, start=100)


async def test_replay_from_a_start_time(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    await publish(nats_server.url, prefixes, trades(30))
    await anyio.sleep(0.05)
    start = time.time_ns()
    await anyio.sleep(0.05)
    await publish(nats_server.url, prefixes, trades(20, start=30))
    options = {"url": nats_server.url, "durable": "replay", "types": ["trades"], "start": start, **prefixes}
    assert await collect(NatsSource(options), 20, settle=0.3) == trades(20, start=30)
    warm = {**options, "durable": "warm", "start": "last_per_subject"}
    assert await collect(NatsSource(warm), 1, settle=0.3) == trades(20, start=30)[-1:]  # last value per subject


async def test_consumer_behind_retention_gets_an_explicit_gap(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    keep = {"retention": {"trades": 1.0}}
    options = {"url": nats_server.url, "durable": "slow", "types": ["trades"], **prefixes}
    await publish(nats_server.url, prefixes, trades(10), **keep)
    assert await collect(NatsSource(options), 10) == trades(10)
    await publish(nats_server.url, prefixes, trades(10, start=10), **keep)  # never read ...
    async with NatsClient(nats_server.url) as nc:
        js = JetStream(nc)
        with anyio.fail_after(15):
            while (await js.stream_info(stream_name(prefixes["stream_prefix"], "trades")) or {})["state"]["messages"]:  # noqa: ASYNC110 - polling what has no event
                await anyio.sleep(0.1)  # ... and expired by max_age
    await publish(nats_server.url, prefixes, trades(5, start=20), **keep)
    source = NatsSource(options)
    got = await collect(source, 5)
    gap, *rest = got
    assert isinstance(gap, Gap)
    assert (gap.gap_type, gap.from_seq, gap.to_seq, gap.count) == (DataType.TRADES, 11, 20, 10)
    assert "retention" in gap.reason
    assert rest == trades(5, start=20)
    assert source.gaps == 1


async def test_consumer_and_publisher_resume_after_a_server_crash(own_nats_server: NatsServer) -> None:
    server = own_nats_server.start()
    prefixes = unique_prefixes()
    sink = NatsSink({"url": server.url, "ack_timeout": 0.5, **prefixes})  # file storage: survives kill -9
    await sink.open()
    source = NatsSource({"url": server.url, "durable": "crash", "types": ["trades"], "expires": 1.0, **prefixes})
    got: list[Event] = []
    events = trades(600)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.consume, got.append)
            await sink.write_batch(events[:300])
            await sink.flush()
            while len(got) < 300:  # noqa: ASYNC110 - polling the consumer's progress
                await anyio.sleep(0.02)
            server.kill()
            server.start()
            await sink.write_batch(events[300:])
            await sink.flush()
            while len({e.seq for e in got}) < 600:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert sink.nc.reconnects >= 1
    await sink.close()
    # At-least-once: every event arrives, in order; a redelivery can only repeat one already seen.
    unique: list[Event] = []
    for event in got:
        if not unique or event.seq > unique[-1].seq:  # type: ignore[operator]
            unique.append(event)
        else:
            assert event in unique
    assert unique == events
