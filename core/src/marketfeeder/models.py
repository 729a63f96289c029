"""Typed events and instruments.

Every event is an attrs slotted class that is *frozen to its users* (assignment raises
``attrs.exceptions.FrozenInstanceError``) and knows nothing of any exchange's wire format.

Construction cost
-----------------
Frozen attrs classes route every field of ``__init__`` through ``object.__setattr__``, which made an
8-field event cost ~600 ns to build here against ~160 ns for a plain ``@attrs.define`` slotted class.
The hot path therefore never calls the frozen ``__init__``: each event class ``E`` has a private
mutable twin ``E._Fields`` with the same slots, and :func:`fast` builds the twin and re-labels its
``__class__`` to ``E`` (~260 ns, measured in ``bench/bench_models.py``). The result is a genuine ``E``:
equal, hashable, picklable and immutable like one built by ``E(...)``. Users construct events the
ordinary way; connectors call ``Trade.fast(...)`` with positional arguments in field order.

Numbers
-------
Prices and sizes are ``float``. Decoding a decimal string with ``float()`` is deterministic, so equal
decimal strings ("1.10" and "1.1") always map to the same value, dict keys of a book level are stable,
and arithmetic on the hot path costs nanoseconds instead of ``Decimal``'s microseconds. Tick-grid
checks are done with a relative tolerance (see :mod:`marketfeeder.validators`). All times are integer
nanoseconds since the Unix epoch.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import attrs

__all__ = [
    "BookDelta",
    "BookSnapshot",
    "BookState",
    "BookStatus",
    "BookTicker",
    "BusCheckpoint",
    "Connection",
    "ConnectionStatus",
    "DataType",
    "Event",
    "Gap",
    "Instrument",
    "InstrumentTable",
    "Kline",
    "Level",
    "MarkPrice",
    "MarketKind",
    "Side",
    "Ticker",
    "Trade",
    "UnknownSymbolError",
    "ValidationFailure",
    "EVENT_TYPES",
]


class DataType(enum.StrEnum):
    """What a subscription asks for. The string value is what config files and the CLI use."""

    TICKER = "ticker"
    BOOK_TICKER = "book_ticker"
    ORDERBOOK = "orderbook"
    TRADES = "trades"
    KLINES = "klines"
    MARK_PRICE = "mark_price"
    #: Control events: BookState, Gap, Connection.
    STATUS = "status"
    #: Events produced by strategies (e.g. arbitrage opportunities).
    SIGNAL = "signal"

    @classmethod
    def parse(cls, value: str) -> DataType:
        """Accept the value or the member name, any case; raise ``ValueError`` naming the choices."""
        key = value.strip().lower()
        for member in cls:
            if key in (member.value, member.name.lower()):
                return member
        choices = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown data type {value!r}; expected one of: {choices}")


#: Data types a connector streams from an exchange (STATUS and SIGNAL are produced locally).
MARKET_DATA_TYPES = frozenset(
    {
        DataType.TICKER,
        DataType.BOOK_TICKER,
        DataType.ORDERBOOK,
        DataType.TRADES,
        DataType.KLINES,
        DataType.MARK_PRICE,
    }
)


class Side(enum.StrEnum):
    """Taker side of a trade."""

    BUY = "buy"
    SELL = "sell"


class BookStatus(enum.StrEnum):
    SYNCING = "syncing"  # waiting for the first snapshot
    LIVE = "live"  # in step with the exchange
    RESYNCING = "resyncing"  # a gap was seen; fetching a new snapshot
    STALE = "stale"  # the feed went quiet or its connection is down


class ConnectionStatus(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    ROTATED = "rotated"  # a planned replacement took over without a gap


class MarketKind(enum.StrEnum):
    SPOT = "spot"
    PERP = "perp"
    OTHER = "other"


#: A book level: (price, size). Size 0.0 in a delta removes the level.
Level = tuple[float, float]

_E = TypeVar("_E", bound="Event")


def _fast_constructor(cls: type[_E]) -> Callable[..., _E]:
    fields_cls = cls._Fields

    def fast(*args: Any) -> _E:
        obj = fields_cls(*args)
        obj.__class__ = cls
        result: _E = obj
        return result

    fast.__doc__ = f"Build a {cls.__name__} from positional fields in order, skipping the frozen guard."
    return fast


def _event(fields_cls: type[Any]) -> Callable[[type[_E]], type[_E]]:
    """Make ``cls`` a frozen subclass of its mutable twin and give it a ``fast`` constructor."""

    def wrap(cls: type[_E]) -> type[_E]:
        frozen = attrs.frozen(slots=True, weakref_slot=False)(cls)
        frozen._Fields = fields_cls
        frozen.fast = staticmethod(_fast_constructor(frozen))
        return frozen

    return wrap


# --- common fields -------------------------------------------------------------------------------
# Every event starts with the same five fields, so sinks and the runtime can treat them uniformly:
#   exchange     exchange name ("binance")
#   symbol       normalized symbol ("BTC-USDT"); "" for connection-wide events
#   exchange_ts  exchange event time in ns, or None when the exchange sends none (Binance bookTicker)
#   receive_ts   local wall clock in ns, read when the frame arrived, before decoding
#   seq          the exchange's sequence id for this stream where it gives one (update id, trade id)


class Event:
    """Base of all events. ``data_type`` tells which subscription selector matches it."""

    __slots__ = ()
    data_type: ClassVar[DataType]
    _Fields: ClassVar[type[Any]]
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None

    fast: ClassVar[Callable[..., Any]]


@attrs.define(slots=True, weakref_slot=False)
class _TickerFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None
    last: float | None
    bid: float | None
    bid_size: float | None
    ask: float | None
    ask_size: float | None
    open: float | None
    high: float | None
    low: float | None
    volume: float | None  # base asset, rolling 24 h
    quote_volume: float | None
    trade_count: int | None
    price_change: float | None = None
    price_change_pct: float | None = None
    vwap: float | None = None


@_event(_TickerFields)
class Ticker(_TickerFields):
    """Rolling 24-hour statistics with the last price (and best bid/ask where the exchange sends them)."""

    data_type: ClassVar[DataType] = DataType.TICKER


@attrs.define(slots=True, weakref_slot=False)
class _BookTickerFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None  # None on Binance Spot: its bookTicker carries no event time
    receive_ts: int
    seq: int | None
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    engine_ts: int | None = None  # matching-engine time where given (Backpack `T`)


@_event(_BookTickerFields)
class BookTicker(_BookTickerFields):
    """Best bid and ask."""

    data_type: ClassVar[DataType] = DataType.BOOK_TICKER


@attrs.define(slots=True, weakref_slot=False)
class _TradeFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None  # trade id (aggregate trade id for Binance aggTrade)
    price: float
    size: float
    side: Side  # taker side
    trade_ts: int | None = None  # the trade's own time (Binance/Backpack `T`)


@_event(_TradeFields)
class Trade(_TradeFields):
    """One public trade."""

    data_type: ClassVar[DataType] = DataType.TRADES


@attrs.define(slots=True, weakref_slot=False)
class _KlineFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None
    interval: str  # "1m", "1h", ... as the exchange names it
    open_ts: int
    close_ts: int
    open: float | None  # None when the interval had no trade (Backpack)
    high: float | None
    low: float | None
    close: float | None
    volume: float
    closed: bool
    quote_volume: float | None = None
    trade_count: int | None = None


@_event(_KlineFields)
class Kline(_KlineFields):
    """A candle; ``closed`` is False while it is still forming."""

    data_type: ClassVar[DataType] = DataType.KLINES


@attrs.define(slots=True, weakref_slot=False)
class _BookSnapshotFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None  # the snapshot's last update id
    bids: tuple[Level, ...]  # best (highest) first
    asks: tuple[Level, ...]  # best (lowest) first


@_event(_BookSnapshotFields)
class BookSnapshot(_BookSnapshotFields):
    """A full or top-N book image. Bids descend, asks ascend, whatever order the exchange used."""

    data_type: ClassVar[DataType] = DataType.ORDERBOOK


@attrs.define(slots=True, weakref_slot=False)
class _BookDeltaFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int  # last update id in the event (`u`)
    first_seq: int  # first update id in the event (`U`)
    bids: tuple[Level, ...]  # absolute sizes; 0.0 removes the level
    asks: tuple[Level, ...]
    engine_ts: int | None = None


@_event(_BookDeltaFields)
class BookDelta(_BookDeltaFields):
    """Absolute level sizes for the updates ``first_seq..seq`` inclusive."""

    data_type: ClassVar[DataType] = DataType.ORDERBOOK


@attrs.define(slots=True, weakref_slot=False)
class _MarkPriceFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None
    mark_price: float
    index_price: float | None
    funding_rate: float | None
    next_funding_ts: int | None
    engine_ts: int | None = None


@_event(_MarkPriceFields)
class MarkPrice(_MarkPriceFields):
    """Perpetual-futures mark price, index price and funding."""

    data_type: ClassVar[DataType] = DataType.MARK_PRICE


@attrs.define(slots=True, weakref_slot=False)
class _BookStateFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None  # the book's update id when the state changed
    state: BookStatus
    reason: str = ""


@_event(_BookStateFields)
class BookState(_BookStateFields):
    """A local book changed state (SYNCING, LIVE, RESYNCING, STALE)."""

    data_type: ClassVar[DataType] = DataType.STATUS


@attrs.define(slots=True, weakref_slot=False)
class _GapFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None
    gap_type: DataType  # the data type that lost events
    from_seq: int | None  # first missing sequence id, when known
    to_seq: int | None  # last missing sequence id, when known
    reason: str
    count: int | None = None  # number of events lost, when known (backpressure drops)


@_event(_GapFields)
class Gap(_GapFields):
    """Events were missed: a sequence break from the exchange, or drops by a full buffer."""

    data_type: ClassVar[DataType] = DataType.STATUS


@attrs.define(slots=True, weakref_slot=False)
class _ConnectionFields(Event):
    exchange: str
    symbol: str  # "" : connection-wide
    exchange_ts: int | None
    receive_ts: int
    seq: int | None
    connection_id: str
    status: ConnectionStatus
    reason: str = ""
    url: str = ""


@_event(_ConnectionFields)
class Connection(_ConnectionFields):
    """A WebSocket connection went up, down, or was rotated."""

    data_type: ClassVar[DataType] = DataType.STATUS


@attrs.define(slots=True, weakref_slot=False)
class _BusCheckpointFields(Event):
    exchange: str  # the source that delivered the events (``nats``)
    symbol: str  # the bus stream they came from (``MD_TRADES``)
    exchange_ts: int | None
    receive_ts: int
    seq: int  # the stream sequence delivered up to, inclusive
    consumer: str  # the consumer (durable) name: positions are per consumer
    count: int  # events this checkpoint closes (the ones delivered right before it)


@_event(_BusCheckpointFields)
class BusCheckpoint(_BusCheckpointFields):
    """A source's position on a message bus: every event it delivered before this one, from stream
    ``symbol`` up to sequence ``seq``, precedes it. A sink that stores the position in the same
    transaction as those events can resume without loss or duplicates (see ``docs/howto/source.md``)."""

    data_type: ClassVar[DataType] = DataType.STATUS


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        Ticker, BookTicker, Trade, Kline, BookSnapshot, BookDelta, MarkPrice, BookState, Gap, Connection, BusCheckpoint
    )
}


def register_event_type(cls: type[Event]) -> type[Event]:
    """Make an event class known by name to sinks and codecs (for plugin-defined events)."""
    EVENT_TYPES[cls.__name__] = cls
    return cls


def event_class(fields_cls: type[Any]) -> Callable[[type[_E]], type[_E]]:
    """Public form of the frozen-twin pattern for plugins that define their own events.

    ``fields_cls`` is an ``@attrs.define(slots=True, weakref_slot=False)`` class deriving from
    :class:`Event` that starts with the five common fields.
    """
    return _event(fields_cls)


# --- instruments ---------------------------------------------------------------------------------


class UnknownSymbolError(LookupError):
    """A symbol the exchange does not list, or lists as not trading."""


@attrs.frozen(slots=True)
class Instrument:
    """One market of one exchange, from the exchange's own market-info endpoint."""

    exchange: str
    native: str  # exchange form: "BTCUSDT", "SOL_USDC", "SOL_USDC_PERP"
    symbol: str  # normalized form: "BTC-USDT", "SOL-USDC", "SOL-USDC-PERP"
    base: str
    quote: str
    tick_size: float
    step_size: float
    status: str  # the exchange's own status word ("TRADING", "Open", ...)
    active: bool  # True when the market is open for trading and listed
    kind: MarketKind = MarketKind.SPOT

    @staticmethod
    def normalized(base: str, quote: str, kind: MarketKind = MarketKind.SPOT) -> str:
        """The normalized symbol: ``BASE-QUOTE`` uppercase, with ``-PERP`` for perpetuals."""
        text = f"{base.upper()}-{quote.upper()}"
        return f"{text}-PERP" if kind is MarketKind.PERP else text


