"""The order book and the snapshot + diff sync procedure, rule by rule, with concrete update ids.

The Backpack fixtures are the ``depth.SOL_USDC`` and ``bookTicker.SOL_USDC`` frames of a real capture
(c9s/bbgo ``pkg/exchange/backpack/backpackapi/testdata/backpack_ws_raw.jsonl`` @ d9712d08, first 56
lines, recorded 2026-09-01 against wss://ws.backpack.exchange), copied verbatim.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.book import MAX_DUPLICATE_RUN, BookSync, OrderBook, SnapshotOutcome
from marketfeeder.models import BookDelta, BookSnapshot, BookState, BookStatus, DataType, Event, Gap, Level
from marketfeeder.sequence import SequencePolicy
from marketfeeder.validators.base import BookView

FIXTURES = Path(__file__).parent / "fixtures"
EX, SYM = "binance", "BTC-USDT"


def delta(
    first: int, last: int, bids: tuple[Level, ...] = (), asks: tuple[Level, ...] = (), ts: int = 0
) -> BookDelta:
    return BookDelta.fast(EX, SYM, None, ts or last * 1000, last, first, bids, asks, None)


def snapshot(
    last_id: int | None, bids: tuple[Level, ...] = (), asks: tuple[Level, ...] = (), ts: int = 7
) -> BookSnapshot:
    return BookSnapshot.fast(EX, SYM, None, ts, last_id, bids, asks)


def states(out: list[Event]) -> list[tuple[BookStatus, int | None]]:
    return [(e.state, e.seq) for e in out if isinstance(e, BookState)]


def gaps(out: list[Event]) -> list[tuple[int | None, int | None]]:
    return [(e.from_seq, e.to_seq) for e in out if isinstance(e, Gap)]


def live_sync(last_id: int = 104, policy: SequencePolicy | None = None) -> BookSync:
    """A LIVE book at ``last_id`` with bids 99/98 and asks 101/102."""
    sync = BookSync(EX, SYM, policy or SequencePolicy())
    out: list[Event] = []
    sync.on_delta(delta(last_id - 1, last_id, ((99.0, 1.0),)), out)
    result = sync.on_snapshot(
        snapshot(last_id - 1, ((98.0, 2.0), (99.0, 5.0)), ((101.0, 1.0), (102.0, 3.0))), out
    )
    assert result is SnapshotOutcome.APPLIED
    assert sync.state is BookStatus.LIVE
    assert sync.update_id == last_id
    return sync


# --- OrderBook ---------------------------------------------------------------------------------


def test_empty_book_answers_none() -> None:
    book = OrderBook(EX, SYM)
    assert book.update_id is None
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.spread() is None
    assert book.mid() is None
    assert not book.is_crossed()
    assert book.depth() == (0, 0)
    assert book.top(5) == ([], [])
    assert isinstance(book, BookView)


def test_snapshot_in_any_order_sorts_and_ignores_zero_sizes() -> None:
    book = OrderBook(EX, SYM)
    # Backpack sends both sides ascending; Binance sends bids descending: both must load the same.
    book.load_snapshot(
        [(98.0, 1.0), (100.0, 2.0), (99.0, 0.0), (97.5, 4.0)],
        [(103.0, 1.0), (101.0, 5.0), (102.0, 0.0)],
        42,
    )
    assert book.update_id == 42
    assert book.bids() == [(100.0, 2.0), (98.0, 1.0), (97.5, 4.0)]
    assert book.asks() == [(101.0, 5.0), (103.0, 1.0)]
    assert book.best_bid() == (100.0, 2.0)
    assert book.best_ask() == (101.0, 5.0)
    assert book.spread() == 1.0
    assert book.mid() == 100.5
    assert book.depth() == (3, 2)
    assert book.malformed == 0


def test_snapshot_replaces_previous_book() -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot([(1.0, 1.0)], [(2.0, 1.0)], 1)
    book.load_snapshot([(3.0, 1.0)], [], 2)
    assert book.bids() == [(3.0, 1.0)]
    assert book.asks() == []
    assert book.update_id == 2


def test_apply_sets_inserts_and_deletes_absolute_sizes() -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot([(99.0, 1.0), (98.0, 2.0)], [(101.0, 1.0), (102.0, 2.0)], 10)
    book.apply([(99.0, 3.5), (99.5, 1.0), (98.0, 0.0)], [(101.0, 0.0), (100.5, 7.0)])
    assert book.bids() == [(99.5, 1.0), (99.0, 3.5)]
    assert book.asks() == [(100.5, 7.0), (102.0, 2.0)]
    assert book.update_id == 10  # apply() leaves the id to the caller


def test_deleting_a_missing_level_is_ignored() -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot([(99.0, 1.0)], [(101.0, 1.0)], 1)
    book.apply([(50.0, 0.0), (99.5, 0.0)], [(200.0, 0.0)])
    assert book.bids() == [(99.0, 1.0)]
    assert book.asks() == [(101.0, 1.0)]
    assert book.malformed == 0
    book.apply([(99.0, 0.0), (99.0, 0.0)], [])  # the second delete finds nothing
    assert book.bids() == []


def test_apply_delta_takes_the_last_update_id() -> None:
    book = OrderBook(EX, SYM)
    book.apply_delta(delta(5, 9, ((10.0, 1.0),), ((11.0, 2.0),)))
    assert book.update_id == 9
    assert book.top(1) == ([(10.0, 1.0)], [(11.0, 2.0)])


def test_top_n_is_best_first_on_both_sides() -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot(
        [(float(p), 1.0) for p in range(90, 100)], [(float(p), 2.0) for p in range(101, 111)], 1
    )
    bids, asks = book.top(3)
    assert bids == [(99.0, 1.0), (98.0, 1.0), (97.0, 1.0)]
    assert asks == [(101.0, 2.0), (102.0, 2.0), (103.0, 2.0)]
    assert book.top(0) == ([], [])
    full_bids, full_asks = book.top(50)
    assert [p for p, _ in full_bids] == [float(p) for p in range(99, 89, -1)]
    assert [p for p, _ in full_asks] == [float(p) for p in range(101, 111)]
    assert book.bids(2) == [(99.0, 1.0), (98.0, 1.0)]
    assert book.asks(1) == [(101.0, 2.0)]


def test_crossed_and_locked_books_are_detected() -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot([(99.0, 1.0)], [(101.0, 1.0)], 1)
    assert not book.is_crossed()
    book.apply([(101.0, 1.0)], [])  # locked: bid == ask
    assert book.is_crossed()
    book.apply([(101.0, 0.0), (102.0, 1.0)], [])  # crossed: bid > ask
    assert book.is_crossed()
    assert book.spread() == -1.0
    book.apply([(102.0, 0.0)], [])
    assert not book.is_crossed()
    book.apply([], [(101.0, 0.0)])  # one empty side is not crossed
    assert not book.is_crossed()


def test_malformed_levels_are_counted_and_skipped() -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot([(99.0, 1.0), (98.0, -1.0), (math.nan, 1.0)], [(101.0, math.inf)], 1)
    assert book.bids() == [(99.0, 1.0)]
    assert book.asks() == []
    assert book.malformed == 3
    book.apply([(99.0, math.nan), (-5.0, 1.0), (97.0, -2.0), (math.inf, 1.0)], [(102.0, 1.0)])
    assert book.bids() == [(99.0, 1.0)]
    assert book.asks() == [(102.0, 1.0)]
    assert book.malformed == 7


def test_to_snapshot_and_clear() -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot([(98.0, 1.0), (99.0, 2.0)], [(101.0, 3.0), (102.0, 4.0)], 77)
    snap = book.to_snapshot(123)
    assert isinstance(snap, BookSnapshot)
    assert (snap.exchange, snap.symbol, snap.receive_ts, snap.seq) == (EX, SYM, 123, 77)
    assert snap.bids == ((99.0, 2.0), (98.0, 1.0))
    assert snap.asks == ((101.0, 3.0), (102.0, 4.0))
    assert book.to_snapshot(1, n=1).asks == ((101.0, 3.0),)
    book.clear()
    assert book.depth() == (0, 0)
    assert book.update_id is None


levels = st.lists(
    st.tuples(st.integers(1, 40).map(lambda t: t * 0.25), st.sampled_from([0.0, 0.0, 1.0, 2.5, 3.0])),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.tuples(levels, levels),
    updates=st.lists(st.tuples(levels, levels), max_size=30),
    n=st.integers(0, 12),
)
def test_book_matches_a_plain_dict_model(
    start: tuple[list[Level], list[Level]], updates: list[tuple[list[Level], list[Level]]], n: int
) -> None:
    book = OrderBook(EX, SYM)
    book.load_snapshot(start[0], start[1], 0)
    model_bids = {p: q for p, q in start[0] if q}
    model_asks = {p: q for p, q in start[1] if q}
    for bids, asks in updates:
        book.apply(bids, asks)
        for model, side in ((model_bids, bids), (model_asks, asks)):
            for p, q in side:
                if q:
                    model[p] = q
                else:
                    model.pop(p, None)
    assert book.bids() == sorted(model_bids.items(), reverse=True)
    assert book.asks() == sorted(model_asks.items())
    assert book.top(n) == (sorted(model_bids.items(), reverse=True)[:n], sorted(model_asks.items())[:n])
    assert book.best_bid() == (max(model_bids.items()) if model_bids else None)
    assert book.best_ask() == (min(model_asks.items()) if model_asks else None)
    assert book.is_crossed() == bool(model_bids and model_asks and max(model_bids) >= min(model_asks))


# --- BookSync: buffering and snapshots ----------------------------------------------------------


def test_buffers_until_enough_diffs_then_wants_a_snapshot() -> None:
    sync = BookSync(EX, SYM, SequencePolicy(snapshot_wait_deltas=3))
    out: list[Event] = []
    assert sync.state is BookStatus.SYNCING
    assert not sync.wants_snapshot()
    sync.on_delta(delta(100, 102), out)
    sync.on_delta(delta(103, 103), out)
    assert not sync.wants_snapshot()
    sync.on_delta(delta(104, 106), out)
    assert out == []  # buffering emits nothing
    assert sync.buffered == 3
    assert sync.first_buffered_first_seq() == 100
    assert sync.wants_snapshot()
    sync.snapshot_requested()
    assert not sync.wants_snapshot()  # one fetch at a time
    sync.snapshot_failed(now_ns=1_000)
    assert sync.wants_snapshot()
    assert not sync.wants_snapshot(now_ns=1_000)  # retry delay after a failed fetch
    assert sync.wants_snapshot(now_ns=1_000 + int(0.25e9))


def test_snapshot_applies_buffered_diffs_binance_procedure() -> None:
    sync = BookSync(EX, SYM, SequencePolicy())
    out: list[Event] = []
    d1 = delta(100, 102, ((99.0, 9.0),))
    d2 = delta(103, 105, ((99.0, 1.0), (98.0, 0.0)), ((101.0, 4.0),))
    d3 = delta(106, 106, (), ((100.5, 1.0),))
    for d in (d1, d2, d3):
        sync.on_delta(d, out)
    snap = snapshot(104, ((98.0, 2.0), (99.0, 5.0)), ((101.0, 1.0), (102.0, 3.0)), ts=55)
    assert sync.on_snapshot(snap, out) is SnapshotOutcome.APPLIED
    # d1 (u=102 <= L=104) dropped; d2 straddles L+1 = 105 (U=103 <= 105 <= u=105); d3 continues.
    assert out[:3] == [snap, d2, d3]
    assert states(out) == [(BookStatus.LIVE, 106)]
    assert out[3].receive_ts == 55
    assert sync.state is BookStatus.LIVE
    assert sync.update_id == 106
    assert sync.book.bids() == [(99.0, 1.0)]
    assert sync.book.asks() == [(100.5, 1.0), (101.0, 4.0), (102.0, 3.0)]
    assert sync.snapshots_applied == 1
    assert sync.buffered == 0
    assert not sync.wants_snapshot()
    assert sync.statistics()["skipped_before_snapshot"] == 1


def test_snapshot_older_than_first_buffered_diff_is_stale() -> None:
    sync = BookSync(EX, SYM, SequencePolicy(snapshot_slack=0, snapshot_retry_delay=0.5))
    out: list[Event] = []
    sync.on_delta(delta(100, 101), out)
    # Binance: re-fetch while lastUpdateId < first U (even L = U - 1 is refused with slack 0).
    assert sync.on_snapshot(snapshot(99, ts=1_000), out) is SnapshotOutcome.STALE
    assert out == []
    assert sync.stale_snapshots == 1
    assert sync.state is BookStatus.SYNCING
    assert sync.wants_snapshot()
    assert not sync.wants_snapshot(now_ns=1_000 + int(0.4e9))
    assert sync.wants_snapshot(now_ns=1_000 + int(0.5e9))
    assert sync.on_snapshot(snapshot(100), out) is SnapshotOutcome.APPLIED
    assert sync.update_id == 101


def test_slack_one_accepts_snapshot_just_before_the_stream() -> None:
    sync = BookSync(EX, SYM, SequencePolicy(snapshot_slack=1))
    out: list[Event] = []
    sync.on_delta(delta(100, 101), out)
    assert sync.on_snapshot(snapshot(98), out) is SnapshotOutcome.STALE
    assert sync.on_snapshot(snapshot(99), out) is SnapshotOutcome.APPLIED
    assert sync.update_id == 101
    assert sync.state is BookStatus.LIVE


def test_snapshot_that_cannot_join_the_first_kept_diff_is_stale() -> None:
    # With a generous slack the usability test passes, but U=100 > L+1=99: the book would miss id 99.
    sync = BookSync(EX, SYM, SequencePolicy(snapshot_slack=2))
    out: list[Event] = []
    sync.on_delta(delta(100, 100), out)
    assert sync.on_snapshot(snapshot(98), out) is SnapshotOutcome.STALE
    assert out == []
    assert sync.update_id is None


def test_snapshot_newer_than_every_buffered_diff_waits_for_the_next() -> None:
    sync = BookSync(EX, SYM, SequencePolicy())
    out: list[Event] = []
    sync.on_delta(delta(100, 102), out)
    snap = snapshot(110, ((99.0, 1.0),), ((101.0, 1.0),))
    assert sync.on_snapshot(snap, out) is SnapshotOutcome.APPLIED
    assert out == [snap]
    assert sync.state is BookStatus.SYNCING
    assert sync.update_id == 110
    assert not sync.wants_snapshot()
    assert sync.on_snapshot(snapshot(111), out) is SnapshotOutcome.IGNORED
    out.clear()
    sync.on_delta(delta(103, 108), out)  # already inside the snapshot
    sync.on_delta(delta(109, 110), out)
    assert out == []
    joining = delta(109, 112, ((99.0, 0.0),))  # U=109 <= L+1=111 <= u=112 (overlaps the previous one)
    sync.on_delta(joining, out)
    assert out[0] is joining
    assert states(out) == [(BookStatus.LIVE, 112)]
    assert sync.book.bids() == []
    assert sync.duplicates == 0
    assert sync.statistics()["skipped_before_snapshot"] == 3  # 100..102, 103..108, 109..110


def test_snapshot_newer_than_buffer_then_gap_resyncs() -> None:
    sync = BookSync(EX, SYM, SequencePolicy())
    out: list[Event] = []
    sync.on_delta(delta(100, 102), out)
    sync.on_snapshot(snapshot(110), out)
    out.clear()
    sync.on_delta(delta(112, 113), out)  # id 111 (and 103..110 on the stream) never arrived
    assert gaps(out) == [(103, 111)]
    assert sync.state is BookStatus.SYNCING
    assert sync.first_buffered_first_seq() == 112
    assert sync.wants_snapshot()


def test_snapshot_ignored_when_live_or_nothing_buffered() -> None:
    out: list[Event] = []
    fresh = BookSync(EX, SYM)
    fresh.snapshot_requested()
    assert fresh.on_snapshot(snapshot(10), out) is SnapshotOutcome.IGNORED
    assert fresh.update_id is None
    assert not fresh.wants_snapshot()  # the request finished; no diff yet
    sync = live_sync()
    assert sync.on_snapshot(snapshot(500), out) is SnapshotOutcome.IGNORED
    assert out == []
    assert sync.update_id == 104


def test_snapshot_without_update_id_is_an_error() -> None:
    sync = BookSync(EX, SYM)
    sync.on_delta(delta(1, 1), [])
    with pytest.raises(ValueError, match="without a last update id"):
        sync.on_snapshot(snapshot(None), [])


def test_too_many_stale_snapshots_restart_with_a_gap() -> None:
    sync = BookSync(EX, SYM, SequencePolicy(max_snapshot_attempts=3))
    out: list[Event] = []
    sync.on_delta(delta(100, 100), out)
    sync.on_delta(delta(101, 102), out)
    assert sync.on_snapshot(snapshot(90), out) is SnapshotOutcome.STALE
    assert sync.on_snapshot(snapshot(91), out) is SnapshotOutcome.STALE
    assert out == []
    assert sync.on_snapshot(snapshot(92), out) is SnapshotOutcome.STALE
    (gap,) = out
    assert isinstance(gap, Gap)
    assert (gap.from_seq, gap.to_seq, gap.count, gap.gap_type) == (100, 102, 2, DataType.ORDERBOOK)
    assert sync.buffered == 0
    assert sync.stale_snapshots == 3
    out.clear()
    # The attempt count starts over and the stream continues without a false gap.
    sync.on_delta(delta(103, 103), out)
    assert out == []
    assert sync.on_snapshot(snapshot(93), out) is SnapshotOutcome.STALE
    assert out == []


def test_buffer_overflow_drops_buffer_with_a_gap() -> None:
    sync = BookSync(EX, SYM, SequencePolicy(max_buffered_deltas=3))
    out: list[Event] = []
    for i in range(100, 103):
        sync.on_delta(delta(i, i), out)
    assert out == []
    sync.on_delta(delta(103, 103, ts=9), out)
    (gap,) = out
    assert isinstance(gap, Gap)
    assert (gap.from_seq, gap.to_seq, gap.count, gap.receive_ts) == (100, 102, 3, 9)
    assert sync.buffered == 1
    assert sync.first_buffered_first_seq() == 103
    assert sync.statistics()["buffer_overflows"] == 1


def test_hole_while_buffering_is_a_gap_and_restarts_the_buffer() -> None:
    sync = BookSync(EX, SYM)
    out: list[Event] = []
    sync.on_delta(delta(100, 100), out)
    sync.on_delta(delta(101, 101), out)
    sync.on_delta(delta(101, 101), out)  # duplicate while buffering
    sync.on_delta(delta(104, 105, ts=3), out)
    assert gaps(out) == [(102, 103)]
    assert out[0].receive_ts == 3
    assert sync.duplicates == 1
    assert sync.first_buffered_first_seq() == 104
    assert sync.buffered == 1
    assert sync.state is BookStatus.SYNCING


# --- BookSync: LIVE ------------------------------------------------------------------------------


def test_live_applies_contiguous_diffs_and_emits_them() -> None:
    sync = live_sync(104)
    out: list[Event] = []
    d1 = delta(105, 107, ((99.0, 0.0), (99.5, 1.0)))
    d2 = delta(108, 108, (), ((101.0, 2.0),))
    sync.on_delta(d1, out)
    sync.on_delta(d2, out)
    assert out == [d1, d2]
    assert sync.update_id == 108
    assert sync.book.top(2) == ([(99.5, 1.0), (98.0, 2.0)], [(101.0, 2.0), (102.0, 3.0)])


def test_live_ignores_duplicates() -> None:
    sync = live_sync(104)
    out: list[Event] = []
    sync.on_delta(delta(104, 104, ((99.0, 123.0),)), out)
    sync.on_delta(delta(90, 100), out)
    assert out == []
    assert sync.duplicates == 2
    assert sync.update_id == 104
    assert sync.book.best_bid() == (99.0, 1.0)


def test_live_applies_a_diff_overlapping_the_book() -> None:
    sync = live_sync(104)
    out: list[Event] = []
    sync.on_delta(delta(103, 106, ((99.0, 4.0),)), out)
    assert len(out) == 1
    assert sync.update_id == 106
    assert sync.book.best_bid() == (99.0, 4.0)


def test_live_gap_reports_and_resyncs() -> None:
    sync = live_sync(104)
    out: list[Event] = []
    skipping = delta(107, 108, ((99.0, 7.0),), ts=4242)
    sync.on_delta(skipping, out)
    gap, state = out
    assert isinstance(gap, Gap)
    assert (gap.from_seq, gap.to_seq, gap.gap_type, gap.receive_ts, gap.seq) == (
        105,
        106,
        DataType.ORDERBOOK,
        4242,
        108,
    )
    assert (gap.exchange, gap.symbol) == (EX, SYM)
    assert isinstance(state, BookState)
    assert (state.state, state.receive_ts, state.seq) == (BookStatus.RESYNCING, 4242, 104)
    assert sync.state is BookStatus.RESYNCING
    assert (sync.gaps, sync.resyncs) == (1, 1)
    assert sync.book.best_bid() == (99.0, 1.0)  # the diff was not applied to the old book
    assert sync.first_buffered_first_seq() == 107
    assert sync.wants_snapshot()
    out.clear()
    late = delta(105, 106)  # reordered frame arriving after the gap: already behind the stream
    sync.on_delta(late, out)
    assert out == []
    sync.on_delta(delta(109, 109), out)
    assert sync.on_snapshot(snapshot(107, ((99.0, 3.0),), ((101.0, 1.0),)), out) is SnapshotOutcome.APPLIED
    assert sync.state is BookStatus.LIVE
    assert sync.update_id == 109
    assert sync.book.best_bid() == (99.0, 7.0)
    assert states(out)[-1] == (BookStatus.LIVE, 109)


def test_long_run_of_duplicates_means_the_ids_restarted() -> None:
    sync = live_sync(1_000)
    out: list[Event] = []
    for i in range(MAX_DUPLICATE_RUN - 1):
        sync.on_delta(delta(10 + i, 10 + i), out)
    assert out == []
    assert sync.state is BookStatus.LIVE
    sync.on_delta(delta(10 + MAX_DUPLICATE_RUN - 1, 10 + MAX_DUPLICATE_RUN - 1), out)
    assert states(out) == [(BookStatus.RESYNCING, 1_000)]
    assert sync.first_buffered_first_seq() == 10 + MAX_DUPLICATE_RUN - 1
    assert sync.duplicates == MAX_DUPLICATE_RUN
    sync.on_delta(delta(10 + MAX_DUPLICATE_RUN, 10 + MAX_DUPLICATE_RUN), out)
    assert sync.on_snapshot(snapshot(10 + MAX_DUPLICATE_RUN - 1), out) is SnapshotOutcome.APPLIED
    assert sync.state is BookStatus.LIVE
    assert sync.update_id == 10 + MAX_DUPLICATE_RUN


def test_duplicates_interleaved_with_progress_are_only_counted() -> None:
    sync = live_sync(1_000)
    out: list[Event] = []
    next_id = 1_001
    for _ in range(3):
        for _ in range(MAX_DUPLICATE_RUN - 1):
            sync.on_delta(delta(999, 999), out)
        sync.on_delta(delta(next_id, next_id), out)
        next_id += 1
    assert sync.state is BookStatus.LIVE
    assert sync.duplicates == 3 * (MAX_DUPLICATE_RUN - 1)
    assert states(out) == []


def test_malformed_diff_is_counted_and_skipped() -> None:
    sync = live_sync(104)
    out: list[Event] = []
    sync.on_delta(delta(110, 105), out)  # first id after last id
    assert out == []
    assert sync.malformed == 1
    assert sync.state is BookStatus.LIVE
    syncing = BookSync(EX, SYM)
    syncing.on_delta(delta(9, 3), out)
    assert syncing.buffered == 0
    assert syncing.malformed == 1


# --- BookSync: connection events -----------------------------------------------------------------


def test_mark_stale_then_resume_reports_the_outage() -> None:
    sync = live_sync(104)
    out: list[Event] = []
    sync.mark_stale("connection lost", 5_000, out)
    assert states(out) == [(BookStatus.STALE, 104)]
    assert out[0].receive_ts == 5_000
    assert out[0].reason == "connection lost"
    assert sync.book.best_bid() == (99.0, 1.0)  # kept for display
    sync.mark_stale("again", 5_001, out)
    assert len(out) == 1
    out.clear()
    sync.on_delta(delta(110, 111), out)
    assert states(out) == [(BookStatus.RESYNCING, 104)]
    assert gaps(out) == [(105, 109)]
    assert sync.wants_snapshot()
    out.clear()
    assert sync.on_snapshot(snapshot(110), out) is SnapshotOutcome.APPLIED
    assert states(out) == [(BookStatus.LIVE, 111)]


def test_mark_stale_drops_a_pending_fetch() -> None:
    sync = BookSync(EX, SYM)
    out: list[Event] = []
    sync.on_delta(delta(1, 1), out)
    sync.snapshot_requested()
    sync.mark_stale("quiet", 1, out)
    assert sync.on_snapshot(snapshot(5), out) is SnapshotOutcome.IGNORED
    assert states(out) == [(BookStatus.STALE, None)]
    out.clear()
    sync.on_delta(delta(2, 2), out)
    assert states(out) == [(BookStatus.SYNCING, None)]  # never had a book: back to SYNCING


def test_reset_clears_the_book_and_accepts_a_restarted_sequence() -> None:
    sync = live_sync(104)
    out: list[Event] = []
    sync.reset("new connection", 9, out)
    assert states(out) == [(BookStatus.SYNCING, None)]
    assert sync.book.depth() == (0, 0)
    assert sync.update_id is None
    out.clear()
    # The exchange restarted its ids: the first diff of the new connection is below the old ones.
    sync.on_delta(delta(5, 6), out)
    sync.on_delta(delta(7, 7), out)
    assert out == []
    assert sync.duplicates == 0
    assert sync.first_buffered_first_seq() == 5
    assert sync.on_snapshot(snapshot(5), out) is SnapshotOutcome.APPLIED
    assert sync.update_id == 7


def test_statistics_reports_counters() -> None:
    sync = live_sync(104)
    sync.on_delta(delta(104, 104), [])
    stats = sync.statistics()
    assert stats["state"] == "live"
    assert stats["update_id"] == 104
    assert stats["duplicates"] == 1
    assert stats["snapshots_applied"] == 1
    assert stats["bid_levels"] == 2
    assert set(stats) >= {"gaps", "resyncs", "stale_snapshots", "buffered", "deltas_applied"}


def test_policy_must_allow_a_buffer() -> None:
    with pytest.raises(ValueError, match="max_buffered_deltas"):
        BookSync(EX, SYM, SequencePolicy(max_buffered_deltas=0))


# --- Backpack: the real capture -------------------------------------------------------------------

BACKPACK_POLICY = SequencePolicy(snapshot_slack=1, snapshot_wait_deltas=10)


def _backpack_frames(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / name).read_bytes().splitlines()
    return [orjson.loads(line)["data"] for line in lines if line.strip()]


def _decode_depth(d: dict[str, Any]) -> BookDelta:
    return BookDelta.fast(
        "backpack",
        "SOL-USDC",
        int(d["E"]) * 1000,
        int(d["E"]) * 1000 + 5_000,
        int(d["u"]),
        int(d["U"]),
        tuple((float(p), float(q)) for p, q in d["b"]),
        tuple((float(p), float(q)) for p, q in d["a"]),
        int(d["T"]) * 1000,
    )


def _backpack_seed(last_id: int) -> BookSnapshot:
    # Consistent with the first bookTicker (bid 98.96 x 288.77, ask 98.97); Backpack lists both sides ascending.
    bids = ((98.91, 60.0), (98.93, 50.0), (98.94, 240.0), (98.95, 150.0), (98.96, 288.77))
    asks = (
        (98.97, 20.0),
        (98.98, 15.0),
        (98.99, 100.0),
        (99.00, 220.0),
        (99.01, 130.0),
        (99.02, 240.0),
        (99.14, 5.0),
    )
    return BookSnapshot.fast("backpack", "SOL-USDC", None, 1, last_id, bids, asks)


def test_backpack_capture_applies_contiguously_after_snapshot() -> None:
    deltas = [_decode_depth(d) for d in _backpack_frames("backpack_depth_frames.jsonl")]
    tickers = {int(t["u"]): t for t in _backpack_frames("backpack_bookticker_frames.jsonl")}
    assert len(deltas) == 41
    sync = BookSync("backpack", "SOL-USDC", BACKPACK_POLICY)
    out: list[Event] = []
    for d in deltas[:10]:
        sync.on_delta(d, out)
    assert out == []
    assert sync.wants_snapshot()
    first_u = sync.first_buffered_first_seq()
    assert first_u == 4330360995
    assert sync.on_snapshot(_backpack_seed(first_u - 1), out) is SnapshotOutcome.APPLIED
    assert sync.state is BookStatus.LIVE
    checked = 0
    for d in deltas[10:]:
        sync.on_delta(d, out)
    assert gaps(out) == []
    assert [type(e).__name__ for e in out] == ["BookSnapshot"] + ["BookDelta"] * 10 + ["BookState"] + [
        "BookDelta"
    ] * 31
    assert sync.update_id == 4330361035
    assert sync.duplicates == 0
    assert sync.book.asks(1) == [(98.97, 38.42)]
    assert (99.14, 5.0) not in sync.book.asks()  # the capture's one removal, "0.00"
    # Replay once more and compare the top of book with every bookTicker at the same update id.
    book = OrderBook("backpack", "SOL-USDC")
    seed = _backpack_seed(first_u - 1)
    book.load_snapshot(seed.bids, seed.asks, seed.seq)
    for d in deltas:
        book.apply_delta(d)
        ticker = tickers.get(d.seq)
        if ticker is not None:
            assert book.best_bid() == (float(ticker["b"]), float(ticker["B"]))
            assert book.best_ask() == (float(ticker["a"]), float(ticker["A"]))
            checked += 1
        assert not book.is_crossed()
    assert checked == len(tickers) == 13


def test_backpack_capture_with_binance_slack_needs_a_newer_snapshot() -> None:
    deltas = [_decode_depth(d) for d in _backpack_frames("backpack_depth_frames.jsonl")]
    sync = BookSync("backpack", "SOL-USDC", SequencePolicy(snapshot_slack=0))
    out: list[Event] = []
    sync.on_delta(deltas[0], out)
    assert sync.on_snapshot(_backpack_seed(deltas[0].first_seq - 1), out) is SnapshotOutcome.STALE


def test_backpack_capture_with_a_dropped_frame_reports_it() -> None:
    deltas = [_decode_depth(d) for d in _backpack_frames("backpack_depth_frames.jsonl")]
    sync = BookSync("backpack", "SOL-USDC", BACKPACK_POLICY)
    out: list[Event] = []
    for d in deltas[:10]:
        sync.on_delta(d, out)
    sync.on_snapshot(_backpack_seed(deltas[0].first_seq - 1), out)
    out.clear()
    for i, d in enumerate(deltas[10:], start=10):
        if i != 20:
            sync.on_delta(d, out)
    missing = deltas[20].seq
    assert gaps(out) == [(missing, missing)]
    assert sync.state is BookStatus.RESYNCING
    assert sync.buffered == 20
