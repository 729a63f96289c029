"""Backpack Exchange wire codec: one WebSocket frame in, typed events out (the per-message hot path).

Every frame is ``{"stream": "<type>.<SYMBOL>", "data": {...}}``; dispatch is on ``data["e"]`` rather
than on the stream name, because captured frames exist whose ``stream`` names the wrong type.

Two tiers. The fast tier decodes the whole frame with one typed ``msgspec`` decoder: ``data`` is a
union tagged by ``e`` (the same dispatch), and prices and sizes become floats in C. It takes only a
frame whose decoded fields pass exactly the general tier's checks; anything else (an unknown ``e``, a
missing or mistyped field, a symbol not yet cached, a control or error frame) goes to the general
tier (``orjson.loads`` and explicit checks, which names what is wrong), so the outcome of every
frame is the general tier's.

Numbers: prices and sizes are decimal strings. Ids and times arrive as JSON integers in the 2026
captures but as numeric *strings* in others (documented ``bookTicker.u``, 2025 ``E``/``T``), so every
id and time is parsed leniently, with an ``int``-type fast path. Times are microseconds, except the
kline ``t``/``T`` (ISO-8601 naive-UTC strings) and the mark-price ``n`` (milliseconds).
"""

from __future__ import annotations

import calendar
import datetime as _dt
from typing import Any

import msgspec
import orjson

from marketfeeder.connector import ControlError, ControlMessage, DecodeError, UnhandledMessage
from marketfeeder.models import (
    BookDelta,
    BookTicker,
    Event,
    InstrumentTable,
    Kline,
    MarkPrice,
    Side,
    Ticker,
    Trade,
)

__all__ = ["EXCHANGE", "BackpackCodec", "iso_to_ns", "lenient_int"]

EXCHANGE = "backpack"

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_BUY = Side.BUY
_SELL = Side.SELL
_book_delta = BookDelta.fast
_book_ticker = BookTicker.fast
_trade = Trade.fast
_ticker = Ticker.fast
_kline = Kline.fast
_mark_price = MarkPrice.fast

#: Distinct kline boundary strings seen; a kline stream repeats the same two for a whole interval.
_ISO_CACHE_MAX = 4096
_iso_cache: dict[str, int] = {}


# --- typed wire shapes for the fast tier -------------------------------------------------------------
#
# Prices and sizes are ``float`` (strict=False: "139.65" becomes 139.65 in C; a string msgspec does
# not parse, such as " 1" or "1e400", fails the decode and takes the general tier). Ids, times, flags
# and nullable prices are ``Any`` and go through the general tier's own helpers: strict=False would
# take "true" for a boolean and "null" for None. gc=False: dropped right after use, and decoded JSON
# cannot form reference cycles. Optional wire fields default to None, as ``dict.get`` reads them.
# Two known differences from the general tier, both beyond any real frame: the string "-0" gives 0.0
# rather than -0.0 (equal as numbers), and an integer wider than 64 bits, which orjson reads as a
# float (refused by the checks), stays an integer here (accepted).


class _BookTickerData(msgspec.Struct, gc=False, tag_field="e", tag="bookTicker"):
    s: str
    E: Any
    u: Any
    b: float
    B: float
    a: float
    A: float
    T: Any = None


class _TradeData(msgspec.Struct, gc=False, tag_field="e", tag="trade"):
    s: str
    E: Any
    t: Any
    p: float
    q: float
    m: Any
    T: Any = None


class _DepthData(msgspec.Struct, gc=False, tag_field="e", tag="depth"):
    s: str
    E: Any
    U: Any
    u: Any
    b: tuple[tuple[float, float], ...]
    a: tuple[tuple[float, float], ...]
    T: Any = None


class _TickerData(msgspec.Struct, gc=False, tag_field="e", tag="ticker"):
    s: str
    E: Any
    n: Any
    c: float
    o: float
    h: float
    l: float  # noqa: E741 (the wire's name)
    v: float
    V: float


