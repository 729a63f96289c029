"""Run the ``price_alerts`` strategy plugin and print the alerts it publishes.

The plugin must be installed (``pip install -e docs/examples/custom_strategy``): the feeder finds
it through its entry point, exactly as it finds the built-in ``arbitrage`` strategy.

    python docs/examples/custom_strategy/run.py --sim --duration 10

The same run without Python: ``marketfeeder run --sim --quiet --duration 10 --config
docs/examples/custom_strategy/price_alerts.toml`` (the strategy logs each alert).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/examples: the shared _common helper

from _common import open_feeder, parse_args, run, run_for

from marketfeeder import DataType, Event
from marketfeeder.plugins import collect, get_plugin_manager

CONFIG = {
    "exchanges": {"binance": {"symbols": ["BTC-USDT", "ETH-USDT"], "data_types": ["book_ticker"]}},
    "strategies": [
        {"type": "price_alerts", "options": {"watch": ["binance:BTC-USDT", "binance:ETH-USDT"], "step_bps": 1.0}}
    ],
}


async def main(args: argparse.Namespace) -> None:
    strategies = collect(get_plugin_manager(), "marketfeeder_register_strategies", "strategy")
    if "price_alerts" not in strategies:
        sys.exit("the price_alerts strategy is not installed: pip install -e docs/examples/custom_strategy")
    print(f"strategy price_alerts comes from plugin {strategies.plugin_of('price_alerts')!r}", flush=True)
    from marketfeeder_price_alerts import PriceAlert

    alerts = 0

    def on_alert(event: Event) -> None:
        nonlocal alerts
        if not isinstance(event, PriceAlert):
            return  # other strategies' signals
        alerts += 1
        print(f"alert #{event.seq}: {event.exchange} {event.symbol} mid {event.price:,.2f} "
              f"moved {event.move_bps:+.1f} bps from {event.reference:,.2f}", flush=True)

    async with open_feeder(CONFIG, args) as feeder:
        feeder.subscribe(None, None, DataType.SIGNAL, on_alert)
        await run_for(args.duration, args.duration, lambda: None)
        errors = feeder.statistics()["strategy_errors"]
    if errors:
        sys.exit(f"strategy failed: {errors}")
    print(f"summary: {alerts} price alerts", flush=True)


if __name__ == "__main__":
    run(main, parse_args(__doc__.splitlines()[0]))
