"""The core's built-in data-quality checks.

Each check is a class whose constructor is its factory: it takes the check's options mapping (from
``[validation.options.<name>]``), rejects unknown or out-of-range options with a ``ValueError`` naming
the key, and falls back to the documented defaults.

Every check follows the same shape: a handler per event class, a fast path of plain comparisons that
returns ``None`` for good data, and a slow path, reached only by bad data, that works out *what* is wrong
and says so ("trade price -1.0 is not positive"). Checks never raise on bad data; whatever the specific
paths did not foresee (a string where a number belongs, a level that is not a pair) is caught around the
handler and reported as a verdict. A check only judges the fields it owns: a NaN price is ``prices``'
business, so ``spread`` or ``tick_grid`` let it through rather than report it twice under another name.

Stateful checks (``outliers``, ``timestamps``) keep a bounded amount of state per stream, where a stream
is ``(event class, exchange, symbol)``; the number of streams is bounded by the subscriptions.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from marketfeeder.models import BookDelta, BookSnapshot, BookTicker, Event, Kline, MarkPrice, Ticker, Trade

from .base import ValidationContext, ValidatorFactory, Verdict

__all__ = [
    "BUILTIN_VALIDATORS",
    "BookIntegrityCheck",
    "LatencyCheck",
    "OutlierCheck",
    "PriceCheck",
    "SpreadCheck",
    "TickGridCheck",
    "TimestampCheck",
    "VolumeCheck",
]

_INF = math.inf
_float = float
_int = int
_NS_PER_MS = 1_000_000

#: Market-data events that carry an exchange time.
_MARKET_EVENTS: tuple[type[Event], ...] = (
    Trade,
    Ticker,
    BookTicker,
    Kline,
    BookSnapshot,
    BookDelta,
    MarkPrice,
)

_LABELS: dict[type[Event], str] = {
    Trade: "trade",
    Ticker: "ticker",
    BookTicker: "book ticker",
    Kline: "kline",
    BookSnapshot: "snapshot",
    BookDelta: "delta",
    MarkPrice: "mark price",
}

Handler = Callable[[Any, ValidationContext], "Verdict | None"]


def _label(event: Event) -> str:
    return _LABELS.get(type(event)) or type(event).__name__


def _show(value: object) -> str:
    """A value for a message: its repr, cut short so a huge or hostile value cannot flood a log."""
    text = repr(value)
    return text if len(text) <= 48 else text[:45] + "..."


# --- what is wrong with a value (slow paths only; these never raise) ------------------------------


def _not_number(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | float)


def _finite_problem(value: object) -> str | None:
    if _not_number(value):
        return "is not a number"
    if value != value:
        return "is NaN"
    if value == _INF or value == -_INF:
        return "is infinite"
    return None


def _positive_problem(value: object) -> str | None:
    problem = _finite_problem(value)
    if problem is None and not value > 0:  # type: ignore[operator]
        return "is not positive"
    return problem


def _non_negative_problem(value: object) -> str | None:
    problem = _finite_problem(value)
    if problem is None and value < 0:  # type: ignore[operator]
        return "is negative"
    return problem


def _is_finite_number(value: object) -> TypeGuard[float]:
    return not _not_number(value) and math.isfinite(value)  # type: ignore[arg-type]


class _Problems:
    """Collects what is wrong with an event; the verdict names the first problem and counts the rest."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def field(self, label: str, value: object, rule: Callable[[object], str | None]) -> None:
        problem = rule(value)
        if problem is not None:
            self.items.append(f"{label} {_show(value)} {problem}")

    def optional(self, label: str, value: object, rule: Callable[[object], str | None]) -> None:
        if value is not None:
            self.field(label, value, rule)

    def levels(self, label: str, levels: object, size_rule: Callable[[object], str | None]) -> None:
        if not isinstance(levels, tuple | list):
            self.items.append(f"{label} is not a sequence of levels: {_show(levels)}")
            return
        for index, level in enumerate(levels):
            if not isinstance(level, tuple | list) or len(level) != 2:
                self.items.append(f"{label} level {index} is not a (price, size) pair: {_show(level)}")
                continue
            self.field(f"{label} level {index} price", level[0], _positive_problem)
            self.field(f"{label} level {index} size", level[1], size_rule)

    def verdict(self, check: str) -> Verdict | None:
        items = self.items
        if not items:
            return None
        more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
        return Verdict(check, items[0] + more)


# --- options -------------------------------------------------------------------------------------


class _Options:
    """Reads a check's options, with a clear error for a wrong type, range or unknown key."""

    __slots__ = ("_check", "_known", "_options")

    def __init__(self, check: str, options: Mapping[str, Any] | None) -> None:
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise TypeError(f"check {check!r}: options must be a mapping, got {type(options).__name__}")
        self._check = check
        self._options = options
        self._known: list[str] = []

    def _fail(self, key: str, expected: str, value: object) -> ValueError:
        return ValueError(f"check {self._check!r}: option {key!r} must be {expected}, got {value!r}")

    def number(self, key: str, default: float, *, minimum: float = 0.0, strict: bool = True) -> float:
        self._known.append(key)
        value = self._options.get(key, default)
        expected = f"a number {'>' if strict else '>='} {minimum:g}"
        if not _is_finite_number(value):
            raise self._fail(key, expected, value)
        if value < minimum or (strict and value == minimum):
            raise self._fail(key, expected, value)
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        self._known.append(key)
        value = self._options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"an integer >= {minimum}", value)
        return value

    def flag(self, key: str, default: bool) -> bool:
        self._known.append(key)
        value = self._options.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def done(self) -> None:
        unknown = sorted(str(key) for key in self._options if key not in self._known)
        if unknown:
            known = ", ".join(self._known) or "none"
            raise ValueError(
                f"check {self._check!r}: unknown option(s) {', '.join(map(repr, unknown))} (known: {known})"
            )


# --- base ----------------------------------------------------------------------------------------


class _Check:
    """Dispatches to one handler per event class and turns an unforeseen exception into a verdict."""

    __slots__ = ("_handlers", "event_types", "name")

    def __init__(self, name: str, handlers: dict[type[Event], Handler]) -> None:
        self.name = name
        self.event_types: tuple[type[Event], ...] = tuple(handlers)
        self._handlers = handlers

    def check(self, event: Event, context: ValidationContext) -> Verdict | None:
        handler = self._handlers.get(type(event))
        if handler is None:
            handler = self._resolve(type(event))
            if handler is None:
                return None
        try:
            return handler(event, context)
        except Exception as exc:  # a malformed value no specific path foresaw: report it, never raise
            return self.unforeseen(event, exc)

    def unforeseen(self, event: Event, exc: Exception) -> Verdict:
        """The verdict for a handler that raised on ``event`` (what :meth:`check` returns then)."""
        return Verdict(
            self.name, f"{_label(event)} could not be checked: {type(exc).__name__}: {_show(str(exc))}"
        )

    def handler_for(self, cls: type[Event]) -> Handler | None:
        """The handler :meth:`check` runs for events of class ``cls`` (None: not this check's business).

        The engine calls it directly, one Python call per check instead of two; whoever does must turn
        an exception from it into :meth:`unforeseen`'s verdict, as :meth:`check` does.
        """
        handler = self._handlers.get(cls)
        return handler if handler is not None else self._resolve(cls)

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        """Statements that ``return False`` unless this check surely passes an event ``e`` of exactly
        class ``cls`` (context ``ctx``), for the engine's fused per-class test; None: not offered.

        The test is conservative: when it falls through, the check's handler would have returned None
        without raising. It has no side effects; a stateful check puts the state changes of its pass
        path in :meth:`commit_source`, which the fused function runs only once every test passed.
        ``tag`` makes the names of the returned globals (and of locals kept for the commit) unique.
        Exceptions in the statements count as "not sure".
        """
        return None

    def commit_source(self, cls: type[Event], tag: str) -> str:
        """Statements (that cannot raise) applying what the handler's pass path changes in the check's
        state, after :meth:`pass_source`'s statements fell through for the same event."""
        return ""

    def _resolve(self, cls: type[Event]) -> Handler | None:
        # A subclass of a known event class (plugin-defined) gets its base class's handler.
        for base in cls.__mro__[1:]:
            handler = self._handlers.get(base)
            if handler is not None:
                self._handlers[cls] = handler
                return handler
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# --- prices --------------------------------------------------------------------------------------

