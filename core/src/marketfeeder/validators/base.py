"""The validator contract.

A validator is a cheap, synchronous check run inline on every event of the types it declares. It
returns ``None`` when the event passes (the fast, common case) or a :class:`Verdict`. It never raises
on bad data: malformed values are exactly what it exists to report. The pipeline applies the
configured policy (annotate, quarantine, drop) and counts failures per ``exchange:SYMBOL`` and check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ..models import Event, Instrument

__all__ = ["Validator", "ValidatorFactory", "ValidationContext", "Verdict", "BookView"]


@attrs.frozen(slots=True)
class Verdict:
    check: str
    message: str


@runtime_checkable
class BookView(Protocol):
    """Read-only view of a local order book, as validators see it."""

    def best_bid(self) -> tuple[float, float] | None: ...

    def best_ask(self) -> tuple[float, float] | None: ...


class ValidationContext(Protocol):
    """What a validator may consult besides the event."""

    def instrument(self, exchange: str, symbol: str) -> Instrument | None: ...

    def now_ns(self) -> int: ...


@runtime_checkable
class Validator(Protocol):
    #: The check's registered name, used in counters and ValidationFailure events.
    name: str
    #: Event classes this check looks at; others never reach it.
    event_types: tuple[type[Event], ...]

    def check(self, event: Event, context: ValidationContext) -> Verdict | None: ...


#: Called with the check's options dict; returns a Validator.
ValidatorFactory = Callable[[Mapping[str, Any]], Validator]
