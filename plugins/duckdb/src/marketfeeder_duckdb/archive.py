"""Rotation of old rows into partitioned Parquet, and retention of the archive.

Layout: ``<archive_dir>/<table>/exchange=<x>/date=<YYYY-MM-DD>/part_<uuid>.parquet`` (the date is the
UTC day of ``receive_ts``), written by DuckDB's ``COPY ... (FORMAT PARQUET, PARTITION_BY (exchange,
date))``. The ``all_<table>`` views read these files back with ``hive_partitioning``.

Crash safety: a run first writes its files into ``<archive_dir>/.staging/<run_id>/``, then deletes the
archived rows from the live tables and records ``run_id`` in ``archive_runs`` in ONE transaction, and
only then moves the staged files into place. :func:`recover` (run by the sink at open) finishes a run
whose transaction committed and discards the files of one that did not, so a crash at any point
leaves every row exactly once: either live, or in the archive.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from pathlib import Path

import attrs
import duckdb

from .schema import ARCHIVED_TABLES, TABLES, create_views

__all__ = ["ArchiveResult", "apply_retention", "archive_tables", "day_cutoff_ns", "recover"]

_NS_PER_DAY = 86_400 * 1_000_000_000
STAGING = ".staging"


@attrs.frozen
class ArchiveResult:
    run_id: str
    cutoff_ts: int  # rows with receive_ts below this were archived
    rows: dict[str, int]  # table -> rows moved
    files: int
    removed_partitions: tuple[str, ...] = ()

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def day_cutoff_ns(now_ns: int, older_than_days: float) -> int:
    """Start of the UTC day ``older_than_days`` before ``now``: whole days are archived at once."""
    cutoff = now_ns - int(older_than_days * _NS_PER_DAY)
    return cutoff - cutoff % _NS_PER_DAY


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def archive_tables(
    con: duckdb.DuckDBPyConnection,
    archive_dir: str | os.PathLike[str],
    cutoff_ns: int,
    *,
    tables: tuple[str, ...] = ARCHIVED_TABLES,
) -> ArchiveResult:
    """Move rows with ``receive_ts < cutoff_ns`` from the live tables into the Parquet archive.

    Must run outside a transaction (the caller commits first). Refreshes the ``all_*`` views.
    """
    root = Path(archive_dir).absolute()
    run_id = uuid.uuid4().hex
    staging = root / STAGING / run_id
    staging.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    try:
        for table in tables:
            count_row = con.execute(f"SELECT count(*) FROM {table} WHERE receive_ts < ?", [cutoff_ns]).fetchone()
            count = int(count_row[0]) if count_row else 0
            if not count:
                continue
            names = ", ".join(f'"{c.name}"' for c in TABLES[table])
            target = _sql_literal(str(staging / table))
            con.execute(
                f"COPY (SELECT {names}, CAST(make_timestamp_ns(receive_ts) AS DATE) AS date FROM {table} "
                f"WHERE receive_ts < {int(cutoff_ns)}) TO {target} "
                "(FORMAT PARQUET, PARTITION_BY (exchange, date), FILENAME_PATTERN 'part_{uuid}')"
            )
            rows[table] = count
        con.execute("BEGIN TRANSACTION")
        try:
            for table in rows:
                con.execute(f"DELETE FROM {table} WHERE receive_ts < ?", [cutoff_ns])
            con.execute(
                "INSERT INTO archive_runs VALUES (?, ?, ?, NULL)", [run_id, cutoff_ns, sum(rows.values())]
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = _publish(con, root, run_id)
    create_views(con, root)
    return ArchiveResult(run_id=run_id, cutoff_ts=cutoff_ns, rows=rows, files=files)


def _publish(con: duckdb.DuckDBPyConnection, root: Path, run_id: str) -> int:
    """Move a committed run's staged files into the archive tree."""
    staging = root / STAGING / run_id
    moved = 0
    for path in sorted(staging.rglob("*.parquet")):
        destination = root / path.relative_to(staging)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
        moved += 1
    shutil.rmtree(staging, ignore_errors=True)
    con.execute("UPDATE archive_runs SET finished_ts = ? WHERE run_id = ?", [time.time_ns(), run_id])
    return moved


def recover(con: duckdb.DuckDBPyConnection, archive_dir: str | os.PathLike[str]) -> list[str]:
    """Finish or discard runs interrupted by a crash; return the run ids that were finished."""
    root = Path(archive_dir).absolute()
    staging_root = root / STAGING
    if not staging_root.is_dir():
        return []
    committed = {str(r[0]) for r in con.execute("SELECT run_id FROM archive_runs").fetchall()}
    finished = []
    for run_dir in sorted(staging_root.iterdir()):
        if run_dir.name in committed:
            _publish(con, root, run_dir.name)
            finished.append(run_dir.name)
        else:  # its DELETE never committed: the rows are still live
            shutil.rmtree(run_dir, ignore_errors=True)
    return finished


def apply_retention(archive_dir: str | os.PathLike[str], keep_from: dt.date) -> list[str]:
    """Delete archive partitions dated before ``keep_from``; return their paths."""
    root = Path(archive_dir)
    removed = []
    for table in TABLES:
        for partition in sorted((root / table).glob("exchange=*/date=*")):
            try:
                day = dt.date.fromisoformat(partition.name.removeprefix("date="))
            except ValueError:
                continue  # not ours
            if day < keep_from:
                shutil.rmtree(partition)
                removed.append(str(partition))
                parent = partition.parent
                if not any(parent.iterdir()):
                    parent.rmdir()
    return removed


def retention_start(now_ns: int, retention_days: float) -> dt.date:
    """First UTC day kept when partitions older than ``retention_days`` are deleted."""
    cutoff = day_cutoff_ns(now_ns, retention_days)
    return dt.datetime.fromtimestamp(cutoff / 1e9, tz=dt.UTC).date()
