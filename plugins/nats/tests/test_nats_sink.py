"""The nats sink against a real JetStream: subjects, streams, acks, de-duplication, server crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from nats_helpers import read_all, read_stream, unique_prefixes
from natsserver import NatsServer

from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    DataType,
    Event,
    Gap,
    Side,
    Trade,
)
from marketfeeder.testing.contract import SinkContract, sample_events
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.jetstream import JetStream
from marketfeeder_nats.sink import NatsSink
from marketfeeder_nats.subjects import msg_id, shard_of, stream_name

T0 = 1_767_225_600_000_000_000


def trades(n: int, start: int = 0, symbol: str = "BTC-USDT") -> list[Event]:
    return [Trade("binance", symbol, T0 + i, T0 + 10 + i, i, 100.0 + i, 0.5, Side.BUY, T0 + i) for i in range(start, start + n)]


class TestNatsSinkContract(SinkContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url

    def make_sink(self, tmp_path: Path) -> NatsSink:
        return NatsSink({"url": self.url, "storage": "memory", "window": 64, **unique_prefixes()})

    async def read_back(self, sink: Any) -> list[Event]:
        return await read_all(self.url, sink.options.stream_prefix)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        NatsSink({"nope": 1})
    with pytest.raises(ValueError, match="overflow"):
        NatsSink({"overflow": "explode"})
    with pytest.raises(ValueError, match="retention: unknown data type"):
        NatsSink({"retention": {"candles": 1}})
    with pytest.raises(ValueError, match="shards must be positive"):
        NatsSink({"shards": 0})


def test_subjects_shards_and_ids() -> None:
    sink = NatsSink({"shards": {"default": 8, "binance": 4}})
    snap = BookSnapshot("binance", "BTC-USDT", None, 1, 10, ((1.0, 1.0),), ())
    delta = BookDelta("binance", "BTC-USDT", 2, 3, 12, 11, (), ())
    state = BookState("binance", "BTC-USDT", None, 4, 12, BookStatus.LIVE)
    gap = Gap("binance", "BTC-USDT", None, 5, None, DataType.ORDERBOOK, 13, 14, "x")
    shard = shard_of("binance", "BTC-USDT", 4)
    book = f"md.binance.{shard}.orderbook.BTC-USDT"
    assert {sink.subject_for(e) for e in (snap, delta, state, gap)} == {book}  # one ordered subject per book
    assert sink.subject_for(trades(1)[0]) == f"md.binance.{shard}.trades.BTC-USDT"
    other = Trade("backpack", "SOL.X", None, 1, 1, 1.0, 1.0, Side.BUY)
    assert sink.subject_for(other) == f"md.backpack.{shard_of('backpack', 'SOL.X', 8)}.trades.SOL_X"
    assert shard_of("binance", "BTC-USDT", 4) == shard  # stable across processes: CRC-32, not hash()
    # ids come from exchange sequences: the same trade seen twice has one id, two trades two ids
    a, b = trades(2)
    seen_elsewhere = Trade(a.exchange, a.symbol, a.exchange_ts, a.receive_ts + 777, a.seq, a.price, a.size, a.side)
    assert msg_id(a) == msg_id(seen_elsewhere)  # another feeder's copy (other receive time), same id
    assert msg_id(a) != msg_id(b)
    assert msg_id(a) == "binance:BTC-USDT:Trade:s0"


@pytest.mark.anyio
async def test_streams_created_with_retention(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "retention": {"trades": 60}, **prefixes})
    await sink.open()
    await sink.close()
    async with NatsClient(nats_server.url) as nc:
        js = JetStream(nc)
        trades_info = await js.stream_info(stream_name(prefixes["stream_prefix"], "trades"))
        book_info = await js.stream_info(stream_name(prefixes["stream_prefix"], "orderbook"))
    assert trades_info is not None and book_info is not None
    assert trades_info["config"]["max_age"] == 60 * 10**9
    assert trades_info["config"]["subjects"] == [f"{prefixes['subject_prefix']}.*.*.trades.*"]
    assert book_info["config"]["max_age"] == 3600 * 10**9
    # A second start with other settings updates the stream in place.
    sink2 = NatsSink({"url": nats_server.url, "storage": "memory", "retention": {"trades": 120}, **prefixes})
    await sink2.open()
    await sink2.close()
    async with NatsClient(nats_server.url) as nc:
        info = await JetStream(nc).stream_info(stream_name(prefixes["stream_prefix"], "trades"))
    assert info is not None and info["config"]["max_age"] == 120 * 10**9


@pytest.mark.anyio
async def test_window_and_dedup_of_a_second_publisher(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    events = trades(500)
    first = NatsSink({"url": nats_server.url, "storage": "memory", "window": 32, **prefixes})
    second = NatsSink({"url": nats_server.url, "storage": "memory", "window": 32, **prefixes})
    await first.open()
    await second.open()
    await first.write_batch(events[:300])
    await second.write_batch(events[200:])  # overlaps 200..299: a make-before-break hand-over
    await first.close()
    await second.close()
    assert first.acked == 300 and second.acked == 300
    assert second.duplicates == 100
    stored = await read_stream(nats_server.url, stream_name(prefixes["stream_prefix"], "trades"))
    assert [e for _s, _subj, _h, e in stored] == events
    assert all(h["Nats-Msg-Id"] == msg_id(e) for _s, _subj, h, e in stored)


@pytest.mark.anyio
async def test_server_crash_and_restart_loses_nothing_acknowledged(own_nats_server: NatsServer) -> None:
    server = own_nats_server.start()
    prefixes = unique_prefixes()
    sink = NatsSink({"url": server.url, "window": 256, "ack_timeout": 0.5, "flush_timeout": 30, **prefixes})
    await sink.open()
    events = trades(3000)
    await sink.write_batch(events[:1000])
    await sink.flush()
    await sink.write_batch(events[1000:1500])  # some of these may be in flight when the server dies
    server.kill()
    server.start()  # same port, same store directory
    await sink.write_batch(events[1500:])
    with anyio.fail_after(30):
        await sink.flush()
    stats = sink.statistics()
    await sink.close()
    assert stats["unacked"] == 0 and stats["client"]["reconnects"] >= 1
    stored = await read_stream(server.url, stream_name(prefixes["stream_prefix"], "trades"))
    assert [e for _s, _subj, _h, e in stored] == events  # all, in order, no duplicates


@pytest.mark.anyio
async def test_drop_oldest_marks_a_gap_when_acks_never_come(nats_server: NatsServer) -> None:
    # No stream for these subjects: every publish gets "no responders", so nothing is ever acked.
    sink = NatsSink({"url": nats_server.url, "create_streams": False, "window": 4, "overflow": "drop_oldest",
                     "ack_timeout": 0.05, **unique_prefixes()})
    await sink.open()
    await sink.write_batch(trades(6))
    assert sink.dropped >= 2
    gaps = [p.event for p in sink._window.values() if isinstance(p.event, Gap)]
    assert gaps and all(g.gap_type is DataType.TRADES and g.count == 1 for g in gaps)
    assert {g.from_seq for g in gaps} <= {0, 1, 2, 3, 4, 5}
    sink.options.flush_timeout = 0.3
    with pytest.raises(TimeoutError, match="not acknowledged"):
        await sink.flush()
    sink._window.clear()
    await sink.close()


@pytest.mark.anyio
async def test_every_type_lands_on_its_stream(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", **prefixes})
    await sink.open()
    events = sample_events("binance")
    await sink.write_batch(events)
    await sink.close()
    book = await read_stream(nats_server.url, stream_name(prefixes["stream_prefix"], "orderbook"))
    assert [type(e).__name__ for _s, _subj, _h, e in book] == ["BookSnapshot", "BookDelta", "BookState", "Gap"]
    assert len({subj for _s, subj, _h, _e in book}) == 1
    assert sorted(await read_all(nats_server.url, prefixes["stream_prefix"]), key=repr) == sorted(events, key=repr)
