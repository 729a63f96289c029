"""A reference price for order execution, read on demand with ``get_latest_data``.

Before sending an order an execution system wants one number it can trust: here the mid of the
latest book ticker, refused when that quote is older than ``MAX_AGE_MS`` or when the local order
book is not LIVE (a book that is SYNCING, RESYNCING or STALE says the feed cannot be trusted right
now). When the book is LIVE, the price a market order of ``ORDER_SIZE`` would pay is also walked from
the local book, so the expected slippage against the mid is known before the order leaves.

Nothing here is a callback: ``get_latest_data`` and ``book`` read the feeder's latest-value cache and
local books, so they cost microseconds and can be called from any task at any time.

    python docs/examples/reference_price.py --sim --duration 10
"""

from __future__ import annotations

import argparse

from _common import open_feeder, parse_args, run, run_for

from marketfeeder import BookStatus, BookTicker, DataType
from marketfeeder.clock import now_ns
from marketfeeder.runtime import Feeder

EXCHANGE, SYMBOL = "binance", "BTC-USDT"
ORDER_SIZE = 0.5  # BTC we would buy
MAX_AGE_MS = 2_000.0  # an older top of book is not a reference

CONFIG = {"exchanges": {EXCHANGE: {"symbols": [SYMBOL], "data_types": ["book_ticker", "orderbook"]}}}


class NoReference(Exception):
    """Why there is no trustworthy reference price right now."""


def reference_mid(feeder: Feeder, exchange: str, symbol: str) -> tuple[float, float]:
    """(mid, age in ms) of the latest book ticker; ``NoReference`` says why not."""
    latest = feeder.get_latest_data(exchange, symbol, DataType.BOOK_TICKER)
    if not latest:
        raise NoReference("no book ticker received yet")
    quote = latest[0]
    assert isinstance(quote, BookTicker)
    # receive_ts is our own clock: the age needs no clock offset (Binance's bookTicker has no exchange time).
    age_ms = (now_ns() - quote.receive_ts) / 1e6
    if age_ms > MAX_AGE_MS:
        raise NoReference(f"latest quote is {age_ms:.0f} ms old (max {MAX_AGE_MS:.0f} ms)")
    if not quote.bid < quote.ask:
        raise NoReference(f"crossed or locked quote: bid {quote.bid} >= ask {quote.ask}")
    return (quote.bid + quote.ask) / 2, age_ms


def buy_vwap(feeder: Feeder, exchange: str, symbol: str, size: float) -> float:
    """Average price of a market buy of ``size`` walked from the local book (which must be LIVE)."""
    book = feeder.book(exchange, symbol)
    if book.state is not BookStatus.LIVE:
        raise NoReference(f"local book is {book.state.value}, not live")
    _, asks = book.top(100)
    left, cost = size, 0.0
    for price, available in asks:
        take = min(left, available)
        cost += take * price
        left -= take
        if left <= 0:
            return cost / size
    raise NoReference(f"the top 100 ask levels hold less than {size}")


async def main(args: argparse.Namespace) -> None:
    quoted = refused = 0
    print(f"reference prices for buying {ORDER_SIZE} {SYMBOL.split('-')[0]} on {EXCHANGE} {SYMBOL} every 0.5 s "
          f"(quotes older than {MAX_AGE_MS:.0f} ms or a book that is not live are refused)", flush=True)
    async with open_feeder(CONFIG, args) as feeder:

        def quote_now() -> None:
            nonlocal quoted, refused
            try:
                mid, age_ms = reference_mid(feeder, EXCHANGE, SYMBOL)
                vwap = buy_vwap(feeder, EXCHANGE, SYMBOL, ORDER_SIZE)
            except NoReference as why:
                refused += 1
                print(f"no reference for {EXCHANGE} {SYMBOL}: {why}", flush=True)
                return
            quoted += 1
            book = feeder.book(EXCHANGE, SYMBOL)
            print(
                f"reference {EXCHANGE} {SYMBOL}: mid {mid:,.2f} (quote {age_ms:.0f} ms old), "
                f"buy {ORDER_SIZE} at {vwap:,.2f} = {(vwap - mid) / mid * 1e4:+.2f} bps vs mid; "
                f"book {book.state.value}, update id {book.update_id}",
                flush=True,
            )

        await run_for(args.duration, 0.5, quote_now)
    print(f"summary: {quoted} reference prices given, {refused} refused", flush=True)


if __name__ == "__main__":
    run(main, parse_args(__doc__.splitlines()[0]))
