from __future__ import annotations

import enum
import importlib.metadata
import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
import attrs
import duckdb
import pytest
from duckdb_helpers import T0, one_of_each, trade
from hypothesis import given, settings
from hypothesis import strategies as st

import marketfeeder_duckdb.plugin
from marketfeeder.models import Event, Side, Trade, event_class
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder.sinks.base import Sink
from marketfeeder_duckdb import DuckDBOptionsError, DuckDBSink, History
from marketfeeder_duckdb.sink import EVENT_TABLES

pytestmark = pytest.mark.anyio


def _rows(path: Path, table: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(f"SELECT * FROM {table} ORDER BY rowid")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def test_hook_registers_sink_factory() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(marketfeeder_duckdb.plugin, name="duckdb")
    factory = collect(pm, "marketfeeder_register_sinks", "sink")["duckdb"]
    sink = factory({"target": "unused.duckdb"})
    assert isinstance(sink, DuckDBSink)
    assert isinstance(sink, Sink)


def test_entry_point_is_declared() -> None:
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="marketfeeder")}
    assert names.get("duckdb") == "marketfeeder_duckdb.plugin"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "'target'"),
        ({"target": "x", "batch_sise": 5}, "batch_sise"),
        ({"target": "x", "batch_size": 0}, "batch_size"),
        ({"target": "x", "commit_interval": -1}, "commit_interval"),
        ({"target": "x", "path": "y"}, "not both"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DuckDBOptionsError, match=message):
        DuckDBSink(options)


def test_path_alias() -> None:
    assert DuckDBSink({"path": "a.duckdb"}).path == Path("a.duckdb")


async def test_every_event_type_is_stored_with_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    events = one_of_each()
    sink = DuckDBSink({"target": str(path), "snapshot_interval": 0})
    await sink.open()
    await sink.write_batch(events)
    await sink.close()
    assert sink.statistics()["events"] == len(events)

    for event in events:
        table = EVENT_TABLES[type(event)]
        if table in ("book_snapshots", "book_deltas"):
            continue
        rows = [r for r in _rows(path, table) if r["receive_ts"] == event.receive_ts]
        assert len(rows) == 1, table
        expected = {f.name: _plain(getattr(event, f.name)) for f in attrs.fields(type(event))}  # type: ignore[arg-type]
        assert rows[0] == expected, table

    snap = _rows(path, "book_snapshots")
    assert [(r["side"], r["idx"], r["price"], r["size"], r["seq"]) for r in snap] == [
        ("bid", 0, 99.5, 1.0, 100),
        ("bid", 1, 99.0, 2.0, 100),
        ("ask", 0, 100.5, 1.5, 100),
    ]
    assert len({r["snapshot_id"] for r in snap}) == 1
    deltas = _rows(path, "book_deltas")
    assert [(r["side"], r["idx"], r["price"], r["size"], r["seq"], r["first_seq"]) for r in deltas] == [
        ("bid", 0, 99.5, 0.0, 102, 101),
        ("bid", 1, 99.2, 3.0, 102, 101),
    ]


