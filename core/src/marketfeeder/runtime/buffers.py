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

:class:`RingBuffer` keeps the newest N events of one (exchange, symbol, data type); a long one packs
its older events into compact columns.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterator
from enum import Enum
from itertools import repeat
from operator import attrgetter
from typing import Any, Literal

import anyio

from marketfeeder.clock import now_ns
from marketfeeder.models import EVENT_TYPES, DataType, Event, Gap

__all__ = ["EventQueue", "QueueClosed", "RingBuffer"]

Overflow = Literal["block", "drop_oldest"]

#: Distinct (exchange, symbol, data type) keys tracked for Gap markers before they are lumped together.
_MAX_DROP_KEYS = 4096


class QueueClosed(Exception):
    """The queue was closed and every event in it was consumed."""


class RingBuffer:
    """The newest ``maxlen`` events, newest last; :meth:`newest` reads newest first.

    A ring of up to :data:`PACK_ABOVE` events is a plain deque of the event objects. A larger one keeps
    its newest events (at most :data:`PACK_BLOCK`) as objects and packs older ones, a block at a time,
    into columns: a field that holds one value for the whole block is kept once, ints and floats in
    ``array`` columns, anything else as a tuple of references. A boxed float or nanosecond int costs
    24 to 48 bytes and an event object about 100, against 8 bytes per field packed, so a million
    buffered trades take about a fifth of the memory. Reading a packed event builds an equal event
    (same class, same field values, bit for bit; not the same object) with the class's ``fast``
    constructor. Only the core's own event classes are packed; a block mixing classes, or of another
    class, stays as objects. Packing costs about half a microsecond per event, paid once per block on
    the append that fills it: the price of a long ring, which the default (1,000) never pays.
    """

    __slots__ = ("_blocks", "_hot", "_items", "_packed", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._items: deque[Event] | None = deque(maxlen=maxlen) if maxlen <= PACK_ABOVE else None
        #: Packed mode: the newest events as objects (fewer than PACK_BLOCK), then sealed blocks.
        self._hot: list[Event] = []
        self._blocks: deque[_Block] = deque()
        #: Events held in ``_blocks`` (after their ``start`` offsets).
        self._packed = 0

    def append(self, event: Event) -> None:
        items = self._items
        if items is not None:
            items.append(event)
            return
        hot = self._hot
        hot.append(event)
        if len(hot) >= PACK_BLOCK:
            self._seal()

    def appender(self) -> Callable[[Event], None]:
        """The per-message ``append``: the deque's own for a small ring (no Python call in between)."""
        items = self._items
        return items.append if items is not None else self.append

    def _seal(self) -> None:
        """Pack the hot events into a block and drop whatever fell out of the newest ``maxlen``."""
        hot = self._hot
        self._hot = []
        self._blocks.append(_pack(hot))
        self._packed += len(hot)
        excess = self._packed - self.maxlen
        blocks = self._blocks
        while excess > 0:
            block = blocks[0]
            left = block.size - block.start
            if left <= excess:
                blocks.popleft()
                self._packed -= left
                excess -= left
            else:
                block.start += excess
                self._packed -= excess
                excess = 0

    def newest(self, n: int) -> list[Event]:
        items = self._items
        if items is not None:
            if n <= 0 or not items:
                return []
            if n == 1:
                return [items[-1]]
            count = min(n, len(items))
            return [items[-1 - i] for i in range(count)]
        count = min(n, len(self))
        if count <= 0:
            return []
        hot = self._hot
        out: list[Event] = hot[max(0, len(hot) - count):]
        out.reverse()
        need = count - len(out)
        for block in reversed(self._blocks):
            if need <= 0:
                break
            hi = block.size
            lo = max(block.start, hi - need)
            part = block.events(lo, hi)
            part.reverse()
            out.extend(part)
            need -= hi - lo
        return out

    def __len__(self) -> int:
        items = self._items
        if items is not None:
            return len(items)
        return min(self.maxlen, self._packed + len(self._hot))

    def __iter__(self) -> Iterator[Event]:
        items = self._items
        if items is not None:
            return iter(items)
        return iter(self._oldest_first())

    def _oldest_first(self) -> list[Event]:
        skip = self._packed + len(self._hot) - len(self)  # hot events past maxlen since the last seal
        out: list[Event] = []
        for block in self._blocks:
            lo = block.start
            if skip:
                take = min(skip, block.size - lo)
                lo += take
                skip -= take
            out.extend(block.events(lo, block.size))
        out.extend(self._hot[skip:])
        return out


#: Rings longer than this pack their older events (see :class:`RingBuffer`).
PACK_ABOVE = 4096
#: Events per packed block (and most events a packed ring holds as objects).
PACK_BLOCK = 1024

#: Field types whose equal values are interchangeable, so a column of one value is kept once.
_SCALAR_TYPES = frozenset({str, int, bool, type(None)})
_FLOAT = float
_INT = int


def _packable() -> dict[type[Event], tuple[Callable[..., Event], tuple[Callable[[Event], Any], ...]]]:
    out: dict[type[Event], tuple[Callable[..., Event], tuple[Callable[[Event], Any], ...]]] = {}
    for cls in EVENT_TYPES.values():
        fields = getattr(cls, "__attrs_attrs__", None)
        fast = getattr(cls, "fast", None)
        if fields is None or fast is None:
            continue
        out[cls] = (fast, tuple(attrgetter(field.name) for field in fields))
    return out


_PACKABLE = _packable()


class _Block:
    """Events of one sealed block: packed columns, or the objects themselves."""

    __slots__ = ("columns", "constant", "fast", "objects", "size", "start")

    def __init__(self, size: int) -> None:
        self.size = size
        #: Events before ``start`` fell out of the ring.
        self.start = 0
        self.objects: list[Event] | None = None
        self.fast: Callable[..., Event] | None = None
        self.columns: list[Any] = []
        #: Per column: True when ``columns[i]`` is the one value of the whole block.
        self.constant: list[bool] = []

    def events(self, lo: int, hi: int) -> list[Event]:
        objects = self.objects
        if objects is not None:
            return objects[lo:hi]
        fast = self.fast
        assert fast is not None
        n = hi - lo
        if n <= 0:
            return []
        parts = [
            repeat(column, n) if constant else column[lo:hi]
            for column, constant in zip(self.columns, self.constant, strict=True)
        ]
        return [fast(*values) for values in zip(*parts, strict=True)]


def _pack(events: list[Event]) -> _Block:
    block = _Block(len(events))
    entry = _PACKABLE.get(events[0].__class__)
    if entry is None or len(set(map(type, events))) != 1:
        block.objects = events
        return block
    fast, getters = entry
    n = len(events)
    columns = block.columns
    constant = block.constant
    # Column by column (one list each, no tuple per event: fewer objects for the collector to meet).
    for get in getters:
        column = list(map(get, events))
        types = set(map(type, column))
        kind = types.pop() if len(types) == 1 else None
        if kind is _FLOAT:
            columns.append(array("d", column))  # exact: the same 64 bits, -0.0 and NaN included
            constant.append(False)
            continue
        first = column[0]
        if kind is not None and (kind in _SCALAR_TYPES or issubclass(kind, Enum)) and column.count(first) == n:
            columns.append(first)
            constant.append(True)
            continue
        if kind is _INT:
            try:
                columns.append(array("q", column))
                constant.append(False)
                continue
            except OverflowError:
                pass
        columns.append(tuple(column))  # references
        constant.append(False)
    block.fast = fast
    return block


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
        #: The deepest the queue was before its last shrink (see ``max_depth``).
        self._max_depth = 0
        #: A put below this depth only appends: ``maxsize`` while open with nothing parked, else 0.
        self._limit = maxsize

    # --- producer side -----------------------------------------------------------------------

    def put_nowait(self, event: Event) -> bool:
        """Queue ``event``. False means it was parked: await :meth:`wait_parked` before producing more."""
        items = self._items
        if len(items) < self._limit:  # open, nothing parked, room: the common case
            items.append(event)
            self.accepted += 1
            if self._readable is not None and len(items) >= self._wake_at:
                self._wake_reader()
            return True
        return self._put_slow(event)

    def _put_slow(self, event: Event) -> bool:
        """:meth:`put_nowait` when the queue is shut, full or has parked events."""
        if self._shut:
            self.discarded_after_failure += 1
            return True
        items = self._items
        self.accepted += 1
        depth = len(items)
        if depth >= self.maxsize:
            if self._block:
                self._park(event)
                return False
            self._drop(items.popleft())
        elif self._parked and self._block:
            self._park(event)
            return False
        items.append(event)
        if self._readable is not None and len(items) >= self._wake_at:
            self._wake_reader()
        return True

    def _park(self, event: Event) -> None:
        self._parked.append(event)
        self.blocked_puts += 1
        self._limit = 0  # every put takes the slow path until the parked events are in

    def _wake_reader(self) -> None:
        readable = self._readable
        self._readable = None
        if readable is not None:
            readable.set()

    @property
    def max_depth(self) -> int:
        """The most events ever queued at once (noted when the queue shrinks, and now)."""
        depth = len(self._items)
        return depth if depth > self._max_depth else self._max_depth

    def _note_depth(self) -> None:
        depth = len(self._items)
        if depth > self._max_depth:
            self._max_depth = depth

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
        self._note_depth()
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
            if not self._shut:
                self._limit = self.maxsize
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
                self._note_depth()
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
        self._limit = 0
        # Parked events were accepted: keep them, beyond maxsize if need be, so nothing accepted is lost.
        self._items.extend(self._parked)
        self._parked.clear()
        self._wake_all()

    def kill(self) -> None:
        """The consumer failed: discard everything and accept nothing more (counted)."""
        self._dead = True
        self._shut = True
        self._limit = 0
        self._note_depth()
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
