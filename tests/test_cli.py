"""The command line as a user runs it: real subprocesses, the simulator, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

FIXTURES = Path(__file__).parent / "fixtures"
CLI = [sys.executable, "-m", "marketfeeder"]


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_run_sim_streams_both_exchanges_and_exits_zero(tmp_path: Path) -> None:
    result = run_cli("run", "--sim", "--duration", "4", "--quiet", "--sink", f"jsonl:{tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = result.stdout
    assert "marketfeeder:" in summary
    for exchange in ("binance", "backpack"):
        lines = [line for line in summary.splitlines() if line.strip().startswith(f"{exchange}:")]
        assert lines, f"no {exchange} streams in summary:\n{summary}"
        assert all("book live" in line for line in lines), summary
        # every data type of the default config streamed on every symbol
        assert all("[ticker bbo book trades klines]" in line for line in lines), summary
    assert (tmp_path / "trades.jsonl").stat().st_size > 0
    assert "sink jsonl" in summary


def test_bad_flag_and_bad_value_exit_2_with_one_line() -> None:
    for args in (["run", "--bogus"], ["run", "--sim", "--data", "depth"], ["run", "--duration", "-1"]):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("marketfeeder: error: ")


def test_unknown_symbol_against_venue_is_reported_not_crashed() -> None:
    result = run_cli("run", "--exchange", "binance", "--symbol", "binance:btcusdt", "--sim", "--duration", "2")
    assert result.returncode == 2
    assert "not normalized" in result.stderr


def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[exchanges.binance]\nsymbols = ["BTC-USDT"]\n[[sinks]]\ntype = "memory"\n')
    result = run_cli("config", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[exchanges.nowhere]\nsymbols = ["BTC-USDT"]\n')
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert "exchanges.nowhere: no connector named 'nowhere'" in result.stderr


def test_sigterm_stops_cleanly_with_summary(tmp_path: Path) -> None:
    proc = subprocess.Popen([*CLI, "run", "--sim", "--quiet", "--sink", f"jsonl:{tmp_path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tmp_path / "trades.jsonl").exists():
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "marketfeeder:" in out
    written = sum(1 for _ in (tmp_path / "trades.jsonl").open())
    assert written > 0


def key_types(obj: Any) -> Any:
    """A payload's shape: keys with JSON types (nested), ignoring values."""
    if isinstance(obj, dict):
        return {k: key_types(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return ["list"]
    return type(obj).__name__


@pytest.fixture(scope="module")
def sim_serve() -> Any:
    proc = subprocess.Popen([*CLI, "sim", "serve", "--venue", "binance", "--venue", "backpack", "--seed", "3",
                             "--rate", "500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        endpoints = {}
        assert proc.stdout is not None
        for _ in range(2):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            info = json.loads(line)
            endpoints[info["venue"]] = info
        yield endpoints
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def collect(url: str, subscribe: dict[str, Any] | None, wanted: set[str], timeout: float = 20) -> dict[str, Any]:
    """Frames by stream name, from a plain `websockets` client (not ours)."""
    seen: dict[str, Any] = {}
    with connect(url, open_timeout=10) as ws:
        if subscribe is not None:
            ws.send(json.dumps(subscribe))
        deadline = time.monotonic() + timeout
        while wanted - set(seen) and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=timeout))
            if "stream" in message:
                seen.setdefault(message["stream"], message["data"])
    return seen


def test_sim_serve_binance_speaks_the_documented_protocol(sim_serve: dict[str, Any]) -> None:
    base = sim_serve["binance"]["ws_url"]
    streams = ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@depth@100ms", "btcusdt@ticker",
               "btcusdt@kline_1s"]
    with connect(f"{base}/stream", open_timeout=10) as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
        ack = json.loads(ws.recv(timeout=10))
        while "id" not in ack:
            ack = json.loads(ws.recv(timeout=10))
        assert ack == {"result": None, "id": 1}
    seen = collect(f"{base}/stream?streams={'/'.join(streams)}", None, set(streams))
    samples = {
        "btcusdt@trade": "binance_trade.json",
        "btcusdt@aggTrade": "binance_aggTrade.json",
        "btcusdt@bookTicker": "binance_bookTicker.json",
        "btcusdt@depth@100ms": "binance_depthUpdate.json",
        "btcusdt@ticker": "binance_ticker.json",
        "btcusdt@kline_1s": "binance_kline.json",
    }
    for stream, sample in samples.items():
        expected = key_types(json.loads((FIXTURES / sample).read_text()))
        assert stream in seen, f"no frame on {stream}"
        got = key_types(seen[stream])
        assert set(got) == set(expected), (stream, set(got) ^ set(expected))
        for key, kind in expected.items():
            if kind in ("str", "int", "bool"):
                assert got[key] == kind, (stream, key, got[key], kind)


def test_sim_serve_backpack_speaks_the_documented_protocol(sim_serve: dict[str, Any]) -> None:
    url = sim_serve["backpack"]["ws_url"]
    streams = ["trade.BTC_USDC", "bookTicker.BTC_USDC", "depth.BTC_USDC", "ticker.BTC_USDC", "kline.1s.BTC_USDC"]
    seen = collect(url, {"method": "SUBSCRIBE", "params": streams}, set(streams))
    samples = {
        "trade.BTC_USDC": "backpack_trade.json",
        "bookTicker.BTC_USDC": "backpack_bookTicker.json",
        "depth.BTC_USDC": "backpack_depth.json",
        "ticker.BTC_USDC": "backpack_ticker.json",
        "kline.1s.BTC_USDC": "backpack_kline.json",
    }
    for stream, sample in samples.items():
        expected = json.loads((FIXTURES / sample).read_text())
        assert stream in seen, f"no frame on {stream}"
        assert set(seen[stream]) == set(expected), (stream, set(seen[stream]) ^ set(expected))
