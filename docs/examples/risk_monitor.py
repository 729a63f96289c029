"""A risk monitor: exposure limits on every top-of-book change, and a trading pause whenever a book
cannot be trusted.

Two rules, each edge-triggered (one line when a limit is breached, one when it clears):

* exposure: the position's gross notional (|quantity| x mid) and its loss since the start
  (quantity x price move) are recomputed on every ``book_ticker`` event and compared with limits;
* book state: a ``BookState`` event saying SYNCING, RESYNCING or STALE for a book we hold a
  position in pauses trading (a strategy would cancel its orders here); trading resumes when every
  such book is LIVE again. A ``Connection`` going down pauses too.

With ``--sim`` the simulator drops a few order-book frames by default (``skip_ids``), so the local
books see sequence gaps and resynchronize, which exercises the pause; pass ``--faults ""`` for a
clean feed. The limits are small so that a short simulated run crosses them.

    python docs/examples/risk_monitor.py --sim --duration 10
"""

from __future__ import annotations

import argparse

from _common import open_feeder, parse_args, run, run_for

from marketfeeder import BookState, BookStatus, BookTicker, Connection, ConnectionStatus, DataType, Event, Gap

POSITION = {("binance", "BTC-USDT"): 0.75, ("binance", "ETH-USDT"): -12.0}  # signed quantities
MAX_GROSS_NOTIONAL = 105_000.0  # USDT
MAX_LOSS = 5.0  # USDT since the start of the run
LIVE = BookStatus.LIVE

CONFIG = {
    "exchanges": {
        "binance": {"symbols": sorted(symbol for _, symbol in POSITION), "data_types": ["book_ticker", "orderbook"]}
    }
}


class RiskMonitor:
    def __init__(self, position: dict[tuple[str, str], float]) -> None:
        self.position = position
        self.start: dict[tuple[str, str], float] = {}
        self.mid: dict[tuple[str, str], float] = {}
        self.books: dict[tuple[str, str], BookStatus] = dict.fromkeys(position, BookStatus.SYNCING)
        self.connections_down: set[str] = set()
        self.breached: set[str] = set()
        self.paused = True  # until every book is LIVE
        self.pauses = 0
        self.alerts = 0
        self.checks = 0

    # --- exposure -----------------------------------------------------------------------------

    def on_quote(self, event: Event) -> None:
        key = (event.exchange, event.symbol)
        if key not in self.position or not isinstance(event, BookTicker):
            return
        mid = (event.bid + event.ask) / 2
        self.start.setdefault(key, mid)
        self.mid[key] = mid
        self.checks += 1
        gross = sum(abs(q) * self.mid[k] for k, q in self.position.items() if k in self.mid)
        pnl = sum(q * (self.mid[k] - self.start[k]) for k, q in self.position.items() if k in self.mid)
        self._limit("gross notional", gross > MAX_GROSS_NOTIONAL, f"{gross:,.0f} USDT (limit {MAX_GROSS_NOTIONAL:,.0f})")
        self._limit("loss", -pnl > MAX_LOSS, f"P&L {pnl:+,.2f} USDT (limit -{MAX_LOSS:,.2f})")

    def _limit(self, name: str, breached: bool, detail: str) -> None:
        if breached and name not in self.breached:
            self.breached.add(name)
            self.alerts += 1
            print(f"ALERT {name} limit breached: {detail}", flush=True)
        elif not breached and name in self.breached:
            self.breached.discard(name)
            print(f"clear {name} back within limit: {detail}", flush=True)

    # --- book and connection state ------------------------------------------------------------

    def on_status(self, event: Event) -> None:
        key = (event.exchange, event.symbol)
        if isinstance(event, BookState) and key in self.books:
            self.books[key] = event.state
            print(f"book {event.exchange} {event.symbol} is {event.state.value}"
                  + (f" ({event.reason})" if event.reason else ""), flush=True)
        elif isinstance(event, Gap) and key in self.books:
            print(f"gap on {event.exchange} {event.symbol}: {event.reason}", flush=True)
        elif isinstance(event, Connection):
            if event.status is ConnectionStatus.DOWN:
                self.connections_down.add(event.connection_id)
            else:
                self.connections_down.discard(event.connection_id)
        self.update_pause()

    def update_pause(self) -> None:
        not_live = [f"{ex} {sym} {state.value}" for (ex, sym), state in self.books.items() if state is not LIVE]
        should_pause = bool(not_live or self.connections_down)
        if should_pause and not self.paused:
            self.paused = True
            self.pauses += 1
            why = ", ".join(not_live) or f"connections down: {', '.join(sorted(self.connections_down))}"
            print(f"PAUSE trading: {why}", flush=True)
        elif not should_pause and self.paused:
            self.paused = False
            print("RESUME trading: every book is live", flush=True)


async def main(args: argparse.Namespace) -> None:
    monitor = RiskMonitor(POSITION)
    print(f"monitoring {', '.join(f'{q:+g} {sym} on {ex}' for (ex, sym), q in POSITION.items())}: gross notional "
          f"limit {MAX_GROSS_NOTIONAL:,.0f} USDT, loss limit {MAX_LOSS:,.2f} USDT; trading pauses while a book "
          "is not live", flush=True)
    async with open_feeder(CONFIG, args, faults="skip_ids=0.003") as feeder:
        # The feeder is already streaming: start from the books' current states, which the
        # BookState events then keep current.
        for exchange, symbol in POSITION:
            monitor.books[(exchange, symbol)] = feeder.book(exchange, symbol).state
        monitor.update_pause()
        feeder.subscribe("binance", None, DataType.BOOK_TICKER, monitor.on_quote)
        feeder.subscribe("binance", None, DataType.STATUS, monitor.on_status)

        def status() -> None:
            state = "paused" if monitor.paused else "trading"
            print(f"status: {state}; {monitor.checks} exposure checks; limits breached: "
                  f"{', '.join(sorted(monitor.breached)) or 'none'}", flush=True)

        await run_for(args.duration, 1.0, status)
    print(f"summary: {monitor.checks} exposure checks, {monitor.alerts} alerts, {monitor.pauses} pauses", flush=True)


if __name__ == "__main__":
    run(main, parse_args(__doc__.splitlines()[0]))
