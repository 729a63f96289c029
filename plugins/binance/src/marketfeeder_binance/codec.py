"""Binance Spot wire codec: JSON frames to events (the per-message hot path) and market info parsing.

The decode path is plain, direct code: one ``orjson.loads``, dict field access, events built with
``EventClass.fast(...)`` and enum members read from module constants. Every frame either yields
events/control results, or raises :class:`~marketfeeder.connector.DecodeError` (malformed) or
:class:`~marketfeeder.connector.UnhandledMessage` (well-formed, but not something we turn into events).

Wire facts relied upon (Binance Spot "WebSocket Streams" docs):

* prices and quantities are decimal strings; ids and times are JSON integers;
* times are milliseconds unless the connection URL says ``timeUnit=MICROSECOND``;
* ``bookTicker`` carries no ``e`` and no ``E``: its events have ``exchange_ts=None``, never an invented time;
* ``m`` is "is the buyer the market maker?": when true the taker sold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from marketfeeder.connector import (
    ControlError,
    ControlMessage,
    DecodeError,
    ServerShutdown,
    SubscribeAck,
    UnhandledMessage,
)
from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookTicker,
    Event,
    Instrument,
    Kline,
    Level,
    MarketKind,
    Side,
    Ticker,
    Trade,
)

__all__ = [
    "EXCHANGE",
    "MS",
    "US",
    "BinanceCodec",
    "native_symbol",
    "parse_depth_snapshot",
    "parse_exchange_info",
]

EXCHANGE = "binance"

#: Nanoseconds per wire time unit.
MS = 1_000_000
US = 1_000

# Hoisted: attribute access on an enum class costs ~100 ns per frame.
_BUY = Side.BUY
_SELL = Side.SELL
_SPOT = MarketKind.SPOT

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_ticker = Ticker.fast
_book_ticker = BookTicker.fast
_trade = Trade.fast
_kline = Kline.fast
_delta = BookDelta.fast


def native_symbol(symbol: str) -> str:
    """Binance's form of a normalized spot symbol: ``BTC-USDT`` -> ``BTCUSDT``."""
    return symbol.replace("-", "")


