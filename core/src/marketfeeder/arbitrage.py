"""Cross-exchange arbitrage detection: buy at one exchange's ask, sell at another's bid.

The detector walks both books to a target notional, nets out taker fees and quote conversion, and
emits one :class:`ArbitrageOpportunity` when an opportunity opens (net edge at or above
``open_bps``), updates only when it changes materially, and one when it closes (edge below
``close_bps``, a book no longer LIVE, or a quote too old or too far apart in time). It never uses a
book that is not LIVE.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .models import BookStatus, DataType, Event, Level, _event, register_event_type
from .syncview import QuoteEquivalence

if TYPE_CHECKING:
    from .runtime.feeder import Feeder

__all__ = [
    "ArbitrageDetector",
    "ArbitrageOpportunity",
    "ArbitrageStrategy",
    "Fill",
    "LegBook",
    "walk_books",
]


@attrs.define(slots=True, weakref_slot=False)
class _ArbitrageFields(Event):
    exchange: str  # "arbitrage"
    symbol: str  # the pair's asset key, e.g. "BTC-USDT" (after quote equivalence)
    exchange_ts: int | None
    receive_ts: int
    seq: int | None  # opportunity id: the open, its updates and its close share it
    status: str  # "open", "update" or "close"
    buy_exchange: str
    buy_symbol: str
    sell_exchange: str
    sell_symbol: str
    buy_price: float  # best ask where we buy (canonical quote currency)
    sell_price: float  # best bid where we sell
    buy_vwap: float
    sell_vwap: float
    size: float  # executable base quantity within the target notional
    notional: float  # buy-side notional of that size
    gross_bps: float
    net_bps: float
    buy_age_ms: float
    sell_age_ms: float
    skew_ms: float
    buy_book_state: str
    sell_book_state: str
    reason: str = ""


@_event(_ArbitrageFields)
class ArbitrageOpportunity(_ArbitrageFields):
    """A detected cross-exchange price difference, net of fees, with its executable size."""

    data_type: ClassVar[DataType] = DataType.SIGNAL


register_event_type(ArbitrageOpportunity)


#: Relative price difference below which two prices count as equal (float rounding, not an edge).
_DUST = 1e-12


@attrs.frozen
class Fill:
    size: float
    buy_vwap: float
    sell_vwap: float
    notional: float

    @property
    def gross_bps(self) -> float:
        return (self.sell_vwap - self.buy_vwap) / self.buy_vwap * 1e4 if self.size > 0 else 0.0


def walk_books(
    asks: Sequence[Level],
    bids: Sequence[Level],
    *,
    buy_fee_bps: float,
    sell_fee_bps: float,
    target_notional: float,
    buy_rate: float = 1.0,
    sell_rate: float = 1.0,
) -> Fill:
    """Take asks (best first) against bids (best first) while each unit still profits after fees.

    Prices are multiplied by the rates into the canonical quote currency. Stops at the target
    notional (buy side) or when the marginal sell price net of fee no longer beats the marginal buy
    price plus fee.
    """
    buy_fee = buy_fee_bps / 1e4
    # A cross must beat float dust: converting a quote and back (x / rate * rate) can leave a
    # zero-spread market "crossed" by an ulp, which is no opportunity.
    buy_fee = (1 + buy_fee) * (1 + _DUST) - 1
    sell_fee = sell_fee_bps / 1e4
    i = j = 0
    ask_left = asks[0][1] if asks else 0.0
    bid_left = bids[0][1] if bids else 0.0
    size = cost = proceeds = 0.0
    while i < len(asks) and j < len(bids) and cost < target_notional:
        ask_price = asks[i][0] * buy_rate
        bid_price = bids[j][0] * sell_rate
        if bid_price * (1 - sell_fee) <= ask_price * (1 + buy_fee):
            break
        quantity = min(ask_left, bid_left, (target_notional - cost) / ask_price)
        if quantity <= 0:
            break
        size += quantity
        cost += quantity * ask_price
        proceeds += quantity * bid_price
        ask_left -= quantity
        bid_left -= quantity
        if ask_left <= 1e-12:
            i += 1
            ask_left = asks[i][1] if i < len(asks) else 0.0
        if bid_left <= 1e-12:
            j += 1
            bid_left = bids[j][1] if j < len(bids) else 0.0
    if size <= 0:
        return Fill(0.0, 0.0, 0.0, 0.0)
    return Fill(size=size, buy_vwap=cost / size, sell_vwap=proceeds / size, notional=cost)


@attrs.frozen
class LegBook:
    """What the detector needs of one leg: its book top, state and timing."""

    exchange: str
    symbol: str
    quote_ccy: str
    state: BookStatus
    bids: Sequence[Level]  # best first
    asks: Sequence[Level]  # best first
    time_ns: int  # corrected exchange time of the book's last update (or receive time)
    receive_ts: int


@attrs.define
class _Open:
    seq: int
    last: ArbitrageOpportunity


class ArbitrageDetector:
    """Stateful detector for one asset across several exchanges (every ordered pair of legs)."""

    def __init__(
        self,
        asset: str,
        *,
        fees_bps: Mapping[str, float],
        target_notional: float = 10_000.0,
        open_bps: float = 5.0,
        close_bps: float = 0.0,
        max_age_ms: float = 1_000.0,
        max_skew_ms: float = 100.0,
        equivalence: QuoteEquivalence | None = None,
        update_step_bps: float = 1.0,
        ids: Callable[[], int] | None = None,
    ) -> None:
        if close_bps > open_bps:
            raise ValueError(f"close_bps ({close_bps}) must not exceed open_bps ({open_bps})")
        self.asset = asset
        self.fees_bps = dict(fees_bps)
        self.target_notional = target_notional
        self.open_bps = open_bps
        self.close_bps = close_bps
        self.max_age_ms = max_age_ms
        self.max_skew_ms = max_skew_ms
        self.equivalence = equivalence or QuoteEquivalence()
        self.update_step_bps = update_step_bps
        self._ids = ids or itertools.count(1).__next__
        self._open: dict[tuple[str, str], _Open] = {}
        self.opened = 0
        self.closed = 0

    def evaluate(self, legs: Sequence[LegBook], now_ns: int) -> list[ArbitrageOpportunity]:
        events: list[ArbitrageOpportunity] = []
        by_exchange = {leg.exchange: leg for leg in legs}
        for buy in legs:
            for sell in legs:
                if buy.exchange == sell.exchange:
                    continue
                event = self._pair(buy, sell, now_ns)
                if event is not None:
                    events.append(event)
        # Pairs that were open but whose legs vanished close too.
        for key in list(self._open):
            if key[0] not in by_exchange or key[1] not in by_exchange:
                events.append(self._close(key, now_ns, "leg no longer available"))
        return events

    def _pair(self, buy: LegBook, sell: LegBook, now_ns: int) -> ArbitrageOpportunity | None:
        key = (buy.exchange, sell.exchange)
        is_open = key in self._open
        problem = self._unusable(buy, sell, now_ns)
        if problem:
            return self._close(key, now_ns, problem) if is_open else None
        buy_rate = self.equivalence.rate(buy.quote_ccy)
        sell_rate = self.equivalence.rate(sell.quote_ccy)
        fill = walk_books(
            buy.asks,
            sell.bids,
            buy_fee_bps=self.fees_bps.get(buy.exchange, 0.0),
            sell_fee_bps=self.fees_bps.get(sell.exchange, 0.0),
            target_notional=self.target_notional,
            buy_rate=buy_rate,
            sell_rate=sell_rate,
        )
        best_ask = buy.asks[0][0] * buy_rate
        best_bid = sell.bids[0][0] * sell_rate
        fees = self.fees_bps.get(buy.exchange, 0.0) + self.fees_bps.get(sell.exchange, 0.0)
        if fill.size > 0:
            gross = fill.gross_bps
        else:
            gross = (best_bid - best_ask) / best_ask * 1e4
        net = gross - fees
        if not is_open:
            if net < self.open_bps or fill.size <= 0:
                return None
            seq = self._ids()
            event = self._event("open", seq, buy, sell, fill, best_ask, best_bid, gross, net, now_ns, "")
            self._open[key] = _Open(seq, event)
            self.opened += 1
            return event
        current = self._open[key]
        if net < self.close_bps or fill.size <= 0:
            reason = f"edge {net:.2f} bps below close threshold {self.close_bps}"
            closing = self._event("close", current.seq, buy, sell, fill, best_ask, best_bid, gross, net, now_ns, reason)
            return self._close(key, now_ns, reason, closing)
        if abs(net - current.last.net_bps) < self.update_step_bps:
            return None
        event = self._event("update", current.seq, buy, sell, fill, best_ask, best_bid, gross, net, now_ns, "")
        current.last = event
        return event

    def _unusable(self, buy: LegBook, sell: LegBook, now_ns: int) -> str:
        for leg in (buy, sell):
            if leg.state is not BookStatus.LIVE:
                return f"{leg.exchange} {leg.symbol} book is {leg.state.value}, not live"
            if not leg.bids or not leg.asks:
                return f"{leg.exchange} {leg.symbol} book is empty"
            age_ms = (now_ns - leg.time_ns) / 1e6
            if age_ms > self.max_age_ms:
                return f"{leg.exchange} quote is {age_ms:.0f} ms old (max {self.max_age_ms})"
        skew_ms = abs(buy.time_ns - sell.time_ns) / 1e6
        if skew_ms > self.max_skew_ms:
            return f"quotes are {skew_ms:.0f} ms apart (max {self.max_skew_ms})"
        return ""

    def _close(
        self, key: tuple[str, str], now_ns: int, reason: str, closing: ArbitrageOpportunity | None = None
    ) -> ArbitrageOpportunity:
        """The close event: the closing evaluation's figures when there is one, else the last known ones
        (a leg that went stale or stopped being LIVE has no fresh figures to give)."""
        current = self._open.pop(key)
        self.closed += 1
        if closing is not None:
            return closing
        return attrs.evolve(current.last, status="close", receive_ts=now_ns, reason=reason)

    def _event(
        self,
        status: str,
        seq: int,
        buy: LegBook,
        sell: LegBook,
        fill: Fill,
        best_ask: float,
        best_bid: float,
        gross: float,
        net: float,
        now_ns: int,
        reason: str,
    ) -> ArbitrageOpportunity:
        return ArbitrageOpportunity(
            exchange="arbitrage",
            symbol=self.asset,
            # market time of the newest quote it rests on (corrected exchange time)
            exchange_ts=max(buy.time_ns, sell.time_ns),
            receive_ts=now_ns,
            seq=seq,
            status=status,
            buy_exchange=buy.exchange,
            buy_symbol=buy.symbol,
            sell_exchange=sell.exchange,
            sell_symbol=sell.symbol,
            buy_price=best_ask,
            sell_price=best_bid,
            buy_vwap=fill.buy_vwap,
            sell_vwap=fill.sell_vwap,
            size=fill.size,
            notional=fill.notional,
            gross_bps=gross,
            net_bps=net,
            buy_age_ms=(now_ns - buy.time_ns) / 1e6,
            sell_age_ms=(now_ns - sell.time_ns) / 1e6,
            skew_ms=abs(buy.time_ns - sell.time_ns) / 1e6,
            buy_book_state=buy.state.value,
            sell_book_state=sell.state.value,
            reason=reason,
        )


class ArbitrageStrategy:
    """The ``arbitrage`` strategy: watches configured pairs and publishes ArbitrageOpportunity events.

    Options::

        pairs = [{asset = "BTC-USDT", legs = {binance = "BTC-USDT", backpack = "BTC-USDC"}}]
        fees_bps = {binance = 10.0, backpack = 10.0}      # taker fees
        quote_equivalence = {USDC = "USDT"}               # explicit; nothing is implied
        conversion_rates = {USDC = 1.0}                   # optional fixed rates
        target_notional = 10000.0
        open_bps = 5.0                                    # open when net edge >= this
        close_bps = 0.0                                   # close when net edge < this (hysteresis)
        max_age_ms = 1000.0                               # older quotes are never paired
        max_skew_ms = 100.0                               # default: the feeder's sync_tolerance_ms
        depth = 20                                        # levels walked per side
        update_step_bps = 1.0                             # re-announce an open one when net moves this much
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        pairs = options.get("pairs")
        if not isinstance(pairs, list) or not pairs:
            raise ValueError("arbitrage: option 'pairs' must be a non-empty list of {asset, legs} tables")
        self.pairs: list[tuple[str, dict[str, str]]] = []
        for i, pair in enumerate(pairs):
            legs = pair.get("legs") if isinstance(pair, Mapping) else None
            if not isinstance(legs, Mapping) or len(legs) < 2:
                raise ValueError(f"arbitrage: pairs[{i}].legs must map at least two exchanges to symbols")
            self.pairs.append((str(pair.get("asset") or next(iter(legs.values()))), {str(k): str(v) for k, v in legs.items()}))
        self.options = dict(options)
        self.equivalence = QuoteEquivalence(
            canonical=dict(options.get("quote_equivalence", {})), rates=dict(options.get("conversion_rates", {}))
        )
        self.depth = int(options.get("depth", 20))
        self.detectors: dict[str, ArbitrageDetector] = {}

    def make_detector(self, asset: str, default_skew_ms: float) -> ArbitrageDetector:
        opts = self.options
        return ArbitrageDetector(
            asset,
            fees_bps=dict(opts.get("fees_bps", {})),
            target_notional=float(opts.get("target_notional", 10_000.0)),
            open_bps=float(opts.get("open_bps", 5.0)),
            close_bps=float(opts.get("close_bps", 0.0)),
            max_age_ms=float(opts.get("max_age_ms", 1_000.0)),
            max_skew_ms=float(opts.get("max_skew_ms", default_skew_ms)),
            equivalence=self.equivalence,
            update_step_bps=float(opts.get("update_step_bps", 1.0)),
        )

    def check_legs(self, config: Any) -> None:
        """Every leg must be a configured, enabled exchange streaming that symbol's order book."""
        for i, (_, legs) in enumerate(self.pairs):
            for exchange, symbol in legs.items():
                where = f"arbitrage: pairs[{i}].legs.{exchange}"
                section = config.exchanges.get(exchange)
                if section is None or not section.enabled:
                    raise ValueError(f"{where}: exchange {exchange!r} is not enabled in the feeder's config")
                if symbol not in section.symbols:
                    raise ValueError(f"{where}: {symbol} is not among exchanges.{exchange}.symbols")
                if DataType.ORDERBOOK not in section.data_types:
                    raise ValueError(f"{where}: needs 'orderbook' in exchanges.{exchange}.data_types")

    async def run(self, feeder: Feeder) -> None:
        from .clock import now_ns

        self.check_legs(feeder.config)
        tolerance = float(feeder.config.sync_tolerance_ms)
        for asset, _ in self.pairs:
            self.detectors[asset] = self.make_detector(asset, tolerance)
        last_time: dict[tuple[str, str], int] = {}
        leg_to_asset = {(ex, sym): asset for asset, legs in self.pairs for ex, sym in legs.items()}

        def on_event(event: Event) -> None:
            key = (event.exchange, event.symbol)
            asset = leg_to_asset.get(key)
            if asset is None:
                return
            ts = event.exchange_ts if event.exchange_ts is not None else event.receive_ts
            last_time[key] = feeder.corrected_time(event.exchange, ts) if event.exchange_ts is not None else ts
            self.evaluate(feeder, asset, last_time, now_ns())

        subscriptions = [
            feeder.subscribe(exchange, symbol, data_type, on_event)
            for _, legs in self.pairs
            for exchange, symbol in legs.items()
            for data_type in (DataType.ORDERBOOK, DataType.STATUS)
        ]
        try:
            import anyio

            await anyio.sleep_forever()
        finally:
            for subscription in subscriptions:
                subscription.close()

    def evaluate(self, feeder: Feeder, asset: str, last_time: Mapping[tuple[str, str], int], now: int) -> None:
        legs_cfg = dict(next(legs for a, legs in self.pairs if a == asset))
        legs: list[LegBook] = []
        for exchange, symbol in legs_cfg.items():
            try:
                view = feeder.book(exchange, symbol)
            except KeyError:  # no book (yet) for this leg: it simply takes no part
                continue
            bids, asks = view.top(self.depth)
            legs.append(
                LegBook(
                    exchange=exchange,
                    symbol=symbol,
                    quote_ccy=symbol.split("-")[1] if "-" in symbol else "",
                    state=view.state,
                    bids=bids,
                    asks=asks,
                    time_ns=last_time.get((exchange, symbol), 0),
                    receive_ts=now,
                )
            )
        for event in self.detectors[asset].evaluate(legs, now):
            feeder.publish(event)
