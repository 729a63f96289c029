"""End to end: the feeder with the Binance connector against the simulator serving the Binance venue.

The simulator's market is recorded from its start (the engine's book before the first record, then every
depth diff it produces), so the book the feeder reports can be compared with the exchange's book at
exactly the same update id, whatever faults were injected on the way.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import orjson
import pytest

from marketfeeder_binance.connector import BinanceConnector
from marketfeeder_binance.venue import BinanceVenue

HAVE_RUNTIME = all(
    importlib.util.find_spec(name) is not None for name in ("marketfeeder.sim.server", "marketfeeder.runtime.feeder")
)
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_RUNTIME, reason="needs marketfeeder.sim.server and marketfeeder.runtime.feeder"),
]

SYMBOLS = ["BTC-USDT", "ETH-USDT"]


class Recorder:
    """The engine's books at the start and every depth diff after it, per symbol."""

    def __init__(self, sim: Any) -> None:
        from marketfeeder.sim.model import SimDepth

        engine = sim.engine
        self.start = {s: engine.book("binance", s) for s in SYMBOLS}
        self.diffs: dict[str, list[Any]] = defaultdict(list)
        self.trade_ids: dict[str, list[int]] = defaultdict(list)
        step = engine.step

        def recording_step() -> list[tuple[str, Any]]:
            records: list[tuple[str, Any]] = step()
            for venue, record in records:
                if venue == "binance" and isinstance(record, SimDepth):
                    self.diffs[record.symbol].append(record)
            return records

        # Instrumentation of the simulator (read-only): it must be in place before the market starts.
        engine.step = recording_step

    def book_at(self, symbol: str, update_id: int) -> tuple[dict[float, float], dict[float, float]]:
        start = self.start[symbol]
        assert start.last_id <= update_id
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


class TappedVenue(BinanceVenue):
    """The Binance venue, remembering the update ids of every depth frame it wrapped for a client
    (frames dropped by the ``skip_ids`` fault, or lost to a disconnect, are never wrapped)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_ids: dict[str, set[int]] = defaultdict(set)

    def wrap(self, conn: Any, frame: Any) -> str:
        from marketfeeder.models import DataType

        if frame.data_type is DataType.ORDERBOOK:
            body = orjson.loads(frame.payload)
            self.sent_ids[body["s"]].update(range(body["U"], body["u"] + 1))
        return super().wrap(conn, frame)


@asynccontextmanager
async def running(
    *, faults: str | None = None, venue_options: dict[str, Any] | None = None, rate: float = 800.0,
    data_types: list[str] | None = None, venue: type[BinanceVenue] = BinanceVenue,
) -> AsyncIterator[tuple[Any, Any, Recorder, list[Any]]]:
    from marketfeeder.runtime.feeder import Feeder
    from marketfeeder.sim.server import SimServer

    async with SimServer(
        {"binance": venue}, seed=11, rate=rate, symbols=SYMBOLS, faults=faults,
        venue_options={"binance": venue_options or {}}, autostart=False,
    ) as sim:
        recorder = Recorder(sim)
        endpoints = sim.endpoints()["binance"]
        config = {
            "exchanges": {
                "binance": {
                    "ws_url": endpoints["ws_url"],
                    "rest_url": endpoints["rest_url"],
                    "symbols": SYMBOLS,
                    "data_types": data_types or ["orderbook", "trades", "book_ticker", "ticker", "klines"],
                    "kline_intervals": ["1s", "1m"],
                }
            },
            "enable_validation": False,
            "enable_historical_storage": False,
            "runtime": {"reconnect_initial_delay": 0.05, "reconnect_max_delay": 0.5, "http_timeout": 2.0},
        }
        events: list[Any] = []
        async with Feeder(config, connectors={"binance": BinanceConnector}) as feeder:
            feeder.subscribe("binance", None, None, events.append)
            sim.start_market()
            yield sim, feeder, recorder, events


def check_book(view: Any, recorder: Recorder, symbol: str) -> int:
    """Compare a LIVE book with the engine's book at the same update id; return that id."""
    update_id = view.update_id
    assert update_id in recorder.update_ids(symbol), f"{symbol}: {update_id} is no update id of the venue"
    bids, asks = view.top(10**6)
    expected_bids, expected_asks = recorder.book_at(symbol, update_id)
    assert dict(bids) == expected_bids, f"{symbol} bids differ at update id {update_id}"
    assert dict(asks) == expected_asks, f"{symbol} asks differ at update id {update_id}"
    assert [p for p, _ in bids] == sorted(expected_bids, reverse=True)
    assert [p for p, _ in asks] == sorted(expected_asks)
    return int(update_id)


