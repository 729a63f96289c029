"""``DuckDBSink``: columnar batch ingest of every event type into a DuckDB file.

Write path
----------
``write_batch`` only groups the events by class into a pending buffer (on the event loop, no I/O).
When the buffer holds ``batch_size`` events, or a commit is due, one worker-thread call
(``anyio.to_thread.run_sync`` behind a ``CapacityLimiter(1)``, so DuckDB is only ever used by one
thread at a time) builds one Arrow table per destination table from per-column Python lists and
appends it with ``INSERT INTO t SELECT ... FROM <arrow table>``. Nothing is inserted row by row.

Transactions
------------
Appends go into one open transaction that is committed every ``commit_interval`` seconds (checked at
each ``write_batch``), at ``flush()`` and at ``close()``. A commit first appends everything pending, so
the rows of every ``write_batch`` call are durable once the next commit returns (in a sink fed by a
message bus: every row up to the last checkpoint, see below). ``commit_interval=0``
commits at every ``write_batch`` (one transaction per batch). After a crash (``kill -9``) the database
opens with every committed transaction and none of the uncommitted one.

Exactly-once from a message bus
-------------------------------
A source that reads a message bus (see :mod:`marketfeeder.source`) ends each delivered batch with a
:class:`~marketfeeder.models.BusCheckpoint`: "the events since the previous checkpoint are stream
``symbol`` up to sequence ``seq``" (one ``deliver`` call is one contiguous run, so they are).
Checkpoints are not stored as rows. Each one sets the pending position of ``(exchange, consumer,
symbol)`` and marks a boundary in the pending buffer (the length of every per-table bucket there).
A positioned sink only ever appends, and so commits, events up to the last boundary, and writes the
positions into ``bus_positions`` in the same transaction as those events; events after the last
checkpoint wait for the next one. So after any crash the rows present for a stream are exactly those
up to its stored position, and a source that resumes right after :meth:`DuckDBSink.bus_positions`
neither loses nor duplicates anything.

A sink is positioned once a source asked it for its positions (a source asks before it delivers
anything, to know where to resume), from its first checkpoint on, from the start when the file already
holds positions, or with ``require_checkpoints = true``. ``flush()`` commits up to the last checkpoint. ``close()`` does not write the events after it:
the bus redelivers them after the stored position, so writing them would store them twice; they are
counted (``statistics()["uncheckpointed"]``) and logged. A sink that is not positioned writes
everything, as before. At most ``max_uncheckpointed`` events may wait for a checkpoint; more stops the
sink with :class:`DuckDBSinkError` (a feed that stopped checkpointing), after committing what was
covered.

Errors
------
A DuckDB or OS error (disk full, file locked by another process, unwritable path) raises
:class:`DuckDBSinkError` naming the file and the cause. The open transaction is rolled back, the
connection is closed and the sink stops: later calls raise the same error, ``close()`` returns quietly.
What was committed before stays intact (DuckDB's write-ahead log replays committed transactions only).

Reading while writing
---------------------
DuckDB lets one process open a file for writing and then no other process may open it at all. The
sink therefore publishes a consistent read-only copy, ``<path>.snapshot`` (option ``snapshot_path``),
every ``snapshot_interval`` seconds: it commits, has DuckDB copy the committed database into a new
file (``ATTACH`` + ``COPY FROM DATABASE``, under the connection's limiter so nothing writes meanwhile)
and renames the copy into place atomically. (Copying the file from Python instead would be unsafe: closing
any descriptor of the file drops the process's POSIX lock on it.) The cost grows with the live
database, which archiving keeps small; ``snapshot_interval = 0`` turns snapshots off. :class:`~marketfeeder_duckdb.History`
opens the database read-only when it can and falls back to the newest snapshot (plus the Parquet
archive) while the feeder holds the lock.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.to_thread
import attrs
import cattrs
import duckdb
import orjson
import pyarrow as pa

from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookTicker,
    BusCheckpoint,
    Connection,
    Event,
    Gap,
    Kline,
    MarkPrice,
    Ticker,
    Trade,
    ValidationFailure,
)

from . import archive as _archive
from .schema import TABLES, SchemaError, create_views, migrate

__all__ = ["DuckDBOptions", "DuckDBOptionsError", "DuckDBSink", "DuckDBSinkError", "snapshot_path_for"]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Event class -> table. Subclasses map through their first known base (see ``_bucket_for``).
EVENT_TABLES: dict[type[Event], str] = {
    Ticker: "tickers",
    BookTicker: "book_tickers",
    Trade: "trades",
    Kline: "klines",
    BookSnapshot: "book_snapshots",
    BookDelta: "book_deltas",
    MarkPrice: "mark_prices",
    BookState: "book_states",
    Gap: "gaps",
    Connection: "connections",
    ValidationFailure: "validation_failures",
}
OTHER = "other_events"
#: Pending-buffer key of snapshots and deltas: they are converted together, in arrival order.
BOOK = "book"
#: Bucket key of BusCheckpoint: never buffered, it moves the commit boundary (see the module docstring).
CHECKPOINT = "bus_checkpoint"
_CLASS_OF = operator.attrgetter("__class__")
_MAX_PERF = 10_000  # performance snapshots queued between commits
_BID, _ASK = "bid", "ask"
_UPSERT_POSITION = "INSERT OR REPLACE INTO bus_positions VALUES (?, ?, ?, ?, ?)"
#: (source, consumer, stream) -> stream sequence.
Positions = dict[tuple[str, str, str], int]


class DuckDBSinkError(RuntimeError):
    """The database could not be written: the sink has stopped. ``path`` and ``cause`` say why."""

    def __init__(self, path: Path, cause: BaseException | str, *, lost: int = 0) -> None:
        self.path = path
        self.cause = cause
        self.lost = lost
        reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        message = f"duckdb sink {str(path)!r} stopped: {reason}"
        if lost:
            message += f" ({lost} events accepted since the last commit were not stored)"
        super().__init__(message)


class DuckDBOptionsError(ValueError):
    """The sink's options are invalid; the message names the key."""


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class DuckDBOptions:
    """Options of the ``duckdb`` sink (``[[sinks]] type = "duckdb"`` / ``--sink duckdb:FILE``)."""

    #: Database file (``path`` is accepted as an alias).
    target: str
    #: Events buffered before one columnar append.
    batch_size: int = attrs.field(default=10_000, validator=_positive)
    #: Seconds between commits; 0 commits at every write_batch.
    commit_interval: float = attrs.field(default=1.0, validator=_non_negative)
    #: Parquet archive root; None disables archiving.
    archive_dir: str | None = None
    #: Rows whose UTC day is at least this many days old are moved to the archive.
    archive_after_days: float | None = attrs.field(default=None, validator=_non_negative)
    #: Archive partitions older than this many days are deleted.
    retention_days: float | None = attrs.field(default=None, validator=_non_negative)
    #: Seconds between archive/retention runs while writing (one also runs at open).
    archive_interval: float = attrs.field(default=3600.0, validator=_non_negative)
    #: Seconds between read-only snapshot copies for concurrent readers; 0 disables them.
    snapshot_interval: float = attrs.field(default=60.0, validator=_non_negative)
    #: Where the snapshot copy goes (default ``<target>.snapshot``).
    snapshot_path: str | None = None
    #: DuckDB worker threads.
    threads: int = attrs.field(default=1, validator=_positive)
    #: DuckDB memory limit, e.g. "1GB".
    memory_limit: str | None = None
    #: Hold every event until a BusCheckpoint covers it, from the first one (a sink fed only by a bus
    #: source). Otherwise this starts at the first checkpoint, or at open when the file holds positions.
    require_checkpoints: bool = False
    #: Events that may wait for their BusCheckpoint; more stops the sink.
    max_uncheckpointed: int = attrs.field(default=1_000_000, validator=_positive)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> DuckDBOptions:
        data = dict(options)
        if "path" in data:
            if "target" in data and data["target"] != data["path"]:
                raise DuckDBOptionsError("duckdb sink: give the database file as 'target' or 'path', not both")
            data["target"] = data.pop("path")
        if not data.get("target"):
            raise DuckDBOptionsError("duckdb sink: option 'target' (the database file) is required")
        try:
            return _OPTIONS_CONVERTER.structure(data, cls)
        except Exception as exc:
            details = (
                "; ".join(cattrs.transform_error(exc, format_exception=_describe))
                if isinstance(exc, cattrs.BaseValidationError)
                else str(exc)
            )
            raise DuckDBOptionsError(f"duckdb sink options: {details}") from None


