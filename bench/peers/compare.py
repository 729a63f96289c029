"""marketfeeder side by side with cryptofeed and ccxt pro, and the limits of the stack, in one process.

Run under a Python >= 3.13 that has marketfeeder (core, binance, backpack), cryptofeed, ccxt, msgspec,
orjson and websockets installed (``bench/bench_peers.py`` runs it as a subprocess)::

    python bench/peers/compare.py --rounds 5 --frames 4000 --out results.json

Every implementation consumes the SAME frames (see ``frames.py``) in every round, and the rounds are
interleaved (the order of the implementations rotates each round), so the ratios hold even on a
noisy shared machine. Per stream type and round each implementation handles every frame once:

* marketfeeder: the connector's ``decode(frame, time.time_ns())``, each event handed to a no-op
  callback; depth diffs also go through ``BookSync.on_delta`` into the live 1,000-level book.
* cryptofeed: ``await feed.message_handler(frame, conn, time.time())`` with no-op async callbacks
  (its own receive path after the socket; ``candle_closed_only=False`` so every kline builds a
  Candle). Its TRADES channel is the aggTrade stream; it has no 24 h ticker and no Backpack feed.
* ccxt pro: the WebSocket client's ``handle_message`` with the aiohttp message object (ccxt's own
  receive path: JSON parse, then the exchange's ``handle_message``) on an unconnected client.
* limits: ``orjson.loads`` and ``msgspec.json.Decoder().decode`` of each frame.

Start-up REST calls (exchangeInfo / markets, depth snapshots) of all three are answered in-process
from the simulator's venues; nothing here opens a socket except the loopback WebSocket measure.
Results are written as JSON rows in the bench convention (``name``, ``unit``, ``values``,
``higher_is_better``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import frames as F  # noqa: E402
import orjson  # noqa: E402

MF = "marketfeeder"
CF = "cryptofeed"
CX = "ccxt"
ORJSON = "orjson.loads"
MSGSPEC = "msgspec decode"

_now_ns = time.time_ns
_now_s = time.time
_perf = time.perf_counter


def _deliver(event: Any) -> None:
    """The no-op callback every decoded event of ours is handed to."""


async def _cf_noop(obj: Any, receipt_timestamp: float) -> None:
    """cryptofeed's no-op callback."""


# --- implementations ---------------------------------------------------------------------------------


class Impl:
    """One implementation on one venue: ``prepare(kind, frames)`` resets state (books) outside the
    timing and returns the frames to time; ``run(kind, frames)`` returns the elapsed seconds."""

    name = ""
    kinds: frozenset[str] = frozenset()

    async def prepare(self, kind: str, frames: list[str]) -> list[str]:
        return frames

    async def run(self, kind: str, frames: list[str]) -> float:
        raise NotImplementedError


class OrjsonImpl(Impl):
    name = ORJSON

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds

    async def prepare(self, kind: str, frames: list[str]) -> list[str]:
        return frames[1:]  # the same frames the book paths time (the first joins the snapshot)

    async def run(self, kind: str, frames: list[str]) -> float:
        loads = orjson.loads
        t0 = _perf()
        for f in frames:
            loads(f)
        return _perf() - t0


class MsgspecImpl(OrjsonImpl):
    name = MSGSPEC

    async def run(self, kind: str, frames: list[str]) -> float:
        import msgspec

        decode = msgspec.json.Decoder().decode
        t0 = _perf()
        for f in frames:
            decode(f)
        return _perf() - t0


