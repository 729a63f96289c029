from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import anyio
import click
import pytest
from click.testing import CliRunner
from duckdb_helpers import T0, one_of_each, trade

import marketfeeder_duckdb.plugin
from marketfeeder.plugins import get_plugin_manager
from marketfeeder_duckdb import DuckDBSink


@click.group()
def cli() -> None:
    """A stand-in for the core's command group."""


pm = get_plugin_manager(load_entry_points=False)
pm.register(marketfeeder_duckdb.plugin, name="duckdb")
pm.hook.marketfeeder_register_commands(cli=cli)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "market.duckdb"

    async def fill() -> None:
        sink = DuckDBSink({"target": str(path), "snapshot_interval": 0})
        await sink.open()
        await sink.write_batch([*one_of_each(), *(trade(i, exchange="backpack") for i in range(3))])
        await sink.close()

    anyio.run(fill)
    return path


QUERY = "select exchange, symbol, count(*) as n, min(receive_time) as first from all_trades group by all order by exchange"


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["query", *args])
    return result.exit_code, result.stdout, result.stderr


def test_hook_adds_the_query_command() -> None:
    assert "query" in cli.commands


def test_json(db: Path) -> None:
    code, out, _ = _run(QUERY, "--db", str(db), "--format", "json")
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["exchange"], r["symbol"], r["n"]) for r in rows] == [("backpack", "BTC-USDT", 3), ("binance", "BTC-USDT", 1)]
    assert rows[1]["first"] == "2023-11-14 22:13:20.000000007"  # ns kept, as text


def test_csv(db: Path) -> None:
    code, out, _ = _run("select seq, price, side, trade_ts from trades order by seq", "--db", str(db), "--format", "csv")
    assert code == 0, out
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["seq", "price", "side", "trade_ts"]
    assert rows[1] == ["0", "100.0", "sell", str(T0 - 200)]
    assert len(rows) == 1 + 4


def test_table(db: Path) -> None:
    code, out, err = _run(QUERY, "--db", str(db))
    assert code == 0, out
    assert "exchange" in out and "backpack" in out and "binance" in out
    assert "2 rows" in err


def test_errors_are_one_line(db: Path, tmp_path: Path) -> None:
    code, _, err = _run("select * from nope", "--db", str(db))
    assert code == 1
    assert "query failed" in err and "nope" in err
    code, _, err = _run("select 1", "--db", str(tmp_path / "missing.duckdb"))
    assert code == 1
    assert "no history database" in err
    code, _, err = _run("select 1", "--db", str(db), "--format", "xml")
    assert code == 2
