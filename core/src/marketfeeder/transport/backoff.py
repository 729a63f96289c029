"""Pacing for reconnects and control messages: jittered backoff, token bucket, sliding-window budget.

Exchanges publish such limits (Binance: 5 incoming messages per second per connection, 300
connection attempts per 5 minutes per IP). Each class takes an injectable ``clock`` (seconds,
monotonic) and ``sleep`` so tests drive them with a fake clock instead of wall time.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["AttemptBudget", "Backoff", "RateLimiter"]

Clock = Callable[[], float]
# A token refilled by exactly the computed wait can land a rounding error short of 1.0.
_ONE_TOKEN = 1.0 - 1e-9
Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Exponential backoff with full jitter: attempt n waits ``uniform(0, min(maximum, initial * multiplier**n))``.

    Full jitter spreads the reconnects of many clients cut at the same moment (AWS architecture
    blog, "Exponential Backoff And Jitter").
    """

    def __init__(
        self, initial: float, maximum: float, multiplier: float = 2.0, *, rng: random.Random | None = None
    ) -> None:
        if initial <= 0:
            raise ValueError(f"Backoff initial must be positive, got {initial}")
        if maximum < initial:
            raise ValueError(f"Backoff maximum ({maximum}) must be at least initial ({initial})")
        if multiplier < 1:
            raise ValueError(f"Backoff multiplier must be at least 1, got {multiplier}")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # Stop multiplying once past the cap: multiplier**attempts would overflow after ~1000 attempts.
        cap = self.initial
        for _ in range(self.attempts):
            cap *= self.multiplier
            if cap >= self.maximum:
                return self.maximum
        return min(cap, self.maximum)

    def next_delay(self) -> float:
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Call after a connection proved healthy: the next failure starts from ``initial`` again."""
        self.attempts = 0


class RateLimiter:
    """Async token bucket: ``burst`` tokens, refilled at ``rate_per_second``; ``await acquire()``.

    Waiters are served in arrival order (a lock), so a steady sender cannot starve another.
    """

    def __init__(
        self, rate_per_second: float, burst: int, *, clock: Clock = time.monotonic, sleep: Sleep = anyio.sleep
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError(f"RateLimiter rate_per_second must be positive, got {rate_per_second}")
        if burst < 1:
            raise ValueError(f"RateLimiter burst must be at least 1, got {burst}")
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock: anyio.Lock | None = None
        self.acquired = 0
        self.waited_s = 0.0

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        return now

    def try_acquire(self) -> bool:
        """Take a token if one is available now, without waiting."""
        self._refill()
        if self._tokens >= _ONE_TOKEN:
            self._tokens -= 1.0
            self.acquired += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait until a token is available and take it."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= _ONE_TOKEN:
                    self._tokens -= 1.0
                    self.acquired += 1
                    return
                wait = (1.0 - self._tokens) / self.rate
                self.waited_s += wait
                await self._sleep(wait)

    def statistics(self) -> dict[str, float]:
        self._refill()
        return {"tokens": self._tokens, "acquired": self.acquired, "waited_s": self.waited_s}


class AttemptBudget:
    """At most ``attempts`` attempts in any sliding window of ``window_s`` seconds.

    ``await wait_for_slot()`` sleeps until the oldest attempt in the window expires, then records
    the new attempt. Memory is bounded by ``attempts`` timestamps.
    """

    def __init__(
        self, attempts: int, window_s: float, *, clock: Clock = time.monotonic, sleep: Sleep = anyio.sleep
    ) -> None:
        if attempts < 1:
            raise ValueError(f"AttemptBudget attempts must be at least 1, got {attempts}")
        if window_s <= 0:
            raise ValueError(f"AttemptBudget window_s must be positive, got {window_s}")
        self.attempts = attempts
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._times: deque[float] = deque(maxlen=attempts)
        self._lock: anyio.Lock | None = None
        self.recorded = 0
        self.waited_s = 0.0

    def _prune(self, now: float) -> None:
        times = self._times
        while times and times[0] + self.window_s <= now:
            times.popleft()

    def available(self) -> int:
        """Attempts allowed right now."""
        self._prune(self._clock())
        return self.attempts - len(self._times)

    def try_record(self) -> bool:
        """Record an attempt if the window allows one now."""
        now = self._clock()
        self._prune(now)
        if len(self._times) < self.attempts:
            self._times.append(now)
            self.recorded += 1
            return True
        return False

    async def wait_for_slot(self) -> None:
        """Sleep until an attempt is allowed, then record it."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            while True:
                now = self._clock()
                self._prune(now)
                if len(self._times) < self.attempts:
                    self._times.append(now)
                    self.recorded += 1
                    return
                wait = self._times[0] + self.window_s - now
                self.waited_s += wait
                await self._sleep(wait)
