"""Deterministic frames and locally answered REST bodies for the side-by-side peer comparison.

Frames come from the simulator's venue encoders over a seeded market (identical every run), in the
form each venue sends them on a combined-stream connection, plus the real payloads kept as test
fixtures. Depth diffs are consecutive simulator diffs of one symbol merged into frames of at least
``DEPTH_MIN_LEVELS`` level changes (Binance's 100 ms diffs are such aggregates), after a
1,000-level snapshot: every implementation starts from that snapshot and applies the same diffs.

REST replies (exchangeInfo, markets, depth snapshots) come from the same venues, so every peer's
start-up calls can be answered on the spot without a socket.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.sim.model import SimDepth, SimEvent
from marketfeeder.sim.venue import HttpRequest, Venue
from marketfeeder_backpack.venue import BackpackVenue
from marketfeeder_binance.venue import BinanceVenue

ROOT = Path(__file__).resolve().parents[2]
BINANCE_FIXTURES = ROOT / "plugins" / "binance" / "tests" / "fixtures"
BACKPACK_FIXTURES = ROOT / "plugins" / "backpack" / "tests" / "fixtures"

SEED = 7
BOOK_LEVELS = 1_000
DEPTH_MIN_LEVELS = 8
BINANCE_DEPTH_SYMBOL = "BTC-USDT"
BACKPACK_DEPTH_SYMBOL = "BTC-USDC"

# Stream kind -> Binance stream-name suffix.
BINANCE_KINDS = {
    "bookTicker": "@bookTicker",
    "trade": "@trade",
    "aggTrade": "@aggTrade",
    "depthUpdate": "@depth@100ms",
    "24hrTicker": "@ticker",
    "kline": "@kline_1s",
}
# Stream kind -> Backpack stream-name prefix.
BACKPACK_KINDS = {
    "bookTicker": "bookTicker.",
    "trade": "trade.",
    "depth": "depth.",
    "ticker": "ticker.",
    "kline": "kline.1m.",
}


class _Conn:
    """A combined-stream connection as a venue's ``wrap`` sees it."""

    def __init__(self) -> None:
        self.id = 1
        self.path = "/stream"
        self.query: dict[str, str] = {}
        self.streams: set[str] = set()
        self.state: dict[str, Any] = {"combined": True, "us": False}


class LocalRest:
    """Answers REST GETs from a venue in-process: ``get(url) -> (status, body bytes)``.

    A path the venue does not serve is an error, never a network call.
    """

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.calls: list[str] = []
        #: path -> function rewriting the decoded JSON body (e.g. symbols added for the sample payloads).
        self.patches: dict[str, Any] = {}
        #: path -> body served as is: the depth snapshot taken before the diffs were generated.
        self.fixed: dict[str, bytes] = {}

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> tuple[int, bytes]:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query.update({k: str(v) for k, v in (params or {}).items()})
        self.calls.append(parts.path)
        fixed = self.fixed.get(parts.path)
        if fixed is not None:
            return 200, fixed
        reply = self.venue.handle_http(HttpRequest("GET", parts.path, query, {}))
        patch = self.patches.get(parts.path)
        if patch is not None and reply.status == 200:
            return reply.status, orjson.dumps(patch(orjson.loads(reply.body)))
        return reply.status, reply.body

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        status, body = self.get(url, params)
        if status != 200:
            raise RuntimeError(f"local REST {url} {params}: HTTP {status}: {body[:200]!r}")
        return orjson.loads(body)


class LocalHttpClient:
    """The async ``get_json`` our connectors call, answered by :class:`LocalRest`."""

    def __init__(self, rest: LocalRest) -> None:
        self.rest = rest

    async def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.rest.get_json(url, params)

    async def aclose(self) -> None:
        return None


def _merge(parts: list[SimDepth]) -> SimDepth:
    """Consecutive diffs of one symbol as one diff (the last size of each level wins)."""
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    for d in parts:
        bids.update(d.bids)
        asks.update(d.asks)
    last = parts[-1]
    return SimDepth(last.symbol, parts[0].first_id, last.last_id, list(bids.items()), list(asks.items()),
                    last.time_ns, last.engine_ns)


