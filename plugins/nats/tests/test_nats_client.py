"""The anyio NATS client against a real nats-server, on asyncio and trio (nats-py as the oracle)."""

from __future__ import annotations

import os

import anyio
import pytest
from nats_helpers import until_nats_py_subscribed
from natsserver import NatsServer

from marketfeeder_nats.client import (
    NatsClient,
    NatsConnectionError,
    NatsTimeoutError,
    NoRespondersError,
    encode_headers,
    hpub_frame,
    parse_headers,
    parse_servers,
)
from marketfeeder_nats.jetstream import (
    JetStream,
    JetStreamError,
    KeyValue,
    WrongLastSequence,
    parse_ack_reply,
)

pytestmark = pytest.mark.anyio


def test_headers_round_trip() -> None:
    raw = encode_headers({"Nats-Msg-Id": "binance:BTC-USDT:Trade:s1", "X": "a b"})
    assert parse_headers(raw) == ({"Nats-Msg-Id": "binance:BTC-USDT:Trade:s1", "X": "a b"}, None, "")
    assert parse_headers(b"NATS/1.0 404 No Messages\r\n\r\n") == ({}, 404, "No Messages")
    with pytest.raises(ValueError, match="invalid NATS header"):
        encode_headers({"A": "x\r\ny"})
    frame = hpub_frame("md.x", "_INBOX.1", "id-1", b"{}")
    assert frame.startswith(b"HPUB md.x _INBOX.1 ")
    assert frame.endswith(b"{}\r\n")


def test_parse_servers() -> None:
    assert parse_servers("nats://a:1, b") == [("a", 1), ("b", 4222)]
    with pytest.raises(ValueError, match="unsupported NATS URL"):
        parse_servers("http://a:1")
    with pytest.raises(ValueError, match="no NATS server"):
        parse_servers(" , ")


async def test_pub_sub_headers_and_large_payload(nats_server: NatsServer) -> None:
    async with NatsClient(nats_server.url) as nc:
        sub = await nc.subscribe("t.pubsub.>")
        big = os.urandom(600_000)  # spans many socket reads
        await nc.publish("t.pubsub.a", b"one")
        await nc.publish("t.pubsub.b", big, headers={"K": "v"})
        await nc.publish("t.pubsub.c", b"", reply="r.1")
        first = await sub.next_msg(5)
        second = await sub.next_msg(5)
        third = await sub.next_msg(5)
        assert (first.subject, first.data, first.headers) == ("t.pubsub.a", b"one", None)
        assert (second.subject, second.data, second.headers) == ("t.pubsub.b", big, {"K": "v"})
        assert (third.data, third.reply) == (b"", "r.1")
        await sub.unsubscribe()
        await nc.publish("t.pubsub.a", b"after")
        await nc.flush()
        assert sub.pop_nowait() is None
        with pytest.raises(ValueError, match="max_payload"):
            await nc.publish("t.x", b"x" * (nc.max_payload + 1))


async def test_bounded_subscription_drops_oldest(nats_server: NatsServer) -> None:
    async with NatsClient(nats_server.url) as nc:
        sub = await nc.subscribe("t.bounded", max_pending=3)
        for i in range(10):
            await nc.publish("t.bounded", str(i).encode())
        await nc.flush()
        assert [m.data for m in sub.pending] == [b"7", b"8", b"9"]
        assert sub.dropped == 7


async def test_request_reply_and_errors(nats_server: NatsServer) -> None:
    async with NatsClient(nats_server.url) as server, NatsClient(nats_server.url) as client:
        sub = await server.subscribe("t.echo")
        await server.flush()

        async def answer() -> None:
            msg = await sub.next_msg(5)
            await server.publish(msg.reply, msg.data.upper())
            await server.flush_writes()

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            reply = await client.request("t.echo", b"ping", max_wait=5)
        assert reply.data == b"PING"
        with pytest.raises(NoRespondersError):
            await client.request("t.nobody", b"x", max_wait=2)
        waiter = await client.subscribe("t.silence")
        with pytest.raises(NatsTimeoutError):
            await waiter.next_msg(0.2)


async def test_concurrent_waiters_share_the_reader(nats_server: NatsServer) -> None:
    async with NatsClient(nats_server.url) as nc:
        subs = [await nc.subscribe(f"t.many.{i}") for i in range(5)]
        got: list[bytes] = []

        async def wait(i: int) -> None:
            got.append((await subs[i].next_msg(5)).data)

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(wait, i)
            await anyio.sleep(0.05)
            for i in range(5):
                await nc.publish(f"t.many.{i}", str(i).encode())
            await nc.flush_writes()
        assert sorted(got) == [b"0", b"1", b"2", b"3", b"4"]


async def test_unreachable_server_is_a_clear_error() -> None:
    from natsserver import free_port

    nc = NatsClient(f"nats://127.0.0.1:{free_port()}", reconnect_timeout=0.3)
    with pytest.raises(NatsConnectionError, match="could not connect"):
        await nc.connect()


