"""A loopback Binance Spot: the same wire format, control replies, limits and REST bodies.

The simulator server owns sockets, the clock, fan-out and faults; this module owns what is Binance's:
``/ws/<stream>`` (raw) and ``/stream?streams=a/b/c`` (combined) connections, the live
``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``/``SET_PROPERTY``/``GET_PROPERTY`` protocol with
its exact replies and error codes, the stream payloads (key sets as in the API docs, prices and
quantities as strings, ids and times as integers; times in ms, or µs on a connection opened with
``timeUnit=MICROSECOND``), ``serverShutdown``, and the REST endpoints a connector needs.

The rules (:attr:`BinanceVenue.rules`) are Binance's: 20 s pings, 60 s pong timeout, 24 h lifetime
with a ``serverShutdown`` notice before it, 5 incoming messages a second, 1024 streams. The simulator
server overrides them per run from ``venue_options`` (e.g. ``{"max_lifetime": 3,
"shutdown_notice_before": 1}`` to exercise rotation).

Simulator choices where Binance's docs are silent: a stream name that is malformed or names an
unknown symbol is refused (400 on connect, an error ``code 2`` reply to ``SUBSCRIBE``) instead of
being accepted and never delivering; ``<s>@depth`` carries the same updates as ``<s>@depth@100ms``
(the engine's update cadence) rather than re-aggregating them per second.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import orjson

from marketfeeder.models import DataType, MarketKind
from marketfeeder.sim.model import (
    SimBookTicker,
    SimDepth,
    SimEvent,
    SimInstrument,
    SimKline,
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

__all__ = ["MAX_DEPTH_LIMIT", "SHUTDOWN_STREAM", "BinanceVenue"]

SHUTDOWN_STREAM = "!serverShutdown"
MAX_DEPTH_LIMIT = 5000
_KLINE_INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)
_INTERVAL_SET = frozenset(_KLINE_INTERVALS)
_PLAIN_KINDS = frozenset({"trade", "aggTrade", "bookTicker", "ticker", "depth", "depth@100ms"})
_ID_STRING = re.compile(r"[A-Za-z0-9]{1,36}")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_TIME_UNITS = {"MICROSECOND": True, "microsecond": True, "MILLISECOND": False, "millisecond": False}
_INT64 = (-(2**63), 2**63 - 1)

_OB = DataType.ORDERBOOK
_TR = DataType.TRADES
_BT = DataType.BOOK_TICKER
_TK = DataType.TICKER
_KL = DataType.KLINES
_dumps = orjson.dumps

#: Encoded frames remembered for connections that want µs times (see ``wrap``).
_US_CACHE_SIZE = 8192


def _ms(ns: int) -> int:
    return ns // 1_000_000


def _us(ns: int) -> int:
    return ns // 1_000


def _fmt8(value: str) -> str:
    """A decimal string with Binance's eight places (``"0.01"`` -> ``"0.01000000"``)."""
    try:
        return f"{Decimal(value):.8f}"
    except InvalidOperation:
        return value


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> HttpReply:
    return HttpReply(status, _dumps(body), "application/json", dict(headers or {}))


def _error(code: int, msg: str, status: int = 400) -> HttpReply:
    return _json(status, {"code": code, "msg": msg})


