"""Sources: events another feeder produced, through replica books, validation and delivery.

A live feeder streams the toy exchange into a memory sink; a second feeder replays what it recorded
through a registered source and must rebuild the same books and deliver the same events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_runtime import FAST_RUNTIME, make_config, plugin_manager, wait_for
from toy_exchange import ToyConnector, ToyExchange

from marketfeeder import Feeder
from marketfeeder.book import BookSync, SnapshotOutcome
from marketfeeder.cli_run import build_run_config, bus_sink, bus_source
from marketfeeder.config import ConfigError
from marketfeeder.hookspecs import hookimpl
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
    ValidationFailure,
)
from marketfeeder.runtime.connections import FeederError
from marketfeeder.sinks.memory import MemorySink
from marketfeeder.source import Ingest

pytestmark = pytest.mark.anyio

MS = 1_000_000


class ListSource:
    """Replays given events in batches of ``batch`` (a checkpoint after each when ``stream`` is set)."""

    events: Sequence[Event] = ()

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.batch = int(options.get("batch", 50))
        self.stream = options.get("stream")
        self.consumer = str(options.get("consumer", "app"))
        self.fail = bool(options.get("fail", False))
        #: With option ``hold``, nothing is sent before the test sets this (after subscribing).
        self.start = anyio.Event()
        if not options.get("hold"):
            self.start.set()
        self.positions: dict[str, int] | None = None
        self.done = anyio.Event()
        self.sent = 0

    async def run(self, ingest: Ingest) -> None:
        if self.fail:
            raise RuntimeError("cannot reach the bus")
        self.positions = await ingest.positions(self.consumer)
        await self.start.wait()
        events = list(self.events)
        for start in range(0, len(events), self.batch):
            chunk = events[start : start + self.batch]
            if self.stream:
                seq = start + len(chunk)
                await ingest.deliver([*chunk, ingest.checkpoint(self.stream, self.consumer, seq, len(chunk))])
            else:
                await ingest.deliver(chunk)
            self.sent += len(chunk)
        self.done.set()
        await anyio.sleep_forever()

    def statistics(self) -> dict[str, Any]:
        return {"sent": self.sent}


class PositionedMemorySink(MemorySink):
    """A memory sink that remembers the checkpoints it stored (as a positioned sink does)."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.preset = {str(k): int(v) for k, v in options.pop("positions", {}).items()}
        super().__init__(options)

    async def bus_positions(self, source: str, consumer: str) -> dict[str, int]:
        positions = dict(self.preset)
        for event in self.events():
            if isinstance(event, BusCheckpoint) and event.exchange == source and event.consumer == consumer:
                positions[event.symbol] = event.seq
        return positions


def source_plugin(events: Sequence[Event], made: list[ListSource]) -> object:
    class Plugin:
        @hookimpl
        def marketfeeder_register_sources(self, register: Any) -> None:
            def factory(options: Mapping[str, Any]) -> ListSource:
                source = ListSource(options)
                source.events = events
                made.append(source)
                return source

            register("replay", factory)

        @hookimpl
        def marketfeeder_register_sinks(self, register: Any) -> None:
            register("positioned", PositionedMemorySink)

        @hookimpl
        def marketfeeder_register_connectors(self, register: Any) -> None:
            register("toy", ToyConnector)

    return Plugin()


async def record_live(venue: ToyExchange, until: int) -> tuple[list[Event], dict[str, Any]]:
    """Stream the toy exchange until ``until`` trades arrived; the recorded events and final books."""
    config = make_config(venue, sinks=[{"type": "memory", "options": {"maxlen": 1_000_000}}])
    async with Feeder(config, connectors={"toy": ToyConnector}) as feeder:
        trades: list[Event] = []
        feeder.subscribe("toy", None, DataType.TRADES, trades.append)
        await wait_for(lambda: len(trades) >= until and all(b.is_live for b in feeder.books().values()), 10.0)
        sink = feeder.sinks[0].sink
        books: dict[str, Any] = {}
    # After the drain the sink holds every event up to the books' final state.
    for key, view in feeder.books().items():
        books[key] = (view.state, view.update_id, view.top(10_000))
    assert isinstance(sink, MemorySink)
    return sink.events(), books


