"""The simulated market: seeded, deterministic prices, books, trades, klines and tickers.

One underlying price per asset follows a geometric random walk in simulated time. Each venue sees
it through its own lag (exponential smoothing) and noise, plus occasional dislocations that open a
cross-venue spread for a few seconds (``arb_rate``). Per (venue, instrument) the engine keeps a book
of integer ticks -> integer steps that tracks the venue's view with diffs of a few to a few dozen
level changes, trades that consume the top of the book, klines and a rolling 24 h ticker built from
those trades.

Everything is driven by one ``random.Random(seed)`` and a simulated clock
(``start_ns + records / rate``), so the same arguments always give the same record sequence.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal

import attrs

from marketfeeder.models import MarketKind
from marketfeeder.sim.model import (
    SimBookTicker,
    SimDepth,
    SimEvent,
    SimInstrument,
    SimKline,
    SimMarkPrice,
    SimSnapshot,
    SimTicker,
    SimTrade,
)

__all__ = [
    "DEFAULT_START_NS",
    "EngineBook",
    "Grid",
    "MarketEngine",
    "StepObserver",
    "VenueView",
    "default_instruments",
    "format_price",
    "instruments_for",
    "format_size",
    "interval_ns",
]

#: 2026-01-01T00:00:00Z: the clock's origin when the caller pins none (keeps records reproducible).
DEFAULT_START_NS = 1_767_225_600_000_000_000
_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_HOUR_NS = 3_600 * _NS

# Starting price and annualized volatility per base asset; unknown assets get a generic profile.
_ASSET_PROFILES: dict[str, tuple[float, float]] = {
    "BTC": (90_000.0, 0.5),
    "ETH": (3_000.0, 0.7),
    "SOL": (140.0, 0.9),
}
_DEFAULT_PROFILE = (100.0, 0.8)
_SECONDS_PER_YEAR = 365.0 * 86_400.0

_log = math.log
#: Upper bounds of the number of churn changes in one diff (picked at random): a few to a few dozen.
_CHURN = (3, 6, 12, 24)

_INTERVAL_RE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_NS = {"s": _NS, "m": 60 * _NS, "h": 3_600 * _NS, "d": 86_400 * _NS, "w": 7 * 86_400 * _NS}


def interval_ns(interval: str) -> int:
    """Length of a kline interval such as ``"1s"``, ``"1m"``, ``"4h"``; ``ValueError`` when unknown."""
    match = _INTERVAL_RE.match(interval)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"invalid kline interval {interval!r}; expected a number and one of s, m, h, d, w")
    return int(match.group(1)) * _UNIT_NS[match.group(2)]


class Grid:
    """A decimal grid (tick or step size): integer multiples <-> exact decimal strings."""

    __slots__ = ("_cache", "decimals", "scale", "size", "units")

    def __init__(self, size: str) -> None:
        try:
            value = Decimal(size)
        except ArithmeticError:
            raise ValueError(f"invalid grid size {size!r}: not a decimal number") from None
        if not value.is_finite() or value <= 0:
            raise ValueError(f"invalid grid size {size!r}: must be a positive decimal")
        exponent = value.normalize().as_tuple().exponent
        assert isinstance(exponent, int)
        self.size = size
        self.decimals = max(0, -exponent)
        self.scale = 10**self.decimals
        #: The grid size in units of 10**-decimals ("0.05" -> 5).
        self.units = int(value * self.scale)
        # Books revisit the same prices and sizes: formatting is the engine's hottest path.
        self._cache: dict[int, str] = {}

    def format(self, n: int) -> str:
        """``n`` grid steps as a decimal string with the grid's decimals (no float involved)."""
        cache = self._cache
        text = cache.get(n)
        if text is not None:
            return text
        value = n * self.units
        d = self.decimals
        if d == 0:
            text = str(value)
        else:
            digits = str(abs(value)).rjust(d + 1, "0")
            text = ("-" if value < 0 else "") + digits[:-d] + "." + digits[-d:]
        if len(cache) >= 65_536:  # bounded: sizes are many
            cache.clear()
        cache[n] = text
        return text

    def parse(self, text: str) -> int:
        """The grid multiple a decimal string stands for; ``ValueError`` when it is off the grid."""
        scaled = Decimal(text) * self.scale
        if scaled != scaled.to_integral_value() or int(scaled) % self.units:
            raise ValueError(f"{text!r} is not on the grid of {self.size}")
        return int(scaled) // self.units


def format_price(tick_size: str, ticks: int) -> str:
    """``ticks`` ticks of ``tick_size`` as a decimal string with the tick's decimals."""
    return Grid(tick_size).format(ticks)


def format_size(step_size: str, steps: int) -> str:
    """``steps`` steps of ``step_size`` as a decimal string with the step's decimals."""
    return Grid(step_size).format(steps)


def _inst(symbol: str, tick: str, step: str, kind: MarketKind = MarketKind.SPOT) -> SimInstrument:
    base, quote = symbol.split("-")[:2]
    return SimInstrument(symbol, base, quote, tick, step, kind)


_BINANCE_LIKE = (
    _inst("BTC-USDT", "0.01", "0.00001"),
    _inst("ETH-USDT", "0.01", "0.0001"),
    _inst("SOL-USDT", "0.01", "0.001"),
)
_BACKPACK_LIKE = (
    _inst("BTC-USDC", "0.1", "0.00001"),
    _inst("ETH-USDC", "0.01", "0.0001"),
    _inst("SOL-USDC", "0.01", "0.01"),
    _inst("SOL-USDC-PERP", "0.01", "0.01", MarketKind.PERP),
)


