"""A consumer started later replays the bus from a start time and its replica book ends identical to
the publishing feeder's."""

from __future__ import annotations

import time

import anyio
import pytest
from nats_helpers import consumer_config, unique_prefixes, wait_until
from natsserver import NatsServer

from marketfeeder.models import DataType, Event, Level
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.runtime.feeder import Feeder
from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

# The simulator serves the Binance venue of the binance plugin (absent when this plugin is tested alone).
pytest.importorskip("marketfeeder_binance")
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_late_consumer_rebuilds_the_live_book(nats_server: NatsServer) -> None:
    pm = get_plugin_manager()
    prefixes = unique_prefixes()
    start = time.time_ns()
    async with SimServer(venues_from_plugins(pm, ["binance"]), seed=5, rate=800, symbols=["BTC-USDT"]) as sim:
        urls = sim_config_for(sim)["exchanges"]["binance"]
        config = {
            "exchanges": {"binance": {**urls, "symbols": ["BTC-USDT"], "data_types": ["orderbook"]}},
            "sinks": [{"type": "nats", "options": {"url": nats_server.url, "storage": "memory", **prefixes}}],
        }
        async with Feeder(config, plugin_manager=pm) as feeder:
            with anyio.fail_after(15):
                await wait_until(lambda: feeder.book("binance", "BTC-USDT").is_live)
            await anyio.sleep(1.0)
            live = feeder.book("binance", "BTC-USDT")
            # Read in one go (no await): a consistent image at one update id.
            live_id = live.update_id
            live_image = live.top(100_000)
        # Leaving the feeder drained the sink: every event up to live_id is on the bus.
    assert live_id is not None and live_image[0] and live_image[1]

    # A consumer feeder on "another host" replays the bus from before the publisher started. Its
    # replica book (the core's BookSync, with the binance plugin's sequence policy) passes through
    # live_id LIVE and level for level equal. One message per batch: a callback sees the replica
    # right after each book event.
    config = consumer_config(nats_server.url, prefixes, durable="late", types=["orderbook"], start=start, batch=1)
    seen: dict[str, tuple[bool, tuple[list[Level], list[Level]]]] = {}
    with anyio.fail_after(20):
        async with Feeder(config, plugin_manager=pm) as consumer:

            def look(_event: Event) -> None:
                replica = consumer.book("binance", "BTC-USDT")
                if replica.update_id == live_id and "image" not in seen:
                    seen["image"] = (replica.is_live, replica.top(100_000))

            consumer.subscribe("binance", "BTC-USDT", DataType.ORDERBOOK, look)
            await wait_until(lambda: "image" in seen)
    assert seen["image"] == (True, live_image)
    assert not consumer.source_errors