class VenueFrames:
    """One venue's frames per stream kind, its depth snapshot body and its REST answers."""

    def __init__(self, venue_name: str, n_frames: int) -> None:
        self.venue_name = venue_name
        self.engine = MarketEngine(SEED, default_instruments(venue_name), [venue_name], rate=1000.0,
                                   periodic_interval=0.01, book_levels=BOOK_LEVELS)
        if venue_name == "binance":
            self.venue: Venue = BinanceVenue(self.engine.view(venue_name))
            kinds, depth_kind, depth_symbol = BINANCE_KINDS, "depthUpdate", BINANCE_DEPTH_SYMBOL
        else:
            self.venue = BackpackVenue(self.engine.view(venue_name))
            kinds, depth_kind, depth_symbol = BACKPACK_KINDS, "depth", BACKPACK_DEPTH_SYMBOL
        self.rest = LocalRest(self.venue)
        if venue_name == "binance":
            self.rest.patches["/api/v3/exchangeInfo"] = _with_sample_symbols
        self.depth_symbol = depth_symbol
        self.depth_native = self._native(depth_symbol)
        self.snapshot_body = b""
        self.frames = self._generate(kinds, depth_kind, n_frames)
        # Every peer's snapshot request gets this one snapshot, which the generated diffs join.
        self.rest.fixed["/api/v3/depth" if venue_name == "binance" else "/api/v1/depth"] = self.snapshot_body
        self.depth_kind = depth_kind

    def _native(self, symbol: str) -> str:
        return symbol.replace("-", "") if self.venue_name == "binance" else symbol.replace("-", "_")

    def _stream(self, kind_key: str, symbol: str) -> str:
        native = self._native(symbol)
        if self.venue_name == "binance":
            return native.lower() + kind_key
        return kind_key + native

    def _snapshot_body(self) -> bytes:
        if self.venue_name == "binance":
            status, body = self.rest.get("/api/v3/depth", {"symbol": self.depth_native, "limit": BOOK_LEVELS})
        else:
            status, body = self.rest.get("/api/v1/depth", {"symbol": self.depth_native, "limit": BOOK_LEVELS})
        if status != 200:
            raise RuntimeError(f"{self.venue_name} depth snapshot: HTTP {status}")
        return body

    def _generate(self, kinds: Mapping[str, str], depth_kind: str, n: int) -> dict[str, list[str]]:
        symbols = [i.symbol for i in default_instruments(self.venue_name) if i.kind.value == "spot"]
        by_stream: dict[str, str] = {}
        for kind, key in kinds.items():
            for symbol in symbols:
                if kind != depth_kind or symbol == self.depth_symbol:
                    by_stream[self._stream(key, symbol)] = kind
        wanted = set(by_stream)
        conn = _Conn()
        out: dict[str, list[str]] = {kind: [] for kind in kinds}
        pending: list[SimDepth] = []
        pending_levels = 0
        depth_stream = self._stream(kinds[depth_kind], self.depth_symbol)
        steps = 0
        venue_name = self.venue_name
        while min(len(v) for v in out.values()) < n:
            steps += 1
            if steps > 2_000_000:
                raise RuntimeError(f"{venue_name}: the simulator did not produce {n} frames of each kind")
            for _, event in self.engine.step():
                if isinstance(event, SimDepth):
                    if event.symbol != self.depth_symbol:
                        continue
                    pending.append(event)
                    pending_levels += len(event.bids) + len(event.asks)
                    if not self.snapshot_body:
                        # The snapshot right after the first diff (L = its u): the first frame is that
                        # diff merged with later ones, so it straddles L as the documented procedure wants.
                        self.snapshot_body = self._snapshot_body()
                        last_id = int(orjson.loads(self.snapshot_body)["lastUpdateId"])
                        if last_id != event.last_id:
                            raise RuntimeError(f"{venue_name}: snapshot id {last_id} != diff u {event.last_id}")
                        continue
                    if pending_levels < DEPTH_MIN_LEVELS:
                        continue
                    merged: SimEvent = _merge(pending)
                    pending, pending_levels = [], 0
                    if len(out[depth_kind]) < n:
                        for frame in self.venue.encode(merged, {depth_stream}):
                            out[depth_kind].append(self.venue.wrap(conn, frame))  # type: ignore[arg-type]
                    continue
                for frame in self.venue.encode(event, wanted):
                    kind = by_stream.get(frame.stream)
                    if kind is not None and kind != depth_kind and len(out[kind]) < n:
                        out[kind].append(self.venue.wrap(conn, frame))  # type: ignore[arg-type]
        return out

    def depth_levels_mean(self) -> float:
        frames = self.frames[self.depth_kind]
        total = 0
        for f in frames:
            data = orjson.loads(f)["data"]
            total += len(data["b"]) + len(data["a"])
        return total / len(frames)


def _compact(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def binance_samples() -> list[str]:
    """The documented and recorded Binance payloads every peer consumes, combined-stream wrapped.

    Only stream kinds every peer handles without a book: bookTicker, aggTrade and kline.
    """
    frames: list[str] = []
    for name, stream in (("bookTicker.json", "@bookTicker"), ("aggTrade.json", "@aggTrade"),
                         ("kline.json", "@kline_1m"), ("nautilus_ws_spot_agg_trade.json", None)):
        payload = orjson.loads((BINANCE_FIXTURES / name).read_bytes())
        if stream is None:
            frames.append(_compact(payload))  # recorded already wrapped
        else:
            frames.append(_compact({"stream": payload["s"].lower() + stream, "data": payload}))
    return frames


def _with_sample_symbols(body: dict[str, Any]) -> dict[str, Any]:
    """exchangeInfo plus the symbols the sample payloads name (BNBBTC, BNBUSDT), shaped like BTCUSDT."""
    symbols = body["symbols"]
    template = next(s for s in symbols if s["symbol"] == "BTCUSDT")
    have = {s["symbol"] for s in symbols}
    for native, base, quote in (("BNBBTC", "BNB", "BTC"), ("BNBUSDT", "BNB", "USDT"), ("ETHUSDT", "ETH", "USDT")):
        if native not in have:
            symbols.append({**template, "symbol": native, "baseAsset": base, "quoteAsset": quote})
    return body


def backpack_recorded() -> dict[str, list[str]]:
    """Real recorded Backpack frames (already combined-stream wrapped) by payload kind."""
    out: dict[str, list[str]] = {}
    path = BACKPACK_FIXTURES / "bbgo_backpack_ws_raw_first56lines.jsonl"
    for line in path.read_bytes().splitlines():
        if line.strip():
            msg = orjson.loads(line)
            out.setdefault(msg["data"]["e"], []).append(_compact(msg))
    return out


def cycle(frames: list[str], n: int) -> list[str]:
    """``n`` frames by repeating a short list (real captures are short)."""
    it: Iterator[str] = iter(frames * (n // max(1, len(frames)) + 1))
    return [next(it) for _ in range(n)]
