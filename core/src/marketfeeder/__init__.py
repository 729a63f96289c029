"""marketfeeder: a multi-exchange crypto market-data feeder built as a plugin framework."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Config, ConfigError, ExchangeConfig, SinkConfig, load_config
from .hookspecs import hookimpl
from .models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    BookTicker,
    BusCheckpoint,
    Connection,
    ConnectionStatus,
    DataType,
    Event,
    Gap,
    Instrument,
    InstrumentTable,
    Kline,
    MarkPrice,
    Side,
    Ticker,
    Trade,
    ValidationFailure,
)

if TYPE_CHECKING:
    from .runtime.feeder import Feeder

__version__ = "0.1.0"

__all__ = [
    "BookDelta",
    "BookSnapshot",
    "BookState",
    "BookStatus",
    "BookTicker",
    "BusCheckpoint",
    "Config",
    "ConfigError",
    "Connection",
    "ConnectionStatus",
    "DataType",
    "Event",
    "ExchangeConfig",
    "Feeder",
    "Gap",
    "Instrument",
    "InstrumentTable",
    "Kline",
    "MarkPrice",
    "SinkConfig",
    "Side",
    "Ticker",
    "Trade",
    "ValidationFailure",
    "hookimpl",
    "load_config",
]


def __getattr__(name: str) -> Any:
    # The runtime pulls in transport and sinks; keep `import marketfeeder` light for plugins.
    if name == "Feeder":
        from .runtime.feeder import Feeder

        return Feeder
    raise AttributeError(f"module 'marketfeeder' has no attribute {name!r}")
