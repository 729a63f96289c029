"""The shared connector contract suite, run against the Binance venue on the loopback simulator."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

import pytest

from marketfeeder.config import ExchangeConfig
from marketfeeder.connector import Connector
from marketfeeder.models import DataType
from marketfeeder.testing.contract import ConnectorContract
from marketfeeder_binance.connector import BinanceConnector
from marketfeeder_binance.venue import BinanceVenue

HAVE_SIM = importlib.util.find_spec("marketfeeder.sim.server") is not None


@pytest.mark.skipif(not HAVE_SIM, reason="needs marketfeeder.sim.server")
class TestBinanceConnector(ConnectorContract):
    @pytest.fixture
    def connector_class(self) -> type[Connector]:
        return BinanceConnector

    @pytest.fixture
    async def connector_config(self, anyio_backend: str) -> AsyncIterator[ExchangeConfig]:
        from marketfeeder.sim.server import SimServer

        async with SimServer({"binance": BinanceVenue}, seed=3, rate=400) as sim:
            urls = sim.endpoints()["binance"]
            yield ExchangeConfig(
                ws_url=urls["ws_url"],
                rest_url=urls["rest_url"],
                symbols=["BTC-USDT", "ETH-USDT"],
                data_types=[DataType.parse(t) for t in ("orderbook", "trades", "book_ticker", "ticker", "klines")],
                kline_intervals=["1s", "1m"],
            )


@pytest.mark.skipif(not HAVE_SIM, reason="needs marketfeeder.sim.server")
class TestBinanceConnectorMicroseconds(TestBinanceConnector):
    """The same contract on ``timeUnit=MICROSECOND`` connections with aggregate trades."""

    @pytest.fixture
    async def connector_config(self, anyio_backend: str) -> AsyncIterator[ExchangeConfig]:
        from marketfeeder.sim.server import SimServer

        async with SimServer({"binance": BinanceVenue}, seed=4, rate=400) as sim:
            urls = sim.endpoints()["binance"]
            yield ExchangeConfig(
                ws_url=urls["ws_url"],
                rest_url=urls["rest_url"],
                symbols=["SOL-USDT"],
                data_types=[DataType.parse(t) for t in ("orderbook", "trades", "book_ticker")],
                options={"time_unit": "microsecond", "trades": "aggTrade", "depth_speed": "1000ms"},
            )
