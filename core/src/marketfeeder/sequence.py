"""How an exchange's depth stream and REST snapshot fit together (the order-book sync rules).

The core's book engine (:mod:`marketfeeder.book`) implements one procedure for every exchange:
buffer diffs, fetch a snapshot with last update id ``L``, drop diffs with ``u <= L``, require the
first applied diff to satisfy ``U <= L+1 <= u``, then ``U == prev_u + 1``; anything else is a gap.
A connector only states the parameters in which exchanges differ.
"""

from __future__ import annotations

import attrs

__all__ = ["SequencePolicy"]


@attrs.frozen
class SequencePolicy:
    #: The snapshot is usable when ``L >= first_buffered_U - snapshot_slack``; otherwise re-fetch.
    #: Binance's procedure says re-fetch while ``L < U`` (slack 0); the exact condition for a
    #: continuous book is ``L >= U - 1`` (slack 1), which Backpack's reference implementation allows.
    snapshot_slack: int = 0
    #: Diffs to buffer before the first snapshot request (Backpack's REST snapshot lags the stream).
    snapshot_wait_deltas: int = 1
    #: Seconds between snapshot attempts while the snapshot is older than the stream.
    snapshot_retry_delay: float = 0.25
    #: Snapshot attempts before the sync restarts from scratch (and a Gap is reported).
    max_snapshot_attempts: int = 20
    #: Diffs buffered while waiting for a snapshot; beyond this the oldest are dropped and sync restarts.
    max_buffered_deltas: int = 10_000
    #: Levels to request in the snapshot when the config does not say.
    default_depth_limit: int = 1000
