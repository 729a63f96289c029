"""The core sinks (memory, jsonl) pass the sink contract, plus their own options and formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from marketfeeder.models import DataType, Side, Trade
from marketfeeder.sinks.jsonl import JsonlSink
from marketfeeder.sinks.memory import MemorySink
from marketfeeder.testing.contract import SinkContract, sample_events


class TestMemorySink(SinkContract):
    def make_sink(self, tmp_path: Path) -> MemorySink:
        return MemorySink({"maxlen": 10_000})

    def read_back(self, sink: Any) -> list[Any]:
        assert isinstance(sink, MemorySink)
        return sink.events()


class TestJsonlSink(SinkContract):
    def make_sink(self, tmp_path: Path) -> JsonlSink:
        return JsonlSink({"target": str(tmp_path / "out"), "fsync": "batch"})

    def read_back(self, sink: Any) -> list[Any]:
        assert isinstance(sink, JsonlSink)
        files = [[orjson.loads(line) for line in path.read_bytes().splitlines()] for path in sink.files()]
        if len(files) == 1:
            return files[0]  # order exactly as written
        # One file per data type: order holds within each file; merge the files by arrival time.
        return sorted((row for rows in files for row in rows), key=lambda row: row["receive_ts"])


def test_memory_sink_is_bounded() -> None:
    sink = MemorySink({"maxlen": 3})
    import anyio

    async def main() -> None:
        await sink.open()
        trades = [Trade("x", "BTC-USDT", None, i, i, 1.0, 1.0, Side.BUY) for i in range(10)]
        await sink.write_batch(trades)
        await sink.close()

    anyio.run(main)
    assert [e.seq for e in sink.events()] == [7, 8, 9]
    assert sink.received == 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"maxlen": 0}, "maxlen must be a positive integer"),
        ({"maxlen": "5"}, "maxlen must be a positive integer"),
        ({"size": 5}, "unknown option(s) size"),
    ],
)
def test_memory_sink_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MemorySink(options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "option 'target'"),
        ({"target": "x", "fsync": "sometimes"}, "fsync must be one of"),
        ({"target": "x", "compress": True}, "unknown option"),
    ],
)
def test_jsonl_sink_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JsonlSink(options)


@pytest.mark.anyio
async def test_jsonl_files_and_format(tmp_path: Path) -> None:
    sink = JsonlSink({"path": str(tmp_path), "fsync": "close"})
    await sink.open()
    events = sample_events()
    await sink.write_batch(events)
    await sink.close()
    names = {p.name for p in sink.files()}
    assert {"trades.jsonl", "orderbook.jsonl", "status.jsonl", "ticker.jsonl", "klines.jsonl"} <= names
    trade = orjson.loads((tmp_path / "trades.jsonl").read_bytes())
    assert trade["type"] == "Trade"
    assert trade["side"] == "buy"
    assert trade["price"] == 100.5
    book = [orjson.loads(line) for line in (tmp_path / "orderbook.jsonl").read_bytes().splitlines()]
    assert [row["type"] for row in book] == ["BookSnapshot", "BookDelta"]
    assert book[0]["bids"] == [[100.0, 1.0], [99.5, 2.0]]
    status = [orjson.loads(line) for line in (tmp_path / "status.jsonl").read_bytes().splitlines()]
    gap = next(row for row in status if row["type"] == "Gap")
    assert gap["gap_type"] == DataType.ORDERBOOK.value


@pytest.mark.anyio
async def test_jsonl_appends_across_runs(tmp_path: Path) -> None:
    for run in range(2):
        sink = JsonlSink({"target": tmp_path, "fsync": "never"})
        await sink.open()
        await sink.write_batch([Trade("x", "BTC-USDT", None, run, run, 1.0, 1.0, Side.BUY)])
        await sink.close()
    lines = (tmp_path / "trades.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["seq"] for line in lines] == [0, 1]


@pytest.mark.anyio
async def test_jsonl_write_after_close_raises(tmp_path: Path) -> None:
    sink = JsonlSink({"target": str(tmp_path)})
    await sink.open()
    await sink.close()
    with pytest.raises(RuntimeError, match="after close"):
        await sink.write_batch([Trade("x", "BTC-USDT", None, 1, 1, 1.0, 1.0, Side.BUY)])
