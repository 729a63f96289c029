"""Binance Spot decode speed per stream type, and the order-book apply rate of decoded diffs.

Frames come from the Binance venue's encoder over a seeded simulated market (deterministic), each in
the combined-stream wrapper the connector receives, plus the documented and recorded sample payloads.
``depthUpdate x20`` is a diff of 10 bid and 10 ask levels. Runs standalone:
``python bench/bench_binance.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from _table import print_table

from marketfeeder.models import BookDelta, Instrument
from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.sim.model import SimDepth
from marketfeeder.sim.venue import HttpRequest
from marketfeeder_binance.codec import BinanceCodec, parse_exchange_info
from marketfeeder_binance.venue import BinanceVenue

SEED = 1
N_FRAMES = 20_000
FIXTURES = Path(__file__).resolve().parents[1] / "plugins" / "binance" / "tests" / "fixtures"
KINDS = {
    "bookTicker": "@bookTicker",
    "trade": "@trade",
    "aggTrade": "@aggTrade",
    "depthUpdate": "@depth@100ms",
    "24hrTicker": "@ticker",
    "kline": "@kline_1s",
}


class _Conn:
    """A combined-stream connection as the venue sees it."""

    def __init__(self) -> None:
        self.id = 1
        self.path = "/stream"
        self.query: Mapping[str, str] = {}
        self.streams: set[str] = set()
        self.state: dict[str, Any] = {"combined": True, "us": False}


def _market() -> tuple[MarketEngine, BinanceVenue, BinanceCodec]:
    engine = MarketEngine(SEED, default_instruments("binance"), ["binance"], rate=1000.0, periodic_interval=0.01)
    venue = BinanceVenue(engine.view("binance"))
    reply = venue.handle_http(HttpRequest("GET", "/api/v3/exchangeInfo", {}, {}))
    instruments, _ = parse_exchange_info(orjson.loads(reply.body))
    return engine, venue, BinanceCodec(instruments)


def _frames() -> dict[str, list[str]]:
    """N_FRAMES wrapped frames per stream kind, from the simulated market."""
    engine, venue, _ = _market()
    conn = _Conn()
    wanted = {s.lower().replace("-", "") + suffix for s in ("BTC-USDT", "ETH-USDT", "SOL-USDT") for suffix in KINDS.values()}
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}
    by_suffix = {suffix: kind for kind, suffix in KINDS.items()}
    while min(len(v) for v in out.values()) < N_FRAMES:
        for _, event in engine.step():
            for frame in venue.encode(event, wanted):
                kind = by_suffix["@" + frame.stream.split("@", 1)[1]]
                if len(out[kind]) < N_FRAMES:
                    out[kind].append(venue.wrap(conn, frame))
    # Wide diffs: ten levels a side around the current book.
    wide: list[str] = []
    for i in range(N_FRAMES):
        snap = engine.view("binance").snapshot("BTC-USDT", 10)
        diff = SimDepth("BTC-USDT", 10**9 + i, 10**9 + i, snap.bids, snap.asks, snap.time_ns, snap.time_ns)
        (frame,) = venue.encode(diff, {"btcusdt@depth@100ms"})
        wide.append(venue.wrap(conn, frame))
        if i % 50 == 0:
            engine.step()
    out["depthUpdate x20"] = wide
    return out


def _samples() -> list[bytes]:
    names = ["trade.json", "aggTrade.json", "bookTicker.json", "depthUpdate.json", "ticker.json", "kline.json",
             "nautilus_ws_spot_trade.json", "nautilus_ws_spot_agg_trade.json"]
    return [(FIXTURES / n).read_bytes() for n in names]


def _sample_codec() -> BinanceCodec:
    return BinanceCodec(
        [
            Instrument("binance", n, f"{b}-{q}", b, q, 0.0, 0.0, "TRADING", True)
            for n, b, q in (("BNBBTC", "BNB", "BTC"), ("BNBUSDT", "BNB", "USDT"), ("ETHUSDT", "ETH", "USDT"))
        ]
    )


def _decode_rate(codec: BinanceCodec, frames: list[Any], rounds: int) -> list[float]:
    decode = codec.decode
    values = []
    for _ in range(rounds):
        start = time.perf_counter()
        for frame in frames:
            decode(frame, 0)
        values.append(len(frames) / (time.perf_counter() - start))
    return values


def _apply_rate(codec: BinanceCodec, rounds: int) -> list[float]:
    """Decode + apply of a contiguous diff stream into the core's OrderBook, from the venue's snapshot."""
    from marketfeeder.book import OrderBook

    engine, venue, _ = _market()
    conn = _Conn()
    snapshot = venue.handle_http(HttpRequest("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": "5000"}, {}))
    body = orjson.loads(snapshot.body)
    frames: list[str] = []
    while len(frames) < N_FRAMES:
        for _, event in engine.step():
            if isinstance(event, SimDepth) and event.symbol == "BTC-USDT":
                frames.extend(venue.wrap(conn, f) for f in venue.encode(event, {"btcusdt@depth@100ms"}))
    bids = [(float(p), float(q)) for p, q in body["bids"]]
    asks = [(float(p), float(q)) for p, q in body["asks"]]
    decode = codec.decode
    values = []
    for _ in range(rounds):
        book = OrderBook("binance", "BTC-USDT")
        book.load_snapshot(bids, asks, body["lastUpdateId"])
        apply = book.apply_delta
        start = time.perf_counter()
        for frame in frames:
            (delta,) = decode(frame, 0)
            assert isinstance(delta, BookDelta)
            apply(delta)
        values.append(len(frames) / (time.perf_counter() - start))
    return values


def run(rounds: int = 5) -> list[dict[str, Any]]:
    _, _, codec = _market()
    frames = _frames()
    results: list[dict[str, Any]] = []
    for kind, batch in frames.items():
        results.append(
            {
                "name": f"binance decode: {kind}",
                "unit": "frames/s",
                "values": _decode_rate(codec, batch, rounds),
                "higher_is_better": True,
            }
        )
    samples = _samples() * (N_FRAMES // 8)
    results.append(
        {
            "name": "binance decode: documented + recorded samples",
            "unit": "frames/s",
            "values": _decode_rate(_sample_codec(), samples, rounds),
            "higher_is_better": True,
        }
    )
    try:
        apply_values = _apply_rate(codec, rounds)
    except ImportError:  # the core's book engine is not installed
        apply_values = []
    if apply_values:
        results.append(
            {
                "name": "binance depthUpdate decode + book apply",
                "unit": "diffs/s",
                "values": apply_values,
                "higher_is_better": True,
            }
        )
    return results


def main() -> None:
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
