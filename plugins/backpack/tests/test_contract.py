"""The shared connector contract suite, run against the Backpack venue on the loopback simulator."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

import pytest

from marketfeeder.config import ExchangeConfig
from marketfeeder.connector import Connector
from marketfeeder.models import DataType
from marketfeeder.testing.contract import ConnectorContract
from marketfeeder_backpack.connector import BackpackConnector
from marketfeeder_backpack.venue import BackpackVenue

HAVE_SIM = importlib.util.find_spec("marketfeeder.sim.server") is not None


@pytest.mark.skipif(not HAVE_SIM, reason="needs marketfeeder.sim.server")
class TestBackpackConnector(ConnectorContract):
    @pytest.fixture
    def connector_class(self) -> type[Connector]:
        return BackpackConnector

    @pytest.fixture
    async def connector_config(self, anyio_backend: str) -> AsyncIterator[ExchangeConfig]:
        from marketfeeder.sim.server import SimServer

        async with SimServer(
            {"backpack": BackpackVenue}, seed=5, rate=400, venue_options={"backpack": {"string_numbers": "mixed"}}
        ) as sim:
            urls = sim.endpoints()["backpack"]
            yield ExchangeConfig(
                ws_url=urls["ws_url"],
                rest_url=urls["rest_url"],
                symbols=["SOL-USDC-PERP", "SOL-USDC"],
                data_types=[DataType.parse(t) for t in ("orderbook", "trades", "book_ticker", "ticker", "klines", "mark_price")],
                kline_intervals=["1s", "1m"],
            )
