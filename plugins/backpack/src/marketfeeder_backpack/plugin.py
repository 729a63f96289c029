"""Entry point of the ``marketfeeder`` plugin group: registers the Backpack connector and venue."""

from __future__ import annotations

from collections.abc import Callable

from marketfeeder import hookimpl
from marketfeeder.connector import Connector
from marketfeeder.sim.venue import Venue

from .connector import BackpackConnector
from .venue import BackpackVenue


@hookimpl
def marketfeeder_register_connectors(register: Callable[[str, type[Connector]], None]) -> None:
    register("backpack", BackpackConnector)


@hookimpl
def marketfeeder_register_venues(register: Callable[[str, type[Venue]], None]) -> None:
    register("backpack", BackpackVenue)
