"""The source contract: events that arrive already normalized, not from an exchange's WebSocket.

A source (a message bus such as NATS JetStream, a recorded file) hands the feeder events that some
other feeder produced. They go through the same path as a connector's: books, validation, callbacks,
streams, latest-value buffers, strategies and sinks. Register a source class by the URL scheme it
serves (``marketfeeder run --source nats://host:4222`` runs the source registered as ``nats``)::

    @hookimpl
    def marketfeeder_register_sources(register):
        register("nats", NatsSource)

The feeder builds it with its options (``[[sources]]`` entries; ``--source URL`` passes
``{"url": URL}``) and runs ``await source.run(ingest)`` in its task group until shutdown. The source
calls ``await ingest.deliver(events)``, which waits while a ``block`` sink or stream is full, so a
source never outruns its consumers.

Books are replicas: :class:`~marketfeeder.models.BookSnapshot` and :class:`~marketfeeder.models.BookDelta`
events rebuild the book with the same sequence checks as a live connection (the exchange plugin's
:class:`~marketfeeder.sequence.SequencePolicy` when it is installed). A book image in the stream
starts the book or, once LIVE, must match it exactly. ``feeder.book(exchange, symbol)`` answers for
replicas as for live books.

Exactly-once storage: a source that knows its position on the bus ends each delivered batch with a
:class:`~marketfeeder.models.BusCheckpoint` (``ingest.checkpoint(...)``). A sink that stores the
position in the same transaction as the events before it, and answers ``bus_positions(source,
consumer)``, lets the source resume right after what the sink committed (``await
ingest.positions(consumer)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .models import BusCheckpoint, Event

__all__ = ["Ingest", "PositionedSink", "Source", "SourceFactory"]


@runtime_checkable
class Ingest(Protocol):
    """What the feeder gives a running source."""

    #: The source's name (its registered type), used as ``BusCheckpoint.exchange``.
    source: str

    async def deliver(self, events: Sequence[Event]) -> None:
        """Hand events to the feeder in their bus order; waits while a ``block`` consumer is full."""

    def checkpoint(self, stream: str, consumer: str, seq: int, count: int) -> BusCheckpoint:
        """A :class:`BusCheckpoint` for the ``count`` events just delivered from ``stream`` up to ``seq``."""

    async def positions(self, consumer: str) -> dict[str, int]:
        """Per stream, the last sequence every positioned sink has committed for ``consumer``: resume
        after it. Empty when no sink keeps positions (or none was committed yet)."""

    @property
    def positioned(self) -> bool:
        """Whether any sink keeps positions: then a stream missing from :meth:`positions` has nothing
        committed and must be read from its start, not from where the bus's consumer had got to."""


@runtime_checkable
class Source(Protocol):
    async def run(self, ingest: Ingest) -> None:
        """Deliver events until cancelled; reconnect by itself. Raise only for a fatal setup error."""

    def statistics(self) -> dict[str, Any]:
        """Counters for ``feeder.statistics()['sources']``."""


@runtime_checkable
class PositionedSink(Protocol):
    """A sink that stores :class:`BusCheckpoint` positions atomically with the events before them."""

    async def bus_positions(self, source: str, consumer: str) -> dict[str, int]:
        """Per stream, the last committed sequence of ``consumer`` on ``source``."""


#: Called with the source's options dict; returns a Source.
SourceFactory = Callable[[Mapping[str, Any]], Source]
