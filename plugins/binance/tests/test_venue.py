"""The Binance venue simulator: control protocol, payload shapes, round trips and REST handlers."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.connector import ServerShutdown
from marketfeeder.models import BookDelta, BookTicker, DataType, Kline, MarketKind, Side, Ticker, Trade
from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.sim.model import (
    SimBookTicker,
    SimDepth,
    SimEvent,
    SimInstrument,
    SimKline,
    SimMarkPrice,
    SimTicker,
    SimTrade,
)
from marketfeeder.sim.venue import HttpReply, HttpRequest, SimFrame, WsReject
from marketfeeder_binance.codec import MS, US, BinanceCodec, parse_exchange_info
from marketfeeder_binance.venue import BinanceVenue

SEED = 20260101
ALL_KINDS = ("@depth@100ms", "@depth", "@trade", "@aggTrade", "@bookTicker", "@ticker", "@kline_1s", "@kline_1m")
FIXTURES = Path(__file__).parent / "fixtures"


@attrs.define
class Conn:
    """A client connection as the venue sees it (the SimConnection protocol)."""

    path: str
    query: Mapping[str, str] = attrs.field(factory=dict)
    id: int = 1
    streams: set[str] = attrs.field(factory=set)
    state: dict[str, Any] = attrs.field(factory=dict)


def sample(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


@pytest.fixture
def engine() -> MarketEngine:
    return MarketEngine(SEED, default_instruments("binance"), ["binance"], rate=1000.0)


@pytest.fixture
def venue(engine: MarketEngine) -> BinanceVenue:
    return BinanceVenue(engine.view("binance"))


def codec_for(venue: BinanceVenue, unit: int = MS) -> BinanceCodec:
    reply = venue.handle_http(HttpRequest("GET", "/api/v3/exchangeInfo", {}, {}))
    instruments, skipped = parse_exchange_info(orjson.loads(reply.body))
    assert skipped == []
    return BinanceCodec(instruments, time_unit_ns=unit)


def every_stream() -> set[str]:
    return {s + k for s in ("btcusdt", "ethusdt", "solusdt") for k in ALL_KINDS}


def connect(venue: BinanceVenue, path: str, **query: str) -> Conn:
    conn = Conn(path, dict(query))
    venue.on_connect(conn)
    return conn


# --- connections -------------------------------------------------------------------------------------


def test_combined_connection_takes_streams_from_url(venue: BinanceVenue) -> None:
    conn = connect(venue, "/stream", streams="btcusdt@trade/ethusdt@depth@100ms/solusdt@kline_1m")
    assert conn.streams == {"btcusdt@trade", "ethusdt@depth@100ms", "solusdt@kline_1m"}
    assert conn.state == {"combined": True, "us": False}


def test_raw_connection(venue: BinanceVenue) -> None:
    conn = connect(venue, "/ws/btcusdt@bookTicker")
    assert conn.streams == {"btcusdt@bookTicker"}
    assert conn.state["combined"] is False
    assert connect(venue, "/ws").streams == set()
    assert connect(venue, "/stream").streams == set()


@pytest.mark.parametrize("unit", ["MICROSECOND", "microsecond"])
def test_microsecond_connection(venue: BinanceVenue, unit: str) -> None:
    assert connect(venue, "/stream", streams="btcusdt@trade", timeUnit=unit).state["us"] is True
    assert connect(venue, "/stream", streams="btcusdt@trade", timeUnit="MILLISECOND").state["us"] is False


@pytest.mark.parametrize(
    ("path", "query", "status", "text"),
    [
        ("/api/stream", {}, 404, "unknown path"),
        ("/stream", {"streams": "btcusdt@depth7"}, 400, "invalid stream name"),
        ("/stream", {"streams": "BTCUSDT@trade"}, 400, "unknown symbol"),
        ("/ws/xrpusdt@trade", {}, 400, "unknown symbol"),
        ("/stream", {"streams": "btcusdt@kline_2m"}, 400, "invalid stream name"),
        ("/stream", {"streams": "btcusdt@trade", "timeUnit": "NANOSECOND"}, 400, "timeUnit"),
    ],
)
def test_connect_refusals(venue: BinanceVenue, path: str, query: dict[str, str], status: int, text: str) -> None:
    with pytest.raises(WsReject, match=text) as info:
        connect(venue, path, **query)
    assert info.value.status == status


def test_stream_limit_is_1024() -> None:
    template = default_instruments("binance")[0]
    instruments = [attrs.evolve(template, symbol=f"C{n}-USDT", base=f"C{n}") for n in range(48)]
    engine = MarketEngine(SEED, instruments, ["binance"], book_levels=10)
    venue = BinanceVenue(engine.view("binance"))
    names = sorted(f"c{n}usdt{kind}" for n in range(48) for kind in ALL_KINDS)
    names += sorted(f"c{n}usdt@kline_{i}" for n in range(48) for i in ("3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"))
    assert len(names) > 1024
    conn = connect(venue, "/stream", streams="/".join(names[:1024]))
    assert len(conn.streams) == 1024
    reply = orjson.loads(venue.on_message(conn, orjson.dumps({"method": "SUBSCRIBE", "params": [names[1024]], "id": 9}).decode())[0])
    assert reply["code"] == 2
    assert reply["id"] == 9
    assert "too many streams" in reply["msg"]
    assert len(conn.streams) == 1024
    with pytest.raises(WsReject, match="too many streams"):
        connect(venue, "/stream", streams="/".join(names[:1025]))


# --- the live control protocol ---------------------------------------------------------------------


def ask(venue: BinanceVenue, conn: Conn, request: Any) -> Any:
    text = request if isinstance(request, str) else orjson.dumps(request).decode()
    (reply,) = venue.on_message(conn, text)
    return orjson.loads(reply)


def test_documented_exchange(venue: BinanceVenue) -> None:
    # The docs' sequence: subscribe two streams, drop one, list, set and get "combined".
    conn = connect(venue, "/ws")
    assert ask(venue, conn, sample("subscribe_request.json")) == sample("subscribe_response.json")
    assert conn.streams == {"btcusdt@aggTrade", "btcusdt@depth"}
    assert ask(venue, conn, sample("unsubscribe_request.json")) == sample("unsubscribe_response.json")
    assert ask(venue, conn, sample("list_subscriptions_request.json")) == sample("list_subscriptions_response.json")
    assert conn.state["combined"] is False
    assert ask(venue, conn, sample("set_property_request.json")) == sample("set_property_response.json")
    assert conn.state["combined"] is True
    assert ask(venue, conn, sample("get_property_request.json")) == sample("get_property_response.json")


def test_property_default_per_path(venue: BinanceVenue) -> None:
    get = {"method": "GET_PROPERTY", "params": ["combined"], "id": 1}
    assert ask(venue, connect(venue, "/stream"), get) == {"result": True, "id": 1}
    assert ask(venue, connect(venue, "/ws"), get) == {"result": False, "id": 1}


@pytest.mark.parametrize("request_id", [0, -5, 2**63 - 1, -(2**63), "abc", "A1" * 18, None])
def test_valid_ids_are_echoed(venue: BinanceVenue, request_id: Any) -> None:
    reply = ask(venue, connect(venue, "/ws"), {"method": "LIST_SUBSCRIPTIONS", "id": request_id})
    assert reply == {"result": [], "id": request_id}


@pytest.mark.parametrize("request_id", [1.5, True, [], {}, "a-b", "x" * 37, "", 2**63])
def test_invalid_ids(venue: BinanceVenue, request_id: Any) -> None:
    text = '{"method":"LIST_SUBSCRIPTIONS","id":' + (str(request_id) if isinstance(request_id, int) and not isinstance(request_id, bool) else orjson.dumps(request_id).decode()) + "}"
    reply = ask(venue, connect(venue, "/ws"), text)
    assert reply["code"] == 2
    assert reply["msg"].startswith("Invalid request: request ID")
    assert "id" not in reply


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"method": "SUBSCRIBED", "params": [], "id": 4}, {"code": 2, "msg": "Invalid request: unknown method 'SUBSCRIBED'", "id": 4}),
        ({"params": [], "id": 4}, {"code": 2, "msg": "Invalid request: missing field `method`", "id": 4}),
        ({"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 4}, {"code": 2, "msg": "Invalid request: `params` must be a list", "id": 4}),
        ({"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 4}, {"code": 2, "msg": "Invalid request: too many parameters", "id": 4}),
        ({"method": "SET_PROPERTY", "params": ["colour", True], "id": 4}, {"code": 0, "msg": "Unknown property", "id": 4}),
        ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 4}, {"code": 1, "msg": "Invalid value type: expected Boolean", "id": 4}),
        ({"method": "SET_PROPERTY", "params": ["combined"], "id": 4}, {"code": 2, "msg": "Invalid request: SET_PROPERTY takes [property, value]", "id": 4}),
        ({"method": "GET_PROPERTY", "params": ["colour"], "id": 4}, {"code": 0, "msg": "Unknown property", "id": 4}),
        ({"method": "GET_PROPERTY", "params": [], "id": 4}, {"code": 2, "msg": "Invalid request: GET_PROPERTY takes [property]", "id": 4}),
        ({"method": "SUBSCRIBE", "params": ["btcusdt@trades"], "id": 4}, {"code": 2, "msg": "Invalid request: invalid stream name 'btcusdt@trades'", "id": 4}),
        ({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 4}, {"code": 2, "msg": "Invalid request: unknown symbol in stream 'dogeusdt@trade'", "id": 4}),
        ({"method": "SUBSCRIBE", "params": [5], "id": 4}, {"code": 2, "msg": "Invalid request: stream name must be a string, got 5", "id": 4}),
        ({"method": "UNSUBSCRIBE", "params": [None], "id": 4}, {"code": 2, "msg": "Invalid request: stream name must be a string, got None", "id": 4}),
        ([1, 2], {"code": 2, "msg": "Invalid request: request must be a JSON object"}),
    ],
)
def test_error_replies(venue: BinanceVenue, message: Any, expected: dict[str, Any]) -> None:
    conn = connect(venue, "/ws/btcusdt@trade")
    assert ask(venue, conn, message) == expected
    assert conn.streams == {"btcusdt@trade"}  # a refused request changes nothing


@pytest.mark.parametrize(("text", "line", "column"), [("", 1, 1), ('{"method":', 1, 11), ('{\n "id": x}', 2, 8)])
def test_invalid_json_is_code_3(venue: BinanceVenue, text: str, line: int, column: int) -> None:
    reply = ask(venue, connect(venue, "/ws"), text)
    assert reply == {"code": 3, "msg": f"Invalid JSON: expected value at line {line} column {column}"}


def test_subscribe_is_all_or_nothing(venue: BinanceVenue) -> None:
    conn = connect(venue, "/ws")
    reply = ask(venue, conn, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@nope"], "id": 1})
    assert reply["code"] == 2
    assert conn.streams == set()
    assert ask(venue, conn, {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}) == {"result": None, "id": 2}


# --- payloads: key sets and JSON types as in the documented samples -----------------------------------


def shape(value: Any) -> Any:
    """The JSON type structure of a value (dict keys and the type of every leaf)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@functools.cache
