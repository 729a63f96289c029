"""Properties of the arbitrage detector over arbitrary sequences of market states.

1. No opportunity is opened or updated from a quote that is stale (older than ``max_age_ms``),
   unsynchronized (further than ``max_skew_ms`` from the other leg) or from a book that is not LIVE,
   and an open opportunity whose legs become unusable is closed in the same evaluation.
2. Fees and quote conversion apply in the right direction: a market without a cross (in the
   canonical currency) never yields a positive net edge, and a known cross of ``g`` bps yields
   ``g`` minus both taker fees, whatever currency each leg is quoted in.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.arbitrage import ArbitrageDetector, ArbitrageOpportunity, LegBook, walk_books
from marketfeeder.models import BookStatus
from marketfeeder.syncview import QuoteEquivalence

MS = 1_000_000
NOW = 1_767_225_600_000_000_000
MAX_AGE_MS = 100.0
MAX_SKEW_MS = 20.0
EXCHANGES = ("a", "b", "c")
RATES = {"USDT": 1.0, "USDC": 0.9995, "EUR": 1.08}  # value of one unit in USDT
EQUIVALENCE = QuoteEquivalence(canonical={"USDC": "USDT", "EUR": "USDT"}, rates=RATES)

fees = st.floats(0.0, 30.0)
quotes = st.sampled_from(sorted(RATES))


@st.composite
def leg_states(draw: Any, exchange: str, now: int) -> LegBook:
    """One leg with a book around 100 (in USDT) that may be crossed with the others by up to ~1 %."""
    quote = draw(quotes)
    rate = RATES[quote]
    mid = 100.0 * (1 + draw(st.floats(-0.01, 0.01)))
    half_spread = draw(st.floats(0.0, 0.002)) * mid
    depth = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.floats(0.01, 5.0), min_size=2 * depth, max_size=2 * depth))
    step = mid * 1e-4
    bids = [((mid - half_spread - i * step) / rate, sizes[i]) for i in range(depth)]
    asks = [((mid + half_spread + i * step) / rate, sizes[depth + i]) for i in range(depth)]
    state = draw(st.sampled_from([BookStatus.LIVE] * 3 + list(BookStatus)))
    age_ms = draw(st.floats(-2.0, 2 * MAX_AGE_MS))  # a slightly negative age: clock estimate error
    return LegBook(exchange, f"BTC-{quote}", quote, state, bids, asks, now - int(age_ms * MS), now)


@st.composite
def market_steps(draw: Any) -> list[list[LegBook]]:
    steps = []
    for i in range(draw(st.integers(1, 25))):
        now = NOW + i * 10 * MS
        present = [ex for ex in EXCHANGES if draw(st.booleans()) or ex == "a"]
        steps.append([draw(leg_states(ex, now)) for ex in present])
    return steps


def unusable(leg: LegBook, now: int) -> bool:
    return leg.state is not BookStatus.LIVE or (now - leg.time_ns) / MS > MAX_AGE_MS


@settings(max_examples=400, deadline=None)
@given(steps=market_steps(), fee_a=fees, fee_b=fees, fee_c=fees,
       open_bps=st.floats(-5.0, 30.0), gap=st.floats(0.0, 10.0))
def test_never_from_a_stale_unsynchronized_or_not_live_quote(
    steps: list[list[LegBook]], fee_a: float, fee_b: float, fee_c: float, open_bps: float, gap: float
) -> None:
    detector = ArbitrageDetector(
        "BTC-USDT", fees_bps={"a": fee_a, "b": fee_b, "c": fee_c}, target_notional=500.0,
        open_bps=open_bps, close_bps=open_bps - gap, max_age_ms=MAX_AGE_MS, max_skew_ms=MAX_SKEW_MS,
        equivalence=EQUIVALENCE,
    )
    is_open: dict[tuple[str, str], int] = {}  # direction -> opportunity id, from the events alone
    for legs in steps:
        now = legs[0].receive_ts
        by_exchange = {leg.exchange: leg for leg in legs}
        events = detector.evaluate(legs, now)
        assert len({(e.buy_exchange, e.sell_exchange) for e in events}) == len(events)  # one per direction
        for event in events:
            key = (event.buy_exchange, event.sell_exchange)
            if event.status == "close":
                assert is_open.pop(key) == event.seq
                continue
            buy, sell = by_exchange[event.buy_exchange], by_exchange[event.sell_exchange]
            # Opened or updated only from fresh, synchronized, LIVE quotes with a real edge.
            assert buy.state is BookStatus.LIVE and sell.state is BookStatus.LIVE
            assert event.buy_book_state == event.sell_book_state == "live"
            assert event.buy_age_ms <= MAX_AGE_MS and event.sell_age_ms <= MAX_AGE_MS
            assert event.skew_ms <= MAX_SKEW_MS
            assert abs(buy.time_ns - sell.time_ns) / MS <= MAX_SKEW_MS
            assert event.size > 0 and event.notional <= 500.0 * (1 + 1e-9)
            if event.status == "open":
                assert key not in is_open
                assert event.net_bps >= open_bps
                is_open[key] = event.seq  # type: ignore[assignment]
            else:
                assert event.status == "update" and is_open[key] == event.seq
                assert event.net_bps >= open_bps - gap
        # Whatever stays open stands on usable legs at this very evaluation.
        for buy_ex, sell_ex in is_open:
            assert buy_ex in by_exchange and sell_ex in by_exchange  # a vanished leg closes too
            bought, sold = by_exchange[buy_ex], by_exchange[sell_ex]
            assert not unusable(bought, now) and not unusable(sold, now)
            assert abs(bought.time_ns - sold.time_ns) / MS <= MAX_SKEW_MS
    assert detector.opened - detector.closed == len(is_open)


def flat_leg(exchange: str, quote: str, bid_usdt: float, ask_usdt: float, size: float = 1.0) -> LegBook:
    """A leg quoting ``bid_usdt``/``ask_usdt`` (worth, in USDT) in its own ``quote`` currency."""
    rate = RATES[quote]
    return LegBook(exchange, f"BTC-{quote}", quote, BookStatus.LIVE, [(bid_usdt / rate, size)],
                   [(ask_usdt / rate, size)], NOW, NOW)


def figures_for(legs: list[LegBook], buy: str, fees_bps: dict[str, float]) -> ArbitrageOpportunity:
    """The detector's own figures for buying on ``buy`` in the market ``legs``, whether profitable or
    not: open that direction first on a wide cross, then evaluate ``legs`` (an update or the close
    carries the figures of the evaluation)."""
    detector = ArbitrageDetector("BTC-USDT", fees_bps=fees_bps, open_bps=0.0, close_bps=0.0, target_notional=1e12,
                                 update_step_bps=0.0, equivalence=EQUIVALENCE, max_age_ms=MAX_AGE_MS)
    by_exchange = {leg.exchange: leg for leg in legs}
    sell = next(ex for ex in by_exchange if ex != buy)
    price = by_exchange[buy].asks[0][0] * RATES[by_exchange[buy].quote_ccy]
    wide = [flat_leg(buy, by_exchange[buy].quote_ccy, price * 0.9, price),
            flat_leg(sell, by_exchange[sell].quote_ccy, price * 1.1, price * 1.2)]
    (opened,) = detector.evaluate(wide, NOW)
    assert opened.status == "open" and opened.buy_exchange == buy
    (event,) = [e for e in detector.evaluate(legs, NOW) if e.buy_exchange == buy]
    assert event.seq == opened.seq and event.status in ("update", "close")
    return event


@settings(max_examples=300, deadline=None)
@given(price=st.floats(1.0, 1e5), spreads=st.tuples(st.floats(0.0, 50.0), st.floats(0.0, 50.0)),
       quote_a=quotes, quote_b=quotes, fee_a=fees, fee_b=fees, size=st.floats(0.001, 10.0),
       open_bps=st.floats(-20.0, 20.0))
def test_a_market_without_a_cross_never_yields_a_positive_net(
    price: float, spreads: tuple[float, float], quote_a: str, quote_b: str, fee_a: float, fee_b: float,
    size: float, open_bps: float,
) -> None:
    """Both venues quote the same price (worth, in USDT), each with its own spread in its own currency:
    converted, no bid exceeds the other's ask, so after fees every direction is a loss."""
    legs = [
        flat_leg("a", quote_a, price * (1 - spreads[0] / 1e4), price, size),
        flat_leg("b", quote_b, price * (1 - spreads[1] / 1e4), price * (1 + spreads[1] / 1e4), size),
    ]
    fees_bps = {"a": fee_a, "b": fee_b}
    # Nothing opens, even with a zero or negative opening threshold.
    detector = ArbitrageDetector("BTC-USDT", fees_bps=fees_bps, open_bps=open_bps, close_bps=min(open_bps, 0.0),
                                 equivalence=EQUIVALENCE, max_age_ms=MAX_AGE_MS)
    assert detector.evaluate(legs, NOW) == []
    for buy, sell in (legs, legs[::-1]):
        fill = walk_books(buy.asks, sell.bids, buy_fee_bps=fees_bps[buy.exchange],
                          buy_rate=RATES[buy.quote_ccy], sell_fee_bps=fees_bps[sell.exchange],
                          sell_rate=RATES[sell.quote_ccy], target_notional=1e12)
        assert fill.size == 0  # not one unit profits
        # The figures the detector computes for this direction: a loss of at least both fees.
        event = figures_for(legs, buy.exchange, fees_bps)
        assert event.status == "close"
        assert event.gross_bps <= 1e-6
        assert event.net_bps == pytest.approx(event.gross_bps - fee_a - fee_b, abs=1e-6)
        assert event.net_bps <= 1e-6


