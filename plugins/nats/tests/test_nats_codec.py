"""The bus codec: every event class round-trips exactly; bad payloads are clear errors."""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketfeeder.models import EVENT_TYPES, Event, Side, Trade
from marketfeeder.testing.contract import sample_events
from marketfeeder_nats.codec import VERSION, CodecError, decode_event, encode_event

_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
_INT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)


def _strategy(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_strategy(a) for a in typing.get_args(tp)])
    if tp is type(None):
        return st.none()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _INT
    if tp is float:
        return _FLOAT
    if tp is str:
        return _TEXT
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_strategy(args[0]), max_size=5).map(tuple)
        return st.tuples(*[_strategy(a) for a in args])
    raise AssertionError(f"no strategy for {tp!r}")


def _event_strategy(cls: type[Event]) -> st.SearchStrategy[Event]:
    hints = typing.get_type_hints(cls._Fields)
    fields = [f.name for f in attrs.fields(cls._Fields)]
    return st.tuples(*[_strategy(hints[name]) for name in fields]).map(lambda values: cls(*values))


_ANY_EVENT = st.one_of(*[_event_strategy(cls) for cls in EVENT_TYPES.values()])


@settings(max_examples=600)
@given(_ANY_EVENT)
def test_every_event_round_trips(event: Event) -> None:
    data = encode_event(event)
    back = decode_event(data)
    assert type(back) is type(event)
    assert back == event
    assert encode_event(back) == data  # stable: decoding loses nothing the encoder wrote


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_sample_events_round_trip_with_enum_types(event: Event) -> None:
    back = decode_event(encode_event(event))
    assert back == event
    for field in attrs.fields(type(event)):
        assert type(getattr(back, field.name)) is type(getattr(event, field.name))


def test_wire_form_is_versioned_array() -> None:
    trade = Trade("binance", "BTC-USDT", 1, 2, 3, 100.5, 0.25, Side.SELL, None)
    assert orjson.loads(encode_event(trade)) == [VERSION, "Trade", "binance", "BTC-USDT", 1, 2, 3, 100.5, 0.25, "sell", None]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"a": 1}', "JSON array"),
        (b'[99, "Trade"]', "unsupported event encoding version 99"),
        (b'[1, "Nope"]', "unknown event class 'Nope'"),
        (b'[1, "Trade", "x"]', "Trade has 9 fields, payload carries 1"),
        (b'[1, "Trade", "b", "S", 1, 2, 3, 1.0, 1.0, "sideways", null]', "bad field value"),
        (b'[1, 5]', "class must be a string"),
    ],
)
def test_malformed_payloads_are_named(payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_event(payload)


def test_non_finite_floats_are_refused() -> None:
    trade = Trade("binance", "BTC-USDT", None, 2, 3, float("nan"), 0.25, Side.SELL, None)
    with pytest.raises(CodecError, match="non-finite"):
        encode_event(trade)
