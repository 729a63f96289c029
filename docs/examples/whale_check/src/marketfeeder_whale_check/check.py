"""The ``whale_trade`` check: a trade whose notional (price x size) is above ``max_notional``.

A validator is cheap, synchronous and runs inline on every event of the classes in ``event_types``.
``check`` returns ``None`` when the event passes (keep that path short: no allocation) or a
``Verdict`` naming the check and what is wrong. It never raises on bad data: odd values are what it
exists to report. The pipeline then applies the configured policy (``annotate``: deliver and emit a
``ValidationFailure``; ``quarantine``; ``drop``) and counts the failure per ``exchange:SYMBOL``.

Options (``[validation.options.whale_trade]``):

``max_notional``
    Limit in the quote currency (default 1,000,000).
``per_quote``
    Limits for particular quote currencies, e.g. ``{BTC = 10.0}``; others use ``max_notional``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from marketfeeder import Event, Trade
from marketfeeder.validators.base import ValidationContext, Verdict

__all__ = ["WhaleTrade"]


class WhaleTrade:
    """Implements :class:`marketfeeder.validators.base.Validator`."""

    name = "whale_trade"
    event_types = (Trade,)

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - {"max_notional", "per_quote"}
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; known: max_notional, per_quote")
        self.max_notional = _limit("max_notional", options.get("max_notional", 1_000_000.0))
        per_quote = options.get("per_quote", {})
        if not isinstance(per_quote, Mapping):
            raise ValueError(f"per_quote must be a table of quote currency = limit, got {per_quote!r}")
        self.per_quote = {str(q).upper(): _limit(f"per_quote.{q}", v) for q, v in per_quote.items()}

    def check(self, event: Event, context: ValidationContext) -> Verdict | None:
        assert isinstance(event, Trade)  # event_types guarantees it
        notional = event.price * event.size
        if notional <= self.max_notional and not self.per_quote:
            return None  # the common case, decided without a lookup
        instrument = context.instrument(event.exchange, event.symbol)
        quote = instrument.quote if instrument is not None else event.symbol.split("-")[-1]
        limit = self.per_quote.get(quote, self.max_notional)
        if notional <= limit:
            return None
        return Verdict(self.name, f"trade notional {notional:,.2f} {quote} is above {limit:,.2f}")


def _limit(key: str, value: Any) -> float:
    try:
        limit = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None
    if not (limit > 0 and math.isfinite(limit)):
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return limit