@settings(max_examples=300, deadline=None)
@given(price=st.floats(1.0, 1e5), gross=st.floats(0.0, 200.0), quote_a=quotes, quote_b=quotes,
       fee_a=fees, fee_b=fees)
def test_fees_and_conversion_apply_in_the_right_direction(
    price: float, gross: float, quote_a: str, quote_b: str, fee_a: float, fee_b: float
) -> None:
    """Buy at ``price`` on a, sell ``gross`` bps higher on b (both worth, in USDT): the detector reports
    that gross edge and a net of exactly gross minus both fees, in any pair of quote currencies; the
    reverse direction (buy at b's ask, sell at a's bid) loses its spread plus both fees."""
    legs = [flat_leg("a", quote_a, price * 0.99, price), flat_leg("b", quote_b, price * (1 + gross / 1e4), price * 1.02)]
    fees_bps = {"a": fee_a, "b": fee_b}
    forward = figures_for(legs, "a", fees_bps)
    assert forward.buy_price == pytest.approx(price) and forward.sell_price == pytest.approx(price * (1 + gross / 1e4))
    assert forward.gross_bps == pytest.approx(gross, rel=1e-6, abs=1e-6)
    assert forward.net_bps == pytest.approx(gross - fee_a - fee_b, rel=1e-6, abs=1e-6)
    if gross > fee_a + fee_b + 1e-6:
        assert forward.status == "update" and forward.size == pytest.approx(1.0)
    elif gross < fee_a + fee_b - 1e-6 or gross == 0.0:
        assert forward.status == "close" and forward.size == 0  # below the fees: not one unit is worth it
    reverse = figures_for(legs, "b", fees_bps)
    assert reverse.status == "close"
    assert reverse.gross_bps == pytest.approx((0.99 - 1.02) / 1.02 * 1e4, rel=1e-6)
    assert reverse.net_bps == pytest.approx(reverse.gross_bps - fee_a - fee_b, rel=1e-6)
