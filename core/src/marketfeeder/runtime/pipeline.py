"""The per-frame pipeline of one exchange: decode → books → de-duplication → validation → delivery.

:meth:`ExchangePipeline.on_frame` is plain synchronous code; it runs in the connection's task and
ends by handing the events to the :class:`~marketfeeder.runtime.dispatch.Dispatcher`. It is also
what ``bench/bench_pipeline.py`` drives directly, without a network.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from marketfeeder.book import BookSync
from marketfeeder.connector import Connector, ControlMessage, DecodeError, UnhandledMessage
from marketfeeder.models import BookDelta, DataType, Event, Instrument, ValidationFailure

from .buffers import EventQueue
from .dispatch import Dispatcher

if TYPE_CHECKING:
    from marketfeeder.timesync import ClockEstimator
    from marketfeeder.validators.engine import ValidationEngine

__all__ = ["BenchSource", "BookEntry", "ExchangePipeline", "FrameSource", "SeqWindow"]

log = logging.getLogger("marketfeeder.runtime")

_BookDelta = BookDelta
_EWMA_ALPHA = 0.2
#: Recent sequence ids remembered per (symbol, event class) to drop duplicated frames.
SEQ_WINDOW = 512


class SeqWindow:
    """The last ``size`` sequence ids seen; a reordered older id not among them is accepted once."""

    __slots__ = ("_order", "_seen", "size")

    def __init__(self, size: int = SEQ_WINDOW) -> None:
        self.size = size
        self._seen: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, seq: int) -> bool:
        """Remember ``seq``; False when it was already seen (a duplicate)."""
        seen = self._seen
        if seq in seen:
            return False
        seen.add(seq)
        order = self._order
        order.append(seq)
        if len(order) > self.size:
            seen.discard(order.popleft())
        return True


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


class ExchangePipeline:
    def __init__(
        self,
        connector: Connector,
        dispatcher: Dispatcher,
        *,
        validation: ValidationEngine | None = None,
        validation_policy: str = "annotate",
    ) -> None:
        self.connector = connector
        self.exchange = connector.name
        self.dispatcher = dispatcher
        self.validation = validation
        if validation_policy not in ("annotate", "quarantine", "drop"):
            raise ValueError(f"validation policy must be annotate, quarantine or drop, got {validation_policy!r}")
        self.policy = validation_policy
        self.books: dict[str, BookEntry] = {}
        self._windows: dict[tuple[str, type[Event]], SeqWindow] = {}
        self.duplicates = 0
        self.validation_dropped = 0
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
        books = self.books
        windows = self._windows
        clocks = source.clocks
        for result in results:
            cls = result.__class__
            if cls is _BookDelta:
                entry = books.get(result.symbol)
                if entry is None:
                    continue  # no longer subscribed
                sync = entry.sync
                sync.on_delta(result, out)
                if sync.wants_snapshot():
                    entry.kick.set()
            elif isinstance(result, Event):
                seq = result.seq
                if seq is not None:
                    wkey = (result.symbol, cls)
                    window = windows.get(wkey)
                    if window is None:
                        window = windows[wkey] = SeqWindow()
                    if not window.add(seq):
                        self.duplicates += 1
                        continue
                out.append(result)
            else:
                source.on_control(result)
                continue
            # Per-stream timing for the stale-feed watchdog (EWMA of the inter-message interval).
            key = (result.symbol, cls.data_type)
            clock = clocks.get(key)
            if clock is None:
                clocks[key] = [receive_ts, 0, 1]
                source.first_event(key, receive_ts)
            else:
                interval = receive_ts - clock[0]
                if interval > 0:
                    ewma = clock[1]
                    clock[1] = interval if ewma == 0 else int(ewma + (interval - ewma) * _EWMA_ALPHA)
                    clock[0] = receive_ts
                clock[2] += 1
        if not out:
            return None
        estimator = self.clock
        if estimator is not None:
            estimator.add_stream_sample(out[-1].exchange_ts, receive_ts)
        source.market_events += len(out)
        return self.finish(out)

    def finish(self, out: list[Event]) -> list[EventQueue] | None:
        """Validate (by policy) and deliver ``out``."""
        if self.validation is not None:
            return self._validate_and_deliver(out)
        return self.dispatcher.deliver(out)

    def _validate_and_deliver(self, out: list[Event]) -> list[EventQueue] | None:
        check = self.validation.check  # type: ignore[union-attr]
        verdicts_at: list[tuple[int, list[Any]]] | None = None
        for index, event in enumerate(out):
            verdicts = check(event)
            if verdicts is not None:
                if verdicts_at is None:
                    verdicts_at = []
                verdicts_at.append((index, verdicts))
        if verdicts_at is None:
            return self.dispatcher.deliver(out)
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
        for key in [key for key in self._windows if key[0] == symbol]:
            del self._windows[key]


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

