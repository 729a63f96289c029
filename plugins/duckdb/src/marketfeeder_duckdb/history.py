"""Read-only access to stored history for analysis and backtesting.

``History(path)`` opens the database read-only and defines ``all_<table>`` temp views over the live
tables plus the Parquet archive (``archive_dir`` argument, or the one the sink recorded).

While a feeder writes the file, DuckDB's lock keeps every other process out, even read-only ones.
``History`` then opens the sink's snapshot copy (``<path>.snapshot``, refreshed every
``snapshot_interval`` seconds by :class:`~marketfeeder_duckdb.DuckDBSink`, see its docs) and says so
in :attr:`History.source` and :attr:`History.snapshot_time`. Archived Parquet is read directly either
way, so old data is always complete; only the last ``snapshot_interval`` seconds may be missing.

Times given to the methods are ``int`` nanoseconds since the epoch or ``datetime`` (naive means UTC).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import duckdb
import pyarrow as pa

from .schema import SCHEMA_VERSION, create_views, schema_version
from .sink import snapshot_path_for

__all__ = ["History", "HistoryError", "Level", "TimeLike", "parse_interval"]

TimeLike = int | dt.datetime
Level = tuple[float, float]

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 7 * 86_400_000_000_000,
}
_INTERVAL = re.compile(r"^\s*(\d+)\s*(ns|us|ms|s|m|h|d|w)\s*$")


class HistoryError(RuntimeError):
    """The history database cannot be opened or queried as asked."""


def parse_interval(text: str) -> int:
    """``"1m"`` -> nanoseconds. Units: ns, us, ms, s, m (minute), h, d, w."""
    match = _INTERVAL.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"invalid interval {text!r}: expected a positive count and a unit, e.g. 1s, 5m, 1h, 1d")
    return int(match.group(1)) * _UNITS_NS[match.group(2)]


def _ns(value: TimeLike | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        delta = aware - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    raise TypeError(f"expected int nanoseconds or datetime, got {type(value).__name__}")


def _window(
    column: str, exchange: str, symbol: str, start: TimeLike | None, end: TimeLike | None
) -> tuple[str, dict[str, Any]]:
    """WHERE text and parameters for one book/stream and ``start <= column < end``. Bounds that are
    not given are left out of the SQL (not coalesced away), so DuckDB can prune row groups on them."""
    where = ["exchange = $exchange", "symbol = $symbol"]
    params: dict[str, Any] = {"exchange": exchange, "symbol": symbol}
    if start is not None:
        where.append(f"{column} >= $start")
        params["start"] = _ns(start)
    if end is not None:
        where.append(f"{column} < $end")
        params["end"] = _ns(end)
    return " AND ".join(where), params


def _is_lock_error(exc: duckdb.Error) -> bool:
    text = str(exc).lower()
    return "lock" in text or "different configuration" in text


class History:
    """Query stored events. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        archive_dir: str | os.PathLike[str] | None = None,
        *,
        snapshot_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.source: Literal["database", "snapshot"] = "database"
        self.snapshot_time: dt.datetime | None = None
        if not self.path.exists():
            raise HistoryError(f"no history database at {str(self.path)!r}")
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            snapshot = Path(snapshot_path) if snapshot_path else snapshot_path_for(self.path)
            if not _is_lock_error(exc):
                raise HistoryError(f"cannot open {str(self.path)!r}: {exc}") from exc
            if not snapshot.exists():
                raise HistoryError(
                    f"{str(self.path)!r} is locked by its writer and has no snapshot at {str(snapshot)!r} "
                    "(enable the sink's snapshot_interval to read while it writes)"
                ) from exc
            con = duckdb.connect(str(snapshot), read_only=True)
            self.source = "snapshot"
            self.snapshot_time = dt.datetime.fromtimestamp(snapshot.stat().st_mtime, tz=dt.UTC)
        self._con = con
        try:
            version = schema_version(con)
            if version != SCHEMA_VERSION:
                raise HistoryError(
                    f"{str(self.path)!r} has schema version {version}, this plugin reads {SCHEMA_VERSION}"
                    + (" (open it once with the duckdb sink to migrate it)" if version < SCHEMA_VERSION else "")
                )
            if archive_dir is None:
                row = con.execute("SELECT value FROM meta WHERE key = 'archive_dir'").fetchone()
                archive_dir = row[0] if row else None
            self.archive_dir = Path(archive_dir) if archive_dir is not None else None
            create_views(con, self.archive_dir, temp=True)
        except BaseException:
            con.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------------

    def __enter__(self) -> History:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def sql(self, query: str, params: dict[str, Any] | list[Any] | None = None) -> pa.Table:
        """Run any read-only SQL; the ``all_<table>`` views include archived data."""
        try:
            relation = self._con.sql(query, params=params)
        except duckdb.Error as exc:
            raise HistoryError(f"query failed: {exc}") from exc
        if relation is None:
            return pa.table({})
        return relation.to_arrow_table()

    # -- helpers for common questions --------------------------------------------------------------

    def trades(
        self, exchange: str, symbol: str, start: TimeLike | None = None, end: TimeLike | None = None
    ) -> pa.Table:
        """Trades with ``start <= receive_ts < end``, in arrival order."""
        where, params = _window("receive_ts", exchange, symbol, start, end)
        return self.sql(f"SELECT * FROM all_trades WHERE {where} ORDER BY receive_ts, seq", params)

    def ohlcv(
        self,
        exchange: str,
        symbol: str,
        interval: str = "1m",
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> pa.Table:
        """Candles resampled from stored trades, in SQL.

        Trades are placed by their own time (``trade_ts``, else ``exchange_ts``, else ``receive_ts``);
        a candle starts at a multiple of ``interval`` since the epoch (``bucket_ts``, ns; ``time`` as
        TIMESTAMP_NS). This is DuckDB's ``time_bucket`` done in integer nanoseconds, which keeps the
        exact times. Open and close are the first and last trade by (time, seq). Only intervals with
        trades appear.
        """
        step = parse_interval(interval)
        where, params = _window("coalesce(trade_ts, exchange_ts, receive_ts)", exchange, symbol, start, end)
        return self.sql(
            f"""
            WITH t AS (
                SELECT coalesce(trade_ts, exchange_ts, receive_ts) AS t, seq, price, size
                FROM all_trades WHERE {where}
            )
            SELECT (t // {step}) * {step} AS bucket_ts,
                   make_timestamp_ns((t // {step}) * {step}) AS time,
                   arg_min(price, (t, seq)) AS open, max(price) AS high, min(price) AS low,
                   arg_max(price, (t, seq)) AS close, sum(size) AS volume,
                   sum(price * size) AS quote_volume, count(*) AS trade_count
            FROM t
            GROUP BY 1 ORDER BY 1
            """,
            params,
        )

    def book_at(
        self, exchange: str, symbol: str, ts: TimeLike, depth: int | None = None
    ) -> tuple[list[Level], list[Level]]:
        """The book as the feeder held it at ``ts``: ``(bids best first, asks best first)``.

        Start from the latest snapshot received at or before ``ts`` and apply, in ``(seq, idx)``
        order, the deltas the feeder applied to that image (same ``snapshot_id``) that were received
        at or before ``ts``; the last size of each price wins and size 0 removes the level. Deltas
        written without a ``snapshot_id`` count when their update id is above the snapshot's. A
        ``BookState`` SYNCING between the snapshot and ``ts`` means the feeder cleared the book
        (new connection): the result is empty, as the feeder's book was. Raises ``LookupError`` when
        no snapshot precedes ``ts``.
        """
        when = _ns(ts)
        params = {"exchange": exchange, "symbol": symbol, "ts": when}
        snap = self._con.execute(
            """
            SELECT s.snapshot_id, s.seq, s.receive_ts,
                   (SELECT count(*) FROM all_book_states b
                    WHERE b.exchange = $exchange AND b.symbol = $symbol AND b.state = 'syncing'
                      AND b.receive_ts > s.receive_ts AND b.receive_ts <= $ts) AS resets
            FROM (SELECT snapshot_id, seq, receive_ts FROM all_book_snapshots
                  WHERE exchange = $exchange AND symbol = $symbol AND receive_ts <= $ts
                  ORDER BY receive_ts DESC, snapshot_id DESC LIMIT 1) s
            """,
            params,
        ).fetchone()
        if snap is None:
            raise LookupError(f"no {exchange} {symbol} book snapshot stored at or before {when}")
        snapshot_id, snap_seq, snap_ts, resets = snap
        if resets:
            return [], []
        untagged = "receive_ts >= $snap_ts" if snap_seq is None else "seq > $snap_seq"
        rows = self._con.execute(
            f"""
            WITH levels AS (
                SELECT side, price, size, 0 AS src, 0 AS seq, idx FROM all_book_snapshots
                WHERE exchange = $exchange AND symbol = $symbol AND snapshot_id = $snapshot_id
                  AND receive_ts = $snap_ts AND side IS NOT NULL
                  AND size > 0 AND isfinite(size) AND price > 0 AND isfinite(price)
                UNION ALL
                SELECT side, price, size, 1 AS src, seq, idx FROM all_book_deltas
                WHERE exchange = $exchange AND symbol = $symbol AND receive_ts <= $ts AND side IS NOT NULL
                  AND size >= 0 AND isfinite(size)  -- the live book skips malformed sizes too
                  AND (snapshot_id = $snapshot_id OR (snapshot_id IS NULL AND {untagged}))
            )
            SELECT side, price, arg_max(size, (src, seq, idx)) AS size FROM levels GROUP BY side, price
            """,
            {**params, "snapshot_id": snapshot_id, "snap_ts": snap_ts}
            | ({} if snap_seq is None else {"snap_seq": snap_seq}),
        ).fetchall()
        bids = sorted(((p, s) for side, p, s in rows if side == "bid" and s > 0), reverse=True)
        asks = sorted((p, s) for side, p, s in rows if side == "ask" and s > 0)
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return bids, asks
