"""The toy connector passes the connector contract suite (proving the suite runs end to end)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from toy_exchange import ToyConnector, ToyExchange

from marketfeeder.config import ExchangeConfig
from marketfeeder.connector import Connector
from marketfeeder.models import DataType
from marketfeeder.testing.contract import ConnectorContract


class TestToyConnector(ConnectorContract):
    @pytest.fixture
    def connector_class(self) -> type[Connector]:
        return ToyConnector

    @pytest.fixture
    async def connector_config(self, anyio_backend: str) -> AsyncIterator[ExchangeConfig]:
        async with ToyExchange() as venue:
            yield ExchangeConfig(
                ws_url=venue.ws_url,
                rest_url=venue.http_url,
                symbols=["BTC-USD", "ETH-USD"],
                data_types=[DataType.TRADES, DataType.ORDERBOOK, DataType.TICKER],
            )
