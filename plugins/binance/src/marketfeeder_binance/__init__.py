"""Binance Spot for marketfeeder: the connector, its wire codec and a loopback venue simulator."""

from __future__ import annotations

from .codec import BinanceCodec
from .connector import BinanceConnector
from .venue import BinanceVenue

__version__ = "0.1.0"

__all__ = ["BinanceCodec", "BinanceConnector", "BinanceVenue"]
