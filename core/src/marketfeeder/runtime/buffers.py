"""Bounded buffers between the pipeline and its consumers.

:class:`EventQueue` sits in front of every sink, ``stream()`` consumer and async callback. It holds at
most ``maxsize`` events and says what happens when full:

``block``
    ``put_nowait`` parks the event in a small waiting room and returns False; the producer then awaits
    :meth:`EventQueue.wait_parked` before producing more. The waiting room is bounded by the number
    of producers times one frame's events, because a producer stops at the first full queue. A queue
    with parked events refuses new ones too, so the order of arrival is kept across producers.
``drop_oldest``
    The oldest queued event is discarded and counted. Because the lost events were always the
    oldest, a :class:`~marketfeeder.models.Gap` marker (``reason="backpressure:<name>"``, ``count``)
    placed at the head of what remains sits exactly where the loss happened; the consumer receives
    it before the surviving events.

:class:`RingBuffer` keeps the newest N events of one (exchange, symbol, data type).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

import anyio

from marketfeeder.clock import now_ns
from marketfeeder.models import DataType, Event, Gap

__all__ = ["EventQueue", "QueueClosed", "RingBuffer"]

Overflow = Literal["block", "drop_oldest"]

#: Distinct (exchange, symbol, data type) keys tracked for Gap markers before they are lumped together.
_MAX_DROP_KEYS = 4096


class QueueClosed(Exception):
    """The queue was closed and every event in it was consumed."""


class RingBuffer:
    """The newest ``maxlen`` events, newest last; :meth:`newest` reads newest first."""

    __slots__ = ("_items",)

    def __init__(self, maxlen: int) -> None:
        self._items: deque[Event] = deque(maxlen=maxlen)

    def append(self, event: Event) -> None:
        self._items.append(event)

    def appender(self) -> Callable[[Event], None]:
        """The bound ``append`` of the underlying deque (the per-message path skips a Python call)."""
        return self._items.append

    def newest(self, n: int) -> list[Event]:
        items = self._items
        if n <= 0 or not items:
            return []
        if n == 1:
            return [items[-1]]
        count = min(n, len(items))
        return [items[-1 - i] for i in range(count)]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._items)


class EventQueue:
    """A bounded event queue with an overflow policy and statistics. Single consumer."""

    def __init__(
        self,
        name: str,
        maxsize: int,
        overflow: Overflow = "block",
        *,
        gap_markers: bool = True,
        on_drop: Callable[[Event], None] | None = None,
    ) -> None:
        if maxsize <= 0:
            raise ValueError(f"queue {name!r}: maxsize must be positive, got {maxsize}")
        if overflow not in ("block", "drop_oldest"):
            raise ValueError(f"queue {name!r}: overflow must be 'block' or 'drop_oldest', got {overflow!r}")
        self.name = name
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self._block = overflow == "block"
        self._gap_markers = gap_markers
        #: Called with each dropped event (the feeder counts drops per symbol).
        self.on_drop = on_drop
        self._items: deque[Event] = deque()
        self._parked: deque[Event] = deque()
        # Sync producers (publish) may park without waiting; they are capped separately.
        self._max_parked_nowait = maxsize
        self._readable: anyio.Event | None = None
        # The consumer is woken once this many events are queued (a batch filling up wakes it once).
        self._wake_at = 1
        self._space: anyio.Event | None = None
        self._drops: dict[tuple[str, str, DataType], int] = {}
        self._closed = False
        self._dead = False
        #: Closed or dead: one flag for the per-event check.
        self._shut = False
        self.accepted = 0
        self.delivered = 0
        self.dropped = 0
        self.discarded_after_failure = 0
        self.blocked_puts = 0
        self.max_depth = 0

    # --- producer side -----------------------------------------------------------------------

    def put_nowait(self, event: Event) -> bool:
        """Queue ``event``. False means it was parked: await :meth:`wait_parked` before producing more."""
        if self._shut:
            self.discarded_after_failure += 1
            return True
        items = self._items
        self.accepted += 1
        depth = len(items)
        if depth >= self.maxsize:
            if self._block:
                self._parked.append(event)
                self.blocked_puts += 1
                return False
            self._drop(items.popleft())
            depth -= 1
        elif self._parked and self._block:
            self._parked.append(event)
            self.blocked_puts += 1
            return False
        items.append(event)
        depth += 1
        if depth > self.max_depth:
            self.max_depth = depth
        readable = self._readable
        if readable is not None and depth >= self._wake_at:
            self._readable = None
            readable.set()
        return True

    def trim_parked(self) -> None:
        """For producers that cannot wait (``Feeder.publish``): keep the parked events within a cap by
        dropping the oldest of them (counted and marked like any drop)."""
        parked = self._parked
        while len(parked) > self._max_parked_nowait:
            self._drop(parked.popleft())

    async def wait_parked(self) -> None:
        """Wait until every parked event has entered the queue (or the queue was closed)."""
        while self._parked and not self._dead:
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()

    async def put(self, event: Event) -> None:
        if not self.put_nowait(event):
            await self.wait_parked()

    def _drop(self, event: Event) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(event)
        if not self._gap_markers:
            return
        drops = self._drops
        key = (event.exchange, event.symbol, event.data_type)
        if key not in drops and len(drops) >= _MAX_DROP_KEYS:
            key = ("", "", DataType.STATUS)
        drops[key] = drops.get(key, 0) + 1

    # --- consumer side -----------------------------------------------------------------------

    def _take(self, n: int) -> list[Event]:
        items = self._items
        batch: list[Event] = []
        if self._drops:
            batch.extend(self._gap_events())
        count = min(n, len(items))
        if count == len(items):
            batch.extend(items)
            items.clear()
        else:
            popleft = items.popleft
            batch.extend(popleft() for _ in range(count))
        self.delivered += count
        self._admit_parked()
        return batch

    def _gap_events(self) -> list[Event]:
        ts = now_ns()
        reason = f"backpressure:{self.name}"
        gaps: list[Event] = [
            Gap.fast(exchange, symbol, None, ts, None, data_type, None, None, reason, count)
            for (exchange, symbol, data_type), count in self._drops.items()
        ]
        self._drops.clear()
        return gaps

    def _admit_parked(self) -> None:
        parked = self._parked
        if not parked:
            return
        items = self._items
        room = self.maxsize - len(items)
        while parked and room > 0:
            items.append(parked.popleft())
            room -= 1
        if not parked:
            space = self._space
            if space is not None:
                self._space = None
                space.set()

    def __len__(self) -> int:
        return len(self._items) + len(self._parked)

    async def get(self) -> Event:
        """The next event (a pending Gap marker first); :class:`QueueClosed` once closed and empty."""
        while True:
            if self._drops:
                return self._take_one_gap()
            if self._items:
                event = self._items.popleft()
                self.delivered += 1
                self._admit_parked()
                return event
            if self._closed or self._dead:
                raise QueueClosed(self.name)
            await self._wait_readable()

    async def _wait_readable(self) -> None:
        if self._readable is None:
            self._readable = anyio.Event()
        await self._readable.wait()

    def _take_one_gap(self) -> Event:
        key = next(iter(self._drops))
        count = self._drops.pop(key)
        exchange, symbol, data_type = key
        gap: Event = Gap.fast(exchange, symbol, None, now_ns(), None, data_type, None, None, f"backpressure:{self.name}", count)
        return gap

    async def get_batch(self, max_items: int, max_wait: float) -> list[Event]:
        """Up to ``max_items`` events (never empty): waits for the first, then up to ``max_wait`` s to
        fill the batch. Raises :class:`QueueClosed` once the queue is closed and drained."""
        while not self._items and not self._drops:
            if self._closed or self._dead:
                raise QueueClosed(self.name)
            await self._wait_readable()
        if len(self._items) < max_items and not self._closed and max_wait > 0:
            # Wake when the batch is full, or the queue is (a full queue must not wait out max_wait).
            self._wake_at = min(max_items, self.maxsize)
            try:
                with anyio.move_on_after(max_wait):
                    while len(self._items) < self._wake_at and not self._closed and not self._dead:
                        await self._wait_readable()
            finally:
                self._wake_at = 1
        return self._take(max_items)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """No more input; the consumer drains what was accepted (parked events included)."""
        if self._closed:
            return
        self._closed = True
        self._shut = True
        # Parked events were accepted: keep them, beyond maxsize if need be, so nothing accepted is lost.
        self._items.extend(self._parked)
        self._parked.clear()
        self._wake_all()

    def kill(self) -> None:
        """The consumer failed: discard everything and accept nothing more (counted)."""
        self._dead = True
        self._shut = True
        self.discarded_after_failure += len(self._items) + len(self._parked)
        self._items.clear()
        self._parked.clear()
        self._wake_all()

    def _wake_all(self) -> None:
        for event in (self._readable, self._space):
            if event is not None:
                event.set()
        self._readable = None
        self._space = None

    @property
    def closed(self) -> bool:
        return self._closed or self._dead

    def statistics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "maxsize": self.maxsize,
            "overflow": self.overflow,
            "queued": len(self._items),
            "parked": len(self._parked),
            "max_depth": self.max_depth,
            "accepted": self.accepted,
            "delivered": self.delivered,
            "dropped_by_backpressure": self.dropped,
            "blocked_puts": self.blocked_puts,
            "discarded_after_failure": self.discarded_after_failure,
            "closed": self.closed,
        }
