from __future__ import annotations

import csv
from pathlib import Path

import pytest

from marketfeeder.models import Side, Ticker, Trade
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder_template import plugin


def trade(seq: int, size: float) -> Trade:
    return Trade.fast("binance", "BTC-USDT", 1, 2, seq, 100.0, size, Side.SELL, None)


def test_entry_point_registers_sink_and_validator() -> None:
    pm = get_plugin_manager()
    assert collect(pm, "marketfeeder_register_sinks", "sink").plugin_of("csv-trades") == "template"
    assert collect(pm, "marketfeeder_register_validators", "validator").plugin_of("max_trade_size") == "template"


@pytest.mark.anyio
async def test_csv_sink_writes_trades_only(tmp_path: Path) -> None:
    sink = plugin.CsvTradeSink({"target": str(tmp_path / "t.csv")})
    await sink.open()
    ticker = Ticker.fast("binance", "BTC-USDT", 1, 2, None, 1.0, None, None, None, None, 1.0, 1.0, 1.0, 1.0, 1.0, 1)
    await sink.write_batch([trade(1, 0.5), ticker, trade(2, 1.5)])
    await sink.close()
    rows = list(csv.reader((tmp_path / "t.csv").open()))
    assert rows[0][0] == "exchange"
    assert [r[4] for r in rows[1:]] == ["1", "2"]
    assert rows[1][7] == "sell"


def test_sink_requires_target() -> None:
    with pytest.raises(ValueError, match="option 'target'"):
        plugin.CsvTradeSink({})


def test_validator_flags_only_large_trades() -> None:
    check = plugin.MaxTradeSize({"max_size": 1.0})
    assert check.check(trade(1, 0.5), None) is None  # type: ignore[arg-type]
    verdict = check.check(trade(2, 2.0), None)  # type: ignore[arg-type]
    assert verdict is not None
    assert "above 1.0" in verdict.message
