"""An example marketfeeder validator plugin: unusually large trades."""

from .check import WhaleTrade

__all__ = ["WhaleTrade"]
