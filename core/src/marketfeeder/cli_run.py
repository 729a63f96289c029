"""The work behind ``marketfeeder run`` and ``marketfeeder sim serve``: config assembly, the
in-process simulator, the live status table, signals and the final summary."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from .config import Config, ConfigError, SinkConfig, SourceConfig, load_config, unstructure_config
from .logs import configure_logging
from .models import DataType
from .plugins import PluginManager, collect

log = logging.getLogger("marketfeeder")


@attrs.frozen
class RunOptions:
    duration: float | None
    sim: bool
    seed: int
    rate: float
    faults: str
    quiet: bool
    metrics_port: int | None = None
    log_format: str = "text"


def _split_symbols(symbols: Sequence[str], exchanges: Sequence[str]) -> dict[str, list[str]]:
    """``BTC-USDT`` applies to every exchange; ``binance:BTC-USDT`` to one."""
    result: dict[str, list[str]] = {name: [] for name in exchanges}
    for item in symbols:
        exchange, sep, symbol = item.partition(":")
        if sep:
            if exchange not in result:
                raise ConfigError(f"--symbol {item!r}: exchange {exchange!r} is not selected (selected: {', '.join(exchanges)})")
            result[exchange].append(symbol.upper())
        else:
            for name in result:
                result[name].append(item.upper())
    return result


def _scheme(url: str, flag: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest:
        raise ConfigError(f"{flag} {url!r}: expected a URL such as nats://127.0.0.1:4222")
    return scheme.lower()


def bus_source(url: str) -> SourceConfig:
    """``--source nats://HOST:PORT``: the source registered under the URL's scheme."""
    return SourceConfig(type=_scheme(url, "--source"), options={"url": url})


def bus_sink(url: str, group: str | None) -> SinkConfig:
    """``--publish nats://HOST:PORT [--group NAME]``: the sink registered under the URL's scheme."""
    options: dict[str, Any] = {"url": url}
    if group is not None:
        options["group"] = group
    return SinkConfig(type=_scheme(url, "--publish"), options=options)


def build_run_config(
    pm: PluginManager,
    *,
    config_path: Path | None,
    exchanges: list[str],
    symbols: list[str],
    data_types: list[DataType],
    sinks: list[SinkConfig],
    sim: bool,
    sources: Sequence[SourceConfig] = (),
) -> Config:
    """The run's Config: the file (if any) with command-line flags laid over it."""
    base: dict[str, Any] = unstructure_config(load_config(config_path)) if config_path else {}
    base.setdefault("exchanges", {})
    if sources:
        base["sources"] = [*base.get("sources", []), *(attrs.asdict(s) for s in sources)]
    if sinks:
        base["sinks"] = [*base.get("sinks", []), *(attrs.asdict(s) for s in sinks)]
    if base.get("sources") and not exchanges and not sim:
        # A consumer of the bus: the exchanges are other feeders' business.
        base["exchanges"] = {name: {**cfg, "enabled": False} for name, cfg in base["exchanges"].items()}
        for name in symbols:
            raise ConfigError(f"--symbol {name!r}: with --source and no --exchange there is no exchange to stream")
        return load_config(base)
    connectors = collect(pm, "marketfeeder_register_connectors", "connector")
    if exchanges:
        chosen = exchanges
    elif base["exchanges"]:
        chosen = [name for name, cfg in base["exchanges"].items() if cfg.get("enabled", True)]
    else:
        chosen = connectors.names()
        if sim:
            venues = collect(pm, "marketfeeder_register_venues", "venue")
            chosen = [name for name in chosen if name in venues]
    if not chosen:
        raise ConfigError("no exchange selected and no connector installed: pip install marketfeeder-binance")
    per_exchange = _split_symbols(symbols, chosen)
    for name in chosen:
        section = dict(base["exchanges"].get(name, {}))
        section["enabled"] = True
        if per_exchange[name]:
            section["symbols"] = per_exchange[name]
        elif not section.get("symbols"):
            if sim:
                from .sim.engine import default_instruments

                section["symbols"] = [inst.symbol for inst in default_instruments(name)][:3]
            else:
                raise ConfigError(f"exchanges.{name}.symbols: no symbols; pass --symbol or set them in the config")
        if data_types:
            section["data_types"] = [dt.value for dt in data_types]
        base["exchanges"][name] = section
    for name in list(base["exchanges"]):
        if name not in chosen:
            base["exchanges"][name] = {**base["exchanges"][name], "enabled": False}
    return load_config(base)


