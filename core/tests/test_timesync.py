"""Clock alignment: offsets from round trips, latency from stream minima, drift flags, ms and µs clocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketfeeder.timesync import ClockEstimator, ClockSync

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def test_offset_from_the_smallest_round_trip() -> None:
    clock = ClockEstimator("binance")
    true_offset = 250 * MS  # exchange clock runs 250 ms ahead
    # A slow round trip with an asymmetric delay, then a fast symmetric one.
    clock.add_rest_sample(T0, T0 + true_offset + 90 * MS, T0 + 100 * MS)
    clock.add_rest_sample(T0 + 1_000 * MS, T0 + 1_000 * MS + true_offset + 2 * MS, T0 + 1_004 * MS)
    estimate = clock.estimate()
    assert estimate.offset_ns == true_offset
    assert estimate.offset_error_ns == 2 * MS
    assert clock.corrected(T0 + true_offset) == T0


def test_min_latency_from_stream_frames_with_ms_clock() -> None:
    clock = ClockEstimator("binance")
    offset = -30 * MS  # exchange clock 30 ms behind
    clock.add_rest_sample(T0, T0 + offset + 1 * MS, T0 + 2 * MS)
    for i, latency_ms in enumerate([12, 7, 9, 30]):
        receive = T0 + (i + 1) * 1_000 * MS
        exchange_ts = (receive + offset - latency_ms * MS) // MS * MS  # exchange time has ms resolution
        clock.add_stream_sample(exchange_ts, receive)
    estimate = clock.estimate()
    assert estimate.min_latency_ns is not None
    assert 7 * MS <= estimate.min_latency_ns < 8 * MS
    assert estimate.stream_samples == 4


def test_microsecond_clock_keeps_its_precision() -> None:
    clock = ClockEstimator("backpack")
    offset = 1_234_567  # 1.234567 ms, below millisecond resolution
    clock.add_rest_sample(T0, T0 + offset + 500_000, T0 + 1_000_000)
    receive = T0 + 5_000_000_000
    clock.add_stream_sample(receive + offset - 3_000_000, receive)  # exactly 3 ms latency
    estimate = clock.estimate()
    assert estimate.offset_ns == offset
    assert estimate.min_latency_ns == 3_000_000


def test_drift_is_flagged_beyond_threshold() -> None:
    clock = ClockEstimator("binance", drift_threshold_ms=50)
    clock.add_rest_sample(T0, T0 + 1 * MS, T0 + 2 * MS)
    assert not clock.estimate().drifting
    hour = 3_600_000 * MS
    clock._rest.clear()  # the newest good sample now shows a 120 ms move
    clock.add_rest_sample(T0 + hour, T0 + hour + 121 * MS, T0 + hour + 2 * MS)
    estimate = clock.estimate()
    assert estimate.drifting
    assert estimate.drift_ppm == pytest.approx(120 * MS / hour * 1e6)


def test_without_round_trip_stream_minimum_bounds_the_offset() -> None:
    clock = ClockEstimator("backpack")
    assert clock.offset_ns() is None
    assert clock.corrected(123) == 123
    clock.add_stream_sample(T0 - 5 * MS, T0)
    assert clock.offset_ns() == -5 * MS


def test_window_forgets_old_minimum() -> None:
    clock = ClockEstimator("binance", window_s=10)
    clock.add_stream_sample(T0 - 1 * MS, T0)
    clock.add_stream_sample(T0 + 20_000 * MS - 9 * MS, T0 + 20_000 * MS)
    assert clock.offset_ns() == -9 * MS
    with pytest.raises(ValueError, match="clock went backwards"):
        clock.add_rest_sample(T0 + 5, T0, T0)


@given(
    offset=st.integers(-10**10, 10**10),
    delays=st.lists(st.tuples(st.integers(0, 10**8), st.integers(0, 10**8)), min_size=1, max_size=20),
)
def test_offset_error_bound_holds(offset: int, delays: list[tuple[int, int]]) -> None:
    """The estimate is within its stated error of the true offset, whatever the path delays."""
    clock = ClockEstimator("x")
    t = T0
    for up, down in delays:
        clock.add_rest_sample(t, t + up + offset, t + up + down)
        t += 10**9
    estimate = clock.estimate()
    assert estimate.offset_ns is not None and estimate.offset_error_ns is not None
    assert abs(estimate.offset_ns - offset) <= estimate.offset_error_ns + 1


def test_clock_sync_keeps_one_estimator_per_exchange() -> None:
    sync = ClockSync()
    sync.clock("binance").add_rest_sample(T0, T0 + 5 * MS, T0)
    assert sync.corrected("binance", T0 + 5 * MS) == T0
    assert sync.corrected("backpack", 42) == 42
    assert set(sync.estimates()) == {"binance", "backpack"}
    assert sync.estimates()["binance"].as_dict()["offset_ms"] == 5.0


def test_drift_rate_waits_for_samples_minutes_apart() -> None:
    clock = ClockEstimator("binance")
    clock.add_rest_sample(T0, T0 + 1 * MS, T0 + 2 * MS)
    clock.add_rest_sample(T0 + 200 * MS, T0 + 200 * MS + 1 * MS, T0 + 200 * MS + 1 * MS)  # 0.5 ms better, 0.2 s later
    assert clock.estimate().drift_ppm is None
