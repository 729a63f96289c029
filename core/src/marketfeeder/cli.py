"""The ``marketfeeder`` command line.

Commands: ``run`` (the feeder with a live status table), ``sim serve`` (the loopback simulator),
``plugins`` (what is installed), ``config check`` (validate a file), plus commands that plugins add
through ``marketfeeder_register_commands`` (e.g. ``query`` from marketfeeder-duckdb).

Usage errors (a bad flag, a bad config) exit with status 2 and a one-line reason.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
import click

from . import __version__
from .config import Config, ConfigError, load_config, parse_sink_spec, unstructure_config
from .models import DataType
from .plugins import PluginManager, collect, get_plugin_manager, list_plugins

LOOPS = ("asyncio", "uvloop", "trio")


def _fail(message: str) -> NoReturn:
    raise click.UsageError(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="marketfeeder")
def cli() -> None:
    """marketfeeder: multi-exchange crypto market data, exact order books, plugins for everything."""


# --- plugins ---------------------------------------------------------------------------------------


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(as_json: bool) -> None:
    """List installed plugins: name, distribution, version, hooks and what each registers."""
    pm = _plugin_manager()
    infos = list_plugins(pm)
    if as_json:
        payload: dict[str, Any] = {"plugins": [info.as_dict() for info in infos]}
        payload["failures"] = [{"name": f.name, "value": f.value, "error": f.error} for f in pm.failures]
        click.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="marketfeeder plugins")
    for column in ("plugin", "distribution", "version", "hooks", "registers"):
        table.add_column(column)
    for info in infos:
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registers.items())
        hooks = ", ".join(h.removeprefix("marketfeeder_") for h in info.hooks)
        table.add_row(info.name, info.distribution or "-", info.version or "-", hooks, registers)
    console = Console()
    console.print(table)
    for failure in pm.failures:
        console.print(f"[red]plugin {failure.name!r} ({failure.value}) failed to load: {failure.error}[/red]")


# --- config ----------------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Configuration files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; print the resolved configuration, or the key at fault and why."""
    try:
        config = load_config(file)
    except ConfigError as exc:
        _fail(str(exc))
    problems = _check_against_plugins(config, _plugin_manager())
    if problems:
        _fail("; ".join(problems))
    click.echo(f"{file}: ok")
    click.echo(json.dumps(unstructure_config(config), indent=2, default=str))


def _check_against_plugins(config: Config, pm: PluginManager) -> list[str]:
    """Names in the config that no installed plugin provides."""
    problems: list[str] = []
    connectors = collect(pm, "marketfeeder_register_connectors", "connector")
    sinks = collect(pm, "marketfeeder_register_sinks", "sink")
    strategies = collect(pm, "marketfeeder_register_strategies", "strategy")
    validators = collect(pm, "marketfeeder_register_validators", "validator")
    sources = collect(pm, "marketfeeder_register_sources", "source")
    for i, source in enumerate(config.sources):
        if source.type not in sources:
            problems.append(f"sources[{i}].type: no source named {source.type!r} is installed (installed: {_names(sources)})")
    if not config.enabled_exchanges() and not config.sources:
        problems.append("nothing to run: no exchange is enabled and no source is configured")
    for name in config.enabled_exchanges():
        if name not in connectors:
            problems.append(f"exchanges.{name}: no connector named {name!r} is installed (installed: {_names(connectors)})")
    for i, sink in enumerate(config.sinks):
        if sink.type not in sinks:
            problems.append(f"sinks[{i}].type: no sink named {sink.type!r} is installed (installed: {_names(sinks)})")
    for i, strategy in enumerate(config.strategies):
        if strategy.type not in strategies:
            problems.append(
                f"strategies[{i}].type: no strategy named {strategy.type!r} is installed (installed: {_names(strategies)})"
            )
    for check in config.validation.checks or []:
        if check not in validators:
            problems.append(f"validation.checks: no check named {check!r} (installed: {_names(validators)})")
    return problems


def _names(registry: Any) -> str:
    names: list[str] = registry.names()
    return ", ".join(names) or "none"


# --- run -------------------------------------------------------------------------------------------


@cli.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file.")
@click.option("--exchange", "exchanges", multiple=True, help="Exchange to stream (repeatable). Default: all installed.")
@click.option("--symbol", "symbols", multiple=True, help="Normalized symbol, e.g. BTC-USDT (repeatable).")
@click.option("--data", "data_types", multiple=True, help="Data type: ticker, book_ticker, orderbook, trades, klines.")
@click.option("--sink", "sinks", multiple=True, help="Sink as NAME[:TARGET], e.g. jsonl:./out or duckdb:market.duckdb.")
@click.option("--source", "sources", multiple=True,
              help="Consume events other feeders publish, as a URL whose scheme names the source, e.g. "
                   "nats://HOST:4222 (repeatable). With no --exchange, no exchange is connected.")
@click.option("--publish", "publish", multiple=True,
              help="Publish every event to a bus, as a URL whose scheme names the sink, e.g. nats://HOST:4222.")