def first_frames() -> dict[str, str]:
    """The first payload of every stream kind from a fresh seeded market."""
    engine = MarketEngine(SEED, default_instruments("binance"), ["binance"], rate=1000.0)
    venue = BinanceVenue(engine.view("binance"))
    frames: dict[str, str] = {}
    wanted = every_stream()
    while len(frames) < len(ALL_KINDS):
        for _, event in engine.step():
            for frame in venue.encode(event, wanted):
                frames.setdefault(frame.stream.split("@", 1)[1], frame.payload)
    return frames


@pytest.mark.parametrize(
    ("kind", "sample_name"),
    [
        ("depth@100ms", "depthUpdate.json"),
        ("depth", "depthUpdate.json"),
        ("trade", "trade.json"),
        ("aggTrade", "aggTrade.json"),
        ("bookTicker", "bookTicker.json"),
        ("ticker", "ticker.json"),
        ("kline_1m", "kline.json"),
        ("kline_1s", "kline.json"),
    ],
)
def test_payload_shapes_match_samples(kind: str, sample_name: str) -> None:
    payload = orjson.loads(first_frames()[kind])
    expected = sample(sample_name)
    assert list(payload) == list(expected)  # same keys, same order
    assert shape(payload) == shape(expected)


def test_server_shutdown_shapes(venue: BinanceVenue) -> None:
    now = 1770123456789_123_456
    notice = venue.shutdown_notice(now)
    assert notice is not None
    assert orjson.loads(notice) == sample("serverShutdown.json")
    frame = venue.shutdown_frame(now)
    assert orjson.loads(venue.wrap(connect(venue, "/stream"), frame)) == sample("serverShutdown_combined.json")
    assert orjson.loads(venue.wrap(connect(venue, "/ws"), frame)) == sample("serverShutdown.json")
    assert orjson.loads(venue.wrap(connect(venue, "/ws", timeUnit="MICROSECOND"), frame))["E"] == 1770123456789000


