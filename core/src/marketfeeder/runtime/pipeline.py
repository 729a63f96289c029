"""The per-frame pipeline of one exchange: decode → books → de-duplication → validation → delivery.

:meth:`ExchangePipeline.on_frame` is plain synchronous code; it runs in the connection's task and
ends by handing the events to the :class:`~marketfeeder.runtime.dispatch.Dispatcher`. It is also
what ``bench/bench_pipeline.py`` drives directly, without a network.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from marketfeeder.book import BookSync
from marketfeeder.connector import Connector, ControlMessage, DecodeError, UnhandledMessage
from marketfeeder.models import BookDelta, DataType, Event, Instrument, ValidationFailure

from .buffers import EventQueue
from .dispatch import Dispatcher

if TYPE_CHECKING:
    from marketfeeder.timesync import ClockEstimator
    from marketfeeder.validators.base import Verdict
    from marketfeeder.validators.engine import ValidationEngine

__all__ = ["BenchSource", "BookEntry", "ExchangePipeline", "FrameSource", "SeqWindow", "ValidatingDelivery"]

log = logging.getLogger("marketfeeder.runtime")

_BookDelta = BookDelta
#: The quarantined indices of a one-event frame that failed.
_FIRST = frozenset((0,))
_EWMA_ALPHA = 0.2
#: Recent sequence ids remembered per (symbol, event class) to drop duplicated frames.
SEQ_WINDOW = 512


class SeqWindow:
    """The last ``size`` sequence ids seen; a reordered older id not among them is accepted once.

    Ids nearly always arrive in increasing order, and while the remembered ones are increasing a new id
    above the largest cannot be among them: :meth:`add` then only appends it. Only an id at or below the
    largest needs a look (a bisection of the ordered window, or the set kept while the window is out of
    order, until ``size`` increasing ids have pushed the disorder out).
    """

    __slots__ = ("_last", "_order", "_run", "_seen", "size")

    def __init__(self, size: int = SEQ_WINDOW) -> None:
        self.size = size
        #: The remembered ids, oldest first (the deque drops the oldest past ``size``).
        self._order: deque[int] = deque(maxlen=size)
        #: The same ids as a set while they are not in increasing order, else None.
        self._seen: set[int] | None = None
        #: The largest id remembered (below every int before the first).
        self._last: float = -math.inf
        #: Ids appended in increasing order since the window was last out of order.
        self._run = 0

    def add(self, seq: int) -> bool:
        """Remember ``seq``; False when it was already seen (a duplicate)."""
        order = self._order
        seen = self._seen
        if seq > self._last:
            self._last = seq
            if seen is not None:
                if len(order) == self.size:
                    seen.discard(order[0])
                seen.add(seq)
                self._run += 1
                if self._run >= self.size:
                    self._seen = None  # every remembered id came in increasing order
            order.append(seq)
            return True
        if seen is None:
            index = bisect_left(order, seq)
            if index < len(order) and order[index] == seq:
                return False
            seen = self._seen = set(order)
        elif seq in seen:
            return False
        if len(order) == self.size:
            seen.discard(order[0])
        seen.add(seq)
        order.append(seq)
        self._run = 0
        return True


class _Stream:
    """Per (symbol, event class): the de-duplication window and the source's clock entry."""

    __slots__ = ("clock", "clocks", "window")

    def __init__(self, window: SeqWindow) -> None:
        self.window = window
        #: The ``FrameSource.clocks`` dict ``clock`` belongs to (another source: look it up again).
        self.clocks: dict[tuple[str, DataType], list[int]] | None = None
        self.clock: list[int] = []


class FrameSource(Protocol):
    """What the pipeline needs from the connection a frame came from."""

    last_frame_ns: int
    market_events: int
    clocks: dict[tuple[str, DataType], list[int]]

    def count_decode_error(self, exc: Exception, frame: str | bytes) -> None: ...

    def count_unhandled(self) -> None: ...

    def count_frame(self, receive_ts: int) -> None: ...

    def on_control(self, message: ControlMessage) -> None: ...

    def first_event(self, key: tuple[str, DataType], receive_ts: int) -> None: ...


class BookEntry:
    """A symbol's local book and the wake-up of its snapshot task."""

    __slots__ = ("instrument", "kick", "scope", "sync")

    def __init__(self, sync: BookSync, instrument: Instrument) -> None:
        self.sync = sync
        self.instrument = instrument
        self.kick = anyio.Event()
        self.scope: anyio.CancelScope | None = None


