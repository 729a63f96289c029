"""Throughput and latency of the NATS JetStream bus through a local nats-server (loopback).

Each round starts from fresh streams on one ``nats-server -js`` (file storage in a temp dir) and
moves ``N`` trades:

* ``publish``: the ``nats`` sink publishes the trades (batches of 1000, window 8192) until every one
  is acknowledged by JetStream (stored): acked msgs/s.
* ``end to end``: the sink publishes while the ``nats`` source consumer (durable pull consumer)
  decodes and delivers them in the same process; msgs/s from the first publish to the last delivery.
  Its p50 latency is mostly the backlog of a flooded bus (the publisher outruns the consumer).
* ``end to end into a consumer Feeder``: the same, consumed by a whole Feeder with the ``nats`` source
  (de-duplication, every validator, latest values, stats, a callback; a checkpoint per batch), flooded
  and at a steady 10k msgs/s.
* ``latency``: the same path at a steady 10k msgs/s (chunks of 50 every 5 ms): p50/p99 from the
  event's ``receive_ts`` (stamped just before publishing) to delivery.

Both run on asyncio and on trio (same client). When nats-py is installed, the same two figures are
taken for nats-py under asyncio (pipelined ``js.publish`` in chunks of 256; pull ``fetch`` of 256 +
ack), the alternative this plugin's own client was measured against.

Without ``nats-server`` on PATH (or /usr/sbin) the benchmark prints one line and returns no figures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio
import anyio.lowlevel

from marketfeeder.models import Event, Side, Trade

N = 20_000
BATCH = 1_000
PACED = 10_000  # msgs/s for the latency figures (2 s per round)


def _binary() -> str | None:
    explicit = os.environ.get("MARKETFEEDER_NATS_SERVER")  # as in the plugin's tests
    if explicit is not None:
        return explicit if os.path.isfile(explicit) else None
    found = shutil.which("nats-server")
    if found:
        return found
    return "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None


class _Server:
    def __init__(self, binary: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-nats-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [binary, "-js", "-p", str(self.port), "-a", "127.0.0.1", "-sd", self.tmp.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nats-server did not start")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.tmp.cleanup()


def _trades(n: int) -> list[Event]:
    now = time.time_ns()
    return [Trade("binance", "BTC-USDT", now, now, i, 100.0 + (i % 100), 0.5, Side.BUY, None) for i in range(n)]


def _stamped(events: list[Event], offset: int) -> list[Event]:
    """Fresh trade ids (the stream de-duplicates by id) and receive_ts = now."""
    now = time.time_ns()
    return [Trade.fast(e.exchange, e.symbol, e.exchange_ts, now, offset + i, 100.0, 0.5, Side.BUY, None)
            for i, e in enumerate(events)]


async def _ours_publish(url: str, tag: str) -> float:
    from marketfeeder_nats.sink import NatsSink

    events = _trades(N)
    sink = NatsSink({"url": url, "stream_prefix": f"P{tag}", "subject_prefix": f"p{tag}"})
    await sink.open()
    t0 = time.perf_counter()
    for start in range(0, N, BATCH):
        await sink.write_batch(events[start : start + BATCH])
    await sink.flush()
    elapsed = time.perf_counter() - t0
    await sink.close()
    return N / elapsed


async def _publish_all(sink: Any, rate: float | None, done: anyio.Event) -> float:
    """Publish N fresh trades, flooding (``rate`` None) or at ``rate`` msgs/s in chunks of 50; the
    seconds until ``done`` (every one delivered)."""
    chunk = BATCH if rate is None else 50
    template = _trades(chunk)
    t0 = time.perf_counter()
    for start in range(0, N, chunk):
        await sink.write_batch(_stamped(template, start))
        if rate is None:
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.sleep(max(0.0, t0 + (start + chunk) / rate - time.perf_counter()))
    await sink.flush()
    with anyio.fail_after(60):
        await done.wait()
    return time.perf_counter() - t0


async def _ours_end_to_end(url: str, tag: str, rate: float | None = None) -> tuple[float, list[float]]:
    """All N as fast as possible (``rate`` None: throughput, latency includes the backlog), or N at
    ``rate`` msgs/s in chunks of 50 (latency of an unsaturated bus)."""
    from marketfeeder_nats.sink import NatsSink
    from marketfeeder_nats.source import NatsSource

    prefixes = {"stream_prefix": f"E{tag}", "subject_prefix": f"e{tag}"}
    sink = NatsSink({"url": url, **prefixes})
    await sink.open()  # creates the streams
    source = NatsSource({"url": url, "durable": "bench", "types": ["trades"], "batch": 512, **prefixes})
    latencies: list[float] = []
    done = anyio.Event()

    def deliver(event: Event) -> None:
        latencies.append((time.time_ns() - event.receive_ts) / 1000.0)
        if len(latencies) >= N:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(source.consume, deliver)
        await source.ready.wait()
        elapsed = await _publish_all(sink, rate, done)
        tg.cancel_scope.cancel()
    await sink.close()
    return N / elapsed, latencies


async def _natspy_publish(url: str, tag: str) -> float:
    import asyncio

    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=f"NP{tag}", subjects=[f"np{tag}.>"])
    payloads = [b'[1,"Trade","binance","BTC-USDT",1,1,%d,100.0,0.5,"buy",null]' % i for i in range(N)]
    t0 = time.perf_counter()
    for start in range(0, N, 256):
        await asyncio.gather(*[js.publish(f"np{tag}.x", p) for p in payloads[start : start + 256]])
    elapsed = time.perf_counter() - t0
    await nc.close()
    return N / elapsed


async def _natspy_end_to_end(url: str, tag: str) -> tuple[float, list[float]]:
    import asyncio

    import nats

    from marketfeeder_nats.codec import decode_event, encode_event

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=f"NE{tag}", subjects=[f"ne{tag}.>"])
    psub = await js.pull_subscribe(f"ne{tag}.>", durable="bench")
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < N:
            try:
                msgs = await psub.fetch(256, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                event = decode_event(msg.data)
                latencies.append((time.time_ns() - event.receive_ts) / 1000.0)
                await msg.ack()

    template = _trades(BATCH)
    task = asyncio.ensure_future(consume())
    t0 = time.perf_counter()
    for start in range(0, N, BATCH):
        payloads = [encode_event(e) for e in _stamped(template, start)]
        for start in range(0, BATCH, 256):
            await asyncio.gather(*[js.publish(f"ne{tag}.x", p) for p in payloads[start : start + 256]])
    await asyncio.wait_for(task, 60)
    elapsed = time.perf_counter() - t0
    await nc.close()
    return N / elapsed, latencies


async def _feeder_end_to_end(url: str, tag: str, rate: float | None = None) -> tuple[float, list[float]]:
    """As ``_ours_end_to_end``, but the consumer is a whole Feeder with the ``nats`` source: de-duplication,
    every validator, latest values, stats and a callback, plus a BusCheckpoint per fetched batch."""
    from marketfeeder import DataType, Feeder
    from marketfeeder_nats.sink import NatsSink

    prefixes = {"stream_prefix": f"F{tag}", "subject_prefix": f"f{tag}"}
    sink = NatsSink({"url": url, **prefixes})
    await sink.open()
    config = {"sources": [{"type": "nats", "options": {
        "url": url, "durable": "bench", "types": ["trades"], "batch": 512, **prefixes}}]}
    latencies: list[float] = []
    done = anyio.Event()

    def deliver(event: Event) -> None:
        latencies.append((time.time_ns() - event.receive_ts) / 1000.0)
        if len(latencies) >= N:
            done.set()

    async with Feeder(config) as feeder:
        feeder.subscribe("binance", "BTC-USDT", DataType.TRADES, deliver)
        source = next(iter(feeder.sources.values()))[0]
        with anyio.fail_after(30):
            await source.ready.wait()  # type: ignore[attr-defined]
        elapsed = await _publish_all(sink, rate, done)
    await sink.close()
    return N / elapsed, latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(rounds: int = 5) -> list[dict[str, Any]]:
    binary = _binary()
    if binary is None:
        print("bench_nats: skipped, nats-server is not installed (apt-get install nats-server)", file=sys.stderr)
        return []
    try:
        import nats  # noqa: F401

        have_natspy = True
    except ImportError:
        have_natspy = False
    series: dict[str, tuple[str, bool, list[float]]] = {}

    def add(name: str, unit: str, higher: bool, value: float) -> None:
        series.setdefault(name, (unit, higher, []))[2].append(value)

    server = _Server(binary)
    try:
        for r in range(rounds):
            for backend in ("asyncio", "trio"):
                tag = f"{backend[0]}{r}"
                add(f"publish acked ({backend})", "msgs/s", True, anyio.run(_ours_publish, server.url, tag, backend=backend))
                rate, lat = anyio.run(_ours_end_to_end, server.url, tag, backend=backend)
                add(f"end to end ({backend})", "msgs/s", True, rate)
                add(f"end to end p50, flood ({backend})", "us", False, statistics.median(lat))
                _rate, lat = anyio.run(_ours_end_to_end, server.url, tag + "p", PACED, backend=backend)
                add(f"latency p50 at {PACED // 1000}k msgs/s ({backend})", "us", False, statistics.median(lat))
                add(f"latency p99 at {PACED // 1000}k msgs/s ({backend})", "us", False, _pct(lat, 0.99))
                rate, lat = anyio.run(_feeder_end_to_end, server.url, tag + "f", backend=backend)
                add(f"end to end into a consumer Feeder ({backend})", "msgs/s", True, rate)
                _rate, lat = anyio.run(_feeder_end_to_end, server.url, tag + "fp", PACED, backend=backend)
                add(f"consumer Feeder latency p50 at {PACED // 1000}k msgs/s ({backend})", "us", False,
                    statistics.median(lat))
                add(f"consumer Feeder latency p99 at {PACED // 1000}k msgs/s ({backend})", "us", False,
                    _pct(lat, 0.99))
            if have_natspy:
                tag = f"n{r}"
                add("nats-py publish acked (asyncio)", "msgs/s", True, anyio.run(_natspy_publish, server.url, tag))
                rate, lat = anyio.run(_natspy_end_to_end, server.url, tag)
                add("nats-py end to end (asyncio)", "msgs/s", True, rate)
                add("nats-py end to end p50, flood (asyncio)", "us", False, statistics.median(lat))
    finally:
        server.stop()
    return [
        {"name": name, "unit": unit, "values": values, "higher_is_better": higher}
        for name, (unit, higher, values) in series.items()
    ]


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = run(rounds)
    if results:
        print(f"{'benchmark':40} {'unit':>7} {'median':>12} {'min':>12} {'max':>12}")
        for row in results:
            v = row["values"]
            print(f"{row['name']:40} {row['unit']:>7} {statistics.median(v):12.0f} {min(v):12.0f} {max(v):12.0f}")
