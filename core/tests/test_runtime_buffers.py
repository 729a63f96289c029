"""Bounded buffers, histograms, rates and de-duplication windows of the runtime."""

from __future__ import annotations

import math

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.models import DataType, Gap, Side, Trade
from marketfeeder.runtime.buffers import EventQueue, QueueClosed, RingBuffer
from marketfeeder.runtime.pipeline import SeqWindow
from marketfeeder.runtime.stats import LatencyHistogram, RateMeter


def trade(i: int, symbol: str = "BTC-USDT") -> Trade:
    return Trade.fast("x", symbol, None, 1_000 + i, i, 1.0, 1.0, Side.BUY, None)


def test_ring_buffer_newest_first() -> None:
    ring = RingBuffer(3)
    assert ring.newest(1) == []
    for i in range(5):
        ring.append(trade(i))
    assert [e.seq for e in ring.newest(10)] == [4, 3, 2]
    assert [e.seq for e in ring.newest(1)] == [4]
    assert ring.newest(0) == []
    assert len(ring) == 3


def test_queue_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        EventQueue("q", 0)
    with pytest.raises(ValueError, match="overflow"):
        EventQueue("q", 1, "spill")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_block_queue_parks_and_keeps_order() -> None:
    queue = EventQueue("q", 2, "block")
    assert queue.put_nowait(trade(0)) and queue.put_nowait(trade(1))
    assert not queue.put_nowait(trade(2))  # full: parked
    assert not queue.put_nowait(trade(3))  # parked events go first: this one waits too
    assert queue.statistics()["parked"] == 2
    got: list[int | None] = []
    async with anyio.create_task_group() as tg:

        async def producer() -> None:
            await queue.wait_parked()
            got.append(-1)  # marks when the producer was released

        tg.start_soon(producer)
        await anyio.sleep(0.01)
        assert got == []
        for _ in range(4):
            event = await queue.get()
            got.append(event.seq)
    assert got[:2] == [0, 1] and -1 in got and [g for g in got if g != -1] == [0, 1, 2, 3]
    assert queue.dropped == 0


@pytest.mark.anyio
async def test_drop_oldest_marks_the_loss_with_a_gap() -> None:
    queue = EventQueue("slow", 3, "drop_oldest")
    for i in range(10):
        assert queue.put_nowait(trade(i))
    batch = await queue.get_batch(100, 0)
    gap, *rest = batch
    assert isinstance(gap, Gap)
    assert gap.reason == "backpressure:slow" and gap.count == 7 and gap.gap_type is DataType.TRADES
    assert [e.seq for e in rest] == [7, 8, 9]
    assert queue.statistics()["dropped_by_backpressure"] == 7


@pytest.mark.anyio
async def test_drop_oldest_one_gap_per_symbol_via_get() -> None:
    queue = EventQueue("s", 2, "drop_oldest")
    for i in range(4):
        queue.put_nowait(trade(i, "A-B"))
    for i in range(4, 6):
        queue.put_nowait(trade(i, "C-D"))
    first = await queue.get()
    assert isinstance(first, Gap) and first.symbol == "A-B" and first.count == 4
    assert [(await queue.get()).seq for _ in range(2)] == [4, 5]


@pytest.mark.anyio
async def test_close_keeps_parked_events_and_then_ends() -> None:
    queue = EventQueue("q", 1, "block")
    queue.put_nowait(trade(0))
    assert not queue.put_nowait(trade(1))
    queue.close()
    assert queue.put_nowait(trade(2))  # after close: discarded, counted
    assert [e.seq for e in await queue.get_batch(10, 1.0)] == [0, 1]
    with pytest.raises(QueueClosed):
        await queue.get()
    assert queue.discarded_after_failure == 1


@pytest.mark.anyio
async def test_kill_releases_blocked_producers() -> None:
    queue = EventQueue("q", 1, "block")
    queue.put_nowait(trade(0))
    assert not queue.put_nowait(trade(1))
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.wait_parked)
            await anyio.sleep(0.01)
            queue.kill()
    assert len(queue) == 0