def default_instruments(venue: str) -> list[SimInstrument]:
    """The instruments a venue lists by default: USDC spot and a SOL perp for ``backpack``,
    USDT spot (Binance-like) for any other venue name."""
    return list(_BACKPACK_LIKE if venue == "backpack" else _BINANCE_LIKE)


def instruments_for(venue: str, symbols: Sequence[str]) -> list[SimInstrument]:
    """Instruments for normalized ``symbols`` (``"BASE-QUOTE"`` or ``"BASE-QUOTE-PERP"``): the
    venue's defaults where they match, then any default of the same symbol, else a generic
    instrument (tick 0.01, step 0.01; a ``-PERP`` suffix makes it a perpetual)."""
    known = {i.symbol: i for i in (*_BINANCE_LIKE, *_BACKPACK_LIKE)}
    known.update({i.symbol: i for i in default_instruments(venue)})
    out: list[SimInstrument] = []
    for symbol in symbols:
        inst = known.get(symbol)
        if inst is None:
            parts = symbol.split("-")
            if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and parts[2] != "PERP"):
                raise ValueError(f"invalid symbol {symbol!r}: expected BASE-QUOTE or BASE-QUOTE-PERP")
            kind = MarketKind.PERP if len(parts) == 3 else MarketKind.SPOT
            inst = SimInstrument(symbol, parts[0], parts[1], "0.01", "0.01", kind)
        out.append(inst)
    return out


@attrs.frozen
class EngineBook:
    """The engine's exact current book for one venue and symbol, as floats for comparisons."""

    bids: dict[float, float]
    asks: dict[float, float]
    last_id: int


class _Side:
    """One side of a book: ``sizes`` tick -> steps and ``keys`` sorted best first (bids negated)."""

    __slots__ = ("keys", "sign", "sizes")

    def __init__(self, is_bid: bool) -> None:
        self.sign = -1 if is_bid else 1
        self.keys: list[int] = []
        self.sizes: dict[int, int] = {}

    def best(self) -> int:
        return self.sign * self.keys[0]

    def worst(self) -> int:
        return self.sign * self.keys[-1]

    def nth(self, i: int) -> int:
        return self.sign * self.keys[i]

    def set(self, tick: int, size: int) -> None:
        sizes = self.sizes
        if size == 0:
            if tick in sizes:
                del sizes[tick]
                keys = self.keys
                del keys[bisect.bisect_left(keys, self.sign * tick)]
        else:
            if tick not in sizes:
                bisect.insort(self.keys, self.sign * tick)
            sizes[tick] = size

    def copy_sizes(self) -> dict[int, int]:
        return dict(self.sizes)


class _Kline:
    __slots__ = (
        "close",
        "close_ns",
        "count",
        "first_id",
        "high",
        "last_id",
        "low",
        "open",
        "open_ns",
        "quote",
        "taker_quote",
        "taker_volume",
        "volume",
    )

    def __init__(self, open_ns: int, length: int) -> None:
        self.open_ns = open_ns
        self.close_ns = open_ns + length - 1
        self.open = self.high = self.low = self.close = -1  # -1: no trade yet
        self.volume = self.quote = self.taker_volume = self.taker_quote = 0
        self.count = 0
        self.first_id = self.last_id = -1

    def add(self, price: int, size: int, quote: int, taker_buy: bool, trade_id: int) -> None:
        if self.count == 0:
            self.open = self.high = self.low = price
            self.first_id = trade_id
        elif price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.last_id = trade_id
        self.count += 1
        self.volume += size
        self.quote += quote
        if taker_buy:
            self.taker_volume += size
            self.taker_quote += quote


class _Market:
    """State of one instrument on one venue."""

    def __init__(self, venue: str, inst: SimInstrument, history: int) -> None:
        self.venue = venue
        self.inst = inst
        self.symbol = inst.symbol
        self.asset = inst.base
        self.perp = inst.kind == MarketKind.PERP
        try:
            self.price_grid = Grid(inst.tick_size)
            self.size_grid = Grid(inst.step_size)
        except ValueError as exc:
            raise ValueError(
                f"instrument {inst.symbol!r} on {venue!r}: bad tick_size/step_size: {exc}"
            ) from None
        self.tick = float(Decimal(inst.tick_size))
        self.step = float(Decimal(inst.step_size))
        # Quote amounts are exact integers in units of 10**-(price decimals + size decimals).
        self.quote_grid = Grid("1e-" + str(self.price_grid.decimals + self.size_grid.decimals))
        self.quote_mult = self.price_grid.units * self.size_grid.units
        self.bids = _Side(True)
        self.asks = _Side(False)
        self.update_id = 0
        self.trade_id = 0
        self.order_id = 0
        self.gap = 1  # mean distance between levels, in ticks
        self.size_scale = 1.0  # typical level size, in steps
        self.top: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.history: deque[tuple[int, list[tuple[bool, int, int]]]] | None = (
            deque(maxlen=history) if history > 0 else None
        )
        self.klines: dict[str, _Kline] = {}
        self.closed: dict[str, deque[_Kline]] = {}
        self.last_trade: tuple[int, int] | None = None  # (price ticks, size steps)

    def price(self, ticks: int) -> str:
        return self.price_grid.format(ticks)

    def size(self, steps: int) -> str:
        return self.size_grid.format(steps)


