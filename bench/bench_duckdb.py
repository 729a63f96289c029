"""DuckDB sink ingest speed against row-at-a-time SQLite sinks (the old design's store).

The sinks receive the same ``Trade`` events (built with ``Trade.fast``) in batches through their async
``write_batch``; rounds alternate between them so machine noise hits all alike, and ratios are taken
within a round. Each figure is trade rows from the first ``write_batch`` to a completed ``flush``
(every row committed: durable), per wall second and per CPU second of the process (all threads: the
rate one dedicated core would sustain on this shared machine). Opening (schema check) and closing
(checkpoint) are left out for every sink alike. The DuckDB sink runs DuckDB with one thread and its
work is serial (one worker-thread call at a time), so its figures are for one core.

Two SQLite baselines, both one ``INSERT`` statement per event and one commit per batch:
``old store`` awaits each INSERT as its own call into the database thread (how an aiosqlite-style
store runs); ``1 call/batch`` runs a whole batch's INSERTs in one thread call, the strongest
row-at-a-time form.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from marketfeeder.models import Event, Side, Trade
from marketfeeder_duckdb import DuckDBSink

BATCH = 10_000
DUCKDB_ROWS = 1_000_000
SQLITE_ROWS = 200_000
SQLITE_PER_EVENT_ROWS = 20_000
_BUY, _SELL = Side.BUY, Side.SELL


_SQLITE_INSERT = "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _row(e: Trade) -> tuple[Any, ...]:
    return (e.exchange, e.symbol, e.exchange_ts, e.receive_ts, e.seq, e.price, e.size, e.side.value, e.trade_ts)


class SqliteRowSink:
    """The old design's store: one ``INSERT`` per event, each an awaited call into the database thread
    (the way an aiosqlite-style store is driven), one commit per batch.

    With ``per_event=False`` every INSERT of a batch runs in one worker-thread call instead: still one
    statement per row, but without the per-row thread hop. It is the strongest row-at-a-time variant and
    is reported too, so the comparison is not only against the slow form.
    """

    def __init__(self, options: Mapping[str, Any], *, per_event: bool = True) -> None:
        self.path = str(options["target"])
        self.per_event = per_event
        self._con: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    async def open(self) -> None:
        def _open() -> None:
            con = sqlite3.connect(self.path, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS trades (exchange TEXT, symbol TEXT, exchange_ts INTEGER, "
                "receive_ts INTEGER, seq INTEGER, price REAL, size REAL, side TEXT, trade_ts INTEGER)"
            )
            self._con = con

        await anyio.to_thread.run_sync(_open, limiter=self._limiter)

    async def write_batch(self, events: Sequence[Event]) -> None:
        con = self._con
        assert con is not None
        if self.per_event:
            for e in events:
                assert isinstance(e, Trade)
                await anyio.to_thread.run_sync(con.execute, _SQLITE_INSERT, _row(e), limiter=self._limiter)
            await anyio.to_thread.run_sync(con.commit, limiter=self._limiter)
            return

        def _write() -> None:
            for e in events:
                assert isinstance(e, Trade)
                con.execute(_SQLITE_INSERT, _row(e))
            con.commit()

        await anyio.to_thread.run_sync(_write, limiter=self._limiter)

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def make_batches(rows: int) -> list[list[Trade]]:
    base = 1_700_000_000_000_000_000
    events = [
        Trade.fast(
            "binance" if i % 3 else "backpack",
            "BTC-USDT" if i % 2 else "ETH-USDT",
            base + i * 1_000,
            base + i * 1_000 + 500,
            i,
            50_000.0 + (i % 1000) * 0.01,
            0.001 * (1 + i % 7),
            _BUY if i % 2 else _SELL,
            base + i * 1_000,
        )
        for i in range(rows)
    ]
    return [events[i : i + BATCH] for i in range(0, rows, BATCH)]


async def _measure(sink: Any, batches: list[list[Trade]]) -> tuple[float, float]:
    """(rows per wall second, rows per CPU second of this process) from the first write_batch until a
    flush has committed every row (durable). CPU time counts every thread of the process, so the second
    figure is the rate one dedicated core would sustain, whatever else the shared machine runs."""
    rows = sum(len(b) for b in batches)
    await sink.open()
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        await sink.write_batch(batch)
    await sink.flush()
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    await sink.close()
    return rows / elapsed, rows / cpu_used


def run(rounds: int = 5) -> list[dict[str, Any]]:
    duck_batches = make_batches(DUCKDB_ROWS)
    one_call_batches = duck_batches[: SQLITE_ROWS // BATCH]
    per_event_batches = [b[: BATCH // 5] for b in duck_batches[: SQLITE_PER_EVENT_ROWS * 5 // BATCH]]
    figures: dict[str, list[tuple[float, float]]] = {"duck": [], "old": [], "one_call": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            duck_sink = DuckDBSink(
                {"target": str(Path(tmp, f"d{n}.duckdb")), "batch_size": BATCH, "snapshot_interval": 0}
            )
            figures["duck"].append(anyio.run(_measure, duck_sink, duck_batches))
            old_sink = SqliteRowSink({"target": str(Path(tmp, f"s{n}.sqlite"))})
            figures["old"].append(anyio.run(_measure, old_sink, per_event_batches))
            fast_sink = SqliteRowSink({"target": str(Path(tmp, f"f{n}.sqlite"))}, per_event=False)
            figures["one_call"].append(anyio.run(_measure, fast_sink, one_call_batches))

    def wall(key: str) -> list[float]:
        return [w for w, _ in figures[key]]

    def cpu(key: str) -> list[float]:
        return [c for _, c in figures[key]]

    def ratio(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    def row(name: str, unit: str, values: list[float]) -> dict[str, Any]:
        return {"name": name, "unit": unit, "values": values, "higher_is_better": True}

    return [
        row("duckdb sink, trades", "rows/s", wall("duck")),
        row("duckdb sink, trades, cpu", "rows/cpu-s", cpu("duck")),
        row("sqlite row sink (old store)", "rows/s", wall("old")),
        row("sqlite row sink (old store), cpu", "rows/cpu-s", cpu("old")),
        row("sqlite rows, 1 call/batch", "rows/s", wall("one_call")),
        row("sqlite rows, 1 call/batch, cpu", "rows/cpu-s", cpu("one_call")),
        row("duckdb / old store", "x", ratio(wall("duck"), wall("old"))),
        row("duckdb / old store, cpu", "x", ratio(cpu("duck"), cpu("old"))),
        row("duckdb / sqlite 1 call", "x", ratio(wall("duck"), wall("one_call"))),
        row("duckdb / sqlite 1 call, cpu", "x", ratio(cpu("duck"), cpu("one_call"))),
    ]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for result in run(rounds):
        values = result["values"]
        median = sorted(values)[len(values) // 2]
        shown = ", ".join(f"{v:,.0f}" if v > 100 else f"{v:.1f}" for v in values)
        print(f"{result['name']:<30} median {median:>14,.1f} {result['unit']:<10} [{shown}]")


if __name__ == "__main__":
    main()