def test_wrap_follows_the_combined_property(venue: BinanceVenue) -> None:
    frame = SimFrame("btcusdt@trade", '{"e":"trade"}', DataType.TRADES)
    raw = connect(venue, "/ws/btcusdt@trade")
    assert venue.wrap(raw, frame) == '{"e":"trade"}'
    ask(venue, raw, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 1})
    assert orjson.loads(venue.wrap(raw, frame)) == {"stream": "btcusdt@trade", "data": {"e": "trade"}}


def test_encode_only_wanted_streams(engine: MarketEngine, venue: BinanceVenue) -> None:
    wanted = {"btcusdt@trade"}
    streams = {f.stream for _, e in engine.take(3000) for f in venue.encode(e, wanted)}
    assert streams == {"btcusdt@trade"}
    assert all(venue.encode(e, set()) == [] for _, e in engine.take(500))


def test_frames_carry_their_data_type(engine: MarketEngine, venue: BinanceVenue) -> None:
    expected = {
        "depth@100ms": DataType.ORDERBOOK, "depth": DataType.ORDERBOOK, "trade": DataType.TRADES,
        "aggTrade": DataType.TRADES, "bookTicker": DataType.BOOK_TICKER, "ticker": DataType.TICKER,
        "kline_1s": DataType.KLINES, "kline_1m": DataType.KLINES,
    }
    seen: dict[str, DataType] = {}
    for _, event in engine.take(5000):
        for frame in venue.encode(event, every_stream()):
            seen[frame.stream.split("@", 1)[1]] = frame.data_type
    assert seen == expected


