"""Configuration: a TOML file, or the same structure as a dict, structured into attrs classes.

A private cattrs converter does the structuring; any error is reported through
``cattrs.transform_error`` so the message names the key and the reason, e.g.
``exchanges.binance.symbols: expected a list @ $.exchanges.binance.symbols``. Secrets never live in
files: :func:`secret` reads them from the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from .models import DataType

__all__ = [
    "Config",
    "ConfigError",
    "ExchangeConfig",
    "MetricsConfig",
    "RuntimeConfig",
    "SinkConfig",
    "SourceConfig",
    "StrategyConfig",
    "ValidationConfig",
    "load_config",
    "parse_sink_spec",
    "secret",
]

OverflowPolicy = Literal["block", "drop_oldest"]
ValidationPolicy = Literal["annotate", "quarantine", "drop"]


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the reason."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float | int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def _symbols(instance: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for symbol in value:
        parts = symbol.split("-")
        if len(parts) < 2 or not all(parts) or symbol != symbol.upper():
            raise ValueError(f"symbol {symbol!r} is not normalized: write BASE-QUOTE in capitals, e.g. BTC-USDT")


DEFAULT_DATA_TYPES = [DataType.TICKER, DataType.BOOK_TICKER, DataType.ORDERBOOK, DataType.TRADES, DataType.KLINES]


@attrs.frozen
class ExchangeConfig:
    """``[exchanges.<name>]``: one exchange connector."""

    #: Stream this exchange (false keeps the section but skips it).
    enabled: bool = True
    #: WebSocket base URL; None uses the connector's documented default.
    ws_url: str | None = None
    #: REST base URL; None uses the connector's documented default.
    rest_url: str | None = None
    #: Normalized symbols, e.g. ["BTC-USDT"].
    symbols: list[str] = attrs.field(factory=list, validator=_symbols)
    #: Data types to stream: ticker, book_ticker, orderbook, trades, klines, mark_price.
    data_types: list[DataType] = attrs.field(factory=lambda: list(DEFAULT_DATA_TYPES))
    #: Kline intervals in the exchange's notation ("1m", "1h").
    kline_intervals: list[str] = attrs.field(factory=lambda: ["1m"])
    #: Levels requested in the REST depth snapshot (None: the connector's default).
    depth_limit: int | None = attrs.field(default=None, validator=_positive)
    #: Connector-specific options; each connector documents its own keys.
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class SinkConfig:
    """``[[sinks]]``: a registered sink by name, its options, and how its buffer overflows."""

    #: Registered sink name (``memory``, ``jsonl``, ``duckdb``, ...).
    type: str
    #: The sink's own options; ``target`` is what ``--sink NAME:TARGET`` sets.
    options: dict[str, Any] = attrs.field(factory=dict)
    #: Events queued for this sink before the overflow policy applies.
    queue_size: int = attrs.field(default=10_000, validator=_positive)
    #: "block" slows the pipeline down; "drop_oldest" discards and records a Gap marker.
    overflow: OverflowPolicy = "block"
    #: Events handed to the sink per write_batch call, at most.
    batch_size: int = attrs.field(default=1_000, validator=_positive)
    #: Longest time (s) an accepted event waits before its batch is written.
    flush_interval: float = attrs.field(default=0.5, validator=_positive)


@attrs.frozen
class StrategyConfig:
    """``[[strategies]]``: a registered strategy by name and its options."""

    #: Registered strategy name (``arbitrage``, ...).
    type: str
    #: The strategy's own options.
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class SourceConfig:
    """``[[sources]]``: a registered source of already-normalized events (a message bus) and its options."""

    #: Registered source name, which is also the URL scheme it serves (``nats``).
    type: str
    #: The source's own options (``url``, filters, consumer name: see the plugin's docs).
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ValidationConfig:
    """``[validation]``: which checks run and what happens to an event that fails one."""

    #: annotate: deliver and count; quarantine: keep out of callbacks/buffers but send to sinks flagged;
    #: drop: discard and count.
    policy: ValidationPolicy = "annotate"
    #: Checks to run; None runs every registered check.
    checks: list[str] | None = None
    #: Per-check options, by check name.
    options: dict[str, dict[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class RuntimeConfig:
    """``[runtime]``: timeouts, queues and reconnection."""

    #: Seconds allowed to drain sinks on shutdown.
    shutdown_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Events queued per async callback / stream() consumer.
    subscriber_queue_size: int = attrs.field(default=10_000, validator=_positive)
    #: A callback slower than this (ms) is counted as slow.
    slow_callback_ms: float = attrs.field(default=50.0, validator=_positive)
    #: First reconnect delay (s); it doubles per failed attempt, with full jitter.
    reconnect_initial_delay: float = attrs.field(default=0.1, validator=_positive)
    #: Longest reconnect delay (s). Reconnection never gives up.
    reconnect_max_delay: float = attrs.field(default=30.0, validator=_positive)
    #: Largest WebSocket frame accepted (bytes).
    max_frame_size: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    #: Seconds to open a connection (TCP + TLS + handshake).
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: REST request timeout (s).
    http_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: REST retries on 429, 5xx and transport errors (429 honours ``Retry-After``).
    http_retries: int = attrs.field(default=5, validator=_non_negative)
    #: A stream is stale after this many times its usual inter-message gap...
    stale_factor: float = attrs.field(default=10.0, validator=_positive)
    #: ...and never before this many seconds of silence.
    stale_min_seconds: float = attrs.field(default=5.0, validator=_positive)


@attrs.frozen
class MetricsConfig:
    """``[metrics]``: Prometheus exposition of the stats on ``GET /metrics``."""

    #: Serve the metrics page while the feeder runs.
    enabled: bool = False
    #: Address to listen on (use 0.0.0.0 to let another host scrape it).
    host: str = "127.0.0.1"
    #: TCP port of the metrics page (0 picks a free port).
    port: int = attrs.field(default=9464, validator=_non_negative)


@attrs.frozen
class Config:
    """The whole configuration. Every key is documented in ``docs/configuration.md``."""

    #: Exchange connectors by name (``[exchanges.binance]``); see the ``[exchanges.NAME]`` section.
    exchanges: dict[str, ExchangeConfig] = attrs.field(factory=dict)
    #: Events kept per (exchange, symbol, data type) ring buffer.
    buffer_size: int = attrs.field(default=1_000, validator=_positive)
    #: Quotes further apart in time than this are never paired across exchanges.
    sync_tolerance_ms: float = attrs.field(default=100.0, validator=_positive)
    #: Run the data-quality checks (``[validation]``) on every event.
    enable_validation: bool = True
    #: Turn on the sinks listed in ``sinks`` (False keeps only in-memory buffers).
    enable_historical_storage: bool = True
    #: Where events are stored (``[[sinks]]`` entries).
    sinks: list[SinkConfig] = attrs.field(factory=list)
    #: Strategies to run (``[[strategies]]`` entries).
    strategies: list[StrategyConfig] = attrs.field(factory=list)
    #: Sources of events another feeder produced (``[[sources]]`` entries), e.g. a NATS JetStream bus.
    sources: list[SourceConfig] = attrs.field(factory=list)
    #: Data-quality checks and the policy for failures (``[validation]``).
    validation: ValidationConfig = attrs.field(factory=ValidationConfig)
    #: Timeouts, queues and reconnection (``[runtime]``).
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    #: Prometheus metrics page (``[metrics]``).
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)

    def enabled_exchanges(self) -> dict[str, ExchangeConfig]:
        return {name: cfg for name, cfg in self.exchanges.items() if cfg.enabled}


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)

    def structure_data_type(value: Any, _: type) -> DataType:
        if isinstance(value, DataType):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a data type name, got {value!r}")
        return DataType.parse(value)

    converter.register_structure_hook(DataType, structure_data_type)

    # cattrs would happily turn "BTC-USDT" into ["B", "T", ...]: a list must be a list.
    def is_list(tp: Any) -> bool:
        return getattr(tp, "__origin__", None) is list

    def structure_list(value: Any, tp: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {type(value).__name__} {value!r}")
        return _structure_items(converter, value, tp)

    converter.register_structure_hook_func(is_list, structure_list)
    return converter


def _structure_items(converter: cattrs.Converter, value: list[Any] | tuple[Any, ...], tp: Any) -> list[Any]:
    (item_type,) = tp.__args__
    return [converter.structure(item, item_type) for item in value]


def _format_exception(exc: BaseException, tp: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, ValueError | TypeError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, tp)


_converter = _make_converter()


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Structure a mapping into :class:`Config`; raise :class:`ConfigError` naming each bad key."""
    try:
        return _converter.structure(dict(data), Config)
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        messages = cattrs.transform_error(exc, path="config", format_exception=_format_exception)
        raise ConfigError("; ".join(_tidy(m) for m in messages)) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def _tidy(message: str) -> str:
    # cattrs writes "... @ config.exchanges['binance'].symbols"; keep it, it is exactly the key path.
    return message


def load_config(source: Config | Mapping[str, Any] | str | os.PathLike[str]) -> Config:
    """A Config from a Config (returned as is), a mapping, or a TOML file path."""
    if isinstance(source, Config):
        return source
    if isinstance(source, Mapping):
        return config_from_dict(source)
    path = Path(source)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def unstructure_config(config: Config) -> dict[str, Any]:
    """The config as plain data (for display and round-trips)."""
    result: dict[str, Any] = _converter.unstructure(config)
    return result


def parse_sink_spec(spec: str) -> SinkConfig:
    """``NAME`` or ``NAME:TARGET`` (the CLI's ``--sink``) into a SinkConfig with ``{"target": TARGET}``."""
    name, sep, target = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"--sink {spec!r}: expected NAME or NAME:TARGET, e.g. jsonl:./out")
    options: dict[str, Any] = {"target": target} if sep else {}
    return SinkConfig(type=name, options=options)


def secret(name: str) -> str | None:
    """A secret from the environment only (never from config files)."""
    return os.environ.get(name)
