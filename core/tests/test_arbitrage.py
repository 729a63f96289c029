"""Arbitrage detection: book walking, fees, conversion, hysteresis, and never from a book not LIVE."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketfeeder.arbitrage import ArbitrageDetector, ArbitrageStrategy, LegBook, walk_books
from marketfeeder.models import BookStatus
from marketfeeder.syncview import MergeBuffer, QuoteEquivalence, RawQuote, synchronize

MS = 1_000_000
NOW = 1_700_000_000_000_000_000


def leg(exchange: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]], *, quote: str = "USDT",
        state: BookStatus = BookStatus.LIVE, age_ms: float = 10) -> LegBook:
    symbol = f"BTC-{quote}"
    return LegBook(exchange, symbol, quote, state, bids, asks, int(NOW - age_ms * MS), NOW)


def test_walk_stops_where_the_edge_ends() -> None:
    asks = [(100.0, 1.0), (100.5, 2.0), (102.0, 5.0)]
    bids = [(101.5, 0.5), (101.0, 3.0), (99.0, 9.0)]
    fill = walk_books(asks, bids, buy_fee_bps=0, sell_fee_bps=0, target_notional=1e9)
    # 0.5 @100 vs 101.5, 0.5 @100 vs 101, 2.0 @100.5 vs 101, then 102 > 101: stop
    assert fill.size == pytest.approx(3.0)
    assert fill.buy_vwap == pytest.approx((100 * 1.0 + 100.5 * 2.0) / 3)
    assert fill.sell_vwap == pytest.approx((101.5 * 0.5 + 101.0 * 2.5) / 3)


def test_walk_respects_fees_and_target_notional() -> None:
    asks = [(100.0, 10.0)]
    bids = [(100.15, 10.0)]
    assert walk_books(asks, bids, buy_fee_bps=10, sell_fee_bps=10, target_notional=1e9).size == 0  # 15 bps < 20 bps fees
    fill = walk_books(asks, bids, buy_fee_bps=5, sell_fee_bps=5, target_notional=250.0)
    assert fill.notional == pytest.approx(250.0)
    assert fill.size == pytest.approx(2.5)


level_lists = st.lists(
    st.tuples(st.floats(1, 1000, allow_nan=False), st.floats(0.001, 100, allow_nan=False)), min_size=1, max_size=15
)


@given(asks=level_lists, bids=level_lists, fee_b=st.floats(0, 50), fee_s=st.floats(0, 50), target=st.floats(1, 1e6))
def test_walk_invariants(asks: list[tuple[float, float]], bids: list[tuple[float, float]], fee_b: float, fee_s: float, target: float) -> None:
    asks = sorted(asks)
    bids = sorted(bids, reverse=True)
    fill = walk_books(asks, bids, buy_fee_bps=fee_b, sell_fee_bps=fee_s, target_notional=target)
    assert fill.size <= min(sum(q for _, q in asks), sum(q for _, q in bids)) + 1e-9
    assert fill.notional <= target * (1 + 1e-9)
    if fill.size > 0:
        # every unit taken profits after fees, so the averages do too
        assert fill.sell_vwap * (1 - fee_s / 1e4) > fill.buy_vwap * (1 + fee_b / 1e4) * (1 - 1e-12)
        assert asks[0][0] <= fill.buy_vwap * (1 + 1e-12)
        assert fill.sell_vwap <= bids[0][0] * (1 + 1e-12)


def detector(**kw: float) -> ArbitrageDetector:
    options = {"fees_bps": {"a": 5.0, "b": 5.0}, "open_bps": 10.0, "close_bps": 2.0, "target_notional": 1e6}
    options.update(kw)
    return ArbitrageDetector("BTC-USDT", **options)  # type: ignore[arg-type]


def test_one_open_then_one_close_with_hysteresis() -> None:
    det = detector()
    cheap = leg("a", [(99.0, 1.0)], [(100.0, 1.0)])
    rich = leg("b", [(100.5, 1.0)], [(101.0, 1.0)])  # 50 bps gross, 40 net
    events = det.evaluate([cheap, rich], NOW)
    assert [(e.status, e.buy_exchange, e.sell_exchange) for e in events] == [("open", "a", "b")]
    opened = events[0]
    assert opened.net_bps == pytest.approx(40.0)
    assert opened.size == pytest.approx(1.0)
    assert det.evaluate([cheap, rich], NOW) == []  # unchanged: no new event
    narrower = leg("b", [(100.06, 1.0)], [(101.0, 1.0)])  # 6 bps gross, -4 net... below close
    middle = leg("b", [(100.15, 1.0)], [(101.0, 1.0)])  # 15 gross, 5 net: between close and open
    events = det.evaluate([cheap, middle], NOW)
    assert [e.status for e in events] == ["update"]  # still open: hysteresis keeps it
    events = det.evaluate([cheap, narrower], NOW)
    assert [e.status for e in events] == ["close"]
    assert events[0].seq == opened.seq
    assert det.opened == det.closed == 1


def test_never_from_a_book_that_is_not_live() -> None:
    det = detector()
    cheap = leg("a", [(99.0, 1.0)], [(100.0, 1.0)], state=BookStatus.RESYNCING)
    rich = leg("b", [(100.5, 1.0)], [(101.0, 1.0)])
    assert det.evaluate([cheap, rich], NOW) == []
    live = leg("a", [(99.0, 1.0)], [(100.0, 1.0)])
    assert [e.status for e in det.evaluate([live, rich], NOW)] == ["open"]
    closed = det.evaluate([cheap, rich], NOW)
    assert [e.status for e in closed] == ["close"]
    assert "resyncing" in closed[0].reason


def test_stale_or_skewed_quotes_are_not_paired() -> None:
    det = detector(max_age_ms=100.0, max_skew_ms=20.0)
    old = leg("a", [(99.0, 1.0)], [(100.0, 1.0)], age_ms=500)
    rich = leg("b", [(100.5, 1.0)], [(101.0, 1.0)])
    assert det.evaluate([old, rich], NOW) == []
    skewed = leg("a", [(99.0, 1.0)], [(100.0, 1.0)], age_ms=60)
    assert det.evaluate([skewed, rich], NOW) == []  # 50 ms apart > 20 ms


def test_quote_conversion_is_explicit() -> None:
    eq = QuoteEquivalence(canonical={"USDC": "USDT"}, rates={"USDC": 0.999})
    det = detector(open_bps=1.0, close_bps=0.0)
    det.equivalence = eq
    buy = leg("a", [(99.0, 1.0)], [(100.0, 1.0)], quote="USDT")
    sell = leg("b", [(100.2, 1.0)], [(101.0, 1.0)], quote="USDC")  # 100.2 USDC = 100.0998 USDT
    events = det.evaluate([buy, sell], NOW)
    assert events == []  # 9.98 bps gross - 10 bps fees < 1 bps
    assert eq.asset_key("BTC-USDC") == "BTC-USDT"


def test_strategy_options_are_checked() -> None:
    with pytest.raises(ValueError, match="'pairs' must be a non-empty list"):
        ArbitrageStrategy({})
    with pytest.raises(ValueError, match=r"pairs\[0\]\.legs"):
        ArbitrageStrategy({"pairs": [{"asset": "BTC-USDT", "legs": {"binance": "BTC-USDT"}}]})


def test_synchronized_view_excludes_stale_and_skewed() -> None:
    quotes = [
        RawQuote("binance", "BTC-USDT", "USDT", 100.0, 1.0, 100.1, 1.0, NOW - 5 * MS),
        RawQuote("backpack", "BTC-USDC", "USDC", 100.2, 1.0, 100.3, 1.0, NOW - 60 * MS),
        RawQuote("third", "BTC-USDT", "USDT", 100.0, 1.0, 100.1, 1.0, NOW - 500 * MS),
    ]
    view = synchronize("BTC-USDT", quotes, now_ns=NOW, tolerance_ms=50,
                       equivalence=QuoteEquivalence({"USDC": "USDT"}, {"USDC": 0.5}))
    by_exchange = {q.exchange: q for q in view.quotes}
    assert by_exchange["binance"].included
    assert by_exchange["backpack"].reason.startswith("stale")
    assert by_exchange["third"].reason.startswith("stale")
    assert by_exchange["backpack"].bid == pytest.approx(50.1)
    view = synchronize("BTC-USDT", quotes[:2], now_ns=NOW, tolerance_ms=100)
    assert view.skew_ms == pytest.approx(55.0)
    view = synchronize("BTC-USDT", quotes[:2], now_ns=NOW, tolerance_ms=60)
    assert [q.included for q in view.quotes] == [True, True]


def test_merge_buffer_orders_with_watermark_and_releases_late_items() -> None:
    buf: MergeBuffer[str] = MergeBuffer(delay_ns=10)
    assert buf.push(100, "b") == []
    assert buf.push(95, "a") == []
    assert buf.push(130, "c") == []
    assert list(buf.pop_ready(115)) == ["a", "b"]
    assert buf.push(90, "late") == ("late",)
    assert buf.late == 1
    assert list(buf.drain()) == ["c"]
    small: MergeBuffer[int] = MergeBuffer(delay_ns=1000, max_items=2)
    small.push(3, 3)
    small.push(1, 1)
    assert small.push(2, 2) == [1]
    assert small.forced == 1


@given(st.lists(st.integers(0, 10_000), max_size=200), st.integers(0, 500))
def test_merge_buffer_output_is_time_ordered_apart_from_late(times: list[int], delay: int) -> None:
    buf: MergeBuffer[int] = MergeBuffer(delay_ns=delay, max_items=50)
    out: list[int] = []
    now = 0
    for t in times:
        out.extend(buf.push(t, t))
        now = max(now, t)
        out.extend(buf.pop_ready(now))
    out.extend(buf.drain())
    assert sorted(out) == sorted(times)  # nothing lost, nothing duplicated
    inversions = sum(1 for a, b in itertools.pairwise(out) if b < a)
    assert inversions <= buf.late + buf.forced


def test_close_carries_the_closing_figures() -> None:
    det = detector()
    cheap = leg("a", [(99.0, 1.0)], [(100.0, 1.0)])
    det.evaluate([cheap, leg("b", [(100.5, 1.0)], [(101.0, 1.0)])], NOW)
    (closed,) = det.evaluate([cheap, leg("b", [(100.05, 1.0)], [(101.0, 1.0)])], NOW)
    assert closed.status == "close"
    assert closed.net_bps == pytest.approx(5.0 - 10.0)
    assert "below close threshold" in closed.reason


def test_strategy_refuses_legs_without_order_books() -> None:
    from marketfeeder.config import load_config

    strategy = ArbitrageStrategy({"pairs": [{"asset": "BTC-USDT", "legs": {"binance": "BTC-USDT", "backpack": "BTC-USDC"}}]})
    config = load_config({"exchanges": {"binance": {"symbols": ["BTC-USDT"], "data_types": ["book_ticker"]},
                                        "backpack": {"symbols": ["BTC-USDC"]}}})
    with pytest.raises(ValueError, match=r"pairs\[0\]\.legs\.binance: needs 'orderbook'"):
        strategy.check_legs(config)
    config = load_config({"exchanges": {"binance": {"symbols": ["BTC-USDT"]}}})
    with pytest.raises(ValueError, match="backpack' is not enabled"):
        strategy.check_legs(config)
