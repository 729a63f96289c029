"""The simulator server with a toy venue: streams, control messages, REST, determinism, faults, rules."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio
import httpx
import orjson
import pytest
from sim_toy import ToyVenue

from marketfeeder import hookimpl
from marketfeeder.models import DataType, MarketKind
from marketfeeder.plugins import get_plugin_manager
from marketfeeder.sim import FaultPlan, SimServer, sim_config_for, venues_from_plugins
from marketfeeder.sim.faults import UNKNOWN_FIELD, UNKNOWN_STREAM
from marketfeeder.sim.venue import Venue
from marketfeeder.transport.ws import WebSocket, WebSocketClosed, WebSocketHandshakeError, connect_websocket

pytestmark = pytest.mark.anyio

START_NS = 1_780_000_000_000_000_000
VENUES = {"toy": ToyVenue}


def make_sim(**kwargs: Any) -> SimServer:
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("rate", 3_000.0)
    kwargs.setdefault("start_ns", START_NS)
    return SimServer(VENUES, **kwargs)


async def wait_for_connections(sim: SimServer, n: int, venue: str = "toy") -> None:
    with anyio.fail_after(5):
        while len(sim.connections(venue)) < n:  # noqa: ASYNC110 - the server offers no event for it
            await anyio.sleep(0.005)


@asynccontextmanager
async def connect(sim: SimServer, streams: list[str], **kwargs: Any) -> AsyncIterator[WebSocket]:
    url = sim.endpoints()["toy"]["ws_url"] + "/ws"
    if streams:
        url += "?streams=" + "/".join(streams)
    async with connect_websocket(url, **kwargs) as ws:
        yield ws


async def receive_text(ws: WebSocket, wait: float = 5.0) -> str:
    with anyio.fail_after(wait):
        message, _ = await ws.receive()
    return message if isinstance(message, str) else message.decode()


async def collect(ws: WebSocket, n: int, idle: float = 5.0) -> tuple[list[str], int | None]:
    """Up to ``n`` frames; stops early when the connection closes (returns its close code)."""
    texts: list[str] = []
    try:
        while len(texts) < n:
            texts.append(await receive_text(ws, idle))
    except WebSocketClosed as exc:
        return texts, exc.code
    return texts, None


async def until_closed(ws: WebSocket) -> WebSocketClosed:
    """Read (and drop) frames until the connection closes; fails after 5 s."""
    with anyio.fail_after(5):
        while True:
            try:
                await ws.receive()
            except WebSocketClosed as exc:
                return exc


async def drain(ws: WebSocket, idle: float = 0.3) -> list[str]:
    """Frames until ``idle`` seconds pass without one (after pausing the market)."""
    texts: list[str] = []
    while True:
        with anyio.move_on_after(idle) as scope:
            message, _ = await ws.receive()
            texts.append(message if isinstance(message, str) else message.decode())
        if scope.cancelled_caught:
            return texts


def parse(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# --- streams, REST, control ----------------------------------------------------------------------


async def test_endpoints_and_config() -> None:
    async with make_sim() as sim:
        endpoints = sim.endpoints()
        assert set(endpoints) == {"toy"}
        assert endpoints["toy"]["ws_url"].startswith("ws://127.0.0.1:")
        assert endpoints["toy"]["rest_url"] == endpoints["toy"]["ws_url"].replace("ws://", "http://")
        config = sim_config_for(sim, ["toy"])
        assert config == {"exchanges": {"toy": endpoints["toy"]}}
        assert sim_config_for(sim) == config
        assert [orjson.loads(line) for line in sim.endpoint_lines()] == [{"venue": "toy", **endpoints["toy"]}]
        with pytest.raises(ValueError, match="nope"):
            sim_config_for(sim, ["nope"])
        async with httpx.AsyncClient(base_url=endpoints["toy"]["rest_url"], timeout=5) as client:
            ticker = (await client.get("/ticker", params={"symbol": "ETH-USDT"})).json()
            assert ticker["symbol"] == "ETH-USDT"
            assert (await client.get("/nothing")).status_code == 404
    with pytest.raises(RuntimeError, match="not running"):
        sim.endpoints()


async def test_live_book_from_snapshot_and_diffs_matches_the_engine() -> None:
    async with make_sim(venue_options={"toy": {"snapshot_lag_updates": 3}}) as sim:
        symbol = "ETH-USDT"
        async with connect(sim, [f"{symbol}@depth"]) as ws:
            await wait_for_connections(sim, 1)
            buffered = [parse(await receive_text(ws)) for _ in range(5)]
            async with httpx.AsyncClient(base_url=sim.endpoints()["toy"]["rest_url"], timeout=5) as client:
                snap = (await client.get("/depth", params={"symbol": symbol, "limit": 5000})).json()
            bids = {Decimal(p): Decimal(s) for p, s in snap["bids"]}
            asks = {Decimal(p): Decimal(s) for p, s in snap["asks"]}
            last = snap["lastUpdateId"]

            def apply(data: dict[str, Any]) -> None:
                # The usual procedure: drop what the snapshot has, then the ids must chain.
                nonlocal last
                if data["u"] <= last:
                    return
                assert (
                    data["U"] <= last + 1 <= data["u"]
                    if last == snap["lastUpdateId"]
                    else data["U"] == last + 1
                )
                for side, levels in ((bids, data["b"]), (asks, data["a"])):
                    for p, s in levels:
                        if Decimal(s) == 0:
                            side.pop(Decimal(p), None)
                        else:
                            side[Decimal(p)] = Decimal(s)
                last = data["u"]

            for frame in buffered:
                assert frame is not None
                apply(frame["data"])
            for _ in range(300):
                frame = parse(await receive_text(ws))
                assert frame is not None
                apply(frame["data"])
                assert max(bids) < min(asks)
            sim.pause_market()
            for text in await drain(ws):
                frame = parse(text)
                assert frame is not None
                apply(frame["data"])
            book = sim.engine.book("toy", symbol)
            assert last == book.last_id
            assert {float(p): float(s) for p, s in bids.items()} == book.bids
            assert {float(p): float(s) for p, s in asks.items()} == book.asks
            assert len(bids) > 250


async def test_subscribe_unsubscribe_and_errors() -> None:
    async with make_sim(venue_options={"toy": {"max_streams": 3}}) as sim, connect(sim, []) as ws:
        await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["BTC-USDT@trade"], "id": 1}).decode())
        replies: list[dict[str, Any]] = []
        trades = 0
        with anyio.fail_after(5):
            while not replies or trades < 5:
                frame = parse(await receive_text(ws))
                assert frame is not None
                if "id" in frame:
                    replies.append(frame)
                else:
                    assert frame["stream"] == "BTC-USDT@trade"
                    trades += 1
        assert replies == [{"result": None, "id": 1}]
        (conn,) = sim.connections("toy")
        assert conn.streams == {"BTC-USDT@trade"}
        await ws.send('{"method":"SUBSCRIBE","params":["XRP-USDT@trade"],"id":2}')
        await ws.send('{"method":"SUBSCRIBE","params":["a@depth","b@depth","c@depth"],"id":3}')
        await ws.send(
            '{"method":"SUBSCRIBE","params":["BTC-USDT@depth","ETH-USDT@depth","SOL-USDT@depth"],"id":4}'
        )
        await ws.send('{"method":"UNSUBSCRIBE","params":["BTC-USDT@trade"],"id":5}')
        errors: dict[int, dict[str, Any]] = {}
        with anyio.fail_after(5):
            while len(errors) < 4:
                frame = parse(await receive_text(ws))
                if frame is not None and "id" in frame:
                    errors[frame["id"]] = frame
        assert "XRP-USDT" in errors[2]["error"]
        assert "invalid streams" in errors[3]["error"]
        assert "too many streams (max 3)" in errors[4]["error"]
        assert errors[5] == {"result": None, "id": 5}
        assert conn.streams == set()
    assert sim.rules("toy").max_streams == 3


async def test_refused_upgrades() -> None:
    async with make_sim() as sim:
        base = sim.endpoints()["toy"]["ws_url"]
        with pytest.raises(WebSocketHandshakeError) as info:
            async with connect_websocket(base + "/other"):
                pass
        assert info.value.status == 404
        with pytest.raises(WebSocketHandshakeError) as info:
            async with connect_websocket(base + "/ws?streams=NOPE@depth"):
                pass
        assert info.value.status == 400
        assert sim.statistics()["rejected"] == 2


async def run_frames(seed: int, n: int = 400, faults: str | None = None) -> list[str]:
    sim = make_sim(seed=seed, autostart=False, faults=faults, rate="max")
    streams = ["BTC-USDT@depth", "BTC-USDT@trade", "SOL-USDT@bookTicker", "ETH-USDT@kline_1s"]
    async with sim, connect(sim, streams) as ws:
        await wait_for_connections(sim, 1)
        sim.start_market()
        texts, code = await collect(ws, n)
        assert code is None
        return texts


def digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


async def test_same_seed_same_frames() -> None:
    a = await run_frames(5)
    b = await run_frames(5)
    c = await run_frames(6)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    # Faults are seeded too.
    spec = "dup=0.05,reorder=0.05,skip_ids=0.05,unknown_fields=0.05"
    assert digest(await run_frames(5, faults=spec)) == digest(await run_frames(5, faults=spec))


async def test_rate_max_streams_as_fast_as_the_client_reads() -> None:
    streams = [f"{s}@depth" for s in ("BTC-USDT", "ETH-USDT", "SOL-USDT")]
    async with SimServer(VENUES, seed=1, rate="max") as sim, connect(sim, streams) as ws:
        texts, code = await collect(ws, 3_000)
        assert code is None and len(texts) == 3_000
        # With an unpinned clock, event times stay on wall time even at full speed.
        last = parse(texts[-1])
        assert last is not None
        assert abs(last["data"]["E"] - time.time_ns() // 1_000_000) < 2_000
    assert sim.statistics()["frames_sent"] >= 3_000


def test_server_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="XRP-USDT"):
        SimServer(VENUES, symbols=["XRP-USDT"])
    with pytest.raises(ValueError, match="ping_every"):
        SimServer(VENUES, venue_options={"toy": {"rules": {"ping_every": 1}}})
    with pytest.raises(ValueError, match="other"):
        SimServer(VENUES, venue_options={"other": {}})
    with pytest.raises(ValueError, match="bogus"):
        SimServer(VENUES, faults="bogus=1")
    with pytest.raises(ValueError, match="rate"):
        SimServer(VENUES, rate="fast")
    sim = SimServer(VENUES, symbols=["SOL-USDT"], faults="dup=0.5")
    assert [i.symbol for i in sim.engine.instruments("toy")] == ["SOL-USDT"]
    assert sim.faults == FaultPlan(dup=0.5)


# --- faults: what the server injected is what the client sees --------------------------------------


async def faulty_session(
    spec: str, streams: list[str], n: int = 600, rate: float | str = "max"
) -> tuple[SimServer, list[str], int | None, dict[DataType, int]]:
    sim = make_sim(autostart=False, faults=spec, rate=rate)
    async with sim, connect(sim, streams) as ws:
        await wait_for_connections(sim, 1)
        (conn,) = sim.connections("toy")
        sim.start_market()
        texts, code = await collect(ws, n)
        sim.pause_market()
        if code is None:
            texts += await drain(ws)
        offered = dict(conn.faults.offered) if conn.faults is not None else {}
    return sim, texts, code, offered


def depth_ids(texts: list[str]) -> list[tuple[int, int]]:
    out = []
    for text in texts:
        frame = parse(text)
        if frame is not None and frame.get("stream", "").endswith("@depth"):
            out.append((frame["data"]["U"], frame["data"]["u"]))
    return out


async def test_fault_skip_ids_makes_gaps() -> None:
    sim, texts, _, offered = await faulty_session("skip_ids=0.03", ["BTC-USDT@depth", "BTC-USDT@trade"])
    skipped = sim.counters["skip_ids"]
    ids = depth_ids(texts)
    gaps = sum(1 for (_, u), (nu, _) in itertools.pairwise(ids) if nu != u + 1)
    assert skipped > 0
    assert 1 <= gaps <= skipped  # adjacent skips make one gap
    assert len(ids) + skipped == offered[DataType.ORDERBOOK]
    assert all(parse(t) is not None for t in texts)  # only order-book frames are dropped
    assert sim.counters.injected() == {"skip_ids": skipped}


async def test_fault_dup() -> None:
    sim, texts, _, _ = await faulty_session("dup=0.05", ["BTC-USDT@depth", "ETH-USDT@trade"])
    dups = sum(1 for a, b in itertools.pairwise(texts) if a == b)
    assert dups == sim.counters["dup"] > 0
    assert sim.counters.injected() == {"dup": dups}


async def test_fault_reorder() -> None:
    sim, texts, _, _ = await faulty_session("reorder=0.05", ["BTC-USDT@depth"])
    ids = depth_ids(texts)
    backwards = sum(1 for (_, u), (nu, _) in itertools.pairwise(ids) if nu <= u)
    # A frame held back at the very end has not been released yet.
    assert sim.counters["reorder"] - backwards in (0, 1)
    assert backwards > 0
    assert sorted(ids) == sorted(set(ids))  # nothing lost or duplicated


@pytest.mark.parametrize("kind", ["malformed", "truncated"])
async def test_fault_undecodable_frames(kind: str) -> None:
    sim, texts, _, _ = await faulty_session(f"{kind}=0.03", ["BTC-USDT@depth", "BTC-USDT@trade"])
    bad = sum(1 for t in texts if parse(t) is None)
    assert bad == sim.counters[kind] > 0
    assert sim.counters.injected() == {kind: bad}


async def test_fault_unknown_fields_and_events() -> None:
    sim, texts, _, _ = await faulty_session("unknown_fields=0.04,unknown_event=0.03", ["BTC-USDT@depth"])
    frames = [parse(t) for t in texts]
    assert all(f is not None for f in frames)
    extra = sum(1 for f in frames if f is not None and UNKNOWN_FIELD in f["data"])
    unknown = sum(1 for f in frames if f is not None and f["stream"] == UNKNOWN_STREAM)
    assert extra == sim.counters["unknown_fields"] > 0
    assert unknown == sim.counters["unknown_event"] > 0


async def test_fault_drop_conn() -> None:
    sim, texts, code, _ = await faulty_session(
        "drop_conn=0.01", ["BTC-USDT@depth", "SOL-USDT@depth"], n=5_000
    )
    assert code == 1006
    assert 0 < len(texts) < 5_000
    assert sim.counters["drop_conn"] == 1


async def test_fault_disconnect_every() -> None:
    sim, texts, code, _ = await faulty_session(
        "disconnect_every=300ms", ["BTC-USDT@depth"], n=100_000, rate=2_000
    )
    assert code == 1001
    assert texts
    assert sim.counters["disconnect_every"] == 1


async def test_fault_stall_is_silence_without_closing() -> None:
    sim = make_sim(faults="stall=every:400ms:300ms")
    async with sim, connect(sim, ["BTC-USDT@depth", "ETH-USDT@depth"]) as ws:
        longest = 0.0
        last = anyio.current_time()
        frames = 0
        while anyio.current_time() - last < 5 and frames < 100_000:
            await receive_text(ws)
            now = anyio.current_time()
            longest = max(longest, now - last)
            last = now
            frames += 1
            if sim.counters["stall"] >= 1 and longest >= 0.2 and frames > 50:
                break
        assert longest >= 0.2  # a silence, and the connection still delivers afterwards
        assert sim.counters["stall"] >= 1
        assert not ws.closed
    assert sim.statistics()["stalled_frames"] > 0


async def test_fault_slow_writes_lose_nothing() -> None:
    sim, texts, _, offered = await faulty_session("slow=0.02,slow_delay=5ms", ["BTC-USDT@depth"], n=300)
    assert sim.counters["slow"] > 0
    assert len(depth_ids(texts)) == offered[DataType.ORDERBOOK]


async def test_fault_corrupt_prices() -> None:
    sim, texts, _, _ = await faulty_session(
        "crossed=0.02,off_grid=0.02,spike=0.02", ["BTC-USDT@bookTicker", "BTC-USDT@trade"], n=1_500
    )
    crossed = off_grid = spikes = 0
    reference: Decimal | None = None
    for text in texts:
        frame = parse(text)
        assert frame is not None
        data = frame["data"]
        prices = [data["b"], data["a"]] if "b" in data else [data["p"]]
        if any(len(p.partition(".")[2]) != 2 for p in prices):
            off_grid += 1
            continue
        values = [Decimal(p) for p in prices]
        if "b" in data and values[0] >= values[1]:
            crossed += 1
            continue
        if reference is not None and any(abs(v / reference - 1) > Decimal("0.2") for v in values):
            spikes += 1
            continue
        reference = values[0]
    counters = sim.counters
    assert (crossed, off_grid, spikes) == (counters["crossed"], counters["off_grid"], counters["spike"])
    assert crossed > 0 and off_grid > 0 and spikes > 0


async def test_rest_faults() -> None:
    async with make_sim(faults="rest_500=1") as sim:
        async with httpx.AsyncClient(base_url=sim.endpoints()["toy"]["rest_url"], timeout=5) as client:
            for _ in range(3):
                assert (await client.get("/depth", params={"symbol": "BTC-USDT"})).status_code == 500
            assert (await client.get("/ping")).status_code == 200  # not a fault path
        assert sim.counters["rest_500"] == 3
    async with make_sim(faults="rest_429=1,retry_after=7") as sim:
        async with httpx.AsyncClient(base_url=sim.endpoints()["toy"]["rest_url"], timeout=5) as client:
            reply = await client.get("/depth", params={"symbol": "BTC-USDT"})
            assert reply.status_code == 429
            assert reply.headers["Retry-After"] == "7"
        assert sim.counters["rest_429"] == 1
    async with make_sim(faults="rest_timeout=1,rest_delay=3s") as sim:
        async with httpx.AsyncClient(base_url=sim.endpoints()["toy"]["rest_url"], timeout=0.2) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.get("/depth", params={"symbol": "BTC-USDT"})
        assert sim.counters["rest_timeout"] == 1
    async with make_sim(faults="rest_500=0.5,seed=3") as sim:
        async with httpx.AsyncClient(base_url=sim.endpoints()["toy"]["rest_url"], timeout=5) as client:
            statuses = [
                (await client.get("/depth", params={"symbol": "BTC-USDT"})).status_code for _ in range(40)
            ]
        assert statuses.count(500) == sim.counters["rest_500"]
        assert 0 < statuses.count(500) < 40 and statuses.count(200) == 40 - statuses.count(500)


# --- rules ---------------------------------------------------------------------------------------


async def test_no_pong_gets_disconnected_and_a_live_client_stays() -> None:
    options = {"toy": {"ping_interval": 0.1, "pong_timeout": 0.5}}
    async with (
        make_sim(rate=500, venue_options=options) as sim,
        connect(sim, ["BTC-USDT@trade"]) as live,
        connect(sim, ["BTC-USDT@trade"]) as idle,
    ):
        await wait_for_connections(sim, 2)
        # ``live`` reads (and so answers pings); ``idle`` does not read at all.
        with anyio.move_on_after(1.5):
            while True:
                await receive_text(live)
        assert live.stats.pings_received > 3
        await until_closed(idle)
        await receive_text(live)
        assert not live.closed
    assert sim.statistics()["pong_timeout"] == 1


async def test_too_many_messages_get_disconnected() -> None:
    options = {"toy": {"rules": {"max_incoming_per_second": 3}}}
    async with (
        make_sim(rate=200, venue_options=options) as sim,
        connect(sim, []) as polite,
        connect(sim, []) as flood,
    ):
        for i in range(3):
            await polite.send(
                orjson.dumps({"method": "SUBSCRIBE", "params": ["BTC-USDT@trade"], "id": i}).decode()
            )
            await anyio.sleep(0.4)
        for i in range(10):
            await flood.send(
                orjson.dumps({"method": "SUBSCRIBE", "params": ["BTC-USDT@trade"], "id": i}).decode()
            )
        assert (await until_closed(flood)).code == 1008
        assert not polite.closed
        await receive_text(polite)
    assert sim.statistics()["rate_limited"] == 1


async def test_lifetime_notice_then_close() -> None:
    options = {"toy": {"max_lifetime": 0.6, "shutdown_notice_before": 0.3}}
    async with make_sim(rate=300, venue_options=options) as sim, connect(sim, ["SOL-USDT@depth"]) as ws:
        texts, code = await collect(ws, 100_000)
        assert code == 1001
        notices = [i for i, t in enumerate(texts) if '"serverShutdown"' in t]
        assert len(notices) == 1
        assert notices[0] < len(texts)  # frames may follow the notice until the cut
    stats = sim.statistics()
    assert stats["lifetime"] == 1 and stats["shutdown_notices"] == 1


# --- wiring for the command line -----------------------------------------------------------------


class ToyPlugin:
    @hookimpl
    def marketfeeder_register_venues(self, register: Callable[[str, type[Venue]], None]) -> None:
        register("toy", ToyVenue)


def test_venues_from_plugins() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(ToyPlugin(), name="toy-plugin")
    assert venues_from_plugins(pm) == {"toy": ToyVenue}
    assert venues_from_plugins(pm, ["toy"]) == {"toy": ToyVenue}
    with pytest.raises(ValueError, match=r"nope.*installed: toy"):
        venues_from_plugins(pm, ["nope"])


def test_symbols_per_venue() -> None:
    sim = SimServer(VENUES, venue_options={"toy": {"symbols": ["ETH-USDT", "DOGE-USDT", "SOL-USDC-PERP"]}})
    listed = sim.engine.instruments("toy")
    assert [i.symbol for i in listed] == ["ETH-USDT", "DOGE-USDT", "SOL-USDC-PERP"]
    assert listed[0].tick_size == "0.01" and listed[1].base == "DOGE"
    assert listed[2].kind is MarketKind.PERP
    with pytest.raises(ValueError, match="'DOGE'"):
        SimServer(VENUES, venue_options={"toy": {"symbols": ["DOGE"]}})


async def test_live_clock_follows_wall_time_across_pauses() -> None:
    sim = SimServer(VENUES, seed=1, rate=1_000, autostart=False)
    async with sim, connect(sim, ["BTC-USDT@trade"]) as ws:
        await wait_for_connections(sim, 1)
        await anyio.sleep(0.6)
        sim.start_market()
        frame = parse(await receive_text(ws))
        assert frame is not None
        # Event times are on the wall clock (with a generous margin), not 0.6 s behind it.
        assert abs(frame["data"]["E"] - time.time_ns() // 1_000_000) < 400
        sim.pause_market()
        await drain(ws, 0.2)
        await anyio.sleep(0.6)
        sim.start_market()
        frame = parse(await receive_text(ws))
        assert frame is not None
        assert abs(frame["data"]["E"] - time.time_ns() // 1_000_000) < 400


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_plain_websockets_client(anyio_backend: str) -> None:
    """A client that is not ours (the ``websockets`` library) subscribes and reads frames."""
    from websockets.asyncio.client import connect as plain_connect

    async with make_sim() as sim, plain_connect(sim.endpoints()["toy"]["ws_url"] + "/ws") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["SOL-USDT@bookTicker"],"id":7}')
        with anyio.fail_after(5):
            frames = [orjson.loads(await ws.recv()) for _ in range(5)]
        assert frames[0] == {"result": None, "id": 7}
        assert all(f["stream"] == "SOL-USDT@bookTicker" for f in frames[1:])
        assert set(frames[1]["data"]) == {"u", "s", "b", "B", "a", "A"}
