"""Entry point of the ``duckdb`` plugin: the ``duckdb`` sink and the ``marketfeeder query`` command."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from marketfeeder.hookspecs import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def marketfeeder_register_sinks(register: Callable[[str, Any], None]) -> None:
    from .sink import DuckDBSink

    register("duckdb", DuckDBSink)


@hookimpl
def marketfeeder_register_commands(cli: click.Group) -> None:
    from .cli import query_command

    cli.add_command(query_command)
