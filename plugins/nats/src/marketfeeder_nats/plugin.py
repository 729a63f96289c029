"""Entry point of the ``nats`` plugin: the ``nats`` sink and source, ``marketfeeder cluster``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from marketfeeder.hookspecs import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def marketfeeder_register_sinks(register: Callable[[str, Any], None]) -> None:
    from .sink import NatsSink

    register("nats", NatsSink)


@hookimpl
def marketfeeder_register_sources(register: Callable[[str, Any], None]) -> None:
    from .source import NatsSource

    register("nats", NatsSource)


@hookimpl
def marketfeeder_register_commands(cli: click.Group) -> None:
    from .cli import cluster_command

    cli.add_command(cluster_command)
