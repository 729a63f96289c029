"""Cross-exchange arbitrage alerts: a callback on the ``arbitrage`` strategy's signals.

The built-in ``arbitrage`` strategy watches BTC on Binance (BTC-USDT) and Backpack (BTC-USDC), walks
both local order books to a target notional, nets out the taker fees and publishes an
``ArbitrageOpportunity`` (data type ``signal``) when a net edge opens, when it changes materially and
when it closes. USDC counts as USDT only because the configuration says so.

    python docs/examples/arbitrage_callback.py --sim --duration 10

With ``--sim`` the simulator is asked for frequent cross-venue dislocations so that a short run
shows some; real markets are rarely that generous.
"""

from __future__ import annotations

import argparse
from collections import Counter

from _common import open_feeder, parse_args, run, run_for

from marketfeeder import DataType, Event
from marketfeeder.arbitrage import ArbitrageOpportunity

LEGS = {"binance": "BTC-USDT", "backpack": "BTC-USDC"}

FEES_BPS = {"binance": 10.0, "backpack": 10.0}  # taker fees, per exchange

ARBITRAGE = {
    "pairs": [{"asset": "BTC-USDT", "legs": LEGS}],
    "fees_bps": FEES_BPS,
    "quote_equivalence": {"USDC": "USDT"},  # explicit: USDC counts as USDT
    "conversion_rates": {"USDC": 1.0},  # one USDC is worth one USDT here
    "target_notional": 5_000.0,  # walk both books up to this much USDT
    "open_bps": 2.0,  # open when the net edge reaches 2 bps...
    "close_bps": 0.0,  # ...and close when it falls below 0 (hysteresis)
    "max_age_ms": 1_000.0,
}

CONFIG = {
    # Quotes further apart than this are never paired (also the strategy's default max_skew_ms).
    "sync_tolerance_ms": 250.0,
    "exchanges": {
        exchange: {"symbols": [symbol], "data_types": ["orderbook", "book_ticker"]}
        for exchange, symbol in LEGS.items()
    },
    "strategies": [{"type": "arbitrage", "options": ARBITRAGE}],
}


def describe(signal: ArbitrageOpportunity) -> str:
    return (
        f"#{signal.seq} {signal.status:<6} buy {signal.buy_exchange} {signal.buy_symbol} @ {signal.buy_price:,.2f} "
        f"sell {signal.sell_exchange} {signal.sell_symbol} @ {signal.sell_price:,.2f}  "
        f"size {signal.size:.5f} BTC  gross {signal.gross_bps:+.1f} bps  net {signal.net_bps:+.1f} bps  "
        f"ages {signal.buy_age_ms:.0f}/{signal.sell_age_ms:.0f} ms  skew {signal.skew_ms:.0f} ms"
        + (f"  ({signal.reason})" if signal.reason else "")
    )


async def main(args: argparse.Namespace) -> None:
    counts: Counter[str] = Counter()
    open_now: dict[int, ArbitrageOpportunity] = {}

    def on_signal(event: Event) -> None:
        # Sync callbacks run inline on the feeder's path: keep them short (print, enqueue, return).
        if not isinstance(event, ArbitrageOpportunity):
            return
        counts[event.status] += 1
        if event.status == "close":
            open_now.pop(event.seq or 0, None)
        else:
            open_now[event.seq or 0] = event
        if event.status != "update":  # updates (the edge moved by >= 1 bp) are only counted here
            print("signal:", describe(event), flush=True)

    def on_market(event: Event) -> None:
        counts["market events"] += 1

    print(f"watching BTC on {', '.join(f'{ex} {sym}' for ex, sym in LEGS.items())} (USDC counted as USDT); "
          f"taker fees {', '.join(f'{ex} {fee:g}' for ex, fee in FEES_BPS.items())} bps; an opportunity opens at {ARBITRAGE['open_bps']} bps net "
          f"for up to {ARBITRAGE['target_notional']:,.0f} USDT", flush=True)
    engine = {"arb_rate": 1.0} if args.sim else None
    async with open_feeder(CONFIG, args, engine_options=engine) as feeder:
        feeder.subscribe("arbitrage", None, DataType.SIGNAL, on_signal)
        for exchange, symbol in LEGS.items():
            feeder.subscribe(exchange, symbol, None, on_market)

        def status() -> None:
            books = ", ".join(f"{ex} {sym} {feeder.book(ex, sym).state.value}" for ex, sym in LEGS.items())
            print(f"status: {counts['market events']} market events; books: {books}; "
                  f"{len(open_now)} opportunities open", flush=True)

        await run_for(args.duration, 1.0, status)
        errors = feeder.statistics()["strategy_errors"]
    print(
        f"summary: {counts['market events']} market events, {counts['open']} opened, "
        f"{counts['update']} updated, {counts['close']} closed"
        + (f"; strategy errors: {errors}" if errors else ""),
        flush=True,
    )


if __name__ == "__main__":
    run(main, parse_args(__doc__.splitlines()[0]))