# --- round trip: venue frame -> connector decode -> the SimEvent's values --------------------------------


def check_round_trip(event: SimEvent, decoded: Any, unit: int, stream: str) -> None:
    def t(ns: int) -> int:
        return ns // unit * unit

    if isinstance(event, SimDepth):
        assert decoded == BookDelta(
            "binance", event.symbol, t(event.time_ns), 5, event.last_id, event.first_id,
            tuple((float(p), float(q)) for p, q in event.bids), tuple((float(p), float(q)) for p, q in event.asks), None,
        )
    elif isinstance(event, SimTrade):
        side = Side.SELL if event.buyer_is_maker else Side.BUY
        assert decoded == Trade(
            "binance", event.symbol, t(event.time_ns), 5, event.trade_id, float(event.price), float(event.size),
            side, t(event.engine_ns),
        )
    elif isinstance(event, SimBookTicker):
        assert decoded == BookTicker(
            "binance", event.symbol, None, 5, event.update_id, float(event.bid), float(event.bid_size),
            float(event.ask), float(event.ask_size), None,
        )
    elif isinstance(event, SimTicker):
        assert decoded == Ticker(
            "binance", event.symbol, t(event.time_ns), 5, None, float(event.last), float(event.bid),
            float(event.bid_size), float(event.ask), float(event.ask_size), float(event.open), float(event.high),
            float(event.low), float(event.volume), float(event.quote_volume), event.trade_count,
            float(event.price_change), float(event.price_change_pct), float(event.vwap),
        )
    elif isinstance(event, SimKline):
        assert isinstance(decoded, Kline)
        assert (decoded.symbol, decoded.interval, decoded.open_ts, decoded.close_ts, decoded.closed) == (
            event.symbol, event.interval, t(event.open_ns), t(event.close_ns), event.closed,
        )
        assert (decoded.exchange_ts, decoded.volume, decoded.quote_volume, decoded.trade_count) == (
            t(event.time_ns), float(event.volume), float(event.quote_volume), event.trade_count,
        )
        if event.open is not None:
            assert (decoded.open, decoded.high, decoded.low, decoded.close) == (
                float(event.open), float(event.high or 0), float(event.low or 0), float(event.close or 0),
            )
        else:  # no trade in the interval: every price is the previous close, as Binance prints it
            assert decoded.open == decoded.high == decoded.low == decoded.close
    else:
        raise AssertionError(f"unexpected {event!r} on {stream}")


