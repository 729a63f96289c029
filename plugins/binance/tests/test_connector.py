"""The Binance connector: its rules, stream names, control messages and REST calls (on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from marketfeeder.config import ExchangeConfig
from marketfeeder.connector import DecodeError
from marketfeeder.models import BookDelta, DataType, Instrument, Trade, UnknownSymbolError
from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.transport.http import HttpClient, HttpError
from marketfeeder.transport.server import HttpReply, HttpRequest, LoopbackServer
from marketfeeder_binance.codec import US
from marketfeeder_binance.connector import BinanceConnector
from marketfeeder_binance.venue import BinanceVenue

SEED = 7
FIXTURES = Path(__file__).parent / "fixtures"


def connector(**config: Any) -> BinanceConnector:
    return BinanceConnector(ExchangeConfig(**config), HttpClient())


def loaded(**config: Any) -> BinanceConnector:
    """A connector whose instrument table is the documented ETHBTC plus a halted BNBBTC."""
    conn = connector(**config)
    conn.instruments.add(Instrument("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", 1e-6, 1e-4, "TRADING", True))
    conn.instruments.add(Instrument("binance", "BNBBTC", "BNB-BTC", "BNB", "BTC", 1e-6, 1e-4, "HALT", False))
    return conn


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


# --- rules --------------------------------------------------------------------------------------------


def test_documented_rules() -> None:
    assert BinanceConnector.name == "binance"
    assert BinanceConnector.default_ws_url == "wss://stream.binance.com:9443"
    assert BinanceConnector.default_rest_url == "https://api.binance.com"
    limits = BinanceConnector.limits
    assert limits.max_streams_per_connection == 1024
    assert limits.max_control_messages_per_second is not None
    assert limits.max_control_messages_per_second < 5
    assert limits.max_connection_lifetime == 24 * 3600
    assert 0 < limits.rotate_margin < limits.max_connection_lifetime
    assert limits.connect_attempts == (300, 300.0)
    assert limits.client_ping_interval is None
    assert limits.subscribe_ack is True
    policy = BinanceConnector.sequence_policy
    assert (policy.snapshot_slack, policy.snapshot_wait_deltas) == (0, 1)
    assert policy.default_depth_limit <= 5000
    assert BinanceConnector.streams_in_url is True
    assert DataType.MARK_PRICE not in BinanceConnector.supported_data_types


def test_endpoints_are_configuration() -> None:
    conn = connector(ws_url="wss://data-stream.binance.vision/", rest_url="https://data-api.binance.vision")
    assert conn.ws_url == "wss://data-stream.binance.vision"
    assert conn.rest_url == "https://data-api.binance.vision"
    assert connector().ws_url == "wss://stream.binance.com:9443"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"options": {"time_unit": "nanosecond"}}, "options.time_unit"),
        ({"options": {"trades": "blockTrade"}}, "options.trades"),
        ({"options": {"depth_speed": "250ms"}}, "options.depth_speed"),
        ({"kline_intervals": ["2m"]}, "'2m' is not a Binance interval"),
        ({"depth_limit": 5001}, "at most 5000"),
    ],
)
def test_bad_options_are_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connector(**config)


# --- streams -------------------------------------------------------------------------------------------


def test_streams_for_each_data_type() -> None:
    conn = loaded(kline_intervals=["1m", "1h", "1M"])
    eth = conn.instruments.by_symbol("ETH-BTC")
    assert conn.streams_for(eth, DataType.TICKER) == ["ethbtc@ticker"]
    assert conn.streams_for(eth, DataType.BOOK_TICKER) == ["ethbtc@bookTicker"]
    assert conn.streams_for(eth, DataType.TRADES) == ["ethbtc@trade"]
    assert conn.streams_for(eth, DataType.ORDERBOOK) == ["ethbtc@depth@100ms"]
    assert conn.streams_for(eth, DataType.KLINES) == ["ethbtc@kline_1m", "ethbtc@kline_1h", "ethbtc@kline_1M"]
    with pytest.raises(ValueError, match="mark_price"):
        conn.streams_for(eth, DataType.MARK_PRICE)


def test_stream_options() -> None:
    conn = loaded(options={"trades": "aggTrade", "depth_speed": "1000ms"})
    eth = conn.instruments.by_symbol("ETH-BTC")
    assert conn.streams_for(eth, DataType.TRADES) == ["ethbtc@aggTrade"]
    assert conn.streams_for(eth, DataType.ORDERBOOK) == ["ethbtc@depth"]


def test_halted_or_unknown_symbols_are_refused_by_name() -> None:
    conn = loaded()
    with pytest.raises(UnknownSymbolError, match=r"BNB-BTC \(BNBBTC\) is not trading \(status HALT\)"):
        conn.streams_for(conn.instruments.by_symbol("BNB-BTC"), DataType.TRADES)
    stranger = Instrument("binance", "XRPBTC", "XRP-BTC", "XRP", "BTC", 1e-8, 1.0, "TRADING", True)
    with pytest.raises(UnknownSymbolError, match="XRP-BTC"):
        conn.streams_for(stranger, DataType.TRADES)


def test_connection_url() -> None:
    conn = connector(ws_url="ws://127.0.0.1:9/")
    assert conn.connection_url(["btcusdt@trade", "btcusdt@depth@100ms"]) == (
        "ws://127.0.0.1:9/stream?streams=btcusdt@trade/btcusdt@depth@100ms"
    )
    assert conn.connection_url([]) == "ws://127.0.0.1:9/stream"
    micro = connector(ws_url="ws://127.0.0.1:9", options={"time_unit": "microsecond"})
    assert micro.connection_url(["btcusdt@trade"]) == "ws://127.0.0.1:9/stream?streams=btcusdt@trade&timeUnit=MICROSECOND"
    assert micro.connection_url([]) == "ws://127.0.0.1:9/stream?timeUnit=MICROSECOND"
    assert micro.codec.time_unit_ns == US


def test_control_messages_match_the_docs() -> None:
    conn = connector()
    assert orjson.loads(conn.subscribe_message(["btcusdt@aggTrade", "btcusdt@depth"], 1)) == fixture("subscribe_request.json")
    assert orjson.loads(conn.unsubscribe_message(["btcusdt@depth"], 312)) == fixture("unsubscribe_request.json")


def test_decode_uses_the_instrument_table_it_loaded() -> None:
    conn = loaded()
    frame = b'{"e":"depthUpdate","E":1,"s":"ETHBTC","U":5,"u":6,"b":[["0.05","1.5"]],"a":[]}'
    with pytest.raises(DecodeError):  # the codec's table is filled by load_instruments, not by add()
        conn.decode(frame, 1)
    conn.codec.set_instruments(conn.instruments)
    assert conn.decode(frame, 1) == [BookDelta("binance", "ETH-BTC", 1_000_000, 1, 6, 5, ((0.05, 1.5),), (), None)]


# --- REST against loopback servers ----------------------------------------------------------------


async def _no_ws(ws: Any) -> None:
    return None


@asynccontextmanager
async def serve(handler: Callable[[HttpRequest], HttpReply]) -> AsyncIterator[str]:
    async with LoopbackServer(ws_handler=_no_ws, http_handler=handler) as server:
        yield server.http_url


def static(routes: dict[str, bytes]) -> Callable[[HttpRequest], HttpReply]:
    def handler(request: HttpRequest) -> HttpReply:
        body = routes.get(request.path)
        return HttpReply(200, body) if body is not None else HttpReply(404, b'{"code":-1,"msg":"no"}')

    return handler


@pytest.mark.anyio
async def test_load_recorded_exchange_info() -> None:
    body = (FIXTURES / "cryptofeed_exchangeInfo_2021-10-12_excerpt.json").read_bytes()
    async with serve(static({"/api/v3/exchangeInfo": body})) as url, HttpClient(retries=0) as http:
        conn = BinanceConnector(ExchangeConfig(rest_url=url), http)
        table = await conn.load_instruments()
    assert table is conn.instruments
    assert [i.symbol for i in table] == ["LRC-BTC", "BLZ-ETH", "NKN-USDT", "RUNE-EUR"]
    assert table.by_native("RUNEEUR").tick_size == 0.001
    assert conn.skipped_instruments == []
    trade = b'{"stream":"nknusdt@trade","data":{"e":"trade","E":1,"s":"NKNUSDT","t":2,"p":"0.5","q":"3","T":1,"m":false,"M":true}}'
    (event,) = conn.decode(trade, 9)
    assert isinstance(event, Trade)
    assert event.symbol == "NKN-USDT"


@pytest.mark.anyio
async def test_fetch_documented_depth_and_time() -> None:
    routes = {
        "/api/v3/depth": (FIXTURES / "rest_depth.json").read_bytes(),
        "/api/v3/time": b'{"serverTime":1499827319559}',
    }
    async with serve(static(routes)) as url, HttpClient(retries=0) as http:
        conn = BinanceConnector(ExchangeConfig(rest_url=url), http)
        eth = Instrument("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", 1e-6, 1e-4, "TRADING", True)
        snap = await conn.fetch_snapshot(eth, 1000)
        assert await conn.server_time() == 1499827319559 * 1_000_000
    assert (snap.symbol, snap.seq, snap.bids, snap.asks, snap.exchange_ts) == (
        "ETH-BTC", 1027024, ((4.0, 431.0),), ((4.000002, 12.0),), None,
    )
    assert snap.receive_ts > 1_600_000_000 * 10**9


@pytest.mark.anyio
async def test_against_the_venue() -> None:
    engine = MarketEngine(SEED, default_instruments("binance"), ["binance"], rate=1000.0)
    venue = BinanceVenue(engine.view("binance"))
    engine.take(3000)
    seen: list[dict[str, str]] = []

    def handler(request: HttpRequest) -> HttpReply:
        seen.append(dict(request.query))
        return venue.handle_http(request)

    async with serve(handler) as url, HttpClient(retries=0) as http:
        conn = BinanceConnector(ExchangeConfig(rest_url=url, depth_limit=5000), http)
        table = await conn.load_instruments()
        assert [i.native for i in table] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        btc = table.require_tradable("BTC-USDT")
        snap = await conn.fetch_snapshot(btc, conn.depth_limit())
        assert seen[-1] == {"symbol": "BTCUSDT", "limit": "5000"}
        await conn.fetch_snapshot(btc, 99_999)
        assert seen[-1]["limit"] == "5000"  # clamped to the documented maximum
        assert await conn.server_time() == engine.now_ns() // 1_000_000 * 1_000_000
        with pytest.raises(HttpError) as info:
            await conn.fetch_snapshot(Instrument("binance", "XRPUSDT", "XRP-USDT", "XRP", "USDT", 1, 1, "TRADING", True), 5)
        assert info.value.status == 400
        assert "-1121" in info.value.body
    book = engine.book("binance", "BTC-USDT")
    assert snap.seq == book.last_id
    assert dict(snap.bids) == book.bids
    assert dict(snap.asks) == book.asks
    assert [p for p, _ in snap.bids] == sorted(book.bids, reverse=True)
    assert [p for p, _ in snap.asks] == sorted(book.asks)


@pytest.mark.anyio
async def test_malformed_rest_bodies_are_decode_errors() -> None:
    routes = {"/api/v3/exchangeInfo": b'{"symbols": 5}', "/api/v3/depth": b'{"lastUpdateId": "x"}', "/api/v3/time": b"{}"}
    async with serve(static(routes)) as url, HttpClient(retries=0) as http:
        conn = BinanceConnector(ExchangeConfig(rest_url=url), http)
        with pytest.raises(DecodeError, match="symbols"):
            await conn.load_instruments()
        eth = Instrument("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", 1e-6, 1e-4, "TRADING", True)
        with pytest.raises(DecodeError, match="lastUpdateId"):
            await conn.fetch_snapshot(eth, 10)
        with pytest.raises(DecodeError, match="serverTime"):
            await conn.server_time()


def test_plugin_registration() -> None:
    from marketfeeder_binance import plugin

    connectors: dict[str, Any] = {}
    venues: dict[str, Any] = {}
    plugin.marketfeeder_register_connectors(connectors.__setitem__)
    plugin.marketfeeder_register_venues(venues.__setitem__)
    assert connectors == {"binance": BinanceConnector}
    assert venues == {"binance": BinanceVenue}


def test_entry_point_discovery() -> None:
    from marketfeeder.plugins import get_plugin_manager

    pm = get_plugin_manager()
    names = [name for name, _ in pm.list_name_plugin()]
    assert "binance" in names
