"""The sink contract.

A sink is an async object the runtime opens once, hands batches of events to, flushes and closes.
The runtime does the batching and the buffering: each sink sits behind its own bounded queue with
an explicit overflow policy (see :class:`~marketfeeder.config.SinkConfig`), so a sink only writes.

``write_batch`` receives every event type, including control events (``Gap``, ``BookState``,
``Connection``, ``ValidationFailure``); a sink stores what it wants and ignores the rest. Events that
failed validation under the ``quarantine`` policy still reach sinks, followed by their
``ValidationFailure``, so nothing is lost silently.

Blocking libraries must not run on the event loop: use ``anyio.to_thread.run_sync`` behind a
``CapacityLimiter``. An exception from a sink method stops that sink alone; the runtime reports it
and keeps every other sink and the feed running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..models import Event

__all__ = ["Sink", "SinkFactory"]


@runtime_checkable
class Sink(Protocol):
    async def open(self) -> None:
        """Acquire resources (files, connections). Called once before the first write."""

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Persist ``events`` (in arrival order). May buffer internally; ``flush`` makes it durable."""

    async def flush(self) -> None:
        """Make everything written so far durable."""

    async def close(self) -> None:
        """Flush and release resources. Called once, also after a failure."""


#: Called with the sink's options dict; returns a Sink.
SinkFactory = Callable[[Mapping[str, Any]], Sink]
