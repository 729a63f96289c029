"""End to end with real processes: two feeders of one group against the simulator publish through
nats-server; ``kill -9`` of the owner hands its shard to the other; the stored trades show no loss
or an exact Gap, and no duplicate trade ids."""

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

import anyio
import pytest
from nats_helpers import read_stream, unique_prefixes
from natsserver import NatsServer

from marketfeeder.models import BookDelta, BookSnapshot, Gap, Trade

# The simulator serves the Binance venue of the binance plugin (absent when this plugin is tested alone).
pytest.importorskip("marketfeeder_binance")
pytestmark = pytest.mark.slow


def _start_sim() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketfeeder", "sim", "serve", "--venue", "binance", "--symbols", "BTC-USDT",
         "--rate", "400", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)


def _feeder(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "marketfeeder", "run", "--config", str(config), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_kill_9_of_the_owner_hands_over_without_silence(own_nats_server: NatsServer, tmp_path: Path) -> None:
    server = own_nats_server.start()
    prefixes = unique_prefixes()
    group = uuid.uuid4().hex[:8]
    sim, urls = _start_sim()
    feeders: list[subprocess.Popen[bytes]] = []
    try:
        for member in ("a", "b"):
            config = tmp_path / f"{member}.toml"
            config.write_text(
                f'[exchanges.binance]\nws_url = "{urls["ws_url"]}"\nrest_url = "{urls["rest_url"]}"\n'
                'symbols = ["BTC-USDT"]\ndata_types = ["trades", "orderbook"]\n\n'
                f'[[sinks]]\ntype = "nats"\noptions = {{ url = "{server.url}", group = "{group}", member = "{member}", '
                f'lease_ttl = 1.0, shards = 1, stream_prefix = "{prefixes["stream_prefix"]}", '
                f'subject_prefix = "{prefixes["subject_prefix"]}", storage = "memory" }}\n'
            )
        feeders.append(_feeder(tmp_path / "a.toml"))
        time.sleep(3)  # a starts first and takes the shard
        feeders.append(_feeder(tmp_path / "b.toml"))
        time.sleep(3)
        _stop(feeders[0], signal.SIGKILL)  # crash of the owner
        killed_ns = time.time_ns()
        time.sleep(4)  # > lease TTL: b takes over
        _stop(feeders[1])  # clean stop: b flushes
    finally:
        for proc in feeders:
            _stop(proc, signal.SIGKILL)
        _stop(sim)
    trades = anyio.run(read_stream, server.url, f"{prefixes['stream_prefix']}_TRADES")
    events = [e for _s, _subj, _h, e in trades]
    ids = [e.seq for e in events if isinstance(e, Trade)]
    assert len(ids) > 100
    assert len(ids) == len(set(ids)), "duplicate trade ids"
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
    books = anyio.run(read_stream, server.url, f"{prefixes['stream_prefix']}_ORDERBOOK")
    seqs = [e.seq for _s, _subj, _h, e in books if isinstance(e, BookDelta | BookSnapshot)]
    deltas = [e.seq for _s, _subj, _h, e in books if isinstance(e, BookDelta)]
    assert seqs and all(b >= a for a, b in itertools.pairwise(seqs)), "book events out of order"
    assert all(b > a for a, b in itertools.pairwise(deltas)), "duplicate book deltas"
    # The survivor published after the crash (a was dead by then): the hand-over happened.
    assert any(e.receive_ts > killed_ns + 1_500_000_000 for e in events if isinstance(e, Trade))
