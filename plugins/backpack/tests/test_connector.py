"""The connector: instruments, stream names, control messages, REST snapshot and time, registration."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from backpack_testlib import fixture_json, fixture_text, http_server, make_table

from marketfeeder.config import ExchangeConfig
from marketfeeder.connector import DecodeError
from marketfeeder.models import BookDelta, DataType, MarketKind, UnknownSymbolError
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder.transport.http import HttpClient, HttpError
from marketfeeder.transport.server import HttpReply, HttpRequest
from marketfeeder_backpack.connector import (
    DEPTH_LIMITS,
    BackpackConnector,
    market_to_instrument,
    parse_depth_snapshot,
)
from marketfeeder_backpack.venue import BackpackVenue

pytestmark = pytest.mark.anyio


def connector(rest_url: str = "http://127.0.0.1:9", **kw: Any) -> BackpackConnector:
    return BackpackConnector(ExchangeConfig(rest_url=rest_url, **kw), HttpClient(retries=0, timeout=5))


# --- instruments ------------------------------------------------------------------------------------


def test_recorded_markets_excerpt() -> None:
    sol, hnt, bonk = (market_to_instrument(m) for m in fixture_json("bbgo_rest_markets_excerpt_3_entries.json"))
    assert (sol.native, sol.symbol, sol.base, sol.quote) == ("SOL_USDC", "SOL-USDC", "SOL", "USDC")
    assert (sol.tick_size, sol.step_size, sol.status, sol.active, sol.kind) == (
        0.01,
        0.01,
        "Open",
        True,
        MarketKind.SPOT,
    )
    assert (hnt.symbol, hnt.status, hnt.active, hnt.tick_size, hnt.step_size) == ("HNT-USDC", "Closed", False, 0.001, 0.1)
    assert (bonk.symbol, bonk.tick_size, bonk.step_size, bonk.active) == ("BONK-USDC", 1e-9, 10000.0, True)


def test_ccxt_markets_perp_kept_apart_from_spot() -> None:
    spot, perp = (market_to_instrument(m) for m in fixture_json("ccxt_comment_rest_markets.json"))
    assert (spot.symbol, spot.kind, spot.active) == ("SOL-USDC", MarketKind.SPOT, True)  # no "visible" key
    assert (perp.native, perp.symbol, perp.kind, perp.tick_size) == (
        "SOL_USDC_PERP",
        "SOL-USDC-PERP",
        MarketKind.PERP,
        0.01,
    )


def test_invisible_and_other_market_types() -> None:
    base = fixture_json("bbgo_rest_markets_excerpt_3_entries.json")[0]
    assert market_to_instrument({**base, "visible": False}).active is False
    assert market_to_instrument({**base, "orderBookState": "PostOnly"}).active is False
    dated = market_to_instrument({**base, "symbol": "SOL_USDC_DATED_20261231", "marketType": "DATED"})
    assert (dated.symbol, dated.kind) == ("SOL-USDC-DATED-20261231", MarketKind.OTHER)


async def test_load_instruments_over_loopback_and_refuse_closed() -> None:
    markets = [*fixture_json("bbgo_rest_markets_excerpt_3_entries.json"), {"symbol": "BROKEN"}]
    seen: list[HttpRequest] = []
    async with http_server(lambda r: HttpReply(200, orjson.dumps(markets)), seen) as url:
        c = connector(url)
        async with c.http:
            table = await c.load_instruments()
    assert seen[0].path == "/api/v1/markets"
    assert table is c.instruments
    assert [i.symbol for i in table] == ["SOL-USDC", "HNT-USDC", "BONK-USDC"]
    assert c.skipped_markets == 1
    assert table.require_tradable("SOL-USDC").native == "SOL_USDC"
    with pytest.raises(UnknownSymbolError, match=r"HNT-USDC \(HNT_USDC\) is not trading \(status Closed\)"):
        table.require_tradable("HNT-USDC")
    # decode uses the freshly loaded table
    line = '{"data":{"E":1,"T":2,"U":3,"a":[],"b":[["0.000000010","20000"]],"e":"depth","s":"BONK_USDC","u":3},"stream":"depth.BONK_USDC"}'
    (delta,) = c.decode(line, 0)
    assert isinstance(delta, BookDelta)
    assert (delta.symbol, delta.bids) == ("BONK-USDC", ((1e-8, 20000.0),))


async def test_load_instruments_rejects_a_non_list() -> None:
    async with http_server(lambda r: HttpReply(200, b'{"code":"x"}')) as url:
        c = connector(url)
        async with c.http:
            with pytest.raises(DecodeError, match="expected a list"):
                await c.load_instruments()


# --- streams and control messages -------------------------------------------------------------------


def test_stream_names() -> None:
    c = connector(kline_intervals=["1m", "1h"])
    c.instruments = make_table()
    sol = c.instruments.by_symbol("SOL-USDC")
    perp = c.instruments.by_symbol("SOL-USDC-PERP")
    assert c.streams_for(sol, DataType.ORDERBOOK) == ["depth.SOL_USDC"]
    assert c.streams_for(sol, DataType.BOOK_TICKER) == ["bookTicker.SOL_USDC"]
    assert c.streams_for(sol, DataType.TRADES) == ["trade.SOL_USDC"]
    assert c.streams_for(sol, DataType.TICKER) == ["ticker.SOL_USDC"]
    assert c.streams_for(sol, DataType.KLINES) == ["kline.1m.SOL_USDC", "kline.1h.SOL_USDC"]
    assert c.streams_for(perp, DataType.MARK_PRICE) == ["markPrice.SOL_USDC_PERP"]
    assert c.streams_for(sol, DataType.MARK_PRICE) == ["markPrice.SOL_USDC"]  # as in the documented example
    with pytest.raises(ValueError, match="not streamed"):
        c.streams_for(sol, DataType.STATUS)


def test_depth_speed_option_and_bad_config() -> None:
    c = connector(options={"depth_speed": "200ms"})
    c.instruments = make_table()
    assert c.streams_for(c.instruments.by_symbol("SOL-USDC"), DataType.ORDERBOOK) == ["depth.200ms.SOL_USDC"]
    with pytest.raises(ValueError, match="depth_speed '100ms'"):
        connector(options={"depth_speed": "100ms"})
    with pytest.raises(ValueError, match="'2m'"):
        connector(kline_intervals=["1m", "2m"])


def test_control_messages_have_no_id() -> None:
    c = connector()
    assert orjson.loads(c.subscribe_message(["depth.SOL_USDC", "trade.SOL_USDC"], 7)) == {
        "method": "SUBSCRIBE",
        "params": ["depth.SOL_USDC", "trade.SOL_USDC"],
    }
    assert orjson.loads(c.unsubscribe_message(["depth.SOL_USDC"], 8)) == {
        "method": "UNSUBSCRIBE",
        "params": ["depth.SOL_USDC"],
    }
    # exactly the documented examples' shape
    assert set(orjson.loads(c.subscribe_message(["stream"], 1))) == set(fixture_json("subscribe_request.json"))
    assert orjson.loads(c.unsubscribe_message(["stream"], 1)) == fixture_json("unsubscribe_request.json")


def test_rules() -> None:
    c = connector()
    assert (c.ws_url, BackpackConnector.default_rest_url) == ("wss://ws.backpack.exchange", "https://api.backpack.exchange")
    limits = BackpackConnector.limits
    assert limits.subscribe_ack is False
    assert limits.client_ping_interval is None
    assert limits.max_connection_lifetime is None
    policy = BackpackConnector.sequence_policy
    assert (policy.snapshot_slack, policy.default_depth_limit) == (1, 1000)
    assert policy.snapshot_wait_deltas > 1
    assert BackpackConnector.streams_in_url is False
    assert c.depth_limit() == 1000


# --- REST --------------------------------------------------------------------------------------------


def test_rest_depth_ascending_bids_become_best_first() -> None:
    snap = parse_depth_snapshot(fixture_json("bbgo_rest_depth_SOL_USDC_limit20_body.json"), "SOL-USDC", 5)
    assert snap.seq == 4324522523
    assert snap.exchange_ts == 1788285151254895000
    assert (snap.symbol, snap.receive_ts) == ("SOL-USDC", 5)
    assert snap.bids[0] == (100.64, 67.95)
    assert snap.bids[-1] == (100.19, 5.52)
    assert snap.asks[0] == (100.65, 65.5)
    assert snap.asks[-1] == (101.26, 10.0)
    assert len(snap.bids) == len(snap.asks) == 20
    assert [p for p, _ in snap.bids] == sorted((p for p, _ in snap.bids), reverse=True)
    assert [p for p, _ in snap.asks] == sorted(p for p, _ in snap.asks)


def test_doc_and_ccxt_rest_depth() -> None:
    doc = parse_depth_snapshot(fixture_json("rest_depth.json"), "SOL-USDC", 0)
    assert (doc.seq, doc.exchange_ts) == (1684026955123, 1684026955123000)
    assert doc.bids == ((20.5, 499.555), (20.12, 255.123))
    assert doc.asks == ((21.9, 500.123), (22.1, 2321.11))
    ccxt = parse_depth_snapshot(fixture_json("ccxt_comment_rest_depth.json"), "BTC-USDC", 0)
    assert (ccxt.seq, ccxt.exchange_ts) == (1504999670, 1753102447307501000)
    assert ccxt.bids == ((12.9, 1.0), (1.0, 0.38647))
    assert ccxt.asks == ((118318.3, 0.00633), (118567.2, 0.0845))


@pytest.mark.parametrize(
    "body",
    [{"asks": [], "bids": []}, {"asks": [], "bids": [], "lastUpdateId": "x"}, {"asks": [["1"]], "bids": [], "lastUpdateId": "1"}, []],
)
def test_bad_rest_depth(body: Any) -> None:
    with pytest.raises(DecodeError, match="bad depth snapshot for SOL-USDC"):
        parse_depth_snapshot(body, "SOL-USDC", 0)


async def test_fetch_snapshot_over_loopback_rounds_the_limit_up() -> None:
    body = fixture_text("bbgo_rest_depth_SOL_USDC_limit20_body.json").encode()
    seen: list[HttpRequest] = []
    async with http_server(lambda r: HttpReply(200, body), seen) as url:
        c = connector(url)
        c.instruments = make_table()
        async with c.http:
            snap = await c.fetch_snapshot(c.instruments.by_symbol("SOL-USDC"), 30)
            await c.fetch_snapshot(c.instruments.by_symbol("SOL-USDC"), 5000)
    assert seen[0].path == "/api/v1/depth"
    assert dict(seen[0].query) == {"symbol": "SOL_USDC", "limit": "50"}
    assert seen[1].query["limit"] == "1000"
    assert snap.seq == 4324522523
    assert snap.receive_ts > 1_700_000_000 * 10**9
    assert 30 < 50 in DEPTH_LIMITS


async def test_server_time_in_ms_text() -> None:
    async with http_server(lambda r: HttpReply(200, b"1788285151083", "text/plain")) as url:
        c = connector(url)
        async with c.http:
            assert await c.server_time() == 1788285151083000000


async def test_unknown_symbol_from_the_venue_is_a_clear_http_error() -> None:
    from marketfeeder.sim.engine import MarketEngine, default_instruments

    engine = MarketEngine(1, default_instruments("backpack"), ["backpack"])
    venue = BackpackVenue(engine.view("backpack"))
    async with http_server(venue.handle_http) as url:
        c = connector(url)
        async with c.http:
            table = await c.load_instruments()
            snap = await c.fetch_snapshot(table.by_symbol("SOL-USDC"), 100)
            ghost = market_to_instrument({**fixture_json("bbgo_rest_markets_excerpt_3_entries.json")[1], "symbol": "HNT_USDT"})
            with pytest.raises(HttpError, match="Invalid symbol: HNT_USDT") as info:
                await c.fetch_snapshot(ghost, 100)
    assert info.value.status == 400
    assert [i.symbol for i in table] == ["BTC-USDC", "ETH-USDC", "SOL-USDC", "SOL-USDC-PERP"]
    assert snap.seq is not None
    assert snap.bids[0][0] < snap.asks[0][0]
    assert len(snap.bids) == len(snap.asks) == 100


# --- registration ------------------------------------------------------------------------------------


def test_entry_point_registers_connector_and_venue() -> None:
    pm = get_plugin_manager()
    assert collect(pm, "marketfeeder_register_connectors", "connector")["backpack"] is BackpackConnector
    assert collect(pm, "marketfeeder_register_venues", "venue")["backpack"] is BackpackVenue