_TICKER_PRICES = (
    ("last", "ticker last"),
    ("bid", "ticker bid"),
    ("ask", "ticker ask"),
    ("open", "ticker open"),
    ("high", "ticker high"),
    ("low", "ticker low"),
    ("vwap", "ticker vwap"),
)
_TICKER_SIZES = (("bid_size", "ticker bid size"), ("ask_size", "ticker ask size"))
_TICKER_CHANGES = (("price_change", "ticker price change"), ("price_change_pct", "ticker price change %"))
_KLINE_PRICES = (
    ("open", "kline open"),
    ("high", "kline high"),
    ("low", "kline low"),
    ("close", "kline close"),
)


def _levels_ok(levels: Iterable[Any], zero_size_ok: bool) -> bool:
    try:
        if zero_size_ok:
            for price, size in levels:
                if not (0.0 < price < _INF and 0.0 <= size < _INF):
                    return False
        else:
            for price, size in levels:
                if not (0.0 < price < _INF and 0.0 < size < _INF):
                    return False
    except (TypeError, ValueError):
        return False
    return True


class PriceCheck(_Check):
    """``prices``: prices and sizes are finite numbers, prices positive.

    Trade price and size, book-ticker bid/ask and sizes, ticker last/bid/ask/open/high/low/vwap and
    sizes, kline open/high/low/close, snapshot levels and mark prices must be finite and positive;
    delta level sizes may be zero (zero removes the level). ``None`` fields (a kline without trades, a
    ticker without bid/ask) are skipped; ticker price changes and funding rates must be finite.

    Options: none.
    """

    __slots__ = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        _Options("prices", options).done()
        super().__init__(
            "prices",
            {
                Trade: self._trade,
                BookTicker: self._book_ticker,
                Ticker: self._ticker,
                Kline: self._kline,
                BookSnapshot: self._snapshot,
                BookDelta: self._delta,
                MarkPrice: self._mark_price,
            },
        )

    def _trade(self, event: Trade, context: ValidationContext) -> Verdict | None:
        price = event.price
        size = event.size
        try:
            if 0.0 < price < _INF and 0.0 < size < _INF:
                return None
        except TypeError:
            pass
        problems = _Problems()
        problems.field("trade price", price, _positive_problem)
        problems.field("trade size", size, _positive_problem)
        return problems.verdict(self.name)

    def _book_ticker(self, event: BookTicker, context: ValidationContext) -> Verdict | None:
        bid = event.bid
        ask = event.ask
        bid_size = event.bid_size
        ask_size = event.ask_size
        try:
            if 0.0 < bid < _INF and 0.0 < ask < _INF and 0.0 < bid_size < _INF and 0.0 < ask_size < _INF:
                return None
        except TypeError:
            pass
        problems = _Problems()
        problems.field("book ticker bid", bid, _positive_problem)
        problems.field("book ticker bid size", bid_size, _positive_problem)
        problems.field("book ticker ask", ask, _positive_problem)
        problems.field("book ticker ask size", ask_size, _positive_problem)
        return problems.verdict(self.name)

    # Tickers, klines and mark prices: each field is None or an exact float in range (the ``type`` test
    # keeps bools, Decimals and the like, which compare like numbers, for the slow path to name).

    def _ticker(self, event: Ticker, context: ValidationContext) -> Verdict | None:
        last = event.last
        bid = event.bid
        ask = event.ask
        o = event.open
        h = event.high
        low = event.low
        vwap = event.vwap
        bid_size = event.bid_size
        ask_size = event.ask_size
        change = event.price_change
        change_pct = event.price_change_pct
        if (
            (last is None or (type(last) is _float and 0.0 < last < _INF))
            and (bid is None or (type(bid) is _float and 0.0 < bid < _INF))
            and (ask is None or (type(ask) is _float and 0.0 < ask < _INF))
            and (o is None or (type(o) is _float and 0.0 < o < _INF))
            and (h is None or (type(h) is _float and 0.0 < h < _INF))
            and (low is None or (type(low) is _float and 0.0 < low < _INF))
            and (vwap is None or (type(vwap) is _float and 0.0 < vwap < _INF))
            and (bid_size is None or (type(bid_size) is _float and 0.0 < bid_size < _INF))
            and (ask_size is None or (type(ask_size) is _float and 0.0 < ask_size < _INF))
            and (change is None or (type(change) is _float and -_INF < change < _INF))
            and (change_pct is None or (type(change_pct) is _float and -_INF < change_pct < _INF))
        ):
            return None
        problems = _Problems()
        for attr, label in _TICKER_PRICES:
            problems.optional(label, getattr(event, attr), _positive_problem)
        for attr, label in _TICKER_SIZES:
            problems.optional(label, getattr(event, attr), _positive_problem)
        for attr, label in _TICKER_CHANGES:
            problems.optional(label, getattr(event, attr), _finite_problem)
        return problems.verdict(self.name)

    def _kline(self, event: Kline, context: ValidationContext) -> Verdict | None:
        o = event.open
        h = event.high
        low = event.low
        c = event.close
        if (
            (o is None or (type(o) is _float and 0.0 < o < _INF))
            and (h is None or (type(h) is _float and 0.0 < h < _INF))
            and (low is None or (type(low) is _float and 0.0 < low < _INF))
            and (c is None or (type(c) is _float and 0.0 < c < _INF))
        ):
            return None
        problems = _Problems()
        for attr, label in _KLINE_PRICES:
            problems.optional(label, getattr(event, attr), _positive_problem)
        return problems.verdict(self.name)

    def _snapshot(self, event: BookSnapshot, context: ValidationContext) -> Verdict | None:
        if _levels_ok(event.bids, False) and _levels_ok(event.asks, False):
            return None
        problems = _Problems()
        problems.levels("snapshot bid", event.bids, _positive_problem)
        problems.levels("snapshot ask", event.asks, _positive_problem)
        return problems.verdict(self.name)

    def _delta(self, event: BookDelta, context: ValidationContext) -> Verdict | None:
        try:  # _levels_ok on both sides, inlined: deltas are a busy stream
            for levels in (event.bids, event.asks):
                for price, size in levels:
                    if not (0.0 < price < _INF and 0.0 <= size < _INF):
                        break
                else:
                    continue
                break
            else:
                return None
        except (TypeError, ValueError):
            pass
        problems = _Problems()
        problems.levels("delta bid", event.bids, _non_negative_problem)
        problems.levels("delta ask", event.asks, _non_negative_problem)
        return problems.verdict(self.name)

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        if cls is Trade:
            return "if not (0.0 < e.price < INF and 0.0 < e.size < INF): return False\n", {}
        if cls is BookTicker:
            return (
                "if not (0.0 < e.bid < INF and 0.0 < e.ask < INF and 0.0 < e.bid_size < INF"
                " and 0.0 < e.ask_size < INF): return False\n"
            ), {}
        if cls is Kline:
            lines = "".join(
                f"v = e.{name}\nif not (v is None or (type(v) is FLOAT and 0.0 < v < INF)): return False\n"
                for name in ("open", "high", "low", "close")
            )
            return lines, {}
        return None

    def _mark_price(self, event: MarkPrice, context: ValidationContext) -> Verdict | None:
        mark = event.mark_price
        index = event.index_price
        funding = event.funding_rate
        if (
            type(mark) is _float
            and 0.0 < mark < _INF
            and (index is None or (type(index) is _float and 0.0 < index < _INF))
            and (funding is None or (type(funding) is _float and -_INF < funding < _INF))
        ):
            return None
        problems = _Problems()
        problems.field("mark price", event.mark_price, _positive_problem)
        problems.optional("index price", event.index_price, _positive_problem)
        problems.optional("funding rate", event.funding_rate, _finite_problem)
        return problems.verdict(self.name)


