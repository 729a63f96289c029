"""The strategy contract.

A strategy is a consumer that reacts to events and may publish events of its own
(``feeder.publish(event)``), which then flow to callbacks, streams and sinks like any other.
The feeder starts ``run(feeder)`` in its own task group once connectors are running and cancels it
on shutdown; a strategy that raises is reported and stopped, never the feeder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .runtime.feeder import Feeder

__all__ = ["Strategy", "StrategyFactory"]


@runtime_checkable
class Strategy(Protocol):
    async def run(self, feeder: Feeder) -> None:
        """Consume the feeder (``subscribe``, ``stream``, ``book``) until cancelled."""


#: Called with the strategy's options dict; returns a Strategy.
StrategyFactory = Callable[[Mapping[str, Any]], Strategy]
