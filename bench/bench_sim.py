"""The simulator's capacity: records/s the market engine generates, and frames/s the server pushes
to one loopback WebSocket client (rate "max": the engine runs as fast as the client reads).

A minimal JSON venue (``{"stream": s, "data": {...}}``) keeps the measure on the engine, fan-out and
socket path rather than on any exchange's encoder. Runs standalone: ``python bench/bench_sim.py``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import anyio
import orjson
from _table import print_table

from marketfeeder.models import DataType
from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.sim.model import SimBookTicker, SimDepth, SimEvent, SimTrade
from marketfeeder.sim.server import SimServer
from marketfeeder.sim.venue import HttpReply, HttpRequest, SimConnection, SimFrame, Venue, VenueRules
from marketfeeder.transport.ws import connect_websocket

ENGINE_RECORDS = 60_000
SERVER_SECONDS = 1.5
VENUES = ["binance", "backpack"]


def _engine_rate() -> float:
    engine = MarketEngine(1, {v: default_instruments(v) for v in VENUES}, VENUES, rate=50_000.0)
    engine.take(2_000)  # warm-up
    t0 = time.perf_counter()
    n = len(engine.take(ENGINE_RECORDS))
    return n / (time.perf_counter() - t0)


class BenchVenue(Venue):
    name: ClassVar[str] = "bench"
    rules: ClassVar[VenueRules] = VenueRules(ping_interval=None)

    def on_connect(self, conn: SimConnection) -> None:
        conn.streams.update(s for s in conn.query.get("streams", "").split("/") if s)

    def on_message(self, conn: SimConnection, text: str) -> list[str]:
        return []

    def encode(self, event: SimEvent, wanted: set[str]) -> list[SimFrame]:
        if isinstance(event, SimDepth):
            stream, dt = event.symbol + "@depth", DataType.ORDERBOOK
            data: dict[str, Any] = {"U": event.first_id, "u": event.last_id, "b": event.bids, "a": event.asks}
        elif isinstance(event, SimTrade):
            stream, dt = event.symbol + "@trade", DataType.TRADES
            data = {"t": event.trade_id, "p": event.price, "q": event.size, "m": event.buyer_is_maker}
        elif isinstance(event, SimBookTicker):
            stream, dt = event.symbol + "@bookTicker", DataType.BOOK_TICKER
            data = {
                "u": event.update_id,
                "b": event.bid,
                "B": event.bid_size,
                "a": event.ask,
                "A": event.ask_size,
            }
        else:
            return []
        if stream not in wanted:
            return []
        return [SimFrame(stream, orjson.dumps(data).decode(), dt)]

    def wrap(self, conn: SimConnection, frame: SimFrame) -> str:
        return '{"stream":"' + frame.stream + '","data":' + frame.payload + "}"

    def handle_http(self, request: HttpRequest) -> HttpReply:
        return HttpReply(404, b"{}")


async def _server_rate() -> float:
    symbols = [i.symbol for i in default_instruments("bench")]
    streams = "/".join(f"{s}@{kind}" for s in symbols for kind in ("depth", "trade", "bookTicker"))
    async with SimServer({"bench": BenchVenue}, seed=1, rate="max") as sim:
        url = sim.endpoints()["bench"]["ws_url"] + "/ws?streams=" + streams
        async with connect_websocket(url) as ws:
            for _ in range(2_000):  # warm-up
                await ws.receive()
            n = 0
            t0 = time.perf_counter()
            deadline = t0 + SERVER_SECONDS
            while True:
                await ws.receive()
                n += 1
                if n % 256 == 0 and time.perf_counter() >= deadline:
                    break
            return n / (time.perf_counter() - t0)


def run(rounds: int = 5) -> list[dict[str, Any]]:
    results = [
        {
            "name": "sim: engine records (2 venues, 7 books)",
            "unit": "records/s",
            "values": [_engine_rate() for _ in range(rounds)],
            "higher_is_better": True,
        }
    ]
    for backend in ("asyncio", "trio"):
        results.append(
            {
                "name": f"sim: server frames to one client ({backend})",
                "unit": "frames/s",
                "values": [anyio.run(_server_rate, backend=backend) for _ in range(rounds)],
                "higher_is_better": True,
            }
        )
    return results


def main() -> None:
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