# --- tick grid -----------------------------------------------------------------------------------


def _off_grid(value: Any, step: float, rel_tolerance: float) -> bool:
    """True when ``value`` is measurably off the grid of ``step``.

    ``value / step`` lands within a few ulps of an integer for an on-grid value parsed from a decimal
    string, so the allowed distance from the nearest integer is relative to the quotient. A NaN or
    infinite value compares False everywhere and so passes (``prices`` reports it); so does a quotient
    so large that the tolerance exceeds half a step (the grid cannot be resolved there).
    """
    if value is None:
        return False
    quotient = value / step
    frac = quotient % 1.0
    if frac > 0.5:
        frac = 1.0 - frac
    return bool(frac > rel_tolerance * abs(quotient))


class TickGridCheck(_Check):
    """``tick_grid``: prices on the instrument's tick grid and sizes on its step grid.

    The instrument comes from ``context.instrument(exchange, symbol)``; events of unknown instruments, or
    of instruments with no positive tick/step size, are skipped. Floats cannot hold most decimal ticks
    exactly, so a value passes when ``value / tick`` is within ``rel_tolerance * |value / tick|`` of an
    integer.

    Every handler first runs a fast test that can only say "on the grid": with ``q = value / tick``,
    ``f = q % 1.0`` and ``t = q * rel_tolerance``, the value passes when ``f <= t or 1 - f <= t``, which
    for ``q >= 0`` is exactly the documented rule (``min(f, 1 - f) <= t``). Anything else (an off-grid
    value, a negative or odd one, an exception) goes to the slow path, which decides and words the verdict.

    Options:
        rel_tolerance (float, default 1e-12): allowed relative error; values parsed from decimal strings
            are within ~3e-16, so the default leaves a wide margin yet resolves one tick up to 1e11 ticks.
        check_sizes (bool, default true): also check sizes against ``step_size``.
    """

    __slots__ = ("_rel", "_sizes")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        opts = _Options("tick_grid", options)
        self._rel = opts.number("rel_tolerance", 1e-12)
        self._sizes = opts.flag("check_sizes", True)
        opts.done()
        super().__init__(
            "tick_grid",
            {
                Trade: self._trade,
                BookTicker: self._book_ticker,
                Ticker: self._ticker,
                Kline: self._kline,
                BookSnapshot: self._levels,
                BookDelta: self._levels,
            },
        )

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        # The handlers' fast tests, as statements: falling through means the handler returns None.
        prices: tuple[str, ...]
        sizes: tuple[str, ...]
        if cls is Trade:
            prices, sizes = ("price",), ("size",)
        elif cls is BookTicker:
            prices, sizes = ("bid", "ask"), ("bid_size", "ask_size")
        elif cls is Kline:
            prices, sizes = ("open", "high", "low", "close"), ()
        else:
            return None
        rel, on = f"REL_{tag}", f"SIZES_{tag}"
        lines = ["inst = INSTRUMENT(e.exchange, e.symbol)", "if inst is not None:", "    tick = inst.tick_size"]
        if cls is Kline:
            lines.append("    if not 0.0 < tick < INF: return False")
            lines.append("    if True:")
        else:
            lines.append("    if 0.0 < tick < INF:")
        for name in prices:
            lines += [f"        v = e.{name}"]
            if cls is Kline:
                lines += ["        if v is not None:", "            q = v / tick"]
            else:
                lines += ["        if True:", "            q = v / tick"]
            lines += [f"            f = q % 1.0; t = q * {rel}", "            if f > t and 1.0 - f > t: return False"]
        if sizes:
            lines += [f"    if {on}:", "        step = inst.step_size", "        if 0.0 < step < INF:"]
            for name in sizes:
                lines += [
                    f"            q = e.{name} / step",
                    f"            f = q % 1.0; t = q * {rel}",
                    "            if f > t and 1.0 - f > t: return False",
                ]
        return "\n".join(lines) + "\n", {rel: self._rel, on: self._sizes}

    def _grid(self, event: Event, context: ValidationContext) -> tuple[float, float] | None:
        instrument = context.instrument(event.exchange, event.symbol)
        if instrument is None:
            return None
        tick = instrument.tick_size
        step = instrument.step_size if self._sizes else 0.0
        tick = tick if 0.0 < tick < _INF else 0.0
        step = step if 0.0 < step < _INF else 0.0
        if tick == 0.0 and step == 0.0:
            return None
        return tick, step

    def _verdict(self, label: str, value: object, kind: str, step: float, event: Event) -> Verdict:
        return Verdict(
            self.name,
            f"{label} {_show(value)} is not on the {kind} grid of {step!r} ({event.exchange} {event.symbol})",
        )

    # --- fast paths: a few float operations per value, no calls ---------------------------------

    def _trade(self, event: Trade, context: ValidationContext) -> Verdict | None:
        instrument = context.instrument(event.exchange, event.symbol)
        if instrument is None:
            return None
        rel = self._rel
        tick = instrument.tick_size
        try:
            if 0.0 < tick < _INF:
                q = event.price / tick
                f = q % 1.0
                t = q * rel
                if f > t and 1.0 - f > t:
                    return self._trade_slow(event, context)
            if self._sizes:
                step = instrument.step_size
                if 0.0 < step < _INF:
                    q = event.size / step
                    f = q % 1.0
                    t = q * rel
                    if f > t and 1.0 - f > t:
                        return self._trade_slow(event, context)
            return None
        except Exception:
            return self._trade_slow(event, context)

    def _book_ticker(self, event: BookTicker, context: ValidationContext) -> Verdict | None:
        instrument = context.instrument(event.exchange, event.symbol)
        if instrument is None:
            return None
        rel = self._rel
        tick = instrument.tick_size
        try:
            if 0.0 < tick < _INF:
                q = event.bid / tick
                f = q % 1.0
                t = q * rel
                if f > t and 1.0 - f > t:
                    return self._book_ticker_slow(event, context)
                q = event.ask / tick
                f = q % 1.0
                t = q * rel
                if f > t and 1.0 - f > t:
                    return self._book_ticker_slow(event, context)
            if self._sizes:
                step = instrument.step_size
                if 0.0 < step < _INF:
                    q = event.bid_size / step
                    f = q % 1.0
                    t = q * rel
                    if f > t and 1.0 - f > t:
                        return self._book_ticker_slow(event, context)
                    q = event.ask_size / step
                    f = q % 1.0
                    t = q * rel
                    if f > t and 1.0 - f > t:
                        return self._book_ticker_slow(event, context)
            return None
        except Exception:
            return self._book_ticker_slow(event, context)

    def _ticker(self, event: Ticker, context: ValidationContext) -> Verdict | None:
        instrument = context.instrument(event.exchange, event.symbol)
        if instrument is None:
            return None
        rel = self._rel
        tick = instrument.tick_size
        try:
            if 0.0 < tick < _INF:
                for value in (event.last, event.bid, event.ask, event.open, event.high, event.low):
                    if value is not None:
                        q = value / tick
                        f = q % 1.0
                        t = q * rel
                        if f > t and 1.0 - f > t:
                            return self._ticker_slow(event, context)
            if self._sizes:
                step = instrument.step_size
                if 0.0 < step < _INF:
                    for value in (event.bid_size, event.ask_size):
                        if value is not None:
                            q = value / step
                            f = q % 1.0
                            t = q * rel
                            if f > t and 1.0 - f > t:
                                return self._ticker_slow(event, context)
            return None
        except Exception:
            return self._ticker_slow(event, context)

    def _kline(self, event: Kline, context: ValidationContext) -> Verdict | None:
        instrument = context.instrument(event.exchange, event.symbol)
        if instrument is None:
            return None
        tick = instrument.tick_size
        if not 0.0 < tick < _INF:
            return self._kline_slow(event, context)
        rel = self._rel
        try:
            for value in (event.open, event.high, event.low, event.close):
                if value is not None:
                    q = value / tick
                    f = q % 1.0
                    t = q * rel
                    if f > t and 1.0 - f > t:
                        return self._kline_slow(event, context)
            return None
        except Exception:
            return self._kline_slow(event, context)

    def _levels(self, event: BookSnapshot | BookDelta, context: ValidationContext) -> Verdict | None:
        grid = self._grid(event, context)
        if grid is None:
            return None
        tick, step = grid
        rel = self._rel
        try:
            if tick and step:
                for levels in (event.bids, event.asks):
                    for price, size in levels:
                        q = price / tick
                        f = q % 1.0
                        t = q * rel
                        if f > t and 1.0 - f > t:
                            return self._levels_slow(event, tick, step)
                        q = size / step
                        f = q % 1.0
                        t = q * rel
                        if f > t and 1.0 - f > t:
                            return self._levels_slow(event, tick, step)
            elif tick:
                for levels in (event.bids, event.asks):
                    for price, _size in levels:
                        q = price / tick
                        f = q % 1.0
                        t = q * rel
                        if f > t and 1.0 - f > t:
                            return self._levels_slow(event, tick, step)
            else:
                for levels in (event.bids, event.asks):
                    for _price, size in levels:
                        q = size / step
                        f = q % 1.0
                        t = q * rel
                        if f > t and 1.0 - f > t:
                            return self._levels_slow(event, tick, step)
            return None
        except Exception:
            return self._levels_slow(event, tick, step)

    # --- slow paths: decide exactly and say what is off -----------------------------------------

    def _trade_slow(self, event: Trade, context: ValidationContext) -> Verdict | None:
        instrument = context.instrument(event.exchange, event.symbol)
        if instrument is None:
            return None
        rel = self._rel
        tick = instrument.tick_size
        if 0.0 < tick < _INF:
            quotient = event.price / tick
            frac = quotient % 1.0
            if frac > 0.5:
                frac = 1.0 - frac
            if frac > rel * abs(quotient):
                return self._verdict("trade price", event.price, "tick", tick, event)
        step = instrument.step_size
        if self._sizes and 0.0 < step < _INF:
            quotient = event.size / step
            frac = quotient % 1.0
            if frac > 0.5:
                frac = 1.0 - frac
            if frac > rel * abs(quotient):
                return self._verdict("trade size", event.size, "step", step, event)
        return None

    def _book_ticker_slow(self, event: BookTicker, context: ValidationContext) -> Verdict | None:
        instrument = context.instrument(event.exchange, event.symbol)
        if instrument is None:
            return None
        rel = self._rel
        tick = instrument.tick_size
        if 0.0 < tick < _INF:
            quotient = event.bid / tick
            frac = quotient % 1.0
            if frac > 0.5:
                frac = 1.0 - frac
            off = frac > rel * abs(quotient)
            quotient = event.ask / tick
            frac = quotient % 1.0
            if frac > 0.5:
                frac = 1.0 - frac
            if off or frac > rel * abs(quotient):
                return self._slow_fields(
                    event, ((("book ticker bid", event.bid), ("book ticker ask", event.ask))), (), tick, 0.0
                )
        step = instrument.step_size
        if self._sizes and 0.0 < step < _INF:
            quotient = event.bid_size / step
            frac = quotient % 1.0
            if frac > 0.5:
                frac = 1.0 - frac
            off = frac > rel * abs(quotient)
            quotient = event.ask_size / step
            frac = quotient % 1.0
            if frac > 0.5:
                frac = 1.0 - frac
            if off or frac > rel * abs(quotient):
                sizes = (("book ticker bid size", event.bid_size), ("book ticker ask size", event.ask_size))
                return self._slow_fields(event, (), sizes, 0.0, step)
        return None

    def _ticker_slow(self, event: Ticker, context: ValidationContext) -> Verdict | None:
        return self._fields(
            event,
            context,
            (
                ("ticker last", event.last),
                ("ticker bid", event.bid),
                ("ticker ask", event.ask),
                ("ticker open", event.open),
                ("ticker high", event.high),
                ("ticker low", event.low),
            ),
            (("ticker bid size", event.bid_size), ("ticker ask size", event.ask_size)),
        )

    def _kline_slow(self, event: Kline, context: ValidationContext) -> Verdict | None:
        return self._fields(
            event,
            context,
            (
                ("kline open", event.open),
                ("kline high", event.high),
                ("kline low", event.low),
                ("kline close", event.close),
            ),
            (),
        )

    def _fields(
        self,
        event: Event,
        context: ValidationContext,
        prices: tuple[tuple[str, Any], ...],
        sizes: tuple[tuple[str, Any], ...],
    ) -> Verdict | None:
        grid = self._grid(event, context)
        if grid is None:
            return None
        return self._slow_fields(event, prices, sizes, *grid)

    def _slow_fields(
        self,
        event: Event,
        prices: tuple[tuple[str, Any], ...],
        sizes: tuple[tuple[str, Any], ...],
        tick: float,
        step: float,
    ) -> Verdict | None:
        rel = self._rel
        if tick:
            for label, value in prices:
                if _off_grid(value, tick, rel):
                    return self._verdict(label, value, "tick", tick, event)
        if step:
            for label, value in sizes:
                if _off_grid(value, step, rel):
                    return self._verdict(label, value, "step", step, event)
        return None

    def _levels_slow(self, event: BookSnapshot | BookDelta, tick: float, step: float) -> Verdict | None:
        rel = self._rel
        kind = _label(event)
        for side, levels in (("bid", event.bids), ("ask", event.asks)):
            for index, (price, size) in enumerate(levels):
                if tick and _off_grid(price, tick, rel):
                    return self._verdict(f"{kind} {side} level {index} price", price, "tick", tick, event)
                if step and _off_grid(size, step, rel):
                    return self._verdict(f"{kind} {side} level {index} size", size, "step", step, event)
        return None


