"""The venue contract: an exchange's wire protocol, served on loopback by the simulator.

Each exchange plugin registers a :class:`Venue` subclass through ``marketfeeder_register_venues``.
The simulator server (:mod:`marketfeeder.sim.server`) owns sockets, the market clock, fan-out and
fault injection; the venue owns everything that is the exchange's: URL paths, stream names, the
encoding of market records, control messages and their replies, the REST endpoints, and the
numbers of the exchange's connection rules (:class:`VenueRules`), which the server enforces.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import attrs

from ..models import DataType
from ..transport.server import HttpReply, HttpRequest
from .model import SimEvent, SimInstrument, SimKline, SimSnapshot, SimTicker

__all__ = [
    "HttpReply",
    "HttpRequest",
    "SimConnection",
    "SimFrame",
    "Venue",
    "VenueMarket",
    "VenueRules",
    "WsReject",
]


@attrs.frozen
class VenueRules:
    """The exchange's documented connection rules, enforced by the simulator server."""

    #: Seconds between server pings; the client must answer each with a pong.
    ping_interval: float | None = 20.0
    #: Disconnect when no pong arrived this long after a ping.
    pong_timeout: float = 60.0
    #: Seconds a connection lives before the server cuts it (Binance: 24 h); None: forever.
    max_lifetime: float | None = None
    #: Send ``Venue.shutdown_notice()`` this many seconds before the lifetime cut.
    shutdown_notice_before: float | None = None
    #: Incoming messages (control, ping, pong) per second before the server disconnects the client.
    max_incoming_per_second: float | None = None
    #: Streams per connection; a request beyond it is refused with an error reply.
    max_streams: int | None = None


@attrs.frozen
class SimFrame:
    """One encoded market message, before per-connection wrapping."""

    stream: str
    payload: str  # JSON text of the raw payload
    data_type: DataType  # lets faults target, e.g., only ORDERBOOK frames ("skipped sequence ids")


class WsReject(Exception):
    """Raised by ``Venue.on_connect`` to refuse a WebSocket upgrade with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SimConnection(Protocol):
    """A client connection as a venue sees it."""

    id: int
    path: str
    query: Mapping[str, str]
    #: Streams this connection currently receives; the venue adds and removes names.
    streams: set[str]
    #: Free-form per-connection state for the venue (e.g. Binance's "combined" property).
    state: dict[str, Any]


class VenueMarket(Protocol):
    """The market engine as seen by one venue (its own books, ids and history)."""

    venue: str

    def instruments(self) -> Sequence[SimInstrument]: ...

    def snapshot(self, symbol: str, limit: int) -> SimSnapshot:
        """The venue's current book for ``symbol`` (or, when the venue is configured to lag, an
        older one), at most ``limit`` levels a side."""
        ...

    def klines(self, symbol: str, interval: str, start_ns: int | None, end_ns: int | None, limit: int) -> list[SimKline]:
        """Klines of ``interval`` from the engine's trade history, oldest first."""
        ...

    def ticker(self, symbol: str) -> SimTicker: ...

    def now_ns(self) -> int: ...


class Venue(abc.ABC):
    """Base class of simulated exchanges. One instance per venue per simulator run."""

    name: ClassVar[str]
    rules: ClassVar[VenueRules] = VenueRules()

    def __init__(self, market: VenueMarket, options: Mapping[str, Any] | None = None) -> None:
        self.market = market
        self.options = dict(options or {})

    # --- WebSocket -------------------------------------------------------------------------------

    @abc.abstractmethod
    def on_connect(self, conn: SimConnection) -> None:
        """A client opened a WebSocket at ``conn.path``/``conn.query``. Add the streams named in the
        URL to ``conn.streams``; raise :class:`WsReject` to refuse (unknown path, bad stream)."""

    @abc.abstractmethod
    def on_message(self, conn: SimConnection, text: str) -> list[str]:
        """A client sent a text frame: apply it (subscribe, unsubscribe, property...) and return the
        replies to send, in the exchange's exact format (acks, error replies)."""

    @abc.abstractmethod
    def encode(self, event: SimEvent, wanted: set[str]) -> list[SimFrame]:
        """Encode one market record into every stream that carries it and is in ``wanted`` (the
        union of all connections' streams); return nothing for streams nobody receives."""

    @abc.abstractmethod
    def wrap(self, conn: SimConnection, frame: SimFrame) -> str:
        """The text actually sent to ``conn`` for ``frame`` (e.g. Binance's combined wrapper)."""

    def shutdown_notice(self, now_ns: int) -> str | None:
        """A frame announcing an imminent server-side disconnect (Binance ``serverShutdown``)."""
        return None

    # --- REST ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def handle_http(self, request: HttpRequest) -> HttpReply:
        """Serve one REST request (depth snapshot, market info, klines, ...)."""

    #: Path prefixes the REST faults (500, 429, timeouts) apply to; empty: every path.
    fault_paths: ClassVar[tuple[str, ...]] = ()