class ValidatingDelivery:
    """Validation by policy, then delivery: the last step shared by exchange and source pipelines."""

    def __init__(
        self, dispatcher: Dispatcher, *, validation: ValidationEngine | None = None, validation_policy: str = "annotate"
    ) -> None:
        self.dispatcher = dispatcher
        self._check_all: Callable[[list[Event]], list[tuple[int, list[Verdict]]] | None] | None = None
        self._validation: ValidationEngine | None = None
        self.validation = validation
        if validation_policy not in ("annotate", "quarantine", "drop"):
            raise ValueError(f"validation policy must be annotate, quarantine or drop, got {validation_policy!r}")
        self.policy = validation_policy
        self.validation_dropped = 0

    @property
    def validation(self) -> ValidationEngine | None:
        """The checks every event meets before delivery (None: no validation); may be set at any time."""
        return self._validation

    @validation.setter
    def validation(self, engine: ValidationEngine | None) -> None:
        self._validation = engine
        if engine is None:
            self._check_all = None
        else:
            check_all = getattr(engine, "check_all", None)
            self._check_all = check_all if check_all is not None else partial(_check_each, engine.check)

    def finish(self, out: list[Event]) -> list[EventQueue] | None:
        """Validate (by policy) and deliver ``out``."""
        check_all = self._check_all
        if check_all is None:
            return self.dispatcher.deliver(out)
        failed = check_all(out)
        if failed is None:
            return self.dispatcher.deliver(out)
        return self._deliver_judged(out, failed)

    def _deliver_judged(self, out: list[Event], verdicts_at: list[tuple[int, list[Verdict]]]) -> list[EventQueue] | None:
        """Deliver ``out`` of which some events failed checks (``(index, verdicts)``), by the policy."""
        policy = self.policy
        if policy == "drop":
            dropped = {index for index, _ in verdicts_at}
            for index, verdicts in verdicts_at:
                event = out[index]
                stats = self.dispatcher.stats_for(event.exchange, event.symbol)
                for verdict in verdicts:
                    stats.validation_failures[verdict.check] = stats.validation_failures.get(verdict.check, 0) + 1
            self.validation_dropped += len(dropped)
            kept = [event for index, event in enumerate(out) if index not in dropped]
            return self.dispatcher.deliver(kept) if kept else None
        # annotate / quarantine: the event, then one ValidationFailure per verdict right after it.
        if len(out) == 1:  # the usual frame: one event
            event = out[0]
            annotated: list[Event] = [event]
            for verdict in verdicts_at[0][1]:
                annotated.append(
                    ValidationFailure.fast(
                        event.exchange, event.symbol, event.exchange_ts, event.receive_ts, event.seq,
                        verdict.check, verdict.message, policy, event.__class__.__name__, event.receive_ts,
                    )
                )
            return self.dispatcher.deliver(annotated, _FIRST if policy == "quarantine" else ())
        by_index = dict(verdicts_at)
        final: list[Event] = []
        quarantined: set[int] = set()
        for index, event in enumerate(out):
            if policy == "quarantine" and index in by_index:
                quarantined.add(len(final))
            final.append(event)
            for verdict in by_index.get(index, ()):
                final.append(
                    ValidationFailure.fast(
                        event.exchange, event.symbol, event.exchange_ts, event.receive_ts, event.seq,
                        verdict.check, verdict.message, policy, event.__class__.__name__, event.receive_ts,
                    )
                )
        return self.dispatcher.deliver(final, quarantined)