# --- spread --------------------------------------------------------------------------------------


class SpreadCheck(_Check):
    """``spread``: best bid below best ask, and the spread within a bound.

    Applies to book tickers and to tickers that carry both bid and ask. ``bid >= ask`` is reported as a
    crossed (or locked) book; the spread is ``(ask - bid) / mid`` in basis points. Non-finite or
    non-positive prices are left to ``prices``.

    Options:
        max_spread_bps (float, default 500): the widest spread accepted, in basis points of the mid.
    """

    __slots__ = ("_k", "_max_bps")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        opts = _Options("spread", options)
        self._max_bps = opts.number("max_spread_bps", 500.0)
        opts.done()
        # spread_bps <= max  <=>  ask - bid <= k*ask + k*bid  with k = max/2e4 (no division, no overflow)
        self._k = self._max_bps / 20_000.0
        super().__init__("spread", {BookTicker: self._book_ticker, Ticker: self._ticker})

    def _book_ticker(self, event: BookTicker, context: ValidationContext) -> Verdict | None:
        bid = event.bid
        ask = event.ask
        k = self._k
        if bid < ask and ask - bid <= k * ask + k * bid:
            return None
        return self._slow("book ticker", bid, ask)

    def _ticker(self, event: Ticker, context: ValidationContext) -> Verdict | None:
        bid = event.bid
        ask = event.ask
        if bid is None or ask is None:
            return None
        k = self._k
        if bid < ask and ask - bid <= k * ask + k * bid:
            return None
        return self._slow("ticker", bid, ask)

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        if cls is not BookTicker:
            return None
        k = f"K_{tag}"
        return f"b = e.bid; a = e.ask\nif not (b < a and a - b <= {k} * a + {k} * b): return False\n", {k: self._k}

    def _slow(self, label: str, bid: float, ask: float) -> Verdict | None:
        if not (_is_finite_number(bid) and _is_finite_number(ask)):
            return None
        if bid > ask:
            return Verdict(self.name, f"{label} crossed: bid {bid!r} is above ask {ask!r}")
        if bid == ask:
            return Verdict(self.name, f"{label} locked: bid {bid!r} equals ask {ask!r}")
        if bid <= 0:
            return None
        bps = (ask - bid) / (ask * 0.5 + bid * 0.5) * 10_000.0
        if bps <= self._max_bps:
            return None
        return Verdict(
            self.name,
            f"{label} spread {bps:.1f} bps exceeds {self._max_bps:g} bps (bid {bid!r}, ask {ask!r})",
        )