class BinanceCodec:
    """Decodes Binance Spot WebSocket frames (raw or combined-stream) into events.

    ``time_unit_ns`` is 1_000_000 for the default millisecond connections and 1_000 for
    ``timeUnit=MICROSECOND`` ones. Symbols are normalized through the instrument table; a frame for
    a symbol the table does not list is an :class:`UnhandledMessage`.
    """

    __slots__ = ("_symbols", "time_unit_ns")

    def __init__(self, instruments: Iterable[Instrument] = (), *, time_unit_ns: int = MS) -> None:
        if time_unit_ns not in (MS, US):
            raise ValueError(f"time_unit_ns must be {MS} (ms) or {US} (µs), got {time_unit_ns!r}")
        self.time_unit_ns = time_unit_ns
        self._symbols: dict[str, str] = {}
        self.set_instruments(instruments)

    def set_instruments(self, instruments: Iterable[Instrument]) -> None:
        """Replace the native -> normalized symbol map (a plain dict: one lookup per frame)."""
        self._symbols = {i.native: i.symbol for i in instruments}

    def decode(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        # One function, one try block (free in 3.11 until something raises): every KeyError,
        # TypeError or ValueError from a missing or mistyped field becomes a DecodeError below.
        try:
            msg = _loads(frame)
            if type(msg) is not dict:
                raise DecodeError(f"binance: frame is a JSON {type(msg).__name__}, not an object")
            data = msg.get("data")
            if data is None:
                data = msg  # raw stream (/ws) or a control reply
            elif type(data) is not dict:
                raise DecodeError("binance: combined frame 'data' is not an object")
            e = data.get("e")
            m = self.time_unit_ns
            if e is None:
                if "u" in data and "b" in data:
                    symbol = self._symbols.get(data["s"])
                    if symbol is None:
                        raise _unknown_symbol("bookTicker", data["s"])
                    update_id = data["u"]
                    if type(update_id) is not int:
                        raise DecodeError("binance: bookTicker 'u' must be an integer")
                    # No event time on the wire: exchange_ts stays None rather than being invented.
                    return [
                        _book_ticker(
                            EXCHANGE, symbol, None, receive_ts, update_id,
                            float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]), None,
                        )
                    ]
                if data is msg:
                    return [self._control(msg)]
                if "lastUpdateId" in data:
                    raise UnhandledMessage("binance: partial depth (depthN) frames are not consumed")
                raise UnhandledMessage(f"binance: unrecognised frame with keys {sorted(data)[:8]}")

            if e == "depthUpdate":
                symbol = self._symbols.get(data["s"])
                if symbol is None:
                    raise _unknown_symbol("depthUpdate", data["s"])
                ts = data["E"]
                first = data["U"]
                last = data["u"]
                if type(ts) is not int or type(first) is not int or type(last) is not int:
                    raise DecodeError("binance: depthUpdate E/U/u must be integers")
                bids = tuple([(float(p), float(q)) for p, q in data["b"]])
                asks = tuple([(float(p), float(q)) for p, q in data["a"]])
                return [_delta(EXCHANGE, symbol, ts * m, receive_ts, last, first, bids, asks, None)]

            if e == "trade" or e == "aggTrade":
                symbol = self._symbols.get(data["s"])
                if symbol is None:
                    raise _unknown_symbol(e, data["s"])
                ts = data["E"]
                trade_id = data["t"] if e == "trade" else data["a"]
                trade_ts = data["T"]
                maker = data["m"]
                if type(ts) is not int or type(trade_id) is not int or type(trade_ts) is not int:
                    raise DecodeError(f"binance: {e} E/T and the trade id must be integers")
                if maker is True:
                    side = _SELL  # the buyer was the maker, so the taker sold
                elif maker is False:
                    side = _BUY
                else:
                    raise DecodeError(f"binance: {e} 'm' must be a boolean, got {maker!r}")
                return [
                    _trade(
                        EXCHANGE, symbol, ts * m, receive_ts, trade_id,
                        float(data["p"]), float(data["q"]), side, trade_ts * m,
                    )
                ]

            if e == "24hrTicker":
                symbol = self._symbols.get(data["s"])
                if symbol is None:
                    raise _unknown_symbol("24hrTicker", data["s"])
                ts = data["E"]
                count = data["n"]
                if type(ts) is not int or type(count) is not int:
                    raise DecodeError("binance: 24hrTicker E/n must be integers")
                return [
                    _ticker(
                        EXCHANGE, symbol, ts * m, receive_ts, None,
                        float(data["c"]), float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]),
                        float(data["o"]), float(data["h"]), float(data["l"]), float(data["v"]), float(data["q"]),
                        count, float(data["p"]), float(data["P"]), float(data["w"]),
                    )
                ]

            if e == "kline":
                symbol = self._symbols.get(data["s"])
                if symbol is None:
                    raise _unknown_symbol("kline", data["s"])
                ts = data["E"]
                k = data["k"]
                open_ts = k["t"]
                close_ts = k["T"]
                count = k["n"]
                closed = k["x"]
                interval = k["i"]
                if (
                    type(ts) is not int or type(open_ts) is not int or type(close_ts) is not int
                    or type(count) is not int
                ):
                    raise DecodeError("binance: kline E/t/T/n must be integers")
                if type(closed) is not bool or type(interval) is not str:
                    raise DecodeError("binance: kline 'x' must be a boolean and 'i' a string")
                return [
                    _kline(
                        EXCHANGE, symbol, ts * m, receive_ts, None, interval, open_ts * m, close_ts * m,
                        float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"]), closed,
                        float(k["q"]), count,
                    )
                ]

            if e == "serverShutdown":
                ts = data.get("E")
                if ts is not None and type(ts) is not int:
                    raise DecodeError("binance: serverShutdown E must be an integer")
                return [ServerShutdown(None if ts is None else ts * m)]

            if type(e) is not str:
                raise DecodeError(f"binance: event type 'e' must be a string, got {e!r}")
            raise UnhandledMessage(f"binance: event type {e!r} is not consumed")
        except DecodeError:
            raise
        except _JSONDecodeError as exc:
            raise DecodeError(f"binance: invalid JSON: {exc}") from None
        except KeyError as exc:
            raise DecodeError(f"binance: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise DecodeError(f"binance: bad field value ({type(exc).__name__}: {exc})") from None

    @staticmethod
    def _control(msg: dict[str, Any]) -> ControlMessage:
        request_id = msg.get("id")
        if request_id is not None and type(request_id) not in (int, str):
            raise DecodeError(f"binance: control reply id must be an integer or string, got {request_id!r}")
        if "result" in msg:
            return SubscribeAck(request_id, msg["result"])
        error = msg.get("error")
        if isinstance(error, dict):
            msg = error  # the nested form {"error":{"code":..,"msg":..},"id":..}
        if "code" in msg:
            code = msg["code"]
            if type(code) not in (int, str):
                raise DecodeError(f"binance: error reply code must be an integer, got {code!r}")
            return ControlError(request_id, code, str(msg.get("msg", "")))
        raise UnhandledMessage(f"binance: unrecognised frame with keys {sorted(msg)[:8]}")


def _unknown_symbol(kind: str, native: Any) -> DecodeError:
    # Off the hot path: only reached when the symbol lookup missed.
    if type(native) is not str:
        return DecodeError(f"binance: {kind} 's' must be a string, got {native!r}")
    return UnhandledMessage(f"binance: {kind} for unknown symbol {native!r}")


# --- REST bodies (start-up and resync paths, not per message) --------------------------------------


def _filter_value(filters: Any, filter_type: str, key: str) -> float:
    if not isinstance(filters, list):
        return 0.0
    for item in filters:
        if isinstance(item, dict) and item.get("filterType") == filter_type:
            return float(item.get(key, 0) or 0)
    return 0.0  # absent: Binance's "0" means the rule is disabled


def parse_exchange_info(body: Any) -> tuple[list[Instrument], list[str]]:
    """Instruments from a ``GET /api/v3/exchangeInfo`` body, and a note for each entry skipped.

    ``active`` is True only for status ``TRADING`` (``HALT``, ``BREAK`` and ``CANCEL_ONLY`` are
    listed but inactive). A tick or step of 0 means the filter is absent or disabled.
    """
    if not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
        raise DecodeError("binance: exchangeInfo body has no 'symbols' list")
    instruments: list[Instrument] = []
    skipped: list[str] = []
    for entry in body["symbols"]:
        try:
            native = entry["symbol"]
            base = entry["baseAsset"]
            quote = entry["quoteAsset"]
            status = entry["status"]
            if not all(isinstance(x, str) and x for x in (native, base, quote, status)):
                raise TypeError("symbol, baseAsset, quoteAsset and status must be non-empty strings")
            filters = entry.get("filters")
            instruments.append(
                Instrument(
                    exchange=EXCHANGE,
                    native=native,
                    symbol=Instrument.normalized(base, quote),
                    base=base,
                    quote=quote,
                    tick_size=_filter_value(filters, "PRICE_FILTER", "tickSize"),
                    step_size=_filter_value(filters, "LOT_SIZE", "stepSize"),
                    status=status,
                    active=status == "TRADING",
                    kind=_SPOT,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            name = entry.get("symbol", "?") if isinstance(entry, dict) else "?"
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
    return instruments, skipped


def _levels(rows: Any, side: str) -> list[Level]:
    if not isinstance(rows, list):
        raise DecodeError(f"binance: depth '{side}' is not a list")
    return [(float(p), float(q)) for p, q in rows]


def parse_depth_snapshot(body: Any, symbol: str, receive_ts: int) -> BookSnapshot:
    """A :class:`BookSnapshot` from a ``GET /api/v3/depth`` body.

    The docs do not state the order of the levels, so both sides are sorted here: bids highest
    first, asks lowest first. ``seq`` is ``lastUpdateId``; the body has no time, so ``exchange_ts``
    is None.
    """
    try:
        if not isinstance(body, dict):
            raise DecodeError("binance: depth body is not an object")
        last_id = body["lastUpdateId"]
        if type(last_id) is not int:
            raise DecodeError(f"binance: depth lastUpdateId must be an integer, got {last_id!r}")
        bids = sorted(_levels(body["bids"], "bids"), key=lambda lv: lv[0], reverse=True)
        asks = sorted(_levels(body["asks"], "asks"), key=lambda lv: lv[0])
    except DecodeError:
        raise
    except KeyError as exc:
        raise DecodeError(f"binance: depth body is missing {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"binance: bad depth level ({exc})") from None
    return BookSnapshot(EXCHANGE, symbol, None, receive_ts, last_id, tuple(bids), tuple(asks))
