"""The Binance wire codec against the documented samples and real recordings, value by value."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from marketfeeder.connector import (
    ControlError,
    DecodeError,
    ServerShutdown,
    SubscribeAck,
    UnhandledMessage,
)
from marketfeeder.models import BookDelta, BookTicker, Instrument, Kline, Side, Ticker, Trade
from marketfeeder_binance.codec import MS, US, BinanceCodec, parse_depth_snapshot, parse_exchange_info

RECV = 1_700_000_000_123_456_789
FIXTURES = Path(__file__).parent / "fixtures"


def _inst(native: str, base: str, quote: str) -> Instrument:
    return Instrument("binance", native, f"{base}-{quote}", base, quote, 0.01, 0.001, "TRADING", True)


INSTRUMENTS = [_inst("BNBBTC", "BNB", "BTC"), _inst("BNBUSDT", "BNB", "USDT"), _inst("ETHUSDT", "ETH", "USDT")]


@pytest.fixture
def codec() -> BinanceCodec:
    return BinanceCodec(INSTRUMENTS)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def combined(stream: str, name: str) -> bytes:
    return b'{"stream":"' + stream.encode() + b'","data":' + fixture(name) + b"}"


# --- documented stream samples -----------------------------------------------------------------


def test_trade_sample(codec: BinanceCodec) -> None:
    expected = Trade(
        exchange="binance", symbol="BNB-BTC", exchange_ts=1672515782136000000, receive_ts=RECV, seq=12345,
        price=0.001, size=100.0, side=Side.SELL, trade_ts=1672515782136000000,
    )
    assert codec.decode(fixture("trade.json"), RECV) == [expected]
    assert codec.decode(combined("bnbbtc@trade", "trade.json"), RECV) == [expected]


def test_agg_trade_sample(codec: BinanceCodec) -> None:
    # "m": true: the buyer is the maker, so the taker sold.
    expected = Trade(
        exchange="binance", symbol="BNB-BTC", exchange_ts=1672515782136000000, receive_ts=RECV, seq=12345,
        price=0.001, size=100.0, side=Side.SELL, trade_ts=1672515782136000000,
    )
    assert codec.decode(fixture("aggTrade.json"), RECV) == [expected]
    assert codec.decode(combined("bnbbtc@aggTrade", "aggTrade.json"), RECV) == [expected]


def test_book_ticker_sample_has_no_event_time(codec: BinanceCodec) -> None:
    expected = BookTicker(
        exchange="binance", symbol="BNB-USDT", exchange_ts=None, receive_ts=RECV, seq=400900217,
        bid=25.3519, bid_size=31.21, ask=25.3652, ask_size=40.66, engine_ts=None,
    )
    assert codec.decode(fixture("bookTicker.json"), RECV) == [expected]
    assert codec.decode(combined("bnbusdt@bookTicker", "bookTicker.json"), RECV) == [expected]


def test_depth_update_sample(codec: BinanceCodec) -> None:
    expected = BookDelta(
        exchange="binance", symbol="BNB-BTC", exchange_ts=1672515782136000000, receive_ts=RECV, seq=160,
        first_seq=157, bids=((0.0024, 10.0),), asks=((0.0026, 100.0),), engine_ts=None,
    )
    assert codec.decode(fixture("depthUpdate.json"), RECV) == [expected]
    assert codec.decode(combined("bnbbtc@depth@100ms", "depthUpdate.json"), RECV) == [expected]


def test_ticker_sample(codec: BinanceCodec) -> None:
    expected = Ticker(
        exchange="binance", symbol="BNB-BTC", exchange_ts=1672515782136000000, receive_ts=RECV, seq=None,
        last=0.0025, bid=0.0024, bid_size=10.0, ask=0.0026, ask_size=100.0, open=0.0010, high=0.0025,
        low=0.0010, volume=10000.0, quote_volume=18.0, trade_count=18151, price_change=0.0015,
        price_change_pct=250.0, vwap=0.0018,
    )
    assert codec.decode(fixture("ticker.json"), RECV) == [expected]
    assert codec.decode(combined("bnbbtc@ticker", "ticker.json"), RECV) == [expected]


def test_kline_sample(codec: BinanceCodec) -> None:
    expected = Kline(
        exchange="binance", symbol="BNB-BTC", exchange_ts=1672515782136000000, receive_ts=RECV, seq=None,
        interval="1m", open_ts=1672515780000000000, close_ts=1672515839999000000, open=0.0010, high=0.0025,
        low=0.0015, close=0.0020, volume=1000.0, closed=False, quote_volume=1.0, trade_count=100,
    )
    assert codec.decode(fixture("kline.json"), RECV) == [expected]
    assert codec.decode(combined("bnbbtc@kline_1m", "kline.json"), RECV) == [expected]


def test_closed_kline(codec: BinanceCodec) -> None:
    body = orjson.loads(fixture("kline.json"))
    body["k"]["x"] = True
    (event,) = codec.decode(orjson.dumps(body), RECV)
    assert isinstance(event, Kline)
    assert event.closed is True


def test_server_shutdown_raw_and_combined(codec: BinanceCodec) -> None:
    expected = ServerShutdown(exchange_ts=1770123456789000000)
    assert codec.decode(fixture("serverShutdown.json"), RECV) == [expected]
    assert codec.decode(fixture("serverShutdown_combined.json"), RECV) == [expected]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("subscribe_response.json", SubscribeAck(1, None)),
        ("unsubscribe_response.json", SubscribeAck(312, None)),
        ("list_subscriptions_response.json", SubscribeAck(3, ["btcusdt@aggTrade"])),
        ("set_property_response.json", SubscribeAck(5, None)),
        ("get_property_response.json", SubscribeAck(2, True)),
    ],
)
def test_control_replies(codec: BinanceCodec, name: str, expected: SubscribeAck) -> None:
    assert codec.decode(fixture(name), RECV) == [expected]


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b'{"code": 0, "msg": "Unknown property","id": 7}', ControlError(7, 0, "Unknown property")),
        (b'{"code": 1, "msg": "Invalid value type: expected Boolean"}', ControlError(None, 1, "Invalid value type: expected Boolean")),
        (b'{"code":2,"msg":"Invalid request: unknown method","id":"abc9"}', ControlError("abc9", 2, "Invalid request: unknown method")),
        (b'{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}', ControlError(None, 3, "Invalid JSON: expected value at line 1 column 1")),
        (b'{"error":{"code":2,"msg":"Invalid request"},"id":4}', ControlError(4, 2, "Invalid request")),
    ],
)
def test_error_replies(codec: BinanceCodec, frame: bytes, expected: ControlError) -> None:
    assert codec.decode(frame, RECV) == [expected]


# --- real recordings -----------------------------------------------------------------------------


def test_recorded_trade_2021_with_removed_order_ids(codec: BinanceCodec) -> None:
    # A Dec-2021 frame: it still carries the buyer/seller order ids `b`/`a` (removed 2024-06-18).
    expected = Trade(
        exchange="binance", symbol="ETH-USDT", exchange_ts=1639351062244000000, receive_ts=RECV, seq=705291099,
        price=4149.74, size=0.4387, side=Side.SELL, trade_ts=1639351062243000000,
    )
    assert codec.decode(fixture("nautilus_ws_spot_trade.json"), RECV) == [expected]


def test_recorded_agg_trade_buyer_taker(codec: BinanceCodec) -> None:
    expected = Trade(
        exchange="binance", symbol="ETH-USDT", exchange_ts=1675759520848000000, receive_ts=RECV, seq=226532,
        price=1632.46, size=0.34305, side=Side.BUY, trade_ts=1675759520847000000,
    )
    assert codec.decode(fixture("nautilus_ws_spot_agg_trade.json"), RECV) == [expected]


# --- frames the connector does not consume -----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["miniTicker.json", "avgPrice.json", "blockTrade.json", "rollingWindowTicker_1h.json", "referencePrice.json", "partialDepth.json"],
)
def test_unconsumed_streams_are_unhandled(codec: BinanceCodec, name: str) -> None:
    with pytest.raises(UnhandledMessage):
        codec.decode(fixture(name), RECV)


def test_partial_depth_in_combined_wrapper_is_unhandled(codec: BinanceCodec) -> None:
    with pytest.raises(UnhandledMessage, match="partial depth"):
        codec.decode(combined("bnbbtc@depth20@100ms", "partialDepth.json"), RECV)


def test_unknown_symbol_is_unhandled_not_malformed() -> None:
    codec = BinanceCodec([_inst("ETHUSDT", "ETH", "USDT")])
    for name in ("trade.json", "aggTrade.json", "bookTicker.json", "depthUpdate.json", "ticker.json", "kline.json"):
        with pytest.raises(UnhandledMessage, match="unknown symbol"):
            codec.decode(fixture(name), RECV)


# --- time unit ---------------------------------------------------------------------------------


def test_microsecond_connections() -> None:
    codec = BinanceCodec(INSTRUMENTS, time_unit_ns=US)
    frame = (
        b'{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136123,"s":"BNBBTC","t":12345,'
        b'"p":"0.001","q":"100","T":1672515782136100,"m":false,"M":true}}'
    )
    assert codec.decode(frame, RECV) == [
        Trade("binance", "BNB-BTC", 1672515782136123000, RECV, 12345, 0.001, 100.0, Side.BUY, 1672515782136100000)
    ]
    body = orjson.loads(fixture("kline.json"))
    body["E"], body["k"]["t"], body["k"]["T"] = 1672515782136001, 1672515780000000, 1672515839999999
    (kline,) = codec.decode(orjson.dumps(body), RECV)
    assert isinstance(kline, Kline)
    assert (kline.exchange_ts, kline.open_ts, kline.close_ts) == (
        1672515782136001000, 1672515780000000000, 1672515839999999000,
    )


def test_time_unit_is_checked() -> None:
    with pytest.raises(ValueError, match="time_unit_ns"):
        BinanceCodec(time_unit_ns=1)
    assert BinanceCodec().time_unit_ns == MS


# --- malformed frames ------------------------------------------------------------------------------


TRADE = orjson.loads(fixture("trade.json"))


def _trade_with(**changes: object) -> bytes:
    body = dict(TRADE)
    for key, value in changes.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "invalid JSON"),
        (b'{"e":"trade",', "invalid JSON"),
        (b"[1,2,3]", "JSON list"),
        (b'"hello"', "JSON str"),
        (b'{"stream":"bnbbtc@trade","data":[1]}', "not an object"),
        (_trade_with(p=...), "missing field 'p'"),
        (_trade_with(t=...), "missing field 't'"),
        (_trade_with(p="abc"), "bad field value"),
        (_trade_with(p=None), "bad field value"),
        (_trade_with(E="1672515782136"), "must be integers"),
        (_trade_with(t=1.5), "must be integers"),
        (_trade_with(m="true"), "'m' must be a boolean"),
        (_trade_with(s=None), "'s' must be a string"),
        (_trade_with(e=5), "'e' must be a string"),
        (b'{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":2,"b":[["1","2","3"]],"a":[]}', "bad field value"),
        (b'{"e":"depthUpdate","E":1,"s":"BNBBTC","U":"1","u":2,"b":[],"a":[]}', "must be integers"),
        (b'{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":2,"b":5,"a":[]}', "bad field value"),
        (b'{"u":"400900217","s":"BNBUSDT","b":"1","B":"1","a":"2","A":"1"}', "'u' must be an integer"),
        (b'{"u":400900217,"s":"BNBUSDT","b":"1","B":"1","a":"2"}', "missing field 'A'"),
        (b'{"e":"kline","E":1,"s":"BNBBTC","k":{"t":1,"T":2,"i":"1m","o":"1","c":"1","h":"1","l":"1","v":"1","n":1,"x":"no","q":"1"}}', "'x' must be a boolean"),
        (b'{"e":"kline","E":1,"s":"BNBBTC","k":null}', "bad field value"),
        (b'{"e":"24hrTicker","E":1,"s":"BNBBTC"}', "missing field"),
        (b'{"e":"serverShutdown","E":"soon"}', "must be an integer"),
        (b'{"result":null,"id":1.5}', "id must be"),
        (b'{"code":"x","msg":"m","id":1}' + b"x", "invalid JSON"),
    ],
)
def test_malformed_frames_raise_decode_error(codec: BinanceCodec, frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        codec.decode(frame, RECV)
    assert not isinstance(info.value, UnhandledMessage)


def test_decode_accepts_text_and_bytes(codec: BinanceCodec) -> None:
    text = fixture("trade.json").decode()
    assert codec.decode(text, RECV) == codec.decode(text.encode(), RECV)


# --- REST bodies -------------------------------------------------------------------------------------


def test_exchange_info_documented_sample() -> None:
    instruments, skipped = parse_exchange_info(orjson.loads(fixture("rest_exchangeInfo.json")))
    assert skipped == []
    # The docs leave `filters` empty: tick and step are 0 (Binance's "rule disabled").
    assert instruments == [
        Instrument("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", 0.0, 0.0, "TRADING", True)
    ]


def test_exchange_info_filters_examples() -> None:
    entry = orjson.loads(fixture("exchangeInfo_symbol.json"))
    entry["filters"] = orjson.loads(fixture("exchangeInfo_filters_examples.json"))
    entry["status"] = "HALT"
    instruments, _ = parse_exchange_info({"symbols": [entry]})
    assert instruments == [
        Instrument("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", 0.000001, 0.001, "HALT", False)
    ]


def test_exchange_info_recorded_2021() -> None:
    instruments, skipped = parse_exchange_info(
        orjson.loads(fixture("cryptofeed_exchangeInfo_2021-10-12_excerpt.json"))
    )
    assert skipped == []
    assert instruments == [
        Instrument("binance", "LRCBTC", "LRC-BTC", "LRC", "BTC", 0.00000001, 1.0, "TRADING", True),
        Instrument("binance", "BLZETH", "BLZ-ETH", "BLZ", "ETH", 0.00000001, 1.0, "TRADING", True),
        Instrument("binance", "NKNUSDT", "NKN-USDT", "NKN", "USDT", 0.0001, 1.0, "TRADING", True),
        Instrument("binance", "RUNEEUR", "RUNE-EUR", "RUNE", "EUR", 0.001, 0.1, "TRADING", True),
    ]


def test_exchange_info_skips_bad_entries_and_names_them() -> None:
    good = orjson.loads(fixture("exchangeInfo_symbol.json"))
    bad_filter = dict(good, symbol="BADBTC", filters=[{"filterType": "PRICE_FILTER", "tickSize": "x"}])
    instruments, skipped = parse_exchange_info({"symbols": [good, {"symbol": "NOBASE"}, bad_filter, 7]})
    assert [i.native for i in instruments] == ["ETHBTC"]
    assert len(skipped) == 3
    assert skipped[0].startswith("NOBASE: KeyError")
    assert skipped[1].startswith("BADBTC: ValueError")
    with pytest.raises(DecodeError, match="no 'symbols' list"):
        parse_exchange_info({"code": -1121})


def test_depth_snapshot_sample() -> None:
    snap = parse_depth_snapshot(orjson.loads(fixture("rest_depth.json")), "BNB-BTC", RECV)
    assert (snap.exchange, snap.symbol, snap.exchange_ts, snap.receive_ts, snap.seq) == (
        "binance", "BNB-BTC", None, RECV, 1027024,
    )
    assert snap.bids == ((4.0, 431.0),)
    assert snap.asks == ((4.000002, 12.0),)


def test_depth_snapshot_is_sorted_best_first() -> None:
    body = {
        "lastUpdateId": 9,
        "bids": [["1.0", "1"], ["3.0", "1"], ["2.0", "1"]],
        "asks": [["6.0", "1"], ["4.0", "1"], ["5.0", "1"]],
    }
    snap = parse_depth_snapshot(body, "X-Y", RECV)
    assert [p for p, _ in snap.bids] == [3.0, 2.0, 1.0]
    assert [p for p, _ in snap.asks] == [4.0, 5.0, 6.0]


@pytest.mark.parametrize(
    "body",
    [
        {"bids": [], "asks": []},
        {"lastUpdateId": "9", "bids": [], "asks": []},
        {"lastUpdateId": 9, "bids": [["x", "1"]], "asks": []},
        {"lastUpdateId": 9, "bids": {}, "asks": []},
        [],
    ],
)
def test_depth_snapshot_malformed(body: object) -> None:
    with pytest.raises(DecodeError):
        parse_depth_snapshot(body, "X-Y", RECV)
