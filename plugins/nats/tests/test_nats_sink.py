"""The nats sink against a real JetStream: subjects, streams, acks, de-duplication, server crash."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats_helpers import consumer_config, read_all, read_stream, unique_prefixes, wait_until
from natsserver import NatsServer

from marketfeeder.book import BookSync, OrderBook
from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    BusCheckpoint,
    DataType,
    Event,
    Gap,
    Side,
    Trade,
)
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.runtime.feeder import Feeder
from marketfeeder.testing.contract import SinkContract, sample_events
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.codec import encode_event
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
    assert isinstance(a, Trade)
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


@pytest.mark.anyio
async def test_a_relaying_feeder_does_not_publish_its_own_bus_positions(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", **prefixes})
    await sink.open()
    trades = [e for e in sample_events("binance") if isinstance(e, Trade)]
    checkpoint = BusCheckpoint("nats", "MD_TRADES", None, T0, 41, "app", len(trades))
    await sink.write_batch([*trades, checkpoint])
    await sink.close()
    assert await read_all(nats_server.url, prefixes["stream_prefix"]) == trades
    assert sink.statistics()["checkpoints_skipped"] == 1


# --- periodic book images ----------------------------------------------------------------------


def book_feed(n: int, *, seed: int = 7, start: int = 100, symbol: str = "BTC-USDT") -> list[Event]:
    """A snapshot at update id ``start`` and ``n`` diffs continuing it (1..3 ids each, 0..3 levels a
    side, some removals), the way a synced feeder emits them."""
    rnd = random.Random(seed)
    bids = tuple((99.0 - k * 0.5, 1.0 + k) for k in range(20))
    asks = tuple((100.0 + k * 0.5, 1.0 + k) for k in range(20))
    events: list[Event] = [BookSnapshot("binance", symbol, T0, T0 + 1, start, bids, asks)]
    events += book_deltas(rnd, n, start, symbol=symbol)
    return events


def book_deltas(rnd: random.Random, n: int, uid: int, *, symbol: str = "BTC-USDT", t: int = 0) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        first = uid + 1
        uid += rnd.randint(1, 3)
        side = [
            tuple((base + sign * rnd.randrange(40) * 0.5, rnd.choice((0.0, 0.5, 1.0, 2.5))) for _ in range(rnd.randint(0, 3)))
            for base, sign in ((99.0, -1), (100.0, 1))
        ]
        ts = T0 + 1_000 * (t + i)
        out.append(BookDelta("binance", symbol, ts, ts + 7, uid, first, side[0], side[1]))
    return out


def is_image(headers: dict[str, str]) -> bool:
    return headers["Nats-Msg-Id"].endswith(":image")


def check_images(stored: list[tuple[int, str, dict[str, str], Event]]) -> tuple[int, OrderBook]:
    """Walk a book subject as stored: each image equals the book rebuilt from what precedes it and
    directly follows the diff it reflects. Returns (images seen, the rebuilt book)."""
    book = OrderBook("binance", "BTC-USDT")
    images = 0
    last_delta: BookDelta | None = None
    previous: Event | None = None
    for _seq, _subject, headers, event in stored:
        if isinstance(event, BookSnapshot) and is_image(headers):
            images += 1
            assert isinstance(previous, BookDelta) and previous is last_delta
            assert event.seq == book.update_id == last_delta.seq
            assert event.exchange_ts == last_delta.exchange_ts
            assert (list(event.bids), list(event.asks)) == (book.bids(), book.asks())
        elif isinstance(event, BookSnapshot):
            book.load_snapshot(event.bids, event.asks, event.seq)
        elif isinstance(event, BookDelta):
            book.apply_delta(event)
            last_delta = event
        previous = event
    return images, book


def replay(events: list[Event]) -> BookSync:
    """A consumer's replica fed a run of the book subject (images start or check it)."""
    sync = BookSync("binance", "BTC-USDT")
    out: list[Event] = []
    for event in events:
        if isinstance(event, BookSnapshot):
            sync.on_stream_snapshot(event, out)
        elif isinstance(event, BookDelta):
            sync.on_delta(event, out)
        elif isinstance(event, BookState) and event.state is not BookStatus.LIVE:
            sync.mark_stale("publisher resyncs", event.receive_ts, out)
    return sync


