"""Loopback end to end: simulator → WebSocket → Feeder → callback, under asyncio, uvloop and trio.

The simulator (Binance venue, BTC-USDT) runs in its own process, as an exchange would, so the feeder
has its own core and the figures are the feeder's. The feeder streams ``trades`` and
``book_ticker`` on one connection with ``time_unit = "microsecond"`` (µs exchange times); sync
callbacks count every event and time every trade:

``exchange→callback``
    callback time (``time.time_ns()``) minus the trade's exchange time. It includes the simulator's
    pacing: records are produced in batches at least 1 ms apart, each stamped with its own due time.
``receive→callback``
    callback time minus the frame's receive time in the feeder (decode, pipeline, dispatch).

Offered rates are frames per second on the connection (trades + book tickers, from a trade-heavy
market); the simulator's record rate is scaled by the share of those in its record mix. The
delivered rate is checked and reported; a rate not delivered in full (the simulator or the feeder
fell behind, or the simulator cut the connection as a slow consumer) says so in its name. ``max``: the simulator runs as fast
as the client reads; the same simulator's frames read by a bare ``websockets`` client give the limit
of the stack (same run, asyncio).

Runs standalone: ``python bench/bench_e2e.py``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import anyio
from _table import print_table

from marketfeeder import DataType, Feeder
from marketfeeder.models import Event
from marketfeeder.plugins import get_plugin_manager

SYMBOL = "BTC-USDT"
RATES = (1_000, 10_000, 50_000)
#: Measurement window per round (s): ~300+ latency samples per round at the lowest rate.
WINDOWS = {1_000: 0.6, 10_000: 0.4, 50_000: 0.25, 0: 0.25}
WARMUP = 0.2
BACKENDS = ("asyncio", "uvloop", "trio")
STREAMS = "btcusdt@trade/btcusdt@bookTicker"
#: A trade-heavy market: most steps are trades (each also moves the book top), so more of the
#: simulator's work becomes frames on this connection and it can offer higher rates.
ENGINE_OPTIONS: dict[str, Any] = {"trade_probability": 0.99}


# --- the simulator process ------------------------------------------------------------------------

def _wanted_share() -> float:
    """Share of trades and book tickers among the simulator's records for one Binance symbol."""
    from marketfeeder.sim.engine import MarketEngine, instruments_for
    from marketfeeder.sim.model import SimBookTicker, SimTrade

    engine = MarketEngine(1, {"binance": instruments_for("binance", [SYMBOL])}, ["binance"], rate=10_000,
                          **ENGINE_OPTIONS)
    kinds = Counter(type(r) for _, r in engine.take(20_000))
    return (kinds[SimTrade] + kinds[SimBookTicker]) / sum(kinds.values())


