"""The venue simulator: control replies, wire shapes against the captures, REST, and the round trip
venue encode -> connector decode."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import pytest
from backpack_testlib import fixture_json, recorded_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.models import (
    BookDelta,
    BookTicker,
    DataType,
    Instrument,
    InstrumentTable,
    Kline,
    MarketKind,
    MarkPrice,
    Side,
    Ticker,
    Trade,
)
from marketfeeder.sim.engine import MarketEngine, default_instruments
from marketfeeder.sim.model import (
    SimBookTicker,
    SimDepth,
    SimEvent,
    SimKline,
    SimMarkPrice,
    SimTicker,
    SimTrade,
)
from marketfeeder.sim.venue import SimFrame, WsReject
from marketfeeder.transport.server import HttpRequest
from marketfeeder_backpack.codec import BackpackCodec
from marketfeeder_backpack.venue import BackpackVenue, error_frame

RECV = 7


@attrs.define
class Conn:
    id: int = 1
    path: str = "/"
    query: Mapping[str, str] = attrs.Factory(dict)
    streams: set[str] = attrs.Factory(set)
    state: dict[str, Any] = attrs.Factory(dict)


def make_engine(seed: int = 3) -> MarketEngine:
    return MarketEngine(seed, default_instruments("backpack"), ["backpack"], rate=200.0)


def make_venue(**options: Any) -> BackpackVenue:
    return BackpackVenue(make_engine().view("backpack"), options)


def venue_table(venue: BackpackVenue) -> InstrumentTable:
    table = InstrumentTable("backpack")
    for i in venue.market.instruments():
        table.add(
            Instrument(
                "backpack", i.symbol.replace("-", "_"), i.symbol, i.base, i.quote, float(i.tick_size),
                float(i.step_size), "Open", True, i.kind,
            )
        )
    return table


# --- control messages --------------------------------------------------------------------------------


def test_subscribe_is_silent_and_unsubscribe_removes() -> None:
    venue, conn = make_venue(), Conn()
    streams = [
        "depth.SOL_USDC",
        "depth.200ms.SOL_USDC",
        "depth.1000ms.BTC_USDC",
        "bookTicker.SOL_USDC",
        "trade.ETH_USDC",
        "ticker.SOL_USDC",
        "kline.1m.SOL_USDC",
        "kline.1month.SOL_USDC",
        "markPrice.SOL_USDC_PERP",
        "markPrice.SOL_USDC",
    ]
    assert venue.on_message(conn, orjson.dumps({"method": "SUBSCRIBE", "params": streams}).decode()) == []
    assert conn.streams == set(streams)
    assert venue.on_message(conn, '{"method":"UNSUBSCRIBE","params":["depth.SOL_USDC","nope"]}') == []
    assert conn.streams == set(streams) - {"depth.SOL_USDC"}


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        ("depth.DOGE_USDC", "unknown symbol in 'depth.DOGE_USDC'"),
        ("kline.2m.SOL_USDC", "invalid kline interval in 'kline.2m.SOL_USDC'"),
        ("depth.100ms.SOL_USDC", "unknown symbol in 'depth.100ms.SOL_USDC'"),
        ("solusdc@depth", "unknown stream type in 'solusdc@depth'"),
        ("bookTicker.sol_usdc", "unknown symbol in 'bookTicker.sol_usdc'"),
    ],
)
def test_bad_stream_gets_an_error_frame_and_good_ones_still_subscribe(stream: str, reason: str) -> None:
    venue, conn = make_venue(), Conn()
    replies = venue.on_message(conn, orjson.dumps({"method": "SUBSCRIBE", "params": [stream, "trade.SOL_USDC"]}).decode())
    assert replies == [f'{{"id":null,"error":{{"code":4005,"message":"Invalid stream: {reason}"}}}}']
    assert conn.streams == {"trade.SOL_USDC"}
    (frame,) = replies
    assert set(orjson.loads(frame)) == set(fixture_json("ws_error_frame_example.json"))


def test_bad_requests() -> None:
    venue, conn = make_venue(), Conn()
    assert venue.on_message(conn, "{nope") == [error_frame(4000, "Invalid request: not JSON")]
    assert venue.on_message(conn, "[]") == [error_frame(4000, "Invalid request: expected an object")]
    assert venue.on_message(conn, '{"method":"LIST","params":[]}') == [error_frame(4000, "Invalid method: 'LIST'")]
    assert venue.on_message(conn, '{"method":"SUBSCRIBE","params":"depth.SOL_USDC"}') == [
        error_frame(4000, "Invalid request: params must be a list of streams")
    ]
    assert conn.streams == set()


def test_one_path_only() -> None:
    venue = make_venue()
    venue.on_connect(Conn(path="/"))
    with pytest.raises(WsReject) as info:
        venue.on_connect(Conn(path="/stream"))
    assert info.value.status == 404
    assert (BackpackVenue.rules.ping_interval, BackpackVenue.rules.pong_timeout, BackpackVenue.rules.max_lifetime) == (
        60.0,
        120.0,
        None,
    )


def test_bad_string_numbers_option() -> None:
    with pytest.raises(ValueError, match="string_numbers"):
        make_venue(string_numbers="yes")


# --- wire shapes against the captures ----------------------------------------------------------------


def _shape(payload: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, type(v).__name__) for k, v in payload.items()]


def _captured() -> dict[str, dict[str, Any]]:
    by_type: dict[str, dict[str, Any]] = {}
    for line in recorded_lines():
        msg = orjson.loads(line)
        by_type.setdefault(msg["data"]["e"], msg)
    by_type["trade"] = fixture_json("ccxt_comment_ws_trade.json")
    by_type["kline"] = fixture_json("ccxt_comment_ws_kline.json")
    return by_type


def _all_streams(venue: BackpackVenue) -> set[str]:
    names = set()
    for i in venue.market.instruments():
        n = i.symbol.replace("-", "_")
        names |= {f"depth.{n}", f"depth.200ms.{n}", f"depth.600ms.{n}", f"depth.1000ms.{n}"}
        names |= {f"bookTicker.{n}", f"trade.{n}", f"ticker.{n}", f"kline.1s.{n}", f"kline.1m.{n}", f"markPrice.{n}"}
    return names


def _frames(venue: BackpackVenue, records: int = 3000) -> dict[str, list[dict[str, Any]]]:
    engine_view = venue.market
    engine = engine_view._engine  # type: ignore[attr-defined]
    wanted = _all_streams(venue)
    by_type: dict[str, list[dict[str, Any]]] = {}
    conn = Conn()
    for _, record in engine.take(records):
        for frame in venue.encode(record, wanted):
            msg = orjson.loads(venue.wrap(conn, frame))
            assert list(msg) == ["data", "stream"]
            assert msg["stream"] == frame.stream
            by_type.setdefault(msg["data"]["e"], []).append(msg)
    return by_type


def test_default_frames_have_the_captured_key_order_and_json_types() -> None:
    captured = _captured()
    produced = _frames(make_venue())
    assert set(produced) == {"depth", "bookTicker", "trade", "ticker", "kline", "markPrice"}
    for kind, msgs in produced.items():
        expected = _shape(captured[kind]["data"])
        if kind in ("trade", "kline"):  # these samples carry string E/T (2025); the 2026 capture has ints
            expected = [(k, "int" if k in ("E",) or (k == "T" and kind == "trade") else t) for k, t in expected]
        for msg in msgs:
            shape = _shape(msg["data"])
            if kind == "kline" and msg["data"]["o"] is None:
                assert msg["data"]["h"] is None and msg["data"]["c"] is None and msg["data"]["l"] is None
                continue
            assert shape == expected, (kind, msg)


def test_string_number_frames_match_the_2025_and_documented_types() -> None:
    produced = _frames(make_venue(string_numbers=True))
    for kind, msgs in produced.items():
        for msg in msgs:
            data = msg["data"]
            assert isinstance(data["E"], str)
            if "T" in data:
                assert isinstance(data["T"], str)
            if kind == "bookTicker":
                assert isinstance(data["u"], str)  # as in the documented example
            if kind == "depth":
                assert isinstance(data["U"], int) and isinstance(data["u"], int)
    assert _shape(produced["trade"][0]["data"]) == _shape(fixture_json("ccxt_comment_ws_trade.json")["data"])
    assert _shape(produced["bookTicker"][0]["data"]) == [
        (k, "str") for k in ("A", "B", "E", "T", "a", "b", "e", "s", "u")
    ]


def test_mixed_mode_alternates() -> None:
    produced = _frames(make_venue(string_numbers="mixed"), 500)
    kinds = {type(m["data"]["E"]) for msgs in produced.values() for m in msgs}
    assert kinds == {int, str}


def test_depth_goes_to_every_speed_wanted_and_nothing_unwanted() -> None:
    venue = make_venue()
    depth = SimDepth("SOL-USDC", 5, 6, [("1.00", "2.00")], [], 10_000, 9_000)
    frames = venue.encode(depth, {"depth.SOL_USDC", "depth.600ms.SOL_USDC", "trade.SOL_USDC"})
    assert [f.stream for f in frames] == ["depth.SOL_USDC", "depth.600ms.SOL_USDC"]
    assert all(f.data_type is DataType.ORDERBOOK for f in frames)
    assert frames[0].payload == frames[1].payload
    assert venue.encode(depth, {"depth.BTC_USDC"}) == []
    assert venue.wrap(Conn(), SimFrame("depth.SOL_USDC", '{"x":1}', DataType.ORDERBOOK)) == (
        '{"data":{"x":1},"stream":"depth.SOL_USDC"}'
    )


def test_kline_times_and_null_prices() -> None:
    venue = make_venue()
    k = SimKline(
        "SOL-USDC", "1m", 1726056000 * 10**9, 1726056060 * 10**9 - 1, None, None, None, None, "0.00", "0", 0,
        "0.00", "0", -1, -1, True, 1726056060 * 10**9 + 5_000,
    )
    (frame,) = venue.encode(k, {"kline.1m.SOL_USDC"})
    assert orjson.loads(frame.payload) == {
        "E": 1726056060000005,
        "T": "2024-09-11T12:01:00",
        "X": True,
        "c": None,
        "e": "kline",
        "h": None,
        "l": None,
        "n": 0,
        "o": None,
        "s": "SOL_USDC",
        "t": "2024-09-11T12:00:00",
        "v": "0.00",
    }


# --- REST --------------------------------------------------------------------------------------------


def get(venue: BackpackVenue, path: str, **query: str) -> tuple[int, Any, str]:
    reply = venue.handle_http(HttpRequest("GET", path, query, {}))
    body = orjson.loads(reply.body) if reply.content_type == "application/json" else reply.body.decode()
    return reply.status, body, reply.content_type


def _key_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _key_tree(v) if isinstance(v, dict) else None for k, v in value.items()}
    return None


def test_rest_markets_have_the_real_key_set() -> None:
    venue = make_venue()
    status, markets, _ = get(venue, "/api/v1/markets")
    assert status == 200
    real = fixture_json("bbgo_rest_markets_excerpt_3_entries.json")[0]
    for market in markets:
        assert list(market) == list(real)
        assert set(market["filters"]["price"]) == set(real["filters"]["price"])
        assert set(market["filters"]["quantity"]) == set(real["filters"]["quantity"])
    by_symbol = {m["symbol"]: m for m in markets}
    assert by_symbol["SOL_USDC"]["marketType"] == "SPOT"
    assert by_symbol["SOL_USDC_PERP"]["marketType"] == "PERP"
    assert by_symbol["BTC_USDC"]["filters"]["price"]["tickSize"] == "0.1"
    assert [m["symbol"] for m in get(venue, "/api/v1/markets", marketType="PERP")[1]] == ["SOL_USDC_PERP"]
    assert get(venue, "/api/v1/market", symbol="ETH_USDC")[1]["quoteSymbol"] == "USDC"


def test_rest_depth_both_sides_ascending() -> None:
    venue = make_venue()
    status, body, _ = get(venue, "/api/v1/depth", symbol="SOL_USDC", limit="20")
    assert status == 200
    assert list(body) == ["asks", "bids", "lastUpdateId", "timestamp"]
    assert isinstance(body["lastUpdateId"], str)
    assert isinstance(body["timestamp"], int)
    asks = [float(p) for p, _ in body["asks"]]
    bids = [float(p) for p, _ in body["bids"]]
    assert asks == sorted(asks)
    assert bids == sorted(bids)  # best bid last, as Backpack sends it
    assert len(asks) == len(bids) == 20
    assert bids[-1] < asks[0]
    assert get(venue, "/api/v1/depth", symbol="SOL_USDC", limit="30")[0] == 400
    assert get(venue, "/api/v1/depth", symbol="SOL_USDC")[0] == 200  # default limit 1000
    status, body, _ = get(venue, "/api/v1/depth", symbol="DOGE_USDC")
    assert (status, body) == (400, {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid symbol: DOGE_USDC"})


def test_rest_klines() -> None:
    venue = make_venue()
    engine = venue.market._engine  # type: ignore[attr-defined]
    engine.take(40_000)  # a few simulated minutes
    assert get(venue, "/api/v1/klines", symbol="SOL_USDC", interval="1m")[0] == 400  # startTime required
    start_s = engine.now_ns() // 10**9 - 3600
    status, rows, _ = get(venue, "/api/v1/klines", symbol="SOL_USDC", interval="1m", startTime=str(start_s))
    assert status == 200
    assert rows
    real = fixture_json("bbgo_rest_klines_SOL_USDC_1m_excerpt_first3.json")[0]
    assert list(real) == list(fixture_json("ccxt_comment_rest_klines.json")[0])
    for row in rows:
        assert list(row) == list(real)
        assert len(row["start"]) == 19
        assert row["start"][10] == " "
        assert isinstance(row["trades"], str)
    assert get(venue, "/api/v1/klines", symbol="SOL_USDC", interval="1month", startTime="0")[0] == 400


def test_rest_misc_endpoints() -> None:
    venue = make_venue()
    status, text, ctype = get(venue, "/api/v1/time")
    assert (status, ctype) == (200, "text/plain")
    assert int(text) == venue.market.now_ns() // 1_000_000
    assert get(venue, "/api/v1/ping")[1:] == ("pong", "text/plain")
    assert get(venue, "/api/v1/status")[1] == {"message": None, "status": "Ok"}
    assert get(venue, "/api/v1/nothing")[0] == 404
    assert venue.handle_http(HttpRequest("POST", "/api/v1/depth", {}, {})).status == 405
    status, tick, _ = get(venue, "/api/v1/ticker", symbol="SOL_USDC")
    assert status == 200
    assert tick["symbol"] == "SOL_USDC"
    assert len(get(venue, "/api/v1/tickers")[1]) == 4


# --- round trip (property) ---------------------------------------------------------------------------

SYMBOLS = ["SOL-USDC", "BTC-USDC", "SOL-USDC-PERP"]
_us = st.integers(1_600_000_000_000_000, 2_000_000_000_000_000)
_ns = st.integers(1_600_000_000 * 10**9, 2_000_000_000 * 10**9)
_ids = st.integers(0, 2**63 - 1)


@st.composite
def _price(draw: st.DrawFn, places: int = 2) -> str:
    n = draw(st.integers(0, 10**9))
    whole, frac = divmod(n, 10**places)
    return f"{whole}.{frac:0{places}d}"


_levels = st.lists(st.tuples(_price(), _price(4)), max_size=5)


@st.composite
def sim_records(draw: st.DrawFn) -> SimEvent:
    symbol = draw(st.sampled_from(SYMBOLS))
    kind = draw(st.sampled_from(["depth", "trade", "bookTicker", "ticker", "kline", "markPrice"]))
    if kind == "depth":
        first = draw(_ids)
        return SimDepth(symbol, first, first + draw(st.integers(0, 50)), draw(_levels), draw(_levels), draw(_ns), draw(_ns))
    if kind == "trade":
        return SimTrade(
            symbol, draw(_ids), draw(_price()), draw(_price(5)), draw(st.booleans()), draw(_ns), draw(_ns),
            draw(_ids), draw(_ids),
        )
    if kind == "bookTicker":
        return SimBookTicker(symbol, draw(_ids), draw(_price()), draw(_price()), draw(_price()), draw(_price()), draw(_ns), draw(_ns))
    if kind == "ticker":
        p = [draw(_price()) for _ in range(6)]
        return SimTicker(
            symbol, draw(_ns), 0, 0, p[0], p[1], p[2], p[3], "1", p[4], p[5], draw(st.integers(0, 10**7)), 1, 2,
            "1", "1", "2", "1", "0", "0", "1", "1",
        )
    if kind == "kline":
        interval, length = draw(st.sampled_from([("1s", 1), ("1m", 60), ("1h", 3600), ("1d", 86400)]))
        open_s = draw(st.integers(1_600_000_000 // length, 2_000_000_000 // length)) * length
        traded = draw(st.booleans())
        ohlc: list[str | None] = [draw(_price()) if traded else None for _ in range(4)]
        return SimKline(
            symbol, interval, open_s * 10**9, (open_s + length) * 10**9 - 1, ohlc[0], ohlc[1], ohlc[2], ohlc[3],
            draw(_price()), "0", draw(st.integers(0, 10**6)), "0", "0", -1, -1, draw(st.booleans()), draw(_ns),
        )
    return SimMarkPrice("SOL-USDC-PERP", draw(_price()), draw(_price()), draw(_price(6)), draw(_ns), draw(_ns), draw(_ns))


def _us_ns(ns: int) -> int:
    return ns // 1000 * 1000


def _f(value: str | None) -> float | None:
    return None if value is None else float(value)


def expected_event(r: SimEvent) -> Any:
    sym = r.symbol
    if isinstance(r, SimDepth):
        bids = tuple((float(p), float(q)) for p, q in r.bids)
        asks = tuple((float(p), float(q)) for p, q in r.asks)
        return BookDelta("backpack", sym, _us_ns(r.time_ns), RECV, r.last_id, r.first_id, bids, asks, _us_ns(r.engine_ns))
    if isinstance(r, SimTrade):
        side = Side.SELL if r.buyer_is_maker else Side.BUY
        return Trade("backpack", sym, _us_ns(r.time_ns), RECV, r.trade_id, float(r.price), float(r.size), side, _us_ns(r.engine_ns))
    if isinstance(r, SimBookTicker):
        return BookTicker(
            "backpack", sym, _us_ns(r.time_ns), RECV, r.update_id, float(r.bid), float(r.bid_size), float(r.ask),
            float(r.ask_size), _us_ns(r.engine_ns),
        )
    if isinstance(r, SimTicker):
        return Ticker(
            "backpack", sym, _us_ns(r.time_ns), RECV, None, float(r.last), None, None, None, None, float(r.open),
            float(r.high), float(r.low), float(r.volume), float(r.quote_volume), r.trade_count,
        )
    if isinstance(r, SimKline):
        return Kline(
            "backpack", sym, _us_ns(r.time_ns), RECV, None, r.interval, r.open_ns, r.close_ns, _f(r.open), _f(r.high),
            _f(r.low), _f(r.close), float(r.volume), r.closed, None, r.trade_count,
        )
    return MarkPrice(
        "backpack", sym, _us_ns(r.time_ns), RECV, None, float(r.mark), float(r.index), float(r.funding_rate),
        r.next_funding_ns // 10**6 * 10**6, _us_ns(r.engine_ns),
    )


def _perp_table() -> InstrumentTable:
    table = InstrumentTable("backpack")
    for s in SYMBOLS:
        parts = s.split("-")
        kind = MarketKind.PERP if parts[-1] == "PERP" else MarketKind.SPOT
        table.add(Instrument("backpack", s.replace("-", "_"), s, parts[0], parts[1], 0.01, 0.01, "Open", True, kind))
    return table


@pytest.mark.parametrize("mode", [False, True, "mixed"])
@settings(max_examples=200, deadline=None)
@given(records=st.lists(sim_records(), min_size=1, max_size=4))
def test_round_trip_encode_decode(mode: bool | str, records: list[SimEvent]) -> None:
    venue = _SHARED_VENUES[str(mode)]
    codec = BackpackCodec(_perp_table())
    conn = Conn()
    for record in records:
        wanted = {
            "depth.SOL_USDC", "depth.BTC_USDC", "depth.SOL_USDC_PERP", "depth.200ms.SOL_USDC",
            *(f"{k}.{n}" for k in ("trade", "bookTicker", "ticker", "markPrice") for n in ("SOL_USDC", "BTC_USDC", "SOL_USDC_PERP")),
            *(f"kline.{i}.{n}" for i in ("1s", "1m", "1h", "1d") for n in ("SOL_USDC", "BTC_USDC", "SOL_USDC_PERP")),
        }
        frames = venue.encode(record, wanted)
        assert frames
        for frame in frames:
            assert codec.decode(venue.wrap(conn, frame), RECV) == [expected_event(record)]


_SHARED_VENUES = {str(m): make_venue(string_numbers=m) for m in (False, True, "mixed")}


def test_recorded_frames_and_venue_frames_decode_with_the_same_table() -> None:
    venue = make_venue()
    codec = BackpackCodec(venue_table(venue))
    for msgs in _frames(venue, 500).values():
        for msg in msgs:
            assert codec.decode(orjson.dumps(msg), RECV)