class _KlineData(msgspec.Struct, gc=False, tag_field="e", tag="kline"):
    s: str
    E: Any
    t: Any
    T: Any
    o: Any
    h: Any
    l: Any  # noqa: E741 (the wire's name)
    c: Any
    v: Any
    X: Any
    n: Any


class _MarkPriceData(msgspec.Struct, gc=False, tag_field="e", tag="markPrice"):
    s: str
    E: Any
    p: float
    i: Any = None
    f: Any = None
    n: Any = None
    T: Any = None


class _Frame(msgspec.Struct, gc=False):
    # In a union the tag is required and checked: no "e" or another value fails the decode.
    data: _BookTickerData | _TradeData | _DepthData | _TickerData | _KlineData | _MarkPriceData
    stream: Any = None


_decode_frame = msgspec.json.Decoder(_Frame, strict=False).decode
_MsgspecError = msgspec.DecodeError  # ValidationError is a subclass


def lenient_int(value: Any) -> int:
    """An id or time that may be a JSON integer or a numeric string (bool is refused)."""
    if value.__class__ is int:
        return int(value)
    if isinstance(value, str):
        return int(value)
    raise TypeError(f"expected an integer or a numeric string, got {value!r}")


def _parse_iso(text: str) -> int:
    moment = _dt.datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.UTC).replace(tzinfo=None)
    # timegm keeps the arithmetic in integers (no float rounding of large ns values).
    return (calendar.timegm(moment.timetuple()) * 1_000_000 + moment.microsecond) * 1000


def iso_to_ns(value: Any) -> int:
    """A kline boundary in ns: an ISO-8601 string (naive means UTC, as Backpack sends it), or an
    integer number of seconds (the official Rust client declares the field that way)."""
    if value.__class__ is str:
        ns = _iso_cache.get(value)
        if ns is None:
            ns = _parse_iso(value)
            if len(_iso_cache) >= _ISO_CACHE_MAX:
                _iso_cache.clear()
            _iso_cache[value] = ns
        return ns
    if value.__class__ is int:
        return int(value) * 1_000_000_000
    raise TypeError(f"expected an ISO-8601 time string, got {value!r}")


def _opt_time(value: Any) -> int | None:
    """An optional µs engine time as ns (a missing ``T`` must not cost a depth diff)."""
    return None if value is None else lenient_int(value) * 1000


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


