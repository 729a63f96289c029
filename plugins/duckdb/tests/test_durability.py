"""Crash, full-disk and locked-file behaviour, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from duckdb_helpers import trade

from marketfeeder_duckdb import DuckDBSink, DuckDBSinkError, History, HistoryError
from marketfeeder_duckdb.cli import query_command

WRITER = Path(__file__).with_name("writer_proc.py")
BATCH = 1000


def _start_writer(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(db), "--batch", str(BATCH), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _committed_lines(proc: subprocess.Popen[str], wanted: int) -> Iterator[int]:
    assert proc.stdout is not None
    seen = 0
    while seen < wanted:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"writer ended early: {proc.stderr.read() if proc.stderr else ''}")
        kind, *rest = line.split()
        assert kind == "committed", line
        seen = int(rest[0])
        yield seen


def _stored_seqs(db: Path) -> list[int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT seq FROM trades ORDER BY seq").fetchall()]
    finally:
        con.close()


def test_kill_9_keeps_every_committed_batch(tmp_path: Path) -> None:
    db = tmp_path / "market.duckdb"
    proc = _start_writer(db)
    try:
        committed = list(_committed_lines(proc, 5))[-1]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    seqs = _stored_seqs(db)
    # Every batch reported committed is there, complete; a batch in flight is all there or absent.
    assert len(seqs) >= committed * BATCH
    assert len(seqs) % BATCH == 0
    assert seqs == list(range(len(seqs)))


def test_full_disk_stops_the_sink_with_a_clear_error_and_keeps_committed_data(tmp_path: Path) -> None:
    db = tmp_path / "market.duckdb"
    proc = _start_writer(db, "--fsize", str(2_000_000))
    out, err = proc.communicate(timeout=100)
    lines = out.splitlines()
    assert proc.returncode == 3, err
    assert lines[-1].startswith("error duckdb sink"), lines[-1]
    assert str(db) in lines[-1]
    assert "File too large" in lines[-1] or "No space" in lines[-1]
    committed = int(lines[-2].split()[1])
    assert committed > 0
    seqs = _stored_seqs(db)
    assert seqs == list(range(committed * BATCH))


@pytest.fixture
def held_database(tmp_path: Path) -> Iterator[Path]:
    """A database with 3 committed trades, opened for writing by another process."""
    db = tmp_path / "held.duckdb"
    con = duckdb.connect(str(db))
    con.close()
    import anyio

    async def seed() -> None:
        sink = DuckDBSink({"target": str(db), "snapshot_interval": 0})
        await sink.open()
        await sink.write_batch([trade(i) for i in range(3)])
        await sink.close()

    anyio.run(seed)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "ready"
    yield db
    holder.kill()
    holder.communicate(timeout=30)


@pytest.mark.anyio
async def test_locked_file_is_a_clear_error(held_database: Path) -> None:
    sink = DuckDBSink({"target": str(held_database), "snapshot_interval": 0})
    with pytest.raises(DuckDBSinkError) as info:
        await sink.open()
    assert str(held_database) in str(info.value)
    assert "lock" in str(info.value).lower()
    assert info.value.path == held_database
    with pytest.raises(DuckDBSinkError):  # the sink stays stopped
        await sink.write_batch([trade(9)])
    await sink.close()  # quiet after a failure


def test_history_refuses_a_held_file_without_snapshot(held_database: Path) -> None:
    with pytest.raises(HistoryError, match="snapshot"):
        History(held_database)


@pytest.mark.anyio
async def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    target = blocker / "market.duckdb"
    sink = DuckDBSink({"target": str(target), "snapshot_interval": 0})
    with pytest.raises(DuckDBSinkError, match="not-a-dir"):
        await sink.open()
    await sink.close()


def test_reading_while_the_feeder_writes_uses_its_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "live.duckdb"
    proc = _start_writer(db, "--snapshot-interval", "0.05")
    try:
        committed = list(_committed_lines(proc, 4))[-1]
        snapshot = Path(str(db) + ".snapshot")
        for _ in _committed_lines(proc, committed + 200):
            if snapshot.exists():
                break
        assert snapshot.exists()
        with History(db) as history:
            assert history.source == "snapshot"
            assert history.snapshot_time is not None
            seqs = history.sql("SELECT seq FROM all_trades ORDER BY seq").column("seq").to_pylist()
        assert seqs and len(seqs) % BATCH == 0
        assert seqs == list(range(len(seqs)))
        # The query command reads the same way, and says so.
        result = CliRunner().invoke(query_command, ["select count(*) as n from trades", "--db", str(db), "--format", "json"])
        assert result.exit_code == 0, result.output
        assert "is being written; reading its snapshot" in result.stderr
        assert json.loads(result.stdout)[0]["n"] % BATCH == 0
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert os.path.exists(db)