def truth(events: list[Event]) -> OrderBook:
    book = OrderBook("binance", "BTC-USDT")
    for event in events:
        if isinstance(event, BookSnapshot):
            book.load_snapshot(event.bids, event.asks, event.seq)
        elif isinstance(event, BookDelta):
            book.apply_delta(event)
    return book


async def publish_paced(sink: NatsSink, events: list[Event], batch: int, pause: float) -> None:
    """Batches with a pause longer than the image interval between them."""
    for start in range(0, len(events), batch):
        await sink.write_batch(events[start : start + batch])
        await anyio.sleep(pause)
    await sink.flush()


async def book_subject(url: str, prefixes: dict[str, str]) -> list[tuple[int, str, dict[str, str], Event]]:
    return await read_stream(url, stream_name(prefixes["stream_prefix"], "orderbook"))


def test_image_options_are_validated() -> None:
    with pytest.raises(ValueError, match="snapshot_interval"):
        NatsSink({"snapshot_interval": -1})
    with pytest.raises(ValueError, match="snapshot_depth"):
        NatsSink({"snapshot_depth": -3})
    assert NatsSink({}).options.snapshot_interval == 5.0 and NatsSink({}).options.snapshot_depth == 0


@pytest.mark.anyio
async def test_images_on_the_book_subject_equal_the_rebuilt_book(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "window": 16, "snapshot_interval": 0.05,
                     **prefixes})  # fmt: skip
    await sink.open()
    feed = book_feed(400)
    feed.insert(150, trades(1)[0])  # other subjects in between change nothing
    await publish_paced(sink, feed, 50, 0.07)
    assert sink.images >= 7  # one in each batch after the first, at least
    await sink.close()
    stored = await book_subject(nats_server.url, prefixes)
    assert len({subject for _s, subject, _h, _e in stored}) == 1  # one ordered subject per book
    images, book = check_images(stored)
    assert images == sink.images
    expected = truth(feed)
    assert (book.bids(), book.asks(), book.update_id) == (expected.bids(), expected.asks(), expected.update_id)
    # The feed without images, as stored: nothing lost, nothing reordered.
    assert [e for _s, _subj, h, e in stored if not is_image(h)] == [e for e in feed if not isinstance(e, Trade)]


@pytest.mark.anyio
async def test_a_consumer_starting_at_any_image_rebuilds_the_book(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "snapshot_interval": 0.05, **prefixes})
    await sink.open()
    feed = book_feed(300, seed=11)
    await publish_paced(sink, feed, 40, 0.07)
    await sink.close()
    stored = await book_subject(nats_server.url, prefixes)
    events = [e for _s, _subj, _h, e in stored]
    starts = [i for i, (_s, _subj, h, _e) in enumerate(stored) if is_image(h)]
    assert len(starts) >= 5
    expected = truth(feed)
    for start in starts:  # a late consumer reading from this image on
        sync = replay(events[start:])
        assert sync.state is BookStatus.LIVE and sync.gaps == 0
        assert (sync.book.bids(), sync.book.asks(), sync.update_id) == (
            expected.bids(), expected.asks(), expected.update_id
        )  # fmt: skip
    # A replica that saw everything checks every image against itself: all match, no gap.
    whole = replay(events)
    assert whole.state is BookStatus.LIVE and whole.gaps == 0 and whole.resyncs == 0
    assert whole.book.bids() == expected.bids() and whole.book.asks() == expected.asks()


