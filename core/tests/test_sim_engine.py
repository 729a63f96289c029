"""The market engine: determinism, book invariants, trades, klines, tickers, snapshots."""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.models import MarketKind
from marketfeeder.sim.engine import (
    Grid,
    MarketEngine,
    default_instruments,
    format_price,
    format_size,
    instruments_for,
    interval_ns,
)
from marketfeeder.sim.model import (
    SimBookTicker,
    SimDepth,
    SimEvent,
    SimInstrument,
    SimKline,
    SimMarkPrice,
    SimTicker,
    SimTrade,
)

VENUES = ["binance", "backpack"]


def make_engine(seed: int = 7, **kwargs: Any) -> MarketEngine:
    instruments = {v: default_instruments(v) for v in VENUES}
    kwargs.setdefault("rate", 2_000.0)
    return MarketEngine(seed, instruments, VENUES, **kwargs)


def digest(records: list[tuple[str, SimEvent]]) -> str:
    h = hashlib.sha256()
    for venue, record in records:
        h.update(f"{venue}|{record!r}\n".encode())
    return h.hexdigest()


class Mirror:
    """A client-side book rebuilt from a snapshot and the diff stream, in Decimal."""

    def __init__(self, engine: MarketEngine, venue: str, symbol: str) -> None:
        snap = engine.view(venue).snapshot(symbol, 10_000)
        self.bids = {Decimal(p): Decimal(s) for p, s in snap.bids}
        self.asks = {Decimal(p): Decimal(s) for p, s in snap.asks}
        self.last_id = snap.last_id

    def apply(self, d: SimDepth) -> None:
        assert d.first_id == self.last_id + 1, (d.symbol, d.first_id, self.last_id)
        assert d.last_id >= d.first_id
        for side, levels in ((self.bids, d.bids), (self.asks, d.asks)):
            for p, s in levels:
                if Decimal(s) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(s)
        self.last_id = d.last_id

    def as_floats(self) -> tuple[dict[float, float], dict[float, float]]:
        return (
            {float(p): float(s) for p, s in self.bids.items()},
            {float(p): float(s) for p, s in self.asks.items()},
        )


def test_same_seed_same_records_and_different_seed_differs() -> None:
    a = digest(make_engine(11).take(20_000))
    b = digest(make_engine(11).take(20_000))
    c = digest(make_engine(12).take(20_000))
    assert a == b
    assert a != c


def test_records_mix_and_clock() -> None:
    engine = make_engine(rate=5_000.0)
    start = engine.now_ns()
    records = engine.take(30_000)
    kinds = {type(r) for _, r in records}
    assert kinds == {SimDepth, SimTrade, SimBookTicker, SimTicker, SimKline, SimMarkPrice}
    # Simulated time advances by records / rate (periodic records come on top of the rate).
    elapsed = (engine.now_ns() - start) / 1e9
    market = sum(1 for _, r in records if isinstance(r, SimDepth | SimTrade | SimBookTicker))
    assert elapsed == pytest.approx(market / 5_000.0, rel=0.01)
    # Mark prices only for the perp, only on the venue that lists it.
    perps = {(v, r.symbol) for v, r in records if isinstance(r, SimMarkPrice)}
    assert perps == {("backpack", "SOL-USDC-PERP")}
    # Times never go backwards within a venue.
    last: dict[str, int] = {}
    for venue, r in records:
        t = r.time_ns
        assert t >= last.get(venue, 0)
        last[venue] = t


def test_books_stay_uncrossed_on_grid_and_match_the_engine() -> None:
    engine = make_engine(3, rate=3_000.0)
    mirrors = {(v, i.symbol): Mirror(engine, v, i.symbol) for v in VENUES for i in engine.instruments(v)}
    grids = {(v, i.symbol): engine.grids(v, i.symbol) for v in VENUES for i in engine.instruments(v)}
    changes: list[int] = []
    for n in range(12_000):
        for venue, r in engine.step():
            if isinstance(r, SimDepth):
                price_grid, size_grid = grids[venue, r.symbol]
                for p, s in (*r.bids, *r.asks):
                    price_grid.parse(p)  # raises when off the grid
                    size_grid.parse(s)
                    assert p == price_grid.format(price_grid.parse(p))  # the grid's own decimals
                mirrors[venue, r.symbol].apply(r)
                changes.append(len(r.bids) + len(r.asks))
                m = mirrors[venue, r.symbol]
                assert max(m.bids) < min(m.asks)
        if n % 3_000 == 0:
            for (venue, symbol), m in mirrors.items():
                book = engine.book(venue, symbol)
                assert (book.bids, book.asks) == m.as_floats()
                assert book.last_id == m.last_id
    for (venue, symbol), m in mirrors.items():
        book = engine.book(venue, symbol)
        assert (book.bids, book.asks) == m.as_floats()
        assert len(m.bids) >= 250 and len(m.asks) >= 250  # hundreds of levels a side
    # Diffs: a few to a few dozen level changes.
    assert 2 <= statistics.mean(changes) <= 30
    assert max(changes) >= 20
    assert min(changes) >= 1


