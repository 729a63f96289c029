"""Hook specifications of the ``marketfeeder`` plugin system.

Hooks are for discovery and wiring: they are synchronous, called once when the feeder or the CLI
starts, and hand back objects whose methods are async. Nothing on the per-message path goes through
a hook call.

Each ``register_*`` hook receives a ``register`` callable: ``register(name, obj)``. A name may be
registered once per kind; a second registration of the same name is an error that names both
plugins. A plugin implements only the hooks it needs::

    from marketfeeder import hookimpl

    @hookimpl
    def marketfeeder_register_sinks(register):
        register("csv", CsvSink)

and declares itself in its ``pyproject.toml``::

    [project.entry-points.marketfeeder]
    mysink = "mypackage.plugin"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from .connector import Connector
    from .runtime.feeder import Feeder
    from .sim.venue import Venue
    from .sinks.base import SinkFactory
    from .source import SourceFactory
    from .strategy import StrategyFactory
    from .validators.base import ValidatorFactory

PROJECT_NAME = "marketfeeder"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- discovery: what a plugin contributes --------------------------------------------------------


@hookspec
def marketfeeder_register_connectors(register: Callable[[str, type[Connector]], None]) -> None:
    """Register exchange connectors by exchange name.

    ``register("binance", BinanceConnector)``: the class is instantiated once per feeder with the
    exchange's :class:`~marketfeeder.config.ExchangeConfig` and the shared HTTP client. The name is
    the key used in configuration (``[exchanges.binance]``) and in ``--exchange``.
    """


@hookspec
def marketfeeder_register_validators(register: Callable[[str, ValidatorFactory], None]) -> None:
    """Register data-quality checks by name.

    ``register("spread", SpreadValidator)``: the factory is called with the check's options (a dict
    from ``[validation.options.<name>]``) and returns a :class:`~marketfeeder.validators.base.Validator`.
    The core's own checks are registered through this same hook by its default plugin.
    """


@hookspec
def marketfeeder_register_sinks(register: Callable[[str, SinkFactory], None]) -> None:
    """Register sink factories by name (``memory``, ``jsonl``, ``duckdb``, ...).

    The factory is called with the sink's options (a dict; ``--sink NAME:TARGET`` passes
    ``{"target": TARGET}``) and returns an object implementing :class:`~marketfeeder.sinks.base.Sink`.
    """


@hookspec
def marketfeeder_register_strategies(register: Callable[[str, StrategyFactory], None]) -> None:
    """Register strategies by name (``arbitrage``, user strategies).

    The factory is called with the strategy's options and returns a
    :class:`~marketfeeder.strategy.Strategy`, whose ``run(feeder)`` the feeder starts in its task group.
    """


@hookspec
def marketfeeder_register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    """Register sources of already-normalized events (a message bus) by name, which is also the URL
    scheme they serve.

    ``register("nats", NatsSource)``: the factory is called with the source's options (a dict from
    ``[[sources]]``; ``--source nats://HOST:PORT`` passes ``{"url": "nats://HOST:PORT"}``) and returns a
    :class:`~marketfeeder.source.Source`, whose ``run(ingest)`` the feeder starts in its task group.
    Its events reach books, validators, callbacks, strategies and sinks as a connector's do.
    """


@hookspec
def marketfeeder_register_venues(register: Callable[[str, type[Venue]], None]) -> None:
    """Register loopback simulators of an exchange's wire protocol, by exchange name.

    Each exchange plugin ships one so that its connector can be tested offline; the simulator
    (``marketfeeder sim serve``, ``marketfeeder run --sim``) serves every registered venue.
    """


# --- command line ---------------------------------------------------------------------------------


@hookspec
def marketfeeder_register_commands(cli: click.Group) -> None:
    """Add commands to the ``marketfeeder`` command-line group (e.g. ``marketfeeder query``)."""


# --- lifecycle -----------------------------------------------------------------------------------


@hookspec
def marketfeeder_startup(feeder: Feeder) -> None:
    """Called once when a feeder has started (connectors launched, sinks open). Must not block."""


@hookspec
def marketfeeder_shutdown(feeder: Feeder) -> None:
    """Called once when a feeder is stopping, after sinks were flushed. Must not block."""


HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, value in list(globals().items()) if name.startswith("marketfeeder_") and callable(value)
)
