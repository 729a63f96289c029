"""An example marketfeeder strategy plugin: price-move alerts."""

from .strategy import PriceAlert, PriceAlerts

__all__ = ["PriceAlert", "PriceAlerts"]
