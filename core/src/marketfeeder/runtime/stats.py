"""Counters, rates and latency histograms for ``Feeder.get_performance_stats()``.

Everything here is fixed-size: a histogram is an array of log-linear buckets (8 per power of two,
so a percentile is at most 1/8 above the true value), a rate is a ring of one-second counts.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["ConnectionStats", "LatencyHistogram", "RateMeter", "SymbolStats"]

# Log-linear buckets over integer nanoseconds: values below 16 ns get one bucket each; above, each
# power of two is split into 8 buckets by the 3 bits after the leading one (relative width 1/8).
# Integer bit operations only: this runs twice per event.
_LINEAR = 16
_N_BUCKETS = _LINEAR + (64 - 4) * 8
#: The last bucket: it takes everything above the range (durations of more than 2**63 ns).
_LAST_BUCKET = _N_BUCKETS - 1


class LatencyHistogram:
    """A bounded latency histogram fed with nanosecond durations, read in milliseconds.

    The count is the sum of the buckets, worked out when read: recording touches the bucket, the total
    and the maximum only (the dispatcher records inline, with the same arithmetic as :meth:`record`).
    """

    __slots__ = ("_buckets", "max_ns", "total_ns")

    def __init__(self) -> None:
        self._buckets = [0] * _N_BUCKETS
        self.total_ns = 0
        self.max_ns = 0

    @property
    def count(self) -> int:
        return sum(self._buckets)

    def record(self, ns: int) -> None:
        if ns < _LINEAR:
            if ns < 0:
                ns = 0  # clocks of two machines: a negative latency is skew, counted as zero
            self._buckets[ns] += 1
        else:
            shift = ns.bit_length() - 4
            # (ns >> shift) is the top four bits, 8..15: index = 16 + (shift - 1) * 8 + (top - 8).
            index = shift * 8 + (ns >> shift)
            self._buckets[index if index < _N_BUCKETS else _N_BUCKETS - 1] += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    @staticmethod
    def _bucket_upper_ns(index: int) -> int:
        """The largest value that falls in bucket ``index``."""
        if index < _LINEAR:
            return index
        shift, top = divmod(index - _LINEAR, 8)
        return ((9 + top) << (shift + 1)) - 1

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) in ms: the upper edge of its bucket, capped by the true maximum."""
        count = self.count
        if count == 0:
            return 0.0
        target = max(1, math.ceil(q * count))
        seen = 0
        for index, n in enumerate(self._buckets):
            seen += n
            if seen >= target:
                return min(self._bucket_upper_ns(index), self.max_ns) / 1e6
        return self.max_ns / 1e6

    def summary(self) -> dict[str, float | int]:
        count = self.count
        if count == 0:
            return {"count": 0, "avg": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "count": count,
            "avg": round(self.total_ns / count / 1e6, 4),
            "p50": round(self.percentile(0.50), 4),
            "p99": round(self.percentile(0.99), 4),
            "max": round(self.max_ns / 1e6, 4),
        }


class RateMeter:
    """Recent events per second from samples of a running count (nothing per event).

    ``sample(now, count)`` is called about once a second (the feeder's ticker, and every read);
    ``rate`` divides the count's growth by the time since the oldest sample in the window.
    """

    __slots__ = ("_samples", "_window_ns")

    def __init__(self, window: float = 5.0) -> None:
        self._window_ns = int(window * 1e9)
        self._samples: deque[tuple[int, int]] = deque(maxlen=int(window) * 2 + 2)

    def sample(self, now_ns: int, count: int) -> None:
        samples = self._samples
        if not samples or now_ns - samples[-1][0] >= 500_000_000:
            samples.append((now_ns, count))

    def rate(self, now_ns: int, count: int) -> float:
        self.sample(now_ns, count)
        for at, then in self._samples:
            if now_ns - at <= self._window_ns:
                elapsed = now_ns - at
                return (count - then) * 1e9 / elapsed if elapsed > 0 else 0.0
        return 0.0


class SymbolStats:
    """Per ``exchange:SYMBOL``: what arrived, how late, and what went wrong."""

    __slots__ = (
        "book_state",
        "callback_errors",
        "delivery_latency",
        "dropped_by_backpressure",
        "exchange_latency",
        "gaps",
        "message_count",
        "rate",
        "reconnects",
        "resyncs",
        "validation_failures",
    )

    def __init__(self) -> None:
        self.message_count = 0
        self.callback_errors = 0
        self.gaps = 0
        self.resyncs = 0
        self.reconnects = 0
        self.dropped_by_backpressure = 0
        self.validation_failures: dict[str, int] = {}
        self.book_state: str | None = None
        self.rate = RateMeter()
        self.exchange_latency = LatencyHistogram()
        self.delivery_latency = LatencyHistogram()

    def as_dict(self, now_ns: int) -> dict[str, Any]:
        failures = sum(self.validation_failures.values())
        return {
            "message_count": self.message_count,
            "error_count": failures + self.callback_errors,
            "msgs_per_s": round(self.rate.rate(now_ns, self.message_count), 3),
            "latency_ms": {
                "exchange_to_receive": self.exchange_latency.summary(),
                "receive_to_delivered": self.delivery_latency.summary(),
            },
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "reconnects": self.reconnects,
            "dropped_by_backpressure": self.dropped_by_backpressure,
            "validation_failures": dict(self.validation_failures),
            "callback_errors": self.callback_errors,
            "book_state": self.book_state,
            "by_type": {},
        }


class ConnectionStats:
    """Per WebSocket connection slot (it survives reconnects and rotations)."""

    __slots__ = (
        "connected",
        "connects",
        "control_errors",
        "decode_errors",
        "last_error",
        "last_frame_ns",
        "message_count",
        "rate",
        "reconnects",
        "rotations",
        "silent_streams",
        "stale_streams",
        "stalls",
        "streams",
        "unhandled",
        "url",
    )

    def __init__(self) -> None:
        self.message_count = 0
        self.decode_errors = 0
        self.unhandled = 0
        self.control_errors = 0
        self.connects = 0
        self.reconnects = 0
        self.rotations = 0
        self.stalls = 0
        self.connected = False
        self.last_error = ""
        self.last_frame_ns = 0
        self.url = ""
        self.streams = 0
        self.silent_streams: list[str] = []
        self.stale_streams: list[str] = []
        self.rate = RateMeter()

    def as_dict(self, now_ns: int) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "url": self.url,
            "streams": self.streams,
            "message_count": self.message_count,
            "msgs_per_s": round(self.rate.rate(now_ns, self.message_count), 3),
            "error_count": self.decode_errors + self.control_errors,
            "decode_errors": self.decode_errors,
            "unhandled": self.unhandled,
            "control_errors": self.control_errors,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "rotations": self.rotations,
            "stalls": self.stalls,
            "last_error": self.last_error,
            "last_frame_age_s": round((now_ns - self.last_frame_ns) / 1e9, 3) if self.last_frame_ns else None,
            "silent_streams": list(self.silent_streams),
            "stale_streams": list(self.stale_streams),
        }
