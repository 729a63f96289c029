"""End to end: the feeder with the Backpack connector against the simulator serving the Backpack venue.

Every depth diff the engine produces is recorded from the start of the market, so a book the feeder
holds can be compared with the venue's own book at exactly the same update id, whatever faults were
injected on the way. The venue sends mixed integer / numeric-string ids and times throughout.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from marketfeeder_backpack.connector import BackpackConnector
from marketfeeder_backpack.venue import BackpackVenue

HAVE_RUNTIME = all(
    importlib.util.find_spec(name) is not None for name in ("marketfeeder.sim.server", "marketfeeder.runtime.feeder")
)
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not HAVE_RUNTIME, reason="needs marketfeeder.sim.server and marketfeeder.runtime.feeder"),
]

SYMBOLS = ["SOL-USDC", "BTC-USDC", "SOL-USDC-PERP"]
VENUE = "backpack"


class Recorder:
    """The engine's books when the market starts, then every depth diff of the venue, per symbol."""

    def __init__(self, sim: Any) -> None:
        from marketfeeder.sim.model import SimDepth

        engine = sim.engine
        self.start = {s: engine.book(VENUE, s) for s in SYMBOLS}
        self.diffs: dict[str, list[Any]] = defaultdict(list)
        step = engine.step

        def recording_step() -> list[tuple[str, Any]]:
            records: list[tuple[str, Any]] = step()
            for venue, record in records:
                if venue == VENUE and isinstance(record, SimDepth):
                    self.diffs[record.symbol].append(record)
            return records

        # Read-only instrumentation of the simulator, in place before the market starts.
        engine.step = recording_step

    def book_at(self, symbol: str, update_id: int) -> tuple[dict[float, float], dict[float, float]]:
        start = self.start[symbol]
        bids, asks = dict(start.bids), dict(start.asks)
        for diff in self.diffs[symbol]:
            if diff.last_id > update_id:
                break
            for side, levels in ((bids, diff.bids), (asks, diff.asks)):
                for price, size in levels:
                    p, q = float(price), float(size)
                    if q == 0.0:
                        side.pop(p, None)
                    else:
                        side[p] = q
        return bids, asks

    def update_ids(self, symbol: str) -> set[int]:
        return {self.start[symbol].last_id} | {d.last_id for d in self.diffs[symbol]}


@asynccontextmanager
async def running(
    *,
    faults: str | None = None,
    venue_options: dict[str, Any] | None = None,
    rate: float = 600.0,
    data_types: list[str] | None = None,
) -> AsyncIterator[tuple[Any, Any, Recorder, list[Any]]]:
    from marketfeeder.runtime.feeder import Feeder
    from marketfeeder.sim.server import SimServer

    options = {"string_numbers": "mixed", **(venue_options or {})}
    async with SimServer(
        {VENUE: BackpackVenue}, seed=21, rate=rate, symbols=SYMBOLS, faults=faults,
        venue_options={VENUE: options}, autostart=False,
        engine_options={"periodic_interval": 0.25, "stream_kline_intervals": ("1s", "1m")},
    ) as sim:
        recorder = Recorder(sim)
        endpoints = sim.endpoints()[VENUE]
        config = {
            "exchanges": {
                VENUE: {
                    "ws_url": endpoints["ws_url"],
                    "rest_url": endpoints["rest_url"],
                    "symbols": SYMBOLS,
                    "data_types": data_types
                    or ["orderbook", "trades", "book_ticker", "ticker", "klines", "mark_price"],
                    "kline_intervals": ["1s", "1m"],
                }
            },
            "enable_validation": False,
            "enable_historical_storage": False,
            "runtime": {"reconnect_initial_delay": 0.05, "reconnect_max_delay": 0.5, "http_timeout": 2.0},
        }
        events: list[Any] = []
        async with Feeder(config, connectors={VENUE: BackpackConnector}) as feeder:
            feeder.subscribe(VENUE, None, None, events.append)
            sim.start_market()
            yield sim, feeder, recorder, events


