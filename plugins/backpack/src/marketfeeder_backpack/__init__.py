"""Backpack Exchange for marketfeeder: connector, wire codec and loopback venue simulator."""

from __future__ import annotations

from .codec import BackpackCodec
from .connector import BackpackConnector
from .venue import BackpackVenue

__version__ = "0.1.0"

__all__ = ["BackpackCodec", "BackpackConnector", "BackpackVenue"]