async def test_replayed_events_rebuild_the_same_books(tmp_path: Path) -> None:
    async with ToyExchange() as venue:
        recorded, live_books = await record_live(venue, 40)
    assert any(isinstance(e, BookSnapshot) for e in recorded) and any(isinstance(e, BookDelta) for e in recorded)
    made: list[ListSource] = []
    pm = plugin_manager(source_plugin(recorded, made))
    config = {"sources": [{"type": "replay", "options": {"batch": 37, "hold": True}}], "enable_validation": False,
              "runtime": FAST_RUNTIME}
    got: list[Event] = []
    async with Feeder(config, plugin_manager=pm) as consumer:
        consumer.subscribe(None, None, None, got.append)
        made[0].start.set()
        await wait_for(lambda: made[0].done.is_set(), 10.0, "the replay")
        market = [e for e in recorded if e.data_type is not DataType.STATUS]
        await wait_for(lambda: sum(e.data_type is not DataType.STATUS for e in got) >= len(market), 5.0, "delivery")
        replicas = {key: (view.state, view.update_id, view.top(10_000)) for key, view in consumer.books().items()}
        stats = consumer.statistics()["sources"]["replay#0"]
        assert stats["source"]["sent"] == len(recorded) and stats["duplicates"] == 0
        assert consumer.get_performance_stats()["toy:BTC-USD"]["book_state"] == replicas["toy:BTC-USD"][0].value
    # The same books, in the same state (the live feeder's stop left them STALE: so are the replicas).
    assert replicas == live_books
    # Every market event arrives once, in the recorded order, equal to the original (book events
    # included: the replica passes on what it applied, as the live book did).
    assert [e for e in got if e.data_type is not DataType.STATUS] == market


async def test_checkpoints_follow_their_events_and_positions_resume() -> None:
    trades = [Trade("toy", "BTC-USD", i * MS, i * MS, i, 100.0 + i, 1.0, Side.BUY) for i in range(1, 101)]
    made: list[ListSource] = []
    pm = plugin_manager(source_plugin(trades, made))
    config = {
        "sources": [{"type": "replay", "options": {"batch": 30, "stream": "MD_TRADES"}}],
        "sinks": [{"type": "positioned"}, {"type": "positioned", "options": {"positions": {"MD_TRADES": 60}}}],
        "enable_validation": False,
    }
    async with Feeder(config, plugin_manager=pm) as feeder:
        await wait_for(lambda: made[0].done.is_set(), 5.0, "the replay")
        first, second = (runner.sink for runner in feeder.sinks)
        assert isinstance(first, PositionedMemorySink) and isinstance(second, PositionedMemorySink)
    events = first.events()
    checkpoints = [i for i, e in enumerate(events) if isinstance(e, BusCheckpoint)]
    assert [events[i].seq for i in checkpoints] == [30, 60, 90, 100]
    # Each checkpoint closes exactly the trades right before it.
    previous = -1
    for index in checkpoints:
        checkpoint = events[index]
        assert isinstance(checkpoint, BusCheckpoint) and checkpoint.consumer == "app"
        assert checkpoint.count == index - previous - 1
        assert all(isinstance(e, Trade) for e in events[previous + 1 : index])
        previous = index
    # Nothing was committed when it started (a stream only some sink has a position for is not resumed).
    assert made[0].positions == {}
    assert await first.bus_positions("replay", "app") == {"MD_TRADES": 100}
    # A restarted source resumes after the lowest position every positioned sink committed.
    made.clear()
    config["sinks"] = [
        {"type": "positioned", "options": {"positions": {"MD_TRADES": 100, "MD_BOOK": 7}}},
        {"type": "positioned", "options": {"positions": {"MD_TRADES": 60}}},
        {"type": "memory"},
    ]
    async with Feeder(config, plugin_manager=pm):
        await wait_for(lambda: bool(made) and made[0].positions is not None, 5.0, "the second source")
    assert made[0].positions == {"MD_TRADES": 60}


