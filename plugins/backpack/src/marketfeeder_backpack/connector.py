"""Backpack Exchange connector: endpoints, stream names, control messages, instruments, REST depth.

Facts (Backpack's OpenAPI spec, its official Rust client and order-book reference, real captures):

- One WebSocket endpoint, ``wss://ws.backpack.exchange``; streams are added with
  ``{"method":"SUBSCRIBE","params":[...]}``. There is **no acknowledgement**: a subscription is
  confirmed by its first frame (``subscribe_ack=False``), and a refused one shows up as an error frame
  ``{"id":null,"error":{...}}`` that names no request.
- The server pings every 60 s and closes after 120 s without a pong; we only answer its pings.
- Backpack publishes no per-connection stream cap, message rate or connection lifetime, so the
  limits below are conservative choices of ours (see :data:`LIMITS`).
- The REST depth snapshot lags the stream (CCXT waits ~10 deltas), so the book engine buffers a few
  deltas before asking and retries while ``lastUpdateId`` is older than the first buffered ``U - 1``.

Connector options (``[exchanges.backpack] options``):

``depth_speed``
    ``"realtime"`` (default: ``depth.<S>``), ``"200ms"``, ``"600ms"`` or ``"1000ms"``
    (``depth.<speed>.<S>``, updates aggregated over that period; same ``U``/``u`` rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from marketfeeder.clock import now_ns
from marketfeeder.connector import ConnectionLimits, Connector, ControlMessage, DecodeError
from marketfeeder.models import (
    BookSnapshot,
    DataType,
    Event,
    Instrument,
    InstrumentTable,
    Level,
    MarketKind,
)
from marketfeeder.sequence import SequencePolicy

from .codec import EXCHANGE, BackpackCodec, lenient_int

if TYPE_CHECKING:
    from marketfeeder.config import ExchangeConfig
    from marketfeeder.transport.http import HttpClient

__all__ = [
    "DEPTH_LIMITS",
    "DEPTH_SPEEDS",
    "KLINE_INTERVALS",
    "LIMITS",
    "SEQUENCE_POLICY",
    "BackpackConnector",
    "market_to_instrument",
    "parse_depth_snapshot",
]

#: Kline intervals Backpack offers (OpenAPI ``KlineInterval``).
KLINE_INTERVALS = frozenset(
    {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1month"}
)
#: ``depth_speed`` option -> stream-name infix ("" is the realtime ``depth.<S>``).
DEPTH_SPEEDS = {"realtime": "", "200ms": "200ms.", "600ms": "600ms.", "1000ms": "1000ms."}
#: ``limit`` values ``GET /api/v1/depth`` accepts.
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)

#: Backpack documents none of these numbers. 50 streams and 5 control messages per second per
#: connection are well inside what public clients run against it (CCXT and BBGO put every stream of a
#: session on one connection) and match Binance's published control-message rate, so a large
#: subscription is spread over several connections and paced rather than risking an undocumented cut.
LIMITS = ConnectionLimits(
    max_streams_per_connection=50,
    max_control_messages_per_second=5.0,
    max_streams_per_control_message=50,
    max_connection_lifetime=None,
    client_ping_interval=None,  # the server pings every 60 s; the transport answers with pongs
    pong_timeout=120.0,
    subscribe_ack=False,
    # No ack: a stream is confirmed by its first frame. Tickers push every second, but a kline or
    # trade stream of a quiet market may be silent for long, so only report silence after a while.
    subscribe_timeout=30.0,
)

#: snapshot_slack=1: a snapshot with ``L >= U - 1`` joins the first buffered diff exactly.
#: snapshot_wait_deltas=3: the REST book lags the stream (CCXT waits ~10 realtime deltas before it
#: asks); the engine also retries while the snapshot is too old, so a few deltas is enough to avoid
#: most wasted requests without delaying quiet books.
SEQUENCE_POLICY = SequencePolicy(
    snapshot_slack=1,
    snapshot_wait_deltas=3,
    snapshot_retry_delay=0.5,
    max_snapshot_attempts=20,
    default_depth_limit=1000,
)

_KINDS = {"SPOT": MarketKind.SPOT, "PERP": MarketKind.PERP}


def market_to_instrument(market: dict[str, Any]) -> Instrument:
    """One ``/api/v1/markets`` entry as an :class:`Instrument` (raises KeyError/TypeError/ValueError)."""
    native = market["symbol"]
    base = market["baseSymbol"]
    quote = market["quoteSymbol"]
    if not isinstance(native, str) or not isinstance(base, str) or not isinstance(quote, str):
        raise TypeError("symbol, baseSymbol and quoteSymbol must be strings")
    market_type = market.get("marketType") or "SPOT"
    kind = _KINDS.get(market_type, MarketKind.OTHER)
    if kind is MarketKind.OTHER:
        # IPERP, DATED, PREDICTION, RFQ: keep the exchange's own name, dashed.
        symbol = native.upper().replace("_", "-")
    else:
        symbol = Instrument.normalized(base, quote, kind)
    filters = market["filters"]
    state = market.get("orderBookState")
    visible = market.get("visible", True)  # older payloads lack the key
    return Instrument(
        exchange=EXCHANGE,
        native=native,
        symbol=symbol,
        base=base.upper(),
        quote=quote.upper(),
        tick_size=float(filters["price"]["tickSize"]),
        step_size=float(filters["quantity"]["stepSize"]),
        status=str(state),
        active=state == "Open" and visible is True,
        kind=kind,
    )


def _levels(raw: Any, *, descending: bool) -> tuple[Level, ...]:
    levels = [(float(price), float(size)) for price, size in raw]
    # Backpack sends both sides ascending (best bid last); sorting makes the order a guarantee
    # whatever the server does, at snapshot (not per-message) cost.
    levels.sort(reverse=descending)
    return tuple(levels)


def parse_depth_snapshot(body: Any, symbol: str, receive_ts: int) -> BookSnapshot:
    """A ``GET /api/v1/depth`` body as a :class:`BookSnapshot`, bids and asks best first."""
    try:
        last_id = lenient_int(body["lastUpdateId"])  # an i64 sent as a string
        timestamp = body.get("timestamp")
        exchange_ts = None if timestamp is None else lenient_int(timestamp) * 1000  # µs
        bids = _levels(body["bids"], descending=True)
        asks = _levels(body["asks"], descending=False)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"backpack: bad depth snapshot for {symbol}: {exc!r}") from None
    snapshot: BookSnapshot = BookSnapshot.fast(EXCHANGE, symbol, exchange_ts, receive_ts, last_id, bids, asks)
    return snapshot


class BackpackConnector(Connector):
    """Backpack Exchange spot and perpetual markets."""

    name: ClassVar[str] = EXCHANGE
    default_ws_url: ClassVar[str] = "wss://ws.backpack.exchange"
    default_rest_url: ClassVar[str] = "https://api.backpack.exchange"
    limits: ClassVar[ConnectionLimits] = LIMITS
    sequence_policy: ClassVar[SequencePolicy] = SEQUENCE_POLICY
    supported_data_types: ClassVar[frozenset[DataType]] = frozenset(
        {
            DataType.TICKER,
            DataType.BOOK_TICKER,
            DataType.ORDERBOOK,
            DataType.TRADES,
            DataType.KLINES,
            DataType.MARK_PRICE,
        }
    )
    streams_in_url: ClassVar[bool] = False

    def __init__(self, config: ExchangeConfig, http: HttpClient) -> None:
        # Before the base class sets ``instruments``, which goes through the property below.
        self._codec = BackpackCodec(InstrumentTable(EXCHANGE))
        super().__init__(config, http)
        # The codec's decode, bound once: the hot path skips a call through the connector.
        self.decode = self._codec.decode  # type: ignore[method-assign]
        speed = str(config.options.get("depth_speed", "realtime"))
        if speed not in DEPTH_SPEEDS:
            raise ValueError(
                f"backpack: options.depth_speed {speed!r} is not one of {', '.join(DEPTH_SPEEDS)}"
            )
        self._depth_infix = DEPTH_SPEEDS[speed]
        bad = [i for i in config.kline_intervals if i not in KLINE_INTERVALS]
        if bad:
            raise ValueError(
                f"backpack: kline interval(s) {', '.join(map(repr, bad))} not offered; "
                f"choose from {', '.join(sorted(KLINE_INTERVALS))}"
            )
        #: ``/api/v1/markets`` entries that could not be read (skipped, not fatal).
        self.skipped_markets = 0

    # --- start-up -----------------------------------------------------------------------------

    async def load_instruments(self) -> InstrumentTable:
        body = await self.http.get_json(f"{self.rest_url}/api/v1/markets")
        if not isinstance(body, list):
            raise DecodeError(f"backpack: /api/v1/markets returned {type(body).__name__}, expected a list")
        table = InstrumentTable(EXCHANGE)
        skipped = 0
        for market in body:
            try:
                table.add(market_to_instrument(market))
            except (KeyError, TypeError, ValueError, AttributeError):
                skipped += 1
        self.skipped_markets = skipped
        self.instruments = table  # the property hands it to the codec
        return table

    @property
    def instruments(self) -> InstrumentTable:
        """The instrument table; replacing it re-points the codec, which normalizes symbols through it."""
        return self._instruments

    @instruments.setter
    def instruments(self, table: InstrumentTable) -> None:
        self._instruments = table
        self._codec.set_table(table)

    def streams_for(self, instrument: Instrument, data_type: DataType) -> list[str]:
        if not isinstance(data_type, DataType):  # a plain string from a hand-built config
            data_type = DataType.parse(str(data_type))
        native = instrument.native
        if data_type is DataType.ORDERBOOK:
            return [f"depth.{self._depth_infix}{native}"]
        if data_type is DataType.BOOK_TICKER:
            return [f"bookTicker.{native}"]
        if data_type is DataType.TRADES:
            return [f"trade.{native}"]
        if data_type is DataType.TICKER:
            return [f"ticker.{native}"]
        if data_type is DataType.KLINES:
            return [f"kline.{interval}.{native}" for interval in self.config.kline_intervals]
        if data_type is DataType.MARK_PRICE:
            # Offered for every market: the documented example is the spot SOL_USDC (margin and
            # lending use mark prices too); funding fields only mean something for perps.
            return [f"markPrice.{native}"]
        raise ValueError(f"backpack: data type {data_type.value!r} is not streamed by this exchange")

    # --- control messages ---------------------------------------------------------------------
    # No "id": Backpack documents none, its error frames carry "id": null (so an id would never come
    # back to match anything), and the documented shape is the one the server is known to accept.

    def subscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        return orjson.dumps({"method": "SUBSCRIBE", "params": list(streams)}).decode()

    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        return orjson.dumps({"method": "UNSUBSCRIBE", "params": list(streams)}).decode()

    # --- per message (hot path) -----------------------------------------------------------------

    def decode(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        # Each instance shadows this with the codec's own bound decode (see __init__).
        return self._codec.decode(frame, receive_ts)

    # --- REST -----------------------------------------------------------------------------------

    async def fetch_snapshot(self, instrument: Instrument, limit: int) -> BookSnapshot:
        # The endpoint takes only these limits: ask for the smallest one that covers the request.
        wire_limit = next((n for n in DEPTH_LIMITS if n >= limit), DEPTH_LIMITS[-1])
        body = await self.http.get_json(
            f"{self.rest_url}/api/v1/depth", {"symbol": instrument.native, "limit": wire_limit}
        )
        return parse_depth_snapshot(body, instrument.symbol, now_ns())

    async def server_time(self) -> int | None:
        text = await self.http.get_text(f"{self.rest_url}/api/v1/time")
        try:
            return int(text.strip()) * 1_000_000  # ms as text/plain
        except ValueError:
            raise DecodeError(f"backpack: /api/v1/time returned {text[:80]!r}, expected milliseconds") from None