class ExchangePipeline(ValidatingDelivery):
    def __init__(
        self,
        connector: Connector,
        dispatcher: Dispatcher,
        *,
        validation: ValidationEngine | None = None,
        validation_policy: str = "annotate",
    ) -> None:
        super().__init__(dispatcher, validation=validation, validation_policy=validation_policy)
        self.connector = connector
        self.exchange = connector.name
        self.books: dict[str, BookEntry] = {}
        self._streams: dict[tuple[str, type[Event]], _Stream] = {}
        self.duplicates = 0
        self._decode: Callable[[str | bytes, int], list[Any]] = connector.decode
        #: Receives one (exchange_ts, receive_ts) sample per frame for clock alignment, when set.
        self.clock: ClockEstimator | None = None

    # --- the hot path --------------------------------------------------------------------------

    def on_frame(self, frame: str | bytes, receive_ts: int, source: FrameSource) -> list[EventQueue] | None:
        """Decode one frame and deliver its events; returns queues to wait for (see Dispatcher)."""
        try:
            results = self._decode(frame, receive_ts)
        except UnhandledMessage:
            source.count_unhandled()
            return None
        except DecodeError as exc:
            source.count_decode_error(exc, frame)
            return None
        except Exception as exc:  # a connector bug on odd input: same treatment, never crash the feed
            source.count_decode_error(exc, frame)
            return None
        source.count_frame(receive_ts)
        out: list[Event] = []
        streams = self._streams
        clocks = source.clocks
        for result in results:
            cls = result.__class__
            if cls is _BookDelta:
                entry = self.books.get(result.symbol)
                if entry is None:
                    continue  # no longer subscribed
                sync = entry.sync
                sync.on_delta(result, out)
                if sync.wants_snapshot():
                    entry.kick.set()
                stream = streams.get((result.symbol, cls))
                if stream is None:
                    stream = streams[(result.symbol, cls)] = _Stream(SeqWindow())
            elif isinstance(result, Event):
                stream = streams.get((result.symbol, cls))
                if stream is None:
                    stream = streams[(result.symbol, cls)] = _Stream(SeqWindow())
                seq = result.seq
                if seq is not None:
                    window = stream.window
                    if window._seen is None and seq > window._last:
                        # SeqWindow.add's common case, inlined: a new largest id of an ordered window.
                        window._last = seq
                        window._order.append(seq)
                    elif not window.add(seq):
                        self.duplicates += 1
                        continue
                out.append(result)
            else:
                source.on_control(result)
                continue
            # Per-stream timing for the stale-feed watchdog (EWMA of the inter-message interval).
            if stream.clocks is clocks:
                clock = stream.clock
                interval = receive_ts - clock[0]
                if interval > 0:
                    ewma = clock[1]
                    clock[1] = interval if ewma == 0 else int(ewma + (interval - ewma) * _EWMA_ALPHA)
                    clock[0] = receive_ts
                clock[2] += 1
            else:
                self._first_clock(stream, result, clocks, source, receive_ts)
        if not out:
            return None
        estimator = self.clock
        if estimator is not None:
            estimator.add_stream_sample(out[-1].exchange_ts, receive_ts)
        source.market_events += len(out)
        check_all = self._check_all
        if check_all is None:
            return self.dispatcher.deliver(out)
        failed = check_all(out)
        if failed is None:
            return self.dispatcher.deliver(out)
        return self._deliver_judged(out, failed)

    def _first_clock(
        self,
        stream: _Stream,
        event: Event,
        clocks: dict[tuple[str, DataType], list[int]],
        source: FrameSource,
        receive_ts: int,
    ) -> None:
        """The clock update of a stream's first event from ``source``: find (or start) its entry."""
        key = (event.symbol, event.__class__.data_type)
        clock = clocks.get(key)
        if clock is None:
            clocks[key] = clock = [receive_ts, 0, 1]
            source.first_event(key, receive_ts)
        else:
            interval = receive_ts - clock[0]
            if interval > 0:
                ewma = clock[1]
                clock[1] = interval if ewma == 0 else int(ewma + (interval - ewma) * _EWMA_ALPHA)
                clock[0] = receive_ts
            clock[2] += 1
        stream.clocks = clocks
        stream.clock = clock

    # --- books ---------------------------------------------------------------------------------

    def add_book(self, instrument: Instrument) -> BookEntry:
        entry = self.books.get(instrument.symbol)
        if entry is None:
            sync = BookSync(self.exchange, instrument.symbol, self.connector.sequence_policy)
            entry = self.books[instrument.symbol] = BookEntry(sync, instrument)
        return entry

    def remove_book(self, symbol: str) -> None:
        entry = self.books.pop(symbol, None)
        if entry is not None and entry.scope is not None:
            entry.scope.cancel()

    def forget(self, symbol: str) -> None:
        """Drop de-duplication state of an unsubscribed symbol."""
        for key in [key for key in self._streams if key[0] == symbol]:
            del self._streams[key]


def _check_each(
    check: Callable[[Event], list[Verdict] | None], events: list[Event]
) -> list[tuple[int, list[Verdict]]] | None:
    """``check_all`` for an engine that only has ``check``."""
    failed = [(index, verdicts) for index, event in enumerate(events) if (verdicts := check(event)) is not None]
    return failed or None


class BenchSource:
    """A :class:`FrameSource` that only counts (benchmarks and tests feeding frames directly)."""

    def __init__(self) -> None:
        self.last_frame_ns = 0
        self.market_events = 0
        self.clocks: dict[tuple[str, DataType], list[int]] = {}
        self.frames = 0
        self.decode_errors = 0
        self.unhandled = 0
        self.controls: deque[ControlMessage] = deque(maxlen=100)

    def count_decode_error(self, exc: Exception, frame: str | bytes) -> None:
        self.decode_errors += 1

    def count_unhandled(self) -> None:
        self.unhandled += 1

    def count_frame(self, receive_ts: int) -> None:
        self.frames += 1
        self.last_frame_ns = receive_ts

    def on_control(self, message: ControlMessage) -> None:
        self.controls.append(message)

    def first_event(self, key: tuple[str, DataType], receive_ts: int) -> None:
        pass

