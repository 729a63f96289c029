"""Clock alignment per exchange: offset and one-way latency estimates, drift detection.

Definitions (all integer nanoseconds):

- ``offset = exchange clock - local clock``. A corrected exchange time, on the local time line, is
  ``exchange_ts - offset``.
- For a stream frame, ``receive_ts - exchange_ts = one_way_latency - offset``.

Two kinds of samples feed the estimate:

1. REST server-time round trips (NTP style): with local send time ``t0``, server time ``s`` and local
   receive time ``t1``, ``offset ≈ s - (t0 + t1) / 2`` with an error of at most ``(t1 - t0) / 2``. The
   estimate is taken from the sample with the smallest round trip in a sliding window, the one least
   disturbed by queueing.
2. Stream frames: the running minimum of ``receive_ts - exchange_ts`` over a window is
   ``min_latency - offset``; with the REST offset known it gives the minimum one-way latency. Without a
   REST sample it still bounds the offset (the latency cannot be negative).

Exchange clocks tick in milliseconds (Binance) or microseconds (Backpack); the estimator works in ns
and reports the resolution it saw so a 1 ms granularity is not mistaken for jitter.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ClockEstimate", "ClockEstimator", "ClockSync"]

NS_PER_MS = 1_000_000
#: Drift (ppm) is only reported once the offset samples span this long.
MIN_DRIFT_SPAN_NS = 60 * 1_000_000_000


@attrs.frozen
class ClockEstimate:
    exchange: str
    #: exchange clock minus local clock (ns); None until a sample arrived.
    offset_ns: int | None
    #: half the best round trip: the offset's error bound (ns).
    offset_error_ns: int | None
    #: smallest observed one-way latency (ns), from stream frames corrected by the offset.
    min_latency_ns: int | None
    #: rate of change of the offset in parts per million (positive: the exchange clock runs fast).
    drift_ppm: float | None
    #: True when the offset moved more than the drift threshold.
    drifting: bool
    rest_samples: int
    stream_samples: int

    def as_dict(self) -> dict[str, Any]:
        def ms(value: int | None) -> float | None:
            return None if value is None else value / NS_PER_MS

        return {
            "offset_ms": ms(self.offset_ns),
            "offset_error_ms": ms(self.offset_error_ns),
            "min_latency_ms": ms(self.min_latency_ns),
            "drift_ppm": self.drift_ppm,
            "drifting": self.drifting,
            "rest_samples": self.rest_samples,
            "stream_samples": self.stream_samples,
        }


class _WindowMin:
    """Minimum over a sliding time window, O(1) amortised (monotonic deque)."""

    __slots__ = ("_items", "window_ns")

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._items: collections.deque[tuple[int, int]] = collections.deque()

    def add(self, at_ns: int, value: int) -> None:
        items = self._items
        while items and items[-1][1] >= value:
            items.pop()
        items.append((at_ns, value))
        horizon = at_ns - self.window_ns
        while items[0][0] < horizon:
            items.popleft()

    def value(self) -> int | None:
        return self._items[0][1] if self._items else None


class ClockEstimator:
    """Offset, latency and drift of one exchange's clock against the local clock."""

    def __init__(
        self,
        exchange: str,
        *,
        window_s: float = 300.0,
        max_rest_samples: int = 64,
        drift_threshold_ms: float = 50.0,
    ) -> None:
        self.exchange = exchange
        self._rest: collections.deque[tuple[int, int, int]] = collections.deque(maxlen=max_rest_samples)
        self._stream_min = _WindowMin(int(window_s * 1e9))
        self._first_offset: tuple[int, int] | None = None  # (local time, offset) of the first good sample
        self.drift_threshold_ns = int(drift_threshold_ms * NS_PER_MS)
        self.rest_samples = 0
        self.stream_samples = 0

    # --- samples ---------------------------------------------------------------------------------

    def add_rest_sample(self, sent_ns: int, server_ns: int, received_ns: int) -> None:
        """One server-time request: local send time, the server's time, local receive time."""
        if received_ns < sent_ns:
            raise ValueError("received_ns is before sent_ns: local clock went backwards")
        rtt = received_ns - sent_ns
        offset = server_ns - (sent_ns + received_ns) // 2
        self._rest.append((received_ns, rtt, offset))
        self.rest_samples += 1
        if self._first_offset is None:
            self._first_offset = (received_ns, offset)

    def add_stream_sample(self, exchange_ts: int | None, receive_ts: int) -> None:
        """One frame's exchange time and receive time (hot path: two comparisons and a deque op)."""
        if exchange_ts is None:
            return
        self.stream_samples += 1
        self._stream_min.add(receive_ts, receive_ts - exchange_ts)

    # --- estimates -------------------------------------------------------------------------------

    def _best_rest(self) -> tuple[int, int, int] | None:
        return min(self._rest, key=lambda sample: sample[1]) if self._rest else None

    def offset_ns(self) -> int | None:
        best = self._best_rest()
        if best is not None:
            return best[2]
        lowest = self._stream_min.value()
        # Without a round trip, assume the fastest frame had zero latency: an upper bound on -offset.
        return None if lowest is None else -lowest

    def corrected(self, exchange_ts: int) -> int:
        """An exchange timestamp on the local time line (unchanged until an offset is known)."""
        offset = self.offset_ns()
        return exchange_ts if offset is None else exchange_ts - offset

    def estimate(self) -> ClockEstimate:
        best = self._best_rest()
        offset = self.offset_ns()
        lowest = self._stream_min.value()
        min_latency = None if (lowest is None or best is None) else max(0, lowest + best[2])
        drift_ppm: float | None = None
        drifting = False
        if best is not None and self._first_offset is not None:
            first_at, first_offset = self._first_offset
            elapsed = best[0] - first_at
            change = best[2] - first_offset
            # A rate from samples seconds apart is noise divided by a small number: wait for minutes.
            if elapsed >= MIN_DRIFT_SPAN_NS:
                drift_ppm = change / elapsed * 1e6
            drifting = abs(change) > self.drift_threshold_ns
        return ClockEstimate(
            exchange=self.exchange,
            offset_ns=offset,
            offset_error_ns=None if best is None else best[1] // 2,
            min_latency_ns=min_latency,
            drift_ppm=drift_ppm,
            drifting=drifting,
            rest_samples=self.rest_samples,
            stream_samples=self.stream_samples,
        )


class ClockSync:
    """One estimator per exchange."""

    def __init__(self, **estimator_options: Any) -> None:
        self._options = estimator_options
        self.clocks: dict[str, ClockEstimator] = {}

    def clock(self, exchange: str) -> ClockEstimator:
        estimator = self.clocks.get(exchange)
        if estimator is None:
            estimator = self.clocks[exchange] = ClockEstimator(exchange, **self._options)
        return estimator

    def corrected(self, exchange: str, exchange_ts: int) -> int:
        return self.clock(exchange).corrected(exchange_ts)

    def estimates(self) -> Mapping[str, ClockEstimate]:
        return {name: clock.estimate() for name, clock in self.clocks.items()}