class OursImpl(Impl):
    """Our connector's decode + a no-op delivery; depth diffs also into ``BookSync``."""

    name = MF

    def __init__(self, vf: F.VenueFrames) -> None:
        self.vf = vf
        self.kinds = frozenset(vf.frames) | {"samples"}

    async def setup(self) -> None:
        from marketfeeder.config import ExchangeConfig

        if self.vf.venue_name == "binance":
            from marketfeeder_binance.connector import BinanceConnector as Connector
        else:
            from marketfeeder_backpack.connector import BackpackConnector as Connector  # type: ignore[assignment]
        http = F.LocalHttpClient(self.vf.rest)
        self.connector = Connector(ExchangeConfig(), http)  # type: ignore[arg-type]
        await self.connector.load_instruments()
        instrument = self.connector.instruments.by_symbol(self.vf.depth_symbol)
        self.snapshot = await self.connector.fetch_snapshot(instrument, F.BOOK_LEVELS)
        assert len(self.snapshot.bids) >= F.BOOK_LEVELS and len(self.snapshot.asks) >= F.BOOK_LEVELS

    async def prepare(self, kind: str, frames: list[str]) -> list[str]:
        if kind != self.vf.depth_kind:
            return frames[1:]
        from marketfeeder.book import BookSync
        from marketfeeder.models import BookStatus

        c = self.connector
        self.sync = BookSync(c.name, self.vf.depth_symbol, c.sequence_policy)
        out: list[Any] = []
        for delta in c.decode(frames[0], _now_ns()):
            self.sync.on_delta(delta, out)  # type: ignore[arg-type]
        self.sync.on_snapshot(self.snapshot, out)
        assert self.sync.state is BookStatus.LIVE, f"ours: book not live after the snapshot ({self.sync!r})"
        return frames[1:]

    async def run(self, kind: str, frames: list[str]) -> float:
        decode = self.connector.decode
        deliver = _deliver
        now = _now_ns
        if kind == self.vf.depth_kind:
            on_delta = self.sync.on_delta
            out: list[Any] = []
            clear = out.clear
            t0 = _perf()
            for f in frames:
                for delta in decode(f, now()):
                    on_delta(delta, out)  # type: ignore[arg-type]
                for event in out:
                    deliver(event)
                clear()
            elapsed = _perf() - t0
            stats = self.sync.statistics()
            assert stats["gaps"] == 0 and stats["state"] == "live", f"ours: book left live: {stats}"
            return elapsed
        t0 = _perf()
        for f in frames:
            for event in decode(f, now()):
                deliver(event)
        return _perf() - t0


PIPELINE = "marketfeeder full pipeline (validation on)"


class PipelineImpl(Impl):
    """Our whole per-frame path: ``ExchangePipeline.on_frame`` (decode → books → de-duplication →
    every built-in validator → latest values and ring buffers → stats → a no-op callback → the memory
    sink's bounded queue, drained by its runner task, sink writes included).

    Receive times are the frame's own exchange time + 1 ms (computed off the clock), so the latency
    and timestamp validators judge the frames as if they had just arrived, as in a live feed.
    """

    name = PIPELINE

    def __init__(self, ours: OursImpl) -> None:
        self.ours = ours
        self.kinds = ours.kinds

    async def setup(self) -> None:
        from marketfeeder.models import DataType
        from marketfeeder.plugins import collect, get_plugin_manager
        from marketfeeder.runtime.dispatch import Dispatcher, SinkRunner
        from marketfeeder.runtime.pipeline import BenchSource, ExchangePipeline
        from marketfeeder.sinks.memory import MemorySink
        from marketfeeder.validators.engine import StaticContext, ValidationEngine

        c = self.ours.connector
        registry = collect(get_plugin_manager(load_entry_points=False), "marketfeeder_register_validators", "validator")
        self._factories = [registry[name] for name in registry.names()]
        self.validators = list(registry.names())
        context = StaticContext({(c.name, i.symbol): i for i in c.instruments}, time.time_ns)
        self._context = context
        self._validation_engine = ValidationEngine
        self.dispatcher = Dispatcher(buffer_size=1000, subscriber_queue_size=10_000, slow_callback_ms=50)
        self.runner = SinkRunner("memory", MemorySink({"maxlen": 100_000}), queue_size=10_000, overflow="block",
                                 batch_size=1_000, flush_interval=0.05)
        await self.runner.open()
        self.dispatcher.add_sink(self.runner)
        for data_type in DataType:
            self.dispatcher.subscribe(None, None, data_type, _deliver)
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        self._pipeline_class = ExchangePipeline
        self.source = BenchSource()

    @staticmethod
    def _receive_ts(frame: str) -> int:
        data = orjson.loads(frame)["data"]
        ts = data.get("E")
        return ts * 1_000_000 + 1_000_000 if type(ts) is int else _now_ns()

    async def prepare(self, kind: str, frames: list[str]) -> list[str]:
        items = [(f, self._receive_ts(f)) for f in frames]
        # A fresh pipeline and fresh checks per pass: the de-duplication windows would drop frames seen in
        # the last pass, and the stateful checks (timestamps, outliers) would see time run backwards.
        validation = self._validation_engine([factory({}) for factory in self._factories], self._context)
        self.pipeline = self._pipeline_class(self.ours.connector, self.dispatcher, validation=validation)
        if kind == self.ours.vf.depth_kind:
            from marketfeeder.models import BookStatus

            vf = self.ours.vf
            entry = self.pipeline.add_book(self.ours.connector.instruments.by_symbol(vf.depth_symbol))
            out: list[Any] = []
            for delta in self.ours.connector.decode(frames[0], items[0][1]):
                entry.sync.on_delta(delta, out)  # type: ignore[arg-type]
            entry.sync.on_snapshot(self.ours.snapshot, out)
            assert entry.sync.state is BookStatus.LIVE
        return items[1:]  # type: ignore[return-value]

    async def run(self, kind: str, frames: list[str]) -> float:
        on_frame = self.pipeline.on_frame
        wait = self.dispatcher.wait
        source = self.source
        t0 = _perf()
        for frame, ts in frames:  # type: ignore[misc]
            pending = on_frame(frame, ts, source)
            if pending:
                await wait(pending)
        elapsed = _perf() - t0
        assert source.decode_errors == 0 and source.unhandled == 0, "pipeline: frames not decoded"
        return elapsed

    async def close(self) -> None:
        self.runner.queue.close()
        await asyncio.wait_for(self.task, 30)