class InstrumentTable:
    """An exchange's instruments with lookups both ways (native <-> normalized)."""

    __slots__ = ("_by_native", "_by_symbol", "exchange")

    def __init__(self, exchange: str, instruments: Iterable[Instrument] = ()) -> None:
        self.exchange = exchange
        self._by_native: dict[str, Instrument] = {}
        self._by_symbol: dict[str, Instrument] = {}
        for instrument in instruments:
            self.add(instrument)

    def add(self, instrument: Instrument) -> None:
        if instrument.exchange != self.exchange:
            raise ValueError(f"instrument {instrument.native} belongs to {instrument.exchange}, not {self.exchange}")
        self._by_native[instrument.native] = instrument
        self._by_symbol[instrument.symbol] = instrument

    def __len__(self) -> int:
        return len(self._by_native)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_native.values())

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_symbol

    def by_native(self, native: str) -> Instrument:
        try:
            return self._by_native[native]
        except KeyError:
            raise UnknownSymbolError(f"{self.exchange}: unknown native symbol {native!r}") from None

    def by_symbol(self, symbol: str) -> Instrument:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise UnknownSymbolError(
                f"{self.exchange}: unknown symbol {symbol!r} (symbols are BASE-QUOTE, e.g. BTC-USDT)"
            ) from None

    def get_native(self, native: str) -> Instrument | None:
        return self._by_native.get(native)

    def to_native(self, symbol: str) -> str:
        return self.by_symbol(symbol).native

    def to_symbol(self, native: str) -> str:
        return self.by_native(native).symbol

    def require_tradable(self, symbol: str) -> Instrument:
        """The instrument for ``symbol``, or a clear error when it is unknown or not trading."""
        instrument = self.by_symbol(symbol)
        if not instrument.active:
            raise UnknownSymbolError(
                f"{self.exchange}: {symbol} ({instrument.native}) is not trading (status {instrument.status})"
            )
        return instrument


@attrs.define(slots=True, weakref_slot=False)
class _ValidationFailureFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None  # seq of the failing event
    check: str  # validator name
    message: str
    action: str  # "annotate", "quarantine" or "drop": what the pipeline did with the event
    event_type: str  # class name of the failing event
    event_receive_ts: int  # receive_ts of the failing event (with event_type/seq, identifies it)


@_event(_ValidationFailureFields)
class ValidationFailure(_ValidationFailureFields):
    """An event failed a data-quality check. Emitted right after the event reaches the sinks."""

    data_type: ClassVar[DataType] = DataType.STATUS


EVENT_TYPES[ValidationFailure.__name__] = ValidationFailure
