"""The codec's typed fast tier against its general tier: for every frame, the same events or the
same exception (type and message). The general tier is the reference the other codec tests pin."""

from __future__ import annotations

import json
from typing import Any

from backpack_testlib import fixture_json, make_table, recorded_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder_backpack.codec import BackpackCodec

RECV = 1_800_000_000_123_456_789
#: Real and documented frames of every kind the fast tier reads, with their stream names.
BASES: list[tuple[str, dict[str, Any]]] = [
    ("bookTicker.SOL_USDC", fixture_json("bookTicker.json")),
    ("depth.SOL_USDC", fixture_json("depth.json")),
    ("trade.SOL_USDC", fixture_json("trade.json")),
    ("ticker.SOL_USDC", fixture_json("ticker.json")),
    ("kline.1m.SOL_USD", fixture_json("kline.json")),
    ("markPrice.SOL_USDC", fixture_json("markPrice.json")),
] + [(m["stream"], m["data"]) for m in map(json.loads, recorded_lines()[:3])]
STREAMS = ["kline.1m.SOL_USD", "kline.1month.SOL_USDC", "kline", "depth.SOL_USDC", None, 5]


def outcome(codec: BackpackCodec, frame: str | bytes, general: bool) -> tuple[str, Any]:
    try:
        result = (codec.decode_general if general else codec.decode)(frame, RECV)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", result


def assert_same(frame: str | bytes) -> None:
    codec = BackpackCodec(make_table())
    general = outcome(codec, frame, general=True)  # first: it fills the codec's symbol cache
    fast = outcome(codec, frame, general=False)
    # repr too: NaN compares unequal to itself but prints alike. ("-0" may come out as 0.0 from
    # the fast tier and -0.0 from float(): equal, so == accepts it.)
    assert fast == general or repr(fast) == repr(general), frame


def test_unchanged_frames_take_the_fast_tier_and_agree() -> None:
    codec = BackpackCodec(make_table())
    for stream, data in BASES:
        frame = json.dumps({"data": data, "stream": stream})
        expected = codec.decode_general(frame, RECV)
        assert codec.decode(frame, RECV) == expected
        assert codec.decode(frame.encode(), RECV) == expected


_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["1.5", "-2", "nan", "inf", " 1", "1e400", "0x10", "7", "true", "null", "-0",
                       "2024-09-11T12:00:00", "12345678901234567890123"])
)
_json = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=2), c, max_size=3),
    max_leaves=8,
)
_levels = st.lists(st.lists(st.sampled_from(["1.5", "0", "2", "x", "-1"]) | _scalars, max_size=3), max_size=3)


@settings(max_examples=600, deadline=None)
@given(
    base=st.sampled_from(BASES),
    stream=st.sampled_from(STREAMS) | st.none(),
    key=st.sampled_from(["e", "E", "s", "u", "U", "b", "B", "a", "A", "t", "T", "p", "q", "m", "n", "c", "o",
                         "h", "l", "v", "V", "X", "i", "f"]),
    value=_json | _levels,
    drop=st.booleans(),
    keep_stream=st.booleans(),
    as_bytes=st.booleans(),
)
def test_corrupted_frames_agree(
    base: tuple[str, dict[str, Any]], stream: Any, key: str, value: Any, drop: bool, keep_stream: bool,
    as_bytes: bool,
) -> None:
    data = dict(base[1])
    if drop:
        data.pop(key, None)
    else:
        data[key] = value
    frame = json.dumps({"data": data, "stream": base[0] if keep_stream else stream})
    assert_same(frame.encode() if as_bytes else frame)


@settings(max_examples=200, deadline=None)
@given(_json)
def test_arbitrary_json_agrees(value: Any) -> None:
    assert_same(json.dumps(value))
    assert_same(json.dumps({"data": value, "stream": "depth.SOL_USDC"}))
