"""The clocks the runtime reads. One place, so tests and the simulator agree on units (ns)."""

from __future__ import annotations

import time

__all__ = ["monotonic_ns", "now_ns"]

#: Wall clock, integer nanoseconds since the Unix epoch: what ``receive_ts`` holds.
now_ns = time.time_ns
#: Monotonic clock for durations and timeouts.
monotonic_ns = time.monotonic_ns