# --- volumes and candle shape --------------------------------------------------------------------


class VolumeCheck(_Check):
    """``volumes``: non-negative volumes and counts; candle prices consistent.

    Ticker and kline ``volume``, ``quote_volume`` and ``trade_count`` must be finite and non-negative
    (``None`` skipped). A kline with all four prices must have ``high >= max(open, close)`` and
    ``min(open, close) >= low``; a ticker with both must have ``high >= low``. Non-finite prices are
    left to ``prices``.

    Options: none.
    """

    __slots__ = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        _Options("volumes", options).done()
        super().__init__("volumes", {Ticker: self._ticker, Kline: self._kline})

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        if cls is not Kline:
            return None
        # The _kline handler's fast test, as is.
        return (
            "v = e.volume; qv = e.quote_volume; n = e.trade_count\n"
            "o = e.open; h = e.high; lo = e.low; c = e.close\n"
            "if not ((v is None or (type(v) is FLOAT and 0.0 <= v < INF))"
            " and (qv is None or (type(qv) is FLOAT and 0.0 <= qv < INF))"
            " and (n is None or (type(n) is INT and n >= 0))"
            " and (o is None or h is None or lo is None or c is None or (type(o) is FLOAT and type(h) is FLOAT"
            " and type(lo) is FLOAT and type(c) is FLOAT and h >= o and h >= c and lo <= o and lo <= c))):"
            " return False\n"
        ), {}

    def _amounts(self, problems: _Problems, label: str, event: Ticker | Kline) -> None:
        problems.optional(f"{label} volume", event.volume, _non_negative_problem)
        problems.optional(f"{label} quote volume", event.quote_volume, _non_negative_problem)
        problems.optional(f"{label} trade count", event.trade_count, _non_negative_problem)

    def _ticker(self, event: Ticker, context: ValidationContext) -> Verdict | None:
        volume = event.volume
        quote_volume = event.quote_volume
        count = event.trade_count
        high = event.high
        low = event.low
        if (
            (volume is None or (type(volume) is _float and 0.0 <= volume < _INF))
            and (quote_volume is None or (type(quote_volume) is _float and 0.0 <= quote_volume < _INF))
            and (count is None or (type(count) is _int and count >= 0))
            and (high is None or low is None or (type(high) is _float and type(low) is _float and not high < low))
        ):
            return None
        problems = _Problems()
        self._amounts(problems, "ticker", event)
        high = event.high
        low = event.low
        if _is_finite_number(high) and _is_finite_number(low) and high < low:
            problems.items.append(f"ticker high {high!r} is below low {low!r}")
        return problems.verdict(self.name)

    def _kline(self, event: Kline, context: ValidationContext) -> Verdict | None:
        volume = event.volume
        quote_volume = event.quote_volume
        count = event.trade_count
        o = event.open
        h = event.high
        low = event.low
        c = event.close
        if (
            (volume is None or (type(volume) is _float and 0.0 <= volume < _INF))
            and (quote_volume is None or (type(quote_volume) is _float and 0.0 <= quote_volume < _INF))
            and (count is None or (type(count) is _int and count >= 0))
            and (
                o is None
                or h is None
                or low is None
                or c is None
                or (
                    type(o) is _float
                    and type(h) is _float
                    and type(low) is _float
                    and type(c) is _float
                    and h >= o
                    and h >= c
                    and low <= o
                    and low <= c
                )
            )
        ):
            return None
        problems = _Problems()
        self._amounts(problems, "kline", event)
        o, h, low, c = event.open, event.high, event.low, event.close
        if _is_finite_number(o) and _is_finite_number(h) and _is_finite_number(low) and _is_finite_number(c):
            top = max(o, c)
            bottom = min(o, c)
            if h < top:
                problems.items.append(f"kline high {h!r} is below max(open, close) {top!r}")
            if low > bottom:
                problems.items.append(f"kline low {low!r} is above min(open, close) {bottom!r}")
        return problems.verdict(self.name)


# --- book integrity ------------------------------------------------------------------------------


