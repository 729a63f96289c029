"""Tables, migrations and views of the history database.

Column choices
--------------
* **Times are BIGINT nanoseconds since the Unix epoch** (``receive_ts``, ``exchange_ts``, ...): the same
  integers the events carry, stored exactly (a TIMESTAMP holds microseconds and would round Binance's
  and Backpack's nanosecond-derived times), with no time-zone ambiguity. The ``all_<table>`` views add a
  ``TIMESTAMP_NS`` column ``<stem>_time`` next to each ``<stem>_ts`` column (UTC) for humans and SQL
  date functions.
* **Prices and sizes are DOUBLE**: the core's models hold floats (``float(str)`` of the exchange's
  decimal text), so DOUBLE stores exactly the value the feeder saw; equal decimal strings ("1.10" and
  "1.1") are equal values, which is what grouping and book rebuilding rely on. DECIMAL would need a
  per-instrument scale and would not round-trip anything the feeder did not already hold.
* Every market table starts with ``exchange, symbol, exchange_ts, receive_ts, seq``, the fields every
  event has. There is no primary key: an ART index costs DuckDB a large share of its append speed,
  and DuckDB's per-row-group min/max zone maps on ``exchange``, ``symbol`` and ``receive_ts`` already
  prune scans of data appended in time order.

Books
-----
``book_snapshots`` holds one row per level with a ``snapshot_id`` (from the sequence
``book_snapshot_ids``), ``side`` ('bid'/'ask') and ``idx`` (0 = best); ``book_deltas`` one row per
level change with the event's ``seq`` (last update id), ``first_seq``, and the ``snapshot_id`` of the
book image the feeder applied it to (the latest snapshot of that book the sink received before it;
NULL before the first one). A snapshot or delta with no level is kept as one row with ``side``,
``price`` and ``size`` NULL, so no event is lost.

The core's book engine sends a sink exactly what it applies, in order: a snapshot when it loads one,
then each applied diff (diffs it buffered while syncing come right after the snapshot, with their
earlier receive times). So the book at time T is the latest snapshot received at or before T plus its
deltas received at or before T, in ``(seq, idx)`` order (see :meth:`History.book_at`).

Bus positions
-------------
``bus_positions`` holds, per ``(source, consumer, stream)``, the last message-bus sequence whose events
are stored (``seq``) and when that was committed (``committed_ns``). The sink writes it in the same
transaction as those events, so after any crash the rows present are exactly those up to the stored
position. It is bookkeeping, not market data: it is not in :data:`TABLES`, has no ``all_`` view and is
never archived.

Migrations
----------
:data:`MIGRATIONS` is the full history of schema changes, one entry per version, each a list of SQL
statements. A database records its version in ``schema_version``; :func:`migrate` applies the missing
steps in order, each in its own transaction. Entries are never edited once released: a change is a new
entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs
import duckdb
import pyarrow as pa

__all__ = [
    "ARCHIVED_TABLES",
    "Column",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SchemaError",
    "TABLES",
    "archive_glob",
    "create_views",
    "migrate",
    "schema_version",
]


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this version of the plugin."""


@attrs.frozen
class Column:
    name: str
    sql: str  # DuckDB type
    arrow: pa.DataType


def _common() -> tuple[Column, ...]:
    return (
        Column("exchange", "VARCHAR", pa.string()),
        Column("symbol", "VARCHAR", pa.string()),
        Column("exchange_ts", "BIGINT", pa.int64()),
        Column("receive_ts", "BIGINT", pa.int64()),
        Column("seq", "BIGINT", pa.int64()),
    )


def _d(name: str) -> Column:
    return Column(name, "DOUBLE", pa.float64())


def _i(name: str) -> Column:
    return Column(name, "BIGINT", pa.int64())


def _s(name: str) -> Column:
    return Column(name, "VARCHAR", pa.string())


