"""Order-book engine throughput: ``OrderBook.apply``, ``BookSync.on_delta`` (LIVE) and the read path.

The book starts with 1,000 levels a side on a 0.01 tick grid. The diff stream is generated from a
model of that book: each diff carries 1-16 levels, their distance from the mid drawn from an
exponential (mean 10 ticks), so most updates change the size of a level near the top; a level that
is present changes size (90 %) or is removed (10 %), an absent one is inserted, and every few hundred
diffs the mid moves by a tick or two, removing the levels it crosses. A second stream has one level per
diff, like Backpack's realtime depth. Runs standalone: ``python bench/bench_book.py``.
"""

from __future__ import annotations

import random
import time

from _table import print_table

from marketfeeder.book import BookSync, OrderBook, SnapshotOutcome
from marketfeeder.models import BookDelta, BookSnapshot, BookStatus, Event, Level
from marketfeeder.sequence import SequencePolicy

LEVELS = 1_000
N_DIFFS = 40_000
N_QUERIES = 300_000
MID = 10_000  # in ticks: 100.00
FIRST_ID = 1_000_000


def _price(tick: int) -> float:
    return float(f"{tick * 0.01:.2f}")  # as decoding the exchange's decimal string would give


def _size(rng: random.Random) -> float:
    return float(f"{rng.uniform(0.001, 50.0):.3f}")


def _initial(rng: random.Random) -> tuple[dict[int, float], dict[int, float]]:
    bids = {MID - 1 - k: _size(rng) for k in range(LEVELS)}
    asks = {MID + 1 + k: _size(rng) for k in range(LEVELS)}
    return bids, asks


def _diffs(rng: random.Random, max_levels: int) -> tuple[BookSnapshot, list[BookDelta]]:
    bids, asks = _initial(rng)
    snapshot = BookSnapshot.fast(
        "bench",
        "BTC-USDT",
        None,
        0,
        FIRST_ID - 1,
        tuple((_price(t), q) for t, q in sorted(bids.items(), reverse=True)),
        tuple((_price(t), q) for t, q in sorted(asks.items())),
    )
    mid = MID
    deltas: list[BookDelta] = []
    for i in range(N_DIFFS):
        changed_bids: dict[int, float] = {}
        changed_asks: dict[int, float] = {}
        if max_levels > 1 and rng.random() < 0.004:
            # The mid moves: levels it passes are taken out (trades consumed them).
            step = rng.choice((-2, -1, 1, 2))
            mid += step
            if step > 0:
                for tick in [t for t in asks if t <= mid]:
                    del asks[tick]
                    changed_asks[tick] = 0.0
            else:
                for tick in [t for t in bids if t >= mid]:
                    del bids[tick]
                    changed_bids[tick] = 0.0
        for _ in range(rng.randint(1, max_levels)):
            distance = min(int(rng.expovariate(0.1)), LEVELS - 1)
            is_bid = rng.random() < 0.5
            side, changed = (bids, changed_bids) if is_bid else (asks, changed_asks)
            tick = mid - 1 - distance if is_bid else mid + 1 + distance
            if tick in side and rng.random() < 0.1:
                del side[tick]
                changed[tick] = 0.0
            else:
                side[tick] = changed[tick] = _size(rng)
        deltas.append(
            BookDelta.fast(
                "bench",
                "BTC-USDT",
                None,
                i,
                FIRST_ID + i,
                FIRST_ID + i,
                tuple((_price(t), q) for t, q in changed_bids.items()),
                tuple((_price(t), q) for t, q in changed_asks.items()),
                None,
            )
        )
    return snapshot, deltas


def _apply_rate(snapshot: BookSnapshot, deltas: list[BookDelta], rounds: int) -> list[float]:
    pairs: list[tuple[tuple[Level, ...], tuple[Level, ...]]] = [(d.bids, d.asks) for d in deltas]
    n_levels = sum(len(b) + len(a) for b, a in pairs)
    values = []
    for _ in range(rounds):
        book = OrderBook("bench", "BTC-USDT")
        book.load_snapshot(snapshot.bids, snapshot.asks, snapshot.seq)
        apply = book.apply
        start = time.perf_counter()
        for bids, asks in pairs:
            apply(bids, asks)
        elapsed = time.perf_counter() - start
        if book.is_crossed() or min(book.depth()) < 900:
            raise AssertionError(f"unexpected book after the run: {book!r}")
        values.append(n_levels / elapsed)
    return values


def _sync_rate(snapshot: BookSnapshot, deltas: list[BookDelta], rounds: int) -> list[float]:
    values = []
    for _ in range(rounds):
        sync = BookSync("bench", "BTC-USDT", SequencePolicy(snapshot_slack=1))
        out: list[Event] = []
        sync.on_delta(deltas[0], out)
        if (
            sync.on_snapshot(snapshot, out) is not SnapshotOutcome.APPLIED
            or sync.state is not BookStatus.LIVE
        ):
            raise AssertionError("the bench book did not go LIVE")
        on_delta = sync.on_delta
        rest = deltas[1:]
        start = time.perf_counter()
        for i, delta in enumerate(rest):
            on_delta(delta, out)
            if i & 1023 == 0:
                out.clear()
        elapsed = time.perf_counter() - start
        if sync.state is not BookStatus.LIVE or sync.gaps or sync.update_id != deltas[-1].seq:
            raise AssertionError(f"sync lost step: {sync.statistics()}")
        values.append(len(rest) / elapsed)
    return values


def _query_rates(snapshot: BookSnapshot, rounds: int) -> tuple[list[float], list[float]]:
    book = OrderBook("bench", "BTC-USDT")
    book.load_snapshot(snapshot.bids, snapshot.asks, snapshot.seq)
    best_bid, top = book.best_bid, book.top
    loop = range(N_QUERIES)
    best, tops = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in loop:
            best_bid()
        best.append(N_QUERIES / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in loop:
            top(10)
        tops.append(N_QUERIES / (time.perf_counter() - start))
    return best, tops


def run(rounds: int = 5) -> list[dict]:
    snapshot, deltas = _diffs(random.Random(11), 16)
    snapshot_1, deltas_1 = _diffs(random.Random(12), 1)
    levels_per_diff = sum(len(d.bids) + len(d.asks) for d in deltas) / len(deltas)
    best, tops = _query_rates(snapshot, rounds)
    return [
        {
            "name": f"OrderBook.apply, 1000 levels/side, {levels_per_diff:.1f} levels/diff",
            "unit": "level updates/s",
            "values": _apply_rate(snapshot, deltas, rounds),
            "higher_is_better": True,
        },
        {
            "name": f"BookSync.on_delta LIVE, {levels_per_diff:.1f} levels/diff",
            "unit": "deltas/s",
            "values": _sync_rate(snapshot, deltas, rounds),
            "higher_is_better": True,
        },
        {
            "name": "BookSync.on_delta LIVE, 1 level/diff",
            "unit": "deltas/s",
            "values": _sync_rate(snapshot_1, deltas_1, rounds),
            "higher_is_better": True,
        },
        {"name": "OrderBook.best_bid", "unit": "calls/s", "values": best, "higher_is_better": True},
        {"name": "OrderBook.top(10)", "unit": "calls/s", "values": tops, "higher_is_better": True},
    ]


def main() -> None:
    results = run()
    print_table(results)


if __name__ == "__main__":
    main()
