"""Configuration: TOML and dict forms, and errors that name the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketfeeder.config import Config, ConfigError, load_config, parse_sink_spec, unstructure_config
from marketfeeder.models import DataType

GOOD = """
buffer_size = 500
sync_tolerance_ms = 50
enable_validation = true

[exchanges.binance]
symbols = ["BTC-USDT", "ETH-USDT"]
data_types = ["ticker", "orderbook"]
ws_url = "ws://127.0.0.1:9000"

[exchanges.backpack]
enabled = false
symbols = ["SOL-USDC"]

[[sinks]]
type = "jsonl"
options = { target = "./out" }
overflow = "drop_oldest"

[validation]
policy = "quarantine"
"""


def test_toml_file_and_dict_give_the_same_config(tmp_path: Path) -> None:
    path = tmp_path / "feeder.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.buffer_size == 500
    assert config.exchanges["binance"].data_types == [DataType.TICKER, DataType.ORDERBOOK]
    assert config.exchanges["binance"].ws_url == "ws://127.0.0.1:9000"
    assert list(config.enabled_exchanges()) == ["binance"]
    assert config.sinks[0].type == "jsonl"
    assert config.sinks[0].overflow == "drop_oldest"
    assert config.validation.policy == "quarantine"
    assert load_config(unstructure_config(config)) == config
    assert load_config(config) is config


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"exchanges": {"binance": {"symbols": "BTC-USDT"}}}, r"expected a list.*exchanges\['binance'\]\.symbols"),
        ({"exchanges": {"binance": {"symbols": ["btcusdt"]}}}, r"'btcusdt' is not normalized"),
        ({"buffer_size": 0}, r"buffer_size must be positive"),
        ({"bufer_size": 10}, r"extra fields found \(bufer_size\)"),
        ({"exchanges": {"binance": {"data_types": ["tick"]}}}, r"unknown data type 'tick'.*data_types"),
        ({"sinks": [{"options": {}}]}, r"required key missing @ config\.sinks.*type"),
        ({"sinks": [{"type": "jsonl", "overflow": "explode"}]}, r"sinks"),
        ({"validation": {"policy": "ignore"}}, r"validation\.policy"),
        ({"runtime": {"shutdown_timeout": -1}}, r"shutdown_timeout must be positive"),
    ],
)
def test_errors_name_the_key_and_the_reason(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(data)


def test_bad_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("buffer_size = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")


def test_sink_spec() -> None:
    assert parse_sink_spec("jsonl:./out").options == {"target": "./out"}
    assert parse_sink_spec("memory").options == {}
    assert parse_sink_spec("duckdb:C:/x.duckdb").options == {"target": "C:/x.duckdb"}
    with pytest.raises(ConfigError, match="NAME or NAME:TARGET"):
        parse_sink_spec(":x")


def test_defaults_are_usable() -> None:
    config = Config()
    assert config.exchanges == {}
    assert config.runtime.shutdown_timeout > 0