async def test_rows_keep_arrival_order_across_batches_and_commits(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    sink = DuckDBSink({"target": str(path), "batch_size": 7, "commit_interval": 3600, "snapshot_interval": 0})
    await sink.open()
    for start in range(0, 100, 9):
        await sink.write_batch([trade(i) for i in range(start, min(start + 9, 100))])
    await sink.flush()
    await sink.write_batch([trade(i) for i in range(100, 105)])
    await sink.close()
    assert [r["seq"] for r in _rows(path, "trades")] == list(range(105))
    stats = sink.statistics()
    assert stats["tables"]["trades"] == 105
    assert stats["pending"] == 0
    assert stats["uncommitted"] == 0


async def test_flush_commits_everything_accepted(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    sink = DuckDBSink({"target": str(path), "batch_size": 1000, "commit_interval": 3600, "snapshot_interval": 0})
    await sink.open()
    await sink.write_batch([trade(i) for i in range(10)])
    assert sink.statistics()["pending"] == 10
    await sink.flush()
    snapshot = await sink.snapshot()  # a consistent copy of the committed state, readable now
    with History(snapshot) as history:
        assert history.trades("binance", "BTC-USDT").num_rows == 10
    await sink.close()


async def test_empty_book_events_are_kept(tmp_path: Path) -> None:
    from marketfeeder.models import BookDelta, BookSnapshot

    path = tmp_path / "db.duckdb"
    sink = DuckDBSink({"target": str(path), "snapshot_interval": 0})
    await sink.open()
    await sink.write_batch(
        [
            BookSnapshot.fast("x", "A-B", None, T0, 5, (), ()),
            BookDelta.fast("x", "A-B", None, T0 + 1, 6, 6, (), (), None),
        ]
    )
    await sink.close()
    assert [(r["seq"], r["side"], r["price"]) for r in _rows(path, "book_snapshots")] == [(5, None, None)]
    assert [(r["seq"], r["side"]) for r in _rows(path, "book_deltas")] == [(6, None)]


@attrs.define(slots=True, weakref_slot=False)
class _FundingFields(Event):
    exchange: str
    symbol: str
    exchange_ts: int | None
    receive_ts: int
    seq: int | None
    rate: float
    side: Side


@event_class(_FundingFields)
class Funding(_FundingFields):
    pass


async def test_unknown_and_malformed_events_go_to_other_events(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    sink = DuckDBSink({"target": str(path), "snapshot_interval": 0})
    await sink.open()
    bad = Trade.fast("binance", "BTC-USDT", None, T0 + 5, 9, "not-a-number", 1.0, Side.BUY, None)
    await sink.write_batch([trade(1), Funding.fast("x", "A-B", None, T0, 1, 0.5, Side.SELL), bad, trade(2)])
    await sink.close()
    assert [r["seq"] for r in _rows(path, "trades")] == [1, 2]
    others = sorted(_rows(path, "other_events"), key=lambda r: r["event_type"])
    assert [(r["event_type"], r["exchange"], r["seq"]) for r in others] == [
        ("Funding", "x", 1),
        ("malformed:Trade", "binance", 9),
    ]
    assert json.loads(others[0]["data"]) == {
        "exchange": "x", "symbol": "A-B", "exchange_ts": None, "receive_ts": T0, "seq": 1, "rate": 0.5, "side": "sell",
    }
    assert json.loads(others[1]["data"])["price"] == "not-a-number"
    assert sink.statistics()["malformed"] == 1


async def test_record_stats(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    sink = DuckDBSink({"target": str(path), "snapshot_interval": 0})
    await sink.open()
    sink.record_stats({"events_per_s": 1234.5, "by_exchange": {"binance": 3}}, ts=T0)
    await sink.flush()
    await sink.close()
    rows = _rows(path, "perf_stats")
    assert [r["ts"] for r in rows] == [T0]
    assert json.loads(rows[0]["stats"]) == {"events_per_s": 1234.5, "by_exchange": {"binance": 3}}


async def test_lifecycle_errors(tmp_path: Path) -> None:
    sink = DuckDBSink({"target": str(tmp_path / "db.duckdb"), "snapshot_interval": 0})
    with pytest.raises(RuntimeError, match="not open"):
        await sink.write_batch([trade(1)])
    await sink.open()
    with pytest.raises(RuntimeError, match="already open"):
        await sink.open()
    await sink.close()
    await sink.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await sink.write_batch([trade(1)])


_prop_db = Path(tempfile.mkdtemp(prefix="roundtrip_")) / "rt.duckdb"
_prop_n = iter(range(1_000_000))
_int64 = st.integers(-(2**63), 2**63 - 1)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_trade_fields = st.tuples(
    st.text(max_size=12), st.one_of(st.none(), _int64), _int64, st.one_of(st.none(), _int64),
    _finite, _finite, st.sampled_from(list(Side)), st.one_of(st.none(), _int64),
)


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(_trade_fields, max_size=40), batch=st.integers(1, 15))
def test_trades_round_trip_exactly(rows: list[tuple[Any, ...]], batch: int) -> None:
    exchange = f"x{next(_prop_n)}"
    events = [Trade.fast(exchange, symbol, ets, rts, seq, price, size, side, tts)
              for symbol, ets, rts, seq, price, size, side, tts in rows]

    async def write() -> None:
        sink = DuckDBSink({"target": str(_prop_db), "snapshot_interval": 0, "batch_size": 10})
        await sink.open()
        for start in range(0, len(events), batch):
            await sink.write_batch(events[start : start + batch])
        await sink.close()

    anyio.run(write)
    con = duckdb.connect(str(_prop_db), read_only=True)
    try:
        stored = con.execute("SELECT * FROM trades WHERE exchange = ? ORDER BY rowid", [exchange]).fetchall()
    finally:
        con.close()
    assert stored == [
        (e.exchange, e.symbol, e.exchange_ts, e.receive_ts, e.seq, e.price, e.size, e.side.value, e.trade_ts)
        for e in events
    ]
