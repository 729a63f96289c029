"""Fault plans: parsing, errors, and the per-frame and per-record injectors."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.models import DataType
from marketfeeder.sim.faults import (
    ABORT,
    FRAME_FAULTS,
    RECORD_FAULTS,
    REST_FAULTS,
    UNKNOWN_FIELD,
    ConnectionFaults,
    FaultCounters,
    FaultPlan,
    OutItem,
    RecordFaults,
    parse_duration,
)
from marketfeeder.sim.model import SimBookTicker, SimTrade
from marketfeeder.sim.venue import SimConnection, SimFrame

FULL_SPEC = (
    "drop_conn=0.001,skip_ids=0.01,dup=0.01,reorder=0.01,malformed=0.001,truncated=0.001,"
    "unknown_fields=0.01,unknown_event=0.001,stall=every:30s:5s,slow=0.0,rest_500=0.1,rest_429=0.05,"
    "rest_timeout=0.02,crossed=0.001,off_grid=0.001,spike=0.001,disconnect_every=10s"
)


def test_parse_the_documented_spec() -> None:
    plan = FaultPlan.parse(FULL_SPEC)
    assert plan.skip_ids == 0.01 and plan.drop_conn == 0.001 and plan.rest_429 == 0.05
    assert plan.stall == (30.0, 5.0)
    assert plan.disconnect_every == 10.0
    assert plan.frame_faults and plan.record_faults and plan.rest_faults
    assert FaultPlan.parse(plan.spec()) == plan
    assert FaultPlan.parse("") == FaultPlan()
    assert not FaultPlan().frame_faults and not FaultPlan().record_faults and not FaultPlan().rest_faults
    assert FaultPlan.parse("dup=0.5", seed=9).seed == 9
    assert FaultPlan.parse("dup=0.5,seed=4", seed=9).seed == 4
    assert FaultPlan.parse(" dup = 0.5 , seed=4, retry_after=3, rest_delay=250ms") == FaultPlan(
        dup=0.5, seed=4, retry_after=3, rest_delay=0.25
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dupe=0.1", "unknown fault 'dupe'"),
        ("dup=2", "'dup': probability must be between 0 and 1"),
        ("dup=often", "'dup': 'often' is not a probability"),
        ("dup", "not key=value"),
        ("dup=0.1,dup=0.2", "'dup' is given twice"),
        ("stall=30s", "'stall': expected every:INTERVAL:DURATION"),
        ("stall=every:5s:10s", "0 < duration < interval"),
        ("disconnect_every=soon", "invalid duration 'soon'"),
        ("disconnect_every=0s", "positive duration"),
        ("seed=x", "'seed' must be an integer"),
    ],
)
def test_parse_errors_name_the_culprit(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        FaultPlan.parse(spec)


def test_durations() -> None:
    assert parse_duration("30s") == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1.5") == 1.5
    with pytest.raises(ValueError, match="-1s"):
        parse_duration("-1s")


@settings(max_examples=200, deadline=None)
@given(
    probs=st.dictionaries(
        st.sampled_from(FRAME_FAULTS + RECORD_FAULTS + REST_FAULTS),
        st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    ),
)
def test_spec_round_trip(probs: dict[str, Any]) -> None:
    plan = FaultPlan(**probs)
    assert FaultPlan.parse(plan.spec()) == plan


class Conn:
    def __init__(self) -> None:
        self.id = 1
        self.path = "/ws"
        self.query: Mapping[str, str] = {}
        self.streams: set[str] = set()
        self.state: dict[str, Any] = {}


def wrap(conn: SimConnection, frame: SimFrame) -> str:
    return '{"stream":"' + frame.stream + '","data":' + frame.payload + "}"


def frames(n: int) -> list[SimFrame]:
    return [SimFrame("s@depth", orjson.dumps({"u": i}).decode(), DataType.ORDERBOOK) for i in range(n)]


def run(plan: FaultPlan, n: int = 2_000) -> tuple[list[OutItem], FaultCounters]:
    counters = FaultCounters()
    faults = ConnectionFaults(plan, counters, "seed", opened=0.0)
    out: list[OutItem] = []
    conn = Conn()
    for frame in frames(n):
        faults.apply(conn, frame, wrap, out, now=0.5)
    return out, counters


def test_each_frame_fault_alone_is_counted_once_per_injection() -> None:
    out, counters = run(FaultPlan(dup=0.1))
    assert len(out) == 2_000 + counters["dup"] and counters["dup"] > 100
    out, counters = run(FaultPlan(skip_ids=0.1))
    assert len(out) == 2_000 - counters["skip_ids"] and counters["skip_ids"] > 100
    out, counters = run(FaultPlan(reorder=0.1))
    ids = [orjson.loads(t)["data"]["u"] for t in out if isinstance(t, str)]
    assert sorted(ids) == list(range(2_000)) or sorted(ids) == [i for i in range(2_000) if i != 1_999]
    assert sum(1 for a, b in itertools.pairwise(ids) if b < a) == counters["reorder"] - (len(ids) < 2_000)
    out, counters = run(FaultPlan(unknown_fields=0.1))
    assert (
        sum(1 for t in out if isinstance(t, str) and UNKNOWN_FIELD in orjson.loads(t)["data"])
        == counters["unknown_fields"]
    )
    out, counters = run(FaultPlan(drop_conn=0.01))
    assert out[-1] is ABORT and counters["drop_conn"] == 1  # nothing after the drop
    assert counters.injected() == {"drop_conn": 1}


def test_stall_windows() -> None:
    counters = FaultCounters()
    faults = ConnectionFaults(FaultPlan(stall=(1.0, 0.4)), counters, "s", opened=100.0)
    out: list[OutItem] = []
    conn = Conn()
    (frame,) = frames(1)
    for now in (100.5, 101.1, 101.2, 101.5, 102.3, 103.5):
        faults.apply(conn, frame, wrap, out, now=now)
    # Windows [101, 101.4) and [102, 102.4): two stalls, three silenced frames.
    assert counters["stall"] == 2
    assert faults.stalled_frames == 3
    assert len(out) == 3


def test_record_faults_corrupt_prices() -> None:
    bt = SimBookTicker("BTC-USDT", 7, "100.10", "1.0", "100.20", "2.0", 0, 0)
    trade = SimTrade("BTC-USDT", 1, "100.10", "0.5", False, 0, 0, 1, 2)
    crossed, kind = RecordFaults(FaultPlan(crossed=1.0), FaultCounters(), "s").apply(bt, "0.01")
    assert (
        kind == "crossed" and isinstance(crossed, SimBookTicker) and float(crossed.bid) > float(crossed.ask)
    )
    off, kind = RecordFaults(FaultPlan(off_grid=1.0), FaultCounters(), "s").apply(trade, "0.01")
    assert kind == "off_grid" and isinstance(off, SimTrade) and off.price == "100.105"
    spike, kind = RecordFaults(FaultPlan(spike=1.0), FaultCounters(), "s").apply(trade, "0.01")
    assert kind == "spike" and isinstance(spike, SimTrade) and spike.price == "150.15"
    same, kind = RecordFaults(FaultPlan(crossed=1.0), FaultCounters(), "s").apply(trade, "0.01")
    assert kind is None and same is trade  # trades cannot be crossed
    assert trade.price == "100.10"  # the engine's record is untouched