async def _serve(rate: float) -> None:
    from marketfeeder.sim.server import SimServer, venues_from_plugins

    venues = venues_from_plugins(get_plugin_manager(), ["binance"])
    engine_rate: float | str = rate / _wanted_share() if rate else "max"
    async with SimServer(venues, seed=1, rate=engine_rate, symbols=[SYMBOL],
                         engine_options=ENGINE_OPTIONS) as sim:
        print(json.dumps(sim.endpoints()["binance"]), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin


class _Sim:
    """The simulator in a child process, offering ``rate`` frames/s (0: as fast as the client reads)."""

    def __init__(self, rate: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(rate)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the simulator process did not start")
        self.urls: dict[str, str] = json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the feeder side -------------------------------------------------------------------------------

def _pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6 if sorted_ns else float("nan")


def _reconnects(feeder: Feeder) -> float:
    return float(sum(c["reconnects"] for c in feeder.get_performance_stats()["connections"].values()))


async def _feeder_session(urls: dict[str, str], window: float, rounds: int) -> list[dict[str, float]]:
    config = {"exchanges": {"binance": {**urls, "symbols": [SYMBOL], "data_types": ["trades", "book_ticker"],
                                        "options": {"time_unit": "microsecond"}}}}
    count = [0]
    to_cb: list[int] = []
    rx_cb: list[int] = []
    now = time.time_ns

    def on_trade(event: Event) -> None:
        t = now()
        count[0] += 1
        ts = event.exchange_ts
        if ts is not None:
            to_cb.append(t - ts)
        rx_cb.append(t - event.receive_ts)

    def on_book_ticker(event: Event) -> None:
        count[0] += 1

    out: list[dict[str, float]] = []
    async with Feeder(config, plugin_manager=get_plugin_manager()) as feeder:
        feeder.subscribe("binance", SYMBOL, DataType.TRADES, on_trade)
        feeder.subscribe("binance", SYMBOL, DataType.BOOK_TICKER, on_book_ticker)
        await anyio.sleep(WARMUP)
        for _ in range(rounds):
            count[0] = 0
            to_cb.clear()
            rx_cb.clear()
            start = time.perf_counter()
            await anyio.sleep(window)
            elapsed = time.perf_counter() - start
            n = count[0]
            a, b = sorted(to_cb), sorted(rx_cb)
            out.append({"rate": n / elapsed, "p50": _pct(a, 0.5), "p99": _pct(a, 0.99), "p999": _pct(a, 0.999),
                        "rx_p99": _pct(b, 0.99), "samples": len(a), "reconnects": _reconnects(feeder)})
        assert feeder.statistics()["callback_errors"] == 0
    return out


async def _bare_session(urls: dict[str, str], window: float, rounds: int) -> list[float]:
    from websockets.asyncio.client import connect

    out: list[float] = []
    # A short close timeout: the simulator keeps writing while the close handshake is under way.
    async with connect(f"{urls['ws_url']}/stream?streams={STREAMS}", max_size=None, close_timeout=0.2) as ws:
        with anyio.fail_after(5):
            for _ in range(2_000):
                await ws.recv()
        for _ in range(rounds):
            n = 0
            start = time.perf_counter()
            deadline = start + window
            while True:
                await ws.recv()
                n += 1
                if n % 256 == 0 and time.perf_counter() >= deadline:
                    break
            out.append(n / (time.perf_counter() - start))
    return out


def _run_backend(backend: str, urls: dict[str, str], window: float, rounds: int) -> list[dict[str, float]]:
    if backend == "uvloop":
        return anyio.run(_feeder_session, urls, window, rounds, backend="asyncio",
                         backend_options={"use_uvloop": True})
    return anyio.run(_feeder_session, urls, window, rounds, backend=backend)


def _label(rate: int) -> str:
    return f"{rate // 1000}k"


def run(rounds: int = 5) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    quiet = logging.getLogger("marketfeeder")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for rate in RATES:
            sim = _Sim(rate)
            try:
                per_backend = {b: _run_backend(b, sim.urls, WINDOWS[rate], rounds) for b in BACKENDS}
            finally:
                sim.close()
            for backend, rows in per_backend.items():
                delivered = sorted(r["rate"] for r in rows)[len(rows) // 2]
                offered = f"{_label(rate)} msgs/s"
                cuts = int(rows[-1]["reconnects"])
                if delivered < 0.9 * rate or cuts:
                    # Something fell behind (a cut: the simulator dropped a slow consumer, as Binance
                    # does): the latencies then include the backlog.
                    offered += f" (only {delivered / 1000:.1f}k delivered, {cuts} reconnects)"
                tag = f"e2e {backend} @ {offered}"
                results.append({"name": f"{tag}: delivered", "unit": "msgs/s",
                                "values": [r["rate"] for r in rows], "higher_is_better": True})
                for key, what in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
                    results.append({"name": f"{tag}: exchange→callback {what}", "unit": "ms",
                                    "values": [r[key] for r in rows], "higher_is_better": False})
                results.append({"name": f"{tag}: receive→callback p99", "unit": "ms",
                                "values": [r["rx_p99"] for r in rows], "higher_is_better": False})
        # Rounds interleaved: the bare client and each backend read the same simulator in turn.
        sim = _Sim(0)
        bare: list[float] = []
        maxima: dict[str, list[float]] = {b: [] for b in BACKENDS}
        try:
            window = WINDOWS[0]
            for _ in range(rounds):
                bare += anyio.run(_bare_session, sim.urls, window, 1)
                for b in BACKENDS:
                    maxima[b] += [r["rate"] for r in _run_backend(b, sim.urls, window, 1)]
        finally:
            sim.close()
    finally:
        quiet.setLevel(level)
    results.append({"name": "e2e max: bare websockets client receive (asyncio), same simulator", "unit": "msgs/s",
                    "values": bare, "higher_is_better": True})
    for backend, values in maxima.items():
        results.append({"name": f"e2e max: feeder msgs/s per connection ({backend})", "unit": "msgs/s",
                        "values": values, "higher_is_better": True})
    results.append({"name": "e2e max: feeder (asyncio) / bare websockets client (target ≥ 0.8)", "unit": "ratio",
                    "values": [f / b for f, b in zip(maxima["asyncio"], bare, strict=True)],
                    "higher_is_better": True})
    return results


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        anyio.run(_serve, float(sys.argv[2]), backend="asyncio", backend_options={"use_uvloop": True})
        return
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