async def settle(sim: Any, feeder: Any, recorder: Recorder, *, exact: bool, within: float = 20.0) -> dict[str, int]:
    """Freeze the market, wait until every book is LIVE (and, if ``exact``, at the venue's last id),
    then compare each book with the venue's book at the feeder's update id."""
    from marketfeeder.models import BookStatus

    sim.pause_market()
    await anyio.sleep(0.3)  # frames already sent are still in flight
    with anyio.fail_after(within):
        while True:
            views = {s: feeder.book(VENUE, s) for s in SYMBOLS}
            live = all(v.state is BookStatus.LIVE for v in views.values())
            caught_up = all(views[s].update_id == sim.engine.book(VENUE, s).last_id for s in SYMBOLS)
            if live and (caught_up or not exact):
                break
            if not live and not sim.market_running:
                # A book resyncing needs diffs newer than its snapshot: let the market move a little.
                sim.start_market()
                await anyio.sleep(0.2)
                sim.pause_market()
            await anyio.sleep(0.05)
    ids = {}
    for symbol, view in views.items():
        update_id = view.update_id
        assert update_id in recorder.update_ids(symbol), f"{symbol}: {update_id} is no update id of the venue"
        assert update_id > recorder.start[symbol].last_id, f"{symbol}: the book never moved"
        bids, asks = view.top(10**6)
        expected_bids, expected_asks = recorder.book_at(symbol, update_id)
        assert dict(bids) == expected_bids, f"{symbol} bids differ at update id {update_id}"
        assert dict(asks) == expected_asks, f"{symbol} asks differ at update id {update_id}"
        ids[symbol] = update_id
    return ids


def trade_ids(events: list[Any]) -> dict[str, list[int]]:
    from marketfeeder.models import Trade

    out: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if isinstance(event, Trade) and event.seq is not None:
            out[event.symbol].append(event.seq)
    return out


async def test_clean_feed_books_equal_the_venue_at_the_same_update_id() -> None:
    from marketfeeder.models import BookTicker, Gap, Kline, MarkPrice, Ticker, Trade

    async with running() as (sim, feeder, recorder, events):
        await anyio.sleep(2.0)
        ids = await settle(sim, feeder, recorder, exact=True)
    assert all(ids[s] == sim.engine.book(VENUE, s).last_id for s in SYMBOLS)
    assert not [e for e in events if isinstance(e, Gap)]
    kinds = {type(e) for e in events}
    assert {Trade, BookTicker, Ticker, Kline, MarkPrice} <= kinds
    assert {e.symbol for e in events if isinstance(e, MarkPrice)} == {"SOL-USDC-PERP"}
    assert {e.interval for e in events if isinstance(e, Kline)} == {"1s", "1m"}
    for symbol, seen in trade_ids(events).items():
        assert seen == list(range(seen[0], seen[0] + len(seen))), f"{symbol}: trades missing or repeated"
    for event in events:
        if isinstance(event, BookTicker | Trade):
            assert event.exchange_ts is not None
            assert event.exchange_ts % 1000 == 0  # µs on the wire