async def test_duplicates_and_validation_on_the_source_path() -> None:
    base = Trade("toy", "BTC-USD", MS, MS, 7, 100.0, 1.0, Side.BUY)
    bad = Trade("toy", "BTC-USD", 2 * MS, 2 * MS, 8, -5.0, 1.0, Side.BUY)
    made: list[ListSource] = []
    pm = plugin_manager(source_plugin([base, base, bad, base], made))
    got: list[Event] = []
    config = {"sources": [{"type": "replay", "options": {"hold": True}}], "validation": {"policy": "annotate"}}
    async with Feeder(config, plugin_manager=pm) as feeder:
        feeder.subscribe(None, None, None, got.append)
        made[0].start.set()
        await wait_for(lambda: made[0].done.is_set() and len(got) >= 3, 5.0, "delivery")
        assert feeder.statistics()["sources"]["replay#0"]["duplicates"] == 2
    assert [e.seq for e in got if isinstance(e, Trade)] == [7, 8]
    failures = [e for e in got if isinstance(e, ValidationFailure)]
    assert failures and all(f.seq == 8 for f in failures)


async def test_a_failing_source_is_reported_and_an_unknown_one_refused() -> None:
    made: list[ListSource] = []
    pm = plugin_manager(source_plugin([], made))
    async with Feeder({"sources": [{"type": "replay", "options": {"fail": True}}]}, plugin_manager=pm) as feeder:
        await wait_for(lambda: bool(feeder.source_errors), 5.0, "the failure")
        assert feeder.running
        assert "cannot reach the bus" in feeder.statistics()["sources"]["replay#0"]["error"]
    with pytest.raises(FeederError, match=r"sources\[0\]: no source named 'kafka' is installed \(installed: replay\)"):
        async with Feeder({"sources": [{"type": "kafka"}]}, plugin_manager=pm):
            pass


# --- replica books ---------------------------------------------------------------------------------


def image(seq: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]], ts: int = 0) -> BookSnapshot:
    return BookSnapshot("toy", "BTC-USD", ts, ts, seq, tuple(bids), tuple(asks))


