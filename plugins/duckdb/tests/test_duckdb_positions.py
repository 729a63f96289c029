"""Exactly-once storage from a message bus: BusCheckpoint positions committed with their rows.

Trades stand for bus messages: a trade's ``seq`` is its stream sequence and its ``symbol`` the
stream, so "the rows of a stream are exactly those up to its stored position" is
``seqs == [1, ..., position]``, which also rules out duplicates.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
from duckdb_helpers import T0, trade
from hypothesis import given, settings
from hypothesis import strategies as st

import marketfeeder_duckdb.plugin
from marketfeeder import Feeder
from marketfeeder.hookspecs import hookimpl
from marketfeeder.models import BookDelta, BookSnapshot, BusCheckpoint, Event, Ticker
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.source import Ingest, PositionedSink
from marketfeeder_duckdb import DuckDBOptionsError, DuckDBSink, DuckDBSinkError
from marketfeeder_duckdb.schema import SCHEMA_VERSION, migrate, schema_version

SOURCE, CONSUMER = "nats", "durable"
STREAMS = ("MD_A", "MD_B", "MD_C")
WRITER = Path(__file__).with_name("positions_writer_proc.py")


def cp(stream: str, seq: int, count: int = 0, *, consumer: str = CONSUMER, source: str = SOURCE) -> BusCheckpoint:
    event: BusCheckpoint = BusCheckpoint.fast(source, stream, None, T0, seq, consumer, count)
    return event


def batch(stream: str, first: int, last: int) -> list[Event]:
    """Stream sequences ``first..last`` as one delivered batch: the trades, then their checkpoint."""
    return [*(trade(s, symbol=stream) for s in range(first, last + 1)), cp(stream, last, last - first + 1)]


def stored_seqs(db: Path, stream: str) -> list[int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT seq FROM trades WHERE symbol = ? ORDER BY seq", [stream]).fetchall()]
    finally:
        con.close()


def stored_positions(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT stream, seq FROM bus_positions WHERE source = ? AND consumer = ?", [SOURCE, CONSUMER]
        ).fetchall()
        return {str(stream): int(seq) for stream, seq in rows}
    finally:
        con.close()


def assert_consistent(db: Path) -> dict[str, int]:
    """Every stream's rows are exactly its sequences up to its stored position; returns the positions."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT stream, seq FROM bus_positions WHERE source = ? AND consumer = ?", [SOURCE, CONSUMER]
        ).fetchall()
        positions = {str(stream): int(seq) for stream, seq in rows}
        for stream in STREAMS:
            seqs = [r[0] for r in con.execute("SELECT seq FROM trades WHERE symbol = ? ORDER BY seq", [stream]).fetchall()]
            assert seqs == list(range(1, positions.get(stream, 0) + 1)), (stream, positions)
    finally:
        con.close()
    return positions


def crash(sink: DuckDBSink) -> None:
    """What ``kill -9`` leaves: the open transaction never commits. Closing the connection under the
    sink rolls it back (``test_kill_9_between_commits_...`` does it with a real process)."""
    con = sink._con
    assert con is not None
    con.close()


def _sink(db: Path, **options: Any) -> DuckDBSink:
    return DuckDBSink({"target": str(db), "snapshot_interval": 0, **options})


# --- behaviour ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_positions_are_committed_with_their_rows(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db)
    positioned: PositionedSink = sink  # the core's protocol, statically and at run time
    assert isinstance(positioned, PositionedSink)
    await sink.open()
    assert await sink.bus_positions(SOURCE, CONSUMER) == {}
    await sink.write_batch([*batch("MD_A", 1, 5), *batch("MD_B", 1, 3)])
    await sink.flush()
    assert await sink.bus_positions(SOURCE, CONSUMER) == {"MD_A": 5, "MD_B": 3}
    assert await sink.bus_positions(SOURCE, "other") == {}
    assert await sink.bus_positions("kafka", CONSUMER) == {}
    stats = sink.statistics()
    assert (stats["events"], stats["checkpoints"], stats["positions_committed"]) == (8, 2, 2)
    await sink.close()

    assert stored_seqs(db, "MD_A") == [1, 2, 3, 4, 5]
    assert stored_seqs(db, "MD_B") == [1, 2, 3]
    con = duckdb.connect(str(db), read_only=True)
    try:
        # Checkpoints are positions, not rows of any event table.
        assert con.execute("SELECT count(*) FROM other_events").fetchone() == (0,)
        rows = con.execute("SELECT source, consumer, stream, seq, committed_ns FROM bus_positions ORDER BY stream").fetchall()
    finally:
        con.close()
    assert [r[:4] for r in rows] == [(SOURCE, CONSUMER, "MD_A", 5), (SOURCE, CONSUMER, "MD_B", 3)]
    assert all(r[4] > T0 for r in rows)


