"""The codec's typed fast tier against its general tier: for every frame, the same events or the
same exception (type and message). The general tier is the reference the other codec tests pin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.models import Instrument
from marketfeeder_binance.codec import BinanceCodec

FIXTURES = Path(__file__).parent / "fixtures"
RECV = 1_700_000_000_123_456_789
INSTRUMENTS = [
    Instrument("binance", native, f"{base}-{quote}", base, quote, 0.01, 0.001, "TRADING", True)
    for native, base, quote in (
        ("BNBBTC", "BNB", "BTC"), ("BNBUSDT", "BNB", "USDT"), ("ETHUSDT", "ETH", "USDT")
    )
]
#: Data payloads of every kind the fast tier reads, and the stream suffix each is published on.
BASES = {name: orjson.loads((FIXTURES / f"{name}.json").read_bytes()) for name in
         ("trade", "aggTrade", "bookTicker", "depthUpdate", "ticker", "kline")}
SUFFIXES = [
    "trade", "aggTrade", "bookTicker", "depth", "depth@100ms", "ticker", "kline_1m", "kline_1s", "depth5",
]


def outcome(codec: BinanceCodec, frame: str | bytes, general: bool) -> tuple[str, Any]:
    try:
        result = (codec.decode_general if general else codec.decode)(frame, RECV)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", result


def assert_same(frame: str | bytes) -> None:
    for time_unit in (1_000_000, 1_000):
        codec = BinanceCodec(INSTRUMENTS, time_unit_ns=time_unit)
        fast, general = outcome(codec, frame, general=False), outcome(codec, frame, general=True)
        # repr too: NaN compares unequal to itself but prints alike. ("-0" may come out as 0.0 from
        # the fast tier and -0.0 from float(): equal, so == accepts it.)
        assert fast == general or repr(fast) == repr(general), frame


def test_unchanged_samples_take_the_fast_tier_and_agree() -> None:
    codec = BinanceCodec(INSTRUMENTS)
    for name, data in BASES.items():
        suffix = {"depthUpdate": "depth@100ms", "kline": "kline_1m"}.get(name, name)
        frame = json.dumps({"stream": "bnbbtc@" + suffix, "data": data})
        assert codec.decode(frame, RECV) == codec.decode_general(frame, RECV)
        assert codec.decode(frame.encode(), RECV) == codec.decode_general(frame, RECV)
        raw = json.dumps(data, separators=(",", ":"))
        assert codec.decode(raw, RECV) == codec.decode_general(raw, RECV)


def test_a_data_key_decides_even_in_a_raw_looking_frame() -> None:
    # The general tier reads "data" when there is one; the fast tier must not take the outer object.
    inner = dict(BASES["trade"], t=777)
    frame = json.dumps({**BASES["trade"], "data": inner})
    assert_same(frame)
    (event,) = BinanceCodec(INSTRUMENTS).decode(frame, RECV)
    assert event.seq == 777


_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["1.5", "-2", "nan", "inf", " 1", "1e400", "0x10", "7", "true", "-0"])
)
_json = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=2), c, max_size=3),
    max_leaves=8,
)
_levels = st.lists(st.lists(st.sampled_from(["1.5", "0", "2", "x", "-1"]) | _scalars, max_size=3), max_size=3)


@settings(max_examples=600, deadline=None)
@given(
    name=st.sampled_from(sorted(BASES)),
    suffix=st.sampled_from(SUFFIXES),
    key=st.sampled_from(["e", "E", "s", "u", "U", "b", "B", "a", "A", "t", "T", "p", "q", "m", "n", "c", "k",
                         "k.t", "k.T", "k.n", "k.x", "k.i", "k.o", "k.q"]),
    value=_json | _levels,
    drop=st.booleans(),
    as_bytes=st.booleans(),
)
def test_corrupted_frames_agree(
    name: str, suffix: str, key: str, value: Any, drop: bool, as_bytes: bool
) -> None:
    data = json.loads(json.dumps(BASES[name]))
    target = data
    if key.startswith("k."):
        target = data.get("k") if isinstance(data.get("k"), dict) else data
        key = key[2:]
    if drop:
        target.pop(key, None)
    else:
        target[key] = value
    frame = json.dumps({"stream": "bnbbtc@" + suffix, "data": data})
    assert_same(frame.encode() if as_bytes else frame)
    raw = json.dumps(data)  # a raw stream's frame: the data object alone
    assert_same(raw.encode() if as_bytes else raw)


@settings(max_examples=200, deadline=None)
@given(_json, st.sampled_from(SUFFIXES))
def test_arbitrary_json_agrees(value: Any, suffix: str) -> None:
    assert_same(json.dumps(value))
    assert_same(json.dumps({"stream": "x@" + suffix, "data": value}))
    if isinstance(value, dict):
        assert_same(json.dumps({**BASES["depthUpdate"], **value}))
