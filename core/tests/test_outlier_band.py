"""The outlier check's fast path (the acceptance band) gives exactly the verdicts of the exact path."""

from __future__ import annotations

import random
from typing import Any

import pytest

from marketfeeder.models import BookTicker, Event, Instrument, Side, Trade
from marketfeeder.validators.builtin import OutlierCheck, TimestampCheck, _Series
from marketfeeder.validators.engine import StaticContext, ValidationEngine


class ExactOutlierCheck(OutlierCheck):
    """The same check with the band never armed: every value takes the exact path."""

    __slots__ = ()

    def _arm(self, series: _Series, values: list[float]) -> None:
        series.hi = float("-inf")
        series.budget = 0


OPTIONS: list[dict[str, Any]] = [
    {},
    {"window": 30, "min_samples": 5},
    {"window": 50, "min_samples": 50, "rebase_after": 3},
    {"min_rel_deviation": 0.0001, "min_ticks": 0},
    {"window": 3, "min_samples": 3, "rebase_after": 2},
]


@pytest.mark.parametrize("seed", range(40))
def test_band_verdicts_equal_exact_verdicts(seed: int) -> None:
    rng = random.Random(seed)
    options = OPTIONS[seed % len(OPTIONS)]
    fast, exact = OutlierCheck(options), ExactOutlierCheck(options)
    context = StaticContext(
        {("x", "A"): Instrument("x", "A", "A", "A", "B", 0.01, 0.001, "TRADING", True)}, clock=lambda: 10**6
    )
    # The engine's fused path (outliers and timestamps inlined) against each check on its own.
    engine = ValidationEngine([OutlierCheck(options), TimestampCheck()], context)
    exact_again, timestamps = ExactOutlierCheck(options), TimestampCheck()
    price = rng.choice([100.0, 0.5, 65_000.0])
    flagged = 0
    for i in range(600):
        r = rng.random()
        if r < 0.01:
            value = price * rng.choice([1.5, 0.5, 1.02, 0.98])  # spikes, some large, some near the floor
        elif r < 0.012:
            price *= 1.1  # a level shift: the window rebases
            value = price
        else:
            price += rng.choice([-1, 0, 1]) * price * rng.choice([1e-5, 1e-4, 1e-3])
            value = price
        symbol = rng.choice(["A", "B"])
        event: Event
        ts = i - 5 if rng.random() < 0.02 else i  # now and then a time going back
        if rng.random() < 0.5:
            event = Trade.fast("x", symbol, ts, i, i, value, 1.0, Side.BUY, None)
        else:
            event = BookTicker.fast("x", symbol, ts, i, i, value * 0.9999, 1.0, value * 1.0001, 1.0, None)
        verdict = fast.check(event, context)
        assert verdict == exact.check(event, context), (i, value)
        alone = [v for v in (exact_again.check(event, context), timestamps.check(event, context)) if v is not None]
        assert engine.check(event) == (alone or None), (i, value)
        flagged += verdict is not None
    assert flagged < 600