@pytest.mark.parametrize(("time_unit", "unit"), [(None, MS), ("MICROSECOND", US)])
def test_engine_round_trip(engine: MarketEngine, venue: BinanceVenue, time_unit: str | None, unit: int) -> None:
    codec = codec_for(venue, unit)
    query = {"timeUnit": time_unit} if time_unit else {}
    conn = connect(venue, "/stream", streams="/".join(sorted(every_stream())), **query)
    counts: dict[str, int] = {}
    for _, event in engine.take(6000):
        for frame in venue.encode(event, conn.streams):
            (decoded,) = codec.decode(venue.wrap(conn, frame), 5)
            check_round_trip(event, decoded, unit, frame.stream)
            kind = frame.stream.split("@", 1)[1]
            counts[kind] = counts.get(kind, 0) + 1
    assert set(counts) == {k[1:] for k in ALL_KINDS}


def test_shutdown_round_trip(venue: BinanceVenue) -> None:
    codec = codec_for(venue)
    frame = venue.shutdown_frame(1_770_000_000_123_999_999)
    assert codec.decode(venue.wrap(connect(venue, "/stream"), frame), 5) == [ServerShutdown(1_770_000_000_123_000_000)]


# Hypothesis: random records on random grids survive encode -> wrap -> decode exactly.

_decimal = st.builds(
    lambda units, places: f"{units / 10**places:.{places}f}",
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=8),
)
_positive_decimal = _decimal.filter(lambda s: float(s) > 0)
_ns = st.integers(min_value=0, max_value=4_102_444_800_000_000_000)
_ids = st.integers(min_value=0, max_value=2**63 - 1)
_symbols = st.sampled_from(["BTC-USDT", "ETH-USDT", "SOL-USDT"])
_levels = st.lists(st.tuples(_positive_decimal, _decimal), max_size=25)