async def watch(feeder: Any, recorder: Recorder, seconds: float) -> dict[str, set[int]]:
    """Let the feed run; every 0.1 s compare every LIVE book with the exchange's. Returns the ids checked."""
    from marketfeeder.models import BookStatus

    checked: dict[str, set[int]] = defaultdict(set)
    with anyio.move_on_after(seconds):
        while True:
            await anyio.sleep(0.1)
            for symbol in SYMBOLS:
                view = feeder.book("binance", symbol)
                if view.state is BookStatus.LIVE:  # no await between the state and the comparison
                    checked[symbol].add(check_book(view, recorder, symbol))
    return checked


async def settle(sim: Any, feeder: Any, recorder: Recorder) -> dict[str, int]:
    """Freeze the market, wait until every book is LIVE at the engine's last update id, then check
    each book against the engine's book."""
    from marketfeeder.models import BookStatus

    sim.pause_market()
    await anyio.sleep(0.3)  # frames already sent are still in flight
    views = {s: feeder.book("binance", s) for s in SYMBOLS}
    with anyio.move_on_after(15.0) as scope:
        while True:
            live = all(v.state is BookStatus.LIVE for v in views.values())
            caught_up = all(
                views[s].update_id == sim.engine.book("binance", s).last_id for s in SYMBOLS
            )
            if live and caught_up:
                break
            await anyio.sleep(0.05)
    if scope.cancelled_caught:
        states = {s: (v.state.value, v.update_id, sim.engine.book("binance", s).last_id) for s, v in views.items()}
        raise AssertionError(f"books not settled after 15 s: (state, id, engine id) {states}; "
                             f"{ {s: v.statistics() for s, v in views.items()} }")
    ids = {}
    for symbol, view in views.items():
        ids[symbol] = check_book(view, recorder, symbol)
        assert ids[symbol] > recorder.start[symbol].last_id, f"{symbol}: the book never moved"
    return ids


def trade_ids(events: list[Any]) -> dict[str, list[int]]:
    from marketfeeder.models import Trade

    out: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if isinstance(event, Trade):
            assert event.seq is not None
            out[event.symbol].append(event.seq)
    return out


async def test_clean_feed_books_equal_the_exchange() -> None:
    from marketfeeder.models import BookTicker, Gap, Kline, Ticker, Trade

    # Pings every 0.5 s (Binance: 20 s) with a 1.5 s pong deadline: the client must answer each one.
    async with running(venue_options={"ping_interval": 0.5, "pong_timeout": 1.5}) as (sim, feeder, recorder, events):
        checked = await watch(feeder, recorder, 2.0)
        ids = await settle(sim, feeder, recorder)
    stats = sim.statistics()
    assert (stats["connections"], stats["pong_timeout"], stats["rate_limited"]) == (1, 0, 0)
    assert all(len(checked[s]) >= 5 for s in SYMBOLS), checked
    assert all(ids[s] == sim.engine.book("binance", s).last_id for s in SYMBOLS)
    assert not [e for e in events if isinstance(e, Gap)]
    kinds = {type(e) for e in events}
    assert {Trade, BookTicker, Ticker, Kline} <= kinds
    for symbol, seen in trade_ids(events).items():
        assert seen == list(range(seen[0], seen[0] + len(seen))), f"{symbol}: trades missing or repeated"
    assert all(e.exchange_ts is None for e in events if isinstance(e, BookTicker))


async def test_rotation_loses_and_repeats_no_trade() -> None:
    from marketfeeder.models import Connection, ConnectionStatus

    # Each connection lives 1.5 s and is told to go 0.6 s before: several rotations in a few seconds.
    options = {"max_lifetime": 1.5, "shutdown_notice_before": 0.6}
    async with running(venue_options=options, data_types=["orderbook", "trades", "book_ticker"]) as (
        sim, feeder, recorder, events,
    ):
        checked = await watch(feeder, recorder, 3.0)
        await settle(sim, feeder, recorder)
    assert all(len(checked[s]) >= 10 for s in SYMBOLS), checked
    stats = sim.statistics()
    assert stats["shutdown_notices"] >= 2
    rotated = [e for e in events if isinstance(e, Connection) and e.status is ConnectionStatus.ROTATED]
    assert len(rotated) >= 2
    ids = trade_ids(events)
    assert set(ids) == set(SYMBOLS)
    for symbol, seen in ids.items():
        assert len(seen) == len(set(seen)), f"{symbol}: duplicated trades across the switch"
        assert seen == list(range(seen[0], seen[0] + len(seen))), f"{symbol}: trades missing across the switch"