@pytest.mark.anyio
async def test_get_batch_waits_to_fill_up_to_max_wait() -> None:
    queue = EventQueue("q", 100, "block")

    async def feed() -> None:
        for i in range(5):
            await anyio.sleep(0.005)
            queue.put_nowait(trade(i))

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed)
        batch = await queue.get_batch(5, 5.0)
    assert [e.seq for e in batch] == [0, 1, 2, 3, 4]


def test_trim_parked_bounds_unwaited_producers() -> None:
    queue = EventQueue("q", 2, "block")
    for i in range(10):
        queue.put_nowait(trade(i))
        queue.trim_parked()
    assert len(queue) <= 2 + 2
    assert queue.dropped == 10 - len(queue)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.9, 0.99]))
def test_histogram_percentile_is_close(values: list[int], q: float) -> None:
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    exact_ms = sorted(values)[max(1, math.ceil(q * len(values))) - 1] / 1e6
    got = hist.percentile(q)
    # The answer is the upper edge of the true value's bucket (capped by the maximum): never below
    # the true value and at most one sub-bucket (1/8 of a power of two) above it.
    assert got >= exact_ms - 1e-12
    assert got <= exact_ms * 1.125 + 1e-9
    assert hist.summary()["max"] == round(max(values) / 1e6, 4)


def test_histogram_negative_is_zero_and_empty_summary() -> None:
    hist = LatencyHistogram()
    assert hist.summary() == {"count": 0, "avg": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    hist.record(-5)
    assert hist.summary()["max"] == 0.0


def test_rate_meter_uses_the_recent_window() -> None:
    meter = RateMeter(window=5)
    second = 1_000_000_000
    base = 1_000 * second
    count = 0
    assert meter.rate(base, count) == 0.0  # a single sample says nothing yet
    for i in range(1, 11):
        count += 100 if i <= 5 else 10  # 100/s for five seconds, then 10/s
        meter.sample(base + i * second, count)
    assert meter.rate(base + 10 * second, count) == pytest.approx(10.0)
    assert meter.rate(base + 10 * second + second // 2, count) == pytest.approx(40 / 4.5)  # from the 6 s sample


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=400))
def test_seq_window_drops_exactly_recent_duplicates(seqs: list[int]) -> None:
    window = SeqWindow(size=64)
    recent: list[int] = []
    for seq in seqs:
        expected_new = seq not in recent
        assert window.add(seq) is expected_new
        if expected_new:
            recent.append(seq)
            if len(recent) > 64:
                recent.pop(0)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=8),
       st.lists(st.tuples(st.sampled_from(["put", "take"]), st.integers(min_value=1, max_value=6)), max_size=40))
def test_drop_oldest_accounting(maxsize: int, ops: list[tuple[str, int]]) -> None:
    """Whatever the interleaving: order is kept, and delivered + dropped (as told by Gaps) = accepted."""
    queue = EventQueue("p", maxsize, "drop_oldest")
    received: list[int] = []
    reported = 0
    counter = 0

    async def main() -> None:
        nonlocal reported, counter
        for op, n in ops:
            if op == "put":
                for _ in range(n):
                    queue.put_nowait(trade(counter))
                    counter += 1
            elif len(queue) or queue.dropped > reported:
                for event in await queue.get_batch(n, 0):
                    if isinstance(event, Gap):
                        reported += event.count or 0
                    else:
                        received.append(event.seq or 0)
        queue.close()
        while True:
            try:
                event = await queue.get()
            except QueueClosed:
                break
            if isinstance(event, Gap):
                reported += event.count or 0
            else:
                received.append(event.seq or 0)

    anyio.run(main)
    assert received == sorted(received)
    assert len(received) + reported == counter == queue.accepted
    assert reported == queue.dropped


@pytest.mark.anyio
async def test_a_full_queue_wakes_a_batch_consumer_at_once() -> None:
    """A queue smaller than the batch size: the consumer must not wait out max_wait while it is full."""
    queue = EventQueue("q", 3, "block")
    with anyio.fail_after(2):  # max_wait is 60 s: only the full-queue wake-up can end this in time
        async with anyio.create_task_group() as tg:

            async def produce() -> None:
                for i in range(3):
                    await anyio.sleep(0.001)
                    queue.put_nowait(trade(i))

            tg.start_soon(produce)
            batch = await queue.get_batch(1000, 60.0)
    assert [e.seq for e in batch] == [0, 1, 2]