async def test_reconnect_after_kill_resubscribes(own_nats_server: NatsServer) -> None:
    server = own_nats_server.start()
    async with NatsClient(server.url, reconnect_timeout=10) as nc:
        sub = await nc.subscribe("t.recon")
        await nc.flush()
        server.kill()
        server.start()
        with anyio.fail_after(10):
            while True:  # the first write after the kill may vanish (at-most-once core NATS)
                await nc.publish("t.recon", b"x")
                try:
                    await sub.next_msg(0.5)
                    break
                except NatsTimeoutError:
                    continue
        assert nc.reconnects >= 1
        assert nc.generation >= 2


async def test_jetstream_streams_dedup_pull_and_ack(nats_server: NatsServer) -> None:
    async with NatsClient(nats_server.url) as nc:
        js = JetStream(nc)
        config = {"name": "TJS1", "subjects": ["tjs1.>"], "storage": "memory", "duplicate_window": 60_000_000_000}
        await js.delete_stream("TJS1")
        await js.ensure_stream(config)
        info = await js.ensure_stream({**config, "max_age": 3_600_000_000_000})  # changed setting: updated
        assert info["config"]["max_age"] == 3_600_000_000_000
        acks = [await js.publish(f"tjs1.{i % 2}", str(i).encode(), msg_id=f"m{i}") for i in range(6)]
        assert [a.seq for a in acks] == [1, 2, 3, 4, 5, 6]
        again = await js.publish("tjs1.0", b"0", msg_id="m0")
        assert again.duplicate and again.seq == 1
        with pytest.raises(NoRespondersError):
            await js.publish("nostream.x", b"x")
        await js.create_consumer("TJS1", {"durable_name": "c1", "ack_policy": "explicit", "filter_subject": "tjs1.0"})
        consumer = await js.pull_consumer("TJS1", "c1")
        msgs = await consumer.fetch(10, expires=0.3)
        assert [m.data for m in msgs] == [b"0", b"2", b"4"]
        metas = [parse_ack_reply(m.reply) for m in msgs]
        assert [m.stream_seq for m in metas] == [1, 3, 5]
        assert metas[-1].pending == 0 and metas[0].delivered == 1
        for m in msgs[:2]:
            await consumer.ack(m)
        await nc.flush()
        info2 = await consumer.info()
        assert info2 is not None and info2["ack_floor"]["consumer_seq"] == 2
        assert await consumer.fetch(5, expires=0.2) == []
        with pytest.raises(JetStreamError):
            await js.api("STREAM.INFO.NO_SUCH_STREAM")
        assert await js.stream_info("NO_SUCH_STREAM") is None


async def test_key_value_compare_and_set_and_ttl(nats_server: NatsServer) -> None:
    async with NatsClient(nats_server.url) as nc:
        js = JetStream(nc)
        await js.delete_stream("KV_tkv")
        kv = await KeyValue.create(js, "tkv", ttl=1.0)
        rev = await kv.create_key("lease.binance.3", b"feeder-a")
        with pytest.raises(WrongLastSequence):
            await kv.create_key("lease.binance.3", b"feeder-b")
        rev2 = await kv.update("lease.binance.3", b"feeder-a", rev)
        with pytest.raises(WrongLastSequence):
            await kv.update("lease.binance.3", b"feeder-b", rev)  # stale revision loses
        entry = await kv.get("lease.binance.3")
        assert entry is not None and (entry.value, entry.revision) == (b"feeder-a", rev2)
        assert await kv.keys() == ["lease.binance.3"]
        with anyio.fail_after(10):
            while await kv.get("lease.binance.3") is not None:  # noqa: ASYNC110 - expires by max_age
                await anyio.sleep(0.2)
        assert await kv.create_key("lease.binance.3", b"feeder-b") > rev2


async def test_nats_py_oracle_interoperates(nats_server: NatsServer, anyio_backend: str) -> None:
    """nats-py (asyncio only) publishes with headers and JetStream; our client reads the same bytes."""
    if anyio_backend != "asyncio":
        pytest.skip("nats-py runs on asyncio only")
    nats = pytest.importorskip("nats")
    oracle = await nats.connect(nats_server.url)
    try:
        async with NatsClient(nats_server.url) as nc:
            sub = await nc.subscribe("t.oracle")
            await nc.flush()
            await oracle.publish("t.oracle", b"from-nats-py", headers={"Nats-Msg-Id": "abc"})
            await oracle.flush()
            msg = await sub.next_msg(5)
            assert (msg.data, msg.headers) == (b"from-nats-py", {"Nats-Msg-Id": "abc"})
            their = await oracle.subscribe("t.oracle2")
            await oracle.flush()
            await until_nats_py_subscribed(nc, their, "t.oracle2")
            await nc.publish("t.oracle2", b"from-us", headers={"A": "1"})
            await nc.flush()
            got = await their.next_msg(5)
            assert (got.data, dict(got.headers or {})) == (b"from-us", {"A": "1"})
            # JetStream: a stream made by nats-py, a message published by us, acked with its seq.
            jsx = oracle.jetstream()
            await jsx.add_stream(name="TORACLE", subjects=["toracle.>"], storage="memory")
            ack = await JetStream(nc).publish("toracle.a", b"x", msg_id="id1")
            their_ack = await jsx.publish("toracle.a", b"y", headers={"Nats-Msg-Id": "id1"})
            assert their_ack.duplicate and their_ack.seq == ack.seq
            await jsx.delete_stream("TORACLE")
    finally:
        await oracle.close()