async def test_faults_gaps_resync_and_books_stay_exact() -> None:
    from marketfeeder.models import BookState, BookStatus, DataType, Gap

    faults = (
        "skip_ids=0.01,dup=0.01,malformed=0.005,truncated=0.003,unknown_fields=0.01,unknown_event=0.005,"
        "rest_429=0.2,rest_500=0.2,retry_after=0,disconnect_every=2s,seed=5"
    )
    async with running(faults=faults, venue=TappedVenue) as (sim, feeder, recorder, events):
        # Disconnects go on while the market is paused (and a book cannot sync without diffs), so
        # the books are checked while the market runs, whenever they are LIVE.
        checked = await watch(feeder, recorder, 3.5)
        # Then wait for a moment when every book is LIVE: each gap before it must have been repaired.
        with anyio.fail_after(20):
            while True:
                if all(feeder.book("binance", s).state is BookStatus.LIVE for s in SYMBOLS):
                    break
                await anyio.sleep(0.02)
        end = len(events)
        final = {symbol: check_book(feeder.book("binance", symbol), recorder, symbol) for symbol in SYMBOLS}
        stats = feeder.get_performance_stats()
    assert all(len(checked[s]) >= 5 for s in SYMBOLS), checked
    injected = sim.counters.injected()
    assert injected.get("skip_ids", 0) > 0
    assert injected.get("disconnect_every", 0) > 0
    assert injected.get("rest_429", 0) + injected.get("rest_500", 0) > 0
    gaps = [(i, e) for i, e in enumerate(events[:end]) if isinstance(e, Gap) and e.gap_type is DataType.ORDERBOOK]
    assert gaps, "skipped update ids must surface as Gap events"
    for index, gap in gaps:
        assert gap.symbol in SYMBOLS
        # Every gap is repaired: that symbol's book goes LIVE again afterwards.
        assert any(
            isinstance(e, BookState) and e.symbol == gap.symbol and e.state is BookStatus.LIVE
            for e in events[index + 1:]
        ), f"no resync after {gap}"
    # Every update id the venue never sent (skipped, or lost to a disconnect) is inside a reported Gap.
    venue = sim.venues["binance"]
    assert isinstance(venue, TappedVenue)
    for symbol in SYMBOLS:
        sent = venue.sent_ids[symbol.replace("-", "")]
        reported = {
            i for _, gap in gaps if gap.symbol == symbol and gap.from_seq is not None and gap.to_seq is not None
            for i in range(gap.from_seq, gap.to_seq + 1)
        }
        never_sent = set(range(min(sent), final[symbol] + 1)) - sent
        assert never_sent <= reported, f"{symbol}: ids never sent and not reported: {sorted(never_sent - reported)[:20]}"
    for symbol, seen in trade_ids(events).items():
        assert len(seen) == len(set(seen)), f"{symbol}: duplicated trades"
    connections = [c for c in stats["connections"].values() if isinstance(c, dict)]
    # Malformed and truncated frames are counted and skipped; unknown events are counted apart.
    if injected.get("malformed", 0) + injected.get("truncated", 0):
        assert sum(c["decode_errors"] for c in connections) > 0
    if injected.get("unknown_event", 0):
        assert sum(c["unhandled"] for c in connections) > 0
    assert sum(c["reconnects"] for c in connections) > 0


@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        (["BTC-USDT", "DOGE-USDT"], r"unknown symbol 'DOGE-USDT'"),
        (["BTC-USDT", "SOL-USDT"], r"SOL-USDT \(SOLUSDT\) is not trading \(status BREAK\)"),
    ],
)
async def test_unknown_or_halted_symbols_are_refused_at_start(symbols: list[str], message: str) -> None:
    from marketfeeder.runtime.connections import FeederError
    from marketfeeder.runtime.feeder import Feeder
    from marketfeeder.sim.engine import default_instruments
    from marketfeeder.sim.server import SimServer

    listed = default_instruments("binance")
    listed[2] = attrs.evolve(listed[2], active=False)  # SOL-USDT listed with status BREAK
    async with SimServer(
        {"binance": BinanceVenue}, seed=1, rate=100, venue_options={"binance": {"instruments": listed}}
    ) as sim:
        config = {"exchanges": {"binance": {**sim.endpoints()["binance"], "symbols": symbols}}}
        with pytest.raises(FeederError, match=message):
            async with Feeder(config, connectors={"binance": BinanceConnector}):
                pass