class BackpackCodec:
    """Decodes Backpack frames; symbols are normalized through ``table`` (unknown ones are skipped)."""

    __slots__ = ("_symbols", "table")

    def __init__(self, table: InstrumentTable) -> None:
        self.table = table
        self._symbols: dict[str, str] = {}

    def set_table(self, table: InstrumentTable) -> None:
        self.table = table
        self._symbols = {}

    def _symbol(self, native: Any) -> str:
        if native.__class__ is not str:
            raise DecodeError(f"backpack: symbol 's' must be a string, got {native!r}")
        instrument = self.table.get_native(native)
        if instrument is None:
            raise UnhandledMessage(f"backpack: frame for unknown symbol {native!r}")
        self._symbols[native] = instrument.symbol
        return instrument.symbol

    def decode(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        """Decode one frame: the typed fast tier when it applies, else :meth:`decode_general`."""
        try:
            wrapper = _decode_frame(frame)
        except _MsgspecError:
            return self.decode_general(frame, receive_ts)
        d: Any = wrapper.data  # one of the union's types, told apart below by class
        symbol = self._symbols.get(d.s)
        if symbol is None:  # not cached yet (or unknown): the general tier looks it up
            return self.decode_general(frame, receive_ts)
        # Each branch builds what the general tier would from the same values, with its helpers;
        # a value they refuse (whatever the exception) sends the frame to it for its exact outcome.
        try:
            E = d.E
            if E.__class__ is not int:
                E = lenient_int(E)
            cls = d.__class__
            if cls is _BookTickerData:
                T = d.T
                u = d.u
                return [
                    _book_ticker(
                        EXCHANGE, symbol, E * 1000, receive_ts, u if u.__class__ is int else lenient_int(u),
                        d.b, d.B, d.a, d.A, T * 1000 if T.__class__ is int else _opt_time(T),
                    )
                ]
            if cls is _TradeData:
                T = d.T
                t = d.t
                maker = d.m
                if maker.__class__ is bool:
                    return [
                        _trade(
                            EXCHANGE, symbol, E * 1000, receive_ts,
                            t if t.__class__ is int else lenient_int(t), d.p, d.q, _SELL if maker else _BUY,
                            T * 1000 if T.__class__ is int else _opt_time(T),
                        )
                    ]
            elif cls is _DepthData:
                T = d.T
                U = d.U
                u = d.u
                return [
                    _book_delta(
                        EXCHANGE, symbol, E * 1000, receive_ts,
                        u if u.__class__ is int else lenient_int(u),
                        U if U.__class__ is int else lenient_int(U),
                        d.b, d.a, T * 1000 if T.__class__ is int else _opt_time(T),
                    )
                ]
            elif cls is _TickerData:
                n = d.n
                return [
                    _ticker(
                        EXCHANGE, symbol, E * 1000, receive_ts, None, d.c, None, None, None, None,
                        d.o, d.h, d.l, d.v, d.V, n if n.__class__ is int else lenient_int(n),
                        None, None, None,
                    )
                ]
            elif cls is _KlineData:
                stream = wrapper.stream
                closed = d.X
                if stream.__class__ is str and stream.startswith("kline.") and closed.__class__ is bool:
                    n = d.n
                    volume = d.v
                    return [
                        _kline(
                            EXCHANGE, symbol, E * 1000, receive_ts, None, stream[6 : stream.index(".", 6)],
                            iso_to_ns(d.t), iso_to_ns(d.T) - 1,
                            _opt_float(d.o), _opt_float(d.h), _opt_float(d.l), _opt_float(d.c),
                            0.0 if volume is None else float(volume), closed, None,
                            n if n.__class__ is int else lenient_int(n),
                        )
                    ]
            elif cls is _MarkPriceData:
                n = d.n
                return [
                    _mark_price(
                        EXCHANGE, symbol, E * 1000, receive_ts, None, d.p, _opt_float(d.i), _opt_float(d.f),
                        None if n is None else lenient_int(n) * 1_000_000, _opt_time(d.T),
                    )
                ]
        except Exception:  # the general tier decides, and names, what is wrong
            pass
        return self.decode_general(frame, receive_ts)

    def decode_general(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        """Decode any frame with ``orjson`` and explicit checks: the reference semantics.

        :meth:`decode` returns exactly what this returns, and raises what this raises, for every frame.
        """
        try:
            msg = _loads(frame)
            if msg.__class__ is not dict:
                raise DecodeError(f"backpack: expected a JSON object, got {type(msg).__name__}")
            data = msg.get("data")
            if data is None:
                return self._not_data(msg, receive_ts)
            return self._decode_data(data, msg.get("stream"), receive_ts)
        except DecodeError:
            raise
        except _JSONDecodeError as exc:
            raise DecodeError(f"backpack: invalid JSON: {exc}") from None
        except KeyError as exc:
            raise DecodeError(f"backpack: missing field {exc} in {_excerpt(frame)}") from None
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise DecodeError(f"backpack: bad value ({exc}) in {_excerpt(frame)}") from None

    def _decode_data(self, data: Any, stream: Any, receive_ts: int) -> list[Event | ControlMessage]:
        kind = data["e"]
        native = data["s"]
        symbol = self._symbols.get(native) or self._symbol(native)
        E = data["E"]
        if E.__class__ is not int:
            E = lenient_int(E)
        if kind == "depth":
            T = data.get("T")
            U = data["U"]
            u = data["u"]
            return [
                _book_delta(
                    EXCHANGE,
                    symbol,
                    E * 1000,
                    receive_ts,
                    u if u.__class__ is int else lenient_int(u),
                    U if U.__class__ is int else lenient_int(U),
                    tuple([(float(p), float(q)) for p, q in data["b"]]),
                    tuple([(float(p), float(q)) for p, q in data["a"]]),
                    T * 1000 if T.__class__ is int else _opt_time(T),
                )
            ]
        if kind == "bookTicker":
            T = data.get("T")
            u = data["u"]
            return [
                _book_ticker(
                    EXCHANGE,
                    symbol,
                    E * 1000,
                    receive_ts,
                    u if u.__class__ is int else lenient_int(u),
                    float(data["b"]),
                    float(data["B"]),
                    float(data["a"]),
                    float(data["A"]),
                    T * 1000 if T.__class__ is int else _opt_time(T),
                )
            ]
        if kind == "trade":
            T = data.get("T")
            t = data["t"]
            maker = data["m"]
            if maker.__class__ is not bool:
                raise TypeError(f"trade 'm' must be a boolean, got {maker!r}")
            return [
                _trade(
                    EXCHANGE,
                    symbol,
                    E * 1000,
                    receive_ts,
                    t if t.__class__ is int else lenient_int(t),
                    float(data["p"]),
                    float(data["q"]),
                    _SELL if maker else _BUY,  # the buyer made the book: the taker sold
                    T * 1000 if T.__class__ is int else _opt_time(T),
                )
            ]
        if kind == "ticker":
            n = data["n"]
            return [
                _ticker(
                    EXCHANGE,
                    symbol,
                    E * 1000,
                    receive_ts,
                    None,
                    float(data["c"]),
                    None,
                    None,
                    None,
                    None,
                    float(data["o"]),
                    float(data["h"]),
                    float(data["l"]),
                    float(data["v"]),
                    float(data["V"]),
                    n if n.__class__ is int else lenient_int(n),
                    None,
                    None,
                    None,
                )
            ]
        if kind == "kline":
            # The payload has no interval: it is the middle part of "kline.<interval>.<symbol>".
            if stream.__class__ is not str or not stream.startswith("kline."):
                raise DecodeError(f"backpack: kline frame without a kline stream name ({stream!r})")
            interval = stream[6 : stream.index(".", 6)]
            n = data["n"]
            volume = data["v"]
            return [
                _kline(
                    EXCHANGE,
                    symbol,
                    E * 1000,
                    receive_ts,
                    None,
                    interval,
                    iso_to_ns(data["t"]),
                    # `T` is the end boundary (the next interval's start); close_ts is the last ns inside.
                    iso_to_ns(data["T"]) - 1,
                    _opt_float(data["o"]),
                    _opt_float(data["h"]),
                    _opt_float(data["l"]),
                    _opt_float(data["c"]),
                    0.0 if volume is None else float(volume),
                    _strict_bool(data["X"]),
                    None,
                    n if n.__class__ is int else lenient_int(n),
                )
            ]
        if kind == "markPrice":
            T = data.get("T")
            n = data.get("n")
            return [
                _mark_price(
                    EXCHANGE,
                    symbol,
                    E * 1000,
                    receive_ts,
                    None,
                    float(data["p"]),
                    _opt_float(data.get("i")),
                    _opt_float(data.get("f")),
                    None if n is None else lenient_int(n) * 1_000_000,  # `n` is in ms
                    _opt_time(T),
                )
            ]
        raise UnhandledMessage(f"backpack: unhandled event type {kind!r} on stream {stream!r}")

    def _not_data(self, msg: dict[str, Any], receive_ts: int) -> list[Event | ControlMessage]:
        error = msg.get("error")
        if error is not None:
            request_id = msg.get("id")
            if isinstance(error, dict):
                message = error.get("message")
                return [ControlError(request_id, error.get("code"), str(message) if message is not None else "")]
            return [ControlError(request_id, None, str(error))]
        if "e" in msg and "s" in msg:
            # A bare payload (no wrapper): accepted, except kline whose interval only the stream names.
            return self._decode_data(msg, None, receive_ts)
        raise UnhandledMessage(f"backpack: unhandled frame with keys {sorted(msg)[:8]}")


def _strict_bool(value: Any) -> bool:
    if value.__class__ is not bool:
        raise TypeError(f"expected a boolean, got {value!r}")
    return bool(value)


def _excerpt(frame: str | bytes, limit: int = 120) -> str:
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes | bytearray | memoryview) else str(frame)
    return text if len(text) <= limit else text[:limit] + "..."
