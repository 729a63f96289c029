"""pluggy hook implementations: the ``binance`` connector and venue."""

from __future__ import annotations

from collections.abc import Callable

from marketfeeder import hookimpl
from marketfeeder.connector import Connector
from marketfeeder.sim.venue import Venue

from .connector import BinanceConnector
from .venue import BinanceVenue


@hookimpl
def marketfeeder_register_connectors(register: Callable[[str, type[Connector]], None]) -> None:
    register("binance", BinanceConnector)


@hookimpl
def marketfeeder_register_venues(register: Callable[[str, type[Venue]], None]) -> None:
    register("binance", BinanceVenue)
