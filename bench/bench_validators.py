"""Throughput of ``ValidationEngine.check`` with every built-in check on.

Two streams: trades and book tickers of a handful of symbols, random-walking on their tick grids with
known instruments, so every check does its full fast-path work (grid lookups, rolling windows, per-stream
timestamps). Runs standalone: ``python bench/bench_validators.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from _table import print_table

from marketfeeder.models import BookTicker, Event, Instrument, Side, Trade
from marketfeeder.validators.builtin import BUILTIN_VALIDATORS
from marketfeeder.validators.engine import StaticContext, ValidationEngine

N_EVENTS = 100_000
SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "DOGE-USDT")
TICKS = {"BTC-USDT": 0.01, "ETH-USDT": 0.01, "SOL-USDT": 0.001, "DOGE-USDT": 0.00001}
START = {"BTC-USDT": 65_000.0, "ETH-USDT": 3_000.0, "SOL-USDT": 150.0, "DOGE-USDT": 0.15}
T0 = 1_750_000_000_000_000_000


def _context() -> StaticContext:
    instruments = {
        ("binance", symbol): Instrument(
            "binance",
            symbol.replace("-", ""),
            symbol,
            symbol[: symbol.index("-")],
            "USDT",
            tick,
            0.0001,
            "TRADING",
            True,
        )
        for symbol, tick in TICKS.items()
    }
    # A fixed clock: the check reads "now" per event; the events are stamped just before it.
    return StaticContext(instruments, clock=lambda: T0 + N_EVENTS * 1_000_000)


def _walk(rng: random.Random) -> list[tuple[str, int, float]]:
    """(symbol, tick index, size) per event: a random walk of a few ticks per step."""
    ticks = {symbol: round(START[symbol] / TICKS[symbol]) for symbol in SYMBOLS}
    out = []
    for _ in range(N_EVENTS):
        symbol = rng.choice(SYMBOLS)
        ticks[symbol] += rng.randint(-3, 3)
        out.append((symbol, ticks[symbol], rng.randint(1, 50_000) / 10_000))
    return out


def _trades(rng: random.Random) -> list[Event]:
    events: list[Event] = []
    for i, (symbol, index, size) in enumerate(_walk(rng)):
        ts = T0 + i * 1_000_000
        price = float(f"{index * TICKS[symbol]:.8f}")
        events.append(Trade.fast("binance", symbol, ts, ts + 2_000_000, i, price, size, Side.BUY, ts))
    return events


def _book_tickers(rng: random.Random) -> list[Event]:
    events: list[Event] = []
    for i, (symbol, index, size) in enumerate(_walk(rng)):
        ts = T0 + i * 1_000_000
        tick = TICKS[symbol]
        bid = float(f"{index * tick:.8f}")
        ask = float(f"{(index + 1) * tick:.8f}")
        events.append(BookTicker.fast("binance", symbol, ts, ts + 2_000_000, i, bid, size, ask, size, ts))
    return events


def _rate(make: Callable[[random.Random], list[Event]], rounds: int) -> list[float]:
    events = make(random.Random(7))
    values = []
    for _ in range(rounds):
        engine = ValidationEngine([factory({}) for factory in BUILTIN_VALIDATORS.values()], _context())
        check = engine.check
        start = time.perf_counter()
        for event in events:
            check(event)
        elapsed = time.perf_counter() - start
        if engine.statistics()["failed"]:
            raise AssertionError(f"clean data failed checks: {engine.failures()}")
        values.append(len(events) / elapsed)
    return values


def run(rounds: int = 5) -> list[dict[str, Any]]:
    return [
        {
            "name": "validators: trades, all checks",
            "unit": "events/s",
            "values": _rate(_trades, rounds),
            "higher_is_better": True,
        },
        {
            "name": "validators: book tickers, all checks",
            "unit": "events/s",
            "values": _rate(_book_tickers, rounds),
            "higher_is_better": True,
        },
    ]


def main() -> None:
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
