"""Real-time P&L of a fixed position, updated on every ticker event.

The book below is long BTC on Binance and short BTC on Backpack (a hedged cross-exchange position)
plus some SOL. Each ``ticker`` event marks its leg at the ticker's last price (its bid/ask mid when no
trade price is given) and the whole position's unrealized P&L is printed. An entry price of ``None``
means "the first price seen": the P&L is then counted from the start of the run.

A sync callback runs inline on the feed: it only updates a few floats and prints.

    python docs/examples/pnl.py --sim --duration 10
"""

from __future__ import annotations

import argparse

import attrs
from _common import open_feeder, parse_args, run, run_for

from marketfeeder import DataType, Event, Ticker


@attrs.define
class Leg:
    exchange: str
    symbol: str
    quantity: float  # signed: negative is short
    entry: float | None = None  # price paid; None: the first price seen
    mark: float | None = None
    updates: int = 0

    @property
    def pnl(self) -> float:
        if self.entry is None or self.mark is None:
            return 0.0
        return self.quantity * (self.mark - self.entry)


POSITION = [
    Leg("binance", "BTC-USDT", +0.50),
    Leg("backpack", "BTC-USDC", -0.50),
    Leg("binance", "SOL-USDT", +40.0),
]

CONFIG = {
    "exchanges": {
        exchange: {"symbols": sorted({leg.symbol for leg in POSITION if leg.exchange == exchange}),
                   "data_types": ["ticker"]}
        for exchange in sorted({leg.exchange for leg in POSITION})
    }
}


def mark_price(ticker: Ticker) -> float | None:
    if ticker.last is not None:
        return ticker.last
    if ticker.bid is not None and ticker.ask is not None:
        return (ticker.bid + ticker.ask) / 2
    return None


async def main(args: argparse.Namespace) -> None:
    legs = {(leg.exchange, leg.symbol): leg for leg in POSITION}
    print("marking to market on every ticker: "
          + ", ".join(f"{leg.quantity:+g} {leg.symbol} on {leg.exchange}" for leg in POSITION), flush=True)

    def on_ticker(event: Event) -> None:
        leg = legs.get((event.exchange, event.symbol))
        if leg is None or not isinstance(event, Ticker):
            return
        price = mark_price(event)
        if price is None:
            return
        if leg.entry is None:
            leg.entry = price
        leg.mark = price
        leg.updates += 1
        total = sum(item.pnl for item in POSITION)
        print(
            f"pnl: {leg.exchange:<8} {leg.symbol:<9} {leg.quantity:+9.3f} @ {price:>12,.4f} "
            f"leg {leg.pnl:+12,.2f}   total {total:+12,.2f} (quote currency)",
            flush=True,
        )

    async with open_feeder(CONFIG, args) as feeder:
        feeder.subscribe(None, None, DataType.TICKER, on_ticker)

        def heartbeat() -> None:
            waiting = [f"{leg.exchange} {leg.symbol}" for leg in POSITION if leg.mark is None]
            if waiting:
                print(f"waiting for a first ticker from: {', '.join(waiting)}", flush=True)

        await run_for(args.duration, 2.0, heartbeat)
    total = sum(leg.pnl for leg in POSITION)
    updates = sum(leg.updates for leg in POSITION)
    print(f"summary: {updates} ticker updates, final unrealized P&L {total:+,.2f}", flush=True)


if __name__ == "__main__":
    run(main, parse_args(__doc__.splitlines()[0]))