@pytest.mark.anyio
async def test_events_after_the_last_checkpoint_are_never_appended_nor_committed(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db, commit_interval=1e9, batch_size=1)
    await sink.open()
    await sink.write_batch([*batch("MD_A", 1, 2), trade(3, symbol="MD_A"), trade(4, symbol="MD_A")])
    # batch_size 1 appends at once, but only what the checkpoint covers goes into the transaction.
    stats = sink.statistics()
    assert (stats["rows"], stats["pending"], stats["awaiting_checkpoint"]) == (2, 2, 2)
    await sink.flush()
    assert await sink.bus_positions(SOURCE, CONSUMER) == {"MD_A": 2}
    await sink.write_batch([trade(5, symbol="MD_A")])
    await sink.flush()
    assert await sink.bus_positions(SOURCE, CONSUMER) == {"MD_A": 2}
    assert sink.statistics()["rows"] == 2
    await sink.close()
    # Written now they would be stored twice: the bus redelivers them after position 2.
    assert sink.statistics()["uncheckpointed"] == 3
    assert assert_consistent(db) == {"MD_A": 2}


@pytest.mark.anyio
async def test_the_next_checkpoint_commits_the_waiting_events(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db, commit_interval=0)
    await sink.open()
    run = batch("MD_A", 1, 6)
    await sink.write_batch(run[:4])  # the runner cut the delivered batch in two
    assert await sink.bus_positions(SOURCE, CONSUMER) == {}
    await sink.write_batch(run[4:])
    assert await sink.bus_positions(SOURCE, CONSUMER) == {"MD_A": 6}
    await sink.close()
    assert sink.statistics()["uncheckpointed"] == 0
    assert assert_consistent(db) == {"MD_A": 6}


@pytest.mark.anyio
async def test_boundary_cuts_every_table_where_the_checkpoint_was(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db, commit_interval=1e9)
    await sink.open()
    snap = BookSnapshot.fast("binance", "BTC-USDT", None, T0 + 1, 100, ((99.0, 1.0),), ((101.0, 1.0),))
    delta = BookDelta.fast("binance", "BTC-USDT", None, T0 + 3, 101, 101, ((99.0, 2.0),), (), None)
    ticker = Ticker.fast("binance", "BTC-USDT", None, T0 + 4, 7, 100.0, 99.0, 1.0, 101.0, 1.0,
                         None, None, None, None, None, None, None, None, None)
    await sink.write_batch([trade(1, symbol="MD_A"), snap, cp("MD_A", 2, 2), delta, ticker, trade(3, symbol="MD_A")])
    await sink.flush()
    assert sink.statistics()["tables"] == {**dict.fromkeys(sink.statistics()["tables"], 0), "trades": 1,
                                           "book_snapshots": 2}
    await sink.write_batch([cp("MD_A", 3, 3)])
    await sink.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM tickers").fetchone() == (1,)
        # The delta, appended in a later transaction, still points at the image it was applied to.
        (snapshot_id,) = {r[0] for r in con.execute("SELECT snapshot_id FROM book_snapshots").fetchall()}
        assert con.execute("SELECT snapshot_id FROM book_deltas").fetchall() == [(snapshot_id,)]
    finally:
        con.close()
    assert stored_seqs(db, "MD_A") == [1, 3]  # 2 is the book image
    assert stored_positions(db) == {"MD_A": 3}


@pytest.mark.anyio
async def test_reopened_file_answers_its_positions_and_stays_positioned(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db)
    await sink.open()
    await sink.write_batch([*batch("MD_A", 1, 4), *batch("MD_B", 1, 2)])
    await sink.close()

    sink = _sink(db, commit_interval=0)
    await sink.open()
    # No checkpoint yet in this run and nobody asked, but the file is fed by a bus: these wait.
    await sink.write_batch([trade(5, symbol="MD_A"), trade(6, symbol="MD_A")])
    assert await sink.bus_positions(SOURCE, CONSUMER) == {"MD_A": 4, "MD_B": 2}
    await sink.close()
    assert sink.statistics()["uncheckpointed"] == 2
    assert assert_consistent(db) == {"MD_A": 4, "MD_B": 2}


