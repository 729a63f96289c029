"""Built-in checks on concrete examples, and the engine's dispatch, counters and isolation."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import pytest

from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    BookTicker,
    Event,
    Instrument,
    Kline,
    MarkPrice,
    Side,
    Ticker,
    Trade,
)
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder.validators.base import ValidationContext, Validator, Verdict
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
from marketfeeder.validators.engine import MAX_COUNTER_KEYS, StaticContext, ValidationEngine

NOW = 1_750_000_000_000_000_000
MS = 1_000_000
BTC = Instrument("binance", "BTCUSDT", "BTC-USDT", "BTC", "USDT", 0.01, 0.00001, "TRADING", True)


def ctx(now: int = NOW) -> StaticContext:
    return StaticContext({("binance", "BTC-USDT"): BTC}, clock=lambda: now)


def trade(
    price: Any = 100.0,
    size: Any = 1.0,
    *,
    ts: int | None = NOW - 5 * MS,
    receive: int = NOW,
    symbol: str = "BTC-USDT",
    exchange: str = "binance",
) -> Trade:
    return Trade(exchange, symbol, ts, receive, 1, price, size, Side.BUY, ts)


def book_ticker(
    bid: Any = 100.0, ask: Any = 100.01, *, bid_size: Any = 1.0, ask_size: Any = 2.0
) -> BookTicker:
    return BookTicker("binance", "BTC-USDT", NOW - 5 * MS, NOW, 7, bid, bid_size, ask, ask_size)


def ticker(**fields: Any) -> Ticker:
    values: dict[str, Any] = {
        "last": 100.0,
        "bid": 99.99,
        "bid_size": 1.0,
        "ask": 100.01,
        "ask_size": 1.0,
        "open": 95.0,
        "high": 101.0,
        "low": 94.0,
        "volume": 1000.0,
        "quote_volume": 98_000.0,
        "trade_count": 5000,
    }
    values.update(fields)
    return Ticker("binance", "BTC-USDT", NOW - 5 * MS, NOW, None, **values)


def kline(o: Any = 100.0, h: Any = 105.0, low: Any = 99.0, c: Any = 104.0, **fields: Any) -> Kline:
    values: dict[str, Any] = {"volume": 10.0, "closed": True, "quote_volume": 1000.0, "trade_count": 7}
    values.update(fields)
    return Kline(
        "binance",
        "BTC-USDT",
        NOW - 5 * MS,
        NOW,
        None,
        "1m",
        NOW - 60_000 * MS,
        NOW - 1,
        o,
        h,
        low,
        c,
        **values,
    )


def snapshot(bids: Any, asks: Any) -> BookSnapshot:
    return BookSnapshot("binance", "BTC-USDT", None, NOW, 10, bids, asks)


def delta(bids: Any, asks: Any) -> BookDelta:
    return BookDelta("binance", "BTC-USDT", NOW - 5 * MS, NOW, 12, 11, bids, asks)


def message(validator: Validator, event: Event, context: ValidationContext | None = None) -> str | None:
    verdict = validator.check(event, context or ctx())
    if verdict is None:
        return None
    assert verdict.check == validator.name
    return verdict.message


# --- registration and options ------------------------------------------------------------------


def test_builtin_names_match_validators() -> None:
    assert set(BUILTIN_VALIDATORS) == {
        "prices",
        "tick_grid",
        "spread",
        "volumes",
        "book_integrity",
        "outliers",
        "timestamps",
        "latency",
    }
    for name, factory in BUILTIN_VALIDATORS.items():
        validator = factory({})
        assert validator.name == name
        assert isinstance(validator, Validator)
        assert validator.event_types
        assert "Options" in (factory.__doc__ or "")


def test_default_plugin_registers_every_builtin() -> None:
    registry = collect(
        get_plugin_manager(load_entry_points=False), "marketfeeder_register_validators", "validator"
    )
    for name, factory in BUILTIN_VALIDATORS.items():
        assert registry[name] is factory


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match=r"check 'spread': unknown option\(s\) 'max_spread'.*max_spread_bps"):
        SpreadCheck({"max_spread": 10})


@pytest.mark.parametrize(
    ("factory", "options", "match"),
    [
        (SpreadCheck, {"max_spread_bps": -1}, "'max_spread_bps' must be a number > 0, got -1"),
        (SpreadCheck, {"max_spread_bps": "wide"}, "'max_spread_bps' must be a number"),
        (SpreadCheck, {"max_spread_bps": math.nan}, "'max_spread_bps'"),
        (OutlierCheck, {"window": 2}, "'window' must be an integer >= 3, got 2"),
        (OutlierCheck, {"window": 10.5}, "'window' must be an integer"),
        (OutlierCheck, {"window": 10, "min_samples": 11}, "'min_samples' \\(11\\) must not exceed 'window'"),
        (TickGridCheck, {"check_sizes": "yes"}, "'check_sizes' must be true or false"),
        (TimestampCheck, {"future_tolerance_ms": -5}, "'future_tolerance_ms' must be a number >= 0"),
        (LatencyCheck, {"threshold_ms": 0}, "'threshold_ms' must be a number > 0"),
        (PriceCheck, {"anything": 1}, "check 'prices': unknown option"),
    ],
)
def test_bad_option_values_are_named(factory: Any, options: Mapping[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory(options)


# --- prices --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (trade(-1.0), "trade price -1.0 is not positive"),
        (trade(0.0), "trade price 0.0 is not positive"),
        (trade(math.nan), "trade price nan is NaN"),
        (trade(100.0, math.inf), "trade size inf is infinite"),
        (trade(None), "trade price None is not a number"),
        (trade("100"), "trade price '100' is not a number"),
        (trade(-1.0, -2.0), "trade price -1.0 is not positive (and 1 more)"),
        (book_ticker(ask_size=0.0), "book ticker ask size 0.0 is not positive"),
        (ticker(vwap=-3.0), "ticker vwap -3.0 is not positive"),
        (ticker(price_change=math.nan), "ticker price change nan is NaN"),
        (kline(c=-5.0), "kline close -5.0 is not positive"),
        (snapshot(((100.0, 1.0), (99.0, 0.0)), ()), "snapshot bid level 1 size 0.0 is not positive"),
        (snapshot((), ((101.0, 1.0), (math.inf, 1.0))), "snapshot ask level 1 price inf is infinite"),
        (delta(((100.0, -1.0),), ()), "delta bid level 0 size -1.0 is negative"),
        (delta((), ((100.0, 1.0, 3),)), "delta ask level 0 is not a (price, size) pair: (100.0, 1.0, 3)"),
        (delta((), "junk"), "delta ask is not a sequence of levels: 'junk'"),
    ],
)
def test_prices_reports_what_is_wrong(event: Event, expected: str) -> None:
    assert message(PriceCheck(), event) == expected


def test_prices_accepts_good_data_and_skips_none() -> None:
    check = PriceCheck()
    good: list[Event] = [
        trade(),
        book_ticker(),
        ticker(),
        ticker(bid=None, ask=None, bid_size=None, ask_size=None, price_change=-3.0),
        kline(None, None, None, None),
        snapshot(((100.0, 1.0),), ((101.0, 2.0),)),
        delta(((100.0, 0.0),), ((101.0, 0.0), (102.0, 3.0))),
        MarkPrice("binance", "BTC-USDT-PERP", NOW, NOW, None, 100.0, 99.9, -0.0001, None),
    ]
    for event in good:
        assert message(check, event) is None, event


def test_prices_mark_price() -> None:
    event = MarkPrice("binance", "BTC-USDT-PERP", NOW, NOW, None, 100.0, -1.0, 0.0001, None)
    assert message(PriceCheck(), event) == "index price -1.0 is not positive"


def test_huge_and_odd_values_do_not_raise() -> None:
    # A huge int is a finite positive number; the checks that divide by it say they cannot check it.
    assert message(PriceCheck(), trade(10**400)) is None
    text = message(TickGridCheck(), trade(10**400))
    assert text is not None
    assert text.startswith("trade could not be checked: OverflowError")
    assert message(PriceCheck(), trade(b"1")) == "trade price b'1' is not a number"
    for factory in BUILTIN_VALIDATORS.values():
        check = factory({})
        for event in (trade(1e308, 1e308), book_ticker(1e308, -1e308), trade([1], {})):
            check.check(event, ctx())  # any answer, but an answer


# --- tick grid -----------------------------------------------------------------------------------


def test_tick_grid() -> None:
    check = TickGridCheck()
    assert message(check, trade(65_000.01, 0.00123)) is None
    assert message(check, trade(0.07, 0.1)) is None  # 0.07 / 0.01 == 7.000000000000001
    assert message(check, trade(65_000.015)) == (
        "trade price 65000.015 is not on the tick grid of 0.01 (binance BTC-USDT)"
    )
    assert message(check, trade(100.0, 0.000015)) == (
        "trade size 1.5e-05 is not on the step grid of 1e-05 (binance BTC-USDT)"
    )
    assert message(TickGridCheck({"check_sizes": False}), trade(100.0, 0.000015)) is None
    assert message(check, book_ticker(100.005, 100.01)) == (
        "book ticker bid 100.005 is not on the tick grid of 0.01 (binance BTC-USDT)"
    )
    assert message(check, book_ticker(ask_size=1.000001)) == (
        "book ticker ask size 1.000001 is not on the step grid of 1e-05 (binance BTC-USDT)"
    )
    assert message(check, snapshot(((100.0, 1.0), (99.999, 1.0)), ())) == (
        "snapshot bid level 1 price 99.999 is not on the tick grid of 0.01 (binance BTC-USDT)"
    )
    assert message(check, ticker(high=101.001)) == (
        "ticker high 101.001 is not on the tick grid of 0.01 (binance BTC-USDT)"
    )
    assert message(check, kline(None, None, None, None)) is None


def test_tick_grid_skips_unknown_instruments_and_non_finite_values() -> None:
    check = TickGridCheck()
    assert message(check, trade(100.005, symbol="ETH-USDT")) is None
    assert message(check, trade(100.005), StaticContext({})) is None
    assert message(check, trade(math.nan)) is None
    assert message(check, trade(math.inf)) is None
    no_grid = Instrument("binance", "BTCUSDT", "BTC-USDT", "BTC", "USDT", 0.0, 0.0, "TRADING", True)
    assert message(check, trade(100.005), StaticContext({("binance", "BTC-USDT"): no_grid})) is None


def test_tick_grid_reports_unreadable_value_instead_of_raising() -> None:
    text = message(TickGridCheck(), trade("100"))
    assert text is not None
    assert text.startswith("trade could not be checked: TypeError")


# --- spread --------------------------------------------------------------------------------------


def test_spread() -> None:
    check = SpreadCheck()
    assert message(check, book_ticker(100.0, 100.01)) is None
    assert message(check, book_ticker(100.0, 99.0)) == "book ticker crossed: bid 100.0 is above ask 99.0"
    assert message(check, book_ticker(100.0, 100.0)) == "book ticker locked: bid 100.0 equals ask 100.0"
    assert message(check, book_ticker(100.0, 110.0)) == (
        "book ticker spread 952.4 bps exceeds 500 bps (bid 100.0, ask 110.0)"
    )
    assert message(SpreadCheck({"max_spread_bps": 1000}), book_ticker(100.0, 110.0)) is None
    assert message(check, ticker(bid=101.0, ask=100.0)) == "ticker crossed: bid 101.0 is above ask 100.0"
    assert message(check, ticker(bid=None)) is None
    # Bad prices are the business of ``prices``.
    assert message(check, book_ticker(math.nan, 100.0)) is None
    assert message(check, book_ticker(-1.0, 100.0)) is None


# --- volumes -------------------------------------------------------------------------------------


def test_volumes() -> None:
    check = VolumeCheck()
    assert message(check, kline()) is None
    assert message(check, ticker()) is None
    assert message(check, kline(None, None, None, None, volume=0.0, quote_volume=None)) is None
    assert message(check, kline(volume=-1.0)) == "kline volume -1.0 is negative"
    assert message(check, ticker(trade_count=-2)) == "ticker trade count -2 is negative"
    assert message(check, ticker(quote_volume=math.nan)) == "ticker quote volume nan is NaN"
    assert message(check, kline(h=103.0)) == "kline high 103.0 is below max(open, close) 104.0"
    assert message(check, kline(low=100.5)) == "kline low 100.5 is above min(open, close) 100.0"
    assert message(check, ticker(high=90.0)) == "ticker high 90.0 is below low 94.0"


# --- book integrity ------------------------------------------------------------------------------


def test_book_integrity_snapshot() -> None:
    check = BookIntegrityCheck()
    good = snapshot(((100.0, 1.0), (99.0, 1.0)), ((101.0, 1.0), (102.0, 1.0)))
    assert message(check, good) is None
    assert message(check, snapshot((), ())) is None
    assert message(check, snapshot(((99.0, 1.0), (100.0, 1.0)), ())) == (
        "snapshot bids not strictly descending: level 1 price 100.0 after 99.0"
    )
    assert message(check, snapshot((), ((102.0, 1.0), (101.0, 1.0)))) == (
        "snapshot asks not strictly ascending: level 1 price 101.0 after 102.0"
    )
    assert message(check, snapshot(((100.0, 1.0), (100.0, 2.0)), ())) == (
        "snapshot bid price 100.0 appears twice (levels 0 and 1)"
    )
    assert message(check, snapshot(((101.0, 1.0),), ((100.0, 1.0),))) == (
        "snapshot crossed: best bid 101.0 is not below best ask 100.0"
    )
    assert message(check, snapshot(((math.nan, 1.0),), ())) == (
        "snapshot bid level 0 price nan is not a finite number"
    )
    assert (
        message(check, snapshot(((100.0,),), ()))
        == "snapshot bid level 0 is not a (price, size) pair: (100.0,)"
    )


def test_book_integrity_delta() -> None:
    check = BookIntegrityCheck()
    assert message(check, delta(((100.0, 0.0), (99.0, 1.0)), ((100.0, 2.0),))) is None
    assert (
        message(check, delta(((100.0, 0.0), (100.0, 1.0)), ()))
        == "delta lists bid price 100.0 more than once"
    )
    assert message(check, delta((), ((1.0, 0.0), (2.0, 0.0), (1.0, 3.0)))) == (
        "delta lists ask price 1.0 more than once"
    )


# --- outliers ------------------------------------------------------------------------------------


def test_mad_sorted_matches_definition() -> None:
    values = sorted([1.0, 2.0, 2.0, 3.0, 10.0, 11.0, 50.0])
    median = 3.0
    assert _mad_sorted(values, median) == sorted(abs(v - median) for v in values)[3]
    values = [1.0, 2.0, 4.0, 8.0]
    median = 3.0
    devs = sorted(abs(v - median) for v in values)
    assert _mad_sorted(values, median) == (devs[1] + devs[2]) / 2


def test_outlier_flags_spike_without_poisoning_window() -> None:
    check = OutlierCheck({"min_samples": 5})
    context = ctx()
    prices = [100.0, 100.01, 99.99, 100.02, 100.0, 99.98]
    for price in prices:
        assert check.check(trade(price), context) is None
    spike = check.check(trade(150.0), context)
    assert spike is not None
    assert spike.message == "trade price 150.0 is 50 from the rolling median 100 (5000.0 MADs; limit 0.5)"
    # The spike did not enter the window: the same spike is flagged again, normal prices still pass.
    assert check.check(trade(150.0), context) is not None
    assert check.check(trade(100.01), context) is None


def test_outlier_needs_warm_up() -> None:
    check = OutlierCheck({"min_samples": 5})
    context = ctx()
    for price in (100.0, 1000.0, 100.0, 5.0):
        assert check.check(trade(price), context) is None


def test_outlier_flat_series_allows_small_moves() -> None:
    check = OutlierCheck({"min_samples": 5})
    context = ctx()
    for _ in range(30):
        assert check.check(trade(100.0), context) is None
    assert check.check(trade(100.01), context) is None  # one tick
    assert check.check(trade(100.05), context) is None  # five ticks (min_ticks)
    assert check.check(trade(100.4), context) is None  # 0.4 % < min_rel_deviation
    assert check.check(trade(101.0), context) is not None  # 1 % with MAD 0


def test_outlier_rebases_after_a_real_level_shift() -> None:
    check = OutlierCheck({"min_samples": 5, "rebase_after": 3})
    context = ctx()
    for _ in range(10):
        check.check(trade(100.0), context)
    flagged = [check.check(trade(200.0 + i * 0.01), context) is not None for i in range(3)]
    assert flagged == [True, True, True]
    # The window restarted from the new level (3 values, so warming up again): 200 passes from now on.
    assert check.check(trade(200.0), context) is None
    for _ in range(10):
        assert check.check(trade(200.0), context) is None
    assert check.check(trade(100.0), context) is not None


def test_outlier_streams_are_separate_and_mid_is_used() -> None:
    check = OutlierCheck({"min_samples": 5})
    context = ctx()
    for _ in range(10):
        check.check(trade(100.0), context)
        check.check(trade(3000.0, symbol="ETH-USDT"), context)
        check.check(book_ticker(100.0, 100.02), context)
    assert check.check(trade(3000.0, symbol="ETH-USDT"), context) is None
    verdict = check.check(book_ticker(130.0, 130.02), context)
    assert verdict is not None
    assert verdict.message.startswith("book ticker mid 130.01 is 30 from the rolling median 100.01")


def test_outlier_ignores_unusable_prices() -> None:
    check = OutlierCheck({"min_samples": 3})
    context = ctx()
    for price in (100.0, 100.0, 100.0, math.nan, -5.0, math.inf, 0.0):
        assert check.check(trade(price), context) is None
    assert check.check(trade(100.0), context) is None


# --- timestamps and latency ----------------------------------------------------------------------


def test_timestamps_future_and_backwards() -> None:
    check = TimestampCheck()
    context = ctx()
    assert check.check(trade(ts=NOW - 10 * MS), context) is None
    assert check.check(trade(ts=NOW + 4_000 * MS), context) is None  # within the tolerance
    future = check.check(trade(ts=NOW + 6_000 * MS), context)
    assert future is not None
    assert (
        future.message
        == f"trade exchange_ts {NOW + 6_000 * MS} is 6000.0 ms in the future (tolerance 5000 ms)"
    )
    back = check.check(trade(ts=NOW - 20 * MS), context)
    assert back is not None
    assert (
        back.message
        == f"trade exchange_ts {NOW - 20 * MS} went back 4020.000 ms (previous {NOW + 4_000 * MS})"
    )
    assert check.check(trade(ts=NOW + 4_000 * MS), context) is None  # equal is fine
    assert check.check(trade(ts=None), context) is None


def test_timestamps_streams_are_separate() -> None:
    check = TimestampCheck()
    context = ctx()
    assert check.check(trade(ts=NOW), context) is None
    assert check.check(trade(ts=NOW - MS, symbol="ETH-USDT"), context) is None
    assert check.check(trade(ts=NOW - MS, exchange="backpack"), context) is None
    assert check.check(book_ticker(), context) is None  # NOW - 5 ms, but another event class
    assert TimestampCheck({"monotonic": False}).check(trade(ts=NOW - MS), context) is None


def test_timestamps_kline_interval() -> None:
    event = Kline("binance", "BTC-USDT", NOW, NOW, None, "1m", NOW, NOW - 1, 1.0, 1.0, 1.0, 1.0, 1.0, True)
    assert message(TimestampCheck(), event) == f"kline open_ts {NOW} is after its close_ts {NOW - 1}"


def test_latency() -> None:
    check = LatencyCheck()
    assert message(check, trade(ts=NOW - 1_999 * MS, receive=NOW)) is None
    assert message(check, trade(ts=NOW - 2_500 * MS, receive=NOW)) == (
        "latency alert: trade arrived 2500.0 ms after its exchange time (threshold 2000 ms)"
    )
    assert message(LatencyCheck({"threshold_ms": 100}), trade(ts=NOW - 150 * MS)) is not None
    assert message(check, trade(ts=None)) is None
    assert message(check, trade(ts=NOW + 10 * MS)) is None  # negative latency: skew, not delay


# --- engine --------------------------------------------------------------------------------------


class Exploding:
    """A third-party check with a bug."""

    name = "exploding"
    event_types: tuple[type[Event], ...] = (Trade,)

    def __init__(self) -> None:
        self.calls = 0

    def check(self, event: Event, context: ValidationContext) -> Verdict | None:
        self.calls += 1
        raise ZeroDivisionError("bug in a plugin")


class Recording:
    """A check that records which events reach it and flags symbols it is told to."""

    def __init__(self, name: str, event_types: tuple[type[Event], ...], flag: str = "") -> None:
        self.name = name
        self.event_types = event_types
        self.flag = flag
        self.seen: list[type[Event]] = []

    def check(self, event: Event, context: ValidationContext) -> Verdict | None:
        self.seen.append(type(event))
        return Verdict(self.name, "flagged") if event.symbol == self.flag else None


def all_builtins() -> list[Validator]:
    return [factory({}) for factory in BUILTIN_VALIDATORS.values()]


def test_engine_fast_path_returns_none() -> None:
    engine = ValidationEngine(all_builtins(), ctx())
    assert engine.check(trade()) is None
    assert engine.check(book_ticker()) is None
    assert engine.check(BookState("binance", "BTC-USDT", None, NOW, None, BookStatus.LIVE)) is None
    assert engine.failures() == {}
    assert engine.statistics() == {"checked": 3, "failed": 0, "verdicts": 0, "validator_errors": 0}


def test_engine_collects_verdicts_and_counts_per_symbol_and_check() -> None:
    engine = ValidationEngine(all_builtins(), ctx())
    verdicts = engine.check(trade(-1.0, ts=NOW - 3_000 * MS))
    assert verdicts is not None
    assert [v.check for v in verdicts] == ["prices", "latency"]
    assert engine.check(book_ticker(100.0, 99.0)) == [
        Verdict("spread", "book ticker crossed: bid 100.0 is above ask 99.0")
    ]
    engine.check(trade(-2.0, symbol="ETH-USDT"))
    assert engine.failures() == {
        "binance:BTC-USDT": {"prices": 1, "latency": 1, "spread": 1},
        "binance:ETH-USDT": {"prices": 1},
    }
    assert engine.statistics() == {"checked": 3, "failed": 3, "verdicts": 4, "validator_errors": 0}
    engine.reset_counters()
    assert engine.failures() == {}
    assert engine.statistics()["checked"] == 0


def test_engine_dispatches_only_relevant_checks() -> None:
    trades = Recording("trades_only", (Trade,))
    books = Recording("books_only", (BookSnapshot, BookDelta))
    everything = Recording("everything", (Event,))
    engine = ValidationEngine([trades, books, everything], ctx())
    engine.check(trade())
    engine.check(snapshot((), ()))
    engine.check(book_ticker())
    assert trades.seen == [Trade]
    assert books.seen == [BookSnapshot]
    assert everything.seen == [Trade, BookSnapshot, BookTicker]
    assert engine.validators_for(Trade) == (trades, everything)
    assert engine.validators_for(Kline) == (everything,)


def test_engine_resolves_subclasses_once() -> None:
    check = Recording("trades_only", (Trade,))
    engine = ValidationEngine([check], ctx())

    class Special(Event):
        __slots__ = ()

    assert engine.validators_for(Special) == ()
    event = trade()
    assert engine.check(event) is None
    assert check.seen == [Trade]


def test_engine_isolates_a_raising_check(caplog: pytest.LogCaptureFixture) -> None:
    exploding = Exploding()
    after = Recording("after", (Trade,), flag="BTC-USDT")
    engine = ValidationEngine([exploding, PriceCheck(), after], ctx())
    with caplog.at_level(logging.ERROR, logger="marketfeeder.validators"):
        first = engine.check(trade())
        second = engine.check(trade(-1.0))
    assert first == [Verdict("after", "flagged")]
    assert second == [Verdict("prices", "trade price -1.0 is not positive"), Verdict("after", "flagged")]
    assert exploding.calls == 2
    assert engine.validator_errors() == {"exploding": 2}
    assert engine.statistics()["validator_errors"] == 2
    assert "exploding" not in engine.failures()["binance:BTC-USDT"]
    # One traceback per faulty check, the rest only counted.
    records = [r for r in caplog.records if "exploding" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None


def test_engine_counts_a_non_verdict_answer_as_validator_error() -> None:
    class Sloppy:
        name = "sloppy"
        event_types: tuple[type[Event], ...] = (Trade,)

        def check(self, event: Event, context: ValidationContext) -> Any:
            return "looks wrong"

    engine = ValidationEngine([Sloppy()], ctx())
    assert engine.check(trade()) is None
    assert engine.validator_errors() == {"sloppy": 1}


def test_engine_rejects_bad_validator_sets() -> None:
    with pytest.raises(ValueError, match="two validators are named 'prices'"):
        ValidationEngine([PriceCheck(), PriceCheck()], ctx())
    with pytest.raises(TypeError, match="event_types must be a tuple"):
        ValidationEngine([Recording("x", [Trade])], ctx())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="has no name"):
        ValidationEngine([Recording("", (Trade,))], ctx())


def test_engine_counter_keys_are_bounded() -> None:
    engine = ValidationEngine([PriceCheck()], ctx())
    for i in range(MAX_COUNTER_KEYS + 5):
        engine.check(trade(-1.0, symbol=f"S{i}-USDT"))
    failures = engine.failures()
    assert len(failures) == MAX_COUNTER_KEYS + 1
    assert failures["*:*"] == {"prices": 5}


def test_static_context() -> None:
    instruments: dict[tuple[str, str], Instrument] = {}
    context = StaticContext(instruments, clock=lambda: 42)
    assert context.instrument("binance", "BTC-USDT") is None
    instruments[("binance", "BTC-USDT")] = BTC  # kept by reference: later loads are seen
    assert context.instrument("binance", "BTC-USDT") is BTC
    assert context.now_ns() == 42
    assert StaticContext().instrument("x", "y") is None
    before = time.time_ns()
    assert before <= StaticContext().now_ns() <= time.time_ns()
