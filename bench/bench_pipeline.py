"""Throughput of the runtime pipeline from raw frames to a memory sink, without a network.

Pre-encoded Binance-style combined-stream frames (trades, book tickers, depth diffs of four
symbols) go through :meth:`ExchangePipeline.on_frame`: decode → order books (``BookSync``, LIVE)
→ de-duplication → validators (off, then every built-in check) → latest values and ring buffers
→ stats → a sync callback → the memory sink's bounded queue, drained by its ``SinkRunner`` task
in batches. The figure is frames per second through all of it, sink writes included. Each frame's
receive time is its exchange time + 1 ms, so the data is clean for every check (asserted): the
validation figure times the checks passing, as on a healthy feed, not the verdict path.

Runs standalone: ``python bench/bench_pipeline.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import anyio
import orjson
from _table import print_table

from marketfeeder.clock import now_ns
from marketfeeder.config import ExchangeConfig
from marketfeeder.connector import ConnectionLimits, Connector, ControlMessage, DecodeError
from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    DataType,
    Event,
    Instrument,
    InstrumentTable,
    Side,
    Trade,
)
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder.runtime.dispatch import Dispatcher, SinkRunner
from marketfeeder.runtime.pipeline import BenchSource, ExchangePipeline
from marketfeeder.sequence import SequencePolicy
from marketfeeder.sinks.memory import MemorySink
from marketfeeder.validators.engine import StaticContext, ValidationEngine

N_FRAMES = 60_000
SYMBOLS = {"BTCUSDT": ("BTC", 65_000.0, 0.01), "ETHUSDT": ("ETH", 3_000.0, 0.01),
           "SOLUSDT": ("SOL", 150.0, 0.001), "DOGEUSDT": ("DOGE", 0.15, 0.00001)}
MS = 1_000_000
BUY, SELL = Side.BUY, Side.SELL
_loads = orjson.loads
_trade_fast = Trade.fast
_delta_fast = BookDelta.fast
_book_ticker_fast = BookTicker.fast


class BenchConnector(Connector):
    """A minimal Binance-like decoder (combined-stream wrapper; trade, bookTicker, depthUpdate)."""

    name: ClassVar[str] = "bench"
    default_ws_url: ClassVar[str] = "ws://127.0.0.1:9"
    default_rest_url: ClassVar[str] = "http://127.0.0.1:9"
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    sequence_policy: ClassVar[SequencePolicy] = SequencePolicy()
    supported_data_types: ClassVar[frozenset[DataType]] = frozenset(
        {DataType.TRADES, DataType.BOOK_TICKER, DataType.ORDERBOOK})

    async def load_instruments(self) -> InstrumentTable:
        return self.instruments

    def streams_for(self, instrument: Instrument, data_type: DataType) -> list[str]:
        return [f"{instrument.native.lower()}@{data_type.value}"]

    def subscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        return orjson.dumps({"method": "SUBSCRIBE", "params": list(streams), "id": request_id}).decode()

    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        return orjson.dumps({"method": "UNSUBSCRIBE", "params": list(streams), "id": request_id}).decode()

    def decode(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        try:
            data = _loads(frame)["data"]
            symbol = self.instruments.by_native(data["s"]).symbol
            kind = data.get("e")
            if kind == "trade":
                ts = data["E"] * MS
                return [_trade_fast("bench", symbol, ts, receive_ts, data["t"], float(data["p"]), float(data["q"]),
                                    SELL if data["m"] else BUY, data["T"] * MS)]
            if kind == "depthUpdate":
                return [_delta_fast("bench", symbol, data["E"] * MS, receive_ts, data["u"], data["U"],
                                    tuple([(float(p), float(q)) for p, q in data["b"]]),
                                    tuple([(float(p), float(q)) for p, q in data["a"]]), None)]
            return [_book_ticker_fast("bench", symbol, None, receive_ts, data["u"], float(data["b"]), float(data["B"]),
                                      float(data["a"]), float(data["A"]), None)]
        except (KeyError, TypeError, ValueError, LookupError) as exc:
            raise DecodeError(str(exc)) from None

    async def fetch_snapshot(self, instrument: Instrument, limit: int) -> BookSnapshot:
        raise NotImplementedError


def _instruments() -> InstrumentTable:
    table = InstrumentTable("bench")
    for native, (base, _, tick) in SYMBOLS.items():
        table.add(Instrument("bench", native, f"{base}-USDT", base, "USDT", tick, 0.0001, "TRADING", True))
    return table


def _frames(n: int, seed: int = 7) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Frames in a 2:1:2 mix of trades, book tickers and depth diffs, each with its receive time (its
    exchange time + 1 ms, so the latency and timestamp checks see a live feed); returns the first
    update ids too."""
    rng = random.Random(seed)
    state = {native: {"mid": mid, "u": 1_000_000, "t": 5_000} for native, (_, mid, _) in SYMBOLS.items()}
    first_u = {native: 1_000_001 for native in SYMBOLS}
    frames: list[tuple[str, int]] = []
    natives = list(SYMBOLS)
    t = 1_750_000_000_000
    for i in range(n):
        native = natives[i % len(natives)]
        s = state[native]
        tick = SYMBOLS[native][2]
        s["mid"] = max(tick * 100, s["mid"] + rng.choice((-1, 0, 1)) * tick)
        mid = round(s["mid"] / tick) * tick
        bid, ask = mid - tick, mid + tick
        kind = i % 5
        t += 1
        if kind in (0, 1):
            s["t"] += 1
            data: dict[str, Any] = {"e": "trade", "E": t, "s": native, "t": s["t"], "p": f"{mid:.8f}",
                                    "q": "0.125", "T": t, "m": bool(i & 1), "M": True}
            stream = f"{native.lower()}@trade"
        elif kind == 2:
            data = {"u": s["u"] + 10_000_000, "s": native, "b": f"{bid:.8f}", "B": "1.5", "a": f"{ask:.8f}", "A": "2.5"}
            s["u"] += 0
            stream = f"{native.lower()}@bookTicker"
        else:
            s["u"] += 1
            data = {"e": "depthUpdate", "E": t, "s": native, "U": s["u"], "u": s["u"],
                    "b": [[f"{bid - tick * rng.randrange(5):.8f}", f"{rng.randrange(0, 4)}.5"]],
                    "a": [[f"{ask + tick * rng.randrange(5):.8f}", f"{rng.randrange(0, 4)}.5"]]}
            stream = f"{native.lower()}@depth"
        frames.append((orjson.dumps({"stream": stream, "data": data}).decode(), (t + 1) * MS))
    return frames, first_u


