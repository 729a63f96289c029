"""End to end with real processes and the command line: two feeders of one group against one
simulator publish through nats-server (``marketfeeder run --publish nats://... --group G``); a consumer
on "another host" stores the bus in DuckDB (``marketfeeder run --source nats://... --sink duckdb:FILE``).
``kill -9`` of the owner hands its shard to the other; the stored trades show no loss or an exact Gap,
and no duplicate trade ids. With a positioned DuckDB sink, ``kill -9`` of the consumer costs nothing:
the restarted one resumes right after what the database committed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats_helpers import read_stream
from natsserver import NatsServer

from marketfeeder.models import BookDelta, BookSnapshot, Gap, Side, Trade
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.jetstream import JetStream
from marketfeeder_nats.sink import NatsSink
from marketfeeder_nats.subjects import TYPE_TOKENS, stream_name

duckdb = pytest.importorskip("duckdb")
DuckDBSink = pytest.importorskip("marketfeeder_duckdb.sink").DuckDBSink
# The simulator serves the Binance venue of the binance plugin (absent when this plugin is tested alone).
pytestmark = pytest.mark.slow

#: The defaults of ``--publish`` and ``--source``: stream prefix and durable name.
PREFIX = "MD"
DURABLE = "marketfeeder"


def _start_sim() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketfeeder", "sim", "serve", "--venue", "binance", "--symbols", "BTC-USDT",
         "--rate", "400", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)


def _marketfeeder(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``marketfeeder run ARGS --quiet``, its output appended to ``log`` (shown when a check fails)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "marketfeeder", "run", *args, "--quiet"],
                                stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def _consumer_state(url: str, streams: list[str]) -> dict[str, dict[str, int]]:
    """Per stream: its last seq and the durable's ack floor and pending counts (-1: no consumer yet)."""
    out: dict[str, dict[str, int]] = {}
    async with NatsClient(url) as nc:
        js = JetStream(nc)
        for stream in streams:
            info = await js.stream_info(stream)
            consumer = await js.consumer_info(stream, DURABLE) if info is not None else None
            out[stream] = {
                "last_seq": int(info["state"]["last_seq"]) if info else 0,
                "floor": int(consumer["ack_floor"]["stream_seq"]) if consumer else -1,
                "pending": int(consumer["num_pending"]) + int(consumer["num_ack_pending"]) if consumer else -1,
            }
    return out


def _wait_consumed(url: str, streams: list[str], log: Path, timeout: float = 30.0) -> None:
    """Until the durable has read and acked everything in ``streams``."""
    deadline = time.monotonic() + timeout
    while True:
        state = anyio.run(_consumer_state, url, streams)
        if all(s["pending"] == 0 and s["floor"] == s["last_seq"] for s in state.values()):
            return
        assert time.monotonic() < deadline, f"the consumer did not catch up: {state}\n{_tail(log)}"
        time.sleep(0.1)


