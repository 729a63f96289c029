"""Prometheus exposition of the feeder's stats (text format 0.0.4), served on ``GET /metrics``.

Turned on by ``[metrics] enabled = true`` (or ``marketfeeder run --metrics-port N``). The page is
rendered from :meth:`Feeder.get_performance_stats` when it is scraped, so the hot path pays nothing.
Names follow Prometheus conventions: a ``marketfeeder_`` prefix, base units (seconds), ``_total`` on
counters, labels for exchange, symbol, connection, check and sink.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.abc

__all__ = ["MetricsServer", "render_prometheus"]

log = logging.getLogger("marketfeeder.metrics")

_HELP: dict[str, tuple[str, str]] = {
    "marketfeeder_messages_total": ("counter", "Events received per stream."),
    "marketfeeder_errors_total": ("counter", "Validation failures and callback errors per stream."),
    "marketfeeder_messages_per_second": ("gauge", "Recent event rate per stream."),
    "marketfeeder_latency_seconds": ("summary", "Latency per stream and stage (exchange_to_receive, receive_to_delivered)."),
    "marketfeeder_latency_max_seconds": ("gauge", "Largest latency seen per stream and stage."),
    "marketfeeder_gaps_total": ("counter", "Sequence gaps per stream."),
    "marketfeeder_resyncs_total": ("counter", "Order-book resynchronisations per stream."),
    "marketfeeder_dropped_total": ("counter", "Events dropped by backpressure per stream."),
    "marketfeeder_validation_failures_total": ("counter", "Validation failures per stream and check."),
    "marketfeeder_book_state": ("gauge", "1 for the current state of each local order book."),
    "marketfeeder_connection_up": ("gauge", "1 while the connection is open."),
    "marketfeeder_connection_messages_total": ("counter", "Frames received per connection."),
    "marketfeeder_connection_decode_errors_total": ("counter", "Malformed frames per connection."),
    "marketfeeder_connection_reconnects_total": ("counter", "Reconnects per connection."),
    "marketfeeder_connection_rotations_total": ("counter", "Planned rotations per connection."),
    "marketfeeder_sink_written_total": ("counter", "Events written per sink."),
    "marketfeeder_sink_lag": ("gauge", "Events waiting to be written per sink."),
    "marketfeeder_sink_failed": ("gauge", "1 when the sink stopped after an error."),
}

BOOK_STATES = ("syncing", "live", "resyncing", "stale")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items()) + "}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


class _Page:
    def __init__(self) -> None:
        self.samples: dict[str, list[str]] = {}

    def add(self, name: str, labels: Mapping[str, str], value: Any, *, family: str | None = None) -> None:
        number = _number(value)
        if number is None:
            return
        self.samples.setdefault(family or name, []).append(f"{name}{_labels(labels)} {number!r}")

    def render(self) -> str:
        lines: list[str] = []
        for family, samples in self.samples.items():
            kind, help_text = _HELP[family]
            lines.append(f"# HELP {family} {help_text}")
            lines.append(f"# TYPE {family} {kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"


def _streams(stats: Mapping[str, Any]) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
    for key, row in stats.items():
        if ":" in key and isinstance(row, Mapping):
            exchange, _, symbol = key.partition(":")
            yield exchange, symbol, row


def render_prometheus(stats: Mapping[str, Any]) -> str:
    """The stats dict of ``get_performance_stats()`` as Prometheus text."""
    page = _Page()
    for exchange, symbol, row in _streams(stats):
        labels = {"exchange": exchange, "symbol": symbol}
        page.add("marketfeeder_messages_total", labels, row.get("message_count"))
        page.add("marketfeeder_errors_total", labels, row.get("error_count"))
        page.add("marketfeeder_messages_per_second", labels, row.get("msgs_per_s"))
        page.add("marketfeeder_gaps_total", labels, row.get("gaps"))
        page.add("marketfeeder_resyncs_total", labels, row.get("resyncs"))
        page.add("marketfeeder_dropped_total", labels, row.get("dropped_by_backpressure"))
        for check, count in (row.get("validation_failures") or {}).items():
            page.add("marketfeeder_validation_failures_total", {**labels, "check": check}, count)
        for stage, summary in (row.get("latency_ms") or {}).items():
            if not isinstance(summary, Mapping) or not summary.get("count"):
                continue
            stage_labels = {**labels, "stage": stage}
            family = "marketfeeder_latency_seconds"
            for quantile, key in (("0.5", "p50"), ("0.99", "p99")):
                value = summary.get(key)
                if value is not None:
                    page.add(family, {**stage_labels, "quantile": quantile}, value / 1e3, family=family)
            count = summary.get("count")
            average = summary.get("avg")
            if count is not None and average is not None:
                page.add(f"{family}_sum", stage_labels, average * count / 1e3, family=family)
                page.add(f"{family}_count", stage_labels, count, family=family)
            if summary.get("max") is not None:
                page.add("marketfeeder_latency_max_seconds", stage_labels, summary["max"] / 1e3)
        state = row.get("book_state")
        if state:
            for name in BOOK_STATES:
                page.add("marketfeeder_book_state", {**labels, "state": name}, 1 if state == name else 0)
    for connection, row in (stats.get("connections") or {}).items():
        if not isinstance(row, Mapping):
            continue
        labels = {"connection": str(connection), "exchange": str(connection).partition("#")[0]}
        page.add("marketfeeder_connection_up", labels, bool(row.get("connected")))
        page.add("marketfeeder_connection_messages_total", labels, row.get("message_count"))
        page.add("marketfeeder_connection_decode_errors_total", labels, row.get("decode_errors"))
        page.add("marketfeeder_connection_reconnects_total", labels, row.get("reconnects"))
        page.add("marketfeeder_connection_rotations_total", labels, row.get("rotations"))
    for sink, row in (stats.get("sinks") or {}).items():
        if not isinstance(row, Mapping):
            continue
        labels = {"sink": str(sink)}
        page.add("marketfeeder_sink_written_total", labels, row.get("written"))
        page.add("marketfeeder_sink_lag", labels, row.get("lag"))
        page.add("marketfeeder_sink_failed", labels, bool(row.get("failed")))
    return page.render()


class MetricsServer:
    """A minimal HTTP/1.1 responder for ``GET /metrics`` (one request per connection)."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]], *, host: str = "127.0.0.1", port: int = 9464) -> None:
        self.stats = stats
        self.host = host
        self.port = port
        self.requests = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener:
            sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
            self.port = int(sockname[1])
            log.info("metrics on http://%s:%d/metrics", self.host, self.port)
            task_status.started(self.port)
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            request = b""
            with anyio.move_on_after(5.0):
                while b"\r\n\r\n" not in request and len(request) < 16384:
                    try:
                        request += await stream.receive(4096)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            if len(parts) < 2 or parts[0] != "GET":
                await self._reply(stream, 405, "text/plain", b"only GET /metrics\n")
            elif parts[1].split("?")[0] != "/metrics":
                await self._reply(stream, 404, "text/plain", b"see /metrics\n")
            else:
                self.requests += 1
                body = render_prometheus(self.stats()).encode()
                await self._reply(stream, 200, "text/plain; version=0.0.4; charset=utf-8", body)

    @staticmethod
    async def _reply(stream: anyio.abc.ByteStream, status: int, content_type: str, body: bytes) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with anyio.move_on_after(5.0):
            try:
                await stream.send(head + body)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
