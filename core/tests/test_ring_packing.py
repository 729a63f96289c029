"""Long rings pack their older events: reading them back gives equal events, bit for bit, in order."""

from __future__ import annotations

import math
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.models import BookTicker, Event, Side, Trade
from marketfeeder.runtime.buffers import PACK_ABOVE, PACK_BLOCK, RingBuffer


def _same(a: Event, b: Event) -> bool:
    if type(a) is not type(b):
        return False
    for field in a.__attrs_attrs__:  # type: ignore[attr-defined]
        x, y = getattr(a, field.name), getattr(b, field.name)
        if type(x) is not type(y) or repr(x) != repr(y):  # repr: -0.0 and NaN compared exactly
            return False
    return True


_floats = st.sampled_from([1.5, -0.0, 0.0, math.inf, math.nan, 65_000.01, 1e-9])
_ints = st.one_of(st.none(), st.integers(0, 2**62), st.sampled_from([2**70, -(2**63)]))


@st.composite
def _events(draw: st.DrawFn, i: int) -> Event:
    if draw(st.integers(0, 9)) == 0:
        return BookTicker.fast("x", "ETH-USDT", None, i, i, 1.0, 2.0, 3.0, 4.0, None)
    return Trade.fast(
        "x", draw(st.sampled_from(["BTC-USDT", "BTC-USDT", "SOL-USDT"])), draw(_ints), i, draw(_ints),
        draw(_floats), draw(_floats), draw(st.sampled_from([Side.BUY, Side.SELL])), draw(_ints),
    )


@settings(max_examples=25, deadline=None)
@given(st.data(), st.integers(PACK_ABOVE + 1, PACK_ABOVE + 3 * PACK_BLOCK), st.integers(0, 5 * PACK_BLOCK))
def test_packed_ring_reads_back_the_newest_events(data: st.DataObject, maxlen: int, extra: int) -> None:
    ring = RingBuffer(maxlen)
    reference: deque[Event] = deque(maxlen=maxlen)
    append = ring.appender()
    # A repeated pattern keeps generation cheap; the draws still vary every field's kind per block.
    pattern = [data.draw(_events(i)) for i in range(64)]
    for i in range(maxlen + extra):
        event = pattern[i % 64] if i % 3 else Trade.fast("x", "BTC-USDT", 10**18 + i, 10**18 + i + 5, i,
                                                          65_000.0 + i * 0.01, 0.5, Side.BUY, 10**18 + i)
        append(event)
        reference.append(event)
    assert len(ring) == len(reference)
    for n in (0, 1, 7, PACK_BLOCK, PACK_BLOCK + 1, maxlen, maxlen + 1):
        got = ring.newest(n)
        want = [reference[-1 - j] for j in range(min(n, len(reference)))]
        assert len(got) == len(want)
        assert all(_same(a, b) for a, b in zip(got, want, strict=True))
    assert all(_same(a, b) for a, b in zip(ring, reference, strict=True))
    assert len(list(ring)) == len(reference)


def test_small_ring_keeps_the_objects() -> None:
    ring = RingBuffer(PACK_ABOVE)
    events = [Trade.fast("x", "BTC-USDT", None, i, i, 1.0, 1.0, Side.BUY, None) for i in range(PACK_ABOVE + 10)]
    for event in events:
        ring.append(event)
    assert ring.newest(2)[0] is events[-1]
    assert len(ring) == PACK_ABOVE