def _order_problem(label: str, levels: Any, descending: bool) -> str | None:
    """Why a snapshot side is not strictly ordered, or None. Non-numeric prices cannot be ordered."""
    previous: float | None = None
    for index, level in enumerate(levels):
        if not isinstance(level, tuple | list) or len(level) != 2:
            return f"{label} level {index} is not a (price, size) pair: {_show(level)}"
        price = level[0]
        if not _is_finite_number(price):
            return f"{label} level {index} price {_show(price)} is not a finite number"
        if previous is not None:
            if price == previous:
                return f"{label} price {price!r} appears twice (levels {index - 1} and {index})"
            if (price > previous) if descending else (price < previous):
                order = "descending" if descending else "ascending"
                return f"{label}s not strictly {order}: level {index} price {price!r} after {previous!r}"
        previous = price
    return None


def _duplicate_price(levels: Any) -> float | None:
    seen: set[float] = set()
    for price, _size in levels:
        if price in seen:
            return float(price)
        seen.add(price)
    return None


class BookIntegrityCheck(_Check):
    """``book_integrity``: well-formed book levels.

    A snapshot's bids must be strictly descending and its asks strictly ascending (so prices are unique
    per side) and the book must not be crossed (best bid < best ask). A delta may not list the same
    price twice on one side.

    Options: none.
    """

    __slots__ = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        _Options("book_integrity", options).done()
        super().__init__("book_integrity", {BookSnapshot: self._snapshot, BookDelta: self._delta})

    def _snapshot(self, event: BookSnapshot, context: ValidationContext) -> Verdict | None:
        bids = event.bids
        asks = event.asks
        try:
            ok = True
            previous = _INF
            for price, _size in bids:
                if not price < previous:
                    ok = False
                    break
                previous = price
            if ok:
                previous = -_INF
                for price, _size in asks:
                    if not price > previous:
                        ok = False
                        break
                    previous = price
            if ok and (not bids or not asks or bids[0][0] < asks[0][0]):
                return None
        except (TypeError, ValueError, IndexError):
            pass
        problem = _order_problem("snapshot bid", bids, True) or _order_problem("snapshot ask", asks, False)
        if problem is None and bids and asks:
            best_bid = bids[0][0]
            best_ask = asks[0][0]
            if best_bid >= best_ask:
                problem = f"snapshot crossed: best bid {best_bid!r} is not below best ask {best_ask!r}"
        return None if problem is None else Verdict(self.name, problem)

    def _delta(self, event: BookDelta, context: ValidationContext) -> Verdict | None:
        bids = event.bids
        asks = event.asks
        if type(bids) is tuple and type(asks) is tuple:
            # dict() of the (price, size) pairs keeps one entry per price, in C.
            try:
                if (len(bids) < 2 or len(dict(bids)) == len(bids)) and (
                    len(asks) < 2 or len(dict(asks)) == len(asks)
                ):
                    return None
            except Exception:
                pass
        for side, levels in (("bid", event.bids), ("ask", event.asks)):
            if len(levels) > 1 and len({price for price, _size in levels}) != len(levels):
                price = _duplicate_price(levels)
                return Verdict(self.name, f"delta lists {side} price {price!r} more than once")
        return None


# --- outliers ------------------------------------------------------------------------------------


def _mad_sorted(values: list[float], median: float) -> float:
    """Median absolute deviation of ``values`` (sorted ascending, non-empty) around ``median``.

    The absolute deviations, read outward from the median, are the merge of two sorted runs (left of
    the median going down, right going up), so walking half the window finds their median without
    building or sorting a list.
    """
    n = len(values)
    right = bisect_left(values, median)
    left = right - 1
    target = n >> 1
    previous = current = 0.0
    for _ in range(target + 1):
        if left >= 0 and (right >= n or median - values[left] <= values[right] - median):
            deviation = median - values[left]
            left -= 1
        else:
            deviation = values[right] - median
            right += 1
        previous, current = current, deviation
    return current if n & 1 else (previous + current) * 0.5


#: Most values a series takes on the fast path before its sorted window is caught up (bounds ``order``
#: to the window plus this many; each catch-up costs about one sort of the window).
_BAND_STEPS = 512
#: Values judged on the exact path before a band is tried again, after one could not be centred.
_ARM_RETRY = 128
#: Fast-path values merged back into the sorted window by bisection; past this many, one sort is cheaper.
_MERGE_BY_INSERT = 16


class _Series:
    """A bounded rolling window, in arrival order and sorted, plus the fast path's acceptance band.

    ``order`` is the window followed by the ``lag`` values accepted on the fast path since ``sorted``
    was last brought up to date (their arrival pushed as many of the oldest out of the window);
    :meth:`sync` merges them. ``lo``/``hi`` is the band (``hi = -inf``: none); ``budget`` counts the
    fast-path values left before the next exact look (0: work the band out at the next exact step;
    negative: steps to wait before trying again, after a band could not be found).
    """

    __slots__ = ("budget", "hi", "lag", "lo", "order", "pending", "sorted")

    def __init__(self, rebase_after: int) -> None:
        self.sorted: list[float] = []
        self.order: deque[float] = deque()
        self.pending: deque[float] = deque(maxlen=rebase_after)
        self.lag = 0
        self.budget = 0
        self.lo = _INF
        self.hi = -_INF

    def sync(self, window: int) -> None:
        """Make ``sorted`` the sorted window again, after values taken on the fast path."""
        lag = self.lag
        self.lag = 0
        order = self.order
        values = self.sorted
        if lag <= _MERGE_BY_INSERT and lag <= window:  # the values pushed out were all in ``sorted``
            while len(order) > window:
                del values[bisect_left(values, order.popleft())]
            for index in range(-lag, 0):
                insort(values, order[index])
        else:
            while len(order) > window:
                order.popleft()
            values[:] = order
            values.sort()

    def add(self, value: float, window: int) -> None:
        if self.lag:
            self.sync(window)
        order = self.order
        if len(order) >= window:
            old = order.popleft()
            del self.sorted[bisect_left(self.sorted, old)]
        order.append(value)
        insort(self.sorted, value)

    def reset(self, values: Iterable[float], window: int) -> None:
        self.sorted.clear()
        self.order.clear()
        self.pending.clear()
        self.lag = 0
        self.budget = 0
        self.lo = _INF
        self.hi = -_INF
        for value in values:
            self.add(value, window)