_OPTIONS_CONVERTER = cattrs.Converter(forbid_extra_keys=True)


def _describe(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, (TypeError, ValueError)) and type_ is not None:
        return f"invalid value for {getattr(type_, '__name__', type_)}: {exc}"
    return str(exc)


def snapshot_path_for(path: str | os.PathLike[str]) -> Path:
    """Default location of the read-only snapshot of ``path``."""
    return Path(str(path) + ".snapshot")


# --- Arrow conversion ----------------------------------------------------------------------------


def _simple_converter(table: str) -> Callable[[list[Any]], pa.Table]:
    """Converter for a table whose columns are the event's attributes of the same names.

    The function is generated with one list comprehension per column (``[e.price for e in events]``):
    plain attribute access in a comprehension is specialised by CPython and measured ~35% faster here
    than ``map(operator.attrgetter(...))``, and this is the hot path of the sink.
    """
    columns = TABLES[table]
    namespace: dict[str, Any] = {
        "from_arrays": pa.Table.from_arrays,
        "array": pa.array,
        "schema": pa.schema([(c.name, c.arrow) for c in columns]),
    }
    arrays = []
    for i, column in enumerate(columns):
        if not column.name.isidentifier():
            raise ValueError(f"column {column.name!r} of {table} is not an attribute name")
        namespace[f"t{i}"] = column.arrow
        arrays.append(f"array([e.{column.name} for e in events], t{i})")
    source = f"def convert_{table}(events):\n    return from_arrays([{', '.join(arrays)}], schema=schema)\n"
    exec(compile(source, f"<marketfeeder_duckdb converter {table}>", "exec"), namespace)
    convert: Callable[[list[Any]], pa.Table] = namespace[f"convert_{table}"]
    return convert


