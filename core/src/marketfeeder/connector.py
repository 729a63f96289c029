"""The connector contract: what an exchange plugin implements.

A connector is the exchange-specific part only: its endpoints, stream names, control messages,
its wire codec (``decode``), instrument loading, the REST depth snapshot and the few numbers in
which its rules differ (:class:`ConnectionLimits`, :class:`~marketfeeder.sequence.SequencePolicy`).
Everything else is the runtime's, written once for all exchanges: connections and their sharding,
keepalive, reconnect with backoff, rotation before a forced disconnect, control-message pacing,
subscription acknowledgement, the stale-feed watchdog, order-book synchronisation, de-duplication,
validation, delivery and stats.

Decoding is on the per-message path: keep it plain, direct code (``orjson.loads`` and field access),
build events with ``EventClass.fast(...)`` and hoist enum members (``BUY = Side.BUY``) to module
constants. Never call pluggy, cattrs or anything that allocates needlessly per frame.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .models import BookSnapshot, DataType, Event, Instrument, InstrumentTable
from .sequence import SequencePolicy

if TYPE_CHECKING:
    from .config import ExchangeConfig
    from .transport.http import HttpClient

__all__ = [
    "ConnectionLimits",
    "Connector",
    "ControlError",
    "ControlMessage",
    "DecodeError",
    "ServerShutdown",
    "SubscribeAck",
    "UnhandledMessage",
]


class DecodeError(ValueError):
    """A frame that is not valid for this exchange (bad JSON, missing or mistyped fields).

    The runtime counts it per connection and skips the frame; it never stops the feed.
    """


class UnhandledMessage(DecodeError):
    """A well-formed frame of a kind this connector does not turn into events (counted apart)."""


# --- control results returned by decode() besides events ------------------------------------------


class ControlMessage:
    """Base of the non-market results of :meth:`Connector.decode`."""

    __slots__ = ()


@attrs.frozen
class SubscribeAck(ControlMessage):
    """The exchange acknowledged the control request ``request_id`` (Binance ``{"result":null,"id":N}``)."""

    request_id: int | str | None
    result: Any = None


@attrs.frozen
class ControlError(ControlMessage):
    """The exchange refused a control request, or sent an error frame.

    ``request_id`` is None when the exchange does not say which request failed (Backpack); the
    runtime then attributes it to the streams whose subscription is not yet confirmed.
    """

    request_id: int | str | None
    code: int | str | None
    message: str


@attrs.frozen
class ServerShutdown(ControlMessage):
    """The server announced it will close this connection soon: rotate to a new one now."""

    exchange_ts: int | None = None


@attrs.frozen
class ConnectionLimits:
    """The exchange's documented connection rules, which the runtime obeys."""

    #: Streams one connection may carry; the runtime shards across connections beyond it.
    max_streams_per_connection: int = 1024
    #: Control messages (subscribe, unsubscribe, and for Binance pings/pongs) per second per connection.
    max_control_messages_per_second: float | None = None
    #: Streams named in one SUBSCRIBE/UNSUBSCRIBE message.
    max_streams_per_control_message: int = 200
    #: Seconds the exchange keeps a connection before cutting it (Binance: 24 h); None: no limit.
    max_connection_lifetime: float | None = None
    #: Open the replacement connection this many seconds before the lifetime runs out.
    rotate_margin: float = 600.0
    #: Connection attempts allowed per window: (attempts, window seconds), per IP.
    connect_attempts: tuple[int, float] | None = None
    #: Seconds between our own keepalive pings (None: rely on the server's pings).
    client_ping_interval: float | None = None
    #: Close and reconnect when our ping is not answered within this many seconds.
    pong_timeout: float = 60.0
    #: Does the exchange acknowledge subscriptions? If not, the first frame of a stream confirms it.
    subscribe_ack: bool = True
    #: Seconds after which an unacknowledged (or silent) subscription is reported.
    subscribe_timeout: float = 10.0


class Connector(abc.ABC):
    """Base class of exchange connectors. Subclass it and register it through
    ``marketfeeder_register_connectors``.

    Lifecycle, driven by the runtime: ``__init__`` (cheap, no I/O) → ``await load_instruments()`` →
    ``streams_for`` for each configured (symbol, data type) → connect to ``connection_url(streams)``
    → send ``subscribe_message`` for streams not carried in the URL → ``decode`` every frame →
    ``await fetch_snapshot`` whenever a local book needs one.
    """

    #: Exchange name, as used in configuration and in every event's ``exchange`` field.
    name: ClassVar[str]
    default_ws_url: ClassVar[str]
    default_rest_url: ClassVar[str]
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    sequence_policy: ClassVar[SequencePolicy] = SequencePolicy()
    supported_data_types: ClassVar[frozenset[DataType]] = frozenset()
    #: True when ``connection_url`` carries the initial streams (no SUBSCRIBE needed after connect).
    streams_in_url: ClassVar[bool] = False

    def __init__(self, config: ExchangeConfig, http: HttpClient) -> None:
        self.config = config
        self.http = http
        self.ws_url = (config.ws_url or self.default_ws_url).rstrip("/")
        self.rest_url = (config.rest_url or self.default_rest_url).rstrip("/")
        self.instruments = InstrumentTable(self.name)

    # --- start-up -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def load_instruments(self) -> InstrumentTable:
        """Fetch the exchange's market info, set ``self.instruments`` and return it."""

    @abc.abstractmethod
    def streams_for(self, instrument: Instrument, data_type: DataType) -> list[str]:
        """Wire stream names that deliver ``data_type`` for ``instrument`` (may be several, e.g. one
        per kline interval). Raise ``ValueError`` for a data type this exchange does not offer."""

    def connection_url(self, streams: Sequence[str]) -> str:
        """URL of a connection that will carry ``streams``. The default ignores them."""
        return self.ws_url

    # --- control messages ---------------------------------------------------------------------

    @abc.abstractmethod
    def subscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        """The exchange's subscribe request for ``streams`` (JSON text)."""

    @abc.abstractmethod
    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        """The exchange's unsubscribe request for ``streams`` (JSON text)."""

    # --- per message (hot path) -----------------------------------------------------------------

    @abc.abstractmethod
    def decode(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        """Turn one WebSocket frame into events and control results.

        ``receive_ts`` is the local clock (ns) read when the frame arrived. Raise
        :class:`DecodeError` for a malformed frame and :class:`UnhandledMessage` for a valid one
        of a kind the connector does not turn into events. Symbols in events are normalized
        through ``self.instruments``.
        """

    # --- REST -----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def fetch_snapshot(self, instrument: Instrument, limit: int) -> BookSnapshot:
        """The REST depth snapshot, bids best first and asks best first, ``seq`` = last update id."""

    async def server_time(self) -> int | None:
        """The exchange's clock in ns from its REST time endpoint, or None if it has none."""
        return None

    # --- helpers --------------------------------------------------------------------------------

    def depth_limit(self) -> int:
        return self.config.depth_limit or self.sequence_policy.default_depth_limit
