from __future__ import annotations

import datetime as dt
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from duckdb_helpers import SEC, T0, trade
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketfeeder.book import BookSync
from marketfeeder.models import BookDelta, BookSnapshot, BookStatus, Event, Level
from marketfeeder_duckdb import DuckDBSink, History, HistoryError
from marketfeeder_duckdb.history import parse_interval


def _store(path: Path, events: Sequence[Event], batch: int = 50) -> None:
    async def main() -> None:
        sink = DuckDBSink({"target": str(path), "snapshot_interval": 0, "batch_size": 64, "commit_interval": 0})
        await sink.open()
        for start in range(0, len(events), batch):
            await sink.write_batch(events[start : start + batch])
        await sink.close()

    anyio.run(main)


def test_trades_filters_by_receive_time(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    events = [trade(i, ts=T0 + i * SEC) for i in range(10)] + [trade(100, symbol="ETH-USDT")]
    _store(path, events)
    with History(path) as history:
        assert history.source == "database"
        assert history.trades("binance", "BTC-USDT").column("seq").to_pylist() == list(range(10))
        assert history.trades("binance", "BTC-USDT", T0 + 2 * SEC, T0 + 5 * SEC).column("seq").to_pylist() == [2, 3, 4]
        start = dt.datetime(2023, 11, 14, 22, 13, 27)  # naive = UTC = T0 + 7 s
        assert history.trades("binance", "BTC-USDT", start=start).column("seq").to_pylist() == [7, 8, 9]
        assert history.trades("binance", "ETH-USDT").num_rows == 1
        assert history.trades("backpack", "BTC-USDT").num_rows == 0
        table = history.sql("SELECT count(*) AS n FROM trades WHERE exchange = $e", {"e": "binance"})
        assert table.column("n").to_pylist() == [11]


def test_ohlcv_matches_python_resampling(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    prices = [100.0, 101.5, 99.0, 100.25, 102.0, 98.5, 97.0, 97.5, 99.99, 100.01, 100.0, 101.0]
    events = []
    for i, price in enumerate(prices):
        t = T0 + i * 17 * SEC  # trade_ts = t - 200: buckets of a minute hold 3-4 trades
        events.append(trade(i, ts=t, price=price))
    _store(path, events)
    step = 60 * SEC
    expected: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    for e in events:
        assert e.trade_ts is not None
        expected[e.trade_ts // step * step].append((e.trade_ts, e.price, e.size))
    with History(path) as history:
        candles = history.ohlcv("binance", "BTC-USDT", "1m").to_pylist()
        assert [c["bucket_ts"] for c in candles] == sorted(expected)
        for candle in candles:
            rows = sorted(expected[candle["bucket_ts"]])
            assert candle["open"] == rows[0][1]
            assert candle["close"] == rows[-1][1]
            assert candle["high"] == max(r[1] for r in rows)
            assert candle["low"] == min(r[1] for r in rows)
            assert candle["volume"] == pytest.approx(sum(r[2] for r in rows))
            assert candle["trade_count"] == len(rows)
        later = history.ohlcv("binance", "BTC-USDT", "5m", start=T0 + 60 * SEC).to_pylist()
        assert sum(c["trade_count"] for c in later) == sum(1 for e in events if e.trade_ts and e.trade_ts >= T0 + 60 * SEC)


def test_parse_interval() -> None:
    assert parse_interval("1m") == 60 * SEC
    assert parse_interval("250ms") == 250_000_000
    for bad in ("", "0m", "1y", "m", "-1s"):
        with pytest.raises(ValueError, match="interval"):
            parse_interval(bad)


def test_missing_database_and_old_schema(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no history database"):
        History(tmp_path / "none.duckdb")
    import duckdb

    from marketfeeder_duckdb.schema import migrate

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    migrate(con, target=1)
    con.close()
    with pytest.raises(HistoryError, match="migrate"):
        History(old)


def test_book_at_without_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    _store(path, [trade(1)])
    with History(path) as history, pytest.raises(LookupError, match="no binance BTC-USDT book snapshot"):
        history.book_at("binance", "BTC-USDT", T0)


# --- book_at against the feeder's own book engine ---------------------------------------------------

BID_PRICES = [95.0 + 0.5 * i for i in range(10)]
ASK_PRICES = [100.5 + 0.5 * i for i in range(10)]
level_change = st.tuples(st.booleans(), st.integers(0, 9), st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.25, 7.0]))
update = st.lists(level_change, min_size=1, max_size=3)
action = st.one_of(
    st.tuples(st.just("delta"), st.integers(1, 3), st.sampled_from(["ok"] * 6 + ["drop", "drop", "dup"])),
    st.tuples(st.just("snapshot"), st.integers(0, 3), st.just("")),
    st.tuples(st.just("stale"), st.just(0), st.just("")),
    st.tuples(st.just("reset"), st.just(0), st.just("")),
)


class _Exchange:
    """The exchange's true book: numbered updates, diffs of 1..n updates, snapshots at any id."""

    def __init__(self, updates: list[list[tuple[bool, int, float]]], symbol: str) -> None:
        self.updates = updates
        self.symbol = symbol
        self.books: list[tuple[dict[float, float], dict[float, float]]] = [({}, {})]
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        for changes in updates:
            for is_bid, i, size in changes:
                side, price = (bids, BID_PRICES[i]) if is_bid else (asks, ASK_PRICES[i])
                if size:
                    side[price] = size
                else:
                    side.pop(price, None)
            self.books.append((dict(bids), dict(asks)))

    def diff(self, first: int, last: int, ts: int) -> BookDelta:
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        for changes in self.updates[first - 1 : last]:
            for is_bid, i, size in changes:
                if is_bid:
                    bids[BID_PRICES[i]] = size
                else:
                    asks[ASK_PRICES[i]] = size
        delta: BookDelta = BookDelta.fast(
            "binance", self.symbol, ts - 5, ts, last, first, tuple(bids.items()), tuple(asks.items())
        )
        return delta

    def snapshot(self, at: int, ts: int) -> BookSnapshot:
        bids, asks = self.books[at]
        snapshot: BookSnapshot = BookSnapshot.fast(
            "binance", self.symbol, None, ts, at,
            tuple(sorted(bids.items(), reverse=True)), tuple(sorted(asks.items())),
        )
        return snapshot


def _replay(
    updates: list[list[tuple[bool, int, float]]], actions: list[tuple[str, int, str]], symbol: str = "BTC-USDT"
) -> tuple[
    list[Event], list[tuple[int, list[Level], list[Level]]]
]:
    """Drive the core's BookSync like the runtime does; return what it emitted and its book over time."""
    exchange = _Exchange(updates, symbol)
    sync = BookSync("binance", symbol)
    out: list[Event] = []
    seen: list[tuple[int, list[Level], list[Level]]] = []
    sent = 0  # last update id the exchange streamed
    last: BookDelta | None = None
    for n, (kind, count, how) in enumerate(actions):
        ts = T0 + (n + 1) * 1_000
        if kind == "delta" and sent < len(updates):
            first, end = sent + 1, min(sent + count, len(updates))
            sent = end
            delta = exchange.diff(first, end, ts)
            if how == "drop":
                continue
            if how == "dup" and last is not None:
                delta = exchange.diff(last.first_seq, last.seq, ts)
            sync.on_delta(delta, out)
            last = delta
        elif kind == "snapshot":
            sync.on_snapshot(exchange.snapshot(max(0, sent - count), ts), out)
        elif kind == "stale":
            sync.mark_stale("quiet", ts, out)
        elif kind == "reset" and sync.state is not BookStatus.SYNCING:
            # A reset while already SYNCING clears the book without any event: nothing stored can tell.
            sync.reset("new connection", ts, out)
        seen.append((ts, sync.book.bids(), sync.book.asks()))
    return out, seen


def _compare(path: Path, seen: list[tuple[int, list[Level], list[Level]]], symbol: str = "BTC-USDT") -> None:
    with History(path) as history:
        for ts, bids, asks in seen:
            try:
                stored = history.book_at("binance", symbol, ts)
            except LookupError:
                stored = ([], [])
            assert stored == (bids, asks), f"at {ts - T0}"
        ts, bids, asks = seen[-1]
        if bids or asks:
            assert history.book_at("binance", symbol, ts, depth=2) == (bids[:2], asks[:2])


def test_book_at_equals_the_live_book_through_gaps_and_resyncs(tmp_path: Path) -> None:
    updates = [[(i % 2 == 0, i % 10, float(1 + i % 4))] for i in range(40)]
    actions: list[tuple[str, int, str]] = [
        ("delta", 1, "ok"), ("delta", 2, "ok"), ("snapshot", 1, ""),  # buffered diffs applied after it
        *[("delta", 1, "ok")] * 5,
        ("delta", 1, "dup"), ("delta", 1, "drop"), ("delta", 1, "ok"),  # duplicate, then a gap
        ("delta", 2, "ok"), ("delta", 2, "ok"), ("snapshot", 1, ""),  # resync: one buffered diff applies
        *[("delta", 1, "ok")] * 4,
        ("stale", 0, ""), ("delta", 1, "ok"), ("snapshot", 0, ""), ("delta", 1, "ok"),
        ("reset", 0, ""), ("delta", 1, "ok"), ("snapshot", 0, ""), ("delta", 2, "ok"),
    ]
    events, seen = _replay(updates, actions)
    assert any(isinstance(e, BookSnapshot) for e in events)
    states = [e.state for e in events if hasattr(e, "state")]
    assert BookStatus.RESYNCING in states and BookStatus.LIVE in states
    path = tmp_path / "book.duckdb"
    _store(path, events, batch=7)
    _compare(path, seen)


_shared_db = Path(tempfile.mkdtemp(prefix="book_at_")) / "book.duckdb"
_example = iter(range(1_000_000))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(updates=st.lists(update, min_size=5, max_size=40), actions=st.lists(action, min_size=3, max_size=40),
       batch=st.integers(1, 20))
def test_book_at_equals_the_live_book_property(
    updates: list[list[tuple[bool, int, float]]], actions: list[tuple[str, int, str]], batch: int
) -> None:
    # Every example is its own book in one shared file: book_at must also keep books apart.
    symbol = f"S{next(_example)}-USDT"
    events, seen = _replay(updates, actions, symbol)
    _store(_shared_db, events, batch=batch)
    _compare(_shared_db, seen, symbol)
