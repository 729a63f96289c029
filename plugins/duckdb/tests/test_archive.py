from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import duckdb
import pytest
from duckdb_helpers import SEC, trade

from marketfeeder.models import BookDelta, BookSnapshot, Event, Trade
from marketfeeder_duckdb import DuckDBSink, History
from marketfeeder_duckdb.archive import STAGING

pytestmark = pytest.mark.anyio

DAY = 86_400 * SEC
NOW = 1_767_225_600 * SEC + 12 * 3600 * SEC  # 2026-01-01 12:00 UTC
DAY0 = NOW - NOW % DAY - 4 * DAY  # 2025-12-28 00:00 UTC


def _events() -> list[Event]:
    """Five days of trades on two exchanges, and a book whose snapshot is older than its deltas."""
    events: list[Event] = []
    for day in range(5):
        for i in range(4):
            n = day * 10 + i
            events.append(trade(n, exchange="binance" if i % 2 else "backpack", ts=DAY0 + day * DAY + i * 3600 * SEC))
    events.append(BookSnapshot.fast("binance", "BTC-USDT", None, DAY0 + 1 * DAY, 10, ((99.0, 1.0),), ((101.0, 1.0),)))
    events.append(BookDelta.fast("binance", "BTC-USDT", None, DAY0 + 3 * DAY, 11, 11, ((99.5, 2.0),), (), None))
    events.sort(key=lambda e: e.receive_ts)
    return events


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)).rsplit("/", 1)[0] for p in root.rglob("*.parquet"))


async def _sink(path: Path, archive: Path, **options: object) -> DuckDBSink:
    sink = DuckDBSink({"target": str(path), "archive_dir": str(archive), "snapshot_interval": 0, **options})
    await sink.open()
    return sink


async def test_old_days_move_to_partitioned_parquet_and_queries_see_both(tmp_path: Path) -> None:
    path, archive = tmp_path / "db.duckdb", tmp_path / "archive"
    events = _events()
    sink = await _sink(path, archive, archive_after_days=2)
    await sink.write_batch(events)
    with History(await sink.snapshot()) as before_history:
        book_before = before_history.book_at("binance", "BTC-USDT", DAY0 + 4 * DAY)
    result = await sink.archive(now_ns=NOW)
    assert result is not None
    # Whole UTC days older than 2 days before NOW: 2025-12-28 and -29 (and the snapshot of the 29th).
    assert result.cutoff_ts == DAY0 + 2 * DAY
    assert result.rows == {"trades": 8, "book_snapshots": 2}
    await sink.close()

    assert sorted(set(_files(archive))) == [
        "book_snapshots/exchange=binance/date=2025-12-29",
        "trades/exchange=backpack/date=2025-12-28",
        "trades/exchange=backpack/date=2025-12-29",
        "trades/exchange=binance/date=2025-12-28",
        "trades/exchange=binance/date=2025-12-29",
    ]
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM trades").fetchone() == (12,)  # live: the 3 newest days
    assert con.execute("SELECT count(*) FROM all_trades").fetchone() == (20,)  # persistent view: live + archive
    con.close()

    expected = sorted(e.seq for e in events if isinstance(e, Trade) and e.exchange == "binance" and e.seq is not None)
    with History(path) as history:
        assert history.archive_dir == archive.absolute()
        got = history.trades("binance", "BTC-USDT").column("seq").to_pylist()
        assert got == expected
        days = history.sql("SELECT DISTINCT CAST(receive_time AS DATE) AS d FROM all_trades ORDER BY 1")
        assert days.column("d").to_pylist() == [dt.date(2025, 12, 28 + i) for i in range(4)] + [dt.date(2026, 1, 1)]
        assert history.book_at("binance", "BTC-USDT", DAY0 + 4 * DAY) == book_before == ([(99.5, 2.0), (99.0, 1.0)], [(101.0, 1.0)])
        assert sum(history.ohlcv("binance", "BTC-USDT", "1d").column("trade_count").to_pylist()) == 10


async def test_retention_deletes_old_partitions(tmp_path: Path) -> None:
    path, archive = tmp_path / "db.duckdb", tmp_path / "archive"
    sink = await _sink(path, archive, archive_after_days=1, retention_days=3)
    await sink.write_batch(_events())
    result = await sink.archive(now_ns=NOW)
    assert result is not None
    assert result.total_rows == 14  # trades of 4 days + the snapshot
    # Keep from 2025-12-29 (3 days before NOW's day): the 28th goes.
    assert sorted(Path(p).name for p in result.removed_partitions) == ["date=2025-12-28", "date=2025-12-28"]
    await sink.close()
    with History(path) as history:
        days = history.sql("SELECT DISTINCT CAST(receive_time AS DATE) AS d FROM all_trades ORDER BY 1")
        assert days.column("d").to_pylist()[0] == dt.date(2025, 12, 29)
        assert history.sql("SELECT count(*) AS n FROM all_trades").column("n").to_pylist() == [16]


async def test_archiving_runs_at_open_and_appends_to_existing_partitions(tmp_path: Path) -> None:
    path, archive = tmp_path / "db.duckdb", tmp_path / "archive"
    sink = await _sink(path, archive)
    await sink.write_batch([trade(i, ts=DAY0 + i * SEC) for i in range(3)])
    await sink.close()
    # Reopened with archiving on: everything is years old relative to the wall clock.
    sink = await _sink(path, archive, archive_after_days=1)
    await sink.write_batch([trade(i, ts=DAY0 + i * SEC) for i in range(3, 5)])
    await sink.archive()
    await sink.close()
    assert len(list((archive / "trades/exchange=binance/date=2025-12-28").glob("*.parquet"))) == 2
    with History(path) as history:
        assert history.trades("binance", "BTC-USDT").column("seq").to_pylist() == list(range(5))
        assert history.sql("SELECT count(*) AS n FROM trades").column("n").to_pylist() == [0]


async def test_interrupted_runs_are_finished_or_discarded_at_open(tmp_path: Path) -> None:
    path, archive = tmp_path / "db.duckdb", tmp_path / "archive"
    sink = await _sink(path, archive)
    await sink.write_batch([trade(i, ts=DAY0 + i * SEC) for i in range(4)])
    result = await sink.archive(now_ns=NOW)  # archive_after_days unset: nothing moves
    assert result is not None and result.total_rows == 0
    await sink.close()

    # Build, with a real run, the state a crash leaves after the commit but before the files moved.
    sink = await _sink(path, archive, archive_after_days=1)
    await sink.close()
    con = duckdb.connect(str(path))
    (run_id,) = con.execute("SELECT run_id FROM archive_runs").fetchone() or ("",)
    con.close()
    staged = archive / STAGING / run_id
    for file in list(archive.rglob("*.parquet")):
        target = staged / file.relative_to(archive)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
    shutil.rmtree(archive / "trades")
    # And a run whose transaction never committed: its files must not show up.
    stray = archive / STAGING / "deadbeef" / "trades" / "exchange=binance" / "date=2025-12-28"
    stray.mkdir(parents=True)
    shutil.copy(next(staged.rglob("*.parquet")), stray / "part_x.parquet")

    with History(path) as history:  # before recovery: the rows are in neither place
        assert history.trades("binance", "BTC-USDT").num_rows == 0
    sink = await _sink(path, archive)
    await sink.close()
    assert not (archive / STAGING).exists() or not any((archive / STAGING).iterdir())
    with History(path) as history:
        assert history.trades("binance", "BTC-USDT").column("seq").to_pylist() == list(range(4))
