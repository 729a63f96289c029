"""Leases in a KV bucket and fail-over between publishers of one group."""

from __future__ import annotations

import uuid

import anyio
import pytest
from nats_helpers import read_stream, unique_prefixes
from natsserver import NatsServer

from marketfeeder.models import DataType, Event, Gap, Side, Trade
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.jetstream import JetStream
from marketfeeder_nats.leases import ShardLeases
from marketfeeder_nats.sink import NatsSink
from marketfeeder_nats.subjects import stream_name

pytestmark = pytest.mark.anyio
T0 = 1_767_225_600_000_000_000
PAIRS = [("binance", s) for s in range(4)]


def trades(n: int, start: int = 0) -> list[Event]:
    return [Trade("binance", "BTC-USDT", T0 + i, T0 + 10 + i, i, 100.0, 0.5, Side.BUY, None)
            for i in range(start, start + n)]


def test_names_are_checked() -> None:
    with pytest.raises(ValueError, match="plain name"):
        ShardLeases(None, "a.b", "m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        ShardLeases(None, "g", "m", ttl=0)  # type: ignore[arg-type]


async def test_members_share_pairs_and_take_over_after_expiry(nats_server: NatsServer) -> None:
    group = uuid.uuid4().hex[:8]
    async with NatsClient(nats_server.url) as nc_a, NatsClient(nats_server.url) as nc_b:
        a = ShardLeases(JetStream(nc_a), group, "a", ttl=1.0)
        b = ShardLeases(JetStream(nc_b), group, "b", ttl=1.0)
        await a.open()
        await b.open()
        first = await a.tick(PAIRS)  # alone: takes everything
        assert sorted(first.acquired) == PAIRS and a.owned() == PAIRS
        await b.tick(PAIRS)  # b is a member now; a sees two members and keeps its fair share
        changes = await a.tick(PAIRS)
        assert len(changes.lost) == 2 and len(a.owned()) == 2
        await b.tick(PAIRS)
        assert sorted(a.owned() + b.owned()) == PAIRS  # every pair has exactly one owner
        assert not set(a.owned()) & set(b.owned())
        status = await b.status()
        assert status["members"] == ["a", "b"]
        assert sorted(status["shards"].values()) == ["a", "a", "b", "b"]
        # a stops renewing (crash): its leases end locally before the server lets b take them
        with anyio.fail_after(10):
            while a.owned() != []:  # noqa: ASYNC110 - local validity runs out
                await anyio.sleep(0.05)
            while len(b.owned()) < 4:
                await b.tick(PAIRS)
                await anyio.sleep(0.1)
        assert b.owned() == PAIRS
        lost = await a.tick(PAIRS)  # a comes back: its old revisions are stale, it owns nothing
        assert a.owned() == [] or not set(a.owned()) & set(b.owned())
        assert all(pair in PAIRS for pair in lost.lost)


async def test_planned_release_hands_over_at_next_tick(nats_server: NatsServer) -> None:
    group = uuid.uuid4().hex[:8]
    async with NatsClient(nats_server.url) as nc:
        js = JetStream(nc)
        a = ShardLeases(js, group, "a", ttl=5.0)
        b = ShardLeases(js, group, "b", ttl=5.0)
        await a.open()
        await b.open()
        await a.tick(PAIRS[:1])
        assert (await b.tick(PAIRS[:1])).acquired == []
        await a.release_all()
        assert (await b.tick(PAIRS[:1])).acquired == PAIRS[:1]


async def test_publisher_crash_hands_shards_over_without_loss(nats_server: NatsServer) -> None:
    """Two sinks of one group see the same feed; the owner dies; the standby takes over after the lease
    TTL and republishes its buffer: the stream holds every trade once, in order."""
    prefixes = unique_prefixes()
    group = uuid.uuid4().hex[:8]
    common = {"url": nats_server.url, "storage": "memory", "group": group, "lease_ttl": 1.0, "shards": 1, **prefixes}
    a = NatsSink({**common, "member": "a"})
    b = NatsSink({**common, "member": "b"})
    await a.open()
    await a.write_batch(trades(1))  # a sees the pair first and claims it
    await a.write_batch(trades(99, start=1))
    await a.flush()
    await b.open()
    await b.write_batch(trades(100))  # standby: buffered, not published
    assert b.published == 0 and a.leases is not None and a.leases.owned() == [("binance", 0)]
    await a.nc.close()  # crash: no release, no more renewals
    events = trades(400)
    with anyio.fail_after(15):
        for start in range(100, 400, 10):
            await b.write_batch(events[start : start + 10])  # a never published these
            await anyio.sleep(0.05)
    await b.flush()
    assert b.takeovers == 1
    await b.close()
    stored = [e for _s, _subj, _h, e in await read_stream(nats_server.url, stream_name(prefixes["stream_prefix"], "trades"))]
    assert stored == events


async def test_take_over_marks_an_exact_gap_for_what_nobody_published(nats_server: NatsServer) -> None:
    prefixes = unique_prefixes()
    group = uuid.uuid4().hex[:8]
    common = {"url": nats_server.url, "storage": "memory", "group": group, "lease_ttl": 1.0, "shards": 1,
              "standby_buffer": 20, **prefixes}
    a = NatsSink({**common, "member": "a", "standby_buffer": 1000})
    b = NatsSink({**common, "member": "b"})
    await a.open()
    await a.write_batch(trades(50))  # buffered until a holds the lease (at its next call)
    await a.flush()
    await b.open()
    await b.write_batch(trades(100))  # the standby buffer keeps only the last 20 (80..99)
    await a.nc.close()
    with anyio.fail_after(15):
        while b.takeovers == 0:
            await b.write_batch([])
            await anyio.sleep(0.1)
    await b.flush()
    await b.close()
    stored = [e for _s, _subj, _h, e in await read_stream(nats_server.url, stream_name(prefixes["stream_prefix"], "trades"))]
    assert stored[:50] == trades(50)
    gap = stored[50]
    assert isinstance(gap, Gap)
    assert (gap.gap_type, gap.from_seq, gap.to_seq, gap.count) == (DataType.TRADES, 50, 79, 30)
    assert stored[51:] == trades(20, start=80)
