"""Clock skew injected in the simulator is recovered by the feeder's clock-offset estimates.

Binance prints millisecond times, Backpack microsecond stream times (its REST time is in ms). Each
venue's clock is skewed by ``clock_offset_ms``; the feeder samples the REST server time (NTP-style
round trip) and the stream frames. Stated tolerance: the estimate is within its own error bound
(half the best round trip) plus ``RESOLUTION_MS`` (1 ms clock resolution of the server-time
endpoints, plus up to 1 ms by which the simulated market's clock may trail the wall clock between
two paced batches) plus ``SLACK_MS`` for a loaded machine.
"""

from __future__ import annotations

import statistics

import anyio
import pytest

from marketfeeder import DataType, Feeder
from marketfeeder.models import Event
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.sim.model import SimKline, SimTicker
from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

pytestmark = pytest.mark.anyio

MS = 1_000_000
RESOLUTION_MS = 2.0
SLACK_MS = 3.0
SKEW_MS = {"binance": 250.0, "backpack": -120.5}


def test_engine_shifts_every_printed_time_of_a_skewed_venue() -> None:
    start = 1_767_225_600_000_000_000
    args = ({"a": default_instruments("a")[:1], "b": default_instruments("b")[:1]}, ["a", "b"])
    plain = MarketEngine(7, *args, start_ns=start, rate=5_000)
    skewed = MarketEngine(7, *args, start_ns=start, rate=5_000, clock_offset_ms={"a": 250.0, "b": 0})
    seen: list[int] = []
    skewed.observe(lambda engine_ns, records: seen.append(engine_ns))
    shifted = 0
    for _ in range(3_000):
        for (venue, rec), (venue2, ref) in zip(skewed.step(), plain.step(), strict=True):
            assert venue == venue2 and type(rec) is type(ref)
            offset = 250 * MS if venue == "a" else 0
            assert rec.time_ns == ref.time_ns + offset
            if isinstance(rec, SimKline) and isinstance(ref, SimKline):
                assert (rec.open_ns, rec.close_ns) == (ref.open_ns, ref.close_ns)  # round boundaries
            elif isinstance(rec, SimTicker) and isinstance(ref, SimTicker):
                assert rec.close_time_ns == ref.close_time_ns + offset
            elif not isinstance(rec, SimKline | SimTicker) and not isinstance(ref, SimKline | SimTicker):
                assert rec.engine_ns == ref.engine_ns + offset
            shifted += offset > 0
    assert shifted > 1_000
    # Ground truth stays on the engine's clock; the venue's REST answers carry the skew.
    assert seen[-1] <= skewed.now_ns() and len(seen) == 3_000
    view = skewed.view("a")
    assert view.now_ns() == skewed.now_ns() + 250 * MS
    assert view.snapshot("BTC-USDT", 5).time_ns == skewed.now_ns() + 250 * MS
    assert view.ticker("BTC-USDT").time_ns == plain.view("a").ticker("BTC-USDT").time_ns + 250 * MS
    assert skewed.view("b").now_ns() == skewed.now_ns()
    assert skewed.top_levels("a", "BTC-USDT", 3) == plain.top_levels("a", "BTC-USDT", 3)
    with pytest.raises(ValueError, match="clock_offset_ms: unknown venue 'c'"):
        MarketEngine(7, *args, clock_offset_ms={"c": 1.0})


async def test_feeder_recovers_injected_clock_skew() -> None:
    pm = get_plugin_manager()
    venues = venues_from_plugins(pm, ["binance", "backpack"])
    options = {name: {"clock_offset_ms": skew} for name, skew in SKEW_MS.items()}
    async with SimServer(venues, seed=3, rate=1_500, symbols=["BTC-USDT", "BTC-USDC"], venue_options=options) as sim:
        urls = sim_config_for(sim)["exchanges"]
        config = {
            "exchanges": {
                "binance": {**urls["binance"], "symbols": ["BTC-USDT"], "data_types": ["orderbook", "trades"]},
                "backpack": {**urls["backpack"], "symbols": ["BTC-USDC"], "data_types": ["orderbook", "trades"]},
            }
        }
        delays: dict[str, list[float]] = {name: [] for name in SKEW_MS}
        async with Feeder(config, plugin_manager=pm) as feeder:

            def on_trade(event: Event) -> None:
                if event.exchange_ts is not None and feeder.clock.clock(event.exchange).rest_samples:
                    corrected = feeder.corrected_time(event.exchange, event.exchange_ts)
                    delays[event.exchange].append((event.receive_ts - corrected) / MS)

            feeder.subscribe(None, None, DataType.TRADES, on_trade)
            for _ in range(150):  # at most 15 s
                if min(len(d) for d in delays.values()) >= 200:
                    break
                await anyio.sleep(0.1)
            clocks = feeder.statistics()["clocks"]
    assert min(len(d) for d in delays.values()) >= 200, {name: len(d) for name, d in delays.items()}
    for name, skew in SKEW_MS.items():
        clock = clocks[name]
        assert clock["rest_samples"] >= 1 and clock["stream_samples"] > 0
        error = abs(clock["offset_ms"] - skew)
        assert error <= clock["offset_error_ms"] + RESOLUTION_MS + SLACK_MS, (name, clock)
        assert not clock["drifting"]
        # Corrected exchange times sit just before the receive times: the skew is gone (uncorrected,
        # binance frames would seem to arrive 250 ms before they were sent).
        median = statistics.median(delays[name])
        assert -RESOLUTION_MS - SLACK_MS <= median <= 50.0, (name, median)