def _read_db(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [tuple(row) for row in con.execute(sql).fetchall()]
    finally:
        con.close()


def test_kill_9_of_the_owner_hands_over_without_silence(own_nats_server: NatsServer, tmp_path: Path) -> None:
    pytest.importorskip("marketfeeder_binance")
    server = own_nats_server.start()
    group = uuid.uuid4().hex[:8]
    db = tmp_path / "bus.duckdb"
    log = tmp_path / "consumer.log"
    sim, urls = _start_sim()
    # Both feeders stream the same simulated market (one venue, one trade id sequence).
    market = tmp_path / "market.toml"
    market.write_text(
        f'[exchanges.binance]\nws_url = "{urls["ws_url"]}"\nrest_url = "{urls["rest_url"]}"\n'
        'symbols = ["BTC-USDT"]\ndata_types = ["trades", "orderbook"]\n'
    )
    publish = ["--config", str(market), "--publish", server.url, "--group", group]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_marketfeeder(tmp_path / "a.log", *publish))  # a starts first and takes the shard
        consumer = _marketfeeder(log, "--source", server.url, "--sink", f"duckdb:{db}")
        procs.append(consumer)
        time.sleep(3)
        procs.append(_marketfeeder(tmp_path / "b.log", *publish))  # b: hot standby
        time.sleep(2)
        _stop(procs[0], signal.SIGKILL)  # crash of the owner
        killed_ns = time.time_ns()
        time.sleep(7)  # > the lease TTL (5 s by default): b takes over
        _stop(procs[2])  # clean stop: b flushes
        streams = [stream_name(PREFIX, t) for t in ("trades", "orderbook")]
        _wait_consumed(server.url, streams, log)
        assert consumer.poll() is None, f"the consumer exited: {_tail(log)}"
        _stop(consumer)  # clean stop: DuckDB commits
        assert consumer.returncode == 0, _tail(log)
    finally:
        for proc in procs:
            _stop(proc, signal.SIGKILL)
        _stop(sim)

    # The bus: what the group published.
    trades = anyio.run(read_stream, server.url, stream_name(PREFIX, "trades"))
    events = [e for _s, _subj, _h, e in trades]
    ids = [e.seq for e in events if isinstance(e, Trade) and e.seq is not None]
    assert len(ids) > 100
    assert len(ids) == len(set(ids)), "duplicate trade ids on the bus"
    # Every step between consecutive trades is contiguous, or an exact Gap says what is missing.
    previous: int | None = None
    pending_gap: Gap | None = None
    for event in events:
        if isinstance(event, Gap):
            pending_gap = event
            continue
        assert isinstance(event, Trade) and event.seq is not None
        if previous is not None and event.seq != previous + 1:
            assert pending_gap is not None, f"silent hole between trade ids {previous} and {event.seq}"
            assert (pending_gap.from_seq, pending_gap.to_seq) == (previous + 1, event.seq - 1)
        previous, pending_gap = event.seq, None
    books = anyio.run(read_stream, server.url, stream_name(PREFIX, "orderbook"))
    seqs = [e.seq for _s, _subj, _h, e in books if isinstance(e, BookDelta | BookSnapshot) and e.seq is not None]
    deltas = [e.seq for _s, _subj, _h, e in books if isinstance(e, BookDelta)]
    assert seqs and all(b >= a for a, b in itertools.pairwise(seqs)), "book events out of order"
    assert all(b > a for a, b in itertools.pairwise(deltas)), "duplicate book deltas"
    # The survivor published after the crash (a was dead by then): the hand-over happened.
    assert any(e.receive_ts > killed_ns + 1_500_000_000 for e in events if isinstance(e, Trade))

    # The consumer's database: every trade of the bus once, and each hole covered by an exact Gap row.
    stored = [row[0] for row in _read_db(db, "SELECT seq FROM trades WHERE symbol = 'BTC-USDT' ORDER BY seq")]
    assert len(stored) == len(set(stored)), "duplicate trade ids in DuckDB"
    assert stored == sorted(ids)
    gaps = set(_read_db(db, "SELECT from_seq, to_seq FROM gaps WHERE gap_type = 'trades' AND symbol = 'BTC-USDT'"))
    for a, b in itertools.pairwise(stored):
        if b != a + 1:
            assert (a + 1, b - 1) in gaps, f"silent hole in DuckDB between trade ids {a} and {b}"


@pytest.mark.skipif(not hasattr(DuckDBSink, "bus_positions"), reason="the duckdb sink does not store bus positions yet")
def test_kill_9_of_the_consumer_loses_and_repeats_nothing_in_duckdb(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    """Exactly-once into DuckDB: the bus acked more than the killed consumer committed; the next one
    resumes at the database's own position."""
    server = own_nats_server.start()
    db = tmp_path / "bus.duckdb"
    log = tmp_path / "consumer.log"
    n = 60_000
    t0 = time.time_ns()
    events = [Trade("binance", "ETH-USDT", t0 + i, t0 + i, i, 2000.0 + i % 100, 0.5, Side.BUY, None) for i in range(n)]

    async def publish() -> None:
        sink = NatsSink({"url": server.url, "stream_prefix": PREFIX, "subject_prefix": "md"})
        await sink.open()
        for start in range(0, n, 5000):
            await sink.write_batch(events[start : start + 5000])
        await sink.close()
        assert sink.acked == n

    anyio.run(publish)
    streams = [stream_name(PREFIX, t) for t in TYPE_TOKENS]
    trades_stream = stream_name(PREFIX, "trades")
    consumer = _marketfeeder(log, "--source", server.url, "--sink", f"duckdb:{db}")
    try:
        # Killed first before its first commit (nothing stored: the next one starts over), then
        # further on (the database's position is behind the bus's ack floor: it resumes after it).
        for fraction in (6, 2):
            deadline = time.monotonic() + 30
            while anyio.run(_consumer_state, server.url, [trades_stream])[trades_stream]["floor"] < n // fraction:
                assert time.monotonic() < deadline and consumer.poll() is None, f"no progress: {_tail(log)}"
                time.sleep(0.02)
            _stop(consumer, signal.SIGKILL)  # mid-stream: acked on the bus, not all committed
            # What the database committed is exactly its rows: the position the next one resumes after.
            positions = _read_db(db, f"SELECT seq FROM bus_positions WHERE stream = '{trades_stream}'")
            committed = positions[0][0] if positions else 0
            assert _read_db(db, "SELECT count(*) FROM trades") == [(committed,)]
            consumer = _marketfeeder(log, "--source", server.url, "--sink", f"duckdb:{db}")
        _wait_consumed(server.url, streams, log, timeout=60)
        _stop(consumer)
        assert consumer.returncode == 0, _tail(log)
    finally:
        _stop(consumer, signal.SIGKILL)
    stored = [row[0] for row in _read_db(db, "SELECT seq FROM trades WHERE symbol = 'ETH-USDT' ORDER BY seq")]
    assert len(stored) == n, f"{len(stored)} rows for {n} trades"
    assert stored == list(range(n))