def _shift_times(record: SimEvent, offset_ns: int) -> None:
    """Move the exchange-clock timestamps of a fresh record by a venue's clock offset. Kline and
    funding boundaries stay put: a skewed exchange still labels its intervals on round times."""
    record.time_ns += offset_ns
    if isinstance(record, SimTicker):
        record.open_time_ns += offset_ns
        record.close_time_ns += offset_ns
    elif not isinstance(record, SimKline):
        record.engine_ns += offset_ns


#: ``observe`` callbacks: ``(engine time of the records, records)`` after every step.
StepObserver = Callable[[int, list[tuple[str, SimEvent]]], None]


class VenueView:
    """The engine as one venue sees it (implements :class:`marketfeeder.sim.venue.VenueMarket`)."""

    def __init__(self, engine: MarketEngine, venue: str, snapshot_lag_updates: int = 0) -> None:
        self.venue = venue
        self._engine = engine
        self._markets = engine._by_venue[venue]
        self.snapshot_lag_updates = snapshot_lag_updates
        #: The venue's clock error (ns): every time it prints is the engine's time plus this.
        self.clock_offset_ns = engine.clock_offset_ns(venue)

    def instruments(self) -> Sequence[SimInstrument]:
        return [m.inst for m in self._markets.values()]

    def _market(self, symbol: str) -> _Market:
        try:
            return self._markets[symbol]
        except KeyError:
            raise KeyError(f"venue {self.venue!r} lists no symbol {symbol!r}") from None

    def snapshot(self, symbol: str, limit: int) -> SimSnapshot:
        m = self._market(symbol)
        lag = self.snapshot_lag_updates
        bids, asks, last_id = m.bids.copy_sizes(), m.asks.copy_sizes(), m.update_id
        if lag > 0 and m.history:
            for undone, (first_id, undo) in enumerate(reversed(m.history)):
                if undone >= lag:
                    break
                for is_bid, tick, old in reversed(undo):
                    side = bids if is_bid else asks
                    if old:
                        side[tick] = old
                    else:
                        side.pop(tick, None)
                last_id = first_id - 1
        bid_ticks = sorted(bids, reverse=True)[:limit]
        ask_ticks = sorted(asks)[:limit]
        return SimSnapshot(
            symbol,
            last_id,
            [(m.price(t), m.size(bids[t])) for t in bid_ticks],
            [(m.price(t), m.size(asks[t])) for t in ask_ticks],
            self.now_ns(),
        )

    def klines(
        self, symbol: str, interval: str, start_ns: int | None, end_ns: int | None, limit: int
    ) -> list[SimKline]:
        m = self._market(symbol)
        if interval not in m.klines:
            tracked = ", ".join(m.klines)
            raise ValueError(f"kline interval {interval!r} is not simulated (simulated: {tracked})")
        now = self._engine.now_ns()
        rows = [*m.closed[interval], m.klines[interval]]
        rows = [
            k
            for k in rows
            if (start_ns is None or k.open_ns >= start_ns) and (end_ns is None or k.open_ns <= end_ns)
        ]
        rows = rows[:limit] if start_ns is not None else rows[-limit:] if limit > 0 else []
        offset = self.clock_offset_ns
        return [self._engine._kline_record(m, interval, k, k.close_ns < now, now + offset) for k in rows]

    def ticker(self, symbol: str) -> SimTicker:
        record = self._engine._ticker(self._market(symbol))
        if self.clock_offset_ns:
            _shift_times(record, self.clock_offset_ns)
        return record

    def now_ns(self) -> int:
        """The venue's clock: the engine's plus the venue's ``clock_offset_ms`` (its REST server time)."""
        return self._engine.now_ns() + self.clock_offset_ns