def test_book_tickers_follow_the_book_and_share_update_ids() -> None:
    engine = make_engine(5)
    mirrors = {(v, i.symbol): Mirror(engine, v, i.symbol) for v in VENUES for i in engine.instruments(v)}
    tickers = 0
    for venue, r in engine.take(20_000):
        if isinstance(r, SimDepth):
            mirrors[venue, r.symbol].apply(r)
        elif isinstance(r, SimBookTicker):
            m = mirrors[venue, r.symbol]
            assert r.update_id == m.last_id
            best_bid, best_ask = max(m.bids), min(m.asks)
            assert (Decimal(r.bid), Decimal(r.bid_size)) == (best_bid, m.bids[best_bid])
            assert (Decimal(r.ask), Decimal(r.ask_size)) == (best_ask, m.asks[best_ask])
            tickers += 1
    assert tickers > 1_000


def test_trades_consume_the_top_of_the_book() -> None:
    engine = make_engine(9)
    mirrors = {(v, i.symbol): Mirror(engine, v, i.symbol) for v in VENUES for i in engine.instruments(v)}
    last_trade_id: dict[tuple[str, str], int] = {}
    trades = 0
    for _ in range(8_000):
        step = engine.step()
        fills: dict[tuple[str, str], list[SimTrade]] = defaultdict(list)
        for venue, r in step:
            if isinstance(r, SimTrade):
                key = (venue, r.symbol)
                assert r.trade_id == last_trade_id.get(key, 0) + 1  # sequential per venue and symbol
                last_trade_id[key] = r.trade_id
                fills[key].append(r)
                trades += 1
            elif isinstance(r, SimDepth):
                key = (venue, r.symbol)
                m = mirrors[key]
                if key in fills:
                    # Walk the book as the taker did: each fill at the then-best opposite level.
                    taker_buy = not fills[key][0].buyer_is_maker
                    side = dict(m.asks if taker_buy else m.bids)
                    consumed: dict[Decimal, Decimal] = {}
                    for t in fills[key]:
                        assert (not t.buyer_is_maker) == taker_buy
                        best = min(side) if taker_buy else max(side)
                        price, size = Decimal(t.price), Decimal(t.size)
                        assert price == best
                        assert 0 < size <= side[best]
                        side[best] -= size
                        consumed[price] = side[best]
                        if side[best] == 0:
                            del side[best]
                    m.apply(r)
                    after = m.asks if taker_buy else m.bids
                    for price, left in consumed.items():
                        assert after.get(price, Decimal(0)) == left
                    del fills[key]
                else:
                    m.apply(r)
        assert not fills  # every trade came with the diff of the levels it took
    assert trades > 1_000


def test_klines_and_tickers_agree_with_trades() -> None:
    engine = make_engine(21, rate=3_000.0)
    trades: dict[tuple[str, str], list[SimTrade]] = defaultdict(list)
    closed_seen = 0
    tickers_seen = 0
    for venue, r in engine.take(40_000):
        key = (venue, r.symbol)
        if isinstance(r, SimTrade):
            trades[key].append(r)
        elif isinstance(r, SimKline) and r.closed:
            length = interval_ns(r.interval)
            assert r.close_ns == r.open_ns + length - 1
            inside = [t for t in trades[key] if r.open_ns <= t.time_ns <= r.close_ns]
            assert r.trade_count == len(inside)
            assert Decimal(r.volume) == sum((Decimal(t.size) for t in inside), Decimal(0))
            quote = sum((Decimal(t.price) * Decimal(t.size) for t in inside), Decimal(0))
            assert Decimal(r.quote_volume) == quote
            buys = [t for t in inside if not t.buyer_is_maker]
            assert Decimal(r.taker_buy_volume) == sum((Decimal(t.size) for t in buys), Decimal(0))
            if inside:
                prices = [Decimal(t.price) for t in inside]
                assert r.open is not None and r.high is not None and r.low is not None and r.close is not None
                assert (Decimal(r.open), Decimal(r.close)) == (prices[0], prices[-1])
                assert (Decimal(r.high), Decimal(r.low)) == (max(prices), min(prices))
                assert (r.first_trade_id, r.last_trade_id) == (inside[0].trade_id, inside[-1].trade_id)
            else:
                assert r.open is None and r.first_trade_id == -1
            closed_seen += 1
        elif isinstance(r, SimTicker):
            done = trades[key]  # the whole run is shorter than the 24 h window
            assert r.trade_count == len(done)
            assert Decimal(r.volume) == sum((Decimal(t.size) for t in done), Decimal(0))
            if done:
                prices = [Decimal(t.price) for t in done]
                assert Decimal(r.last) == prices[-1]
                assert Decimal(r.open) == prices[0]
                assert (Decimal(r.high), Decimal(r.low)) == (max(prices), min(prices))
                assert Decimal(r.price_change) == prices[-1] - prices[0]
                assert (r.first_trade_id, r.last_trade_id) == (done[0].trade_id, done[-1].trade_id)
            assert Decimal(r.bid) < Decimal(r.ask)
            tickers_seen += 1
    assert closed_seen > 60
    assert tickers_seen > 50
    # The REST view serves the same klines.
    view = engine.view("binance")
    rows = view.klines("BTC-USDT", "1s", None, None, 1_000)
    assert rows[-1].closed is False and all(k.closed for k in rows[:-1])
    assert [k.open_ns for k in rows] == sorted(k.open_ns for k in rows)
    total = sum(k.trade_count for k in rows)
    ticker = view.ticker("BTC-USDT")
    assert ticker.trade_count == len(trades["binance", "BTC-USDT"])
    assert total <= ticker.trade_count
    with pytest.raises(ValueError, match="'3m'"):
        view.klines("BTC-USDT", "3m", None, None, 10)
    with pytest.raises(KeyError, match="ETH-USDC"):
        view.ticker("ETH-USDC")


