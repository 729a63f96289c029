"""The ``price_alerts`` strategy and the ``PriceAlert`` event it publishes.

A strategy is an object with ``async def run(self, feeder)``. The feeder starts it in its own task
group once the exchanges stream and cancels it on shutdown; an exception stops this strategy alone
and is reported in ``feeder.statistics()["strategy_errors"]``. Here ``run`` only subscribes a sync
callback and sleeps: the work happens in the callback, inline on the feed, so it must stay cheap.

Options (``[strategies.options]``):

``watch``
    ``["binance:BTC-USDT", ...]``; empty or missing watches every symbol of every exchange.
``step_bps``
    Publish an alert when the mid price is this many basis points away from the last alert's price
    (default 10).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import attrs

from marketfeeder import BookTicker, DataType, Event
from marketfeeder.clock import now_ns
from marketfeeder.models import event_class, register_event_type

if TYPE_CHECKING:
    from marketfeeder.runtime import Feeder

__all__ = ["PriceAlert", "PriceAlerts"]

log = logging.getLogger("marketfeeder_price_alerts")


# An event is an attrs class starting with the five common fields. `event_class` makes the frozen
# public class from its mutable twin (and gives it the fast positional constructor `PriceAlert.fast`).
@attrs.define(slots=True, weakref_slot=False)
class _PriceAlertFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None  # alert number, per strategy instance
    price: float  # the mid price that triggered the alert
    reference: float  # the mid price of the previous alert (or the first one seen)
    move_bps: float  # signed move from reference to price


@event_class(_PriceAlertFields)
class PriceAlert(_PriceAlertFields):
    """A mid price moved ``step_bps`` or more since the last alert."""

    data_type: ClassVar[DataType] = DataType.SIGNAL


# Sinks look event classes up by name (e.g. to read stored rows back).
register_event_type(PriceAlert)


def _parse_watch(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"price_alerts: option 'watch' must be a list of 'exchange:SYMBOL', got {value!r}")
    pairs: list[tuple[str, str]] = []
    for item in value:
        exchange, sep, symbol = str(item).partition(":")
        if not sep or not exchange or not symbol:
            raise ValueError(f"price_alerts: watch entry {item!r} is not 'exchange:SYMBOL' (e.g. binance:BTC-USDT)")
        pairs.append((exchange, symbol))
    return pairs


class PriceAlerts:
    """Publishes a :class:`PriceAlert` each time a watched mid price moves ``step_bps``."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - {"watch", "step_bps"}
        if unknown:
            raise ValueError(f"price_alerts: unknown option(s) {', '.join(sorted(unknown))}; known: step_bps, watch")
        self.watch = _parse_watch(options.get("watch"))
        self.step_bps = float(options.get("step_bps", 10.0))
        if not self.step_bps > 0:
            raise ValueError(f"price_alerts: step_bps must be positive, got {self.step_bps}")
        self.reference: dict[tuple[str, str], float] = {}
        self.alerts = 0
        self._feeder: Feeder | None = None

    async def run(self, feeder: Feeder) -> None:
        self._feeder = feeder
        targets: list[tuple[str | None, str | None]] = [*self.watch] or [(None, None)]  # None: everything
        subscriptions = [feeder.subscribe(ex, sym, DataType.BOOK_TICKER, self.on_quote) for ex, sym in targets]
        try:
            await anyio.sleep_forever()
        finally:
            for subscription in subscriptions:
                subscription.close()

    def on_quote(self, event: Event) -> None:
        alert = self.check(event)
        if alert is not None and self._feeder is not None:
            # Published events flow to callbacks, streams and sinks like market data.
            self._feeder.publish(alert)
            log.info("%s %s mid %.6g moved %+.1f bps from %.6g", alert.exchange, alert.symbol, alert.price,
                     alert.move_bps, alert.reference)

    def check(self, event: Event) -> PriceAlert | None:
        """The alert ``event`` triggers, if any (pure logic: what the tests exercise)."""
        if not isinstance(event, BookTicker) or not event.bid > 0 or not event.ask > 0:
            return None
        key = (event.exchange, event.symbol)
        mid = (event.bid + event.ask) / 2
        reference = self.reference.get(key)
        if reference is None:
            self.reference[key] = mid
            return None
        move_bps = (mid - reference) / reference * 1e4
        if abs(move_bps) < self.step_bps:
            return None
        self.reference[key] = mid
        self.alerts += 1
        return PriceAlert(event.exchange, event.symbol, event.exchange_ts, now_ns(), self.alerts, mid, reference,
                          move_bps)