class _CfConn:
    """What cryptofeed's Binance handler may read from a connection."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.id = "binance-bench"
        self.subscription: dict[str, list[str]] = {}


class CryptofeedImpl(Impl):
    """cryptofeed's Binance feed, its start-up REST answered locally, no-op callbacks."""

    name = CF
    # Its TRADES stream is aggTrade, TICKER is bookTicker; it has no 24 h ticker and no raw trade stream.
    kinds = frozenset({"bookTicker", "aggTrade", "depthUpdate", "kline", "samples"})

    def __init__(self, vf: F.VenueFrames) -> None:
        self.vf = vf

    async def setup(self) -> None:
        from cryptofeed.connection import HTTPAsyncConn
        from cryptofeed.defines import CANDLES, L2_BOOK, TICKER, TRADES
        from cryptofeed.exchanges import Binance

        rest = self.vf.rest

        async def local_read(self: Any, address: str, header: Any = None, params: Any = None,
                             retry_count: int = 0, retry_delay: float = 60) -> str:
            status, body = rest.get(address, params)
            if status != 200:
                raise RuntimeError(f"cryptofeed asked for {address}: HTTP {status}")
            return body.decode()

        # Every REST read cryptofeed makes goes to the local venue; it never opens a socket here.
        HTTPAsyncConn.read = local_read  # type: ignore[method-assign]
        symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "BNB-BTC", "BNB-USDT"]
        callbacks = {TRADES: _cf_noop, TICKER: _cf_noop, L2_BOOK: _cf_noop, CANDLES: _cf_noop}
        self.feed = Binance(symbols=symbols, channels=[TRADES, TICKER, L2_BOOK, CANDLES], callbacks=callbacks,
                            candle_closed_only=False, candle_interval="1m", depth_interval="100ms")
        await self.feed._setup()  # symbol loading, as its run() does first
        self.conn = _CfConn(self.feed._address())
        self.pair = self.vf.depth_native
        self.std_pair = "BTC-USDT"

    async def prepare(self, kind: str, frames: list[str]) -> list[str]:
        if kind != "depthUpdate":
            return frames[1:]
        feed = self.feed
        feed._drop_book(self.std_pair)
        # Its first diff for a pair without a book fetches the snapshot (locally), then applies.
        await feed.message_handler(frames[0], self.conn, _now_s())
        book = feed._l2_book[self.std_pair]
        assert len(book.book.bids) >= F.BOOK_LEVELS, "cryptofeed: snapshot not loaded"
        return frames[1:]

    async def run(self, kind: str, frames: list[str]) -> float:
        handler = self.feed.message_handler
        conn = self.conn
        now = _now_s
        t0 = _perf()
        for f in frames:
            await handler(f, conn, now())
        elapsed = _perf() - t0
        if kind == "depthUpdate":
            assert self.std_pair in self.feed._l2_book, "cryptofeed dropped its book (gap detected)"
            assert self.feed.last_update_id[self.std_pair] == orjson.loads(frames[-1])["data"]["u"]
        return elapsed


