"""Backpack Exchange wire codec: one WebSocket frame in, typed events out (the per-message hot path).

Every frame is ``{"stream": "<type>.<SYMBOL>", "data": {...}}``; dispatch is on ``data["e"]`` rather
than on the stream name, because captured frames exist whose ``stream`` names the wrong type.

Numbers: prices and sizes are decimal strings. Ids and times arrive as JSON integers in the 2026
captures but as numeric *strings* in others (documented ``bookTicker.u``, 2025 ``E``/``T``), so every
id and time is parsed leniently, with an ``int``-type fast path. Times are microseconds, except the
kline ``t``/``T`` (ISO-8601 naive-UTC strings) and the mark-price ``n`` (milliseconds).
"""

from __future__ import annotations

import calendar
import datetime as _dt
from typing import Any

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