_trades = st.builds(
    SimTrade, symbol=_symbols, trade_id=_ids, price=_positive_decimal, size=_positive_decimal,
    buyer_is_maker=st.booleans(), time_ns=_ns, engine_ns=_ns, buy_order_id=_ids, sell_order_id=_ids,
)
_depths = st.builds(
    lambda symbol, first, span, bids, asks, t, e: SimDepth(symbol, first, first + span, bids, asks, t, e),
    _symbols, st.integers(min_value=1, max_value=2**62), st.integers(min_value=0, max_value=1000),
    _levels, _levels, _ns, _ns,
)
_book_tickers = st.builds(
    SimBookTicker, symbol=_symbols, update_id=_ids, bid=_positive_decimal, bid_size=_decimal,
    ask=_positive_decimal, ask_size=_decimal, time_ns=_ns, engine_ns=_ns,
)


@settings(max_examples=300, deadline=None)
@given(event=st.one_of(_trades, _depths, _book_tickers), combined=st.booleans(), micro=st.booleans())
def test_codec_round_trip_property(event: SimEvent, combined: bool, micro: bool) -> None:
    engine = MarketEngine(SEED, default_instruments("binance"), ["binance"], book_levels=10)
    venue = BinanceVenue(engine.view("binance"))
    codec = codec_for(venue, US if micro else MS)
    conn = connect(venue, "/stream" if combined else "/ws", **({"timeUnit": "MICROSECOND"} if micro else {}))
    wanted = {venue.native(event.symbol).lower() + k for k in ALL_KINDS}
    frames = venue.encode(event, wanted)
    assert frames
    for frame in frames:
        (decoded,) = codec.decode(venue.wrap(conn, frame), 5)
        check_round_trip(event, decoded, US if micro else MS, frame.stream)


# --- REST ----------------------------------------------------------------------------------------


def get(venue: BinanceVenue, path: str, **query: str) -> tuple[int, Any]:
    reply = venue.handle_http(HttpRequest("GET", path, query, {}))
    assert isinstance(reply, HttpReply)
    assert reply.content_type == "application/json"
    return reply.status, orjson.loads(reply.body)


def test_rest_depth_matches_engine_book(engine: MarketEngine, venue: BinanceVenue) -> None:
    engine.take(2000)
    status, body = get(venue, "/api/v3/depth", symbol="BTCUSDT", limit="5000")
    assert status == 200
    assert list(body) == list(sample("rest_depth.json"))
    assert shape(body) == shape(sample("rest_depth.json"))
    book = engine.book("binance", "BTC-USDT")
    assert body["lastUpdateId"] == book.last_id
    bids = [float(p) for p, _ in body["bids"]]
    asks = [float(p) for p, _ in body["asks"]]
    assert bids == sorted(bids, reverse=True)
    assert asks == sorted(asks)
    assert {float(p): float(q) for p, q in body["bids"]} == book.bids
    assert {float(p): float(q) for p, q in body["asks"]} == book.asks


def test_rest_depth_limits(venue: BinanceVenue) -> None:
    _, body = get(venue, "/api/v3/depth", symbol="ETHUSDT")
    assert len(body["bids"]) == 100
    assert len(body["asks"]) == 100
    _, body = get(venue, "/api/v3/depth", symbol="ETHUSDT", limit="7")
    assert len(body["bids"]) == 7
    assert len(body["asks"]) == 7
    assert get(venue, "/api/v3/depth", symbol="NOPE") == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert get(venue, "/api/v3/depth", symbol="btc-usdt")[1]["code"] == -1121
    status, body = get(venue, "/api/v3/depth")
    assert (status, body["code"]) == (400, -1102)
    status, body = get(venue, "/api/v3/depth", symbol="ETHUSDT", limit="many")
    assert (status, body["code"]) == (400, -1100)


