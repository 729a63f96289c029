"""BookSync against a model exchange, driven by Hypothesis through snapshots, diffs and stream faults.

The model exchange changes one level per update id and records its book after every id. Its diffs
travel through a lossy "connection" that may deliver, drop, duplicate or reorder them; the runtime
fetches snapshots that may lag the stream, marks the feed stale and reconnects. Invariants:

- whenever the engine says LIVE, its book equals the exchange's book at the engine's update id,
  and so does a consumer's book rebuilt only from the events the engine emitted;
- every update id the stream skipped (dropped between two delivered diffs) lies inside a reported Gap;
- after the faults stop, one fresh snapshot and one more diff bring the book LIVE.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from marketfeeder.book import BookSync, OrderBook, SnapshotOutcome
from marketfeeder.models import BookDelta, BookSnapshot, BookStatus, Event, Gap
from marketfeeder.sequence import SequencePolicy

EX, SYM = "sim", "SIM-USD"
Side = dict[float, float]

prices = st.integers(0, 11).map(lambda i: 100.0 + i * 0.5)
sizes = st.sampled_from([0.0, 0.0, 1.0, 2.0, 3.5])
changes = st.lists(st.tuples(st.booleans(), prices, sizes), min_size=1, max_size=4)


class BookSyncMachine(RuleBasedStateMachine):
    @initialize(
        slack=st.sampled_from([0, 1, 2]),
        wait=st.integers(1, 3),
        max_buffered=st.integers(2, 10),
        attempts=st.integers(1, 4),
        start=st.integers(1, 10**9),
        bids=st.dictionaries(prices, sizes.filter(bool), max_size=6),
        asks=st.dictionaries(prices, sizes.filter(bool), max_size=6),
    )
    def init(
        self, slack: int, wait: int, max_buffered: int, attempts: int, start: int, bids: Side, asks: Side
    ) -> None:
        policy = SequencePolicy(
            snapshot_slack=slack,
            snapshot_wait_deltas=wait,
            max_buffered_deltas=max_buffered,
            max_snapshot_attempts=attempts,
            snapshot_retry_delay=0.0,
        )
        self.sync = BookSync(EX, SYM, policy)
        self.start = start
        self.exchange_id = start
        self.bids, self.asks = dict(bids), dict(asks)
        self.history: dict[int, tuple[Side, Side]] = {start: (dict(bids), dict(asks))}
        self.in_flight: list[BookDelta] = []
        self.delivered: list[BookDelta] = []
        self.dropped: set[int] = set()
        self.first_delivered: int | None = None
        self.max_delivered = 0
        self.gap_ranges: list[tuple[int, int]] = []
        self.consumer = OrderBook(EX, SYM)
        self.clock = 0

    # --- the model exchange and its connection ---------------------------------------------------

    def _now(self) -> int:
        self.clock += 1_000
        return self.clock

    def _collect(self, out: list[Event]) -> None:
        """Play the emitted events into the consumer book and note the reported gaps."""
        for event in out:
            if isinstance(event, Gap):
                assert event.from_seq is not None
                assert event.to_seq is not None
                assert event.from_seq <= event.to_seq
                self.gap_ranges.append((event.from_seq, event.to_seq))
            elif isinstance(event, BookSnapshot):
                self.consumer.load_snapshot(event.bids, event.asks, event.seq)
            elif isinstance(event, BookDelta):
                self.consumer.apply_delta(event)

    def _feed(self, delta: BookDelta) -> None:
        out: list[Event] = []
        self.sync.on_delta(delta, out)
        self._collect(out)

    @rule(batch=changes)
    def produce(self, batch: list[tuple[bool, float, float]]) -> None:
        first = self.exchange_id + 1
        final_bids: dict[float, float] = {}
        final_asks: dict[float, float] = {}
        for is_bid, price, size in batch:
            self.exchange_id += 1
            side, final = (self.bids, final_bids) if is_bid else (self.asks, final_asks)
            if size:
                side[price] = size
            else:
                side.pop(price, None)
            final[price] = size  # the diff carries each level's size after its last change
            self.history[self.exchange_id] = (dict(self.bids), dict(self.asks))
        self.in_flight.append(
            BookDelta.fast(
                EX,
                SYM,
                None,
                self._now(),
                self.exchange_id,
                first,
                tuple(final_bids.items()),
                tuple(final_asks.items()),
                None,
            )
        )

    @precondition(lambda self: self.in_flight)
    @rule()
    def deliver(self) -> None:
        delta = self.in_flight.pop(0)
        if self.first_delivered is None:
            self.first_delivered = delta.first_seq
        self.max_delivered = max(self.max_delivered, delta.seq)
        self.delivered.append(delta)
        self._feed(delta)

    @rule(batch=changes)
    def produce_and_deliver(self, batch: list[tuple[bool, float, float]]) -> None:
        self.produce(batch)
        while self.in_flight:
            self.deliver()

    @precondition(lambda self: self.in_flight)
    @rule()
    def drop(self) -> None:
        delta = self.in_flight.pop(0)
        self.dropped.update(range(delta.first_seq, delta.seq + 1))

    @precondition(lambda self: len(self.in_flight) >= 2)
    @rule()
    def reorder(self) -> None:
        self.in_flight[0], self.in_flight[1] = self.in_flight[1], self.in_flight[0]

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self._feed(data.draw(st.sampled_from(self.delivered[-5:])))

    @rule(lag=st.integers(0, 6), requested=st.booleans())
    def snapshot(self, lag: int, requested: bool) -> None:
        if requested:
            if not self.sync.wants_snapshot():
                return
            self.sync.snapshot_requested()
        last_id = max(self.start, self.exchange_id - lag)
        bids, asks = self.history[last_id]
        # Levels in exchange order (Backpack lists both sides ascending).
        snap = BookSnapshot.fast(
            EX, SYM, None, self._now(), last_id, tuple(sorted(bids.items())), tuple(sorted(asks.items()))
        )
        was_live = self.sync.state is BookStatus.LIVE
        out: list[Event] = []
        outcome = self.sync.on_snapshot(snap, out)
        if was_live:
            assert outcome is SnapshotOutcome.IGNORED
        if outcome is SnapshotOutcome.APPLIED:
            assert out[0] is snap
        self._collect(out)

    @rule(kind=st.sampled_from(["lost", "fresh", "none", "none", "none", "none"]))
    def connection(self, kind: str) -> None:
        """Now and then the connection drops (mark_stale) or is replaced (reset)."""
        if kind == "lost":
            self.connection_lost()
        elif kind == "fresh":
            self.reconnect_fresh()

    def connection_lost(self) -> None:
        for delta in self.in_flight:
            self.dropped.update(range(delta.first_seq, delta.seq + 1))
        self.in_flight.clear()
        out: list[Event] = []
        self.sync.mark_stale("connection lost", self._now(), out)
        self._collect(out)
        assert self.sync.state is BookStatus.STALE

    def reconnect_fresh(self) -> None:
        out: list[Event] = []
        self.sync.reset("new connection", self._now(), out)
        self._collect(out)
        assert self.sync.state is BookStatus.SYNCING
        assert self.sync.update_id is None

    @rule()
    def heal(self) -> None:
        """Faults stop: everything in flight arrives, then a fresh snapshot and one diff make it LIVE."""
        while self.in_flight:
            self.deliver()
        self.produce([(True, 100.0, 9.0)])
        self.deliver()
        if self.sync.state is not BookStatus.LIVE:
            self.snapshot(0, False)
            self.produce([(False, 105.0, 4.0)])
            self.deliver()
        assert self.sync.state is BookStatus.LIVE
        assert self.sync.update_id == self.exchange_id

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def live_book_matches_the_exchange(self) -> None:
        sync = self.sync
        if sync.state is not BookStatus.LIVE:
            return
        assert sync.buffered == 0
        uid = sync.update_id
        assert uid is not None
        bids, asks = self.history[uid]
        expected = (sorted(bids.items(), reverse=True), sorted(asks.items()))
        assert (sync.book.bids(), sync.book.asks()) == expected
        assert (self.consumer.bids(), self.consumer.asks()) == expected
        assert self.consumer.update_id == uid

    @invariant()
    def skipped_ids_are_reported(self) -> None:
        if self.first_delivered is None:
            return
        for missing in self.dropped:
            if self.first_delivered < missing < self.max_delivered:
                assert any(lo <= missing <= hi for lo, hi in self.gap_ranges), (missing, self.gap_ranges)


BookSyncMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestBookSync = BookSyncMachine.TestCase