class OutlierCheck(_Check):
    """``outliers``: a trade price or book-ticker mid far from its recent values.

    Per stream (exchange, symbol, event class) the check keeps the last ``window`` accepted values and
    flags a value whose distance from their median exceeds the largest of ``threshold`` median absolute
    deviations, ``min_rel_deviation`` of the median, and ``min_ticks`` ticks of the instrument (when the
    context knows it). The two floors stop a flat series (MAD 0) from flagging a one-tick move. Nothing is
    flagged until ``min_samples`` values were seen. A flagged value does not enter the window, so a
    single bad print cannot poison it; after ``rebase_after`` consecutive flagged values that agree with
    each other, the level shift is taken as real and the window restarts from them.

    The median is read from a sorted window (bisect insert/remove), and the MAD is computed only when the
    deviation exceeds the relative floor. Most values do not even need the median: once the window holds
    ``min_samples`` values, the check centres a band ``[lo, hi]`` on the median, narrower than
    ``min_rel_deviation * lo``. A value inside the band that enters the window (as the oldest leaves, or
    while it fills) adds nothing below ``lo`` or above ``hi``, so the median stays inside the band, and
    so within the relative floor of every value inside it: such a value is accepted by appending it, and the sorted window is caught up at the next
    value outside the band (or after ``_BAND_STEPS`` values), which takes the exact path described above.

    Options:
        window (int, default 200): values kept per stream.
        min_samples (int, default 20): values needed before anything is flagged (3..window).
        threshold (float, default 10): allowed deviation in MADs.
        min_rel_deviation (float, default 0.005): deviation always allowed, as a fraction of the median.
        min_ticks (float, default 5): deviation always allowed, in ticks of the instrument.
        rebase_after (int, default 10): consecutive agreeing outliers that reset the window.
    """

    __slots__ = (
        "_band_half",
        "_band_steps",
        "_mids",
        "_min_samples",
        "_min_ticks",
        "_rebase_after",
        "_rel_floor",
        "_threshold",
        "_trades",
        "_window",
    )

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        opts = _Options("outliers", options)
        self._window = opts.integer("window", 200, minimum=3)
        self._min_samples = opts.integer("min_samples", 20, minimum=3)
        self._threshold = opts.number("threshold", 10.0)
        self._rel_floor = opts.number("min_rel_deviation", 0.005, strict=False)
        self._min_ticks = opts.number("min_ticks", 5.0, strict=False)
        self._rebase_after = opts.integer("rebase_after", 10, minimum=2)
        opts.done()
        if self._min_samples > self._window:
            raise ValueError(
                f"check 'outliers': option 'min_samples' ({self._min_samples}) must not exceed "
                f"'window' ({self._window})"
            )
        if self._rebase_after > self._window:
            raise ValueError(
                f"check 'outliers': option 'rebase_after' ({self._rebase_after}) must not exceed "
                f"'window' ({self._window})"
            )
        # hi - lo = rel * lo exactly for a half width of rel / (2 + rel); a hair less for rounding.
        self._band_half = self._rel_floor / (2.0 + self._rel_floor) * (1.0 - 1e-9)
        self._band_steps = _BAND_STEPS
        self._trades: dict[tuple[str, str], _Series] = {}
        self._mids: dict[tuple[str, str], _Series] = {}
        super().__init__("outliers", {Trade: self._trade, BookTicker: self._book_ticker})

    def _trade(self, event: Trade, context: ValidationContext) -> Verdict | None:
        price = event.price
        if not 0.0 < price < _INF:
            return None  # not a usable price: ``prices`` reports it, and it must not enter the window
        series = self._trades.get((event.exchange, event.symbol))
        if series is not None and series.lo <= price <= series.hi:
            # Inside the band: accepted (see the class docstring); the sorted window catches up later.
            series.order.append(price)
            series.lag += 1
            budget = series.budget - 1
            series.budget = budget
            if not budget:
                series.hi = -_INF
            return None
        return self._observe(self._trades, event, price, "trade price", context)

    def _book_ticker(self, event: BookTicker, context: ValidationContext) -> Verdict | None:
        bid = event.bid
        ask = event.ask
        if not (0.0 < bid < _INF and 0.0 < ask < _INF):
            return None
        mid = bid * 0.5 + ask * 0.5
        series = self._mids.get((event.exchange, event.symbol))
        if series is not None and series.lo <= mid <= series.hi:
            series.order.append(mid)
            series.lag += 1
            budget = series.budget - 1
            series.budget = budget
            if not budget:
                series.hi = -_INF
            return None
        return self._observe(self._mids, event, mid, "book ticker mid", context)

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        # The handlers' band test: inside the band, the value is accepted (committed below); a value that
        # is no usable price passes untouched; anything else needs the exact path (the handler).
        s, v = f"s_{tag}", f"v_{tag}"
        if cls is Trade:
            streams = f"TRADES_{tag}"
            lines = [f"{v} = e.price", f"if 0.0 < {v} < INF:"]
            names: dict[str, Any] = {streams: self._trades}
        elif cls is BookTicker:
            streams = f"MIDS_{tag}"
            lines = [f"b_{tag} = e.bid; a_{tag} = e.ask", f"if 0.0 < b_{tag} < INF and 0.0 < a_{tag} < INF:",
                     f"    {v} = b_{tag} * 0.5 + a_{tag} * 0.5"]
            names = {streams: self._mids}
        else:
            return None
        lines += [
            f"    {s} = {streams}.get((e.exchange, e.symbol))",
            f"    if {s} is None or not {s}.lo <= {v} <= {s}.hi: return False",
            "else:",
            f"    {s} = None",
        ]
        return "\n".join(lines) + "\n", names

    def commit_source(self, cls: type[Event], tag: str) -> str:
        if cls is not Trade and cls is not BookTicker:
            return ""
        s, v = f"s_{tag}", f"v_{tag}"
        return (
            f"if {s} is not None:\n    {s}.order.append({v})\n    {s}.lag += 1\n    {s}.budget -= 1\n"
            f"    if not {s}.budget: {s}.hi = -INF\n"
        )

    def _observe(
        self,
        streams: dict[tuple[str, str], _Series],
        event: Event,
        value: float,
        label: str,
        context: ValidationContext,
    ) -> Verdict | None:
        """The exact path: judge ``value`` against the median of the whole window."""
        key = (event.exchange, event.symbol)
        series = streams.get(key)
        if series is None:
            series = streams[key] = _Series(self._rebase_after)
        window = self._window
        if series.lag:
            series.sync(window)
        values = series.sorted
        n = len(values)
        if n >= self._min_samples:
            half = n >> 1
            median = values[half] if n & 1 else (values[half - 1] + values[half]) * 0.5
            deviation = value - median if value >= median else median - value
            if deviation > self._rel_floor * median:  # cheap pre-bound; the MAD only when it is passed
                verdict = self._judge(series, event, value, median, deviation, label, context)
                if verdict is not None:
                    # No band until the next accepted value has cleared ``pending`` on this path.
                    series.hi = -_INF
                    if series.budget > 0:
                        series.budget = 0
                    return verdict
        if series.pending:
            series.pending.clear()
        order = series.order
        if len(order) >= window:
            del values[bisect_left(values, order.popleft())]
        order.append(value)
        insort(values, value)
        budget = series.budget
        if budget < 0:
            series.budget = budget + 1
        else:
            self._arm(series, values)
        return None

    def _arm(self, series: _Series, values: list[float]) -> None:
        """Centre the fast path's band on the median of the (up to date) sorted window.

        The window need not be full: a value inside the band that joins a filling window (nothing
        leaves) keeps both middle values inside the band too. Below ``min_samples`` values the exact
        path judges nothing, so there is nothing to save yet.
        """
        n = len(values)
        series.hi = -_INF
        if n < self._min_samples:
            series.budget = 0
            return
        a = values[(n - 1) >> 1]
        b = values[n >> 1]
        center = a * 0.5 + b * 0.5
        half_width = center * self._band_half
        lo = center - half_width
        hi = center + half_width
        # The median's order statistics lie in the band, and the band is narrower than the relative
        # floor at its low end (checked in the same float arithmetic the exact path uses).
        if 0.0 < lo <= a and b <= hi and hi - lo <= self._rel_floor * lo:
            series.lo = lo
            series.hi = hi
            series.budget = self._band_steps
        else:
            series.budget = -_ARM_RETRY  # the two middle values are too far apart: wait a while

    def _judge(
        self,
        series: _Series,
        event: Event,
        value: float,
        median: float,
        deviation: float,
        label: str,
        context: ValidationContext,
    ) -> Verdict | None:
        mad = _mad_sorted(series.sorted, median)
        limit = max(self._threshold * mad, self._rel_floor * median)
        if self._min_ticks:
            instrument = context.instrument(event.exchange, event.symbol)
            if instrument is not None and 0.0 < instrument.tick_size < _INF:
                limit = max(limit, self._min_ticks * instrument.tick_size)
        if deviation <= limit:
            return None
        pending = series.pending
        pending.append(value)
        if len(pending) == pending.maxlen and max(pending) - min(pending) <= limit:
            # The same new level, over and over: the market moved. Restart the window from it.
            series.reset(tuple(pending), self._window)
        mads = f"{deviation / mad:.1f} MADs" if mad > 0 else "MAD 0"
        return Verdict(
            self.name,
            f"{label} {value!r} is {deviation:.6g} from the rolling median {median:.10g} "
            f"({mads}; limit {limit:.6g})",
        )