@click.option("--group", default=None, help="Publish as a member of this group: shards are divided by leases.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--sim", is_flag=True, help="Run against the built-in loopback simulator (no network).")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator seed (with --sim).")
@click.option("--rate", type=float, default=2000.0, show_default=True, help="Simulator messages/s (with --sim).")
@click.option("--faults", default="", help="Simulator fault spec (with --sim), e.g. skip_ids=0.01,dup=0.01.")
@click.option("--quiet", is_flag=True, help="No live table; log lines and the final summary only.")
@click.option("--loop", type=click.Choice(LOOPS), default="asyncio", show_default=True, help="Event loop.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (GET /metrics; 0 picks a free port).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines as text or one JSON object per line (secrets redacted either way).")
def run_command(
    config_path: Path | None,
    exchanges: Sequence[str],
    symbols: Sequence[str],
    data_types: Sequence[str],
    sinks: Sequence[str],
    sources: Sequence[str],
    publish: Sequence[str],
    group: str | None,
    duration: float | None,
    sim: bool,
    seed: int,
    rate: float,
    faults: str,
    quiet: bool,
    loop: str,
    metrics_port: int | None,
    log_format: str,
) -> None:
    """Run the feeder with a live status table; Ctrl-C or SIGTERM stops it cleanly."""
    from .cli_run import RunOptions, build_run_config, bus_sink, bus_source, run_feeder

    if duration is not None and duration <= 0:
        _fail(f"--duration must be positive, got {duration}")
    pm = _plugin_manager()
    try:
        parsed_types = [DataType.parse(value) for value in data_types]
        sink_configs = [parse_sink_spec(spec) for spec in sinks]
        sink_configs += [bus_sink(url, group) for url in publish]
        if group is not None and not publish:
            raise ConfigError("--group: only publishers form groups; add --publish URL")
        config = build_run_config(
            pm,
            config_path=config_path,
            exchanges=list(exchanges),
            symbols=list(symbols),
            data_types=parsed_types,
            sinks=sink_configs,
            sim=sim,
            sources=[bus_source(url) for url in sources],
        )
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    problems = _check_against_plugins(config, pm)
    if problems:
        _fail("; ".join(problems))
    options = RunOptions(
        duration=duration, sim=sim, seed=seed, rate=rate, faults=faults, quiet=quiet,
        metrics_port=metrics_port, log_format=log_format,
    )
    backend, backend_options = _backend(loop)
    exit_code = anyio.run(run_feeder, pm, config, options, backend=backend, backend_options=backend_options)
    sys.exit(exit_code)


def _backend(loop: str) -> tuple[str, dict[str, Any]]:
    if loop == "uvloop":
        return "asyncio", {"use_uvloop": True}
    return loop, {}


# --- sim -------------------------------------------------------------------------------------------


@cli.group("sim")
def sim_group() -> None:
    """The loopback exchange simulator."""


@sim_group.command("serve")
@click.option("--venue", "venues", multiple=True, help="Venue to serve (repeatable). Default: every installed venue.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", type=int, default=0, show_default=True, help="First port (0: any free port).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--rate", type=float, default=1000.0, show_default=True, help="Market messages per second.")
@click.option("--symbols", "symbols", multiple=True, help="Normalized symbols to list (repeatable).")
@click.option("--faults", default="", help="Fault spec, e.g. drop_conn=0.001,skip_ids=0.01.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def sim_serve(
    venues: Sequence[str],
    host: str,
    port: int,
    seed: int,
    rate: float,
    symbols: Sequence[str],
    faults: str,
    duration: float | None,
) -> None:
    """Serve simulated exchanges on loopback; print one JSON line per venue with its URLs."""
    from .cli_run import serve_simulator

    if host not in ("127.0.0.1", "localhost", "::1"):
        _fail(f"--host {host!r}: the simulator binds to loopback only (127.0.0.1, localhost or ::1)")
    pm = _plugin_manager()
    registry = collect(pm, "marketfeeder_register_venues", "venue")
    chosen = list(venues) or registry.names()
    if not chosen:
        _fail("no venue is installed: install marketfeeder-binance or marketfeeder-backpack")
    for name in chosen:
        if name not in registry:
            _fail(f"--venue {name!r}: no such venue (installed: {_names(registry)})")
    venue_classes = {name: registry[name] for name in chosen}
    anyio.run(serve_simulator, venue_classes, host, port, seed, rate, list(symbols), faults, duration)


# --- entry point -----------------------------------------------------------------------------------

_PM: PluginManager | None = None


def _plugin_manager() -> PluginManager:
    global _PM
    if _PM is None:
        _PM = get_plugin_manager()
    return _PM


def build_cli(pm: PluginManager | None = None) -> click.Group:
    """The CLI group with the commands plugins contribute."""
    pm = pm or _plugin_manager()
    pm.hook.marketfeeder_register_commands(cli=cli)
    return cli


def main(argv: Sequence[str] | None = None) -> NoReturn:
    group = build_cli()
    try:
        group.main(args=list(argv) if argv is not None else None, prog_name="marketfeeder", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("marketfeeder: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # One line: the reason. `--help` shows the usage.
        click.echo(f"marketfeeder: error: {exc.format_message()}", err=True)
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    sys.exit(0)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