async def test_skipped_ids_are_gaps_then_resync_and_books_stay_exact() -> None:
    from marketfeeder.models import BookState, BookStatus, Connection, ConnectionStatus, DataType, Gap

    faults = (
        "skip_ids=0.01,dup=0.01,reorder=0.005,malformed=0.005,truncated=0.003,unknown_fields=0.01,"
        "unknown_event=0.005,rest_429=0.2,rest_500=0.2,retry_after=0,disconnect_every=2s,seed=8"
    )
    async with running(faults=faults) as (sim, feeder, recorder, events):
        await anyio.sleep(4.0)
        await settle(sim, feeder, recorder, exact=False)
    injected = sim.counters.injected()
    assert injected.get("skip_ids", 0) > 0
    assert injected.get("disconnect_every", 0) > 0
    gaps = [(i, e) for i, e in enumerate(events) if isinstance(e, Gap) and e.gap_type is DataType.ORDERBOOK]
    assert gaps, "skipped update ids must surface as Gap events"
    for index, gap in gaps:
        assert gap.symbol in SYMBOLS
        assert any(
            isinstance(e, BookState) and e.symbol == gap.symbol and e.state is BookStatus.LIVE
            for e in events[index + 1 :]
        ), f"no resync after {gap}"
    for symbol, seen in trade_ids(events).items():
        assert len(seen) == len(set(seen)), f"{symbol}: duplicated trades"
    # The server closed connections every 2 s: each close is followed by a reconnect and, for every
    # book, a fresh snapshot taking it LIVE again.
    downs = [i for i, e in enumerate(events) if isinstance(e, Connection) and e.status is ConnectionStatus.DOWN]
    assert downs, "disconnect_every must surface as Connection DOWN events"
    for index in downs[:-1]:
        later = events[index + 1 :]
        assert any(isinstance(e, Connection) and e.status is ConnectionStatus.UP for e in later)
        for symbol in SYMBOLS:
            assert any(
                isinstance(e, BookState) and e.symbol == symbol and e.state is BookStatus.LIVE for e in later
            ), f"{symbol}: no resync after reconnecting"


async def test_a_lagging_snapshot_is_waited_for_not_reported_as_a_gap() -> None:
    from marketfeeder.models import BookSnapshot, Gap

    # Each REST snapshot is 25 book updates behind the stream: far more than the diffs buffered before
    # the first request, so the first snapshots are too old and must be fetched again.
    async with running(venue_options={"snapshot_lag_updates": 25}, data_types=["orderbook"]) as (
        sim, feeder, recorder, events,
    ):
        await anyio.sleep(3.0)
        await settle(sim, feeder, recorder, exact=True)
        stats = {s: feeder.book(VENUE, s).statistics() for s in SYMBOLS}
    assert not [e for e in events if isinstance(e, Gap)], "a lagging snapshot is not a gap"
    assert sum(s["stale_snapshots"] for s in stats.values()) > 0, stats
    snapshots = [e for e in events if isinstance(e, BookSnapshot)]
    assert {e.symbol for e in snapshots} == set(SYMBOLS)


async def test_bad_stream_name_gets_an_error_frame_decoded_as_control_error() -> None:
    from marketfeeder.config import ExchangeConfig
    from marketfeeder.connector import ControlError
    from marketfeeder.models import Trade
    from marketfeeder.sim.server import SimServer
    from marketfeeder.transport.http import HttpClient
    from marketfeeder.transport.ws import connect_websocket

    async with SimServer({VENUE: BackpackVenue}, seed=2, rate=300, symbols=SYMBOLS) as sim:
        endpoints = sim.endpoints()[VENUE]
        async with HttpClient(timeout=5, retries=0) as http:
            connector = BackpackConnector(ExchangeConfig(ws_url=endpoints["ws_url"], rest_url=endpoints["rest_url"]), http)
            await connector.load_instruments()
            with anyio.fail_after(10):
                async with connect_websocket(connector.connection_url([]), open_timeout=5) as ws:
                    await ws.send(connector.subscribe_message(["depth.NOPE_USDC", "trade.SOL_USDC"], 1))
                    controls: list[Any] = []
                    trades = 0
                    while not (controls and trades):
                        frame, receive_ts = await ws.receive()
                        for result in connector.decode(frame, receive_ts):
                            if isinstance(result, ControlError):
                                controls.append(result)
                            else:
                                assert isinstance(result, Trade)
                                assert result.symbol == "SOL-USDC"
                                trades += 1
    assert controls == [ControlError(None, 4005, "Invalid stream: unknown symbol in 'depth.NOPE_USDC'")]
