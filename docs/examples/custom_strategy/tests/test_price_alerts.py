"""The price_alerts plugin: discovery through its entry point, its logic, and a run in a feeder."""

from __future__ import annotations

import importlib.util

import anyio
import pytest
from marketfeeder_price_alerts import PriceAlert, PriceAlerts

from marketfeeder import BookTicker, DataType
from marketfeeder.plugins import collect, get_plugin_manager, list_plugins


def quote(bid: float, ask: float, symbol: str = "BTC-USDT") -> BookTicker:
    return BookTicker.fast("binance", symbol, None, 1, None, bid, 1.0, ask, 1.0)


def test_entry_point_registers_the_strategy() -> None:
    pm = get_plugin_manager()
    registry = collect(pm, "marketfeeder_register_strategies", "strategy")
    assert registry["price_alerts"] is PriceAlerts
    assert registry.plugin_of("price_alerts") == "price_alerts"
    (info,) = [p for p in list_plugins(pm) if p.name == "price_alerts"]
    assert info.distribution == "marketfeeder-price-alerts"
    assert info.registers == {"strategy": ["price_alerts"]}


def test_alert_after_a_step_in_either_direction_then_from_the_new_reference() -> None:
    strategy = PriceAlerts({"step_bps": 10.0})
    assert strategy.check(quote(99.99, 100.01)) is None  # first mid: the reference
    assert strategy.check(quote(100.08, 100.10)) is None  # +9 bps
    up = strategy.check(quote(100.11, 100.13))  # +12 bps
    assert isinstance(up, PriceAlert) and up.data_type is DataType.SIGNAL
    assert up.move_bps == pytest.approx(12.0) and up.reference == pytest.approx(100.0) and up.seq == 1
    assert strategy.check(quote(100.02, 100.04)) is None  # -9 bps from the new reference 100.12
    down = strategy.check(quote(99.99, 100.01))  # -12 bps
    assert down is not None and down.move_bps == pytest.approx(-0.12 / 100.12 * 1e4) and down.seq == 2


def test_symbols_are_tracked_apart() -> None:
    strategy = PriceAlerts({"step_bps": 5.0})
    strategy.check(quote(100.0, 100.0, "BTC-USDT"))
    strategy.check(quote(200.0, 200.0, "ETH-USDT"))
    assert strategy.check(quote(200.0, 200.0, "BTC-USDT")) is not None
    assert strategy.check(quote(200.0, 200.0, "ETH-USDT")) is None


def test_bad_options_name_the_problem() -> None:
    with pytest.raises(ValueError, match="step_bps must be positive"):
        PriceAlerts({"step_bps": 0})
    with pytest.raises(ValueError, match="is not 'exchange:SYMBOL'"):
        PriceAlerts({"watch": ["BTC-USDT"]})
    with pytest.raises(ValueError, match="unknown option"):
        PriceAlerts({"stepbps": 1})


HAVE_BINANCE = importlib.util.find_spec("marketfeeder_binance") is not None


@pytest.mark.skipif(not HAVE_BINANCE, reason="needs the marketfeeder-binance plugin (its venue simulator)")
@pytest.mark.anyio
async def test_alerts_flow_out_of_a_running_feeder() -> None:
    from marketfeeder.runtime import Feeder
    from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

    pm = get_plugin_manager()
    async with SimServer(venues_from_plugins(pm, ["binance"]), seed=2, rate=1000, symbols=["BTC-USDT"]) as sim:
        config = {
            "exchanges": {"binance": {**sim_config_for(sim)["exchanges"]["binance"], "symbols": ["BTC-USDT"],
                                      "data_types": ["book_ticker"]}},
            "strategies": [{"type": "price_alerts", "options": {"watch": ["binance:BTC-USDT"], "step_bps": 0.5}}],
        }
        async with Feeder(config, plugin_manager=pm) as feeder, feeder.stream(types=DataType.SIGNAL) as signals:
            with anyio.fail_after(20):
                alert = await signals.receive()
            assert feeder.statistics()["strategy_errors"] == {}
    assert isinstance(alert, PriceAlert)
    assert alert.exchange == "binance" and alert.symbol == "BTC-USDT"
    assert abs(alert.move_bps) >= 0.5