#: The current columns of every table, in table order. Tests check that the migrated schema equals it.
TABLES: dict[str, tuple[Column, ...]] = {
    "tickers": (
        *_common(),
        *map(_d, ("last", "bid", "bid_size", "ask", "ask_size", "open", "high", "low", "volume", "quote_volume")),
        _i("trade_count"),
        *map(_d, ("price_change", "price_change_pct", "vwap")),
    ),
    "book_tickers": (*_common(), *map(_d, ("bid", "bid_size", "ask", "ask_size")), _i("engine_ts")),
    "trades": (*_common(), _d("price"), _d("size"), _s("side"), _i("trade_ts")),
    "klines": (
        *_common(),
        _s("interval"),
        _i("open_ts"),
        _i("close_ts"),
        *map(_d, ("open", "high", "low", "close", "volume")),
        Column("closed", "BOOLEAN", pa.bool_()),
        _d("quote_volume"),
        _i("trade_count"),
    ),
    "book_snapshots": (
        _i("snapshot_id"),
        *_common(),
        _s("side"),
        Column("idx", "INTEGER", pa.int32()),
        _d("price"),
        _d("size"),
    ),
    "book_deltas": (
        _i("snapshot_id"),
        *_common(),
        _i("first_seq"),
        _i("engine_ts"),
        _s("side"),
        Column("idx", "INTEGER", pa.int32()),
        _d("price"),
        _d("size"),
    ),
    "mark_prices": (
        *_common(),
        *map(_d, ("mark_price", "index_price", "funding_rate")),
        _i("next_funding_ts"),
        _i("engine_ts"),
    ),
    "book_states": (*_common(), _s("state"), _s("reason")),
    "gaps": (*_common(), _s("gap_type"), _i("from_seq"), _i("to_seq"), _s("reason"), _i("count")),
    "connections": (*_common(), _s("connection_id"), _s("status"), _s("reason"), _s("url")),
    "validation_failures": (
        *_common(),
        *map(_s, ("check", "message", "action", "event_type")),
        _i("event_receive_ts"),
    ),
    "other_events": (_s("event_type"), *_common(), Column("data", "JSON", pa.string())),
    "perf_stats": (_i("ts"), Column("stats", "JSON", pa.string())),
}

#: Tables rotated into Parquet by the archiver (each has ``exchange`` and ``receive_ts``).
ARCHIVED_TABLES: tuple[str, ...] = tuple(name for name in TABLES if name != "perf_stats")

_COMMON_SQL = "exchange VARCHAR, symbol VARCHAR, exchange_ts BIGINT, receive_ts BIGINT, seq BIGINT"

#: Version n is reached by applying ``MIGRATIONS[n - 1]``. Literal SQL: history is never rewritten.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: market data, book levels and control events.
    (
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_ts BIGINT NOT NULL)",
        f"""CREATE TABLE tickers ({_COMMON_SQL}, last DOUBLE, bid DOUBLE, bid_size DOUBLE, ask DOUBLE,
            ask_size DOUBLE, open DOUBLE, high DOUBLE, low DOUBLE, volume DOUBLE, quote_volume DOUBLE,
            trade_count BIGINT, price_change DOUBLE, price_change_pct DOUBLE, vwap DOUBLE)""",
        f"""CREATE TABLE book_tickers ({_COMMON_SQL}, bid DOUBLE, bid_size DOUBLE, ask DOUBLE, ask_size DOUBLE,
            engine_ts BIGINT)""",
        f"CREATE TABLE trades ({_COMMON_SQL}, price DOUBLE, size DOUBLE, side VARCHAR, trade_ts BIGINT)",
        f"""CREATE TABLE klines ({_COMMON_SQL}, interval VARCHAR, open_ts BIGINT, close_ts BIGINT,
            open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, closed BOOLEAN,
            quote_volume DOUBLE, trade_count BIGINT)""",
        "CREATE SEQUENCE book_snapshot_ids START 1",
        f"""CREATE TABLE book_snapshots (snapshot_id BIGINT, {_COMMON_SQL}, side VARCHAR, idx INTEGER,
            price DOUBLE, size DOUBLE)""",
        f"""CREATE TABLE book_deltas (snapshot_id BIGINT, {_COMMON_SQL}, first_seq BIGINT, engine_ts BIGINT, side VARCHAR,
            idx INTEGER, price DOUBLE, size DOUBLE)""",
        f"""CREATE TABLE mark_prices ({_COMMON_SQL}, mark_price DOUBLE, index_price DOUBLE,
            funding_rate DOUBLE, next_funding_ts BIGINT, engine_ts BIGINT)""",
        f"CREATE TABLE book_states ({_COMMON_SQL}, state VARCHAR, reason VARCHAR)",
        f"""CREATE TABLE gaps ({_COMMON_SQL}, gap_type VARCHAR, from_seq BIGINT, to_seq BIGINT,
            reason VARCHAR, count BIGINT)""",
        f"""CREATE TABLE connections ({_COMMON_SQL}, connection_id VARCHAR, status VARCHAR, reason VARCHAR,
            url VARCHAR)""",
        f"""CREATE TABLE validation_failures ({_COMMON_SQL}, "check" VARCHAR, message VARCHAR,
            action VARCHAR, event_type VARCHAR, event_receive_ts BIGINT)""",
    ),
    # 2: plugin-defined events, performance snapshots, settings and the archiver's journal.
    (
        f"CREATE TABLE other_events (event_type VARCHAR, {_COMMON_SQL}, data JSON)",
        "CREATE TABLE perf_stats (ts BIGINT, stats JSON)",
        "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        """CREATE TABLE archive_runs (run_id VARCHAR PRIMARY KEY, cutoff_ts BIGINT, rows BIGINT,
            finished_ts BIGINT)""",
    ),
    # 3: message-bus positions, committed with the rows they cover (exactly-once ingest from a source).
    (
        """CREATE TABLE bus_positions (source VARCHAR, consumer VARCHAR, stream VARCHAR, seq BIGINT,
            committed_ns BIGINT, PRIMARY KEY (source, consumer, stream))""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The version recorded in the database; 0 for an empty database."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version' "
        "AND table_schema = 'main' AND table_catalog = current_database()"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, target: int | None = None, *, now_ns: int = 0) -> int:
    """Bring the database to ``target`` (default: latest); return the version it is at.

    Each step runs in its own transaction together with its ``schema_version`` row, so a crash
    mid-migration leaves the database at the previous version.
    """
    target = SCHEMA_VERSION if target is None else target
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {current} is newer than this marketfeeder-duckdb supports "
            f"({SCHEMA_VERSION}); upgrade the plugin"
        )
    for version in range(current + 1, target + 1):
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in MIGRATIONS[version - 1]:
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now_ns])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return max(current, target)