# --- timestamps ----------------------------------------------------------------------------------


class TimestampCheck(_Check):
    """``timestamps``: exchange times not in the future and non-decreasing per stream.

    ``exchange_ts`` more than ``future_tolerance_ms`` ahead of ``context.now_ns()`` is reported; so is an
    ``exchange_ts`` below the last accepted one of the same stream (exchange, symbol, event class).
    Equal times are fine. A reported event does not move the stream's last time, so one bad time does
    not make the next good ones look wrong. Events without an exchange time are skipped. A kline must
    also open no later than it closes.

    Options:
        future_tolerance_ms (float, default 5000): allowed lead of exchange time over the local clock.
        monotonic (bool, default true): check ordering per stream.
    """

    __slots__ = ("_last", "_monotonic", "_tolerance_ms", "_tolerance_ns")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        opts = _Options("timestamps", options)
        self._tolerance_ms = opts.number("future_tolerance_ms", 5000.0, strict=False)
        self._monotonic = opts.flag("monotonic", True)
        opts.done()
        self._tolerance_ns = int(self._tolerance_ms * _NS_PER_MS)
        #: The last accepted exchange time per stream, in a one-element list updated in place.
        self._last: dict[tuple[type[Event], str, str], list[int]] = {}
        handlers: dict[type[Event], Handler] = dict.fromkeys(_MARKET_EVENTS, self._event)
        handlers[Kline] = self._kline
        super().__init__("timestamps", handlers)

    def _event(self, event: Event, context: ValidationContext) -> Verdict | None:
        ts = event.exchange_ts
        if ts is None:
            return None
        ahead = ts - context.now_ns()
        if ahead > self._tolerance_ns:
            return self._future(event, ts, ahead)
        if self._monotonic:
            key = (type(event), event.exchange, event.symbol)
            last = self._last.get(key)
            if last is None:
                self._last[key] = [ts]
            elif ts < last[0]:
                return self._backwards(event, ts, last[0])
            else:
                last[0] = ts  # one cell per stream: no second hash of the key
        return None

    def _kline(self, event: Kline, context: ValidationContext) -> Verdict | None:
        if event.open_ts > event.close_ts:
            return Verdict(self.name, f"kline open_ts {event.open_ts} is after its close_ts {event.close_ts}")
        # _event inlined (klines are a busy stream).
        ts = event.exchange_ts
        if ts is None:
            return None
        ahead = ts - context.now_ns()
        if ahead > self._tolerance_ns:
            return self._future(event, ts, ahead)
        if self._monotonic:
            key = (type(event), event.exchange, event.symbol)
            last = self._last.get(key)
            if last is None:
                self._last[key] = [ts]
            elif ts < last[0]:
                return self._backwards(event, ts, last[0])
            else:
                last[0] = ts
        return None

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        if cls not in _MARKET_EVENTS:
            return None
        ts, last = f"ts_{tag}", f"l_{tag}"
        lines = []
        if cls is Kline:
            lines.append("if e.open_ts > e.close_ts: return False")
        lines += [
            f"{ts} = e.exchange_ts",
            f"if {ts} is not None:",
            f"    if {ts} - ctx.now_ns() > TOL_{tag}: return False",
        ]
        if self._monotonic:
            lines += [
                f"    {last} = LAST_{tag}.get((CLS_{tag}, e.exchange, e.symbol))",
                f"    if {last} is None or {ts} < {last}[0]: return False",  # a stream's first: the handler
            ]
        names = {f"TOL_{tag}": self._tolerance_ns, f"LAST_{tag}": self._last, f"CLS_{tag}": cls}
        return "\n".join(lines) + "\n", names

    def commit_source(self, cls: type[Event], tag: str) -> str:
        if cls not in _MARKET_EVENTS or not self._monotonic:
            return ""
        return f"if ts_{tag} is not None: l_{tag}[0] = ts_{tag}\n"

    def _future(self, event: Event, ts: int, ahead: int) -> Verdict:
        return Verdict(
            self.name,
            f"{_label(event)} exchange_ts {ts} is {ahead / _NS_PER_MS:.1f} ms in the future "
            f"(tolerance {self._tolerance_ms:g} ms)",
        )

    def _backwards(self, event: Event, ts: int, last: int) -> Verdict:
        return Verdict(
            self.name,
            f"{_label(event)} exchange_ts {ts} went back {(last - ts) / _NS_PER_MS:.3f} ms (previous {last})",
        )


# --- latency -------------------------------------------------------------------------------------


class LatencyCheck(_Check):
    """``latency``: the time from the exchange to our receipt over a threshold raises an alert.

    ``receive_ts - exchange_ts`` above ``threshold_ms`` gives a "latency alert" verdict. Events without
    an exchange time are skipped; a negative latency (clock skew) is ``timestamps``' business.

    Options:
        threshold_ms (float, default 2000): the largest latency accepted.
    """

    __slots__ = ("_threshold_ms", "_threshold_ns")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        opts = _Options("latency", options)
        self._threshold_ms = opts.number("threshold_ms", 2000.0)
        opts.done()
        self._threshold_ns = int(self._threshold_ms * _NS_PER_MS)
        super().__init__("latency", dict.fromkeys(_MARKET_EVENTS, self._event))

    def pass_source(self, cls: type[Event], tag: str) -> tuple[str, dict[str, Any]] | None:
        if cls not in _MARKET_EVENTS:
            return None
        limit = f"LIMIT_{tag}"
        return (
            f"ts = e.exchange_ts\nif ts is not None and e.receive_ts - ts > {limit}: return False\n",
            {limit: self._threshold_ns},
        )

    def _event(self, event: Event, context: ValidationContext) -> Verdict | None:
        ts = event.exchange_ts
        if ts is None:
            return None
        latency = event.receive_ts - ts
        if latency > self._threshold_ns:
            return Verdict(
                self.name,
                f"latency alert: {_label(event)} arrived {latency / _NS_PER_MS:.1f} ms after its exchange "
                f"time (threshold {self._threshold_ms:g} ms)",
            )
        return None


#: The built-in checks by registered name; the default plugin registers each through the hook.
BUILTIN_VALIDATORS: dict[str, ValidatorFactory] = {
    "prices": PriceCheck,
    "tick_grid": TickGridCheck,
    "spread": SpreadCheck,
    "volumes": VolumeCheck,
    "book_integrity": BookIntegrityCheck,
    "outliers": OutlierCheck,
    "timestamps": TimestampCheck,
    "latency": LatencyCheck,
}
