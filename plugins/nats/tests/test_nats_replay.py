"""A consumer started later replays the bus from a start time and rebuilds the live feeder's book."""

from __future__ import annotations

import time

import anyio
import pytest
from nats_helpers import unique_prefixes
from natsserver import NatsServer

from marketfeeder.book import OrderBook
from marketfeeder.models import BookDelta, BookSnapshot, Event
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.runtime.feeder import Feeder
from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins
from marketfeeder_nats.source import NatsSource

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
                while not feeder.book("binance", "BTC-USDT").is_live:  # noqa: ASYNC110 - no event for it
                    await anyio.sleep(0.05)
            await anyio.sleep(1.0)
            live = feeder.book("binance", "BTC-USDT")
            # Read in one go (no await): a consistent image at one update id.
            live_id = live.update_id
            live_bids, live_asks = live.top(100_000)
        # Leaving the feeder drained the sink: every event up to live_id is stored.
    assert live_id is not None and live_bids and live_asks

    replayed: list[Event] = []
    source = NatsSource({"url": nats_server.url, "durable": "late", "types": ["orderbook"], "start": start,
                         **prefixes})
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.consume, replayed.append)
            while not any(isinstance(e, BookDelta) and e.seq >= live_id for e in replayed):  # noqa: ASYNC110
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()

    book = OrderBook("binance", "BTC-USDT")
    loaded = False
    for event in replayed:
        if isinstance(event, BookSnapshot):
            book.load_snapshot(event.bids, event.asks, event.seq)
            loaded = True
        elif isinstance(event, BookDelta) and loaded and book.update_id is not None and event.seq > book.update_id:
            book.apply_delta(event)
        if loaded and book.update_id == live_id:
            break
    assert loaded and book.update_id == live_id
    assert book.top(100_000) == (live_bids, live_asks)
