"""Backoff, RateLimiter and AttemptBudget, driven by a fake clock (no wall time)."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.transport.backoff import AttemptBudget, Backoff, RateLimiter


class FakeClock:
    """Time that moves only when someone sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


# --- Backoff


@settings(max_examples=300, deadline=None)
@given(
    initial=st.floats(0.001, 10),
    factor=st.floats(1, 1000),
    multiplier=st.floats(1, 4),
    attempts=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_backoff_delays_stay_within_the_exponential_ceiling(
    initial: float, factor: float, multiplier: float, attempts: int, seed: int
) -> None:
    maximum = initial * factor
    backoff = Backoff(initial, maximum, multiplier, rng=random.Random(seed))
    for n in range(attempts):
        ceiling = min(maximum, initial * multiplier**n)
        assert backoff.ceiling() == pytest.approx(ceiling)
        assert 0.0 <= backoff.next_delay() <= ceiling * (1 + 1e-9)
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.ceiling() == initial


def test_backoff_ceiling_does_not_overflow_after_many_attempts() -> None:
    backoff = Backoff(0.5, 30.0)
    for _ in range(5000):
        assert backoff.next_delay() <= 30.0
    assert backoff.ceiling() == 30.0


def test_backoff_full_jitter_spreads_over_the_whole_range() -> None:
    backoff = Backoff(1.0, 1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert min(delays) < 0.05
    assert max(delays) > 0.95
    assert 0.45 < sum(delays) / len(delays) < 0.55  # uniform on [0, 1]
    assert len(set(delays)) == len(delays)


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 1), "initial"), ((2, 1), "maximum"), ((1, 2, 0.5), "multiplier")],
)
def test_backoff_rejects_bad_parameters(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(*args)


# --- RateLimiter


@pytest.mark.anyio
async def test_rate_limiter_allows_a_burst_then_paces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, burst=5, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(5):
        await limiter.acquire()
    assert clock.now == start  # the burst is free
    for _ in range(10):
        await limiter.acquire()
    assert clock.now - start == pytest.approx(2.0)  # 10 more at 5 per second
    assert limiter.acquired == 15


@pytest.mark.anyio
async def test_rate_limiter_refills_while_idle_up_to_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.now += 100  # idle for long: refills to burst, not to 200 tokens
    for _ in range(3):
        assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.now += 0.5
    assert limiter.try_acquire()
    assert not limiter.try_acquire()


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(0.5, 50),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=60),
)
def test_rate_limiter_never_exceeds_burst_plus_rate(rate: float, burst: int, gaps: list[float]) -> None:
    """In every interval [a, b], grants <= burst + rate * (b - a)."""
    clock = FakeClock()
    limiter = RateLimiter(rate, burst=burst, clock=clock, sleep=clock.sleep)
    grants: list[float] = []

    async def run() -> None:
        for gap in gaps:
            clock.now += gap
            await limiter.acquire()
            grants.append(clock.now)

    anyio.run(run)
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            assert j - i + 1 <= burst + rate * (grants[j] - grants[i]) + 1e-6


@pytest.mark.anyio
async def test_rate_limiter_serves_concurrent_waiters_in_order() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=1, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(take, i)
            await anyio.lowlevel.checkpoint()
    assert order == [0, 1, 2, 3, 4]
    assert clock.now - 1000.0 == pytest.approx(4.0)


def test_rate_limiter_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="rate_per_second"):
        RateLimiter(0, 1)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1, 0)


# --- AttemptBudget


@pytest.mark.anyio
async def test_attempt_budget_waits_for_the_oldest_attempt_to_expire() -> None:
    clock = FakeClock()
    budget = AttemptBudget(300, 300.0, clock=clock, sleep=clock.sleep)  # Binance: 300 connects / 5 min
    for _ in range(300):
        await budget.wait_for_slot()
        clock.now += 0.1
    start = clock.now  # 30 s after the first attempt
    await budget.wait_for_slot()
    assert clock.now - start == pytest.approx(270.0)
    assert budget.available() == 0
    assert budget.recorded == 301


@settings(max_examples=100, deadline=None)
@given(
    attempts=st.integers(1, 8),
    window=st.floats(0.1, 100),
    gaps=st.lists(st.floats(0, 50), min_size=1, max_size=50),
)
def test_attempt_budget_sliding_window_invariant(attempts: int, window: float, gaps: list[float]) -> None:
    """No window of length ``window`` ever holds more than ``attempts`` recorded attempts."""
    clock = FakeClock()
    budget = AttemptBudget(attempts, window, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def run() -> None:
        for gap in gaps:
            clock.now += gap
            await budget.wait_for_slot()
            times.append(clock.now)

    anyio.run(run)
    assert times == sorted(times)
    for i in range(len(times) - attempts):
        assert times[i + attempts] - times[i] >= window * (1 - 1e-9)


def test_attempt_budget_try_record() -> None:
    clock = FakeClock()
    budget = AttemptBudget(2, 10.0, clock=clock, sleep=clock.sleep)
    assert budget.try_record()
    clock.now += 5
    assert budget.try_record()
    assert not budget.try_record()
    clock.now += 5  # the first attempt leaves the window
    assert budget.available() == 1
    assert budget.try_record()
    assert not budget.try_record()


def test_attempt_budget_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="attempts"):
        AttemptBudget(0, 1.0)
    with pytest.raises(ValueError, match="window_s"):
        AttemptBudget(1, 0)
