"""The exchange-agnostic order-book engine: a fast local L2 book and the snapshot + diff sync procedure.

:class:`OrderBook` holds one symbol's levels. Each side is a dict ``price -> size`` plus a sorted
list kept with :mod:`bisect`: the bid prices ascending, the ask prices *negated* and ascending, so the
best level of both sides is the list's last item. A size change of an existing level, by far the
most common update, is one dict store; only a new level pays for an ``insort`` and only a removal for
a list delete, both O(log n) search plus a memmove of the levels behind it, which is short because
diffs mostly touch levels near the best, at the list's end.

:class:`BookSync` runs the procedure every supported exchange documents (Binance "How to manage a
local order book correctly", Backpack's depth stream notes) for one symbol, synchronously and without
I/O; the runtime feeds it the diffs it receives and the snapshots it fetches:

1. Buffer diffs (``U`` first id, ``u`` last id of each) until a snapshot arrives.
2. A snapshot with last update id ``L`` is usable iff ``L >= first buffered U - policy.snapshot_slack``;
   otherwise the runtime re-fetches (:attr:`SnapshotOutcome.STALE`).
3. Drop buffered diffs with ``u <= L``; the first applied diff must satisfy ``U <= L+1 <= u``.
4. Afterwards each diff must continue the book: ``u <= id`` is a duplicate (ignored, counted);
   ``U > id + 1`` is a gap: a :class:`~marketfeeder.models.Gap` is reported, the book goes
   RESYNCING and the diffs are buffered again from that one on until a new snapshot arrives.

Every hole in the stream's id sequence is reported as a Gap, also while buffering and across a
reconnection, so a consumer can always tell which update ids it never saw.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, insort
from collections.abc import Iterable
from typing import Any

from .models import BookDelta, BookSnapshot, BookState, BookStatus, DataType, Event, Gap, Level
from .sequence import SequencePolicy

__all__ = ["BookSync", "OrderBook", "SnapshotOutcome"]

_INF = float("inf")

# Hoisted enum members: attribute access on an enum class costs ~100 ns on the hot path.
_SYNCING = BookStatus.SYNCING
_LIVE = BookStatus.LIVE
_RESYNCING = BookStatus.RESYNCING
_STALE = BookStatus.STALE
_ORDERBOOK = DataType.ORDERBOOK

#: Consecutive diffs behind the book after which its update ids are taken to have restarted.
MAX_DUPLICATE_RUN = 100

_gap_fast = Gap.fast
_state_fast = BookState.fast


class OrderBook:
    """A local L2 order book for one symbol.

    Sizes are absolute: a positive size sets a level, ``0.0`` removes it (removing a level that is
    not in the book is normal and ignored). Levels with a negative, NaN or infinite size, or a new
    level with a non-positive or non-finite price, are counted in :attr:`malformed` and skipped.
    """

    __slots__ = (
        "_ask_prices",
        "_ask_sizes",
        "_bid_prices",
        "_bid_sizes",
        "exchange",
        "malformed",
        "symbol",
        "update_id",
    )

    def __init__(self, exchange: str, symbol: str) -> None:
        self.exchange = exchange
        self.symbol = symbol
        #: The exchange's update id the book reflects; None before the first snapshot.
        self.update_id: int | None = None
        #: Levels skipped because their price or size made no sense.
        self.malformed = 0
        self._bid_sizes: dict[float, float] = {}
        self._bid_prices: list[float] = []  # ascending: best bid is the last
        self._ask_sizes: dict[float, float] = {}
        self._ask_prices: list[float] = []  # negated prices, ascending: best ask is -(the last)

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.exchange!r}, {self.symbol!r}, update_id={self.update_id}, "
            f"bid={self.best_bid()}, ask={self.best_ask()}, depth={self.depth()})"
        )

    # --- writing ---------------------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every level and forget the update id."""
        self._bid_sizes.clear()
        self._bid_prices.clear()
        self._ask_sizes.clear()
        self._ask_prices.clear()
        self.update_id = None

    def load_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], update_id: int | None) -> None:
        """Replace the whole book. Levels may come in any order; zero sizes are ignored."""
        self._bid_sizes = self._snapshot_side(bids)
        self._bid_prices = sorted(self._bid_sizes)
        self._ask_sizes = self._snapshot_side(asks)
        self._ask_prices = sorted([-p for p in self._ask_sizes])
        self.update_id = update_id

    def _snapshot_side(self, levels: Iterable[Level]) -> dict[float, float]:
        sizes: dict[float, float] = {}
        for price, size in levels:
            if 0.0 < size < _INF and 0.0 < price < _INF:
                sizes[price] = size
            elif size != 0.0:
                self.malformed += 1
        return sizes

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Set absolute sizes; ``0.0`` deletes the level. Does not touch :attr:`update_id`."""
        if bids:
            self._apply_bids(bids)
        if asks:
            self._apply_asks(asks)

    def apply_delta(self, delta: BookDelta) -> None:
        """Apply a diff without any sequence check and take its last update id (``delta.seq``)."""
        if delta.bids:
            self._apply_bids(delta.bids)
        if delta.asks:
            self._apply_asks(delta.asks)
        self.update_id = delta.seq

    # The two sides differ only in the sign of the list's items; one loop each keeps the per-level
    # work to a comparison chain and one dict operation (plus the list edit for a new or gone level).

    def _apply_bids(self, levels: Iterable[Level]) -> None:
        sizes = self._bid_sizes
        prices = self._bid_prices
        for price, size in levels:
            if 0.0 < size < _INF:
                if price in sizes:
                    sizes[price] = size
                elif 0.0 < price < _INF:
                    # A new best level (the most common new one) is an append, no search.
                    if not prices or price > prices[-1]:
                        prices.append(price)
                    else:
                        insort(prices, price)
                    sizes[price] = size
                else:
                    self.malformed += 1
            elif size == 0.0:
                if price in sizes:
                    del sizes[price]
                    if prices[-1] == price:  # the best level went away
                        prices.pop()
                    else:  # prices are unique in the list, so bisect lands on this one exactly
                        del prices[bisect_left(prices, price)]
            else:
                self.malformed += 1

    def _apply_asks(self, levels: Iterable[Level]) -> None:
        sizes = self._ask_sizes
        prices = self._ask_prices
        for price, size in levels:
            if 0.0 < size < _INF:
                if price in sizes:
                    sizes[price] = size
                elif 0.0 < price < _INF:
                    negated = -price
                    if not prices or negated > prices[-1]:
                        prices.append(negated)
                    else:
                        insort(prices, negated)
                    sizes[price] = size
                else:
                    self.malformed += 1
            elif size == 0.0:
                if price in sizes:
                    del sizes[price]
                    negated = -price  # exact
                    if prices[-1] == negated:
                        prices.pop()
                    else:
                        del prices[bisect_left(prices, negated)]
            else:
                self.malformed += 1

    # --- reading ---------------------------------------------------------------------------------

    def best_bid(self) -> tuple[float, float] | None:
        prices = self._bid_prices
        if prices:
            price = prices[-1]
            return price, self._bid_sizes[price]
        return None

    def best_ask(self) -> tuple[float, float] | None:
        prices = self._ask_prices
        if prices:
            price = -prices[-1]
            return price, self._ask_sizes[price]
        return None

    def spread(self) -> float | None:
        """Best ask minus best bid (negative when the book is crossed), or None if a side is empty."""
        if self._bid_prices and self._ask_prices:
            return -self._ask_prices[-1] - self._bid_prices[-1]
        return None

    def mid(self) -> float | None:
        if self._bid_prices and self._ask_prices:
            return (-self._ask_prices[-1] + self._bid_prices[-1]) * 0.5
        return None

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask (crossed or locked): a book out of step."""
        return bool(self._bid_prices and self._ask_prices and self._bid_prices[-1] >= -self._ask_prices[-1])

    def bids(self, n: int | None = None) -> list[Level]:
        """Bid levels, best (highest) first; the best ``n`` when given."""
        sizes = self._bid_sizes
        if n is None:
            return [(p, sizes[p]) for p in reversed(self._bid_prices)]
        return [(p, sizes[p]) for p in self._bid_prices[: -n - 1 : -1]] if n > 0 else []

    def asks(self, n: int | None = None) -> list[Level]:
        """Ask levels, best (lowest) first; the best ``n`` when given."""
        if n is None:
            return _ask_levels(self._ask_sizes, reversed(self._ask_prices))
        return _ask_levels(self._ask_sizes, self._ask_prices[: -n - 1 : -1]) if n > 0 else []

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best ``n`` bids and asks, each best first, in O(n)."""
        if n <= 0:
            return [], []
        bid_sizes = self._bid_sizes
        return (
            [(p, bid_sizes[p]) for p in self._bid_prices[: -n - 1 : -1]],
            _ask_levels(self._ask_sizes, self._ask_prices[: -n - 1 : -1]),
        )

    def depth(self) -> tuple[int, int]:
        """Number of (bid, ask) levels."""
        return len(self._bid_prices), len(self._ask_prices)

    def to_snapshot(self, receive_ts: int, n: int | None = None) -> BookSnapshot:
        """The book (or its best ``n`` levels a side) as a BookSnapshot event stamped ``receive_ts``."""
        snapshot: BookSnapshot = BookSnapshot.fast(
            self.exchange,
            self.symbol,
            None,
            receive_ts,
            self.update_id,
            tuple(self.bids(n)),
            tuple(self.asks(n)),
        )
        return snapshot


def _ask_levels(sizes: dict[float, float], negated: Iterable[float]) -> list[Level]:
    """(price, size) pairs for negated ask prices, in the order given."""
    levels = []
    for p in negated:
        price = -p
        levels.append((price, sizes[price]))
    return levels


class SnapshotOutcome(enum.Enum):
    """What :meth:`BookSync.on_snapshot` did with a snapshot."""

    #: The book was set from it (and is LIVE, or waits for the next diff to confirm continuity).
    APPLIED = "applied"
    #: Older than the buffered stream: fetch another after ``policy.snapshot_retry_delay``.
    STALE = "stale"
    #: Not waiting for one (LIVE, already applied, or no diff buffered yet to check it against).
    IGNORED = "ignored"


_APPLIED = SnapshotOutcome.APPLIED
_STALE_SNAPSHOT = SnapshotOutcome.STALE
_IGNORED = SnapshotOutcome.IGNORED


class BookSync:
    """The sequence engine for one symbol's book: buffer, snapshot, apply, detect gaps, resync.

    Synchronous and free of I/O. Each call appends the events it produces to ``out`` (no
    allocation per call): applied diffs (so downstream consumers see every change of the book),
    the applied :class:`BookSnapshot`, :class:`BookState` on state changes and :class:`Gap` for
    every hole in the update-id sequence.

    The runtime's part::

        sync.on_delta(delta, out)                    # for every decoded diff
        if sync.wants_snapshot(now_ns):
            sync.snapshot_requested()
            ... fetch; on failure sync.snapshot_failed(now_ns)
            if sync.on_snapshot(snapshot, out) is SnapshotOutcome.STALE:
                ... fetch again after policy.snapshot_retry_delay
        sync.mark_stale("connection lost", now_ns, out)   # feed quiet or connection down
        sync.reset("new connection", now_ns, out)         # start over, book cleared

    While not LIVE the book keeps its last contents (for display), but it is only in step with
    the exchange when :attr:`state` is LIVE.
    """

    __slots__ = (
        "_accepted",
        "_attempts",
        "_book",
        "_buffer",
        "_buffer_overflows",
        "_deltas_applied",
        "_dup_mark",
        "_dup_run",
        "_duplicates",
        "_fresh",
        "_gaps",
        "_last_u",
        "_malformed",
        "_need",
        "_pending",
        "_primed",
        "_resyncs",
        "_retry_ns",
        "_skipped",
        "_snapshots_applied",
        "_stale_snapshots",
        "_state",
        "exchange",
        "policy",
        "symbol",
    )

    def __init__(self, exchange: str, symbol: str, policy: SequencePolicy | None = None) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.policy = policy if policy is not None else SequencePolicy()
        if self.policy.max_buffered_deltas < 1:
            raise ValueError(f"max_buffered_deltas must be >= 1, got {self.policy.max_buffered_deltas}")
        # Diffs to buffer before asking for a snapshot (at least one to check it against).
        self._need = min(max(1, self.policy.snapshot_wait_deltas), self.policy.max_buffered_deltas)
        self._book = OrderBook(exchange, symbol)
        self._state = _SYNCING
        self._buffer: list[BookDelta] = []
        # Last update id the stream delivered while not LIVE (when LIVE it is the book's id).
        self._last_u: int | None = None
        # After a reconnection the ids may legitimately restart lower (exchange restart).
        self._fresh = True
        # A snapshot is loaded but no diff has confirmed it joins the stream yet.
        self._primed = False
        self._pending = False
        self._retry_ns = 0
        self._attempts = 0
        self._gaps = 0
        self._resyncs = 0
        self._duplicates = 0
        self._snapshots_applied = 0
        self._stale_snapshots = 0
        self._deltas_applied = 0
        # Diffs taken while not LIVE (buffered or checked against a snapshot); with
        # _deltas_applied it tells whether a run of duplicates was interrupted.
        self._accepted = 0
        self._dup_mark = 0
        self._dup_run = 0
        self._skipped = 0
        self._malformed = 0
        self._buffer_overflows = 0

    def __repr__(self) -> str:
        return f"BookSync({self.exchange!r}, {self.symbol!r}, state={self._state.value}, update_id={self.update_id})"

    # --- read-only state -------------------------------------------------------------------------

    @property
    def state(self) -> BookStatus:
        return self._state

    @property
    def book(self) -> OrderBook:
        return self._book

    @property
    def update_id(self) -> int | None:
        return self._book.update_id

    @property
    def gaps(self) -> int:
        """Gap events emitted."""
        return self._gaps

    @property
    def resyncs(self) -> int:
        """Times a LIVE book lost continuity and went RESYNCING."""
        return self._resyncs

    @property
    def duplicates(self) -> int:
        """Diffs ignored because the book (or the buffer) already covered their ids."""
        return self._duplicates

    @property
    def snapshots_applied(self) -> int:
        return self._snapshots_applied

    @property
    def stale_snapshots(self) -> int:
        """Snapshots rejected as older than the buffered stream."""
        return self._stale_snapshots

    @property
    def deltas_applied(self) -> int:
        return self._deltas_applied

    @property
    def malformed(self) -> int:
        """Diffs skipped because their first id exceeds their last id."""
        return self._malformed

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def first_buffered_first_seq(self) -> int | None:
        """``U`` of the oldest buffered diff (what a snapshot must reach), or None."""
        return self._buffer[0].first_seq if self._buffer else None

    def statistics(self) -> dict[str, Any]:
        n_bids, n_asks = self._book.depth()
        return {
            "state": self._state.value,
            "update_id": self._book.update_id,
            "buffered": len(self._buffer),
            "snapshot_pending": self._pending,
            "gaps": self._gaps,
            "resyncs": self._resyncs,
            "duplicates": self._duplicates,
            "snapshots_applied": self._snapshots_applied,
            "stale_snapshots": self._stale_snapshots,
            "deltas_applied": self._deltas_applied,
            "skipped_before_snapshot": self._skipped,
            "malformed_deltas": self._malformed,
            "malformed_levels": self._book.malformed,
            "buffer_overflows": self._buffer_overflows,
            "bid_levels": n_bids,
            "ask_levels": n_asks,
        }

    # --- snapshots -------------------------------------------------------------------------------

    def wants_snapshot(self, now_ns: int | None = None) -> bool:
        """True when the runtime should fetch a snapshot now.

        That is: not LIVE, no snapshot loaded or pending, at least ``policy.snapshot_wait_deltas``
        (and at least one) diffs buffered, and, when ``now_ns`` is given, the retry delay after a
        stale snapshot or a failed fetch has passed.
        """
        if self._state is _LIVE or self._pending or self._primed:
            return False
        if len(self._buffer) < self._need:
            return False
        return now_ns is None or now_ns >= self._retry_ns

    def snapshot_requested(self) -> None:
        """The runtime started fetching a snapshot: :meth:`wants_snapshot` is False until it lands."""
        self._pending = True

    def snapshot_failed(self, now_ns: int | None = None) -> None:
        """The fetch failed (network, HTTP error): allow another after the retry delay."""
        self._pending = False
        if now_ns is not None:
            self._retry_ns = now_ns + int(self.policy.snapshot_retry_delay * 1e9)

    def on_snapshot(self, snapshot: BookSnapshot, out: list[Event]) -> SnapshotOutcome:
        """Offer a fetched snapshot (its ``seq`` is the last update id ``L``).

        APPLIED: ``out`` gets the snapshot, each buffered diff applied after it, then
        ``BookState(LIVE)``; if every buffered diff was older than the snapshot only the snapshot
        is emitted and the next diff must join it (``U <= L+1 <= u``) to go LIVE.
        STALE: too old for the buffer; fetch again after ``policy.snapshot_retry_delay``. After
        ``policy.max_snapshot_attempts`` stale snapshots in a row the buffer is dropped with a Gap
        and buffering starts over.
        """
        self._pending = False
        last_id = snapshot.seq
        if last_id is None:
            raise ValueError(
                f"{self.exchange} {self.symbol}: snapshot without a last update id cannot sync a book"
            )
        buffer = self._buffer
        if self._state is _LIVE or self._primed or not buffer:
            return _IGNORED
        policy = self.policy
        keep = 0
        if last_id >= buffer[0].first_seq - policy.snapshot_slack:
            n = len(buffer)
            while keep < n and buffer[keep].seq <= last_id:
                keep += 1
            usable = keep == n or buffer[keep].first_seq <= last_id + 1
        else:
            usable = False
        now = snapshot.receive_ts
        if not usable:
            self._stale_snapshots += 1
            self._attempts += 1
            self._retry_ns = now + int(policy.snapshot_retry_delay * 1e9)
            if self._attempts >= policy.max_snapshot_attempts:
                self._drop_buffer(
                    now,
                    snapshot.seq,
                    f"snapshot stayed older than the stream after {self._attempts} attempts; buffer dropped",
                    out,
                )
            return _STALE_SNAPSHOT

        book = self._book
        book.load_snapshot(snapshot.bids, snapshot.asks, last_id)
        self._snapshots_applied += 1
        self._attempts = 0
        self._skipped += keep
        out.append(snapshot)
        if keep == len(buffer):
            # Newer than every buffered diff: the next diff decides whether it joins.
            buffer.clear()
            self._primed = True
            return _APPLIED
        for i in range(keep, len(buffer)):
            delta = buffer[i]
            book.apply(delta.bids, delta.asks)
            book.update_id = delta.seq
            out.append(delta)
        self._deltas_applied += len(buffer) - keep
        buffer.clear()
        self._go_live(now, "snapshot applied", out)
        return _APPLIED

    def on_stream_snapshot(self, snapshot: BookSnapshot, out: list[Event]) -> SnapshotOutcome:
        """Offer a snapshot that arrived in the stream itself, in order with the diffs (a book
        replicated over a message bus, where a publisher sends its book image now and then).

        Not LIVE: the snapshot is where the book starts (with or without buffered diffs before it).
        LIVE: it must match the book exactly at the same update id; a mismatch means the replica
        went out of step (a Gap, then the snapshot is loaded and the book stays LIVE from there).
        A snapshot older than the book is IGNORED.
        """
        last_id = snapshot.seq
        if last_id is None:
            raise ValueError(f"{self.exchange} {self.symbol}: snapshot without a last update id cannot sync a book")
        book = self._book
        if self._state is _LIVE:
            uid = book.update_id
            if uid is not None and last_id < uid:
                return _IGNORED
            n = max(len(snapshot.bids), len(snapshot.asks))
            same = uid == last_id and book.top(n) == (list(snapshot.bids), list(snapshot.asks))
            if same:
                return _IGNORED
            now = snapshot.receive_ts
            self._emit_gap(now, last_id, (uid or 0) + 1, last_id, "book image differs from the replica", out)
            self._resyncs += 1
        elif self._buffer:
            return self.on_snapshot(snapshot, out)
        self._pending = False
        self._primed = False
        book.load_snapshot(snapshot.bids, snapshot.asks, last_id)
        self._snapshots_applied += 1
        self._attempts = 0
        out.append(snapshot)
        if self._state is not _LIVE:
            self._go_live(snapshot.receive_ts, "book image in the stream", out)
        return _APPLIED

    # --- diffs -----------------------------------------------------------------------------------

    def on_delta(self, delta: BookDelta, out: list[Event]) -> None:
        """Feed one diff from the stream (in arrival order)."""
        if self._state is _LIVE:
            book = self._book
            uid = book.update_id
            if uid is not None:
                first = delta.first_seq
                last = delta.seq
                if first <= uid + 1 <= last:
                    levels = delta.bids
                    if levels:
                        book._apply_bids(levels)
                    levels = delta.asks
                    if levels:
                        book._apply_asks(levels)
                    book.update_id = last
                    self._deltas_applied += 1
                    out.append(delta)
                    return
                if last <= uid and first <= last and self._duplicate(delta, out):
                    return
        self._on_delta_slow(delta, out)

    def _on_delta_slow(self, delta: BookDelta, out: list[Event]) -> None:
        first, last = delta.first_seq, delta.seq
        if first > last:
            self._malformed += 1
            return
        now = delta.receive_ts
        state = self._state
        if state is _LIVE:
            # on_delta handled continuation and duplicates: this diff skips ids.
            uid = self._book.update_id
            assert uid is not None
            self._emit_gap(now, last, uid + 1, first - 1, f"update ids {uid + 1}..{first - 1} missing", out)
            self._resyncs += 1
            self._set_state(_RESYNCING, now, f"gap before update id {first}", out)
            self._buffer.append(delta)
            self._last_u = last
            return
        if state is _STALE:
            self._set_state(
                _SYNCING if self._book.update_id is None else _RESYNCING, now, "stream resumed", out
            )

        seen = self._last_u
        if seen is not None:
            if last <= seen:
                if not self._fresh and self._duplicate(delta, out):
                    return
                # First diff of a new connection starts at or below what we saw (or a long run
                # did): the exchange restarted its sequence, the old ids say nothing about this one.
                self._buffer.clear()
                self._primed = False
            elif first > seen + 1:
                self._emit_gap(
                    now, last, seen + 1, first - 1, f"update ids {seen + 1}..{first - 1} missing", out
                )
                self._buffer.clear()
        self._fresh = False
        self._last_u = last
        self._accepted += 1

        if self._primed:
            uid = self._book.update_id
            assert uid is not None
            if last <= uid:
                self._skipped += 1
                return
            if first <= uid + 1:
                self._primed = False
                self._book.apply(delta.bids, delta.asks)
                self._book.update_id = last
                self._deltas_applied += 1
                out.append(delta)
                self._go_live(now, "snapshot joined the stream", out)
                return
            # Cannot join the snapshot (the stream hole was reported above): sync again.
            self._primed = False

        buffer = self._buffer
        if len(buffer) >= self.policy.max_buffered_deltas:
            self._buffer_overflows += 1
            self._drop_buffer(
                now, last, f"{len(buffer)} buffered diffs dropped waiting for a snapshot (buffer full)", out
            )
        buffer.append(delta)

    def _duplicate(self, delta: BookDelta, out: list[Event]) -> bool:
        """Count a diff the book already covers; False when the ids have evidently restarted.

        A few duplicates are normal (replays around a reconnection). A long unbroken run means the
        exchange restarted its update ids below ours: without this check the book would ignore
        every diff from then on while still claiming to be LIVE.
        """
        self._duplicates += 1
        mark = self._deltas_applied + self._accepted
        if mark != self._dup_mark:
            self._dup_mark = mark
            self._dup_run = 0
        self._dup_run += 1
        if self._dup_run < MAX_DUPLICATE_RUN:
            return True
        self._dup_run = 0
        behind = self._book.update_id if self._state is _LIVE else self._last_u
        reason = f"{MAX_DUPLICATE_RUN} diffs in a row behind update id {behind}: the ids restarted"
        self._leave_sync_cycle()
        self._last_u = None
        if self._state is _LIVE:
            self._resyncs += 1
            self._set_state(_RESYNCING, delta.receive_ts, reason, out)
        return False

    # --- connection events -----------------------------------------------------------------------

    def mark_stale(self, reason: str, now_ns: int, out: list[Event]) -> None:
        """The feed went quiet or its connection dropped: the book is no longer in step.

        The book keeps its contents; the next diff starts a new sync cycle (buffer, snapshot).
        """
        if self._state is _STALE:
            return
        self._leave_sync_cycle()
        self._set_state(_STALE, now_ns, reason, out)

    def reset(self, reason: str, now_ns: int, out: list[Event]) -> None:
        """Start over for a fresh connection: book cleared, state SYNCING."""
        self._leave_sync_cycle()
        self._book.clear()
        self._retry_ns = 0
        if self._state is not _SYNCING:
            self._set_state(_SYNCING, now_ns, reason, out)

    # --- internals -------------------------------------------------------------------------------

    def _leave_sync_cycle(self) -> None:
        if self._state is _LIVE:
            self._last_u = self._book.update_id
        self._buffer.clear()
        self._pending = False
        self._primed = False
        self._attempts = 0
        self._fresh = True

    def _go_live(self, now: int, reason: str, out: list[Event]) -> None:
        self._last_u = None
        self._set_state(_LIVE, now, reason, out)

    def _set_state(self, state: BookStatus, now: int, reason: str, out: list[Event]) -> None:
        self._state = state
        out.append(_state_fast(self.exchange, self.symbol, None, now, self._book.update_id, state, reason))

    def _emit_gap(
        self,
        now: int,
        seq: int | None,
        from_seq: int,
        to_seq: int,
        reason: str,
        out: list[Event],
        count: int | None = None,
    ) -> None:
        self._gaps += 1
        out.append(
            _gap_fast(self.exchange, self.symbol, None, now, seq, _ORDERBOOK, from_seq, to_seq, reason, count)
        )

    def _drop_buffer(self, now: int, seq: int | None, reason: str, out: list[Event]) -> None:
        buffer = self._buffer
        if buffer:
            self._emit_gap(now, seq, buffer[0].first_seq, buffer[-1].seq, reason, out, len(buffer))
            buffer.clear()
        self._attempts = 0
