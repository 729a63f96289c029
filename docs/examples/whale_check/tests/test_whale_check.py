"""The whale_trade check: discovery, its verdicts, and its failures coming out of a running feeder."""

from __future__ import annotations

import importlib.util

import anyio
import pytest
from marketfeeder_whale_check import WhaleTrade

from marketfeeder import DataType, Instrument, Side, Trade, ValidationFailure
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder.validators.base import Validator
from marketfeeder.validators.engine import StaticContext

BTC_USDT = Instrument("binance", "BTCUSDT", "BTC-USDT", "BTC", "USDT", 0.01, 0.00001, "TRADING", True)
ETH_BTC = Instrument("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", 0.00001, 0.0001, "TRADING", True)
CONTEXT = StaticContext({("binance", i.symbol): i for i in (BTC_USDT, ETH_BTC)})


def trade(symbol: str, price: float, size: float) -> Trade:
    return Trade.fast("binance", symbol, 1, 2, 7, price, size, Side.BUY, None)


def test_entry_point_registers_the_check() -> None:
    registry = collect(get_plugin_manager(), "marketfeeder_register_validators", "validator")
    assert registry["whale_trade"] is WhaleTrade
    assert registry.plugin_of("whale_trade") == "whale_check"
    assert isinstance(WhaleTrade({}), Validator)


def test_flags_only_trades_above_the_limit() -> None:
    check = WhaleTrade({"max_notional": 100_000})
    assert check.check(trade("BTC-USDT", 90_000.0, 1.0), CONTEXT) is None
    verdict = check.check(trade("BTC-USDT", 90_000.0, 1.2), CONTEXT)
    assert verdict is not None and verdict.check == "whale_trade"
    assert verdict.message == "trade notional 108,000.00 USDT is above 100,000.00"


def test_per_quote_limits_use_the_instrument_quote() -> None:
    check = WhaleTrade({"max_notional": 100_000, "per_quote": {"btc": 1.0}})
    assert check.check(trade("ETH-BTC", 0.03, 30.0), CONTEXT) is None  # 0.9 BTC
    verdict = check.check(trade("ETH-BTC", 0.03, 40.0), CONTEXT)
    assert verdict is not None and "BTC is above 1.00" in verdict.message


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_notional": -1}, "positive"), ({"max_notional": "lots"}, "a number"), ({"limit": 1}, "unknown option"),
     ({"per_quote": [1]}, "table")],
)
def test_bad_options_name_the_problem(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WhaleTrade(options)


HAVE_BINANCE = importlib.util.find_spec("marketfeeder_binance") is not None


@pytest.mark.skipif(not HAVE_BINANCE, reason="needs the marketfeeder-binance plugin (its venue simulator)")
@pytest.mark.anyio
async def test_failures_flow_out_of_a_running_feeder() -> None:
    from marketfeeder.runtime import Feeder
    from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

    pm = get_plugin_manager()
    async with SimServer(venues_from_plugins(pm, ["binance"]), seed=2, rate=1000, symbols=["BTC-USDT"]) as sim:
        config = {
            "exchanges": {"binance": {**sim_config_for(sim)["exchanges"]["binance"], "symbols": ["BTC-USDT"],
                                      "data_types": ["trades"]}},
            "validation": {"checks": ["whale_trade"], "options": {"whale_trade": {"max_notional": 50.0}}},
        }
        async with Feeder(config, plugin_manager=pm) as feeder, feeder.stream(types=DataType.STATUS) as events:
            with anyio.fail_after(20):
                async for event in events:
                    if isinstance(event, ValidationFailure):
                        break
            stats = feeder.get_performance_stats()["binance:BTC-USDT"]
    assert event.check == "whale_trade" and event.event_type == "Trade" and event.action == "annotate"
    assert stats["validation_failures"]["whale_trade"] >= 1