class MarketEngine:
    """A seeded market for several venues.

    ``instruments`` is one list every venue lists, or a mapping venue -> its own list.
    ``rate`` is market records (depth diffs, trades, book tickers) per second of simulated time;
    periodic records (klines, tickers, mark prices) come every ``periodic_interval`` simulated
    seconds on top. ``arb_rate`` is dislocations per simulated second (across all venues and assets)
    that push one venue's price away from the others for a few seconds (they fade with time
    constant ``arb_decay_s``). ``clock_offset_ms`` maps a venue to its clock error: every exchange
    timestamp the venue prints (stream event and engine times, REST server time, snapshot and
    ticker times) is the engine's time plus that offset, as on an exchange whose clock runs ahead
    (positive) or behind; ground truth (``now_ns``, ``observe``) stays on the engine's time.
    """

    def __init__(
        self,
        seed: int,
        instruments: Sequence[SimInstrument] | Mapping[str, Sequence[SimInstrument]],
        venues: Sequence[str],
        *,
        rate: float = 1_000.0,
        start_ns: int | None = None,
        arb_rate: float = 0.05,
        arb_size: float = 0.004,
        book_levels: int = 300,
        trade_probability: float = 0.3,
        periodic_interval: float = 1.0,
        kline_intervals: Sequence[str] = ("1s", "1m", "5m", "1h"),
        stream_kline_intervals: Sequence[str] = ("1s", "1m"),
        kline_history: int = 1_000,
        snapshot_lag_updates: Mapping[str, int] | None = None,
        lag: Mapping[str, float] | None = None,
        noise_bps: Mapping[str, float] | None = None,
        arb_decay_s: float = 3.0,
        clock_offset_ms: Mapping[str, float] | None = None,
    ) -> None:
        if not venues:
            raise ValueError("MarketEngine needs at least one venue")
        if len(set(venues)) != len(venues):
            raise ValueError(f"duplicate venue names in {list(venues)!r}")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of records per second, not {rate!r}")
        if book_levels < 10:
            raise ValueError(f"book_levels must be at least 10, not {book_levels!r}")
        if arb_rate < 0 or not 0 <= trade_probability < 1 or periodic_interval <= 0:
            raise ValueError("arb_rate must be >= 0, trade_probability in [0, 1), periodic_interval > 0")
        for name in stream_kline_intervals:
            if name not in kline_intervals:
                raise ValueError(
                    f"stream kline interval {name!r} is not in kline_intervals {list(kline_intervals)!r}"
                )
        for name in kline_intervals:
            if interval_ns(name) % int(periodic_interval * _NS):
                raise ValueError(
                    f"kline interval {name!r} is not a multiple of periodic_interval {periodic_interval}"
                )
        if "1m" not in kline_intervals:
            kline_intervals = [*kline_intervals, "1m"]  # the 24 h ticker is built from minute klines
        if not (arb_decay_s > 0 and math.isfinite(arb_decay_s)):
            raise ValueError(f"arb_decay_s must be a positive number of seconds, not {arb_decay_s!r}")
        offsets = dict(clock_offset_ms or {})
        for v, ms in offsets.items():
            if v not in venues or not isinstance(ms, int | float) or not math.isfinite(ms):
                raise ValueError(f"clock_offset_ms: unknown venue {v!r} or non-finite offset {ms!r}")
        #: Per-venue clock error in ns (only venues with a nonzero one).
        self._clock_offsets = {v: round(ms * 1_000_000) for v, ms in offsets.items() if ms}
        self._arb_decay_s = float(arb_decay_s)
        self._observers: list[StepObserver] = []
        self._intervals = {name: interval_ns(name) for name in kline_intervals}
        self._stream_intervals = list(stream_kline_intervals)
        lags = dict(snapshot_lag_updates or {})
        for v, n in lags.items():
            if v not in venues or n < 0:
                raise ValueError(f"snapshot_lag_updates: unknown venue {v!r} or negative lag {n!r}")

        self.seed = seed
        self._lags = lags
        self.rate = float(rate)
        self.venues = list(venues)
        self.book_levels = book_levels
        self._rng = random.Random(seed)
        self._start_ns = DEFAULT_START_NS if start_ns is None else start_ns
        self._records = 0  # clock = start + records / rate
        self._now = self._start_ns
        self._ns_per_record = _NS / self.rate
        self._trade_p = trade_probability
        self._arb_rate = arb_rate
        self._arb_size = arb_size
        self._periodic_ns = int(periodic_interval * _NS)
        # Aligned to the interval, so kline boundaries fall on periodic ticks.
        self._next_periodic = self._start_ns - self._start_ns % self._periodic_ns + self._periodic_ns
        self._kline_history = kline_history
        self.statistics_counts: dict[str, int] = {"records": 0, "trades": 0, "diffs": 0, "dislocations": 0}

        per_venue: dict[str, Sequence[SimInstrument]] = (
            {v: instruments.get(v, ()) for v in venues}
            if isinstance(instruments, Mapping)
            else {v: instruments for v in venues}
        )
        if isinstance(instruments, Mapping):
            for v in instruments:
                if v not in venues:
                    raise ValueError(
                        f"instruments given for {v!r}, which is not among the venues {self.venues!r}"
                    )
        self._by_venue: dict[str, dict[str, _Market]] = {}
        self._markets: list[_Market] = []
        for v in self.venues:
            markets: dict[str, _Market] = {}
            for inst in per_venue[v]:
                if inst.symbol in markets:
                    raise ValueError(f"venue {v!r} lists {inst.symbol!r} twice")
                m = _Market(v, inst, lags.get(v, 0) + 1 if lags.get(v, 0) else 0)
                markets[inst.symbol] = m
                self._markets.append(m)
            self._by_venue[v] = markets
        if not self._markets:
            raise ValueError("MarketEngine needs at least one instrument")

        # Underlying price per asset, and per (venue, asset) the lagged, noisy view of it.
        assets = sorted({m.asset for m in self._markets})
        self._price: dict[str, float] = {}
        self._vol: dict[str, float] = {}
        for a in assets:
            p0, vol = _ASSET_PROFILES.get(a, _DEFAULT_PROFILE)
            self._price[a] = p0 * math.exp(self._rng.gauss(0.0, 0.01))
            self._vol[a] = vol / math.sqrt(_SECONDS_PER_YEAR)
        lag = dict(lag or {})
        noise = dict(noise_bps or {})
        self._lag_s = {v: lag.get(v, 0.05 + 0.25 * i) for i, v in enumerate(self.venues)}
        self._noise = {v: noise.get(v, 1.0 + i) * 1e-4 for i, v in enumerate(self.venues)}
        self._view: dict[tuple[str, str], float] = {
            (v, a): self._price[a] for v in self.venues for a in assets
        }
        self._offset: dict[tuple[str, str], float] = dict.fromkeys(self._view, 0.0)  # OU noise, log
        self._disloc: dict[tuple[str, str], float] = dict.fromkeys(self._view, 0.0)  # log, decays
        self._view_keys = list(self._view)
        self._last_evolve = self._now

        for m in self._markets:
            self._init_book(m)

    # --- public ----------------------------------------------------------------------------------

    def now_ns(self) -> int:
        return self._now

    def skip_to(self, now_ns: int) -> None:
        """Move the clock forward to ``now_ns`` without producing records (the simulator keeping
        to wall time, or resuming after a pause). After a long jump, periodic records resume at
        the next boundary; a short one still emits the boundary it crossed."""
        if now_ns <= self._now:
            return
        self._start_ns += now_ns - self._now
        self._now = now_ns
        if now_ns - self._last_evolve > _NS:
            self._last_evolve = now_ns  # a long jump is a pause, not a price move
        if self._next_periodic <= now_ns - self._periodic_ns:
            # Skip periodic records of a long pause; a boundary just crossed still fires.
            self._next_periodic = now_ns - now_ns % self._periodic_ns + self._periodic_ns

    def view(self, venue: str) -> VenueView:
        """The :class:`VenueMarket` of ``venue``."""
        if venue not in self._by_venue:
            raise KeyError(f"no venue {venue!r} in this engine (venues: {', '.join(self.venues)})")
        return VenueView(self, venue, self._lags.get(venue, 0))

    def instruments(self, venue: str) -> list[SimInstrument]:
        return [m.inst for m in self._by_venue[venue].values()]

    def grids(self, venue: str, symbol: str) -> tuple[Grid, Grid]:
        """(price grid, size grid) of one instrument."""
        m = self._by_venue[venue][symbol]
        return m.price_grid, m.size_grid

    def book(self, venue: str, symbol: str) -> EngineBook:
        """The exact current book and update id of ``symbol`` on ``venue``."""
        m = self._by_venue[venue][symbol]
        return EngineBook(
            {float(m.price(t)): float(m.size(s)) for t, s in m.bids.sizes.items()},
            {float(m.price(t)): float(m.size(s)) for t, s in m.asks.sizes.items()},
            m.update_id,
        )

    def clock_offset_ns(self, venue: str) -> int:
        """How far ``venue``'s clock runs ahead of the engine's (ns; negative: behind)."""
        return self._clock_offsets.get(venue, 0)

    def top_levels(
        self, venue: str, symbol: str, depth: int
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The exact best ``depth`` (price, size) levels a side, best first, as floats (ground truth
        for comparisons; cheaper than :meth:`book`)."""
        m = self._by_venue[venue][symbol]
        out: list[list[tuple[float, float]]] = []
        for side in (m.bids, m.asks):
            sizes = side.sizes
            ticks = [side.nth(i) for i in range(min(depth, len(side.keys)))]
            out.append([(float(m.price(t)), float(m.size(sizes[t]))) for t in ticks])
        return out[0], out[1]

    def observe(self, observer: StepObserver) -> Callable[[], None]:
        """Call ``observer(engine_ns, records)`` after every step, the books already changed (ground
        truth recorders). ``engine_ns`` is the engine's true time of the step; the records are as
        the venues print them (clock offsets applied). Returns a function that removes it."""
        self._observers.append(observer)

        def remove() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return remove

    def best(self, venue: str, symbol: str) -> tuple[float, float]:
        """(best bid, best ask) of ``symbol`` on ``venue`` as floats (cheap: no book copy)."""
        m = self._by_venue[venue][symbol]
        return m.bids.best() * m.tick, m.asks.best() * m.tick

    def reference_price(self, asset: str) -> float:
        """The underlying (venue-neutral) price of ``asset``."""
        return self._price[asset]

    def statistics(self) -> dict[str, int]:
        return dict(self.statistics_counts)

    def take(self, n: int) -> list[tuple[str, SimEvent]]:
        """At least ``n`` records (whole steps)."""
        out: list[tuple[str, SimEvent]] = []
        while len(out) < n:
            out.extend(self.step())
        return out

    def step(self) -> list[tuple[str, SimEvent]]:
        """Advance the market by one action: a book change or a trade on one (venue, instrument),
        preceded by the periodic records whose time came. The clock advances by the number of
        market records over ``rate``."""
        out: list[tuple[str, SimEvent]] = []
        while self._now >= self._next_periodic:
            self._periodic(self._next_periodic, out)
            self._next_periodic += self._periodic_ns
        rng = self._rng
        self._evolve()
        m = self._markets[int(rng.random() * len(self._markets))]
        n_before = len(out)
        if rng.random() < self._trade_p:
            self._trade(m, out)
        else:
            self._diff(m, out)
        offsets = self._clock_offsets
        if offsets:
            for venue, record in out:
                offset = offsets.get(venue)
                if offset:
                    _shift_times(record, offset)
        for observer in self._observers:
            observer(self._now, out)
        self._records += len(out) - n_before
        self._now = self._start_ns + int(self._records * self._ns_per_record)
        self.statistics_counts["records"] += len(out)
        return out

    # --- prices ----------------------------------------------------------------------------------

    def _evolve(self) -> None:
        """Advance underlying prices, venue views, noise and dislocations to the current clock."""
        dt_ns = self._now - self._last_evolve
        if dt_ns < 1_000_000:  # at most once per simulated millisecond: it is the costly part
            return
        self._last_evolve = self._now
        dt = dt_ns / _NS
        rng = self._rng
        sqrt_dt = math.sqrt(dt)
        for a, p in self._price.items():
            self._price[a] = p * math.exp(self._vol[a] * sqrt_dt * rng.gauss(0.0, 1.0))
        if self._arb_rate > 0 and rng.random() < 1.0 - math.exp(-self._arb_rate * dt):
            key = self._view_keys[int(rng.random() * len(self._view_keys))]
            sign = 1.0 if rng.random() < 0.5 else -1.0
            self._disloc[key] += sign * self._arb_size * (1.0 + rng.random())
            self.statistics_counts["dislocations"] += 1
        decay = math.exp(-dt / self._arb_decay_s)  # dislocations fade over a few seconds
        for key in self._view_keys:
            v, a = key
            tau = self._lag_s[v]
            alpha = 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0
            # Ornstein-Uhlenbeck noise in log price, mean-reverting over about a second.
            off = self._offset[key] * math.exp(-dt) + self._noise[v] * sqrt_dt * rng.gauss(0.0, 1.0)
            self._offset[key] = off
            self._disloc[key] *= decay
            self._view[key] += (self._price[a] - self._view[key]) * alpha

    def _target(self, m: _Market) -> float:
        key = (m.venue, m.asset)
        return self._view[key] * math.exp(self._offset[key] + self._disloc[key]) / m.tick

    # --- books -----------------------------------------------------------------------------------

    def _level_size(self, m: _Market) -> int:
        # Exponential sizes with an occasional large order: cheaper than a log-normal draw.
        r = self._rng.random
        size = m.size_scale * -_log(1.0 - r())
        if r() < 0.05:
            size *= 8.0
        return max(1, int(size))

    def _init_book(self, m: _Market) -> None:
        rng = self._rng
        mid = self._target(m)
        price = mid * m.tick
        # 300 levels span ~0.3% of the price a side, at least one tick apart.
        m.gap = max(1, round(mid * 1e-5))
        m.size_scale = max(1.0, 1_500.0 / price / m.step)
        spread = max(1, m.gap)
        best_bid = max(self.book_levels * m.gap * 2, int(mid - spread / 2))
        tick = best_bid
        for _ in range(self.book_levels):
            m.bids.set(tick, self._level_size(m))
            tick -= 1 + int(rng.random() * 2 * m.gap)
        tick = best_bid + spread
        for _ in range(self.book_levels):
            m.asks.set(tick, self._level_size(m))
            tick += 1 + int(rng.random() * 2 * m.gap)
        m.top = self._top(m)

    @staticmethod
    def _top(m: _Market) -> tuple[int, int, int, int]:
        b, a = m.bids.best(), m.asks.best()
        return b, m.bids.sizes[b], a, m.asks.sizes[a]

    @staticmethod
    def _change(side: _Side, is_bid: bool, tick: int, size: int, undo: list[tuple[bool, int, int]]) -> None:
        undo.append((is_bid, tick, side.sizes.get(tick, 0)))
        side.set(tick, size)

    def _diff(self, m: _Market, out: list[tuple[str, SimEvent]]) -> None:
        """Move the book toward the venue's price and churn levels near the top."""
        rng = self._rng
        undo: list[tuple[bool, int, int]] = []
        bids, asks = m.bids, m.asks
        target = self._target(m)
        mid = (bids.best() + asks.best()) / 2
        drift = target - mid
        # Levels a diff may move: a few, more while the book is far behind the venue's price.
        cap = 2 + int(rng.random() * 10) + min(30, int(abs(drift) / (20 * m.gap)))
        if drift > m.gap:
            # Price rises: the lowest asks go, new bids step up into the gap.
            goal = int(target)
            while len(undo) < cap and len(asks.keys) > 2 and asks.best() <= goal:
                self._change(asks, False, asks.best(), 0, undo)
            limit = asks.best() - 1
            tick = bids.best()
            while len(undo) < 2 * cap and tick + m.gap <= min(limit, goal):
                tick += 1 + int(rng.random() * m.gap)
                if tick > limit:
                    break
                self._change(bids, True, tick, self._level_size(m), undo)
        elif drift < -m.gap:
            goal = math.ceil(target)
            while len(undo) < cap and len(bids.keys) > 2 and bids.best() >= goal:
                self._change(bids, True, bids.best(), 0, undo)
            limit = bids.best() + 1
            tick = asks.best()
            while len(undo) < 2 * cap and tick - m.gap >= max(limit, goal):
                tick -= 1 + int(rng.random() * m.gap)
                if tick < limit:
                    break
                self._change(asks, False, tick, self._level_size(m), undo)
        # Liquidity returns after sweeps: new levels inside a spread wider than a couple of gaps.
        for _ in range(3):
            best_bid, best_ask = bids.best(), asks.best()
            if best_ask - best_bid <= 2 * m.gap:
                break
            if rng.random() < 0.5:
                self._change(bids, True, best_bid + 1 + int(rng.random() * m.gap), self._level_size(m), undo)
            else:
                self._change(asks, False, best_ask - 1 - int(rng.random() * m.gap), self._level_size(m), undo)
        # Churn: most activity near the top, some deep in the book.
        for _ in range(1 + int(rng.random() * _CHURN[int(rng.random() * 4)])):
            is_bid = rng.random() < 0.5
            side = bids if is_bid else asks
            n = len(side.keys)
            i = min(n - 1, int(-12.5 * _log(1.0 - rng.random())))  # mean depth ~12 levels
            tick = side.nth(i)
            r = rng.random()
            if r < 0.6:
                self._change(side, is_bid, tick, self._level_size(m), undo)
            elif r < 0.77 and n > 2 and i > 0:
                self._change(side, is_bid, tick, 0, undo)
            elif i + 1 < n:
                # A new level in the hole behind level i when it is wider than the usual spacing,
                # so the book keeps its density where removals and trades thinned it.
                behind = side.nth(i + 1)
                hole = abs(behind - tick)
                if hole > m.gap:
                    new = tick + side.sign * (1 + int(rng.random() * (hole - 1)))
                    self._change(side, is_bid, new, self._level_size(m), undo)
        self._repair_top(m, undo)
        self._refill(m, undo)
        self._emit_diff(m, undo, out)

    def _repair_top(
        self, m: _Market, undo: list[tuple[bool, int, int]], depth: int = 15, adds: int = 2
    ) -> None:
        """Refill holes much wider than the usual spacing among the top ``depth`` levels: trades and
        cancels take liquidity from the top, and makers bring it back."""
        rng = self._rng
        gap2 = 2 * m.gap
        first = rng.random() < 0.5
        for is_bid in (first, not first):
            side = m.bids if is_bid else m.asks
            keys = side.keys  # best first, spaced like the ticks
            for i in range(1, min(depth, len(keys))):
                hole = keys[i] - keys[i - 1]
                if hole > gap2:
                    key = keys[i - 1] + 1 + int(rng.random() * (hole - 1))
                    self._change(side, is_bid, side.sign * key, self._level_size(m), undo)
                    adds -= 1
                    if adds <= 0:
                        return
                    break

    def _refill(self, m: _Market, undo: list[tuple[bool, int, int]]) -> None:
        """Keep each side near ``book_levels`` levels by adding or dropping deep ones."""
        levels = self.book_levels
        for is_bid, side in ((True, m.bids), (False, m.asks)):
            while len(side.keys) < levels:
                tick = side.worst() + side.sign * (1 + int(self._rng.random() * 2 * m.gap))
                if tick <= 0:
                    break
                self._change(side, is_bid, tick, self._level_size(m), undo)
            while len(side.keys) > levels + levels // 10:
                self._change(side, is_bid, side.worst(), 0, undo)

    def _emit_diff(
        self,
        m: _Market,
        undo: list[tuple[bool, int, int]],
        out: list[tuple[str, SimEvent]],
        engine_ns: int | None = None,
    ) -> None:
        if not undo:
            return
        rng = self._rng
        now = self._now
        if engine_ns is None:
            engine_ns = now - int(rng.random() * 2_000_000)
        first = m.update_id + 1
        r = rng.random()
        last = first if r < 0.7 else first + 1 + int(rng.random() * 4)
        m.update_id = last
        # The final size of every level touched, in the order first touched.
        bid_levels: dict[int, None] = {}
        ask_levels: dict[int, None] = {}
        for is_bid, tick, _ in undo:
            (bid_levels if is_bid else ask_levels)[tick] = None
        bs, asz = m.bids.sizes, m.asks.sizes
        pf, sf = m.price_grid.format, m.size_grid.format
        out.append(
            (
                m.venue,
                SimDepth(
                    m.symbol,
                    first,
                    last,
                    [(pf(t), sf(bs.get(t, 0))) for t in bid_levels],
                    [(pf(t), sf(asz.get(t, 0))) for t in ask_levels],
                    now,
                    engine_ns,
                ),
            )
        )
        if m.history is not None:
            m.history.append((first, undo))
        self.statistics_counts["diffs"] += 1
        top = self._top(m)
        if top != m.top:
            m.top = top
            b, bsz, a, az = top
            out.append(
                (
                    m.venue,
                    SimBookTicker(
                        m.symbol, last, m.price(b), m.size(bsz), m.price(a), m.size(az), now, engine_ns
                    ),
                )
            )

    # --- trades ----------------------------------------------------------------------------------

    def _trade(self, m: _Market, out: list[tuple[str, SimEvent]]) -> None:
        """A taker order that consumes levels from the top of one side."""
        rng = self._rng
        target = self._target(m)
        mid = (m.bids.best() + m.asks.best()) / 2
        buy = rng.random() < (0.7 if target > mid else 0.3 if target < mid else 0.5)
        side = m.asks if buy else m.bids
        is_bid = not buy
        remaining = max(1, int(m.size_scale * rng.lognormvariate(-0.5, 1.2)))
        undo: list[tuple[bool, int, int]] = []
        now = self._now
        engine_ns = now - int(rng.random() * 1_000_000)
        m.order_id += 1
        taker_order = m.order_id
        fills = 0
        while remaining > 0 and fills < 4 and len(side.keys) > 2:
            tick = side.best()
            size = side.sizes[tick]
            fill = min(size, remaining)
            remaining -= fill
            fills += 1
            m.order_id += 1
            maker_order = m.order_id
            self._change(side, is_bid, tick, size - fill, undo)
            m.trade_id += 1
            out.append(
                (
                    m.venue,
                    SimTrade(
                        m.symbol,
                        m.trade_id,
                        m.price(tick),
                        m.size(fill),
                        not buy,
                        now,
                        engine_ns,
                        taker_order if buy else maker_order,
                        maker_order if buy else taker_order,
                    ),
                )
            )
            self._on_trade(m, tick, fill, buy, now)
        self.statistics_counts["trades"] += fills
        self._refill(m, undo)
        self._emit_diff(m, undo, out, engine_ns)

    def _on_trade(self, m: _Market, price: int, size: int, taker_buy: bool, now: int) -> None:
        quote = price * size
        for name, length in self._intervals.items():
            k = m.klines.get(name)
            if k is None or now > k.close_ns:
                k = self._roll(m, name, length, now)
            k.add(price, size, quote, taker_buy, m.trade_id)
        m.last_trade = (price, size)

    def _roll(self, m: _Market, name: str, length: int, now: int) -> _Kline:
        """Close the current kline of ``name`` (if any) and open the one containing ``now``."""
        closed = m.closed.get(name)
        if closed is None:
            # The 24 h ticker needs a day of minutes.
            closed = m.closed[name] = deque(
                maxlen=max(self._kline_history, 1_440) if name == "1m" else self._kline_history
            )
        old = m.klines.get(name)
        if old is not None:
            closed.append(old)
        k = m.klines[name] = _Kline(now - now % length, length)
        return k

    # --- periodic records --------------------------------------------------------------------------

    def _periodic(self, at: int, out: list[tuple[str, SimEvent]]) -> None:
        """Klines (closed ones and updates of open ones), tickers and mark prices at time ``at``."""
        saved = self._now
        self._now = at
        try:
            for m in self._markets:
                for name in self._intervals:
                    k = m.klines.get(name)
                    length = self._intervals[name]
                    if k is None:
                        k = self._roll(m, name, length, at - 1)
                    if at - 1 >= k.close_ns:
                        if name in self._stream_intervals:
                            out.append((m.venue, self._kline_record(m, name, k, True, at)))
                        k = self._roll(m, name, length, at)
                    if name in self._stream_intervals and k.close_ns - k.open_ns + 1 > self._periodic_ns:
                        out.append((m.venue, self._kline_record(m, name, k, False, at)))
                out.append((m.venue, self._ticker(m)))
                if m.perp:
                    out.append((m.venue, self._mark(m, at)))
        finally:
            self._now = saved

    def _kline_record(self, m: _Market, name: str, k: _Kline, closed: bool, now: int) -> SimKline:
        traded = k.count > 0
        return SimKline(
            m.symbol,
            name,
            k.open_ns,
            k.close_ns,
            m.price(k.open) if traded else None,
            m.price(k.high) if traded else None,
            m.price(k.low) if traded else None,
            m.price(k.close) if traded else None,
            m.size(k.volume),
            m.quote_grid.format(k.quote * m.quote_mult),
            k.count,
            m.size(k.taker_volume),
            m.quote_grid.format(k.taker_quote * m.quote_mult),
            k.first_id,
            k.last_id,
            closed,
            now,
        )

    def _ticker(self, m: _Market) -> SimTicker:
        now = self._now
        window_start = now - _DAY_NS
        current = m.klines.get("1m")
        minutes: Iterable[_Kline] = [*m.closed.get("1m", ()), *([current] if current is not None else [])]
        in_window = [k for k in minutes if k.count and k.close_ns >= window_start]
        prev = [k for k in minutes if k.count and k.close_ns < window_start]
        b, bsz, a, az = self._top(m)
        if in_window:
            first, last_k = in_window[0], in_window[-1]
            o, last = first.open, last_k.close
            high = max(k.high for k in in_window)
            low = min(k.low for k in in_window)
            volume = sum(k.volume for k in in_window)
            quote = sum(k.quote for k in in_window)
            count = sum(k.count for k in in_window)
            first_id, last_id = first.first_id, last_k.last_id
            last_size = m.last_trade[1] if m.last_trade else 0
            prev_close = prev[-1].close if prev else o
        else:
            o = last = high = low = prev_close = m.last_trade[0] if m.last_trade else b
            volume = quote = count = last_size = 0
            first_id = last_id = -1
        open_time = max(window_start, self._start_ns)
        d_open, d_last = Decimal(m.price(o)), Decimal(m.price(last))
        change = d_last - d_open
        pct = (change / d_open * 100).quantize(Decimal("0.001")) if d_open else Decimal(0)
        vwap = (
            (Decimal(m.quote_grid.format(quote * m.quote_mult)) / Decimal(m.size(volume))).quantize(
                Decimal("1e-8")
            )
            if volume
            else d_last.quantize(Decimal("1e-8"))
        )
        return SimTicker(
            m.symbol,
            now,
            open_time,
            now,
            m.price(o),
            m.price(high),
            m.price(low),
            m.price(last),
            m.size(last_size),
            m.size(volume),
            m.quote_grid.format(quote * m.quote_mult),
            count,
            first_id,
            last_id,
            m.price(b),
            m.size(bsz),
            m.price(a),
            m.size(az),
            m.price(last - o),
            f"{pct:f}",
            f"{vwap:f}",
            m.price(prev_close),
        )

    def _mark(self, m: _Market, at: int) -> SimMarkPrice:
        b, _, a, _ = self._top(m)
        mark = (b + a) // 2
        index = round(self._price[m.asset] / m.tick)
        premium = (mark - index) / index if index else 0.0
        funding = Decimal(str(max(-0.0005, min(0.0005, premium / 8)))).quantize(Decimal("1e-8"))
        if funding == 0:
            funding = Decimal("0E-8")  # no "-0"
        return SimMarkPrice(
            m.symbol,
            m.price(mark),
            m.price(index),
            f"{funding:f}",
            at - at % _HOUR_NS + _HOUR_NS,
            at,
            at - 1_000_000,
        )
