"""Event models: fast construction yields genuine frozen events; instruments look up both ways."""

from __future__ import annotations

import pickle

import attrs
import pytest

from marketfeeder.models import (
    EVENT_TYPES,
    BookDelta,
    BookTicker,
    DataType,
    Instrument,
    InstrumentTable,
    MarketKind,
    Side,
    Trade,
    UnknownSymbolError,
)

COMMON = ("binance", "BTC-USDT", 1_700_000_000_000_000_000, 1_700_000_000_001_000_000, 42)


def test_fast_constructor_builds_the_same_frozen_event() -> None:
    fast = Trade.fast(*COMMON, 30000.5, 0.25, Side.BUY, 1_699_999_999_999_000_000)
    slow = Trade(*COMMON, price=30000.5, size=0.25, side=Side.BUY, trade_ts=1_699_999_999_999_000_000)
    assert type(fast) is Trade
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert pickle.loads(pickle.dumps(fast)) == fast
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.price = 1.0  # type: ignore[misc]
    assert attrs.evolve(fast, price=1.0).price == 1.0


def test_every_event_class_has_fast_constructor_and_data_type() -> None:
    for name, cls in EVENT_TYPES.items():
        assert cls.__name__ == name
        assert isinstance(cls.data_type, DataType)
        fields = [f.name for f in attrs.fields(cls)]
        assert fields[:5] == ["exchange", "symbol", "exchange_ts", "receive_ts", "seq"]
        assert callable(cls.fast)


def test_equal_decimal_strings_map_to_equal_prices() -> None:
    a = BookTicker.fast("backpack", "SOL-USDC", None, 1, 7, float("1.10"), float("2.0"), float("1.2"), float("3"))
    b = BookTicker.fast("backpack", "SOL-USDC", None, 1, 7, float("1.1"), float("2.00"), float("1.20"), float("3.000"))
    assert a == b


def test_book_delta_requires_sequence_ids() -> None:
    delta = BookDelta.fast("binance", "BTC-USDT", None, 1, 160, 157, ((1.0, 2.0),), ())
    assert (delta.first_seq, delta.seq) == (157, 160)
    assert delta.data_type is DataType.ORDERBOOK


def make_table() -> InstrumentTable:
    return InstrumentTable(
        "backpack",
        [
            Instrument("backpack", "SOL_USDC", "SOL-USDC", "SOL", "USDC", 0.01, 0.01, "Open", True),
            Instrument("backpack", "SOL_USDC_PERP", "SOL-USDC-PERP", "SOL", "USDC", 0.01, 0.01, "Open", True, MarketKind.PERP),
            Instrument("backpack", "HNT_USDC", "HNT-USDC", "HNT", "USDC", 0.001, 0.1, "Closed", False),
        ],
    )


def test_instrument_table_both_ways_and_perps_apart() -> None:
    table = make_table()
    assert table.to_native("SOL-USDC") == "SOL_USDC"
    assert table.to_symbol("SOL_USDC_PERP") == "SOL-USDC-PERP"
    assert table.by_symbol("SOL-USDC").kind is MarketKind.SPOT
    assert Instrument.normalized("sol", "usdc", MarketKind.PERP) == "SOL-USDC-PERP"
    assert len(table) == 3
    assert "SOL-USDC" in table


def test_unknown_and_non_trading_symbols_are_clear_errors() -> None:
    table = make_table()
    with pytest.raises(UnknownSymbolError, match="unknown symbol 'BTC-USDC'"):
        table.by_symbol("BTC-USDC")
    with pytest.raises(UnknownSymbolError, match=r"HNT-USDC \(HNT_USDC\) is not trading \(status Closed\)"):
        table.require_tradable("HNT-USDC")
    assert table.get_native("NOPE") is None


def test_data_type_parse() -> None:
    assert DataType.parse("ORDERBOOK") is DataType.ORDERBOOK
    assert DataType.parse("book_ticker") is DataType.BOOK_TICKER
    with pytest.raises(ValueError, match="unknown data type"):
        DataType.parse("depth")