async def run_feeder(pm: PluginManager, config: Config, options: RunOptions) -> int:
    """Run until the duration elapses or a signal arrives; print the summary; return the exit code."""
    from .runtime.connections import FeederError

    problems: list[BaseException] = []
    try:
        return await _run_feeder(pm, config, options)
    except* (FeederError, ConfigError, ValueError) as group:
        problems = _leaves(group)
    # A setup problem (unknown symbol, unsupported data type): one line, exit status 2.
    return _usage_error("; ".join(str(exc) for exc in problems))


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _run_feeder(pm: PluginManager, config: Config, options: RunOptions) -> int:
    from .runtime.feeder import Feeder

    configure_logging(level=logging.INFO if options.quiet else logging.WARNING, fmt=options.log_format)
    if options.metrics_port is not None:
        config = attrs.evolve(config, metrics=attrs.evolve(config.metrics, enabled=True, port=options.metrics_port))
    started = time.monotonic()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, stop, tg.cancel_scope)
        if options.sim:
            from .sim.faults import FaultPlan
            from .sim.server import SimServer, sim_config_for

            venues = collect(pm, "marketfeeder_register_venues", "venue")
            names = list(config.enabled_exchanges())
            missing = [name for name in names if name not in venues]
            if missing:
                raise SystemExit(_usage_error(f"--sim: no simulator venue for {', '.join(missing)}"))
            faults = FaultPlan.parse(options.faults, seed=options.seed) if options.faults else None
            # Each venue lists the configured symbols (generic instruments for ones it does not know).
            venue_options = {name: {"symbols": list(config.exchanges[name].symbols)} for name in names}
            async with SimServer(
                {name: venues[name] for name in names},
                seed=options.seed,
                rate=options.rate,
                faults=faults,
                venue_options=venue_options,
            ) as sim:
                overrides = sim_config_for(sim, names)["exchanges"]
                config = _with_endpoints(config, overrides)
                for name, urls in overrides.items():
                    log.info("simulator %s: ws %s rest %s", name, urls["ws_url"], urls["rest_url"])
                stats = await _run_with_table(pm, config, options, Feeder, stop)
        else:
            stats = await _run_with_table(pm, config, options, Feeder, stop)
        tg.cancel_scope.cancel()
    _print_summary(stats, time.monotonic() - started)
    return 0


def _usage_error(message: str) -> int:
    print(f"marketfeeder: error: {message}", file=sys.stderr)
    return 2


def _with_endpoints(config: Config, overrides: Mapping[str, Mapping[str, str]]) -> Config:
    exchanges = dict(config.exchanges)
    for name, urls in overrides.items():
        exchanges[name] = attrs.evolve(exchanges[name], ws_url=urls["ws_url"], rest_url=urls["rest_url"])
    return attrs.evolve(config, exchanges=exchanges)


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    """First Ctrl-C / SIGTERM: stop cleanly (sinks flush, summary prints). A second one: stop now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if stop.is_set():
                scope.cancel()
                return
            stop.set()


async def _run_with_table(
    pm: PluginManager, config: Config, options: RunOptions, feeder_cls: Any, stop: anyio.Event
) -> dict[str, Any]:
    async with feeder_cls(config, plugin_manager=pm) as feeder:
        with anyio.move_on_after(options.duration if options.duration is not None else math.inf):
            if options.quiet:
                await _until(stop, lambda: None)
            else:
                await _live_table(feeder, stop)
        stats: dict[str, Any] = feeder.get_performance_stats()
    return stats


async def _until(stop: anyio.Event, tick: Any) -> None:
    """Call ``tick`` once a second until ``stop`` is set."""
    while not stop.is_set():
        with anyio.move_on_after(1.0):
            await stop.wait()
        tick()


async def _live_table(feeder: Any, stop: anyio.Event) -> None:
    from rich.live import Live

    with Live(render_table(feeder.get_performance_stats()), refresh_per_second=2, transient=False) as live:
        await _until(stop, lambda: live.update(render_table(feeder.get_performance_stats())))


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def stream_rows(stats: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The per-symbol sections of a stats dict (keys "exchange:SYMBOL")."""
    return sorted((key, value) for key, value in stats.items() if ":" in key and isinstance(value, Mapping))


