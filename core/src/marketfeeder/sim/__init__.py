"""Loopback exchange simulator: a seeded market served through each venue plugin's wire codec.

:class:`MarketEngine` produces the venue-neutral records of :mod:`marketfeeder.sim.model`;
:class:`SimServer` serves them on loopback through :class:`~marketfeeder.sim.venue.Venue` plugins,
with the faults of a :class:`FaultPlan`. The server is imported lazily (it pulls in the transport).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marketfeeder.sim.engine import (
    EngineBook,
    Grid,
    MarketEngine,
    VenueView,
    default_instruments,
    instruments_for,
)
from marketfeeder.sim.faults import FaultCounters, FaultPlan

if TYPE_CHECKING:
    from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

__all__ = [
    "EngineBook",
    "FaultCounters",
    "FaultPlan",
    "Grid",
    "MarketEngine",
    "SimServer",
    "VenueView",
    "default_instruments",
    "instruments_for",
    "sim_config_for",
    "venues_from_plugins",
]


def __getattr__(name: str) -> Any:
    if name in ("SimServer", "sim_config_for", "venues_from_plugins"):
        from marketfeeder.sim import server

        return getattr(server, name)
    raise AttributeError(f"module 'marketfeeder.sim' has no attribute {name!r}")