def delta(first: int, last: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> BookDelta:
    return BookDelta("toy", "BTC-USD", 0, 0, last, first, tuple(bids), tuple(asks))


def test_an_image_in_the_stream_starts_the_replica() -> None:
    sync = BookSync("toy", "BTC-USD")
    out: list[Event] = []
    assert sync.on_stream_snapshot(image(10, [(99.0, 1.0)], [(101.0, 1.0)]), out) is SnapshotOutcome.APPLIED
    assert sync.state is BookStatus.LIVE and sync.update_id == 10
    sync.on_delta(delta(11, 11, [(99.5, 2.0)], []), out)
    assert sync.book.best_bid() == (99.5, 2.0)
    # The same state again: nothing happens; an older image is ignored.
    same = image(11, [(99.5, 2.0), (99.0, 1.0)], [(101.0, 1.0)])
    assert sync.on_stream_snapshot(same, out) is SnapshotOutcome.IGNORED
    assert sync.on_stream_snapshot(image(5, [], []), out) is SnapshotOutcome.IGNORED
    assert sync.gaps == 0 and sync.state is BookStatus.LIVE


def test_a_differing_image_is_a_gap_and_replaces_the_replica() -> None:
    sync = BookSync("toy", "BTC-USD")
    out: list[Event] = []
    sync.on_stream_snapshot(image(10, [(99.0, 1.0)], [(101.0, 1.0)]), out)
    out.clear()
    assert sync.on_stream_snapshot(image(10, [(99.0, 3.0)], [(101.0, 1.0)]), out) is SnapshotOutcome.APPLIED
    assert [type(e) for e in out] == [Gap, BookSnapshot]
    assert sync.book.best_bid() == (99.0, 3.0) and sync.state is BookStatus.LIVE and sync.gaps == 1


def test_a_replica_that_joins_mid_stream_waits_for_an_image() -> None:
    sync = BookSync("toy", "BTC-USD")
    out: list[Event] = []
    sync.on_delta(delta(5, 6, [(98.0, 1.0)], []), out)  # before any image: buffered
    assert sync.state is BookStatus.SYNCING
    sync.on_stream_snapshot(image(6, [(98.0, 1.0)], [(101.0, 1.0)]), out)
    sync.on_delta(delta(7, 7, [], [(100.5, 1.0)]), out)
    assert sync.state is BookStatus.LIVE and sync.book.best_ask() == (100.5, 1.0)


async def test_publisher_resync_marks_the_replica_until_the_next_image() -> None:
    events: list[Event] = [
        image(10, [(99.0, 1.0)], [(101.0, 1.0)]),
        delta(11, 11, [(99.5, 1.0)], []),
        BookState("toy", "BTC-USD", None, 0, 11, BookStatus.RESYNCING, "gap before update id 15"),  # type: ignore[arg-type]
        image(20, [(98.0, 1.0)], [(100.0, 1.0)]),
        delta(21, 21, [], [(99.9, 1.0)]),
    ]
    made: list[ListSource] = []
    pm = plugin_manager(source_plugin(events, made))
    states: list[Event] = []
    config = {"sources": [{"type": "replay", "options": {"batch": 1, "hold": True}}]}
    async with Feeder(config, plugin_manager=pm) as feeder:
        feeder.subscribe("toy", "BTC-USD", DataType.STATUS, states.append)
        made[0].start.set()
        await wait_for(lambda: made[0].done.is_set(), 5.0, "the replay")
        view = feeder.book("toy", "BTC-USD")
        assert view.is_live and view.update_id == 21 and view.best_ask() == (99.9, 1.0)
        with pytest.raises(KeyError, match="no book for 'ETH-USD'"):
            feeder.book("toy", "ETH-USD")
    assert [e.state for e in states if isinstance(e, BookState)] == [  # type: ignore[attr-defined]
        BookStatus.LIVE, BookStatus.STALE, BookStatus.LIVE
    ]


# --- command line ----------------------------------------------------------------------------------


def test_source_and_publish_flags_build_the_config() -> None:
    made: list[ListSource] = []
    pm = plugin_manager(source_plugin([], made))
    config = build_run_config(
        pm, config_path=None, exchanges=[], symbols=[], data_types=[], sinks=[bus_sink("replay://h:1", "feeders")],
        sim=False, sources=[bus_source("replay://127.0.0.1:4222")],
    )
    assert [(s.type, s.options) for s in config.sources] == [("replay", {"url": "replay://127.0.0.1:4222"})]
    assert [(s.type, s.options) for s in config.sinks] == [("replay", {"url": "replay://h:1", "group": "feeders"})]
    assert not config.enabled_exchanges()
    with pytest.raises(ConfigError, match="--source 'localhost:4222': expected a URL"):
        bus_source("localhost:4222")
    with pytest.raises(ConfigError, match="with --source and no --exchange there is no exchange"):
        build_run_config(pm, config_path=None, exchanges=[], symbols=["BTC-USDT"], data_types=[], sinks=[],
                         sim=False, sources=[bus_source("replay://h:1")])
    # With exchanges as well, the feeder streams them and consumes the bus.
    both = build_run_config(pm, config_path=None, exchanges=["toy"], symbols=["BTC-USD"], data_types=[], sinks=[],
                            sim=False, sources=[bus_source("replay://h:1")])
    assert list(both.enabled_exchanges()) == ["toy"] and len(both.sources) == 1