def test_snapshot_lags_the_stream_by_the_configured_updates() -> None:
    engine = make_engine(4, snapshot_lag_updates={"backpack": 4})
    symbol = "SOL-USDC"
    mirror = Mirror(make_engine(4), "backpack", symbol)  # the same start, without lag
    states: dict[int, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    for venue, r in engine.take(5_000):
        if venue == "backpack" and isinstance(r, SimDepth) and r.symbol == symbol:
            mirror.apply(r)
            states[mirror.last_id] = (dict(mirror.bids), dict(mirror.asks))
    snap = engine.view("backpack").snapshot(symbol, 100_000)
    current = engine.book("backpack", symbol).last_id
    assert snap.last_id < current
    ids = sorted(states)
    assert ids.index(current) - ids.index(snap.last_id) == 4
    bids, asks = states[snap.last_id]
    assert {Decimal(p): Decimal(s) for p, s in snap.bids} == bids
    assert {Decimal(p): Decimal(s) for p, s in snap.asks} == asks
    # Best first, limited.
    small = engine.view("backpack").snapshot(symbol, 5)
    assert len(small.bids) == len(small.asks) == 5
    assert [Decimal(p) for p, _ in small.bids] == sorted((Decimal(p) for p, _ in small.bids), reverse=True)
    assert [Decimal(p) for p, _ in small.asks] == sorted(Decimal(p) for p, _ in small.asks)
    # Binance is not lagged.
    assert (
        engine.view("binance").snapshot("BTC-USDT", 10).last_id == engine.book("binance", "BTC-USDT").last_id
    )


def test_cross_venue_spreads_open_and_close() -> None:
    pairs = [("BTC-USDT", "BTC-USDC"), ("ETH-USDT", "ETH-USDC"), ("SOL-USDT", "SOL-USDC")]

    def spreads(arb_rate: float) -> list[float]:
        """Relative mid-price differences between the venues, sampled over ~30 simulated seconds."""
        engine = make_engine(13, rate=4_000.0, arb_rate=arb_rate)
        out = []
        for n in range(30_000):
            engine.step()
            if n % 20 == 0:
                for left, right in pairs:
                    bid_a, ask_a = engine.best("binance", left)
                    bid_b, ask_b = engine.best("backpack", right)
                    mid_a, mid_b = (bid_a + ask_a) / 2, (bid_b + ask_b) / 2
                    out.append(abs(mid_a - mid_b) / mid_a)
        return out

    calm = spreads(0.0)
    busy = spreads(0.5)
    # Venues track one price: close, with noise and lag...
    assert statistics.median(calm) < 0.0005
    assert max(calm) < 0.002
    # ...and dislocations open spreads worth trading (fees are ~0.1% a side) that close again.
    assert max(busy) > 0.005
    wide = sum(1 for x in busy if x > 0.003) / len(busy)
    assert 0.01 < wide < 0.5


def test_default_instruments_and_validation() -> None:
    assert [i.symbol for i in default_instruments("binance")] == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    backpack = default_instruments("backpack")
    assert [i.symbol for i in backpack] == ["BTC-USDC", "ETH-USDC", "SOL-USDC", "SOL-USDC-PERP"]
    assert backpack[-1].kind is MarketKind.PERP
    inst = default_instruments("x")
    with pytest.raises(ValueError, match="rate"):
        MarketEngine(1, inst, ["x"], rate=0)
    with pytest.raises(ValueError, match="'y'"):
        MarketEngine(1, {"y": inst}, ["x"])
    with pytest.raises(ValueError, match="twice"):
        MarketEngine(1, [*inst, inst[0]], ["x"])
    with pytest.raises(ValueError, match="tick"):
        MarketEngine(1, [SimInstrument("A-B", "A", "B", "0", "1")], ["x"])
    with pytest.raises(ValueError, match="7x"):
        interval_ns("7x")


def test_grid_formatting() -> None:
    assert format_price("0.01", 9_000_012) == "90000.12"
    assert format_price("0.1", 5) == "0.5"
    assert format_price("0.05", 3) == "0.15"
    assert format_size("0.00001", 0) == "0.00000"
    assert format_size("1", 42) == "42"
    assert format_price("10", 3) == "30"
    assert Grid("0.05").parse("0.15") == 3
    with pytest.raises(ValueError, match="grid"):
        Grid("0.05").parse("0.12")
    with pytest.raises(ValueError, match="positive"):
        Grid("-1")
    with pytest.raises(ValueError, match="decimal"):
        Grid("abc")


@settings(max_examples=300, deadline=None)
@given(
    size=st.sampled_from(["1", "10", "0.5", "0.01", "0.05", "0.00001", "0.25", "2.5"]),
    n=st.integers(min_value=-(10**12), max_value=10**12),
)
def test_grid_round_trip(size: str, n: int) -> None:
    grid = Grid(size)
    text = grid.format(n)
    assert Decimal(text) == Decimal(size) * n
    assert grid.parse(text) == n
    assert len(text.partition(".")[2]) == grid.decimals


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    tick=st.sampled_from(["0.01", "0.05", "0.1", "0.5", "1", "0.0001"]),
    step=st.sampled_from(["0.001", "0.01", "0.1", "1"]),
    asset=st.sampled_from(["BTC", "SOL", "XYZ"]),
    rate=st.sampled_from([5.0, 500.0, 50_000.0]),
    levels=st.integers(min_value=10, max_value=400),
)
def test_books_stay_valid_for_any_seed_and_grid(
    seed: int, tick: str, step: str, asset: str, rate: float, levels: int
) -> None:
    inst = SimInstrument(f"{asset}-USD", asset, "USD", tick, step)
    perp = SimInstrument(f"{asset}-USD-PERP", asset, "USD", tick, step, MarketKind.PERP)
    engine = MarketEngine(seed, {"a": [inst], "b": [perp]}, ["a", "b"], rate=rate, book_levels=levels)
    mirrors = {
        ("a", inst.symbol): Mirror(engine, "a", inst.symbol),
        ("b", perp.symbol): Mirror(engine, "b", perp.symbol),
    }
    price_grid, size_grid = engine.grids("a", inst.symbol)
    for venue, r in engine.take(1_000):
        if isinstance(r, SimDepth):
            m = mirrors[venue, r.symbol]
            m.apply(r)
            assert max(m.bids) < min(m.asks)
            for p, s in (*r.bids, *r.asks):
                assert price_grid.parse(p) > 0
                size_grid.parse(s)
        elif isinstance(r, SimTrade):
            assert price_grid.parse(r.price) > 0 and size_grid.parse(r.size) > 0
    for (venue, symbol), m in mirrors.items():
        book = engine.book(venue, symbol)
        assert (book.bids, book.asks) == m.as_floats()
        assert len(book.bids) <= levels * 1.1 + 1 and len(book.asks) <= levels * 1.1 + 1
        assert len(book.asks) >= levels
        # Bids stop at the zero price when the grid is coarse for the price.
        assert len(book.bids) >= levels or min(book.bids) <= 3 * float(tick)


def test_instruments_for_and_skip_to() -> None:
    listed = instruments_for("backpack", ["SOL-USDC-PERP", "BTC-USDT", "PEPE-USDC"])
    assert [i.symbol for i in listed] == ["SOL-USDC-PERP", "BTC-USDT", "PEPE-USDC"]
    assert listed[0].kind is MarketKind.PERP and listed[1].tick_size == "0.01" and listed[2].base == "PEPE"
    with pytest.raises(ValueError, match="'BTC-USDT-SWAP'"):
        instruments_for("x", ["BTC-USDT-SWAP"])
    engine = make_engine(2)
    engine.take(100)
    later = engine.now_ns() + 3_600 * 10**9
    engine.skip_to(later)
    assert engine.now_ns() == later
    records = engine.take(200)
    assert all(r.time_ns >= later for _, r in records)
    # One periodic batch at the next second, not an hour of them.
    assert sum(1 for _, r in records if isinstance(r, SimTicker)) <= 7
