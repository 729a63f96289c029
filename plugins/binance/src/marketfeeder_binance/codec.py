"""Binance Spot wire codec: JSON frames to events (the per-message hot path) and market info parsing.

The decode path has two tiers. The fast tier decodes the whole frame with a typed ``msgspec`` decoder,
which turns the decimal strings into floats in C: the bookTicker one when the stream type in the frame
text (after the ``@`` of ``btcusdt@bookTicker``) says so, else one whose ``data`` is a union tagged by
``e``. It only takes a frame whose decoded fields pass exactly the checks of the general tier; anything
else (a wrong hint, a missing or mistyped field, an unknown symbol, a control reply) goes to the general
tier: one ``orjson.loads``, dict field access and explicit checks, which names what is wrong. So the
hint never decides the outcome: dispatch is on ``e`` (or its absence) in both tiers, and the outcome of
every frame is the general tier's. Events are built with ``EventClass.fast(...)`` and enum members read
from module constants. Every frame either yields events/control results, or raises
:class:`~marketfeeder.connector.DecodeError` (malformed) or
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

import msgspec
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


# --- typed wire shapes for the fast tier -------------------------------------------------------------
#
# Prices and sizes are ``float`` (the decoder runs with strict=False, so "139.65" becomes 139.65 in C;
# a string msgspec does not parse, such as " 1" or "1e400", fails the decode and takes the general
# tier). Ids, times and flags are ``Any`` and checked with ``type(x) is int`` / ``is True`` like the
# general tier does: strict=False would otherwise take "8" for an integer or "true" for a boolean.
# The types with an ``e`` are only ever decoded as members of a union tagged by it, where the tag is
# required and picks the type in C: another (or no) event type fails the decode. gc=False: these are
# dropped right after use, and decoded JSON cannot form reference cycles.
# Two known differences from the general tier, both beyond any real frame: the string "-0" gives 0.0
# rather than -0.0 (equal as numbers), and an integer wider than 64 bits, which orjson reads as a
# float (refused by the checks), stays an integer here (accepted).


class _BookTickerData(msgspec.Struct, gc=False):
    u: Any
    s: str
    b: float
    B: float
    a: float
    A: float
    e: Any = None  # must stay absent (or null): the general tier routes on it


class _TradeData(msgspec.Struct, gc=False, tag_field="e", tag="trade"):
    E: Any
    s: str
    t: Any
    p: float
    q: float
    T: Any
    m: Any


class _AggTradeData(msgspec.Struct, gc=False, tag_field="e", tag="aggTrade"):
    E: Any
    s: str
    a: Any
    p: float
    q: float
    T: Any
    m: Any


class _DepthData(msgspec.Struct, gc=False, tag_field="e", tag="depthUpdate"):
    E: Any
    s: str
    U: Any
    u: Any
    b: tuple[tuple[float, float], ...]
    a: tuple[tuple[float, float], ...]


class _TickerData(msgspec.Struct, gc=False, tag_field="e", tag="24hrTicker"):
    E: Any
    s: str
    n: Any
    c: float
    b: float
    B: float
    a: float
    A: float
    o: float
    h: float
    l: float  # noqa: E741 (the wire's name)
    v: float
    q: float
    p: float
    P: float
    w: float


class _KlineBody(msgspec.Struct, gc=False):
    t: Any
    T: Any
    n: Any
    x: Any
    i: Any
    o: float
    h: float
    l: float  # noqa: E741 (the wire's name)
    c: float
    v: float
    q: float


class _KlineData(msgspec.Struct, gc=False, tag_field="e", tag="kline"):
    E: Any
    s: str
    k: _KlineBody


_EventData = _TradeData | _AggTradeData | _DepthData | _TickerData | _KlineData


class _BookTickerFrame(msgspec.Struct, gc=False):
    data: _BookTickerData


class _EventFrame(msgspec.Struct, gc=False):
    data: _EventData


_FastDecode = Any  # a msgspec Decoder's bound ``decode``
_decode_book_ticker_frame: _FastDecode = msgspec.json.Decoder(_BookTickerFrame, strict=False).decode
_decode_event_frame: _FastDecode = msgspec.json.Decoder(_EventFrame, strict=False).decode
# A raw (/ws) stream's frame is the data object itself.
_decode_event: _FastDecode = msgspec.json.Decoder(_EventData, strict=False).decode
_MsgspecError = msgspec.DecodeError  # ValidationError is a subclass


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
        """Decode one frame: the typed fast tier when it applies, else :meth:`decode_general`."""
        # Combined frames start '{"stream":"btcusdt@trade",': the first "@" ends the symbol, and the
        # stream type after it says which decoder to try (only bookTicker has no "e" to tell it by).
        # A frame without "@" is taken for a raw stream's, which is the data object itself, unless it
        # has a "data" key, which the general tier would read first.
        if frame.__class__ is str:
            at = frame.find("@")
            if at >= 0:
                book_ticker = frame.startswith("bookTicker", at + 1)
                fast = _decode_book_ticker_frame if book_ticker else _decode_event_frame
            else:
                fast = None if '"data"' in frame else _decode_event
        elif frame.__class__ is bytes:
            at = frame.find(b"@")
            if at >= 0:
                book_ticker = frame.startswith(b"bookTicker", at + 1)
                fast = _decode_book_ticker_frame if book_ticker else _decode_event_frame
            else:
                fast = None if b'"data"' in frame else _decode_event
        else:
            fast = None
        if fast is None:
            return self.decode_general(frame, receive_ts)
        try:
            d = fast(frame)
        except _MsgspecError:
            return self.decode_general(frame, receive_ts)
        if fast is not _decode_event:
            d = d.data
        # Each branch accepts only what the general tier would turn into the same event; any other
        # value falls through to it, so error messages and edge cases stay exactly its own.
        cls = d.__class__
        symbol = self._symbols.get(d.s)
        if symbol is None:
            return self.decode_general(frame, receive_ts)
        if cls is _BookTickerData:
            u = d.u
            if u.__class__ is int and d.e is None:
                return [_book_ticker(EXCHANGE, symbol, None, receive_ts, u, d.b, d.B, d.a, d.A, None)]
        elif cls is _TradeData or cls is _AggTradeData:
            ts = d.E
            trade_id = d.t if cls is _TradeData else d.a
            trade_ts = d.T
            maker = d.m
            if (
                ts.__class__ is int and trade_id.__class__ is int and trade_ts.__class__ is int
                and (maker is True or maker is False)
            ):
                m = self.time_unit_ns
                # maker True: the buyer made the book, so the taker sold.
                side = _SELL if maker else _BUY
                return [_trade(EXCHANGE, symbol, ts * m, receive_ts, trade_id, d.p, d.q, side, trade_ts * m)]
        elif cls is _DepthData:
            ts = d.E
            first = d.U
            last = d.u
            if ts.__class__ is int and first.__class__ is int and last.__class__ is int:
                ts *= self.time_unit_ns
                return [_delta(EXCHANGE, symbol, ts, receive_ts, last, first, d.b, d.a, None)]
        elif cls is _TickerData:
            ts = d.E
            count = d.n
            if ts.__class__ is int and count.__class__ is int:
                return [
                    _ticker(
                        EXCHANGE, symbol, ts * self.time_unit_ns, receive_ts, None, d.c, d.b, d.B, d.a, d.A,
                        d.o, d.h, d.l, d.v, d.q, count, d.p, d.P, d.w,
                    )
                ]
        elif cls is _KlineData:
            ts = d.E
            k = d.k
            open_ts = k.t
            close_ts = k.T
            count = k.n
            closed = k.x
            interval = k.i
            if (
                ts.__class__ is int and open_ts.__class__ is int and close_ts.__class__ is int
                and count.__class__ is int and closed.__class__ is bool and interval.__class__ is str
            ):
                m = self.time_unit_ns
                return [
                    _kline(
                        EXCHANGE, symbol, ts * m, receive_ts, None, interval, open_ts * m, close_ts * m,
                        k.o, k.h, k.l, k.c, k.v, closed, k.q, count,
                    )
                ]
        return self.decode_general(frame, receive_ts)

    def decode_general(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        """Decode any frame (raw or combined, data or control) with ``orjson`` and explicit checks.

        The reference semantics: :meth:`decode` returns exactly what this returns, and raises what
        this raises, for every frame.
        """
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