@pytest.mark.anyio
async def test_a_source_asking_for_positions_binds_a_new_file_from_its_first_event(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db, commit_interval=1e9)
    await sink.open()
    await sink.write_batch([trade(1, symbol="BTC-USDT")])  # from an exchange, before the source started
    assert await sink.bus_positions(SOURCE, CONSUMER) == {}
    # The source's first batch, cut by the sink runner before its checkpoint, then the process stops.
    await sink.write_batch([trade(s, symbol="MD_A") for s in (1, 2)])
    await sink.flush()
    await sink.close()
    assert sink.statistics()["uncheckpointed"] == 2
    assert stored_seqs(db, "BTC-USDT") == [1]
    assert assert_consistent(db) == {}


@pytest.mark.anyio
async def test_a_sink_that_never_saw_a_checkpoint_writes_everything(tmp_path: Path) -> None:
    db = tmp_path / "plain.duckdb"
    sink = _sink(db, commit_interval=1e9)
    await sink.open()
    await sink.write_batch([trade(i) for i in range(5)])
    await sink.close()
    assert sink.statistics()["uncheckpointed"] == 0
    assert stored_seqs(db, "BTC-USDT") == [0, 1, 2, 3, 4]


@pytest.mark.anyio
async def test_require_checkpoints_holds_even_the_first_batch(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db, commit_interval=0, require_checkpoints=True)
    await sink.open()
    await sink.write_batch([trade(1, symbol="MD_A"), trade(2, symbol="MD_A")])
    await sink.close()
    assert sink.statistics()["uncheckpointed"] == 2
    assert assert_consistent(db) == {}


@pytest.mark.anyio
async def test_malformed_checkpoint_is_counted_and_is_no_boundary(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db, commit_interval=0)
    await sink.open()
    await sink.write_batch([*batch("MD_A", 1, 2)])
    bad = BusCheckpoint.fast(SOURCE, "MD_A", None, T0, "3", CONSUMER, 1)  # seq is not an int
    await sink.write_batch([trade(3, symbol="MD_A"), bad])
    assert sink.statistics()["malformed_checkpoints"] == 1
    assert await sink.bus_positions(SOURCE, CONSUMER) == {"MD_A": 2}
    await sink.write_batch(batch("MD_A", 4, 4))  # the next good one covers 3 as well
    assert await sink.bus_positions(SOURCE, CONSUMER) == {"MD_A": 4}
    await sink.close()
    assert assert_consistent(db) == {"MD_A": 4}


