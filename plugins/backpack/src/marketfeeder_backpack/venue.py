"""Backpack Exchange venue for the loopback simulator: its wire format, control messages and REST.

What it reproduces (from the OpenAPI spec and the real 2026 captures):

- One WebSocket path ``/``; ``{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[...]}`` with **no reply**
  on success. An unknown or malformed stream name, a bad request or unknown method gets an error frame
  ``{"id":null,"error":{"code":N,"message":"..."}}`` (the shape Backpack sends; the only attested code
  is 4003 for a bad signature, so the codes below are this simulator's own).
- Every frame is wrapped ``{"data":{...},"stream":"..."}``, payload keys in the captured (sorted) order.
- Times in µs; kline ``t``/``T`` ISO-8601 naive-UTC strings with ``T`` the end boundary and prices
  ``null`` when no trade happened; mark price ``n`` in ms; trade order ids as strings.
- ``options["string_numbers"]``: ``True`` sends ``E``/``T`` and ``bookTicker.u`` as numeric strings (as
  in the 2025 and documented frames), ``"mixed"`` alternates record by record, default ``False`` sends
  integers (as in the 2026 capture). Depth ``U``/``u`` and trade ``t`` stay integers in every source.
- ``depth.200ms|600ms|1000ms.<S>`` carry the same diffs as ``depth.<S>`` (each diff as it happens, not
  re-aggregated): valid for a client, since the ``U``/``u`` rules are identical.
- REST: ``/api/v1/markets``, ``/market``, ``/depth`` (both sides ascending, ``lastUpdateId`` a string,
  ``timestamp`` µs; the market engine decides whether the snapshot lags), ``/klines`` (``startTime``
  required, seconds; ``"YYYY-MM-DD HH:MM:SS"`` strings), ``/ticker``, ``/tickers``, ``/time`` (ms,
  text/plain), ``/ping``, ``/status``. Bad parameters get 400 ``{"code":"INVALID_CLIENT_REQUEST",...}``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from marketfeeder.models import DataType, MarketKind
from marketfeeder.sim.model import (
    SimBookTicker,
    SimDepth,
    SimEvent,
    SimInstrument,
    SimKline,
    SimMarkPrice,
    SimTicker,
    SimTrade,
)
from marketfeeder.sim.venue import (
    HttpReply,
    HttpRequest,
    SimConnection,
    SimFrame,
    Venue,
    VenueMarket,
    VenueRules,
    WsReject,
)

from .connector import DEPTH_LIMITS, KLINE_INTERVALS

__all__ = ["ERROR_INVALID_REQUEST", "ERROR_INVALID_STREAM", "BackpackVenue", "error_frame", "native_of"]

#: Error codes of this simulator's error frames (Backpack documents none for public streams).
ERROR_INVALID_REQUEST = 4000
ERROR_INVALID_STREAM = 4005

_DEPTH_INFIXES = ("", "200ms.", "600ms.", "1000ms.")
_ORDERBOOK = DataType.ORDERBOOK
_TRADES = DataType.TRADES
_BOOK_TICKER = DataType.BOOK_TICKER
_TICKER = DataType.TICKER
_KLINES = DataType.KLINES
_MARK_PRICE = DataType.MARK_PRICE
_dumps = orjson.dumps


def native_of(symbol: str) -> str:
    """``SOL-USDC`` -> ``SOL_USDC``, ``SOL-USDC-PERP`` -> ``SOL_USDC_PERP``."""
    return symbol.replace("-", "_")


def error_frame(code: int, message: str) -> str:
    return _dumps({"id": None, "error": {"code": code, "message": message}}).decode()


def _iso(ns: int, sep: str = "T") -> str:
    return time.strftime(f"%Y-%m-%d{sep}%H:%M:%S", time.gmtime(ns // 1_000_000_000))


def _end_boundary(close_ns: int) -> int:
    """The interval's end boundary (Backpack's kline ``T``) from its last nanosecond, whole seconds."""
    return -(-(close_ns + 1) // 1_000_000_000) * 1_000_000_000


def _rest_error(status: int, message: str, code: str = "INVALID_CLIENT_REQUEST") -> HttpReply:
    return HttpReply(status, _dumps({"code": code, "message": message}))


def _json(body: Any) -> HttpReply:
    return HttpReply(200, _dumps(body))


class BackpackVenue(Venue):
    name: ClassVar[str] = "backpack"
    rules: ClassVar[VenueRules] = VenueRules(ping_interval=60.0, pong_timeout=120.0, max_lifetime=None)
    fault_paths: ClassVar[tuple[str, ...]] = ("/api/v1/depth", "/api/v1/klines")

    def __init__(self, market: VenueMarket, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(market, options)
        mode = self.options.get("string_numbers", False)
        if mode not in (False, True, "mixed"):
            raise ValueError(f"backpack venue: string_numbers must be false, true or 'mixed', got {mode!r}")
        self._string_mode: bool | str = mode
        self._records = 0
        self._by_native: dict[str, SimInstrument] | None = None
        self._names: dict[tuple[str, str], tuple[str, ...]] = {}

    # --- instruments ------------------------------------------------------------------------------

    def _instruments(self) -> dict[str, SimInstrument]:
        if self._by_native is None:
            self._by_native = {native_of(i.symbol): i for i in self.market.instruments()}
        return self._by_native

    def stream_error(self, stream: Any) -> str | None:
        """Why ``stream`` is not a valid public stream name, or None when it is."""
        if not isinstance(stream, str):
            return f"stream names are strings, got {stream!r}"
        kind, _, rest = stream.partition(".")
        if kind == "kline":
            interval, _, native = rest.partition(".")
            if interval not in KLINE_INTERVALS:
                return f"invalid kline interval in {stream!r}"
        elif kind == "depth":
            speed, dot, tail = rest.partition(".")
            native = tail if dot and speed in ("200ms", "600ms", "1000ms") else rest
        elif kind in ("bookTicker", "trade", "ticker", "markPrice"):
            native = rest
        else:
            return f"unknown stream type in {stream!r}"
        if native not in self._instruments():
            return f"unknown symbol in {stream!r}"
        return None

    # --- WebSocket ------------------------------------------------------------------------------

    def on_connect(self, conn: SimConnection) -> None:
        if conn.path not in ("/", ""):
            raise WsReject(404, f"no WebSocket endpoint at {conn.path!r}; Backpack serves streams at '/'")

    def on_message(self, conn: SimConnection, text: str) -> list[str]:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [error_frame(ERROR_INVALID_REQUEST, "Invalid request: not JSON")]
        if not isinstance(request, dict):
            return [error_frame(ERROR_INVALID_REQUEST, "Invalid request: expected an object")]
        method = request.get("method")
        params = request.get("params")
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return [error_frame(ERROR_INVALID_REQUEST, f"Invalid method: {method!r}")]
        if not isinstance(params, list):
            return [error_frame(ERROR_INVALID_REQUEST, "Invalid request: params must be a list of streams")]
        replies: list[str] = []
        for stream in params:
            if method == "UNSUBSCRIBE":
                if isinstance(stream, str):
                    conn.streams.discard(stream)
                continue
            problem = self.stream_error(stream)
            if problem is None:
                conn.streams.add(stream)
            else:
                replies.append(error_frame(ERROR_INVALID_STREAM, f"Invalid stream: {problem}"))
        return replies  # success is silent: Backpack sends no acknowledgement

    def wrap(self, conn: SimConnection, frame: SimFrame) -> str:
        return f'{{"data":{frame.payload},"stream":"{frame.stream}"}}'

    # --- encoding -------------------------------------------------------------------------------

    def _stream_names(self, kind: str, symbol: str) -> tuple[str, ...]:
        key = (kind, symbol)
        names = self._names.get(key)
        if names is None:
            native = native_of(symbol)
            if kind == "depth":  # the aggregated speeds carry the same diffs
                names = tuple(f"depth.{infix}{native}" for infix in _DEPTH_INFIXES)
            else:  # "bookTicker", "kline.1m", ...
                names = (f"{kind}.{native}",)
            self._names[key] = names
        return names

    def _as_strings(self) -> bool:
        mode = self._string_mode
        if mode == "mixed":
            self._records += 1
            return self._records % 2 == 0
        return mode is True

    def encode(self, event: SimEvent, wanted: set[str]) -> list[SimFrame]:
        if isinstance(event, SimDepth):
            kind, data_type = "depth", _ORDERBOOK
        elif isinstance(event, SimBookTicker):
            kind, data_type = "bookTicker", _BOOK_TICKER
        elif isinstance(event, SimTrade):
            kind, data_type = "trade", _TRADES
        elif isinstance(event, SimTicker):
            kind, data_type = "ticker", _TICKER
        elif isinstance(event, SimKline):
            kind, data_type = f"kline.{event.interval}", _KLINES
        elif isinstance(event, SimMarkPrice):
            kind, data_type = "markPrice", _MARK_PRICE
        else:
            return []
        streams = [name for name in self._stream_names(kind, event.symbol) if name in wanted]
        if not streams:
            return []
        payload = self.payload(event)
        return [SimFrame(stream, payload, data_type) for stream in streams]

    def payload(self, event: SimEvent) -> str:
        """The raw JSON payload Backpack sends for ``event`` (keys in the captured order)."""
        strings = self._as_strings()
        native = native_of(event.symbol)
        E: int | str = event.time_ns // 1000
        if strings:
            E = str(E)
        body: dict[str, Any]
        if isinstance(event, SimDepth):
            T: int | str = event.engine_ns // 1000
            body = {
                "E": E,
                "T": str(T) if strings else T,
                "U": event.first_id,
                "a": event.asks,
                "b": event.bids,
                "e": "depth",
                "s": native,
                "u": event.last_id,
            }
        elif isinstance(event, SimBookTicker):
            T = event.engine_ns // 1000
            body = {
                "A": event.ask_size,
                "B": event.bid_size,
                "E": E,
                "T": str(T) if strings else T,
                "a": event.ask,
                "b": event.bid,
                "e": "bookTicker",
                "s": native,
                "u": str(event.update_id) if strings else event.update_id,
            }
        elif isinstance(event, SimTrade):
            T = event.engine_ns // 1000
            body = {
                "E": E,
                "T": str(T) if strings else T,
                "a": str(event.sell_order_id),
                "b": str(event.buy_order_id),
                "e": "trade",
                "m": event.buyer_is_maker,
                "p": event.price,
                "q": event.size,
                "s": native,
                "t": event.trade_id,
            }
        elif isinstance(event, SimTicker):
            body = {
                "E": E,
                "V": event.quote_volume,
                "c": event.last,
                "e": "ticker",
                "h": event.high,
                "l": event.low,
                "n": event.trade_count,
                "o": event.open,
                "s": native,
                "v": event.volume,
            }
        elif isinstance(event, SimKline):
            body = {
                "E": E,
                "T": _iso(_end_boundary(event.close_ns)),
                "X": event.closed,
                "c": event.close,
                "e": "kline",
                "h": event.high,
                "l": event.low,
                "n": event.trade_count,
                "o": event.open,
                "s": native,
                "t": _iso(event.open_ns),
                "v": event.volume,
            }
        else:  # SimMarkPrice
            T = event.engine_ns // 1000
            body = {
                "E": E,
                "T": str(T) if strings else T,
                "e": "markPrice",
                "f": event.funding_rate,
                "i": event.index,
                "n": event.next_funding_ns // 1_000_000,
                "p": event.mark,
                "s": native,
            }
        return _dumps(body).decode()

    # --- REST -----------------------------------------------------------------------------------

    def handle_http(self, request: HttpRequest) -> HttpReply:
        if request.method != "GET":
            return _rest_error(405, f"{request.method} is not allowed on {request.path}")
        path = request.path.rstrip("/")
        query = request.query
        if path == "/api/v1/depth":
            return self._depth(query)
        if path == "/api/v1/markets":
            wanted_type = query.get("marketType")
            return _json(
                [
                    self._market(native, i)
                    for native, i in self._instruments().items()
                    if wanted_type is None or self._market_type(i) == wanted_type
                ]
            )
        if path == "/api/v1/market":
            instrument_or_error = self._require_symbol(query)
            if isinstance(instrument_or_error, HttpReply):
                return instrument_or_error
            return _json(self._market(native_of(instrument_or_error.symbol), instrument_or_error))
        if path == "/api/v1/klines":
            return self._klines(query)
        if path == "/api/v1/ticker":
            instrument_or_error = self._require_symbol(query)
            if isinstance(instrument_or_error, HttpReply):
                return instrument_or_error
            return _json(self._ticker(instrument_or_error))
        if path == "/api/v1/tickers":
            return _json([self._ticker(i) for i in self._instruments().values()])
        if path == "/api/v1/time":
            return HttpReply(200, str(self.market.now_ns() // 1_000_000).encode(), "text/plain")
        if path == "/api/v1/ping":
            return HttpReply(200, b"pong", "text/plain")
        if path == "/api/v1/status":
            return _json({"message": None, "status": "Ok"})
        return _rest_error(404, f"no endpoint {request.path}", code="NOT_FOUND")

    def _require_symbol(self, query: Mapping[str, str]) -> SimInstrument | HttpReply:
        native = query.get("symbol")
        if not native:
            return _rest_error(400, "Missing required parameter: symbol")
        instrument = self._instruments().get(native)
        if instrument is None:
            return _rest_error(400, f"Invalid symbol: {native}")
        return instrument

    @staticmethod
    def _market_type(instrument: SimInstrument) -> str:
        return "PERP" if instrument.kind is MarketKind.PERP else "SPOT"

    def _market(self, native: str, instrument: SimInstrument) -> dict[str, Any]:
        perp = instrument.kind is MarketKind.PERP
        return {
            "baseSymbol": instrument.base,
            "createdAt": "2025-01-21T06:34:54.691858",
            "filters": {
                "price": {
                    "borrowEntryFeeMaxMultiplier": None,
                    "borrowEntryFeeMinMultiplier": None,
                    "discoveryBoundBand": None,
                    "maxImpactMultiplier": "1.05",
                    "maxMultiplier": "1.25",
                    "maxPrice": None,
                    "maxPriceUpdateMultiplier": None,
                    "meanMarkPriceBand": {"maxMultiplier": "1.15", "minMultiplier": "0.85"},
                    "meanPremiumBand": {"tolerancePct": "0.05"} if perp else None,
                    "minImpactMultiplier": "0.95",
                    "minMultiplier": "0.75",
                    "minPrice": instrument.tick_size,
                    "minPriceUpdateMultiplier": None,
                    "tickSize": instrument.tick_size,
                },
                "quantity": {
                    "maxQuantity": None,
                    "minQuantity": instrument.step_size,
                    "stepSize": instrument.step_size,
                },
            },
            "fundingInterval": 28800000 if perp else None,
            "fundingRateLowerBound": "-100" if perp else None,
            "fundingRateUpperBound": "100" if perp else None,
            "imfFunction": None,
            "marketType": self._market_type(instrument),
            "mmfFunction": None,
            "openInterestLimit": "4000000" if perp else "0",
            "orderBookState": "Open" if instrument.active else "Closed",
            "positionLimitWeight": None,
            "quoteSymbol": instrument.quote,
            "rwaMarketType": None,
            "symbol": native,
            "visible": True,
        }

    def _depth(self, query: Mapping[str, str]) -> HttpReply:
        instrument = self._require_symbol(query)
        if isinstance(instrument, HttpReply):
            return instrument
        raw_limit = query.get("limit", "1000")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = -1
        if limit not in DEPTH_LIMITS:
            return _rest_error(400, f"Invalid limit {raw_limit!r}: one of {', '.join(map(str, DEPTH_LIMITS))}")
        snapshot = self.market.snapshot(instrument.symbol, limit)
        body = {
            "asks": [list(level) for level in snapshot.asks],  # best first = ascending
            "bids": [list(level) for level in reversed(snapshot.bids)],  # ascending: best bid last
            "lastUpdateId": str(snapshot.last_id),
            "timestamp": snapshot.time_ns // 1000,
        }
        return _json(body)

    def _klines(self, query: Mapping[str, str]) -> HttpReply:
        instrument = self._require_symbol(query)
        if isinstance(instrument, HttpReply):
            return instrument
        interval = query.get("interval")
        if interval not in KLINE_INTERVALS:
            return _rest_error(400, f"Invalid interval: {interval!r}")
        start = query.get("startTime")
        if start is None:
            return _rest_error(400, "Missing required parameter: startTime")
        try:
            start_ns = int(start) * 1_000_000_000  # seconds
            end = query.get("endTime")
            end_ns = None if end is None else int(end) * 1_000_000_000
        except ValueError:
            return _rest_error(400, "startTime and endTime are integer seconds")
        try:
            klines = self.market.klines(instrument.symbol, interval, start_ns, end_ns, 1000)
        except ValueError as exc:  # an interval the market engine does not keep
            return _rest_error(400, f"Invalid interval: {exc}")
        return _json(
            [
                {
                    "close": k.close,
                    "end": _iso(_end_boundary(k.close_ns), " "),
                    "high": k.high,
                    "low": k.low,
                    "open": k.open,
                    "quoteVolume": k.quote_volume,
                    "start": _iso(k.open_ns, " "),
                    "trades": str(k.trade_count),
                    "volume": k.volume,
                }
                for k in klines
            ]
        )

    def _ticker(self, instrument: SimInstrument) -> dict[str, Any]:
        t = self.market.ticker(instrument.symbol)
        try:
            change_fraction = f"{float(t.price_change_pct) / 100:.6f}"  # Backpack sends a fraction
        except ValueError:
            change_fraction = "0"
        return {
            "firstPrice": t.open,
            "high": t.high,
            "lastPrice": t.last,
            "low": t.low,
            "priceChange": t.price_change,
            "priceChangePercent": change_fraction,
            "quoteVolume": t.quote_volume,
            "symbol": native_of(instrument.symbol),
            "trades": str(t.trade_count),
            "volume": t.volume,
        }