@pytest.mark.anyio
async def test_no_image_while_the_book_is_out_of_step(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "snapshot_interval": 0.05, **prefixes})
    await sink.open()
    rnd = random.Random(3)
    feed = book_feed(30, seed=3)
    uid = feed[-1].seq
    assert uid is not None
    await publish_paced(sink, feed, 10, 0.07)
    before = sink.images
    assert before >= 1
    # The publisher's book resyncs: a gap and a non-LIVE state; its diffs then say nothing of the book.
    out_of_step: list[Event] = [
        Gap("binance", "BTC-USDT", None, T0 + 2, None, DataType.ORDERBOOK, uid + 1, uid + 5, "gap"),
        BookState("binance", "BTC-USDT", None, T0 + 3, None, BookStatus.RESYNCING, "gap"),
    ]
    await publish_paced(sink, out_of_step, 10, 0.07)
    await publish_paced(sink, book_deltas(rnd, 20, uid + 5, t=100), 5, 0.07)
    assert sink.images == before
    # The next snapshot starts it again, with ids of its own.
    fresh = book_feed(40, seed=5, start=uid + 500)
    await publish_paced(sink, fresh, 10, 0.07)
    assert sink.images > before
    # A diff that skips ids (not emitted by a synced feeder, but never trusted): no image after it.
    last = fresh[-1].seq
    assert last is not None
    await anyio.sleep(0.07)
    skipped = book_deltas(rnd, 5, last + 10, t=200)
    count = sink.images
    await publish_paced(sink, skipped, 5, 0.07)
    assert sink.images == count
    await sink.close()
    stored = await book_subject(nats_server.url, prefixes)
    in_step, seen, images = True, 0, 0
    for _s, _subj, headers, event in stored:  # images only where the publisher's book is in step
        if is_image(headers):
            assert in_step
            images += 1
        elif isinstance(event, BookSnapshot):
            in_step, seen = True, event.seq or 0
        elif isinstance(event, Gap | BookState):
            in_step = False
        elif isinstance(event, BookDelta):
            in_step = in_step and event.first_seq <= seen + 1
            seen = event.seq
    assert images == count
    # Without the diffs of the resync, every image equals the book rebuilt from what precedes it.
    resync = range(uid + 6, uid + 500)
    assert check_images([row for row in stored if row[3].seq not in resync])[0] == count


@pytest.mark.anyio
async def test_images_of_the_best_levels_only(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "snapshot_interval": 0.05, "snapshot_depth": 5,
                     **prefixes})  # fmt: skip
    await sink.open()
    feed = book_feed(100, seed=9)
    await publish_paced(sink, feed, 25, 0.07)
    await sink.close()
    stored = await book_subject(nats_server.url, prefixes)
    book = OrderBook("binance", "BTC-USDT")
    images = 0
    for _s, _subj, headers, event in stored:
        if isinstance(event, BookSnapshot) and is_image(headers):
            images += 1
            assert len(event.bids) <= 5 and len(event.asks) <= 5
            assert (list(event.bids), list(event.asks)) == book.top(5) and event.seq == book.update_id
        elif isinstance(event, BookSnapshot):
            book.load_snapshot(event.bids, event.asks, event.seq)
        elif isinstance(event, BookDelta):
            book.apply_delta(event)
    assert images >= 3


@pytest.mark.anyio
async def test_interval_zero_publishes_no_image(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "snapshot_interval": 0, **prefixes})
    await sink.open()
    feed = book_feed(60)
    await publish_paced(sink, feed, 20, 0.02)
    await sink.close()
    stored = await book_subject(nats_server.url, prefixes)
    assert sink.images == 0 and [e for _s, _subj, _h, e in stored] == feed


