"""Each simulator fault, switched on alone: the server's count of injected faults and the feeder's own
report (decode errors, unhandled frames, reconnects, gaps, validation failures) agree."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from marketfeeder import DataType, Feeder
from marketfeeder.models import Trade
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.sim.faults import FaultPlan
from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

pytestmark = pytest.mark.anyio


async def run_with_fault(spec: str, *, seconds: float = 2.5, settle: float = 1.5, backend_rate: int = 1500) -> tuple[dict[str, int], dict[str, Any], list[Trade]]:
    pm = get_plugin_manager()
    trades: list[Trade] = []
    async with SimServer(
        venues_from_plugins(pm, ["binance"]), seed=11, rate=backend_rate, faults=FaultPlan.parse(spec, seed=5),
        venue_options={"binance": {"symbols": ["BTC-USDT"]}},
    ) as sim:
        endpoints = sim_config_for(sim, ["binance"])["exchanges"]["binance"]
        config = {
            "exchanges": {"binance": {**endpoints, "symbols": ["BTC-USDT"],
                                      "data_types": ["book_ticker", "orderbook", "trades"]}},
            "validation": {"policy": "annotate"},
            "runtime": {"reconnect_initial_delay": 0.05, "reconnect_max_delay": 0.2},
        }
        async with Feeder(config, plugin_manager=pm) as feeder:
            feeder.subscribe("binance", "BTC-USDT", DataType.TRADES, trades.append)
            await anyio.sleep(seconds)
            sim.clear_faults()  # let books repair what the last faults broke
            await anyio.sleep(settle)
            sim.pause_market()  # let every frame already sent arrive before counting
            await anyio.sleep(0.7)
            stats = feeder.get_performance_stats()
        injected = dict(sim.counters.injected())
    return injected, stats, trades


def connection_total(stats: dict[str, Any], key: str) -> int:
    return sum(int(conn[key]) for conn in stats["connections"].values())


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_malformed_and_truncated_frames_are_counted_one_for_one() -> None:
    injected, stats, _ = await run_with_fault("malformed=0.02,truncated=0.02")
    assert injected.get("malformed", 0) > 0
    assert injected.get("truncated", 0) > 0
    assert connection_total(stats, "decode_errors") == injected["malformed"] + injected["truncated"]
    assert stats["binance:BTC-USDT"]["book_state"] == "live"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_unknown_events_are_counted_as_unhandled() -> None:
    injected, stats, _ = await run_with_fault("unknown_event=0.02")
    assert injected["unknown_event"] > 0
    assert connection_total(stats, "unhandled") == injected["unknown_event"]
    assert connection_total(stats, "decode_errors") == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_unknown_fields_are_tolerated() -> None:
    injected, stats, _ = await run_with_fault("unknown_fields=0.05")
    assert injected["unknown_fields"] > 0
    assert connection_total(stats, "decode_errors") == 0
    assert stats["binance:BTC-USDT"]["book_state"] == "live"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dropped_connections_each_cause_one_reconnect() -> None:
    injected, stats, _ = await run_with_fault("drop_conn=0.002", seconds=3.0)
    assert injected["drop_conn"] > 0
    assert connection_total(stats, "reconnects") == injected["drop_conn"]
    assert stats["binance:BTC-USDT"]["book_state"] == "live"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_skipped_ids_surface_as_gaps_and_resync() -> None:
    injected, stats, _ = await run_with_fault("skip_ids=0.03")
    skipped = injected["skip_ids"]
    assert skipped > 0
    gaps = stats["binance:BTC-USDT"]["gaps"]
    # every skip is seen; skips that fall while a book is already resyncing merge into the same repair
    assert 1 <= gaps <= skipped
    assert stats["binance:BTC-USDT"]["book_state"] == "live"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_duplicated_and_reordered_frames_never_duplicate_trades() -> None:
    injected, stats, trades = await run_with_fault("dup=0.05,reorder=0.05")
    assert injected["dup"] > 0
    assert injected["reorder"] > 0
    ids = Counter(trade.seq for trade in trades)
    assert ids and max(ids.values()) == 1
    assert stats["binance:BTC-USDT"]["book_state"] == "live"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_corrupted_prices_are_flagged_by_validators() -> None:
    injected, stats, _ = await run_with_fault("crossed=0.02,off_grid=0.02")
    failures = stats["binance:BTC-USDT"]["validation_failures"]
    assert injected["crossed"] > 0
    assert injected["off_grid"] > 0
    assert failures.get("spread", 0) == injected["crossed"]
    assert failures.get("tick_grid", 0) == injected["off_grid"]
