"""The engine's fused per-class test changes nothing: verdicts (and their order) equal running every
configured check on its own, on good data and bad."""

from __future__ import annotations

import math
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from test_validators_properties import Grid, grids, market_events

from marketfeeder.models import BookTicker, Event, Kline, Trade
from marketfeeder.validators.builtin import BUILTIN_VALIDATORS
from marketfeeder.validators.engine import StaticContext, ValidationEngine

BAD = st.one_of(
    st.none(), st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, -0.0, 1e300, True]),
    st.floats(allow_nan=True), st.integers(-(10**20), 10**20), st.text(max_size=3),
)


@st.composite
def maybe_broken(draw: st.DrawFn, grid: Grid) -> Event:
    event: Event = draw(market_events(grid))
    if draw(st.booleans()):
        fields = [f.name for f in attrs.fields(type(event)) if f.name not in ("exchange", "symbol")]  # type: ignore[misc]
        event = attrs.evolve(event, **{draw(st.sampled_from(fields)): draw(BAD)})  # type: ignore[misc]
    return event


@settings(max_examples=150, deadline=None)
@given(grid=grids, data=st.data())
def test_fused_engine_equals_each_check(grid: Grid, data: st.DataObject) -> None:
    names = data.draw(st.permutations(sorted(BUILTIN_VALIDATORS)))
    names = names[: data.draw(st.integers(1, len(names)))]
    options: dict[str, dict[str, Any]] = {"tick_grid": {"check_sizes": data.draw(st.booleans())}}
    context = grid.context()
    engine = ValidationEngine([BUILTIN_VALIDATORS[n](options.get(n, {})) for n in names], context)
    alone = [BUILTIN_VALIDATORS[n](options.get(n, {})) for n in names]
    events = data.draw(st.lists(maybe_broken(grid), min_size=1, max_size=30))
    for event in events:
        want = [v for check in alone if isinstance(event, check.event_types)
                if (v := check.check(event, context)) is not None]
        assert engine.check(event) == (want or None), event
    assert engine.validator_errors() == {}


def test_fused_test_covers_the_busy_classes() -> None:
    engine = ValidationEngine([factory({}) for factory in BUILTIN_VALIDATORS.values()], StaticContext({}))
    for cls in (Trade, BookTicker, Kline):
        fused, rest, every = engine._dispatch[cls]
        assert fused is not None and len(rest) < len(every)


def test_a_subclassed_check_is_not_fused() -> None:
    from marketfeeder.models import Side
    from marketfeeder.validators.base import ValidationContext, Verdict
    from marketfeeder.validators.builtin import PriceCheck

    class NoTinyTrades(PriceCheck):
        """Its own trade handler: the base class's fast test does not speak for it."""

        __slots__ = ()

        def __init__(self) -> None:
            super().__init__()
            self._handlers[Trade] = self._tiny

        def _tiny(self, event: Trade, context: ValidationContext) -> Verdict | None:
            return Verdict(self.name, "tiny") if event.size < 1.0 else None

    engine = ValidationEngine([NoTinyTrades()], StaticContext({}))
    trade = Trade.fast("x", "BTC-USDT", None, 1, 1, 100.0, 0.5, Side.BUY, None)
    assert engine.check(trade) == [Verdict("prices", "tiny")]