@pytest.mark.anyio
async def test_a_feed_that_stops_checkpointing_stops_the_sink_after_committing_what_is_covered(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bus.duckdb"
    sink = _sink(db, commit_interval=1e9, max_uncheckpointed=5)
    await sink.open()
    await sink.write_batch(batch("MD_A", 1, 3))
    await sink.write_batch([trade(s, symbol="MD_A") for s in range(4, 9)])  # 5 waiting: still fine
    with pytest.raises(DuckDBSinkError, match="max_uncheckpointed"):
        await sink.write_batch([trade(9, symbol="MD_A")])
    with pytest.raises(DuckDBSinkError):
        await sink.write_batch(batch("MD_A", 10, 10))
    await sink.close()
    assert assert_consistent(db) == {"MD_A": 3}


def test_bad_position_options_name_the_key() -> None:
    with pytest.raises(DuckDBOptionsError, match="max_uncheckpointed"):
        DuckDBSink({"target": "x.duckdb", "max_uncheckpointed": 0})


@pytest.mark.anyio
async def test_a_file_of_the_previous_schema_gets_the_positions_table(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    assert migrate(con, target=2) == 2
    con.execute("INSERT INTO trades VALUES ('binance', 'MD_A', 1, 2, 1, 100.5, 0.1, 'buy', 1)")
    con.close()
    sink = _sink(db)
    await sink.open()
    assert await sink.bus_positions(SOURCE, CONSUMER) == {}
    await sink.write_batch(batch("MD_A", 2, 3))
    await sink.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert schema_version(con) == SCHEMA_VERSION == 3
    finally:
        con.close()
    assert stored_seqs(db, "MD_A") == [1, 2, 3]
    assert stored_positions(db) == {"MD_A": 3}


# --- crashes --------------------------------------------------------------------------------------


def _start_writer(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(db), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        yield line.strip()
    raise AssertionError(f"writer ended early: {proc.stderr.read() if proc.stderr else ''}")


def _run_and_kill(db: Path, *args: str, writes: int) -> dict[str, int]:
    """Start a writer, let it make ``writes`` write_batch calls, ``kill -9`` it; returns where it resumed."""
    proc = _start_writer(db, *args)
    try:
        lines = _lines(proc)
        kind, *fields = next(lines).split()
        assert kind == "resumed"
        resumed = {k: int(v) for k, v in (f.split("=") for f in fields)}
        for line in lines:
            if int(line.split()[1]) >= writes:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return resumed


def test_kill_9_between_commits_leaves_rows_and_positions_consistent(tmp_path: Path) -> None:
    db = tmp_path / "bus.duckdb"
    _run_and_kill(db, "--seed", "1", "--require-checkpoints", writes=40)
    first = assert_consistent(db)
    assert first and sum(first.values()) > 0

    # The next process resumes right after what was committed (the file keeps it positioned).
    assert _run_and_kill(db, "--seed", "2", writes=40) == {s: first.get(s, 0) for s in STREAMS}
    second = assert_consistent(db)
    assert all(second.get(s, 0) >= first.get(s, 0) for s in STREAMS)
    assert sum(second.values()) > sum(first.values())

    # A clean run to the end: still exactly the checkpointed rows, nothing stored twice.
    proc = _start_writer(db, "--seed", "3", "--rounds", "30")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "resumed " + " ".join(f"{s}={second.get(s, 0)}" for s in STREAMS)
    assert lines[-1].startswith("closed ")
    third = assert_consistent(db)
    assert sum(third.values()) > sum(second.values())


# --- property -------------------------------------------------------------------------------------

_DELIVER = st.tuples(st.just("deliver"), st.sampled_from(STREAMS), st.integers(0, 5))
_WRITE = st.tuples(st.just("write"), st.integers(1, 12))
# Reopening costs most of an example's time: one op in eight is a crash or a clean restart.
_OPS = st.lists(
    st.one_of(_DELIVER, _DELIVER, _DELIVER, _WRITE, _WRITE, _WRITE, st.just(("flush",)),
              st.sampled_from([("crash",), ("restart",)])),
    max_size=24,
)


class _Bus:
    """The bus and the feeder in front of the sink: delivered batches queue up in bus order and reach
    the sink in ``write_batch`` calls cut anywhere; a restart redelivers from each position + 1."""

    def __init__(self, positions: dict[str, int]) -> None:
        self.resume(positions)

    def resume(self, positions: dict[str, int]) -> None:
        self.committed = dict(positions)
        self.following = {s: positions.get(s, 0) + 1 for s in STREAMS}
        self.queue: list[Event] = []
        self.seen: dict[str, int] = {}  # the last checkpoint of each stream handed to the sink
        self.after_checkpoint = 0  # events handed to the sink after the last checkpoint

    def deliver(self, stream: str, count: int) -> None:
        first = self.following[stream]
        self.queue.extend(batch(stream, first, first + count - 1))
        self.following[stream] = first + count

    def take(self, n: int) -> list[Event]:
        chunk, self.queue = self.queue[:n], self.queue[n:]
        for event in chunk:
            if isinstance(event, BusCheckpoint):
                self.seen[event.symbol] = event.seq
                self.after_checkpoint = 0
            else:
                self.after_checkpoint += 1
        return chunk


async def _play(db: Path, ops: list[tuple[Any, ...]], options: dict[str, Any]) -> None:
    sink = _sink(db, **options)
    await sink.open()
    bus = _Bus(await sink.bus_positions(SOURCE, CONSUMER))
    for op in ops:
        if op[0] == "deliver":
            bus.deliver(op[1], op[2])
        elif op[0] == "write":
            chunk = bus.take(op[1])
            if chunk:
                await sink.write_batch(chunk)
        elif op[0] == "flush":
            await sink.flush()
            bus.committed.update(bus.seen)
            assert await sink.bus_positions(SOURCE, CONSUMER) == bus.committed
            assert sink.statistics()["pending"] == bus.after_checkpoint
        else:
            if op[0] == "crash":
                crash(sink)
            else:
                await sink.close()
                assert sink.statistics()["uncheckpointed"] == bus.after_checkpoint
            positions = assert_consistent(db)
            # Flushed positions survive; nothing past what the sink was handed is claimed.
            assert all(bus.committed.get(s, 0) <= positions.get(s, 0) for s in STREAMS)
            assert all(positions.get(s, 0) <= bus.seen.get(s, bus.committed.get(s, 0)) for s in STREAMS)
            sink = _sink(db, **options)
            await sink.open()
            assert await sink.bus_positions(SOURCE, CONSUMER) == positions
            bus.resume(positions)
    await sink.flush()
    bus.committed.update(bus.seen)
    assert await sink.bus_positions(SOURCE, CONSUMER) == bus.committed
    await sink.close()
    assert assert_consistent(db) == bus.committed


@settings(max_examples=30, deadline=None)
@given(
    ops=_OPS,
    commit_interval=st.sampled_from([0.0, 1e9]),
    batch_size=st.integers(1, 6),
    require_checkpoints=st.booleans(),
)
def test_committed_rows_are_exactly_those_covered_by_committed_checkpoints(
    ops: list[tuple[Any, ...]], commit_interval: float, batch_size: int, require_checkpoints: bool
) -> None:
    options = {"commit_interval": commit_interval, "batch_size": batch_size, "require_checkpoints": require_checkpoints}
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(_play, Path(tmp) / "bus.duckdb", ops, options)


# --- under the feeder -----------------------------------------------------------------------------


class _BusSource:
    """A bus stand-in for the feeder: streams hold trades with sequences 1..``size``; on start it asks
    the feeder for its positions and delivers from each position + 1 in batches of ``batch``, each
    followed by its checkpoint (as a JetStream consumer does), up to ``until``."""

    def __init__(self, options: Any) -> None:
        self.size = int(options["size"])
        self.until = int(options.get("until", self.size))
        self.batch = int(options.get("batch", 7))
        self.resumed: dict[str, int] | None = None
        self.done = anyio.Event()

    async def run(self, ingest: Ingest) -> None:
        self.resumed = await ingest.positions(CONSUMER)
        following = {s: self.resumed.get(s, 0) + 1 for s in STREAMS}
        while any(following[s] <= self.until for s in STREAMS):
            for stream in STREAMS:
                first = following[stream]
                last = min(first + self.batch - 1, self.until)
                if first > last:
                    continue
                events = [trade(seq, symbol=stream) for seq in range(first, last + 1)]
                await ingest.deliver([*events, ingest.checkpoint(stream, CONSUMER, last, len(events))])
                following[stream] = last + 1
        self.done.set()
        await anyio.sleep_forever()

    def statistics(self) -> dict[str, Any]:
        return {}


async def _feed(db: Path, options: dict[str, Any]) -> _BusSource:
    made: list[_BusSource] = []

    class Plugin:
        @hookimpl
        def marketfeeder_register_sources(self, register: Any) -> None:
            def factory(opts: Any) -> _BusSource:
                made.append(_BusSource(opts))
                return made[-1]

            register(SOURCE, factory)

    # Without entry points: the bus is this stand-in, whatever else is installed.
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(marketfeeder_duckdb.plugin, name="duckdb")
    pm.register(Plugin(), name="test-bus")
    config = {
        "sources": [{"type": SOURCE, "options": options}],
        "sinks": [{"type": "duckdb", "options": {"target": str(db), "snapshot_interval": 0, "commit_interval": 0.01}}],
    }
    with anyio.fail_after(30):
        async with Feeder(config, plugin_manager=pm):
            assert len(made) == 1  # built when the feeder starts
            await made[0].done.wait()
    return made[0]


@pytest.mark.anyio
async def test_a_feeder_restarted_on_the_same_file_resumes_after_its_positions(tmp_path: Path) -> None:
    db = tmp_path / "consumer.duckdb"
    first = await _feed(db, {"size": 50, "until": 30})
    assert first.resumed == {}
    assert assert_consistent(db) == dict.fromkeys(STREAMS, 30)
    second = await _feed(db, {"size": 50})
    assert second.resumed == dict.fromkeys(STREAMS, 30)
    assert assert_consistent(db) == dict.fromkeys(STREAMS, 50)
