"""The duckdb sink under the real runtime, fed by the loopback simulator of both exchanges."""

from __future__ import annotations

from pathlib import Path

import anyio
import duckdb
import pytest

from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder_duckdb import History

pytestmark = pytest.mark.anyio

EXCHANGES = ("binance", "backpack")


def _stored_events(path: Path) -> dict[tuple[str, str, str], int]:
    """(exchange, symbol, event class) -> events stored, book levels folded back per event."""
    counts: dict[tuple[str, str, str], int] = {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        for table, cls in (("trades", "Trade"), ("book_tickers", "BookTicker"), ("tickers", "Ticker"),
                           ("klines", "Kline"), ("book_states", "BookState"), ("gaps", "Gap")):
            for exchange, symbol, n in con.execute(f"SELECT exchange, symbol, count(*) FROM {table} GROUP BY ALL").fetchall():
                counts[(exchange, symbol, cls)] = n
        for table, cls, key in (("book_snapshots", "BookSnapshot", "snapshot_id"), ("book_deltas", "BookDelta", "seq")):
            rows = con.execute(
                f"SELECT exchange, symbol, count(DISTINCT ({key}, receive_ts)) FROM {table} GROUP BY ALL"
            ).fetchall()
            for exchange, symbol, n in rows:
                counts[(exchange, symbol, cls)] = n
    finally:
        con.close()
    return counts


async def test_feeder_to_duckdb_counts_and_books(tmp_path: Path, anyio_backend: str) -> None:
    from marketfeeder.runtime.feeder import Feeder
    from marketfeeder.sim.engine import default_instruments
    from marketfeeder.sim.server import SimServer, sim_config_for

    pm = get_plugin_manager()
    venues = collect(pm, "marketfeeder_register_venues", "venue")
    missing = [name for name in EXCHANGES if name not in venues]
    if missing:
        pytest.skip(f"exchange plugins not installed: {', '.join(missing)}")
    symbols = {name: [i.symbol for i in default_instruments(name)][:2] for name in EXCHANGES}
    db = tmp_path / "market.duckdb"
    all_symbols = sorted({s for names in symbols.values() for s in names})
    async with SimServer({n: venues[n] for n in EXCHANGES}, seed=7, rate=1500, symbols=all_symbols) as sim:
        endpoints = sim_config_for(sim, list(EXCHANGES))["exchanges"]
        config = {
            "exchanges": {n: {**endpoints[n], "symbols": symbols[n]} for n in EXCHANGES},
            "sinks": [{"type": "duckdb", "options": {"target": str(db), "snapshot_interval": 0}}],
        }
        with anyio.fail_after(60):
            async with Feeder(config, plugin_manager=pm) as feeder:
                books = [feeder.book(n, s) for n in EXCHANGES for s in symbols[n]]
                for _ in range(1000):  # poll until every book is LIVE (fail_after bounds it)
                    if all(book.is_live for book in books):
                        break
                    await anyio.sleep(0.05)
                await anyio.sleep(1.0)
    stats = feeder.get_performance_stats()
    sink_stats = stats["sinks"]["duckdb"]
    assert not sink_stats["failed"], sink_stats["error"]

    stored = _stored_events(db)
    # Every event the runtime delivered to the sink is a stored row (book events: one per event).
    assert sum(stored.values()) + _count(db, "connections") + _count(db, "validation_failures") == sink_stats["written"]
    for name in EXCHANGES:
        for symbol in symbols[name]:
            delivered = stats[f"{name}:{symbol}"]["by_type"]
            assert delivered.get("Trade", 0) > 0
            for cls, n in delivered.items():
                assert stored.get((name, symbol, cls), 0) == n, (name, symbol, cls)

    # The book rebuilt from storage equals the book the feeder held when it stopped.
    with History(db) as history:
        for name in EXCHANGES:
            for symbol in symbols[name]:
                last = history.sql(
                    "SELECT max(receive_ts) AS t FROM all_book_deltas WHERE exchange = $e AND symbol = $s",
                    {"e": name, "s": symbol},
                ).column("t")[0].as_py()
                live = feeder.book(name, symbol).top(100_000)
                assert live[0] and live[1]
                assert history.book_at(name, symbol, last) == live, (name, symbol)


def _count(path: Path, table: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()