async def test_live_subscribe_and_unsubscribe() -> None:
    """Symbols added and removed while running go through SUBSCRIBE/UNSUBSCRIBE on the open connection."""
    from marketfeeder.models import BookStatus, Trade
    from marketfeeder.runtime.feeder import Feeder
    from marketfeeder.sim.server import SimServer

    async with SimServer({"binance": BinanceVenue}, seed=2, rate=600) as sim:
        config = {
            "exchanges": {
                "binance": {**sim.endpoints()["binance"], "symbols": ["BTC-USDT"], "data_types": ["orderbook", "trades"]}
            },
            "enable_validation": False,
        }
        events: list[Any] = []
        async with Feeder(config, connectors={"binance": BinanceConnector}) as feeder:
            feeder.subscribe("binance", None, None, events.append)
            await anyio.sleep(0.5)
            (conn,) = sim.connections("binance")
            assert conn.streams == {"btcusdt@depth@100ms", "btcusdt@trade"}
            assert await feeder.add_symbols("binance", ["SOL-USDT"]) == ["SOL-USDT"]
            with anyio.fail_after(10):
                while True:
                    if feeder.book("binance", "SOL-USDT").state is BookStatus.LIVE:
                        break
                    await anyio.sleep(0.05)
            assert sim.connections("binance") == [conn]  # the same connection carries the new streams
            assert conn.streams == {"btcusdt@depth@100ms", "btcusdt@trade", "solusdt@depth@100ms", "solusdt@trade"}
            assert await feeder.remove_symbols("binance", ["BTC-USDT"]) == ["BTC-USDT"]
            with anyio.fail_after(5):
                while True:
                    if conn.streams == {"solusdt@depth@100ms", "solusdt@trade"}:
                        break
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            mark = len(events)
            await anyio.sleep(0.5)
            stats = feeder.get_performance_stats()["connections"]
    assert any(isinstance(e, Trade) and e.symbol == "SOL-USDT" for e in events)
    assert not [e for e in events[mark:] if e.symbol == "BTC-USDT"]
    assert all(c["control_errors"] == 0 for c in stats.values() if isinstance(c, dict))


class OneStreamPerRequest(BinanceConnector):
    """Binance's rules, but one stream per SUBSCRIBE: a burst of subscriptions must be paced."""

    limits = attrs.evolve(BinanceConnector.limits, max_streams_per_control_message=1)


async def test_subscription_bursts_are_paced_under_the_message_limit() -> None:
    from marketfeeder.models import BookTicker
    from marketfeeder.runtime.feeder import Feeder
    from marketfeeder.sim.server import SimServer

    # The venue disconnects a client that sends more than 5 messages within a second.
    async with SimServer({"binance": BinanceVenue}, seed=3, rate=300) as sim:
        types = ["trades", "book_ticker", "ticker", "klines"]
        config = {
            "exchanges": {
                "binance": {**sim.endpoints()["binance"], "symbols": ["BTC-USDT"], "data_types": types,
                            "kline_intervals": ["1s"]}
            },
            "enable_validation": False,
        }
        events: list[Any] = []
        async with Feeder(config, connectors={"binance": OneStreamPerRequest}) as feeder:
            feeder.subscribe("binance", None, None, events.append)
            await anyio.sleep(0.3)
            # Eight new streams, eight SUBSCRIBE messages: at most 4 a second go out.
            assert await feeder.add_symbols("binance", ["ETH-USDT", "SOL-USDT"]) == ["ETH-USDT", "SOL-USDT"]
            with anyio.fail_after(10):
                while True:
                    conns = sim.connections("binance")
                    if len(conns) == 1 and len(conns[0].streams) == 12:
                        break
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)
    assert sim.statistics()["rate_limited"] == 0
    assert sim.statistics()["connections"] == 1
    assert {e.symbol for e in events if isinstance(e, BookTicker)} == {"BTC-USDT", "ETH-USDT", "SOL-USDT"}