class BinanceVenue(Venue):
    """Binance Spot served on loopback by :class:`marketfeeder.sim.server.SimServer`."""

    name: ClassVar[str] = "binance"
    rules: ClassVar[VenueRules] = VenueRules(
        ping_interval=20.0,
        pong_timeout=60.0,
        max_lifetime=24 * 3600.0,
        # Binance no longer states how early serverShutdown comes (its first text said 10 minutes).
        shutdown_notice_before=600.0,
        max_incoming_per_second=5.0,
        max_streams=1024,
    )
    # Snapshot fetches are what REST faults (429/500, timeouts) should hit; start-up calls stay clean.
    fault_paths: ClassVar[tuple[str, ...]] = ("/api/v3/depth",)

    def __init__(self, market: VenueMarket, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(market, options)
        self._instruments: dict[str, SimInstrument] = {}  # native -> instrument
        self._native: dict[str, str] = {}  # normalized -> native
        self._lower: dict[str, str] = {}  # normalized -> lowercase native (stream prefix)
        self._by_lower: dict[str, str] = {}  # lowercase native -> normalized
        self._last_close: dict[str, str] = {}
        self._us_cache: dict[str, tuple[SimEvent, str]] = {}
        self._load_instruments()

    # --- symbols ---------------------------------------------------------------------------------

    def _load_instruments(self) -> None:
        for inst in self.market.instruments():
            if inst.kind is not MarketKind.SPOT:
                continue  # Binance Spot lists no derivatives
            native = f"{inst.base}{inst.quote}".upper()
            self._instruments[native] = inst
            self._native[inst.symbol] = native
            self._lower[inst.symbol] = native.lower()
            self._by_lower[native.lower()] = inst.symbol

    def native(self, symbol: str) -> str:
        """Binance's form of a normalized symbol (``BTC-USDT`` -> ``BTCUSDT``)."""
        if symbol not in self._native:
            self._load_instruments()
        return self._native[symbol]

    def _stream_error(self, name: Any) -> str | None:
        if not isinstance(name, str):
            return f"Invalid request: stream name must be a string, got {name!r}"
        prefix, sep, kind = name.partition("@")
        if not sep or not (kind in _PLAIN_KINDS or (kind.startswith("kline_") and kind[6:] in _INTERVAL_SET)):
            return f"Invalid request: invalid stream name {name!r}"
        if prefix not in self._by_lower:
            self._load_instruments()
            if prefix not in self._by_lower:
                return f"Invalid request: unknown symbol in stream {name!r}"
        return None

    # --- WebSocket: connections and control messages -----------------------------------------------

    def on_connect(self, conn: SimConnection) -> None:
        path = conn.path.rstrip("/")
        if path == "/stream":
            combined = True
            raw = conn.query.get("streams", "")
        elif path == "/ws" or path.startswith("/ws/"):
            combined = False
            raw = path[4:]
        else:
            raise WsReject(404, f"unknown path {conn.path!r}: use /ws/<stream> or /stream?streams=<s1>/<s2>")
        unit = conn.query.get("timeUnit")
        if unit is not None and unit not in _TIME_UNITS:
            raise WsReject(400, f"invalid timeUnit {unit!r}: use MICROSECOND or MILLISECOND")
        streams = [s for s in raw.split("/") if s]
        for stream in streams:
            problem = self._stream_error(stream)
            if problem:
                raise WsReject(400, problem)
        limit = self.rules.max_streams
        if limit is not None and len(set(streams)) > limit:
            raise WsReject(400, f"too many streams: {len(set(streams))} > {limit} per connection")
        conn.state["combined"] = combined
        conn.state["us"] = bool(unit is not None and _TIME_UNITS[unit])
        conn.streams.update(streams)

    def on_message(self, conn: SimConnection, text: str) -> list[str]:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return [self._reply_error(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}")]
        if not isinstance(request, dict):
            return [self._reply_error(2, "Invalid request: request must be a JSON object")]
        request_id = request.get("id")
        if not self._valid_id(request_id):
            return [self._reply_error(2, "Invalid request: request ID must be an integer, an alphanumeric string of at most 36 characters, or null")]
        method = request.get("method")
        if method is None:
            return [self._reply_error(2, "Invalid request: missing field `method`", request_id)]
        if method not in _METHODS:
            return [self._reply_error(2, f"Invalid request: unknown method {method!r}", request_id)]
        params = request.get("params", [])
        if not isinstance(params, list):
            return [self._reply_error(2, "Invalid request: `params` must be a list", request_id)]
        if method == "SUBSCRIBE":
            return [self._subscribe(conn, params, request_id)]
        if method == "UNSUBSCRIBE":
            for name in params:
                if not isinstance(name, str):
                    return [self._reply_error(2, f"Invalid request: stream name must be a string, got {name!r}", request_id)]
            conn.streams.difference_update(params)
            return [self._reply(None, request_id)]
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                return [self._reply_error(2, "Invalid request: too many parameters", request_id)]
            return [self._reply(sorted(conn.streams), request_id)]
        if method == "SET_PROPERTY":
            if len(params) != 2:
                return [self._reply_error(2, "Invalid request: SET_PROPERTY takes [property, value]", request_id)]
            prop, value = params
            if prop != "combined":
                return [self._reply_error(0, "Unknown property", request_id)]
            if type(value) is not bool:
                return [self._reply_error(1, "Invalid value type: expected Boolean", request_id)]
            conn.state["combined"] = value
            return [self._reply(None, request_id)]
        # GET_PROPERTY
        if len(params) != 1:
            return [self._reply_error(2, "Invalid request: GET_PROPERTY takes [property]", request_id)]
        if params[0] != "combined":
            return [self._reply_error(0, "Unknown property", request_id)]
        return [self._reply(bool(conn.state.get("combined", False)), request_id)]

    def _subscribe(self, conn: SimConnection, params: list[Any], request_id: Any) -> str:
        for name in params:
            problem = self._stream_error(name)
            if problem:
                return self._reply_error(2, problem, request_id)
        limit = self.rules.max_streams
        total = len(conn.streams | set(params))
        if limit is not None and total > limit:
            return self._reply_error(
                2, f"Invalid request: too many streams: {total} > {limit} per connection", request_id
            )
        conn.streams.update(params)
        return self._reply(None, request_id)

    @staticmethod
    def _valid_id(value: Any) -> bool:
        if value is None:
            return True
        if type(value) is int:
            return _INT64[0] <= value <= _INT64[1]
        return type(value) is str and _ID_STRING.fullmatch(value) is not None

    @staticmethod
    def _reply(result: Any, request_id: Any) -> str:
        return _dumps({"result": result, "id": request_id}).decode()

    @staticmethod
    def _reply_error(code: int, msg: str, request_id: Any = ...) -> str:
        body: dict[str, Any] = {"code": code, "msg": msg}
        if request_id is not ...:
            body["id"] = request_id
        return _dumps(body).decode()

    # --- WebSocket: market payloads -----------------------------------------------------------------

    def _prefix(self, symbol: str) -> str | None:
        prefix = self._lower.get(symbol)
        if prefix is None:
            self._load_instruments()
            prefix = self._lower.get(symbol)
        return prefix

    def encode(self, event: SimEvent, wanted: set[str]) -> list[SimFrame]:
        frames: list[SimFrame] = []
        prefix = self._lower.get(event.symbol) or self._prefix(event.symbol)
        if prefix is None:
            return frames  # not a market of this venue (e.g. a perpetual)
        kind = type(event)
        if kind is SimDepth:
            for suffix in ("@depth@100ms", "@depth"):
                stream = prefix + suffix
                if stream in wanted:
                    frames.append(self._frame(stream, event, "depth", _OB))
        elif kind is SimTrade:
            if prefix + "@trade" in wanted:
                frames.append(self._frame(prefix + "@trade", event, "trade", _TR))
            if prefix + "@aggTrade" in wanted:
                frames.append(self._frame(prefix + "@aggTrade", event, "aggTrade", _TR))
        elif kind is SimBookTicker:
            if prefix + "@bookTicker" in wanted:
                frames.append(self._frame(prefix + "@bookTicker", event, "bookTicker", _BT))
        elif kind is SimTicker:
            if prefix + "@ticker" in wanted:
                frames.append(self._frame(prefix + "@ticker", event, "ticker", _TK))
        elif kind is SimKline:
            assert isinstance(event, SimKline)
            if event.close is not None:
                self._last_close[event.symbol] = event.close
            stream = f"{prefix}@kline_{event.interval}"
            if stream in wanted:
                frames.append(self._frame(stream, event, "kline", _KL))
        # SimMarkPrice: Binance Spot has no mark price stream.
        return frames

    def _frame(self, stream: str, event: SimEvent, kind: str, data_type: DataType) -> SimFrame:
        payload = self.payload(event, kind)
        cache = self._us_cache
        if len(cache) >= _US_CACHE_SIZE:
            cache.clear()
        cache[payload] = (event, kind)
        return SimFrame(stream, payload, data_type)

    def payload(self, event: SimEvent, kind: str, us: bool = False) -> str:
        """The raw JSON payload of ``event`` on a ``kind`` stream (trade, aggTrade, depth, bookTicker,
        ticker, kline), with times in ms or, when ``us``, in µs."""
        t = _us if us else _ms
        if kind == "depth":
            assert isinstance(event, SimDepth)
            body: dict[str, Any] = {
                "e": "depthUpdate", "E": t(event.time_ns), "s": self.native(event.symbol),
                "U": event.first_id, "u": event.last_id, "b": event.bids, "a": event.asks,
            }
        elif kind == "trade":
            assert isinstance(event, SimTrade)
            body = {
                "e": "trade", "E": t(event.time_ns), "s": self.native(event.symbol), "t": event.trade_id,
                "p": event.price, "q": event.size, "T": t(event.engine_ns), "m": event.buyer_is_maker, "M": True,
            }
        elif kind == "aggTrade":
            assert isinstance(event, SimTrade)
            # Every simulated fill is its own aggregate: the aggregate id is the trade id.
            body = {
                "e": "aggTrade", "E": t(event.time_ns), "s": self.native(event.symbol), "a": event.trade_id,
                "p": event.price, "q": event.size, "f": event.trade_id, "l": event.trade_id,
                "T": t(event.engine_ns), "m": event.buyer_is_maker, "M": True,
            }
        elif kind == "bookTicker":
            assert isinstance(event, SimBookTicker)
            body = {
                "u": event.update_id, "s": self.native(event.symbol), "b": event.bid, "B": event.bid_size,
                "a": event.ask, "A": event.ask_size,
            }
        elif kind == "ticker":
            assert isinstance(event, SimTicker)
            body = {
                "e": "24hrTicker", "E": t(event.time_ns), "s": self.native(event.symbol),
                "p": event.price_change, "P": event.price_change_pct, "w": event.vwap, "x": event.prev_close,
                "c": event.last, "Q": event.last_size, "b": event.bid, "B": event.bid_size,
                "a": event.ask, "A": event.ask_size, "o": event.open, "h": event.high, "l": event.low,
                "v": event.volume, "q": event.quote_volume, "O": t(event.open_time_ns),
                "C": t(event.close_time_ns), "F": event.first_trade_id, "L": event.last_trade_id,
                "n": event.trade_count,
            }
        elif kind == "kline":
            assert isinstance(event, SimKline)
            body = {"e": "kline", "E": t(event.time_ns), "s": self.native(event.symbol), "k": self._kline_body(event, t)}
        else:
            raise ValueError(f"binance venue: unknown payload kind {kind!r}")
        return _dumps(body).decode()

    def _kline_body(self, k: SimKline, t: Any) -> dict[str, Any]:
        # Binance prints an interval without trades with every price at the previous close.
        if k.open is None or k.high is None or k.low is None or k.close is None:
            fill = self._last_close.get(k.symbol) or self._ticker_last(k.symbol)
            o = h = lo = c = fill
        else:
            o, h, lo, c = k.open, k.high, k.low, k.close
        return {
            "t": t(k.open_ns), "T": t(k.close_ns), "s": self.native(k.symbol), "i": k.interval,
            "f": k.first_trade_id, "L": k.last_trade_id, "o": o, "c": c, "h": h, "l": lo, "v": k.volume,
            "n": k.trade_count, "x": k.closed, "q": k.quote_volume, "V": k.taker_buy_volume,
            "Q": k.taker_buy_quote_volume, "B": "0",
        }

    def _ticker_last(self, symbol: str) -> str:
        try:
            return self.market.ticker(symbol).last
        except (LookupError, ValueError):
            return "0"

    def wrap(self, conn: SimConnection, frame: SimFrame) -> str:
        payload = frame.payload
        state = conn.state
        if state.get("us"):
            payload = self._to_us(payload)
        if state.get("combined"):
            return '{"stream":"' + frame.stream + '","data":' + payload + "}"
        return payload

    def _to_us(self, payload: str) -> str:
        hit = self._us_cache.get(payload)
        if hit is not None:
            return self.payload(hit[0], hit[1], True)
        # Not remembered (e.g. the shutdown notice): scale the ms fields, which loses nothing we had.
        body = orjson.loads(payload)
        for key in ("E", "T", "O", "C"):
            if type(body.get(key)) is int:
                body[key] *= 1000
        k = body.get("k")
        if isinstance(k, dict):
            for key in ("t", "T"):
                if type(k.get(key)) is int:
                    k[key] *= 1000
        return _dumps(body).decode()

    def shutdown_notice(self, now_ns: int) -> str | None:
        """The raw ``serverShutdown`` payload. Send it through :meth:`wrap` with a frame on stream
        ``!serverShutdown`` so combined connections get ``{"stream":"!serverShutdown","data":…}``."""
        return _dumps({"e": "serverShutdown", "E": _ms(now_ns)}).decode()

    def shutdown_frame(self, now_ns: int) -> SimFrame:
        """The shutdown notice as a frame for :meth:`wrap`."""
        return SimFrame(SHUTDOWN_STREAM, self.shutdown_notice(now_ns) or "", DataType.STATUS)

    # --- REST -------------------------------------------------------------------------------------

    def handle_http(self, request: HttpRequest) -> HttpReply:
        if request.method not in ("GET", "HEAD"):
            return _error(-1, f"method {request.method} not allowed", 405)
        path = request.path.rstrip("/")
        if path == "/api/v3/depth":
            return self._depth(request.query)
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(request.query)
        if path == "/api/v3/klines":
            return self._klines(request.query)
        if path == "/api/v3/time":
            return _json(200, {"serverTime": _ms(self.market.now_ns())})
        if path == "/api/v3/ping":
            return _json(200, {})
        return _error(-1, f"unknown endpoint {request.path}", 404)

    def _symbol_param(self, query: Mapping[str, str]) -> SimInstrument | HttpReply:
        native = query.get("symbol")
        if not native:
            return _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        inst = self._instruments.get(native)
        if inst is None:
            self._load_instruments()
            inst = self._instruments.get(native)
        return inst if inst is not None else _error(-1121, "Invalid symbol.")

    @staticmethod
    def _int_param(query: Mapping[str, str], key: str, default: int | None) -> int | HttpReply | None:
        raw = query.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            return _error(-1100, f"Illegal characters found in parameter '{key}'; legal range is '^[0-9]{{1,20}}$'.")

    def _depth(self, query: Mapping[str, str]) -> HttpReply:
        inst = self._symbol_param(query)
        if isinstance(inst, HttpReply):
            return inst
        limit = self._int_param(query, "limit", 100)
        if isinstance(limit, HttpReply):
            return limit
        assert limit is not None
        if limit < 1:
            return _error(-1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        snap = self.market.snapshot(inst.symbol, min(limit, MAX_DEPTH_LIMIT))
        bids = sorted(snap.bids, key=lambda lv: Decimal(lv[0]), reverse=True)
        asks = sorted(snap.asks, key=lambda lv: Decimal(lv[0]))
        return _json(200, {"lastUpdateId": snap.last_id, "bids": bids, "asks": asks})

    def _exchange_info(self, query: Mapping[str, str]) -> HttpReply:
        self._load_instruments()
        selected: list[SimInstrument]
        if query.get("symbol"):
            inst = self._symbol_param(query)
            if isinstance(inst, HttpReply):
                return inst
            selected = [inst]
        elif query.get("symbols"):
            try:
                names = orjson.loads(query["symbols"])
            except orjson.JSONDecodeError:
                return _error(-1100, "Illegal characters found in parameter 'symbols'.")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return _error(-1100, "Illegal characters found in parameter 'symbols'.")
            missing = [n for n in names if n not in self._instruments]
            if missing:
                return _error(-1121, "Invalid symbol.")
            selected = [self._instruments[n] for n in names]
        else:
            selected = list(self._instruments.values())
        body = {
            "timezone": "UTC",
            "serverTime": _ms(self.market.now_ns()),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_entry(i) for i in selected],
        }
        return _json(200, body)

    def _symbol_entry(self, inst: SimInstrument) -> dict[str, Any]:
        tick = _fmt8(inst.tick_size)
        step = _fmt8(inst.step_size)
        return {
            "symbol": self.native(inst.symbol),
            "status": "TRADING" if inst.active else "BREAK",
            "baseAsset": inst.base,
            "baseAssetPrecision": 8,
            "quoteAsset": inst.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "opoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "amendAllowed": True,
            "pegInstructionsAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000.00000000", "stepSize": step},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "9000000.00000000", "stepSize": "0.00000000"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"],
        }

    def _klines(self, query: Mapping[str, str]) -> HttpReply:
        inst = self._symbol_param(query)
        if isinstance(inst, HttpReply):
            return inst
        interval = query.get("interval")
        if not interval:
            return _error(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in _INTERVAL_SET:
            return _error(-1120, "Invalid interval.")
        limit = self._int_param(query, "limit", 500)
        start = self._int_param(query, "startTime", None)
        end = self._int_param(query, "endTime", None)
        for value in (limit, start, end):
            if isinstance(value, HttpReply):
                return value
        assert isinstance(limit, int)
        limit = max(1, min(limit, 1000))
        start_ns = start * 1_000_000 if isinstance(start, int) else None
        end_ns = end * 1_000_000 + 999_999 if isinstance(end, int) else None
        rows = []
        for k in self.market.klines(inst.symbol, interval, start_ns, end_ns, limit):
            if k.open is None or k.high is None or k.low is None or k.close is None:
                fill = self._last_close.get(k.symbol) or self._ticker_last(k.symbol)
                prices = [fill, fill, fill, fill]
            else:
                prices = [k.open, k.high, k.low, k.close]
            rows.append(
                [_ms(k.open_ns), *prices, k.volume, _ms(k.close_ns), k.quote_volume, k.trade_count,
                 k.taker_buy_volume, k.taker_buy_quote_volume, "0"]
            )
        return _json(200, rows)