def _validation(instruments: InstrumentTable) -> ValidationEngine:
    registry = collect(get_plugin_manager(load_entry_points=False), "marketfeeder_register_validators", "validator")
    validators = [registry[name]({}) for name in registry.names()]
    mapping = {("bench", i.symbol): i for i in instruments}
    return ValidationEngine(validators, StaticContext(mapping, now_ns))


async def _one_round(frames: list[tuple[str, int]], first_u: dict[str, int], validate: bool) -> float:
    connector = BenchConnector(ExchangeConfig(), None)  # type: ignore[arg-type]
    connector.instruments = _instruments()
    dispatcher = Dispatcher(buffer_size=1000, subscriber_queue_size=10_000, slow_callback_ms=50)
    runner = SinkRunner("memory", MemorySink({"maxlen": 100_000}), queue_size=10_000, overflow="block",
                        batch_size=1_000, flush_interval=0.05)
    await runner.open()
    dispatcher.add_sink(runner)
    delivered = [0]

    def count(event: Event) -> None:
        delivered[0] += 1

    dispatcher.subscribe(None, None, DataType.TRADES, count)
    validation = _validation(connector.instruments) if validate else None
    pipeline = ExchangePipeline(connector, dispatcher, validation=validation)
    # Books start LIVE: a snapshot just before the first diff of each symbol.
    for instrument in connector.instruments:
        entry = pipeline.add_book(instrument)
        first = first_u[instrument.native]
        warm: list[Event] = []
        entry.sync.on_delta(BookDelta.fast("bench", instrument.symbol, None, 0, first - 1, first - 1, (), (), None), warm)
        snapshot = BookSnapshot.fast("bench", instrument.symbol, None, 0, first - 1, ((1.0, 1.0),), ((1e9, 1.0),))
        entry.sync.on_snapshot(snapshot, warm)
    source = BenchSource()
    on_frame = pipeline.on_frame
    wait = dispatcher.wait
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        start = time.perf_counter()
        for frame, receive_ts in frames:
            pending = on_frame(frame, receive_ts, source)
            if pending:
                await wait(pending)
        runner.queue.close()
    elapsed = time.perf_counter() - start
    sink = runner.sink
    assert isinstance(sink, MemorySink)
    assert source.decode_errors == 0, f"{source.decode_errors} frames did not decode"
    assert sink.received == runner.queue.accepted > len(frames) * 0.9, (sink.received, len(frames))
    assert all(entry.sync.state.value == "live" for entry in pipeline.books.values())
    # Clean data: every event passes (failures would time the verdict path instead).
    assert validation is None or not validation.statistics()["failed"], validation.failures()
    return len(frames) / elapsed


def _rates(validate: bool, rounds: int) -> list[float]:
    frames, first_u = _frames(N_FRAMES)

    async def main() -> list[float]:
        return [await _one_round(frames, first_u, validate) for _ in range(rounds)]

    return anyio.run(main)


def run(rounds: int = 5) -> list[dict[str, Any]]:
    return [
        {
            "name": "pipeline: frames → books → buffers → memory sink, validation off",
            "unit": "msgs/s",
            "values": _rates(False, rounds),
            "higher_is_better": True,
        },
        {
            "name": "pipeline: frames → books → validators → buffers → memory sink",
            "unit": "msgs/s",
            "values": _rates(True, rounds),
            "higher_is_better": True,
        },
    ]


def main() -> None:
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
