"""Prometheus metrics and structured logs: parsed by real parsers, secrets never printed."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time

import httpx
import pytest

from marketfeeder.logs import JsonFormatter, RedactingFilter, configure_logging, secret_values
from marketfeeder.metrics import render_prometheus

parser = pytest.importorskip("prometheus_client.parser")

STATS = {
    "binance:BTC-USDT": {
        "message_count": 10, "error_count": 1, "msgs_per_s": 2.5, "gaps": 1, "resyncs": 1,
        "dropped_by_backpressure": 0, "validation_failures": {"spread": 1}, "book_state": "live",
        "latency_ms": {"exchange_to_receive": {"count": 10, "avg": 2.0, "p50": 1.5, "p99": 9.0, "max": 12.0},
                       "receive_to_delivered": {"count": 0, "avg": None, "p50": None, "p99": None, "max": None}},
    },
    "connections": {"binance#0": {"connected": True, "message_count": 10, "decode_errors": 2, "reconnects": 1, "rotations": 0}},
    "sinks": {"jsonl": {"written": 9, "lag": 1, "failed": False}},
    "callbacks": [],
}


def families(text: str) -> dict[str, object]:
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def test_render_parses_with_prometheus_parser() -> None:
    parsed = families(render_prometheus(STATS))
    messages = parsed["marketfeeder_messages"]
    (sample,) = messages.samples  # type: ignore[attr-defined]
    assert sample.labels == {"exchange": "binance", "symbol": "BTC-USDT"}
    assert sample.value == 10
    latency = {(s.name, s.labels.get("quantile")): s.value for s in parsed["marketfeeder_latency_seconds"].samples}  # type: ignore[attr-defined]
    assert latency[("marketfeeder_latency_seconds", "0.99")] == pytest.approx(0.009)
    assert latency[("marketfeeder_latency_seconds_count", None)] == 10
    states = {s.labels["state"]: s.value for s in parsed["marketfeeder_book_state"].samples}  # type: ignore[attr-defined]
    assert states == {"syncing": 0, "live": 1, "resyncing": 0, "stale": 0}
    failures = parsed["marketfeeder_validation_failures"].samples  # type: ignore[attr-defined]
    assert failures[0].labels["check"] == "spread"
    assert parsed["marketfeeder_connection_decode_errors"].samples[0].value == 2  # type: ignore[attr-defined]
    assert parsed["marketfeeder_sink_lag"].samples[0].labels == {"sink": "jsonl"}  # type: ignore[attr-defined]


def test_label_values_are_escaped() -> None:
    text = render_prometheus({'we"ird:A\\B': {"message_count": 1}})
    (family,) = parser.text_string_to_metric_families(text)
    assert family.samples[0].labels["exchange"] == 'we"ird'


def test_run_serves_metrics_for_both_exchanges() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketfeeder", "run", "--sim", "--duration", "8", "--quiet", "--metrics-port", "0",
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            record = json.loads(line)  # every log line is one JSON object
            match = re.search(r"metrics on (http://\S+)", record["message"])
            if match:
                url = match.group(1)
        assert url, "no metrics line in the logs"
        time.sleep(2.5)
        text = httpx.get(url, timeout=10).text
        assert httpx.get(url.replace("/metrics", "/nope"), timeout=10).status_code == 404
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    parsed = families(text)
    exchanges = {s.labels["exchange"] for s in parsed["marketfeeder_messages"].samples}  # type: ignore[attr-defined]
    assert exchanges == {"binance", "backpack"}
    assert all(s.value > 0 for s in parsed["marketfeeder_messages"].samples)  # type: ignore[attr-defined]
    assert {s.labels["state"] for s in parsed["marketfeeder_book_state"].samples if s.value == 1} == {"live"}  # type: ignore[attr-defined]


def test_json_logs_redact_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_SECRET", "s3cr3t-value-123")
    stream = io.StringIO()
    handler = configure_logging(fmt="json", stream=stream)
    try:
        log = logging.getLogger("marketfeeder.test")
        log.info("signing with %s", "s3cr3t-value-123")
        log.warning("request failed: api_key=abcdef123456&symbol=BTCUSDT", extra={"exchange": "binance"})
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "signing with ***"
    assert lines[1]["message"] == "request failed: api_key=***&symbol=BTCUSDT"
    assert lines[1]["exchange"] == "binance"
    assert lines[1]["level"] == "warning"
    assert "s3cr3t" not in stream.getvalue()


def test_secret_values_only_from_secret_names() -> None:
    env = {"MY_TOKEN": "abcdefgh", "HOME": "/root", "SHORT_KEY_SECRET": "x", "DB_PASSWORD": "hunter22"}
    assert sorted(secret_values(env)) == ["abcdefgh", "hunter22"]
    assert RedactingFilter(["abc"]).redact('{"token": "zzz", "a": 1}') == '{"token": "***", "a": 1}'


def test_credentials_in_urls_are_redacted() -> None:
    redact = RedactingFilter([]).redact
    assert redact("connecting to nats://feeder:pa%40ss@10.0.0.5:4222") == "connecting to nats://***@10.0.0.5:4222"
    assert redact("tls://s3cr3tToken@h:4222 and http://example.com/a@b") == "tls://***@h:4222 and http://example.com/a@b"


def test_json_formatter_keeps_exceptions() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    record.exc_text = "Traceback: ..."
    assert json.loads(JsonFormatter().format(record))["exception"] == "Traceback: ..."
    with pytest.raises(ValueError, match="log format"):
        configure_logging(fmt="xml")
