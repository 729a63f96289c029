"""Memory held by 1,000,000 buffered events: Trade events built with ``Trade.fast`` (distinct prices,
sizes, ids and times, as on a live feed) kept in the runtime's :class:`RingBuffer`.

Each round runs in a fresh subprocess so the resident set starts clean: one child measures the RSS
growth (``/proc/self/statm``), another the Python allocations (``tracemalloc``; it slows allocation
down and adds its own bookkeeping to the RSS, so the two are never measured together). The events
are spread over 10 symbols' ring buffers of 100,000 each, as the feeder keeps them. Target: < 250 MB.
Tracing slows allocation about fivefold, so the tracemalloc child fills 2 of the 10 buffers (200,000
events) and the figure is scaled to 1,000,000: every event allocates the same objects, so it is linear.

Rings this long pack their older events into columns (see ``RingBuffer``); the RSS child also times
the filling, building the events included, beside the same events appended to a short (unpacked) ring,
so the cost of packing is in the table next to what it saves.

Runs standalone: ``python bench/bench_memory.py``.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from typing import Any

from _table import print_table

N_EVENTS = 1_000_000
N_SYMBOLS = 10
TRACED_SYMBOLS = 2
MB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fill(n_symbols: int) -> list[Any]:
    from marketfeeder.models import Side, Trade
    from marketfeeder.runtime.buffers import RingBuffer

    buy, sell = Side.BUY, Side.SELL
    fast = Trade.fast
    per = N_EVENTS // N_SYMBOLS
    buffers = []
    t0 = 1_767_225_600_000_000_000
    for s in range(n_symbols):
        buffer = RingBuffer(per)
        append = buffer.appender()
        symbol = f"SYM{s}-USDT"
        for i in range(per):
            ts = t0 + i * 1_000_000
            append(fast("binance", symbol, ts, ts + 500_000, 10_000_000 + i, 65_000.0 + i * 0.01,
                        0.001 * (i % 997 + 1), sell if i & 1 else buy, ts))
        buffers.append(buffer)
    assert sum(len(b) for b in buffers) == per * n_symbols
    return buffers


def _fill_cost(ring_len: int) -> float:
    """ns per event to build a trade and append it to a ring of ``ring_len`` (the same work as _fill)."""
    import time

    from marketfeeder.models import Side, Trade
    from marketfeeder.runtime.buffers import RingBuffer

    buy, sell = Side.BUY, Side.SELL
    fast = Trade.fast
    n = 200_000
    append = RingBuffer(ring_len).appender()
    t0 = 1_767_225_600_000_000_000
    start = time.perf_counter_ns()
    for i in range(n):
        ts = t0 + i * 1_000_000
        append(fast("binance", "SYM-USDT", ts, ts + 500_000, 10_000_000 + i, 65_000.0 + i * 0.01,
                    0.001 * (i % 997 + 1), sell if i & 1 else buy, ts))
    return (time.perf_counter_ns() - start) / n


def _child(mode: str) -> int | str:
    """Bytes held by the events (RSS growth, or traced allocations); or the fill costs."""
    if mode == "cost":
        return f"{_fill_cost(N_EVENTS // N_SYMBOLS)} {_fill_cost(1_000)}"
    import marketfeeder.models
    import marketfeeder.runtime.buffers  # noqa: F401  (imports are not part of the figure)

    gc.collect()
    if mode == "trace":
        import tracemalloc

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        buffers = _fill(TRACED_SYMBOLS)
        gc.collect()
        used = (tracemalloc.get_traced_memory()[0] - before) * N_SYMBOLS // TRACED_SYMBOLS
        tracemalloc.stop()
    else:
        before = _rss()
        buffers = _fill(N_SYMBOLS)
        gc.collect()
        used = _rss() - before
    del buffers
    return used


def _measure(mode: str) -> str:
    out = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]


def run(rounds: int = 5) -> list[dict[str, Any]]:
    rss: list[int] = []
    traced: list[int] = []
    packed_ns: list[float] = []
    plain_ns: list[float] = []
    for _ in range(rounds):  # interleaved: every measure sees the same machine load
        rss.append(int(_measure("rss")))
        traced.append(int(_measure("trace")))
        packed, plain = _measure("cost").split()
        packed_ns.append(float(packed))
        plain_ns.append(float(plain))
    return [
        {"name": "memory: 1M buffered trades, RSS growth (target < 250 MB)", "unit": "MB",
         "values": [b / MB for b in rss], "higher_is_better": False},
        {"name": "memory: 1M buffered trades, RSS per event", "unit": "bytes/event",
         "values": [b / N_EVENTS for b in rss], "higher_is_better": False},
        {"name": "memory: 1M buffered trades, tracemalloc (200k traced, scaled)", "unit": "MB",
         "values": [b / MB for b in traced], "higher_is_better": False},
        {"name": "memory: 1M buffered trades, tracemalloc per event (200k traced)", "unit": "bytes/event",
         "values": [b / N_EVENTS for b in traced], "higher_is_better": False},
        {"name": "memory: build + append a trade, 100k ring (packed)", "unit": "ns/event",
         "values": packed_ns, "higher_is_better": False},
        {"name": "memory: build + append a trade, 1k ring (objects)", "unit": "ns/event",
         "values": plain_ns, "higher_is_better": False},
    ]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(_child(sys.argv[2]))
        return
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
