"""The feeder's side of a :class:`~marketfeeder.source.Source`: replica books, de-duplication,
validation and delivery of events that arrive already normalized (see :mod:`marketfeeder.source`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from marketfeeder.book import BookSync
from marketfeeder.clock import now_ns
from marketfeeder.models import BookDelta, BookSnapshot, BookState, BookStatus, BusCheckpoint, Event
from marketfeeder.sequence import SequencePolicy

from .dispatch import Dispatcher
from .pipeline import SeqWindow, ValidatingDelivery

if TYPE_CHECKING:
    from marketfeeder.timesync import ClockSync
    from marketfeeder.validators.engine import ValidationEngine

    from .dispatch import SinkRunner

__all__ = ["SourceIngest"]

log = logging.getLogger("marketfeeder.runtime")

_BookDelta = BookDelta
_BookSnapshot = BookSnapshot
_BookState = BookState
_LIVE = BookStatus.LIVE


class SourceIngest(ValidatingDelivery):
    """One running source's path into the feeder (implements :class:`marketfeeder.source.Ingest`).

    ``policy_for(exchange)`` gives the sequence policy replica books of that exchange check diffs
    with (the exchange plugin's, when installed).
    """

    def __init__(
        self,
        source: str,
        dispatcher: Dispatcher,
        sinks: Callable[[], Sequence[SinkRunner]],
        *,
        policy_for: Callable[[str], SequencePolicy],
        clock: ClockSync | None = None,
        validation: ValidationEngine | None = None,
        validation_policy: str = "annotate",
    ) -> None:
        super().__init__(dispatcher, validation=validation, validation_policy=validation_policy)
        self.source = source
        self._sinks = sinks
        self._policy_for = policy_for
        self._clock = clock
        #: Replica books by (exchange, symbol).
        self.books: dict[tuple[str, str], BookSync] = {}
        self._windows: dict[tuple[str, str, type[Event]], SeqWindow] = {}
        self.events = 0
        self.duplicates = 0
        self.batches = 0

    def book(self, exchange: str, symbol: str) -> BookSync:
        sync = self.books.get((exchange, symbol))
        if sync is None:
            sync = self.books[(exchange, symbol)] = BookSync(exchange, symbol, self._policy_for(exchange))
        return sync

    async def deliver(self, events: Sequence[Event]) -> None:
        out: list[Event] = []
        books = self.books
        windows = self._windows
        for event in events:
            cls = event.__class__
            if cls is _BookDelta:
                sync = books.get((event.exchange, event.symbol)) or self.book(event.exchange, event.symbol)
                sync.on_delta(cast(BookDelta, event), out)
                continue
            if cls is _BookSnapshot:
                sync = books.get((event.exchange, event.symbol)) or self.book(event.exchange, event.symbol)
                sync.on_stream_snapshot(cast(BookSnapshot, event), out)
                continue
            if cls is _BookState:
                # The replica speaks for its own state; the publisher's non-LIVE one means what follows
                # is a resync over there, so the replica waits for the next image too.
                replica = books.get((event.exchange, event.symbol))
                if replica is not None:
                    state = cast(BookState, event)
                    if state.state is not _LIVE:
                        replica.mark_stale(
                            f"publisher's book is {state.state}: {state.reason}", state.receive_ts, out
                        )
                    continue
            elif cls is not BusCheckpoint and event.seq is not None:
                key = (event.exchange, event.symbol, cls)
                window = windows.get(key)
                if window is None:
                    window = windows[key] = SeqWindow()
                if not window.add(event.seq):
                    self.duplicates += 1
                    continue
            out.append(event)
        if not out:
            return
        self.batches += 1
        self.events += len(out)
        clock = self._clock
        if clock is not None:
            last = out[-1]
            if last.exchange_ts is not None and last.__class__ is not BusCheckpoint:
                clock.clock(last.exchange).add_stream_sample(last.exchange_ts, last.receive_ts)
        pending = self.finish(out)
        if pending:
            await self.dispatcher.wait(pending)

    def checkpoint(self, stream: str, consumer: str, seq: int, count: int) -> BusCheckpoint:
        return BusCheckpoint(self.source, stream, None, now_ns(), seq, consumer, count)

    async def positions(self, consumer: str) -> dict[str, int]:
        merged: dict[str, int] | None = None
        for runner in self._sinks():
            ask = getattr(runner.sink, "bus_positions", None)
            if ask is None:
                continue
            positions = {str(k): int(v) for k, v in (await ask(self.source, consumer)).items()}
            if merged is None:
                merged = positions
            else:  # the lowest: every positioned sink has committed up to it
                merged = {k: min(v, positions[k]) for k, v in merged.items() if k in positions}
        return merged or {}

    @property
    def positioned(self) -> bool:
        """Whether any sink keeps bus positions. Then a stream missing from :meth:`positions` has
        nothing committed yet: a source reads it again from its start, not from the bus's ack floor."""
        return any(hasattr(runner.sink, "bus_positions") for runner in self._sinks())

    def statistics(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "batches": self.batches,
            "duplicates": self.duplicates,
            "validation_dropped": self.validation_dropped,
            "books": {f"{ex}:{sym}": sync.state.value for (ex, sym), sync in self.books.items()},
        }
