"""The csv sink: the core's sink contract suite, plus what is particular to CSV files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from marketfeeder_csv_sink import CsvSink, read_events

from marketfeeder import Side, Trade
from marketfeeder.plugins import collect, get_plugin_manager
from marketfeeder.testing.contract import SinkContract, sample_events


class TestCsvSinkContract(SinkContract):
    """Every test of marketfeeder.testing.contract.SinkContract, on asyncio and trio."""

    def make_sink(self, tmp_path: Path) -> CsvSink:
        return CsvSink({"target": str(tmp_path / "csv")})

    def read_back(self, sink: Any) -> list[dict[str, Any]]:
        # The contract compares type, exchange, symbol, receive_ts and seq; an empty seq cell is None
        # (CSV cannot tell None from "": the symbol of a connection-wide event stays "").
        return [{**row, "seq": row["seq"] or None} for row in read_events(sink.directory)]


def test_entry_point_registers_the_sink() -> None:
    registry = collect(get_plugin_manager(), "marketfeeder_register_sinks", "sink")
    assert registry["csv"] is CsvSink
    assert registry.plugin_of("csv") == "csv_sink"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="option 'target'"):
        CsvSink({})
    with pytest.raises(ValueError, match="unknown option"):
        CsvSink({"target": "x", "compression": "gzip"})


def _file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.csv"))


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.anyio
async def test_one_file_per_type_with_a_header_and_exact_values(tmp_path: Path) -> None:
    sink = CsvSink({"target": str(tmp_path)})
    await sink.open()
    await sink.write_batch(sample_events())
    await sink.close()
    assert _file_names(tmp_path) == sorted(f"{type(e).__name__}.csv" for e in sample_events())
    header, row = _read_csv(tmp_path / "BookSnapshot.csv")
    assert header[:6] == ["type", "exchange", "symbol", "exchange_ts", "receive_ts", "seq"]
    record = dict(zip(header, row, strict=True))
    assert record["exchange_ts"] == ""  # None
    assert record["bids"] == "[[100.0, 1.0], [99.5, 2.0]]"


@pytest.mark.anyio
async def test_a_reopened_sink_appends_without_a_second_header(tmp_path: Path) -> None:
    def trade(seq: int) -> Trade:
        return Trade("binance", "BTC-USDT", 1, 10 + seq, seq, 0.1 + 0.2, 1.0, Side.BUY)

    for seq in (1, 2):
        sink = CsvSink({"target": str(tmp_path)})
        await sink.open()
        await sink.write_batch([trade(seq)])
        await sink.close()
    rows = read_events(tmp_path)
    assert [row["seq"] for row in rows] == ["1", "2"]
    assert float(rows[0]["price"]) == 0.1 + 0.2  # floats survive exactly
