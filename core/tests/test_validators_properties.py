"""Property tests for every built-in check and for symbol normalization.

For each check: valid generated data always passes; each kind of corruption is caught, by the check
that owns it; and the verdict does not move when fields the check does not look at are varied.
Prices and sizes are generated the way connectors make them: an exact decimal (``n * tick``) turned
into a float, so the tick-grid tolerance is exercised on real float error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar, cast

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    Event,
    Instrument,
    InstrumentTable,
    Kline,
    MarketKind,
    Side,
    Ticker,
    Trade,
    UnknownSymbolError,
)
from marketfeeder.validators.base import Validator, Verdict
from marketfeeder.validators.builtin import (
    BUILTIN_VALIDATORS,
    BookIntegrityCheck,
    LatencyCheck,
    OutlierCheck,
    PriceCheck,
    SpreadCheck,
    TickGridCheck,
    TimestampCheck,
    VolumeCheck,
    _mad_sorted,
)
from marketfeeder.validators.engine import StaticContext, ValidationEngine

PROPERTY = settings(max_examples=100, deadline=None)
HEAVY = settings(max_examples=100, deadline=None)

EXCHANGE = "binance"
SYMBOL = "BTC-USDT"
NOW = 1_750_000_000_000_000_000
MS = 1_000_000


E = TypeVar("E", bound=Event)


def evolve(event: E, **changes: Any) -> E:
    """``attrs.evolve`` typed for events (any field may be set to anything: that is the point)."""
    return cast(E, attrs.evolve(cast(Any, event), **changes))


# --- a market's grid and valid events on it --------------------------------------------------------


@attrs.frozen
class Grid:
    tick: Decimal
    step: Decimal

    @property
    def instrument(self) -> Instrument:
        return Instrument(
            EXCHANGE, "BTCUSDT", SYMBOL, "BTC", "USDT", float(self.tick), float(self.step), "TRADING", True
        )

    def context(self, now: int = NOW) -> StaticContext:
        return StaticContext({(EXCHANGE, SYMBOL): self.instrument}, clock=lambda: now)

    def price(self, n: int) -> float:
        return float(str(self.tick * n))  # as a connector does: float() of the exchange's decimal string

    def size(self, n: int) -> float:
        return float(str(self.step * n))


grid_units = st.builds(
    lambda mantissa, exponent: Decimal(mantissa).scaleb(-exponent),
    st.sampled_from([1, 2, 5, 25]),
    st.integers(0, 8),
)
grids = st.builds(Grid, grid_units, grid_units)
ticks_n = st.integers(1, 10**9)
steps_n = st.integers(1, 10**9)
timestamps = st.integers(NOW - 10_000 * MS, NOW)
sides = st.sampled_from([Side.BUY, Side.SELL])


@st.composite
def trades(draw: st.DrawFn, grid: Grid) -> Trade:
    ts = draw(timestamps)
    latency = draw(st.integers(0, 1_999 * MS))
    return Trade(
        EXCHANGE,
        SYMBOL,
        ts,
        ts + latency,
        draw(st.none() | st.integers(0, 2**63)),
        grid.price(draw(ticks_n)),
        grid.size(draw(steps_n)),
        draw(sides),
        draw(st.none() | timestamps),
    )


@st.composite
def book_tickers(draw: st.DrawFn, grid: Grid) -> BookTicker:
    bid_n = draw(st.integers(20, 10**9))
    spread_n = draw(st.integers(1, max(1, bid_n // 25)))  # at most ~400 bps, under the 500 bps default
    ts = draw(st.none() | timestamps)
    receive = (ts or NOW) + draw(st.integers(0, 1_999 * MS))
    return BookTicker(
        EXCHANGE,
        SYMBOL,
        ts,
        receive,
        draw(st.none() | st.integers(0, 2**63)),
        grid.price(bid_n),
        grid.size(draw(steps_n)),
        grid.price(bid_n + spread_n),
        grid.size(draw(steps_n)),
        draw(st.none() | timestamps),
    )


@st.composite
def ohlc(draw: st.DrawFn, grid: Grid) -> tuple[float, float, float, float]:
    low = draw(st.integers(100, 10**8))  # >= 100 ticks: a one-tick spread stays under 500 bps
    high = low + draw(st.integers(0, 10**6))
    o = draw(st.integers(low, high))
    c = draw(st.integers(low, high))
    return grid.price(o), grid.price(high), grid.price(low), grid.price(c)


@st.composite
def klines(draw: st.DrawFn, grid: Grid) -> Kline:
    o, h, low, c = draw(ohlc(grid)) if draw(st.booleans()) else (None, None, None, None)
    open_ts = draw(timestamps)
    close_ts = open_ts + draw(st.integers(0, 60_000 * MS))
    ts = draw(st.none() | timestamps)
    return Kline(
        EXCHANGE,
        SYMBOL,
        ts,
        (ts or NOW) + draw(st.integers(0, 1_999 * MS)),
        None,
        draw(st.sampled_from(["1m", "1h", "1d"])),
        open_ts,
        close_ts,
        o,
        h,
        low,
        c,
        grid.size(draw(st.integers(0, 10**9))),
        draw(st.booleans()),
        draw(st.none() | st.floats(0, 1e12)),
        draw(st.none() | st.integers(0, 10**9)),
    )


@st.composite
def tickers(draw: st.DrawFn, grid: Grid) -> Ticker:
    o, h, low, c = draw(ohlc(grid))
    bid_n = round(float(Decimal(str(c)) / grid.tick))
    has_book = draw(st.booleans())
    ts = draw(timestamps)
    return Ticker(
        EXCHANGE,
        SYMBOL,
        ts,
        ts + draw(st.integers(0, 1_999 * MS)),
        None,
        c,
        grid.price(bid_n) if has_book else None,
        grid.size(draw(steps_n)) if has_book else None,
        grid.price(bid_n + 1) if has_book else None,
        grid.size(draw(steps_n)) if has_book else None,
        o,
        h,
        low,
        draw(st.floats(0, 1e12)),
        draw(st.none() | st.floats(0, 1e15)),
        draw(st.none() | st.integers(0, 10**9)),
        draw(st.none() | st.floats(-1e6, 1e6)),
        draw(st.none() | st.floats(-100, 1000)),
        None,
    )


def _levels(grid: Grid, prices: Sequence[int], sizes: Sequence[int]) -> tuple[tuple[float, float], ...]:
    return tuple((grid.price(p), grid.size(s)) for p, s in zip(prices, sizes, strict=True))


@st.composite
def snapshots(draw: st.DrawFn, grid: Grid) -> BookSnapshot:
    mid = draw(st.integers(1_000, 10**8))
    bid_offsets = sorted(draw(st.lists(st.integers(0, 999), unique=True, max_size=25)))
    ask_offsets = sorted(draw(st.lists(st.integers(1, 1_000), unique=True, max_size=25)))
    bids = _levels(
        grid,
        [mid - o for o in bid_offsets],
        draw(st.lists(steps_n, min_size=len(bid_offsets), max_size=len(bid_offsets))),
    )
    asks = _levels(
        grid,
        [mid + o for o in ask_offsets],
        draw(st.lists(steps_n, min_size=len(ask_offsets), max_size=len(ask_offsets))),
    )
    ts = draw(st.none() | timestamps)
    receive = (ts or NOW) + draw(st.integers(0, 1_999 * MS))
    return BookSnapshot(EXCHANGE, SYMBOL, ts, receive, draw(st.integers(0, 2**63)), bids, asks)


@st.composite
def deltas(draw: st.DrawFn, grid: Grid) -> BookDelta:
    def side() -> tuple[tuple[float, float], ...]:
        prices = draw(st.lists(st.integers(1, 10**8), unique=True, max_size=25))
        sizes = draw(st.lists(st.integers(0, 10**9), min_size=len(prices), max_size=len(prices)))
        return _levels(grid, prices, sizes)

    first = draw(st.integers(0, 2**62))
    ts = draw(timestamps)
    return BookDelta(
        EXCHANGE,
        SYMBOL,
        ts,
        ts + draw(st.integers(0, 1_999 * MS)),
        first + draw(st.integers(0, 50)),
        first,
        side(),
        side(),
    )


def market_events(grid: Grid) -> st.SearchStrategy[Event]:
    return st.one_of(
        trades(grid), book_tickers(grid), tickers(grid), klines(grid), snapshots(grid), deltas(grid)
    )


def fresh_checks() -> list[Validator]:
    return [factory({}) for factory in BUILTIN_VALIDATORS.values()]


def run(check: Validator, event: Event, grid: Grid) -> Verdict | None:
    return check.check(event, grid.context())


# --- valid data passes -----------------------------------------------------------------------------


@HEAVY
@given(data=st.data(), grid=grids)
def test_valid_events_pass_every_check(data: st.DataObject, grid: Grid) -> None:
    event = data.draw(market_events(grid))
    for check in fresh_checks():
        assert run(check, event, grid) is None, (check.name, event)


@HEAVY
@given(
    grid=grids,
    start=st.integers(100_000, 10**9),
    moves=st.lists(
        st.tuples(st.integers(-5, 5), st.integers(0, 1_000 * MS), steps_n), min_size=1, max_size=80
    ),
)
def test_valid_streams_pass_the_engine(grid: Grid, start: int, moves: list[tuple[int, int, int]]) -> None:
    """A random walk of trades and book tickers, time moving forward: no check objects, not even the
    stateful ones (outliers, timestamps)."""
    engine = ValidationEngine(fresh_checks(), grid.context(NOW + 100_000 * MS))
    n = start
    ts = NOW
    for index, (move, dt, size) in enumerate(moves):
        n += move
        ts += dt
        price = grid.price(n)
        assert (
            engine.check(Trade(EXCHANGE, SYMBOL, ts, ts + MS, index, price, grid.size(size), Side.BUY))
            is None
        )
        book = BookTicker(
            EXCHANGE, SYMBOL, ts, ts + MS, index, price, grid.size(size), grid.price(n + 1), grid.size(1)
        )
        assert engine.check(book) is None
    assert engine.failures() == {}


# --- prices ---------------------------------------------------------------------------------------

BAD_POSITIVE = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, None, "1.5"]) | st.floats(
    max_value=0.0, allow_nan=False, allow_infinity=False
)
BAD_NON_NEGATIVE = st.sampled_from([math.nan, math.inf, -math.inf, None]) | st.floats(
    max_value=-1e-300, allow_nan=False, allow_infinity=False
)

# Per event class: (field, label in the message, whether None is allowed there).
PRICE_FIELDS: dict[type[Event], list[tuple[str, str, bool]]] = {
    Trade: [("price", "trade price", False), ("size", "trade size", False)],
    BookTicker: [
        ("bid", "book ticker bid", False),
        ("ask", "book ticker ask", False),
        ("bid_size", "book ticker bid size", False),
        ("ask_size", "book ticker ask size", False),
    ],
    Ticker: [
        ("last", "ticker last", True),
        ("open", "ticker open", True),
        ("high", "ticker high", True),
        ("low", "ticker low", True),
    ],
    Kline: [("open", "kline open", True), ("close", "kline close", True)],
}


@PROPERTY
@given(data=st.data(), grid=grids)
def test_prices_catch_bad_fields(data: st.DataObject, grid: Grid) -> None:
    cls = data.draw(st.sampled_from(sorted(PRICE_FIELDS, key=lambda c: c.__name__)))
    strategy = {Trade: trades, BookTicker: book_tickers, Ticker: tickers, Kline: klines}[cls]
    event = data.draw(strategy(grid))
    field, label, none_ok = data.draw(st.sampled_from(PRICE_FIELDS[cls]))
    bad = data.draw(BAD_POSITIVE)
    assume(not (none_ok and bad is None))
    verdict = run(PriceCheck(), evolve(event, **{field: bad}), grid)
    assert verdict is not None
    assert verdict.check == "prices"
    assert verdict.message.startswith(f"{label} {bad!r} ")


@PROPERTY
@given(
    data=st.data(), grid=grids, bad_size=BAD_NON_NEGATIVE, bad_price=BAD_POSITIVE, where=st.integers(0, 100)
)
def test_prices_catch_bad_book_levels(
    data: st.DataObject, grid: Grid, bad_size: Any, bad_price: Any, where: int
) -> None:
    snapshot = data.draw(snapshots(grid))
    assume(snapshot.bids)
    i = where % len(snapshot.bids)
    bids = list(snapshot.bids)
    bids[i] = (bad_price, bids[i][1])
    verdict = run(PriceCheck(), evolve(snapshot, bids=tuple(bids)), grid)
    assert verdict is not None
    assert f"snapshot bid level {i} price {bad_price!r}" in verdict.message

    delta = data.draw(deltas(grid))
    assume(delta.asks)
    j = where % len(delta.asks)
    asks = list(delta.asks)
    asks[j] = (asks[j][0], bad_size)
    verdict = run(PriceCheck(), evolve(delta, asks=tuple(asks)), grid)
    assert verdict is not None
    assert f"delta ask level {j} size {bad_size!r}" in verdict.message


@PROPERTY
@given(grid=grids, data=st.data())
def test_prices_delta_zero_size_is_a_delete(grid: Grid, data: st.DataObject) -> None:
    delta = data.draw(deltas(grid))
    zeroed = evolve(delta, bids=tuple((p, 0.0) for p, _ in delta.bids))
    assert run(PriceCheck(), zeroed, grid) is None


# --- tick grid -------------------------------------------------------------------------------------


@PROPERTY
@given(grid=grids, n=ticks_n, hundredths=st.integers(1, 99), data=st.data())
def test_tick_grid_catches_off_grid_prices(grid: Grid, n: int, hundredths: int, data: st.DataObject) -> None:
    event = data.draw(trades(grid))
    off = float(str(grid.tick * n + grid.tick * hundredths / 100))
    verdict = run(TickGridCheck(), evolve(event, price=off), grid)
    assert verdict is not None
    assert verdict.message.startswith(f"trade price {off!r} is not on the tick grid")
    # Sizes too, on the step grid.
    off_size = float(str(grid.step * n + grid.step * hundredths / 100))
    verdict = run(TickGridCheck(), evolve(event, size=off_size), grid)
    assert verdict is not None
    assert verdict.message.startswith(f"trade size {off_size!r} is not on the step grid")


@PROPERTY
@given(grid=grids, data=st.data(), hundredths=st.integers(1, 99))
def test_tick_grid_catches_off_grid_levels(grid: Grid, data: st.DataObject, hundredths: int) -> None:
    snapshot = data.draw(snapshots(grid))
    assume(snapshot.asks)
    price, size = snapshot.asks[-1]
    off = float(str(Decimal(str(price)) + grid.tick * hundredths / 100))
    asks = (*snapshot.asks[:-1], (off, size))
    verdict = run(TickGridCheck(), evolve(snapshot, asks=asks), grid)
    assert verdict is not None
    assert verdict.message.startswith(f"snapshot ask level {len(asks) - 1} price {off!r}")


@PROPERTY
@given(grid=grids, data=st.data())
def test_tick_grid_skips_unknown_instruments(grid: Grid, data: st.DataObject) -> None:
    event = data.draw(trades(grid))
    off = evolve(event, price=event.price + float(grid.tick) / 3)
    assert TickGridCheck().check(off, StaticContext({})) is None


# --- spread ----------------------------------------------------------------------------------------


@PROPERTY
@given(grid=grids, data=st.data(), under=st.integers(0, 10**6))
def test_spread_catches_crossed_and_locked(grid: Grid, data: st.DataObject, under: int) -> None:
    event = data.draw(book_tickers(grid))
    ask_n = round(float(Decimal(str(event.ask)) / grid.tick))
    assume(ask_n - under >= 1)
    crossed = evolve(event, bid=event.ask, ask=grid.price(ask_n - under))
    verdict = run(SpreadCheck(), crossed, grid)
    assert verdict is not None
    assert verdict.message.startswith("book ticker locked" if under == 0 else "book ticker crossed")


@PROPERTY
@given(grid=grids, data=st.data(), max_bps=st.floats(1, 5_000), factor=st.floats(1.01, 100))
def test_spread_catches_wide_spreads(grid: Grid, data: st.DataObject, max_bps: float, factor: float) -> None:
    event = data.draw(book_tickers(grid))
    # An ask that puts the spread at `factor` times the bound.
    target = max_bps * factor / 10_000
    ask = event.bid * (2 + target) / (2 - target) if target < 2 else event.bid * 1e6
    verdict = run(SpreadCheck({"max_spread_bps": max_bps}), evolve(event, ask=ask), grid)
    assert verdict is not None
    assert "bps exceeds" in verdict.message
    # And one well inside the bound passes.
    inside = max_bps / 2 / 10_000
    ask = event.bid * (2 + inside) / (2 - inside)
    assert run(SpreadCheck({"max_spread_bps": max_bps}), evolve(event, ask=ask), grid) is None


# --- volumes ---------------------------------------------------------------------------------------


@PROPERTY
@given(grid=grids, data=st.data(), bad=BAD_NON_NEGATIVE.filter(lambda v: v is not None))
def test_volumes_catch_negative_or_non_finite(grid: Grid, data: st.DataObject, bad: Any) -> None:
    event: Ticker | Kline = data.draw(st.one_of(tickers(grid), klines(grid)))
    field = data.draw(st.sampled_from(["volume", "quote_volume", "trade_count"]))
    verdict = run(VolumeCheck(), evolve(event, **{field: bad}), grid)
    assert verdict is not None
    assert f"{field.replace('_', ' ')} {bad!r}" in verdict.message


@PROPERTY
@given(grid=grids, data=st.data(), by=st.integers(1, 10**6))
def test_volumes_catch_inconsistent_candles(grid: Grid, data: st.DataObject, by: int) -> None:
    o, h, low, c = data.draw(ohlc(grid))
    event = data.draw(klines(grid))
    top = max(round(float(Decimal(str(o)) / grid.tick)), round(float(Decimal(str(c)) / grid.tick)))
    bottom = min(round(float(Decimal(str(o)) / grid.tick)), round(float(Decimal(str(c)) / grid.tick)))
    assume(top - by >= 1)
    below = evolve(event, open=o, high=grid.price(top - by), low=low, close=c)
    verdict = run(VolumeCheck(), below, grid)
    assert verdict is not None
    assert "is below max(open, close)" in verdict.message
    above = evolve(event, open=o, high=h, low=grid.price(bottom + by), close=c)
    verdict = run(VolumeCheck(), above, grid)
    assert verdict is not None
    assert "is above min(open, close)" in verdict.message


# --- book integrity --------------------------------------------------------------------------------


@PROPERTY
@given(grid=grids, data=st.data(), where=st.integers(0, 100))
def test_book_integrity_catches_unsorted_sides(grid: Grid, data: st.DataObject, where: int) -> None:
    snapshot = data.draw(snapshots(grid))
    side = data.draw(st.sampled_from(["bids", "asks"]))
    levels = list(getattr(snapshot, side))
    assume(len(levels) >= 2)
    i = where % (len(levels) - 1)
    levels[i], levels[i + 1] = levels[i + 1], levels[i]
    verdict = run(BookIntegrityCheck(), evolve(snapshot, **{side: tuple(levels)}), grid)
    assert verdict is not None
    order = "descending" if side == "bids" else "ascending"
    assert verdict.message.startswith(f"snapshot {side} not strictly {order}")


@PROPERTY
@given(grid=grids, data=st.data(), where=st.integers(0, 100), size=steps_n)
def test_book_integrity_catches_duplicate_levels(
    grid: Grid, data: st.DataObject, where: int, size: int
) -> None:
    snapshot = data.draw(snapshots(grid))
    side = data.draw(st.sampled_from(["bids", "asks"]))
    levels = list(getattr(snapshot, side))
    assume(levels)
    i = where % len(levels)
    levels.insert(i + 1, (levels[i][0], grid.size(size)))
    verdict = run(BookIntegrityCheck(), evolve(snapshot, **{side: tuple(levels)}), grid)
    assert verdict is not None
    assert (
        verdict.message
        == f"snapshot {side[:-1]} price {levels[i][0]!r} appears twice (levels {i} and {i + 1})"
    )

    delta = data.draw(deltas(grid))
    dlevels = list(getattr(delta, side))
    assume(dlevels)
    j = where % len(dlevels)
    dlevels.append((dlevels[j][0], grid.size(size)))
    verdict = run(BookIntegrityCheck(), evolve(delta, **{side: tuple(dlevels)}), grid)
    assert verdict is not None
    assert verdict.message == f"delta lists {side[:-1]} price {dlevels[j][0]!r} more than once"


@PROPERTY
@given(grid=grids, data=st.data(), below=st.integers(0, 500), size=steps_n)
def test_book_integrity_catches_crossed_snapshots(
    grid: Grid, data: st.DataObject, below: int, size: int
) -> None:
    snapshot = data.draw(snapshots(grid))
    assume(snapshot.bids)
    best_bid_n = round(float(Decimal(str(snapshot.bids[0][0])) / grid.tick))
    assume(best_bid_n - below >= 1)
    crossing = (grid.price(best_bid_n - below), grid.size(size))
    verdict = run(BookIntegrityCheck(), evolve(snapshot, asks=(crossing, *snapshot.asks)), grid)
    assert verdict is not None
    assert verdict.message.startswith("snapshot crossed: best bid")


# --- outliers --------------------------------------------------------------------------------------

bands = st.lists(st.floats(0.0, 0.004), min_size=20, max_size=120)


def outlier_verdicts(
    check: OutlierCheck, prices: Sequence[float], context: StaticContext
) -> list[Verdict | None]:
    return [
        check.check(Trade(EXCHANGE, SYMBOL, NOW, NOW, i, p, 1.0, Side.BUY), context)
        for i, p in enumerate(prices)
    ]


@PROPERTY
@given(base=st.floats(1e-6, 1e7), band=bands)
def test_outliers_pass_values_within_the_floor(base: float, band: list[float]) -> None:
    """Values spread less than min_rel_deviation never trip the check, however the MAD looks."""
    prices = [base * (1 + x) for x in band]
    assert outlier_verdicts(OutlierCheck(), prices, StaticContext({})) == [None] * len(prices)


@PROPERTY
@given(
    base=st.floats(1e-6, 1e7),
    band=bands,
    factor=st.floats(1.05, 1_000) | st.floats(1e-3, 0.95),
    at=st.integers(20, 200),
)
def test_outliers_catch_a_spike_and_are_not_poisoned(
    base: float, band: list[float], factor: float, at: int
) -> None:
    prices = [base * (1 + x) for x in band]
    at = min(at, len(prices))
    spiked = [*prices[:at], base * factor, *prices[at:]]
    clean = outlier_verdicts(OutlierCheck(), prices, StaticContext({}))
    dirty = outlier_verdicts(OutlierCheck(), spiked, StaticContext({}))
    spike = dirty.pop(at)
    assert spike is not None
    assert spike.check == "outliers"
    assert spike.message.startswith(f"trade price {base * factor!r} is ")
    assert dirty == clean  # every other value judged exactly as without the spike


@PROPERTY
@given(
    base=st.floats(1e-3, 1e7),
    band=st.lists(st.floats(0.0, 0.004), min_size=80, max_size=160),
    factor=st.floats(1.05, 1_000) | st.floats(1e-3, 0.95),
)
def test_outliers_repeated_isolated_spikes_never_enter_the_window(
    base: float, band: list[float], factor: float
) -> None:
    """Spikes between clean values, as many as the clean values: admitted, they would move the median."""
    check = OutlierCheck({"window": 50})
    context = StaticContext({})
    clean = [base * (1 + x) for x in band]
    warm, rest = clean[:20], clean[20:]
    assert outlier_verdicts(check, warm, context) == [None] * len(warm)
    for i, value in enumerate(rest):
        spike = check.check(Trade(EXCHANGE, SYMBOL, NOW, NOW, i, base * factor, 1.0, Side.BUY), context)
        assert spike is not None, i
        assert check.check(Trade(EXCHANGE, SYMBOL, NOW, NOW, i, value, 1.0, Side.BUY), context) is None


@PROPERTY
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300), data=st.data())
def test_mad_walk_equals_definition(values: list[float], data: st.DataObject) -> None:
    values.sort()
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    deviations = sorted(abs(v - median) for v in values)
    expected = deviations[n // 2] if n % 2 else (deviations[n // 2 - 1] + deviations[n // 2]) / 2
    assert _mad_sorted(values, median) == pytest.approx(expected, rel=1e-12, abs=1e-9)


# --- timestamps and latency ------------------------------------------------------------------------


def ts_trade(ts: int | None, receive: int = NOW, price: float = 100.0, seq: int = 0) -> Trade:
    return Trade(EXCHANGE, SYMBOL, ts, receive, seq, price, 1.0, Side.BUY)


@PROPERTY
@given(steps=st.lists(st.integers(0, 10_000 * MS), max_size=60), lead=st.integers(1, 10**15))
def test_timestamps_catch_future_times(steps: list[int], lead: int) -> None:
    check = TimestampCheck()
    context = StaticContext({}, clock=lambda: NOW)
    ts = NOW - sum(steps)
    for step in steps:
        ts += step
        assert check.check(ts_trade(ts), context) is None  # non-decreasing and not ahead: fine
    verdict = check.check(ts_trade(NOW + 5_000 * MS + lead), context)
    assert verdict is not None
    assert "in the future" in verdict.message
    assert check.check(ts_trade(NOW + 5_000 * MS), context) is None  # exactly the tolerance is fine


@PROPERTY
@given(
    steps=st.lists(st.integers(0, 1_000 * MS), min_size=1, max_size=60),
    back=st.integers(1, 10**12),
    at=st.integers(0, 60),
)
def test_timestamps_catch_backwards_times_without_poisoning(steps: list[int], back: int, at: int) -> None:
    context = StaticContext({}, clock=lambda: NOW)
    times: list[int] = []
    ts = NOW - sum(steps) - 10**12
    for step in steps:
        ts += step
        times.append(ts)
    at = min(at, len(times) - 1)
    check = TimestampCheck()
    for t in times[: at + 1]:
        assert check.check(ts_trade(t), context) is None
    verdict = check.check(ts_trade(times[at] - back), context)
    assert verdict is not None
    assert verdict.message.startswith(f"trade exchange_ts {times[at] - back} went back")
    if back >= 2:
        # Judged against the last accepted time, not the rejected one.
        assert check.check(ts_trade(times[at] - back // 2), context) is not None
    for t in times[at + 1 :]:
        assert check.check(ts_trade(t), context) is None


@PROPERTY
@given(ts=timestamps, latency=st.integers(-(10**12), 10**13), threshold=st.floats(1, 10**6))
def test_latency_alerts_exactly_over_the_threshold(ts: int, latency: int, threshold: float) -> None:
    verdict = LatencyCheck({"threshold_ms": threshold}).check(ts_trade(ts, ts + latency), StaticContext({}))
    assert (verdict is not None) == (latency > int(threshold * MS))
    if verdict is not None:
        assert verdict.message.startswith("latency alert: trade arrived")


# --- verdicts do not depend on unrelated fields ----------------------------------------------------

# For each check, fields of a Trade / BookTicker it does not look at.
UNRELATED: dict[str, dict[type[Event], list[str]]] = {
    "prices": {
        Trade: ["seq", "side", "exchange_ts", "receive_ts", "trade_ts", "symbol"],
        BookTicker: ["seq", "exchange_ts", "receive_ts", "engine_ts"],
    },
    "tick_grid": {
        Trade: ["seq", "side", "exchange_ts", "receive_ts", "trade_ts"],
        BookTicker: ["seq", "exchange_ts", "receive_ts"],
    },
    "spread": {BookTicker: ["seq", "exchange_ts", "receive_ts", "bid_size", "ask_size", "engine_ts"]},
    "outliers": {
        Trade: ["seq", "side", "size", "exchange_ts", "receive_ts"],
        BookTicker: ["seq", "bid_size", "ask_size"],
    },
    "timestamps": {
        Trade: ["seq", "side", "price", "size", "receive_ts", "trade_ts"],
        BookTicker: ["seq", "bid", "ask", "bid_size"],
    },
    "latency": {
        Trade: ["seq", "side", "price", "size", "trade_ts"],
        BookTicker: ["seq", "bid", "ask", "ask_size"],
    },
}

ANY_VALUE: dict[str, st.SearchStrategy[Any]] = {
    "seq": st.none() | st.integers(0, 2**63),
    "side": sides,
    "symbol": st.sampled_from(["BTC-USDT", "ETH-USDT", "X-Y"]),
    "exchange_ts": st.none() | timestamps,
    "receive_ts": timestamps,
    "trade_ts": st.none() | timestamps,
    "engine_ts": st.none() | timestamps,
    "price": st.floats(-1e9, 1e9) | st.just(math.nan),
    "bid": st.floats(-1e9, 1e9) | st.just(math.nan),
    "ask": st.floats(-1e9, 1e9) | st.just(math.nan),
    "size": st.floats(-1e9, 1e9) | st.just(math.nan),
    "bid_size": st.floats(-1e9, 1e9) | st.just(math.inf),
    "ask_size": st.floats(-1e9, 1e9) | st.just(math.inf),
}


@st.composite
def possibly_bad(draw: st.DrawFn, grid: Grid, cls: type[Event]) -> Event:
    """A valid event of ``cls``, sometimes with one field corrupted, so both outcomes are compared."""
    event: Event = draw(trades(grid) if cls is Trade else book_tickers(grid))
    if draw(st.booleans()):
        field = draw(st.sampled_from(list(ANY_VALUE)))
        if hasattr(event, field) and field != "symbol":
            event = evolve(event, **{field: draw(ANY_VALUE[field])})
    return event


@HEAVY
@given(grid=grids, data=st.data())
def test_verdicts_ignore_unrelated_fields(grid: Grid, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(UNRELATED)))
    cls = data.draw(st.sampled_from(sorted(UNRELATED[name], key=lambda c: c.__name__)))
    factory: Callable[[dict[str, Any]], Validator] = BUILTIN_VALIDATORS[name]
    # A short stream, so the stateful checks (outliers, timestamps) are compared on history too.
    events = data.draw(st.lists(possibly_bad(grid, cls), min_size=1, max_size=25))
    varied = []
    for event in events:
        changes = {
            field: data.draw(ANY_VALUE[field]) for field in UNRELATED[name][cls] if data.draw(st.booleans())
        }
        varied.append(evolve(event, **changes))
    context = grid.context()
    first, second = factory({}), factory({})
    assert [first.check(e, context) for e in events] == [second.check(e, context) for e in varied]


@PROPERTY
@given(
    grid=grids,
    data=st.data(),
    garbage=st.one_of(st.none(), st.text(max_size=5), st.integers(), st.floats(), st.tuples(st.integers())),
)
def test_checks_never_raise(grid: Grid, data: st.DataObject, garbage: Any) -> None:
    event = data.draw(market_events(grid))
    fields = [f.name for f in attrs.fields(cast(Any, type(event))) if f.name not in ("exchange", "symbol")]
    field = data.draw(st.sampled_from(fields))
    broken = evolve(event, **{field: garbage})
    context = grid.context()
    for check in fresh_checks():
        verdict = check.check(broken, context)
        assert verdict is None or (isinstance(verdict, Verdict) and verdict.check == check.name)


# --- symbol normalization --------------------------------------------------------------------------

asset = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=2, max_size=6).filter(
    lambda s: not s.isdigit()
)
STYLES = ("concat", "underscore", "perp")


@st.composite
def instrument_tables(draw: st.DrawFn) -> tuple[str, list[Instrument]]:
    exchange = draw(st.sampled_from(["binance", "backpack", "other"]))
    specs = draw(
        st.lists(
            st.tuples(asset, asset, st.sampled_from(STYLES), st.booleans()).filter(lambda t: t[0] != t[1]),
            max_size=40,
        )
    )
    instruments: list[Instrument] = []
    natives: set[str] = set()
    symbols: set[str] = set()
    for base, quote, style, lower in specs:
        kind = MarketKind.PERP if style == "perp" else MarketKind.SPOT
        native = {
            "concat": f"{base}{quote}",
            "underscore": f"{base}_{quote}",
            "perp": f"{base}_{quote}_PERP",
        }[style]
        # Normalization uppercases whatever case the exchange's market list used for base and quote.
        symbol = Instrument.normalized(base.lower() if lower else base, quote, kind)
        if native in natives or symbol in symbols:
            continue  # an exchange lists each market once
        natives.add(native)
        symbols.add(symbol)
        instruments.append(
            Instrument(exchange, native, symbol, base, quote, 0.01, 0.001, "TRADING", True, kind)
        )
    return exchange, instruments


@PROPERTY
@given(table=instrument_tables())
def test_instrument_table_round_trips(table: tuple[str, list[Instrument]]) -> None:
    exchange, instruments = table
    lookup = InstrumentTable(exchange, instruments)
    assert len(lookup) == len(instruments)
    for instrument in instruments:
        assert instrument.symbol == f"{instrument.base}-{instrument.quote}" + (
            "-PERP" if instrument.kind is MarketKind.PERP else ""
        )
        assert instrument.symbol == instrument.symbol.upper()
        assert lookup.to_symbol(instrument.native) == instrument.symbol
        assert lookup.to_native(instrument.symbol) == instrument.native
        assert lookup.to_native(lookup.to_symbol(instrument.native)) == instrument.native
        assert lookup.to_symbol(lookup.to_native(instrument.symbol)) == instrument.symbol
        assert instrument.symbol in lookup
        assert lookup.by_symbol(instrument.symbol) is lookup.by_native(instrument.native)


@PROPERTY
@given(table=instrument_tables(), name=asset)
def test_instrument_table_unknown_symbols_are_named(table: tuple[str, list[Instrument]], name: str) -> None:
    exchange, instruments = table
    lookup = InstrumentTable(exchange, instruments)
    unknown = f"{name}-NOPE"
    assume(unknown not in lookup)
    with pytest.raises(UnknownSymbolError, match=f"{exchange}: unknown symbol '{unknown}'"):
        lookup.to_native(unknown)
    assume(lookup.get_native(name) is None)
    with pytest.raises(UnknownSymbolError, match=f"unknown native symbol '{name}'"):
        lookup.to_symbol(name)
