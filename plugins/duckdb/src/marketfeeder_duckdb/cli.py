"""``marketfeeder query``: run SQL on the history database from the command line."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click
import orjson
import pyarrow as pa

from .history import History, HistoryError

__all__ = ["query_command", "render"]

FORMATS = ("table", "csv", "json")


def _printable(table: pa.Table) -> pa.Table:
    """Temporal and decimal columns as text, so every format shows them exactly (ns included)."""
    columns = []
    for column in table.columns:
        typ = column.type
        if pa.types.is_temporal(typ) or pa.types.is_decimal(typ):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def render(table: pa.Table, fmt: str) -> None:
    """Write ``table`` to stdout as a rich table, CSV or a JSON array of objects."""
    table = _printable(table)
    rows = table.to_pylist()
    out = sys.stdout
    if fmt == "json":
        out.write(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([_cell(v) for v in row.values()])
    else:
        from rich.console import Console
        from rich.table import Table

        view = Table(show_lines=False)
        for name in table.column_names:
            view.add_column(name, overflow="fold")
        for row in rows:
            view.add_row(*(_cell(v) for v in row.values()))
        Console(file=out, width=None if out.isatty() else 200).print(view)
        click.echo(f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}", err=True)


@click.command("query")
@click.argument("sql")
@click.option(
    "--db",
    "db",
    default="market.duckdb",
    show_default=True,
    envvar="MARKETFEEDER_DB",
    type=click.Path(dir_okay=False),
    help="History database written by the duckdb sink.",
)
@click.option("--archive-dir", type=click.Path(file_okay=False), default=None, help="Parquet archive root.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def query_command(sql: str, db: str, archive_dir: str | None, fmt: str) -> None:
    """Run SQL on stored history. Tables: trades, book_tickers, tickers, klines, book_snapshots,
    book_deltas, mark_prices, gaps, book_states, connections, validation_failures, other_events,
    perf_stats; the all_<table> views add archived data and TIMESTAMP columns."""
    try:
        with History(db, archive_dir) as history:
            if history.source == "snapshot":
                click.echo(
                    f"note: {db} is being written; reading its snapshot from {history.snapshot_time:%Y-%m-%d %H:%M:%S} UTC",
                    err=True,
                )
            table = history.sql(sql)
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from exc
    render(table, fmt)
    sys.stdout.flush()