def test_rest_exchange_info(venue: BinanceVenue) -> None:
    status, body = get(venue, "/api/v3/exchangeInfo")
    assert status == 200
    documented = sample("rest_exchangeInfo.json")
    assert set(documented) - {"sors"} <= set(body)
    assert list(body["symbols"][0]) == list(documented["symbols"][0])
    filters = {f["filterType"]: f for f in body["symbols"][0]["filters"]}
    examples = {f["filterType"]: f for f in sample("exchangeInfo_filters_examples.json")}
    for name in ("PRICE_FILTER", "LOT_SIZE"):
        assert list(filters[name]) == list(examples[name])
    instruments, _ = parse_exchange_info(body)
    assert [(i.native, i.symbol, i.tick_size, i.step_size, i.active) for i in instruments] == [
        ("BTCUSDT", "BTC-USDT", 0.01, 0.00001, True),
        ("ETHUSDT", "ETH-USDT", 0.01, 0.0001, True),
        ("SOLUSDT", "SOL-USDT", 0.01, 0.001, True),
    ]
    _, one = get(venue, "/api/v3/exchangeInfo", symbol="ETHUSDT")
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    _, two = get(venue, "/api/v3/exchangeInfo", symbols='["SOLUSDT","BTCUSDT"]')
    assert [s["symbol"] for s in two["symbols"]] == ["SOLUSDT", "BTCUSDT"]
    assert get(venue, "/api/v3/exchangeInfo", symbols='["SOLUSDT","XXX"]') == (400, {"code": -1121, "msg": "Invalid symbol."})


def test_rest_exchange_info_inactive_symbol() -> None:
    instruments = [*default_instruments("binance")[:2], attrs.evolve(default_instruments("binance")[2], active=False)]
    engine = MarketEngine(SEED, instruments, ["binance"], book_levels=10)
    _, body = get(BinanceVenue(engine.view("binance")), "/api/v3/exchangeInfo")
    assert [(s["symbol"], s["status"]) for s in body["symbols"]] == [
        ("BTCUSDT", "TRADING"), ("ETHUSDT", "TRADING"), ("SOLUSDT", "BREAK"),
    ]


def test_rest_klines(engine: MarketEngine, venue: BinanceVenue) -> None:
    engine.take(20_000)
    status, rows = get(venue, "/api/v3/klines", symbol="BTCUSDT", interval="1s", limit="3")
    assert status == 200
    assert len(rows) == 3
    for row in rows:
        assert [type(v).__name__ for v in row] == [type(v).__name__ for v in sample("rest_klines.json")[0]]
        assert row[6] - row[0] == 999
    assert rows[0][0] < rows[1][0] < rows[2][0]
    assert get(venue, "/api/v3/klines", symbol="BTCUSDT", interval="7m") == (400, {"code": -1120, "msg": "Invalid interval."})
    assert get(venue, "/api/v3/klines", symbol="BTCUSDT")[1]["code"] == -1102


def test_rest_time_ping_and_unknown(engine: MarketEngine, venue: BinanceVenue) -> None:
    assert get(venue, "/api/v3/time") == (200, {"serverTime": engine.now_ns() // 1_000_000})
    assert get(venue, "/api/v3/ping") == (200, {})
    assert get(venue, "/api/v3/nothing")[0] == 404
    assert venue.handle_http(HttpRequest("POST", "/api/v3/ping", {}, {})).status == 405


def test_derivatives_are_not_listed_or_encoded() -> None:
    perp = SimInstrument("SOL-USDT-PERP", "SOL", "USDT", "0.01", "0.01", MarketKind.PERP)
    engine = MarketEngine(SEED, [*default_instruments("binance")[:1], perp], ["binance"], book_levels=10)
    venue = BinanceVenue(engine.view("binance"))
    _, body = get(venue, "/api/v3/exchangeInfo")
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT"]
    wanted = every_stream() | {"solusdt" + k for k in ALL_KINDS}
    records = engine.take(3000)
    assert any(isinstance(e, SimMarkPrice) for _, e in records)
    frames = [f for _, e in records for f in venue.encode(e, wanted)]
    assert frames
    assert {f.stream.split("@")[0] for f in frames} == {"btcusdt"}
