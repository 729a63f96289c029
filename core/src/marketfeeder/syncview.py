"""Cross-exchange views: quote equivalence, synchronized top-of-book, and a merged time-ordered stream.

Pairing quotes across exchanges is only meaningful when they are fresh and close in time: a quote
older than the tolerance, or further apart from the others than the tolerance, is *excluded* and the
reason given — never silently paired.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

import attrs

__all__ = [
    "MergeBuffer",
    "QuoteEquivalence",
    "SyncedQuote",
    "SyncedView",
    "synchronize",
]

T = TypeVar("T")


@attrs.frozen
class QuoteEquivalence:
    """Explicit relation between quote currencies: ``{"USDC": "USDT"}`` says USDC counts as USDT.

    ``rates`` gives the value of one unit of a quote currency in its canonical currency (default 1.0);
    a live rate from a configured market replaces it through :meth:`with_rate`.
    """

    canonical: Mapping[str, str] = attrs.field(factory=dict)
    rates: Mapping[str, float] = attrs.field(factory=dict)

    def canonical_quote(self, quote: str) -> str:
        return self.canonical.get(quote, quote)

    def rate(self, quote: str) -> float:
        """Value of one ``quote`` in its canonical currency."""
        return self.rates.get(quote, 1.0)

    def with_rate(self, quote: str, rate: float) -> QuoteEquivalence:
        if not rate > 0:
            raise ValueError(f"conversion rate for {quote} must be positive, got {rate}")
        return attrs.evolve(self, rates={**self.rates, quote: rate})

    def asset_key(self, symbol: str) -> str:
        """``BTC-USDC`` → ``BTC-USDT`` when USDC is equivalent to USDT (suffixes such as PERP kept)."""
        parts = symbol.split("-")
        if len(parts) >= 2:
            parts[1] = self.canonical_quote(parts[1])
        return "-".join(parts)


@attrs.frozen
class SyncedQuote:
    exchange: str
    symbol: str
    bid: float  # in the canonical quote currency
    bid_size: float
    ask: float
    ask_size: float
    time_ns: int  # corrected exchange time (or receive time when the exchange gives none)
    age_ms: float
    included: bool
    reason: str = ""


@attrs.frozen
class SyncedView:
    asset: str
    now_ns: int
    quotes: tuple[SyncedQuote, ...]
    #: largest time difference between included quotes (ms).
    skew_ms: float

    def included(self) -> list[SyncedQuote]:
        return [q for q in self.quotes if q.included]


@attrs.frozen
class RawQuote:
    exchange: str
    symbol: str
    quote_ccy: str
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    time_ns: int


def synchronize(
    asset: str,
    quotes: Iterable[RawQuote],
    *,
    now_ns: int,
    tolerance_ms: float,
    equivalence: QuoteEquivalence | None = None,
) -> SyncedView:
    """Latest quotes of one asset pair across exchanges, with ages and skew.

    A quote older than ``tolerance_ms`` is excluded (``reason="stale"``). Of the fresh ones, those
    further than ``tolerance_ms`` from the newest are excluded (``reason="skew"``).
    """
    equivalence = equivalence or QuoteEquivalence()
    tolerance_ns = tolerance_ms * 1e6
    converted: list[tuple[RawQuote, float]] = [(q, equivalence.rate(q.quote_ccy)) for q in quotes]
    fresh = [q.time_ns for q, _ in converted if now_ns - q.time_ns <= tolerance_ns]
    newest = max(fresh) if fresh else None
    out: list[SyncedQuote] = []
    for quote, rate in converted:
        age_ns = now_ns - quote.time_ns
        if age_ns > tolerance_ns:
            included, reason = False, f"stale: {age_ns / 1e6:.1f} ms old > {tolerance_ms} ms"
        elif newest is not None and newest - quote.time_ns > tolerance_ns:
            included, reason = False, f"skew: {(newest - quote.time_ns) / 1e6:.1f} ms behind the newest"
        else:
            included, reason = True, ""
        out.append(
            SyncedQuote(
                exchange=quote.exchange,
                symbol=quote.symbol,
                bid=quote.bid * rate,
                bid_size=quote.bid_size,
                ask=quote.ask * rate,
                ask_size=quote.ask_size,
                time_ns=quote.time_ns,
                age_ms=age_ns / 1e6,
                included=included,
                reason=reason,
            )
        )
    times = [q.time_ns for q in out if q.included]
    skew = (max(times) - min(times)) / 1e6 if len(times) > 1 else 0.0
    return SyncedView(asset=asset, now_ns=now_ns, quotes=tuple(out), skew_ms=skew)


class MergeBuffer(Generic[T]):
    """Re-orders items from several exchanges by (corrected) time with a bounded watermark delay.

    ``push(time_ns, item)`` then ``pop_ready(now_ns)`` yields items whose time is at or before
    ``now_ns - delay_ns``, oldest first. An item older than what was already released is *late*: it is
    released at once (never dropped) and counted. When more than ``max_items`` wait, the oldest are
    released early so memory stays bounded.
    """

    def __init__(self, delay_ns: int, max_items: int = 100_000) -> None:
        if delay_ns < 0:
            raise ValueError("delay_ns must not be negative")
        self.delay_ns = delay_ns
        self.max_items = max_items
        self._heap: list[tuple[int, int, T]] = []
        self._counter = itertools.count()
        self.watermark_ns = -1
        self.late = 0
        self.forced = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time_ns: int, item: T) -> Sequence[T]:
        """Queue an item; returns items that must go out now (a late item, or overflow)."""
        if time_ns < self.watermark_ns:
            self.late += 1
            return (item,)
        heapq.heappush(self._heap, (time_ns, next(self._counter), item))
        released: list[T] = []
        while len(self._heap) > self.max_items:
            time_out, _, oldest = heapq.heappop(self._heap)
            self.watermark_ns = max(self.watermark_ns, time_out)
            self.forced += 1
            released.append(oldest)
        return released

    def pop_ready(self, now_ns: int) -> Iterator[T]:
        limit = now_ns - self.delay_ns
        heap = self._heap
        while heap and heap[0][0] <= limit:
            time_out, _, item = heapq.heappop(heap)
            self.watermark_ns = max(self.watermark_ns, time_out)
            yield item

    def drain(self) -> Iterator[T]:
        while self._heap:
            time_out, _, item = heapq.heappop(self._heap)
            self.watermark_ns = max(self.watermark_ns, time_out)
            yield item
