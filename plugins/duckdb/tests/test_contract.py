"""The core's sink contract suite, run against DuckDBSink on both anyio backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from marketfeeder.testing.contract import SinkContract
from marketfeeder_duckdb import DuckDBSink
from marketfeeder_duckdb.schema import TABLES
from marketfeeder_duckdb.sink import EVENT_TABLES

_TYPE_OF_TABLE = {table: cls.__name__ for cls, table in EVENT_TABLES.items()}


class TestDuckDBSinkContract(SinkContract):
    def make_sink(self, tmp_path: Path) -> DuckDBSink:
        return DuckDBSink({"target": str(tmp_path / "contract.duckdb"), "snapshot_interval": 0, "batch_size": 50})

    def read_back(self, sink: Any) -> list[dict[str, Any]]:
        """One record per stored event (book levels folded back per event), in arrival order."""
        con = duckdb.connect(str(sink.path), read_only=True)
        records: list[tuple[int, int, dict[str, Any]]] = []
        try:
            for table in TABLES:
                if table in ("perf_stats", "other_events", "book_snapshots", "book_deltas"):
                    continue
                cur = con.execute(f"SELECT *, rowid FROM {table}")
                names = [d[0] for d in cur.description]
                for row in cur.fetchall():
                    record = dict(zip(names, row, strict=True))
                    records.append((record["receive_ts"], record.pop("rowid"), {"type": _TYPE_OF_TABLE[table], **record}))
            for table in ("book_snapshots", "book_deltas"):
                rows = con.execute(
                    f"SELECT exchange, symbol, receive_ts, seq, min(rowid) FROM {table} "
                    "GROUP BY exchange, symbol, receive_ts, seq, snapshot_id"
                ).fetchall()
                for exchange, symbol, receive_ts, seq, rowid in rows:
                    record = {"type": _TYPE_OF_TABLE[table], "exchange": exchange, "symbol": symbol,
                              "receive_ts": receive_ts, "seq": seq}
                    records.append((receive_ts, rowid, record))
        finally:
            con.close()
        records.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in records]
