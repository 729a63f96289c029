"""The ``arbitrage`` strategy against the simulator's ground truth: precision and recall.

The simulator injects cross-venue dislocations (``arb_rate``) between a Binance-like BTC-USDT market
and a Backpack-like BTC-USDC market whose clocks are skewed by +250 ms and -120 ms. The ground truth
is an identical :class:`ArbitrageDetector` run inside the market engine after every step (an
``observe`` callback) on the engine's exact books and exact times; the feeder's strategy runs on the
books it rebuilt from the wire, with exchange times corrected by its clock-offset estimates.

Intervals (open .. close, per direction) are matched by overlap, with ``sync_tolerance_ms`` of slack
for the clock estimates. Detections are placed at market time (the corrected exchange time of the
newest quote they used), so the feeder's delivery delay, reported separately, does not shift them.

The feeder pairs quotes up to ``max_skew_ms`` apart that arrived over two connections, so near the
open threshold it can see an edge a little above or below the one the engine had at any single
instant (and hysteresis then holds a near-threshold open for a while). The threshold is therefore
judged with a band of ``THRESHOLD_BAND_BPS``: recall counts the intervals a stricter truth
(``open_bps`` + band) finds, lasting longer than twice the sync tolerance, that overlap a detected
one; precision counts the detected intervals that overlap one a more lenient truth (``open_bps`` -
band) finds. Both must be at least 0.99; the same figures against the exact threshold are reported,
and the time-weighted agreement with the exact truth must be at least 0.95.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from marketfeeder import DataType, Feeder
from marketfeeder.arbitrage import ArbitrageOpportunity, ArbitrageStrategy, LegBook
from marketfeeder.models import BookStatus, Event
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.sim.engine import MarketEngine
from marketfeeder.sim.model import SimDepth, SimEvent
from marketfeeder.sim.server import SimServer, sim_config_for, venues_from_plugins

pytestmark = pytest.mark.anyio

MS = 1_000_000
LEGS = {"binance": "BTC-USDT", "backpack": "BTC-USDC"}
SYNC_TOLERANCE_MS = 50.0
STRATEGY_OPTIONS: dict[str, Any] = {
    "pairs": [{"asset": "BTC-USDT", "legs": LEGS}],
    "fees_bps": {"binance": 1.0, "backpack": 2.0},
    "quote_equivalence": {"USDC": "USDT"},
    "target_notional": 10_000.0,
    "open_bps": 4.0,
    "close_bps": 1.0,
    "update_step_bps": 1.0,
}
ENGINE_OPTIONS: dict[str, Any] = {"arb_rate": 4.0, "arb_size": 0.0015, "arb_decay_s": 0.3}
CLOCK_OFFSET_MS = {"binance": 250.0, "backpack": -120.0}
THRESHOLD_BAND_BPS = 1.0

Interval = list[int]  # [start_ns, end_ns]; end -1 while open
Intervals = dict[tuple[str, str], list[Interval]]


class GroundTruth:
    """The strategy's detector on the engine's exact books, evaluated after every book change."""

    def __init__(
        self, engine: MarketEngine, options: Mapping[str, Any], tolerance_ms: float, band_bps: float
    ) -> None:
        self.engine = engine
        self.depth = ArbitrageStrategy(options).depth
        thresholds = {"exact": 0.0, "strict": band_bps, "lenient": -band_bps}
        self.detectors = {
            name: ArbitrageStrategy({**options, "open_bps": options["open_bps"] + shift}).make_detector(
                "BTC-USDT", tolerance_ms
            )
            for name, shift in thresholds.items()
        }
        self.markets = {(venue, symbol) for venue, symbol in LEGS.items()}
        self.changed: dict[str, int] = {}  # venue -> engine time of its book's last change
        self.intervals: dict[str, Intervals] = {name: {} for name in thresholds}
        self.evaluations = 0

    def __call__(self, engine_ns: int, records: list[tuple[str, SimEvent]]) -> None:
        touched = False
        for venue, record in records:
            if type(record) is SimDepth and (venue, record.symbol) in self.markets:
                self.changed[venue] = engine_ns
                touched = True
        if not touched or len(self.changed) < len(LEGS):
            return
        legs = []
        for venue, symbol in LEGS.items():
            bids, asks = self.engine.top_levels(venue, symbol, self.depth)
            quote = symbol.split("-")[1]
            legs.append(
                LegBook(venue, symbol, quote, BookStatus.LIVE, bids, asks, self.changed[venue], engine_ns)
            )
        self.evaluations += 1
        for name, detector in self.detectors.items():
            record_events(self.intervals[name], detector.evaluate(legs, engine_ns), engine_ns)


def record_events(intervals: Intervals, events: list[ArbitrageOpportunity], at_ns: int) -> None:
    for event in events:
        key = (event.buy_exchange, event.sell_exchange)
        runs = intervals.setdefault(key, [])
        if event.status == "open":
            runs.append([at_ns, -1])
        elif event.status == "close" and runs and runs[-1][1] < 0:
            runs[-1][1] = at_ns


def close_all(intervals: Intervals, end_ns: int) -> None:
    for runs in intervals.values():
        for run in runs:
            if run[1] < 0:
                run[1] = end_ns


def overlaps(run: Interval, others: list[Interval], slack_ns: int) -> bool:
    return any(run[0] <= other[1] + slack_ns and other[0] <= run[1] + slack_ns for other in others)


def covered_ns(run: Interval, others: list[Interval], slack_ns: int) -> int:
    """How much of ``run`` lies within ``others`` widened by ``slack_ns`` on both ends."""
    total, upto = 0, run[0]
    for start, end in sorted((max(o[0] - slack_ns, upto), min(o[1] + slack_ns, run[1])) for o in others):
        start = max(start, upto)
        if end > start:
            total += end - start
            upto = end
    return total


def score(
    truth: Intervals,
    detected: Intervals,
    *,
    start_ns: int,
    min_ns: int,
    slack_ns: int,
    strict: Intervals | None = None,
    lenient: Intervals | None = None,
) -> dict[str, Any]:
    """Recall over the ``strict`` truth's intervals longer than ``min_ns``; precision over detected
    intervals that end after ``start_ns`` (the truth's first evaluation: earlier ones have nothing to
    be compared with), against the ``lenient`` truth. Both default to ``truth``, which the
    time-weighted figures and the ``*_exact`` ones always use."""
    strict = truth if strict is None else strict
    lenient = truth if lenient is None else lenient
    keys = set(truth) | set(detected) | set(strict) | set(lenient)
    long_true = [(k, r) for k in keys for r in strict.get(k, []) if r[1] - r[0] > min_ns]
    found = [(k, r) for k, r in long_true if overlaps(r, detected.get(k, []), slack_ns)]
    judged = [(k, r) for k in keys for r in detected.get(k, []) if r[1] >= start_ns]
    correct = [(k, r) for k, r in judged if overlaps(r, lenient.get(k, []), slack_ns)]
    long_exact = [(k, r) for k in keys for r in truth.get(k, []) if r[1] - r[0] > min_ns]
    found_exact = sum(overlaps(r, detected.get(k, []), slack_ns) for k, r in long_exact)
    correct_exact = sum(overlaps(r, truth.get(k, []), slack_ns) for k, r in judged)
    # Time-weighted: the share of detected open time that is truly open, and of long true
    # intervals' time that was detected (boundaries within the slack).
    judged_ns = sum(r[1] - r[0] for _, r in judged)
    long_ns = sum(r[1] - r[0] for _, r in long_exact)
    return {
        "time_precision": sum(covered_ns(r, truth.get(k, []), slack_ns) for k, r in judged) / judged_ns
        if judged_ns
        else 1.0,
        "time_recall": sum(covered_ns(r, detected.get(k, []), slack_ns) for k, r in long_exact) / long_ns
        if long_ns
        else 1.0,
        "true_intervals": sum(len(r) for r in truth.values()),
        # For the record only: short true intervals (flickers around the threshold) included.
        "recall_all": sum(overlaps(r, detected.get(k, []), slack_ns) for k in truth for r in truth[k])
        / max(1, sum(len(r) for r in truth.values())),
        "true_long": len(long_true),
        "recalled": len(found),
        "detected": len(judged),
        "correct": len(correct),
        "recall": len(found) / len(long_true) if long_true else 1.0,
        "precision": len(correct) / len(judged) if judged else 1.0,
        "recall_exact": found_exact / len(long_exact) if long_exact else 1.0,
        "precision_exact": correct_exact / len(judged) if judged else 1.0,
        "missed": [(k, (r[1] - r[0]) / MS) for k, r in long_true if (k, r) not in found],
        "false": [(k, (r[1] - r[0]) / MS) for k, r in judged if (k, r) not in correct],
    }


async def run_against_truth(seconds: float, *, seed: int, rate: int = 2_500) -> dict[str, Any]:
    pm = get_plugin_manager()
    venue_options = {name: {"clock_offset_ms": ms} for name, ms in CLOCK_OFFSET_MS.items()}
    async with SimServer(
        venues_from_plugins(pm, list(LEGS)),
        seed=seed,
        rate=rate,
        symbols=list(LEGS.values()),
        venue_options=venue_options,
        engine_options=ENGINE_OPTIONS,
    ) as sim:
        urls = sim_config_for(sim)["exchanges"]
        config = {
            "exchanges": {
                name: {**urls[name], "symbols": [symbol], "data_types": ["orderbook"]}
                for name, symbol in LEGS.items()
            },
            "sync_tolerance_ms": SYNC_TOLERANCE_MS,
            "strategies": [{"type": "arbitrage", "options": STRATEGY_OPTIONS}],
        }
        detected: Intervals = {}
        signals: list[ArbitrageOpportunity] = []
        async with Feeder(config, plugin_manager=pm) as feeder:

            def on_signal(event: Event) -> None:
                if isinstance(event, ArbitrageOpportunity):
                    signals.append(event)
                    record_events(detected, [event], market_time(event))

            feeder.subscribe("arbitrage", None, DataType.SIGNAL, on_signal)
            for _ in range(300):  # books LIVE and a server-time sample taken: at most 15 s
                if all(ready(feeder, name, symbol) for name, symbol in LEGS.items()):
                    break
                await anyio.sleep(0.05)
            else:
                pytest.fail(f"feeder not ready: {feeder.statistics()['clocks']}")
            truth = GroundTruth(sim.engine, STRATEGY_OPTIONS, SYNC_TOLERANCE_MS, THRESHOLD_BAND_BPS)
            start_ns = sim.engine.now_ns()
            stop_observing = sim.engine.observe(truth)
            await anyio.sleep(seconds)
            sim.pause_market()
            stop_observing()
            end_ns = sim.engine.now_ns()
            await anyio.sleep(0.3)  # let the frames already sent arrive
            stats = feeder.statistics()
            books = {name: feeder.book(name, symbol).state for name, symbol in LEGS.items()}
    for intervals in (*truth.intervals.values(), detected):
        close_all(intervals, end_ns)
    figures = score(
        truth.intervals["exact"],
        detected,
        start_ns=start_ns,
        min_ns=int(2 * SYNC_TOLERANCE_MS * MS),
        slack_ns=int(SYNC_TOLERANCE_MS * MS),
        strict=truth.intervals["strict"],
        lenient=truth.intervals["lenient"],
    )
    delays = sorted((e.receive_ts - market_time(e)) / MS for e in signals if e.status == "open")
    if delays:
        figures.update(delay_ms_median=delays[len(delays) // 2], delay_ms_max=delays[-1])
    figures.update(
        evaluations=truth.evaluations,
        signals=len(signals),
        books=books,
        clocks=stats["clocks"],
        strategy_errors=stats["strategy_errors"],
        dislocations=sim.engine.statistics()["dislocations"],
    )
    return figures


def market_time(event: ArbitrageOpportunity) -> int:
    """When the market showed what the event reports: the corrected exchange time of its newest
    quote (the event's own time minus the quote's age), so delivery delays do not shift intervals."""
    return event.receive_ts - int(min(event.buy_age_ms, event.sell_age_ms) * MS)


def ready(feeder: Feeder, exchange: str, symbol: str) -> bool:
    try:
        live = feeder.book(exchange, symbol).is_live
    except KeyError:
        return False
    return live and feeder.clock.clock(exchange).rest_samples > 0


def check(figures: Mapping[str, Any], min_true: int) -> None:
    summary = {k: v for k, v in figures.items() if k not in ("clocks",)}
    assert not figures["strategy_errors"], summary
    assert all(state is BookStatus.LIVE for state in figures["books"].values()), summary
    assert figures["true_long"] >= min_true, summary  # the run must hold enough opportunities to judge
    assert figures["recall"] >= 0.99, summary
    assert figures["precision"] >= 0.99, summary
    # Boundaries too: open time agrees within the slack (a fee or conversion error shows up here).
    assert figures["time_recall"] >= 0.95, summary
    assert figures["time_precision"] >= 0.95, summary


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_detected_opportunities_match_ground_truth() -> None:
    figures = await run_against_truth(16.0, seed=21)
    print({k: v for k, v in figures.items() if k != "clocks"})  # the figures for the record (-s)
    check(figures, min_true=12)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_detected_opportunities_match_ground_truth_short() -> None:
    figures = await run_against_truth(4.0, seed=5)
    print({k: v for k, v in figures.items() if k != "clocks"})
    check(figures, min_true=1)


def test_scoring_counts_overlaps_per_direction() -> None:
    truth: Intervals = {
        ("a", "b"): [[0, 500 * MS], [600 * MS, 620 * MS]],
        ("b", "a"): [[1_000 * MS, 1_400 * MS]],
    }
    detected: Intervals = {("a", "b"): [[5 * MS, 480 * MS], [2_000 * MS, 2_100 * MS]], ("b", "a"): []}
    figures = score(truth, detected, start_ns=0, min_ns=100 * MS, slack_ns=10 * MS)
    assert (figures["true_long"], figures["recalled"]) == (2, 1)  # the 20 ms one is not judged
    assert (figures["detected"], figures["correct"]) == (2, 1)
    assert list(itertools.chain(figures["missed"], figures["false"])) == [
        (("b", "a"), 400.0),
        (("a", "b"), 100.0),
    ]


def test_scoring_judges_the_threshold_with_a_band() -> None:
    exact: Intervals = {("a", "b"): [[0, 300 * MS]]}
    strict: Intervals = {("a", "b"): [[50 * MS, 250 * MS]]}
    lenient: Intervals = {("a", "b"): [[0, 300 * MS], [1_000 * MS, 1_200 * MS]]}
    # The second detection rests on an edge only the lenient truth saw; the third on none at all.
    detected: Intervals = {
        ("a", "b"): [[10 * MS, 290 * MS], [1_050 * MS, 1_100 * MS], [5_000 * MS, 5_001 * MS]]
    }
    figures = score(
        exact, detected, start_ns=0, min_ns=100 * MS, slack_ns=10 * MS, strict=strict, lenient=lenient
    )
    assert (figures["detected"], figures["correct"]) == (3, 2)
    assert figures["precision_exact"] == pytest.approx(1 / 3)
    assert figures["false"] == [(("a", "b"), 1.0)]
    assert (figures["true_long"], figures["recall"], figures["recall_exact"]) == (1, 1.0, 1.0)
    missed = score(exact, {}, start_ns=0, min_ns=100 * MS, slack_ns=10 * MS, strict=strict, lenient=lenient)
    assert (missed["recall"], missed["missed"]) == (0.0, [(("a", "b"), 200.0)])