#: Short labels of the market event classes, in display order.
_TYPE_LABELS = (
    ("Ticker", "ticker"),
    ("BookTicker", "bbo"),
    ("BookDelta", "book"),
    ("Trade", "trades"),
    ("Kline", "klines"),
    ("MarkPrice", "mark"),
)


def _types(row: Mapping[str, Any]) -> str:
    """Which data types this stream has delivered, e.g. "ticker bbo book trades klines"."""
    seen = row.get("by_type") or {}
    return " ".join(label for name, label in _TYPE_LABELS if seen.get(name))


def _latency(row: Mapping[str, Any]) -> Mapping[str, Any]:
    latency = row.get("latency_ms") or {}
    result: Mapping[str, Any] = latency.get("exchange_to_receive") or {}
    return result


def render_table(stats: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="marketfeeder", expand=False)
    for column in ("stream", "data", "msgs", "msgs/s", "lat p50 ms", "lat p99 ms", "book", "gaps", "resyncs", "errors", "invalid"):
        table.add_column(column, justify="right" if column not in ("stream", "data", "book") else "left")
    for key, row in stream_rows(stats):
        latency = _latency(row)
        table.add_row(
            key,
            _types(row),
            _fmt(row.get("message_count")),
            _fmt(row.get("msgs_per_s")),
            _fmt(latency.get("p50"), 2),
            _fmt(latency.get("p99"), 2),
            str(row.get("book_state") or "-"),
            _fmt(row.get("gaps")),
            _fmt(row.get("resyncs")),
            _fmt(row.get("error_count")),
            _fmt(sum((row.get("validation_failures") or {}).values())),
        )
    for name, row in (stats.get("sinks") or {}).items():
        if isinstance(row, Mapping):
            dropped = (row.get("queue") or {}).get("dropped_by_backpressure")
            state = "failed" if row.get("failed") else f"lag {_fmt(row.get('lag'))}"
            table.add_row(f"sink {name}", "", _fmt(row.get("written")), "", "", "", state, "", "", _fmt(1 if row.get("error") else 0), _fmt(dropped))
    return table


def _print_summary(stats: Mapping[str, Any], elapsed: float) -> None:
    rows = stream_rows(stats)
    total = sum(int(row.get("message_count") or 0) for _, row in rows)
    gaps = sum(int(row.get("gaps") or 0) for _, row in rows)
    errors = sum(int(row.get("error_count") or 0) for _, row in rows)
    print(f"marketfeeder: {total:,} messages on {len(rows)} streams in {elapsed:.1f}s; {gaps} gaps, {errors} errors")
    for key, row in rows:
        latency = _latency(row)
        print(
            f"  {key:<28} {int(row.get('message_count') or 0):>9,} msgs  p50 {_fmt(latency.get('p50'), 2)} ms"
            f"  p99 {_fmt(latency.get('p99'), 2)} ms  book {row.get('book_state') or '-'}  [{_types(row)}]"
        )
    for name, row in (stats.get("sinks") or {}).items():
        if isinstance(row, Mapping):
            status = f"FAILED: {row.get('error')}" if row.get("failed") else "ok"
            print(f"  sink {name:<23} {int(row.get('written') or 0):>9,} written  {status}")


async def serve_simulator(
    venue_classes: Mapping[str, Any],
    host: str,
    port: int,
    seed: int,
    rate: float,
    symbols: list[str],
    faults: str,
    duration: float | None,
) -> None:
    from .sim.faults import FaultPlan
    from .sim.server import SimServer

    plan = FaultPlan.parse(faults, seed=seed) if faults else None
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, stop, tg.cancel_scope)
        async with SimServer(
            venue_classes, seed=seed, rate=rate, symbols=symbols or None, faults=plan, host=host, port=port
        ) as sim:
            for name, urls in sim.endpoints().items():
                print(json.dumps({"venue": name, **urls}), flush=True)
            with anyio.move_on_after(duration if duration is not None else math.inf):
                await stop.wait()
        tg.cancel_scope.cancel()