_LEVEL_COLUMNS = ("snapshot_id", "exchange", "symbol", "exchange_ts", "receive_ts", "seq", "first_seq",
                  "engine_ts", "side", "idx", "price", "size")


def _book_columns(
    events: list[Any], ids: list[int], epochs: dict[tuple[str, str], int]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Level rows of book snapshots and deltas, walked in arrival order.

    Each snapshot takes the next id of ``ids``; each delta is tagged with the id of the latest
    snapshot of its book seen before it (``epochs``), which is the image the feeder applied it to.
    """
    snaps: dict[str, list[Any]] = {name: [] for name in _LEVEL_COLUMNS}
    deltas: dict[str, list[Any]] = {name: [] for name in _LEVEL_COLUMNS}
    next_id = iter(ids).__next__
    for event in events:
        key = (event.exchange, event.symbol)
        sid: int | None
        if isinstance(event, BookSnapshot):
            new_id = next_id()
            epochs[key] = sid = new_id
            cols = snaps
        else:
            sid = epochs.get(key)
            cols = deltas
            cols["first_seq"].append(event.first_seq)
            cols["engine_ts"].append(event.engine_ts)
        bids, asks = event.bids, event.asks
        count = len(bids) + len(asks)
        if not count:  # an empty book image or delta is kept as one level-less row
            cols["side"].append(None)
            cols["idx"].append(None)
            cols["price"].append(None)
            cols["size"].append(None)
        else:
            cols["side"].extend([_BID] * len(bids))
            cols["side"].extend([_ASK] * len(asks))
            cols["idx"].extend(range(len(bids)))
            cols["idx"].extend(range(len(asks)))
            price_col, size_col = cols["price"], cols["size"]
            for price, size in bids:
                price_col.append(price)
                size_col.append(size)
            for price, size in asks:
                price_col.append(price)
                size_col.append(size)
        rows = count or 1
        if rows > 1 and cols is deltas:
            cols["first_seq"].extend([event.first_seq] * (rows - 1))
            cols["engine_ts"].extend([event.engine_ts] * (rows - 1))
        cols["snapshot_id"].extend([sid] * rows)
        cols["exchange"].extend([event.exchange] * rows)
        cols["symbol"].extend([event.symbol] * rows)
        cols["exchange_ts"].extend([event.exchange_ts] * rows)
        cols["receive_ts"].extend([event.receive_ts] * rows)
        cols["seq"].extend([event.seq] * rows)
    return snaps, deltas


def _levels_table(table: str, cols: dict[str, list[Any]]) -> pa.Table:
    columns = TABLES[table]
    return pa.Table.from_arrays(
        [pa.array(cols[c.name], type=c.arrow) for c in columns],
        schema=pa.schema([(c.name, c.arrow) for c in columns]),
    )


def _event_data(event: Any) -> dict[str, Any]:
    if attrs.has(type(event)):
        return {f.name: getattr(event, f.name, None) for f in attrs.fields(type(event))}
    names: list[str] = []
    for klass in type(event).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    data = {name: getattr(event, name, None) for name in names}
    data.update(getattr(event, "__dict__", {}))
    return data


def _json(data: Any) -> str:
    return orjson.dumps(data, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


def _other_table(events: list[Any], *, malformed: bool = False) -> pa.Table:
    def field(event: Any, name: str, kind: type) -> Any:
        value = getattr(event, name, None)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    cols = {
        "event_type": [("malformed:" if malformed else "") + type(e).__name__ for e in events],
        "exchange": [field(e, "exchange", str) for e in events],
        "symbol": [field(e, "symbol", str) for e in events],
        "exchange_ts": [field(e, "exchange_ts", int) for e in events],
        "receive_ts": [field(e, "receive_ts", int) for e in events],
        "seq": [field(e, "seq", int) for e in events],
        "data": [_json(_event_data(e)) for e in events],
    }
    return _levels_table(OTHER, cols)


_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, AttributeError, OverflowError)

_CONVERTERS: dict[str, Callable[[list[Any]], pa.Table]] = {
    table: _simple_converter(table)
    for table in EVENT_TABLES.values()
    if table not in ("book_snapshots", "book_deltas")
}


def _bucket_for(cls: type[Any], cache: dict[type[Any], str]) -> str:
    """Pending-buffer key of an event class: its table, or :data:`BOOK` for book images and deltas."""
    key = cache.get(cls)
    if key is None:
        if issubclass(cls, BusCheckpoint):
            key = CHECKPOINT
        else:
            key = next((EVENT_TABLES[k] for k in cls.__mro__ if k in EVENT_TABLES), OTHER)
            if key in ("book_snapshots", "book_deltas"):
                key = BOOK
        cache[cls] = key
    return key


def _valid_checkpoint(event: Any) -> bool:
    seq = getattr(event, "seq", None)
    return (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq >= 0
        and all(isinstance(getattr(event, name, None), str) for name in ("exchange", "consumer", "symbol"))
    )


# --- the sink ------------------------------------------------------------------------------------


class DuckDBSink:
    """Stores every event in a DuckDB file (see the module docstring for the write path and errors)."""

    def __init__(self, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        self.options = DuckDBOptions.parse({**(options or {}), **kwargs})
        self.path = Path(self.options.target)
        self.snapshot_path = (
            Path(self.options.snapshot_path) if self.options.snapshot_path else snapshot_path_for(self.path)
        )
        self._limiter = anyio.CapacityLimiter(1)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._failed: DuckDBSinkError | None = None
        self._closed = False
        self._pending: dict[str, list[Any]] = {}
        self._epochs: dict[tuple[str, str], int] = {}  # (exchange, symbol) -> latest snapshot id
        self._pending_count = 0
        self._uncommitted = 0  # events appended inside the open transaction
        self._perf: deque[tuple[int, str]] = deque(maxlen=_MAX_PERF)  # bounded: keeps the newest
        self._in_tx = False
        self._bucket_cache: dict[type[Any], str] = {}
        # Bus positions (see "Exactly-once" in the module docstring). On the event loop: whether any
        # checkpoint was seen, the bucket lengths at the last one and the positions it covers.
        self._positioned = False
        self._boundary: dict[str, int] = {}
        self._boundary_count = 0
        self._marks: Positions = {}
        # In the worker thread: positions handed over and not yet committed, written just before COMMIT.
        self._tx_positions: Positions = {}
        self._last_commit = 0.0
        self._last_archive = 0.0
        self._last_snapshot = 0.0
        self._stats: dict[str, int] = {
            "events": 0,
            "rows": 0,
            "appends": 0,
            "commits": 0,
            "malformed": 0,
            "archived_rows": 0,
            "snapshots": 0,
            "checkpoints": 0,
            "malformed_checkpoints": 0,
            "positions_committed": 0,
            "uncheckpointed": 0,
        }
        self._table_rows: dict[str, int] = dict.fromkeys(TABLES, 0)

    # -- public API --------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._con is not None:
            raise RuntimeError(f"duckdb sink {str(self.path)!r} is already open")
        await self._run(self._open_sync)

    async def write_batch(self, events: Sequence[Event]) -> None:
        self._check()
        if self._con is None:
            raise RuntimeError(f"duckdb sink {str(self.path)!r} is not open")
        pending = self._pending
        # Runs of one class (a batch is mostly one type) are moved in C by groupby + extend.
        cache = self._bucket_cache
        count = len(events)
        for cls, run in groupby(events, _CLASS_OF):
            key = cache.get(cls) or _bucket_for(cls, cache)
            if key is CHECKPOINT:
                count -= self._checkpoint(run)
                continue
            bucket = pending.get(key)
            if bucket is None:
                bucket = pending[key] = []
            bucket.extend(run)
        self._pending_count += count
        self._stats["events"] += count
        if self._positioned:
            ready = self._boundary_count
            waiting = self._pending_count - ready
            if waiting > self.options.max_uncheckpointed:
                await self._stop(
                    f"{waiting} events arrived after the last BusCheckpoint (max_uncheckpointed = "
                    f"{self.options.max_uncheckpointed}); a sink fed by a bus source needs a checkpoint "
                    "after every batch"
                )
        else:
            ready = self._pending_count
        now = time.monotonic()
        commit = now - self._last_commit >= self.options.commit_interval
        if commit or ready >= self.options.batch_size:
            await self._run(self._drain_sync, *self._take(), commit)

    async def flush(self) -> None:
        """Commit every pending event (once a BusCheckpoint was seen: every one up to the last)."""
        self._check()
        if self._con is not None:
            await self._run(self._drain_sync, *self._take(), True)

    async def close(self) -> None:
        """Commit and close. Events after the last BusCheckpoint are not written (the bus redelivers
        them after the stored position): they are counted as ``uncheckpointed`` and logged."""
        if self._closed:
            return
        self._closed = True
        if self._failed is not None or self._con is None:
            return
        with anyio.CancelScope(shield=True):
            pending, perf, positions = self._take()
            self._drop_uncheckpointed()
            await self._run(self._close_sync, pending, perf, positions)

    async def bus_positions(self, source: str, consumer: str) -> dict[str, int]:
        """Per stream, the last sequence of ``consumer`` on ``source`` whose events are committed
        (:class:`marketfeeder.source.PositionedSink`). Resume right after it. Pending positions are
        not included: ask before delivering, not while a batch is on its way to the sink.

        Asking binds the sink: whoever asks delivers from after these positions, so from now on only
        checkpoints cover events (those already pending came from elsewhere and stay committable)."""
        self._check()
        if self._con is None:
            raise RuntimeError(f"duckdb sink {str(self.path)!r} is not open")
        if not self._positioned:
            self._positioned = True
            self._boundary = {key: len(bucket) for key, bucket in self._pending.items()}
            self._boundary_count = self._pending_count
        return await self._run(self._positions_sync, source, consumer)

    def record_stats(self, stats: Mapping[str, Any], ts: int | None = None) -> None:
        """Queue a performance snapshot (e.g. ``feeder.get_performance_stats()``) for the next commit."""
        self._perf.append((time.time_ns() if ts is None else ts, _json(dict(stats))))

    async def archive(self, now_ns: int | None = None) -> _archive.ArchiveResult | None:
        """Commit, then run archiving and retention now (None when no ``archive_dir`` is set)."""
        self._check()
        if self.options.archive_dir is None:
            return None
        await self._run(self._drain_sync, *self._take(), True)
        return await self._run(self._archive_sync, time.time_ns() if now_ns is None else now_ns)

    async def snapshot(self) -> Path:
        """Commit and publish the read-only snapshot copy now; return its path."""
        self._check()
        await self._run(self._drain_sync, *self._take(), True)
        await self._run(self._snapshot_sync)
        return self.snapshot_path

    def statistics(self) -> dict[str, Any]:
        return {
            **self._stats,
            "pending": self._pending_count,
            "uncommitted": self._uncommitted,
            "awaiting_checkpoint": self._pending_count - self._boundary_count if self._positioned else 0,
            "tables": dict(self._table_rows),
            "failed": None if self._failed is None else str(self._failed),
        }

    # -- worker-thread side ------------------------------------------------------------------------

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise RuntimeError(f"duckdb sink {str(self.path)!r} is closed")

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
        except (duckdb.Error, OSError, SchemaError) as exc:
            await self._fail(DuckDBSinkError(self.path, exc, lost=self._pending_count + self._uncommitted))

    async def _stop(self, reason: str) -> NoReturn:
        """Stop the sink for ``reason`` after committing what is checkpointed (it stays exactly-once)."""
        await self._run(self._drain_sync, *self._take(), True)
        await self._fail(DuckDBSinkError(self.path, reason, lost=self._pending_count))

    async def _fail(self, error: DuckDBSinkError) -> NoReturn:
        self._failed = error
        self._pending.clear()
        self._pending_count = 0
        self._boundary, self._boundary_count, self._marks = {}, 0, {}
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._abort_sync, limiter=self._limiter)
        raise error from error.cause if isinstance(error.cause, BaseException) else None

    def _abort_sync(self) -> None:
        self._tx_positions.clear()
        con, self._con = self._con, None
        if con is None:
            return
        try:
            if self._in_tx:
                con.rollback()
        except duckdb.Error:
            pass  # an invalidated database refuses even this; the WAL holds only committed data
        finally:
            self._in_tx = False
            try:
                con.close()
            except duckdb.Error:
                pass

    def _open_sync(self) -> None:
        config: dict[str, Any] = {"threads": self.options.threads}
        if self.options.memory_limit:
            config["memory_limit"] = self.options.memory_limit
        con = duckdb.connect(str(self.path), config=config)
        try:
            migrate(con, now_ns=time.time_ns())
            archive_dir = self.options.archive_dir
            if archive_dir is not None:
                Path(archive_dir).mkdir(parents=True, exist_ok=True)
                con.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('archive_dir', ?)", [str(Path(archive_dir).absolute())]
                )
                _archive.recover(con, archive_dir)
            create_views(con, archive_dir)
            # A file that holds positions is fed by a bus: keep its exactly-once contract from the start.
            row = con.execute("SELECT count(*) FROM bus_positions").fetchone()
        except BaseException:
            con.close()
            raise
        self._con = con
        self._positioned = self.options.require_checkpoints or bool(row and row[0])
        now = time.monotonic()
        self._last_commit = now
        self._last_snapshot = now
        if archive_dir is not None and (self.options.archive_after_days is not None or self.options.retention_days is not None):
            self._archive_sync(time.time_ns())

    def _append(self, con: duckdb.DuckDBPyConnection, table: str, batch: pa.Table) -> None:
        if not batch.num_rows:
            return
        con.register("_mf_batch", batch)
        try:
            names = ", ".join(f'"{n}"' for n in batch.column_names)
            con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _mf_batch")
        finally:
            con.unregister("_mf_batch")
        self._stats["rows"] += batch.num_rows
        self._stats["appends"] += 1
        self._table_rows[table] += batch.num_rows

    def _convert(self, con: duckdb.DuckDBPyConnection, key: str, events: list[Any]) -> list[tuple[str, pa.Table]]:
        """Arrow table(s) for one pending bucket; events that do not fit their table's types are
        counted as malformed and kept in other_events."""
        try:
            return self._convert_strict(con, key, events)
        except _CONVERSION_ERRORS:
            pass
        good: list[Any] = []
        bad: list[Any] = []
        for event in events:
            try:
                self._convert_strict(con, key, [event], dry_run=True)
                good.append(event)
            except _CONVERSION_ERRORS:
                bad.append(event)
        self._stats["malformed"] += len(bad)
        out = self._convert_strict(con, key, good) if good else []
        if bad:
            out.append((OTHER, _other_table(bad, malformed=True)))
        return out

    def _convert_strict(
        self, con: duckdb.DuckDBPyConnection, key: str, events: list[Any], *, dry_run: bool = False
    ) -> list[tuple[str, pa.Table]]:
        if key == BOOK:
            count = sum(1 for e in events if isinstance(e, BookSnapshot))
            if dry_run:
                snaps, deltas = _book_columns(events, list(range(count)), dict(self._epochs))
            else:
                epochs = dict(self._epochs)
                ids = self._snapshot_ids(con, count) if count else []
                snaps, deltas = _book_columns(events, ids, epochs)
            out = [
                ("book_snapshots", _levels_table("book_snapshots", snaps)),
                ("book_deltas", _levels_table("book_deltas", deltas)),
            ]
            if not dry_run:
                self._epochs = epochs
            return out
        if key == OTHER:
            return [(OTHER, _other_table(events))]
        return [(key, _CONVERTERS[key](events))]

    @staticmethod
    def _snapshot_ids(con: duckdb.DuckDBPyConnection, count: int) -> list[int]:
        rows = con.execute("SELECT nextval('book_snapshot_ids') FROM range(?)", [count]).fetchall()
        return [int(r[0]) for r in rows]

    def _checkpoint(self, run: Iterable[Any]) -> int:
        """Take a run of BusCheckpoints (on the event loop): each sets its stream's pending position
        and moves the boundary to here. Returns how many events the run held."""
        marks = self._marks
        seen = valid = 0
        for event in run:
            seen += 1
            if _valid_checkpoint(event):
                marks[(event.exchange, event.consumer, event.symbol)] = event.seq
                valid += 1
        self._stats["checkpoints"] += valid
        if valid < seen:
            # Not a boundary: its events wait for the next valid checkpoint, whose position covers them.
            self._stats["malformed_checkpoints"] += seen - valid
            log.warning("duckdb sink %s: %d malformed BusCheckpoint(s) skipped", self.path, seen - valid)
        if valid:
            self._positioned = True
            self._boundary = {key: len(bucket) for key, bucket in self._pending.items()}
            self._boundary_count = sum(self._boundary.values())
        return seen

    def _take(self) -> tuple[dict[str, list[Any]], list[tuple[int, str]], Positions]:
        """Hand the pending events over to a worker call (on the event loop, so nothing races): all of
        them, or once a BusCheckpoint was seen, those up to the last one with the positions they cover."""
        perf, self._perf = list(self._perf), deque(maxlen=_MAX_PERF)
        if not self._positioned:
            pending, self._pending = self._pending, {}
            taken, positions = self._pending_count, {}
        else:
            pending = {}
            rest = self._pending
            for key, length in self._boundary.items():
                bucket = rest[key]
                if length == len(bucket):
                    pending[key] = rest.pop(key)
                elif length:
                    pending[key] = bucket[:length]
                    del bucket[:length]
            taken, positions = self._boundary_count, self._marks
            self._boundary, self._boundary_count, self._marks = {}, 0, {}
        self._uncommitted += taken
        self._pending_count -= taken
        return pending, perf, positions

    def _drop_uncheckpointed(self) -> None:
        """At close: events after the last checkpoint are left to the bus to redeliver."""
        if self._pending_count:
            self._stats["uncheckpointed"] += self._pending_count
            log.warning(
                "duckdb sink %s: %d events after the last BusCheckpoint not written; the bus redelivers "
                "them after the stored position", self.path, self._pending_count,
            )
        self._pending = {}
        self._pending_count = 0

    def _positions_sync(self, source: str, consumer: str) -> dict[str, int]:
        con = self._con
        if con is None:
            raise RuntimeError(f"duckdb sink {str(self.path)!r} is not open")
        # Positions are only written right before a COMMIT, so even inside the open transaction this
        # reads the committed ones.
        rows = con.execute(
            "SELECT stream, seq FROM bus_positions WHERE source = ? AND consumer = ?", [source, consumer]
        ).fetchall()
        return {str(stream): int(seq) for stream, seq in rows}

    def _commit_sync(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the positions the open transaction covers, then commit."""
        marks = self._tx_positions
        if marks:
            now = time.time_ns()
            con.executemany(_UPSERT_POSITION, [(*key, seq, now) for key, seq in marks.items()])
        con.commit()
        self._in_tx = False
        self._uncommitted = 0
        self._stats["commits"] += 1
        self._stats["positions_committed"] += len(marks)
        marks.clear()

    def _drain_sync(
        self, pending: dict[str, list[Any]], perf: list[tuple[int, str]], positions: Positions, commit: bool
    ) -> None:
        con = self._con
        if con is None:
            raise RuntimeError(f"duckdb sink {str(self.path)!r} is not open")
        if positions:
            self._tx_positions.update(positions)
        if pending or perf or positions:
            if not self._in_tx:
                con.begin()
                self._in_tx = True
            for key, events in pending.items():
                for table, batch in self._convert(con, key, events):
                    self._append(con, table, batch)
            if perf:
                self._append(
                    con,
                    "perf_stats",
                    pa.table({"ts": pa.array([p[0] for p in perf], pa.int64()), "stats": [p[1] for p in perf]}),
                )
        if commit:
            if self._in_tx:
                self._commit_sync(con)
            now = time.monotonic()
            self._last_commit = now
            if (
                self.options.archive_dir is not None
                and self.options.archive_interval > 0
                and now - self._last_archive >= self.options.archive_interval
                and (self.options.archive_after_days is not None or self.options.retention_days is not None)
            ):
                self._archive_sync(time.time_ns())
            if self.options.snapshot_interval > 0 and now - self._last_snapshot >= self.options.snapshot_interval:
                self._snapshot_sync()

    def _archive_sync(self, now_ns: int) -> _archive.ArchiveResult | None:
        con = self._con
        archive_dir = self.options.archive_dir
        if con is None or archive_dir is None:
            return None
        if self._in_tx:
            self._commit_sync(con)
        self._last_archive = time.monotonic()
        result: _archive.ArchiveResult | None = None
        if self.options.archive_after_days is not None:
            cutoff = _archive.day_cutoff_ns(now_ns, self.options.archive_after_days)
            result = _archive.archive_tables(con, archive_dir, cutoff)
            self._stats["archived_rows"] += result.total_rows
        removed: tuple[str, ...] = ()
        if self.options.retention_days is not None:
            keep_from = _archive.retention_start(now_ns, self.options.retention_days)
            removed = tuple(_archive.apply_retention(archive_dir, keep_from))
            if removed:
                create_views(con, archive_dir)
        if result is None:
            result = _archive.ArchiveResult(run_id="", cutoff_ts=0, rows={}, files=0)
        return attrs.evolve(result, removed_partitions=removed)

    def _snapshot_sync(self) -> None:
        con = self._con
        if con is None:
            return
        target = self.snapshot_path
        partial = target.with_name(target.name + ".partial")
        for leftover in (partial, partial.with_name(partial.name + ".wal")):
            leftover.unlink(missing_ok=True)
        # DuckDB copies its own committed state. Copying the file with Python would open and close a
        # second descriptor of it, and closing any descriptor drops this process's POSIX lock on it.
        row = con.execute("SELECT current_database()").fetchone()
        assert row is not None
        source = '"' + str(row[0]).replace('"', '""') + '"'
        con.execute("ATTACH " + "'" + str(partial).replace("'", "''") + "' AS mf_snapshot")
        try:
            con.execute(f"COPY FROM DATABASE {source} TO mf_snapshot")
        finally:
            con.execute("DETACH mf_snapshot")
        os.replace(partial, target)
        self._last_snapshot = time.monotonic()
        self._stats["snapshots"] += 1

    def _close_sync(self, pending: dict[str, list[Any]], perf: list[tuple[int, str]], positions: Positions) -> None:
        self._drain_sync(pending, perf, positions, True)
        if self.options.snapshot_interval > 0 and self.snapshot_path.exists():
            # A reader falls back to the snapshot only while the file is locked, but a stale copy
            # left behind would mislead whoever opens it directly: bring it up to date.
            self._snapshot_sync()
        con, self._con = self._con, None
        if con is not None:
            con.execute("CHECKPOINT")
            con.close()