@pytest.mark.anyio
async def test_take_over_publishes_images_that_resync_consumers(nats_server: NatsServer) -> None:
    """The owner of a book dies; the standby, which kept its own copy of the book, takes the shard:
    after the exact Gap and its short buffer it publishes an image, and a replica that read the whole
    subject ends LIVE and equal to the book; only the owner publishes images before that."""
    prefixes = unique_prefixes()
    group = uuid.uuid4().hex[:8]
    common = {"url": nats_server.url, "storage": "memory", "group": group, "lease_ttl": 1.0, "shards": 1,
              "snapshot_interval": 0.05, **prefixes}  # fmt: skip
    a = NatsSink({**common, "member": "a"})
    b = NatsSink({**common, "member": "b", "standby_buffer": 20})
    feed = book_feed(3000, seed=21)
    await a.open()
    await b.open()
    await a.write_batch(feed[:1])  # a claims the shard first
    await a.write_batch([])
    assert a.leases is not None and a.leases.owned() == [("binance", 0)]
    await b.write_batch(feed[:1])
    for start in range(1, 100, 20):  # both see the feed; a publishes it
        await a.write_batch(feed[start : start + 20])
        await b.write_batch(feed[start : start + 20])
        await anyio.sleep(0.07)
    await a.flush()
    assert a.images >= 3 and b.images == 0 and b.published == 0
    await b.write_batch(feed[100:150])  # a misses these: it dies (no release, no renewal)
    await a.nc.close()
    start, after = 150, 0
    with anyio.fail_after(15):
        while after < 3:  # until a few batches after the take-over
            await b.write_batch(feed[start : start + 10])
            start += 10
            after += b.takeovers
            await anyio.sleep(0.05)
    feed = feed[:start]
    await b.flush()
    assert b.images >= 1 and b.takeovers == 1
    await b.close()
    stored = await book_subject(nats_server.url, prefixes)
    events = [e for _s, _subj, _h, e in stored]
    gaps = [e for e in events if isinstance(e, Gap)]
    assert len(gaps) == 1 and gaps[0].gap_type is DataType.ORDERBOOK  # what nobody published, exactly
    sync = replay(events)
    expected = truth(feed)
    assert sync.state is BookStatus.LIVE and sync.update_id == expected.update_id
    assert (sync.book.bids(), sync.book.asks()) == (expected.bids(), expected.asks())
    from_gap = replay(events[next(i for i, e in enumerate(events) if e is gaps[0]) :])  # a consumer starting there
    assert from_gap.state is BookStatus.LIVE and from_gap.book.bids() == expected.bids()


@pytest.mark.anyio
async def test_an_image_too_large_for_the_server_keeps_the_best_levels(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "snapshot_interval": 0.05, **prefixes})
    await sink.open()
    sink.nc.max_payload = 1024 + 500  # as if the server took ~500 bytes at most
    feed = book_feed(60, seed=4)
    await publish_paced(sink, feed, 20, 0.07)
    await sink.close()
    assert sink.images >= 2 and sink.images_truncated == sink.images
    stored = await book_subject(nats_server.url, prefixes)
    book = OrderBook("binance", "BTC-USDT")
    for _s, _subj, headers, event in stored:
        if isinstance(event, BookSnapshot) and is_image(headers):
            n = max(len(event.bids), len(event.asks))
            assert 0 < n < 20 and len(encode_event(event)) <= 500
            assert (list(event.bids), list(event.asks)) == book.top(n) and event.seq == book.update_id
        elif isinstance(event, BookSnapshot):
            book.load_snapshot(event.bids, event.asks, event.seq)
        elif isinstance(event, BookDelta):
            book.apply_delta(event)


@pytest.mark.anyio
async def test_a_feeder_replaying_from_a_later_time_starts_its_book_at_an_image(nats_server: NatsServer) -> None:
    """A consumer feeder (``nats`` source) that starts reading after the publisher's only exchange
    snapshot: its replica book starts at the first image it reads and ends LIVE, equal to the book."""
    prefixes = unique_prefixes()
    sink = NatsSink({"url": nats_server.url, "storage": "memory", "snapshot_interval": 0.05, **prefixes})
    await sink.open()
    feed = book_feed(200, seed=13)
    await publish_paced(sink, feed[:50], 25, 0.02)
    await anyio.sleep(0.05)
    start = time.time_ns()  # past the snapshot: only images can start the book from here
    await anyio.sleep(0.05)
    await publish_paced(sink, feed[50:], 25, 0.07)
    await sink.close()
    expected = truth(feed)
    config = consumer_config(nats_server.url, prefixes, durable="late", types=["orderbook"], start=start)
    with anyio.fail_after(20):
        async with Feeder(config, plugin_manager=get_plugin_manager()) as consumer:

            def caught_up() -> bool:
                try:
                    return consumer.book("binance", "BTC-USDT").update_id == expected.update_id
                except KeyError:  # no book event read yet
                    return False

            await wait_until(caught_up)
            replica = consumer.book("binance", "BTC-USDT")
            assert replica.is_live
            assert replica.top(1000) == (expected.bids(), expected.asks())
