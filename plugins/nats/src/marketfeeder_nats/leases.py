"""Ownership of (exchange, shard) pairs in a group of feeders, through leases in a JetStream KV bucket.

Bucket ``mf_group_<group>`` (stream ``KV_mf_group_<group>``) with max age = ``ttl``: an entry that is not
rewritten within ``ttl`` seconds disappears, which is how a crashed member's leases end.

* ``member.<name>``: each member's heartbeat (plain put every tick); live members = keys present.
* ``shard.<exchange>.<shard>``: the owner's name. Taken with a compare-and-set on "no value"
  (``Nats-Expected-Last-Subject-Sequence: 0``) or on the revision of a released (empty) entry;
  renewed with the revision of the owner's last write, so two members can never both renew.

A member treats a lease as valid only until ``sent + ttl * (1 - margin)``, where ``sent`` is the local
time the renewal was sent: the server stores it later, so the server-side expiry comes after that
point, and a member that cannot renew stops publishing before anyone else may take over.
Each member aims for its fair share ``ceil(pairs / live members)`` and releases what is above it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import anyio
import attrs

from .client import NatsError
from .jetstream import JetStream, JetStreamError, KeyValue, WrongLastSequence
from .subjects import subject_token

__all__ = ["LeaseChanges", "ShardLeases"]

log = logging.getLogger(__name__)


@attrs.frozen
class LeaseChanges:
    acquired: list[tuple[str, int]]
    lost: list[tuple[str, int]]
    #: For each acquired pair, the previous owner's name ("" when the lease had expired or never existed).
    previous: dict[tuple[str, int], str] = attrs.field(factory=dict)


@attrs.define
class _Lease:
    revision: int
    valid_until: float


class ShardLeases:
    def __init__(self, js: JetStream, group: str, member: str, *, ttl: float = 5.0, margin: float = 0.25) -> None:
        if ttl <= 0 or not 0 <= margin < 1:
            raise ValueError("ttl must be positive and margin in [0, 1)")
        for label, value in (("group", group), ("member", member)):
            if not value or subject_token(value) != value:
                raise ValueError(f"{label} {value!r} must be a plain name (no dots, blanks or wildcards)")
        self.js = js
        self.group = group
        self.member = member
        self.ttl = ttl
        self.margin = margin
        self.bucket = f"mf_group_{group}"
        self.kv: KeyValue | None = None
        self._owned: dict[tuple[str, int], _Lease] = {}
        self.last_error = ""

    async def open(self) -> None:
        self.kv = await KeyValue.create(self.js, self.bucket, ttl=self.ttl)

    async def open_existing(self) -> None:
        """Use the bucket as it is (readers such as ``cluster status``: no settings to impose)."""
        self.kv = KeyValue(self.js, self.bucket)

    @staticmethod
    def key(exchange: str, shard: int) -> str:
        return f"shard.{subject_token(exchange)}.{shard}"

    def owns(self, exchange: str, shard: int) -> bool:
        lease = self._owned.get((exchange, shard))
        return lease is not None and anyio.current_time() < lease.valid_until

    def owned(self) -> list[tuple[str, int]]:
        now = anyio.current_time()
        return sorted(pair for pair, lease in self._owned.items() if now < lease.valid_until)

    def _validity(self, sent: float) -> float:
        return sent + self.ttl * (1.0 - self.margin)

    async def tick(self, wanted: Iterable[tuple[str, int]]) -> LeaseChanges:
        """Heartbeat, renew, rebalance: call every ``ttl / 3`` seconds or more often."""
        kv = self.kv
        if kv is None:
            raise RuntimeError("ShardLeases.open() first")
        me = self.member.encode()
        acquired: list[tuple[str, int]] = []
        lost: list[tuple[str, int]] = []
        previous: dict[tuple[str, int], str] = {}
        try:
            await kv.put(f"member.{self.member}", me)
            for pair, lease in list(self._owned.items()):
                sent = anyio.current_time()
                try:
                    lease.revision = await kv.update(self.key(*pair), me, lease.revision)
                    lease.valid_until = self._validity(sent)
                except WrongLastSequence:
                    del self._owned[pair]  # expired and taken by another member
                    lost.append(pair)
            members = [k for k in await kv.keys() if k.startswith("member.")]
            pairs = sorted(set(wanted) | set(self._owned))
            fair = math.ceil(len(pairs) / max(1, len(members))) if pairs else 0
            for pair in sorted(self._owned)[fair:]:
                await self._release(pair)
                lost.append(pair)
            for pair in pairs:
                if len(self._owned) >= fair:
                    break
                if pair in self._owned:
                    continue
                owner = await self._try_acquire(pair)
                if owner is not None:
                    acquired.append(pair)
                    previous[pair] = owner
        except (NatsError, JetStreamError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("leases of %s in group %s: %s", self.member, self.group, self.last_error)
        now = anyio.current_time()
        for pair, lease in list(self._owned.items()):
            if now >= lease.valid_until:  # could not renew in time: it is no longer ours
                del self._owned[pair]
                lost.append(pair)
        return LeaseChanges(acquired, lost, previous)

    async def _try_acquire(self, pair: tuple[str, int]) -> str | None:
        """Take ``pair`` if it is free; the previous owner's name ("" if none) on success, else None."""
        assert self.kv is not None
        key = self.key(*pair)
        entry = await self.kv.get(key)
        if entry is not None and entry.value:
            return None  # held (its owner renews it, or it expires within ttl)
        sent = anyio.current_time()
        try:
            revision = await self.kv.update(key, self.member.encode(), entry.revision if entry is not None else 0)
        except WrongLastSequence:
            return None  # another member was faster
        self._owned[pair] = _Lease(revision, self._validity(sent))
        return ""

    async def _release(self, pair: tuple[str, int]) -> None:
        assert self.kv is not None
        lease = self._owned.pop(pair)
        try:
            await self.kv.update(self.key(*pair), b"", lease.revision)
        except WrongLastSequence:
            pass

    async def release_all(self) -> None:
        """Planned leave: release every lease so the others take over at their next tick."""
        for pair in list(self._owned):
            try:
                await self._release(pair)
            except (NatsError, JetStreamError) as exc:
                self.last_error = str(exc)

    async def status(self) -> dict[str, Any]:
        """Members and shard owners as the bucket holds them now."""
        assert self.kv is not None
        members: list[str] = []
        shards: dict[str, str] = {}
        for key in await self.kv.keys():
            entry = await self.kv.get(key)
            if entry is None:
                continue
            if key.startswith("member."):
                members.append(key[len("member.") :])
            elif key.startswith("shard.") and entry.value:
                shards[key[len("shard.") :]] = entry.value.decode()
        return {"group": self.group, "members": sorted(members), "shards": shards}
