"""Reconnect + full order-book resync of 10 Binance books on loopback.

A :class:`Feeder` streams 10 books from the simulator (``orderbook`` only, depth snapshots served by
the simulated REST API). Once all are LIVE, the simulator drops every connection without a close
frame (TCP RST); the figure is the time from that drop until every book is LIVE again on a fresh
snapshot (each book's ``snapshots_applied`` has grown and its state is LIVE). It includes noticing
the drop, the first reconnect delay (``runtime.reconnect_initial_delay``, jittered), the handshake and
subscription, 10 REST snapshots and the replay of the buffered diffs. Target: < 1 s.

Runs standalone: ``python bench/bench_resync.py``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from _table import print_table

from marketfeeder import Feeder
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "ADA-USDT",
           "DOGE-USDT", "AVAX-USDT", "DOT-USDT", "LINK-USDT", "LTC-USDT"]
RATE = 2_000  # market records per second over the 10 books
TIMEOUT = 10.0
POLL = 0.001


def _applied(feeder: Feeder) -> dict[str, int]:
    return {key: view.statistics()["snapshots_applied"] for key, view in feeder.books().items()}


async def _all_live(feeder: Feeder, before: dict[str, int] | None = None) -> None:
    with anyio.fail_after(TIMEOUT):
        while True:
            views = feeder.books()
            if len(views) == len(SYMBOLS) and all(v.is_live for v in views.values()):
                if before is None:
                    return
                applied = _applied(feeder)
                if all(applied[key] > before[key] for key in before):
                    return
            await anyio.sleep(POLL)


async def _session(rounds: int) -> list[float]:
    pm = get_plugin_manager()
    venues = venues_from_plugins(pm, ["binance"])
    options = {"binance": {"symbols": SYMBOLS}}
    times: list[float] = []
    async with SimServer(venues, seed=5, rate=RATE, venue_options=options) as sim:
        urls = sim_config_for(sim)["exchanges"]["binance"]
        config = {"exchanges": {"binance": {**urls, "symbols": SYMBOLS, "data_types": ["orderbook"]}}}
        async with Feeder(config, plugin_manager=pm) as feeder:
            await _all_live(feeder)
            for _ in range(rounds):
                await anyio.sleep(0.2)  # some live diffs between rounds
                before = _applied(feeder)
                conns = sim.connections("binance")
                assert conns, "the feeder has no connection to the simulator"
                start = time.perf_counter()
                for conn in conns:
                    if conn.ws is not None:
                        await conn.ws.abort()
                await _all_live(feeder, before)
                times.append(time.perf_counter() - start)
            reconnects = sum(c["reconnects"] for c in feeder.get_performance_stats()["connections"].values())
            assert reconnects >= rounds, f"{reconnects} reconnects for {rounds} dropped connections"
    return times


def run(rounds: int = 5) -> list[dict[str, Any]]:
    results = []
    quiet = logging.getLogger("marketfeeder.runtime")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # every round logs the dropped connection on purpose
    try:
        runs = {backend: anyio.run(_session, rounds, backend=backend) for backend in ("asyncio", "trio")}
    finally:
        quiet.setLevel(level)
    for backend, times in runs.items():
        results.append({"name": f"resync: drop + reconnect + 10 books LIVE again ({backend}, target < 1 s)",
                        "unit": "ms", "values": [t * 1e3 for t in times], "higher_is_better": False})
    return results


def main() -> None:
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