class CcxtImpl(Impl):
    """ccxt pro's exchange on an unconnected WebSocket client, markets and snapshot answered locally."""

    name = CX

    def __init__(self, vf: F.VenueFrames) -> None:
        self.vf = vf
        self.kinds = frozenset(vf.frames) | {"samples"}

    async def setup(self) -> None:
        import ccxt.pro as ccxtpro
        from aiohttp import WSMessage, WSMsgType

        self._message = lambda f: WSMessage(WSMsgType.TEXT, f, None)
        if self.vf.venue_name == "binance":
            ex = ccxtpro.binance({"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                              "fetchMargins": False}})
            self.url = "wss://stream.binance.com:9443/stream"
            self.symbol = "BTC/USDT"
        else:
            ex = ccxtpro.backpack({"options": {"fetchCurrencies": False}})
            self.url = "wss://ws.backpack.exchange"
            self.symbol = "BTC/USDC"
        ex.has["fetchCurrencies"] = False
        rest = self.vf.rest

        async def local_fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            status, data = rest.get(url)
            if status != 200:
                raise RuntimeError(f"ccxt asked for {url}: HTTP {status}")
            return orjson.loads(data)

        ex.fetch = local_fetch  # every REST call of this instance is answered by the local venue
        self.ex = ex
        if self.vf.venue_name == "binance":
            await ex.load_markets()
        else:
            await ex.load_markets(params={"marketType": "spot"})
        self.client = ex.client(self.url)

    async def prepare(self, kind: str, frames: list[str]) -> list[str]:
        messages = [self._message(f) for f in frames]  # the socket layer's objects, built off the clock
        if kind == self.vf.depth_kind:
            ex = self.ex
            book = ex.order_book({}, F.BOOK_LEVELS)
            snapshot = await ex.fetch_order_book(self.symbol, F.BOOK_LEVELS)
            book.reset(snapshot)
            ex.orderbooks[self.symbol] = book
            self.client.handle_message(messages[0])
            assert len(ex.orderbooks[self.symbol]["bids"]) >= F.BOOK_LEVELS
        return messages[1:]  # type: ignore[return-value]

    async def run(self, kind: str, frames: list[str]) -> float:
        handle = self.client.handle_message
        t0 = _perf()
        for m in frames:
            handle(m)
        elapsed = _perf() - t0
        if kind == self.vf.depth_kind:
            assert self.symbol in self.ex.orderbooks, "ccxt dropped its book"
            last = orjson.loads(frames[-1].data)["data"]["u"]  # type: ignore[attr-defined]
            assert self.ex.orderbooks[self.symbol]["nonce"] == last, "ccxt book did not follow the diffs"
        return elapsed

    async def close(self) -> None:
        await self.ex.close()


# --- the comparison ------------------------------------------------------------------------------------

#: Frames per block: implementations take turns block by block, so a burst of load from elsewhere on
#: the machine hits all of them alike instead of whichever happened to be running.
BLOCK = 200
#: Passes over the frames per round; each implementation's best pass counts (the least disturbed).
REPS = 3


async def _measure(kind: str, frames: list[str], order: list[Impl], round_no: int) -> dict[str, float]:
    """µs per frame of each implementation over ``frames``: best of REPS passes, blocks interleaved."""
    best = {impl.name: float("inf") for impl in order}
    for rep in range(REPS):
        timed = [await impl.prepare(kind, frames) for impl in order]
        totals = [0.0] * len(order)
        n = len(timed[0])
        gc.collect()
        for b, start in enumerate(range(0, n, BLOCK)):
            shift = (round_no + rep + b) % len(order)
            for i in list(range(shift, len(order))) + list(range(shift)):
                totals[i] += await order[i].run(kind, timed[i][start:start + BLOCK])
        for impl, total in zip(order, totals, strict=True):
            best[impl.name] = min(best[impl.name], total / n * 1e6)
    return best



def _row(name: str, unit: str, values: list[float], higher: bool) -> dict[str, Any]:
    return {"name": name, "unit": unit, "values": values, "higher_is_better": higher}


async def compare_decode(rounds: int, n_frames: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    log("generating frames")
    venues = {v: F.VenueFrames(v, n_frames) for v in ("binance", "backpack")}
    suites: dict[str, dict[str, list[str]]] = {}
    for v, vf in venues.items():
        suites[v] = dict(vf.frames)
    suites["binance"]["samples"] = F.cycle(F.binance_samples(), n_frames)
    recorded = F.backpack_recorded()
    suites["backpack"]["samples"] = F.cycle(recorded["bookTicker"], n_frames)

    impls: dict[str, list[Impl]] = {}
    try:
        return await _compare(rounds, venues, suites, impls, log)
    finally:
        for lst in impls.values():
            for impl in lst:
                if isinstance(impl, (CcxtImpl, PipelineImpl)):
                    await impl.close()


async def _compare(rounds: int, venues: dict[str, F.VenueFrames], suites: dict[str, dict[str, list[str]]],
                   impls: dict[str, list[Impl]], log: Callable[[str], None]) -> list[dict[str, Any]]:
    for v, vf in venues.items():
        ours = OursImpl(vf)
        await ours.setup()
        ccxt_impl = CcxtImpl(vf)
        lst: list[Impl] = [ours, ccxt_impl]
        impls[v] = lst
        await ccxt_impl.setup()
        if v == "binance":
            cf = CryptofeedImpl(vf)
            await cf.setup()
            lst.insert(1, cf)
            pipeline = PipelineImpl(ours)
            lst.insert(1, pipeline)
            await pipeline.setup()
        all_kinds = frozenset(suites[v])
        lst += [OrjsonImpl(all_kinds), MsgspecImpl(all_kinds)]

    # Warm-up and a correctness pass: every implementation consumes every kind it handles.
    for v, lst in impls.items():
        for kind, frames in suites[v].items():
            for impl in lst:
                if kind in impl.kinds:
                    timed = await impl.prepare(kind, frames[:400])
                    await impl.run(kind, timed)

    us: dict[tuple[str, str, str], list[float]] = {}
    for r in range(rounds):
        log(f"round {r + 1}/{rounds}")
        for v, lst in impls.items():
            for kind, frames in suites[v].items():
                order = [i for i in lst if kind in i.kinds]
                for name, value in (await _measure(kind, frames, order, r)).items():
                    us.setdefault((v, kind, name), []).append(value)

    rows: list[dict[str, Any]] = []
    depth_levels = {v: vf.depth_levels_mean() for v, vf in venues.items()}
    for v, lst in impls.items():
        for kind in suites[v]:
            label = kind
            if kind == venues[v].depth_kind:
                label = f"{kind} ({depth_levels[v]:.1f} levels/diff, live 1,000-level book)"
            elif kind == "samples":
                label = "samples (real payloads: bookTicker, aggTrade, kline)" if v == "binance" else \
                    "samples (recorded bookTicker frames)"
            ours = us[(v, kind, MF)]
            for impl in lst:
                values = us.get((v, kind, impl.name))
                if values is None:
                    continue
                rows.append(_row(f"{v} {label}: {impl.name} µs/frame", "µs/frame", values, False))
                rows.append(_row(f"{v} {label}: {impl.name} frames/s", "frames/s", [1e6 / x for x in values], True))
            for peer in (CF, CX):
                theirs = us.get((v, kind, peer))
                if theirs is not None:
                    rows.append(_row(f"{v} {label}: {MF} / {peer} (speed ratio)", "x",
                                     [t / o for t, o in zip(theirs, ours, strict=True)], True))
            full = us.get((v, kind, PIPELINE))
            theirs = us.get((v, kind, CF))
            if full is not None and theirs is not None:
                rows.append(_row(f"{v} {label}: {PIPELINE} / {CF} handler (speed ratio)", "x",
                                 [t / o for t, o in zip(theirs, full, strict=True)], True))
            raw = us[(v, kind, ORJSON)]
            rows.append(_row(f"{v} {label}: {MF} rate as % of raw orjson.loads", "%",
                             [100.0 * r_ / o for r_, o in zip(raw, ours, strict=True)], True))
    return rows


# --- loopback WebSocket receive rate -----------------------------------------------------------------


async def _bare_websockets(url: str) -> tuple[int, float]:
    from websockets.asyncio.client import connect

    n = 0
    async with connect(url, max_size=None, compression=None, open_timeout=10) as ws:
        t0 = _perf()
        async for _ in ws:
            n += 1
        return n, _perf() - t0


async def _ours_receive(url: str, decode: Callable[[Any, int], list[Any]] | None) -> tuple[int, float]:
    from marketfeeder.transport.ws import connect_websocket

    n = 0
    async with connect_websocket(url, open_timeout=10) as ws:
        t0 = _perf()
        if decode is None:
            async for _frame, _ts in ws:
                n += 1
        else:
            deliver = _deliver
            async for frame, ts in ws:
                for event in decode(frame, ts):
                    deliver(event)
                n += 1
        return n, _perf() - t0


async def compare_websocket(rounds: int, n_frames: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """A raw loopback server (another process) pushes pre-encoded bookTicker frames as fast as the
    socket takes them; each client counts frames per second until the server's close."""
    vf = F.VenueFrames("binance", 2000)
    ours = OursImpl(vf)
    await ours.setup()
    frames = vf.frames["bookTicker"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.json"
        path.write_bytes(orjson.dumps(frames))
        server = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "wsserver.py"), str(path), str(n_frames), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert server.stdout is not None
            line = await asyncio.wait_for(server.stdout.readline(), 30)
            port = int(line.strip())
            url = f"ws://127.0.0.1:{port}/stream"
            clients: dict[str, Callable[[], Any]] = {
                "bare websockets client": lambda: _bare_websockets(url),
                "marketfeeder connect_websocket": lambda: _ours_receive(url, None),
                "marketfeeder connect_websocket + decode": lambda: _ours_receive(url, ours.connector.decode),
            }
            for make in clients.values():  # warm-up
                await asyncio.wait_for(make(), 60)
            rates: dict[str, list[float]] = {k: [] for k in clients}
            names = list(clients)
            for r in range(rounds):
                log(f"websocket round {r + 1}/{rounds}")
                best = dict.fromkeys(names, 0.0)
                for rep in range(REPS):  # connections take turns; each client's best connection counts
                    shift = (r + rep) % len(names)
                    for name in names[shift:] + names[:shift]:
                        gc.collect()
                        n, elapsed = await asyncio.wait_for(clients[name](), 120)
                        assert n == n_frames, f"{name}: received {n} of {n_frames} frames"
                        best[name] = max(best[name], n / elapsed)
                for name in names:
                    rates[name].append(best[name])
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), 10)
    bare = rates["bare websockets client"]
    rows = [_row(f"loopback ws bookTicker receive: {k}", "frames/s", v, True) for k, v in rates.items()]
    for k in ("marketfeeder connect_websocket", "marketfeeder connect_websocket + decode"):
        rows.append(_row(f"loopback ws bookTicker receive: {k} as % of bare websockets", "%",
                         [100.0 * o / b for o, b in zip(rates[k], bare, strict=True)], True))
    return rows


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": f"{platform.python_implementation()} {platform.python_version()}"}
    for name in ("marketfeeder", "cryptofeed", "ccxt", "orjson", "msgspec", "websockets", "aiohttp"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    def log(msg: str) -> None:
        print(f"   [peers] {msg}", file=sys.stderr, flush=True)

    rows = await compare_decode(args.rounds, args.frames, log)
    if not args.no_ws:
        rows += await compare_websocket(args.rounds, args.ws_frames, log)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=4000, help="frames per stream type")
    parser.add_argument("--ws-frames", type=int, default=50_000, help="frames per loopback connection")
    parser.add_argument("--no-ws", action="store_true", help="skip the loopback WebSocket measure")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args()
    # cryptofeed caches symbol lists under XDG_CACHE_HOME: keep that out of the user's home.
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        rows = asyncio.run(amain(args))
    report = {"versions": versions(), "frames_per_type": args.frames, "rounds": args.rounds, "results": rows}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
