"""Backpack decode speed: frames/s per stream type.

Frames come from the Backpack venue's encoder over a seeded simulated market (deterministic), in
integer mode and in numeric-string mode (the lenient slow path), plus the real recorded frames in
``plugins/backpack/tests/fixtures``. Each round decodes every frame of a type once through the
connector's ``decode`` and reports frames per second.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from _table import print_table

from marketfeeder.config import ExchangeConfig
from marketfeeder.models import Instrument, InstrumentTable
from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.sim.venue import SimFrame
from marketfeeder.transport.http import HttpClient
from marketfeeder_backpack.connector import BackpackConnector
from marketfeeder_backpack.venue import BackpackVenue

RECORDED = Path(__file__).resolve().parent.parent / "plugins/backpack/tests/fixtures/bbgo_backpack_ws_raw_first56lines.jsonl"
FRAMES_PER_TYPE = 4_000
REPEAT_TO = 20_000


class _Conn:
    id = 0
    path = "/"
    query: Mapping[str, str] = {}
    streams: set[str] = set()
    state: dict[str, Any] = {}


def _table() -> InstrumentTable:
    table = InstrumentTable("backpack")
    for i in default_instruments("backpack"):
        native = i.symbol.replace("-", "_")
        table.add(
            Instrument("backpack", native, i.symbol, i.base, i.quote, float(i.tick_size), float(i.step_size), "Open", True, i.kind)
        )
    return table


def simulated_frames(string_numbers: bool, per_type: int = FRAMES_PER_TYPE) -> dict[str, list[bytes]]:
    """Wrapped frames per payload type ``e``, from the venue encoder (seeded, so identical every run)."""
    engine = MarketEngine(42, default_instruments("backpack"), ["backpack"], rate=1000.0, periodic_interval=0.01)
    venue = BackpackVenue(engine.view("backpack"), {"string_numbers": string_numbers})
    wanted = set()
    for i in default_instruments("backpack"):
        n = i.symbol.replace("-", "_")
        wanted |= {f"depth.{n}", f"bookTicker.{n}", f"trade.{n}", f"ticker.{n}", f"kline.1m.{n}", f"markPrice.{n}"}
    out: dict[str, list[bytes]] = defaultdict(list)
    conn = _Conn()
    rounds = 0
    while min((len(out[k]) for k in ("depth", "bookTicker", "trade", "ticker", "kline", "markPrice")), default=0) < per_type:
        rounds += 1
        if rounds > 2_000_000:
            break
        for _, record in engine.step():
            frames: list[SimFrame] = venue.encode(record, wanted)
            for frame in frames:
                kind = orjson.loads(frame.payload)["e"]
                if len(out[kind]) < per_type:
                    out[kind].append(venue.wrap(conn, frame).encode())
    # Repeat so each timing covers enough frames.
    return {k: v * max(1, REPEAT_TO // len(v)) for k, v in out.items()}


def recorded_frames() -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for line in RECORDED.read_bytes().splitlines():
        out[orjson.loads(line)["data"]["e"]].append(line)
    # Repeat the short capture so each timing covers enough frames.
    return {k: v * max(1, REPEAT_TO // len(v)) for k, v in out.items()}


def _measure(decode: Any, frames: list[bytes]) -> float:
    gc.collect()
    start = time.perf_counter()
    for frame in frames:
        decode(frame, 0)
    return len(frames) / (time.perf_counter() - start)


def run(rounds: int = 5) -> list[dict[str, Any]]:
    connector = BackpackConnector(ExchangeConfig(), HttpClient())
    connector.instruments = _table()
    decode = connector.decode
    suites = {
        "sim": simulated_frames(False),
        "sim-strings": simulated_frames(True),
        "recorded": recorded_frames(),
    }
    for frames_by_type in suites.values():  # warm up and prove every frame decodes
        for frames in frames_by_type.values():
            for frame in frames[:200]:
                decode(frame, 0)
    results: list[dict[str, Any]] = []
    for suite, frames_by_type in suites.items():
        for kind in sorted(frames_by_type):
            frames = frames_by_type[kind]
            values = [_measure(decode, frames) for _ in range(rounds)]
            results.append(
                {"name": f"backpack decode {kind} ({suite})", "unit": "frames/s", "values": values, "higher_is_better": True}
            )
    return results


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = run(rounds)
    print_table(results)


if __name__ == "__main__":
    main()