def archive_glob(archive_dir: str | os.PathLike[str], table: str) -> str:
    return str(Path(archive_dir).absolute() / table / "*" / "*" / "*.parquet")


def _has_archive(archive_dir: str | os.PathLike[str] | None, table: str) -> bool:
    if archive_dir is None:
        return False
    root = Path(archive_dir) / table
    return root.is_dir() and any(root.glob("*/*/*.parquet"))


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_sql(table: str, archive_dir: str | os.PathLike[str] | None, source: str) -> str:
    columns: Sequence[Column] = TABLES[table]
    names = ", ".join(f'"{c.name}"' for c in columns)
    body = f"SELECT {names} FROM {source}{table}"
    if _has_archive(archive_dir, table):
        assert archive_dir is not None
        # Partition columns come back from the path: give them fixed types, drop the date.
        scan = (
            f"read_parquet({_quote_literal(archive_glob(archive_dir, table))}, hive_partitioning = true, "
            "hive_types = {'exchange': 'VARCHAR', 'date': 'DATE'}, union_by_name = true)"
        )
        body += f" UNION ALL SELECT {names} FROM {scan}"
    times = "".join(
        f', make_timestamp_ns("{c.name}") AS "{c.name[:-3]}_time"'
        for c in columns
        if c.name.endswith("_ts") and c.sql == "BIGINT"
    )
    return f"SELECT *{times} FROM ({body})"


def create_views(
    con: duckdb.DuckDBPyConnection,
    archive_dir: str | os.PathLike[str] | None,
    *,
    temp: bool = False,
) -> None:
    """(Re)create ``all_<table>`` views: live rows plus archived Parquet, with TIMESTAMP_NS columns.

    ``temp`` views live in the connection only (usable on a read-only connection) and shadow the
    persistent ones of the same name.
    """
    source = ""
    if temp:
        # Inside the temp catalog an unqualified name could resolve to the view itself.
        row = con.execute("SELECT current_database()").fetchone()
        assert row is not None
        source = '"' + str(row[0]).replace('"', '""') + '".main.'
    kind = "TEMP VIEW" if temp else "VIEW"
    for table in TABLES:
        con.execute(f"CREATE OR REPLACE {kind} all_{table} AS {_view_sql(table, archive_dir, source)}")
