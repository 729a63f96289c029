"""What the simulated market produces for one venue, before any wire encoding.

The market engine (:mod:`marketfeeder.sim.engine`) keeps one underlying price per asset and, per
venue, its own books, update-id sequences, trade ids, klines and tickers. A venue plugin encodes these
records into its exchange's exact wire format. Prices and sizes are already formatted as decimal
strings on the instrument's tick and step grids, exactly as an exchange would print them.
"""

from __future__ import annotations

import attrs

from ..models import MarketKind

__all__ = [
    "SimBookTicker",
    "SimDepth",
    "SimEvent",
    "SimInstrument",
    "SimKline",
    "SimLevel",
    "SimMarkPrice",
    "SimSnapshot",
    "SimTicker",
    "SimTrade",
]

#: (price, size) as decimal strings; size "0" (formatted on the step grid) removes a level in a diff.
SimLevel = tuple[str, str]


@attrs.frozen
class SimInstrument:
    symbol: str  # normalized, "BTC-USDT"
    base: str
    quote: str
    tick_size: str  # decimal string, e.g. "0.01"
    step_size: str  # decimal string, e.g. "0.00001"
    kind: MarketKind = MarketKind.SPOT
    #: False for a listed market that is not trading (venues report it with their own status word).
    active: bool = True


@attrs.define(slots=True)
class SimDepth:
    symbol: str
    first_id: int  # U
    last_id: int  # u
    bids: list[SimLevel]
    asks: list[SimLevel]
    time_ns: int  # event time
    engine_ns: int  # matching-engine time of the last update


@attrs.define(slots=True)
class SimTrade:
    symbol: str
    trade_id: int
    price: str
    size: str
    buyer_is_maker: bool
    time_ns: int
    engine_ns: int
    buy_order_id: int
    sell_order_id: int


@attrs.define(slots=True)
class SimBookTicker:
    symbol: str
    update_id: int  # same sequence as the depth update ids
    bid: str
    bid_size: str
    ask: str
    ask_size: str
    time_ns: int
    engine_ns: int


@attrs.define(slots=True)
class SimTicker:
    """Rolling 24 h statistics (the simulator's window may be shorter; values are consistent with trades)."""

    symbol: str
    time_ns: int
    open_time_ns: int
    close_time_ns: int
    open: str
    high: str
    low: str
    last: str
    last_size: str
    volume: str
    quote_volume: str
    trade_count: int
    first_trade_id: int
    last_trade_id: int
    bid: str
    bid_size: str
    ask: str
    ask_size: str
    price_change: str
    price_change_pct: str
    vwap: str
    prev_close: str


@attrs.define(slots=True)
class SimKline:
    symbol: str
    interval: str  # "1m", "1s", ...
    open_ns: int
    close_ns: int  # last nanosecond of the interval
    open: str | None  # None when no trade happened in the interval
    high: str | None
    low: str | None
    close: str | None
    volume: str
    quote_volume: str
    trade_count: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    first_trade_id: int  # -1 when no trade
    last_trade_id: int
    closed: bool
    time_ns: int  # event time


@attrs.define(slots=True)
class SimMarkPrice:
    symbol: str
    mark: str
    index: str
    funding_rate: str
    next_funding_ns: int
    time_ns: int
    engine_ns: int


@attrs.define(slots=True)
class SimSnapshot:
    symbol: str
    last_id: int
    bids: list[SimLevel]  # best first
    asks: list[SimLevel]  # best first
    time_ns: int


SimEvent = SimDepth | SimTrade | SimBookTicker | SimTicker | SimKline | SimMarkPrice
