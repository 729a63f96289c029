"""Every Backpack payload the connector consumes, decoded to exact values."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import orjson
import pytest
from backpack_testlib import fixture_json, fixture_text, make_table, recorded_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.book import BookSync
from marketfeeder.connector import ControlError, DecodeError, UnhandledMessage
from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookStatus,
    BookTicker,
    Event,
    Gap,
    InstrumentTable,
    Kline,
    MarkPrice,
    Side,
    Ticker,
    Trade,
)
from marketfeeder_backpack.codec import BackpackCodec, iso_to_ns, lenient_int
from marketfeeder_backpack.connector import SEQUENCE_POLICY

RECV = 1_800_000_000_123_456_789


def decode(table: InstrumentTable, payload: Any, stream: str | None = None) -> list[Any]:
    frame = payload if stream is None else {"stream": stream, "data": payload}
    return BackpackCodec(table).decode(orjson.dumps(frame), RECV)


def ticker(**kw: Any) -> Ticker:
    base: dict[str, Any] = dict(
        exchange="backpack", receive_ts=RECV, seq=None, bid=None, bid_size=None, ask=None, ask_size=None
    )
    return Ticker(**{**base, **kw})


# --- documented examples (OpenAPI spec) --------------------------------------------------------------


def test_doc_book_ticker_string_update_id(table: InstrumentTable) -> None:
    expected = BookTicker(
        exchange="backpack",
        symbol="SOL-USDC",
        exchange_ts=1694687965941000000,
        receive_ts=RECV,
        seq=111063070525358080,
        bid=18.67,
        bid_size=2.0,
        ask=18.70,
        ask_size=1.0,
        engine_ts=1694687965940999000,
    )
    payload = fixture_json("bookTicker.json")
    assert decode(table, payload, "bookTicker.SOL_USDC") == [expected]
    assert decode(table, payload) == [expected]  # a bare payload decodes the same


def test_doc_depth_with_zero_sizes(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("depth.json"), "depth.SOL_USDC") == [
        BookDelta(
            exchange="backpack",
            symbol="SOL-USDC",
            exchange_ts=1694687965941000000,
            receive_ts=RECV,
            seq=94978271,
            first_seq=94978271,
            bids=((18.67, 0.832), (18.68, 0.0)),
            asks=((18.70, 0.0),),
            engine_ts=1694687965940999000,
        )
    ]


def test_doc_kline(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("kline.json"), "kline.1m.SOL_USD") == [
        Kline(
            exchange="backpack",
            symbol="SOL-USD",
            exchange_ts=1694687692980000000,
            receive_ts=RECV,
            seq=None,
            interval="1m",
            open_ts=1726056000000000000,  # 2024-09-11T12:00:00Z
            close_ts=1726056059999999999,  # one ns before 2024-09-11T12:01:00Z
            open=18.75,
            high=19.80,
            low=18.50,
            close=19.25,
            volume=32123.0,
            closed=False,
            quote_volume=None,
            trade_count=93828,
        )
    ]


def test_kline_needs_its_stream_name(table: InstrumentTable) -> None:
    with pytest.raises(DecodeError, match="kline"):
        decode(table, fixture_json("kline.json"))


def test_kline_null_prices_when_no_trade(table: InstrumentTable) -> None:
    payload = {**fixture_json("kline.json"), "o": None, "h": None, "l": None, "c": None, "v": "0", "n": 0}
    (event,) = decode(table, payload, "kline.1month.SOL_USD")
    assert (event.interval, event.open, event.high, event.low, event.close) == ("1month", None, None, None, None)
    assert (event.volume, event.trade_count) == (0.0, 0)


def test_doc_ticker(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ticker.json"), "ticker.SOL_USD") == [
        ticker(
            symbol="SOL-USD",
            exchange_ts=1694687692980000000,
            last=19.24,
            open=18.75,
            high=19.80,
            low=18.50,
            volume=32123.0,
            quote_volume=928190.0,
            trade_count=93828,
        )
    ]


def test_doc_trade_buyer_maker_is_a_sell(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("trade.json"), "trade.SOL_USDC") == [
        Trade(
            exchange="backpack",
            symbol="SOL-USDC",
            exchange_ts=1694688638091000000,
            receive_ts=RECV,
            seq=12345,
            price=18.68,
            size=0.122,
            side=Side.SELL,
            trade_ts=1694688638089000000,
        )
    ]


def test_doc_mark_price_next_funding_in_ms(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("markPrice.json"), "markPrice.SOL_USDC") == [
        MarkPrice(
            exchange="backpack",
            symbol="SOL-USDC",
            exchange_ts=1694687965941000000,
            receive_ts=RECV,
            seq=None,
            mark_price=18.70,
            index_price=19.70,
            funding_rate=1.70,
            next_funding_ts=1694687965941000000,
            engine_ts=1694687965940999000,
        )
    ]


def test_error_frame_is_a_control_error(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ws_error_frame_example.json")) == [
        ControlError(request_id=None, code=4003, message="Invalid signature")
    ]


@pytest.mark.parametrize(("name", "stream"), [("liquidation.json", "liquidation"), ("openInterest.json", None)])
def test_streams_without_events_are_unhandled(table: InstrumentTable, name: str, stream: str | None) -> None:
    with pytest.raises(UnhandledMessage):
        decode(table, fixture_json(name), stream)


# --- frames pasted by CCXT (2025): E/T as strings -------------------------------------------------------


def test_ccxt_book_ticker_string_times(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ccxt_comment_ws_bookTicker.json")) == [
        BookTicker(
            exchange="backpack",
            symbol="ETH-USDC",
            exchange_ts=1754517402450016000,
            receive_ts=RECV,
            seq=1328288557,
            bid=3667.49,
            bid_size=0.0020,
            ask=3667.50,
            ask_size=0.4087,
            engine_ts=1754517402449064000,
        )
    ]


def test_ccxt_depth_bare_perp(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ccxt_comment_ws_depth.json")) == [
        BookDelta(
            exchange="backpack",
            symbol="BTC-USDC-PERP",
            exchange_ts=1759338824897386000,
            receive_ts=RECV,
            seq=1662976171,
            first_seq=1662976171,
            bids=((117357.0, 0.0),),
            asks=(),
            engine_ts=1759338824895616000,
        )
    ]


def test_ccxt_depth_wrapped_empty(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ccxt_comment_ws_depth_wrapped.json")) == [
        BookDelta(
            exchange="backpack",
            symbol="ETH-USDC",
            exchange_ts=1754903057555305000,
            receive_ts=RECV,
            seq=1345937436,
            first_seq=1345937436,
            bids=(),
            asks=(),
            engine_ts=1754903057554352000,
        )
    ]


def test_ccxt_kline_2h(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ccxt_comment_ws_kline.json")) == [
        Kline(
            exchange="backpack",
            symbol="ETH-USDC",
            exchange_ts=1754519557526056000,
            receive_ts=RECV,
            seq=None,
            interval="2h",
            open_ts=1754517600000000000,  # 2025-08-06T22:00:00Z
            close_ts=1754524799999999999,  # one ns before 2025-08-07T00:00:00Z
            open=3670.15,
            high=3681.37,
            low=3667.65,
            close=3680.52,
            volume=62.2621,
            closed=False,
            quote_volume=None,
            trade_count=255,
        )
    ]


def test_ccxt_ticker_with_wrong_stream_name_still_a_ticker(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ccxt_comment_ws_ticker.json")) == [
        ticker(
            symbol="ETH-USDC",
            exchange_ts=1754176123312507000,
            last=3398.57,
            open=3475.45,
            high=3536.65,
            low=3371.8,
            volume=5573.5827,
            quote_volume=19419526.742584,
            trade_count=17152,
        )
    ]


def test_ccxt_trade_taker_buy(table: InstrumentTable) -> None:
    assert decode(table, fixture_json("ccxt_comment_ws_trade.json")) == [
        Trade(
            exchange="backpack",
            symbol="ETH-USDC-PERP",
            exchange_ts=1754601477746429000,
            receive_ts=RECV,
            seq=10782547,
            price=3870.25,
            size=0.0008,
            side=Side.BUY,
            trade_ts=1754601477744000000,
        )
    ]


# --- the real 2026 recording --------------------------------------------------------------------------


def _recorded_events(table: InstrumentTable) -> list[Event]:
    codec = BackpackCodec(table)
    events: list[Event] = []
    for line in recorded_lines():
        (event,) = codec.decode(line, RECV)
        assert isinstance(event, Event)
        events.append(event)
    return events


def test_recorded_frames_all_decode(table: InstrumentTable) -> None:
    events = _recorded_events(table)
    kinds = [type(e).__name__ for e in events]
    assert len(events) == 56
    assert kinds.count("BookDelta") == 41
    assert kinds.count("BookTicker") == 13
    assert kinds.count("Ticker") == 1
    assert kinds.count("MarkPrice") == 1
    assert events[0] == BookTicker(
        exchange="backpack",
        symbol="SOL-USDC",
        exchange_ts=1788367430247487000,
        receive_ts=RECV,
        seq=4330360995,
        bid=98.96,
        bid_size=288.77,
        ask=98.97,
        ask_size=22.39,
        engine_ts=1788367430246081000,
    )
    assert events[1] == BookDelta(
        exchange="backpack",
        symbol="SOL-USDC",
        exchange_ts=1788367430247494000,
        receive_ts=RECV,
        seq=4330360995,
        first_seq=4330360995,
        bids=(),
        asks=((98.97, 22.39),),
        engine_ts=1788367430246081000,
    )
    (mark,) = [e for e in events if isinstance(e, MarkPrice)]
    assert mark == MarkPrice(
        exchange="backpack",
        symbol="SOL-USDC-PERP",
        exchange_ts=1788367430422109000,
        receive_ts=RECV,
        seq=None,
        mark_price=98.94,
        index_price=98.94998504,
        funding_rate=0.0000125,
        next_funding_ts=1788368400000000000,
        engine_ts=1788367430421396000,
    )
    (tick,) = [e for e in events if isinstance(e, Ticker)]
    assert tick == ticker(
        symbol="SOL-USDC",
        exchange_ts=1788367430549233000,
        last=98.98,
        open=100.87,
        high=101.19,
        low=97.38,
        volume=15089.56,
        quote_volume=1498114.9234,
        trade_count=6796,
    )
    removal = [e for e in events if isinstance(e, BookDelta) and e.seq == 4330361031]
    assert removal[0].asks == ((99.14, 0.0),)


def test_recorded_depth_is_contiguous_and_matches_book_ticker(table: InstrumentTable) -> None:
    """U == prev u + 1 throughout; each bookTicker's levels equal the diffs up to its own ``u``
    (bookTicker.u and depth U/u are one sequence, even when the bookTicker arrives first)."""
    events = _recorded_events(table)
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert deltas[0].first_seq == 4330360995
    assert deltas[-1].seq == 4330361035
    for prev, cur in itertools.pairwise(deltas):
        assert cur.first_seq == prev.seq + 1
        assert cur.first_seq == cur.seq
    book_tickers = [e for e in events if isinstance(e, BookTicker)]
    checked = 0
    for bt in book_tickers:
        assert bt.seq is not None
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        for d in deltas:
            if d.seq > bt.seq:
                break
            bids.update(d.bids)
            asks.update(d.asks)
        if bt.bid in bids:
            assert bids[bt.bid] == bt.bid_size
            checked += 1
        if bt.ask in asks:
            assert asks[bt.ask] == bt.ask_size
            checked += 1
    assert checked >= 20


def test_recorded_depth_replays_live_through_book_sync(table: InstrumentTable) -> None:
    """The engine's procedure with Backpack's policy: a snapshot one id before the first diff
    (``L = U - 1``, the slack the policy allows) joins the stream and every later diff applies."""
    deltas = [e for e in _recorded_events(table) if isinstance(e, BookDelta)]
    sync = BookSync("backpack", "SOL-USDC", SEQUENCE_POLICY)
    out: list[Event] = []
    for d in deltas[:3]:
        sync.on_delta(d, out)
    assert sync.wants_snapshot()
    sync.snapshot_requested()
    snapshot = BookSnapshot(
        exchange="backpack",
        symbol="SOL-USDC",
        exchange_ts=None,
        receive_ts=RECV,
        seq=4330360994,
        bids=((98.96, 288.77),),
        asks=((99.14, 5.0), (98.97, 1.0)),
    )
    sync.on_snapshot(snapshot, out)
    assert sync.state is BookStatus.LIVE
    for d in deltas[3:]:
        sync.on_delta(d, out)
    assert sync.state is BookStatus.LIVE
    assert not [e for e in out if isinstance(e, Gap)]
    assert sync.update_id == 4330361035
    assert sync.book.best_bid() == (98.96, 258.04)
    assert sync.book.best_ask() == (98.97, 38.42)
    assert 99.14 not in dict(sync.book.asks())  # removed by the "0.00" diff


# --- lenient numbers, errors ----------------------------------------------------------------------------


def test_ids_and_times_as_strings_or_ints_decode_identically(table: InstrumentTable) -> None:
    ints = fixture_json("trade.json")
    strings = {**ints, "E": str(ints["E"]), "T": str(ints["T"]), "t": str(ints["t"])}
    assert decode(table, ints, "trade.SOL_USDC") == decode(table, strings, "trade.SOL_USDC")


def test_lenient_int() -> None:
    assert lenient_int(5) == 5
    assert lenient_int("111063070525358080") == 111063070525358080
    for bad in (True, 1.5, None, [1]):
        with pytest.raises(TypeError):
            lenient_int(bad)
    with pytest.raises(ValueError):
        lenient_int("12a")


def test_iso_to_ns() -> None:
    assert iso_to_ns("2024-09-11T12:00:00") == 1726056000000000000
    assert iso_to_ns("2024-09-11 12:00:00") == 1726056000000000000
    assert iso_to_ns("2024-09-11T14:00:00+02:00") == 1726056000000000000
    assert iso_to_ns("2024-09-11T12:00:00.25") == 1726056000250000000
    assert iso_to_ns(1726056000) == 1726056000000000000  # seconds, as the Rust client declares it
    with pytest.raises(ValueError):
        iso_to_ns("yesterday")
    with pytest.raises(TypeError):
        iso_to_ns(None)


def _bt() -> dict[str, Any]:
    return dict(fixture_json("ccxt_comment_ws_bookTicker.json")["data"])


MALFORMED: list[tuple[str, bytes]] = [
    ("not json", b"{not json"),
    ("a list", b"[1, 2]"),
    ("a number", b"42"),
    ("missing e", orjson.dumps({"stream": "x", "data": {"s": "SOL_USDC"}})),
    ("missing price", orjson.dumps({"stream": "bookTicker.ETH_USDC", "data": {**_bt(), "b": None}})),
    ("bad price", orjson.dumps({"stream": "bookTicker.ETH_USDC", "data": {**_bt(), "a": "abc"}})),
    ("bad id", orjson.dumps({"stream": "bookTicker.ETH_USDC", "data": {**_bt(), "u": "12x"}})),
    ("float time", orjson.dumps({"stream": "bookTicker.ETH_USDC", "data": {**_bt(), "E": 1.5}})),
    ("data not an object", b'{"stream":"depth.SOL_USDC","data":"<payload>"}'),
    (
        "three-field level",
        orjson.dumps(
            {"stream": "depth.ETH_USDC", "data": {**fixture_json("ccxt_comment_ws_depth_wrapped.json")["data"], "a": [["1", "2", "3"]]}}
        ),
    ),
    ("trade m not bool", orjson.dumps({"stream": "trade.SOL_USDC", "data": {**fixture_json("trade.json"), "m": "true"}})),
    ("kline X not bool", orjson.dumps({"stream": "kline.1m.SOL_USD", "data": {**fixture_json("kline.json"), "X": 0}})),
    ("symbol not a string", orjson.dumps({"stream": "trade.SOL_USDC", "data": {**fixture_json("trade.json"), "s": 5}})),
    ("kline bad time", orjson.dumps({"stream": "kline.1m.SOL_USD", "data": {**fixture_json("kline.json"), "t": "soon"}})),
]


@pytest.mark.parametrize(("what", "frame"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_frames_raise_decode_error(what: str, frame: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        BackpackCodec(make_table()).decode(frame, RECV)
    assert not isinstance(info.value, UnhandledMessage)
    assert "backpack" in str(info.value)


def test_unknown_symbol_is_unhandled(table: InstrumentTable) -> None:
    with pytest.raises(UnhandledMessage, match="DOGE_USDC"):
        decode(table, {**fixture_json("trade.json"), "s": "DOGE_USDC"}, "trade.DOGE_USDC")


def test_other_frames_are_unhandled(table: InstrumentTable) -> None:
    with pytest.raises(UnhandledMessage):
        decode(table, {"result": None, "id": 1})


def test_table_replacement_is_honoured(table: InstrumentTable) -> None:
    codec = BackpackCodec(InstrumentTable("backpack"))
    line = recorded_lines()[0]
    with pytest.raises(UnhandledMessage):
        codec.decode(line, RECV)
    codec.set_table(table)
    (event,) = codec.decode(line, RECV)
    assert isinstance(event, BookTicker)
    assert event.symbol == "SOL-USDC"


def test_string_fixture_round_trip_of_text_and_bytes(table: InstrumentTable) -> None:
    line = recorded_lines()[1]
    codec = BackpackCodec(table)
    assert codec.decode(line, RECV) == codec.decode(line.encode(), RECV)
    assert fixture_text("bookTicker.json")  # fixture files are present


def test_missing_engine_time_does_not_cost_a_diff(table: InstrumentTable) -> None:
    depth = {k: v for k, v in fixture_json("depth.json").items() if k != "T"}
    (delta,) = decode(table, depth, "depth.SOL_USDC")
    assert isinstance(delta, BookDelta)
    assert (delta.seq, delta.engine_ts, delta.exchange_ts) == (94978271, None, 1694687965941000000)
    trade = {k: v for k, v in fixture_json("trade.json").items() if k != "T"}
    (event,) = decode(table, trade, "trade.SOL_USDC")
    assert isinstance(event, Trade)
    assert event.trade_ts is None


# --- robustness (property) ------------------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
_json = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=12,
)
_REAL_PAYLOADS = [orjson.loads(line) for line in recorded_lines()[:3]] + [
    fixture_json("ccxt_comment_ws_trade.json"),
    fixture_json("ccxt_comment_ws_kline.json"),
    fixture_json("ccxt_comment_ws_ticker.json"),
]


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(_REAL_PAYLOADS),
    key=st.sampled_from(["E", "T", "U", "u", "a", "b", "e", "s", "p", "q", "t", "m", "n", "o", "X", "v", "V"]),
    value=_json,
    drop=st.booleans(),
)
def test_corrupted_real_frames_decode_or_raise_decode_error(base: dict[str, Any], key: str, value: Any, drop: bool) -> None:
    """Whatever one field of a real frame is replaced by (or if it is missing), decoding yields events
    or raises DecodeError: never another exception."""
    data = dict(base["data"])
    if drop:
        data.pop(key, None)
    else:
        data[key] = value
    frame = json.dumps({"stream": base["stream"], "data": data})  # stdlib: big integers too
    try:
        result = BackpackCodec(make_table()).decode(frame, RECV)
    except DecodeError:
        return
    assert isinstance(result, list)
    assert len(result) == 1


@settings(max_examples=200, deadline=None)
@given(_json)
def test_arbitrary_json_never_escapes_as_another_exception(value: Any) -> None:
    try:
        result = BackpackCodec(make_table()).decode(json.dumps(value), RECV)
    except DecodeError:
        return
    assert isinstance(result, list)


@given(st.integers(0, 4_102_444_800))
def test_iso_round_trip(seconds: int) -> None:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    assert iso_to_ns(text) == seconds * 1_000_000_000
