"""Helpers shared by the Backpack tests (fixture files, instrument table, a loopback HTTP server)."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson

from marketfeeder.models import Instrument, InstrumentTable, MarketKind
from marketfeeder.transport.server import HttpReply, HttpRequest

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture_json(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def recorded_lines() -> list[str]:
    return fixture_text("bbgo_backpack_ws_raw_first56lines.jsonl").splitlines()


def _instrument(native: str, tick: float = 0.01, step: float = 0.01) -> Instrument:
    parts = native.split("_")
    kind = MarketKind.PERP if parts[-1] == "PERP" else MarketKind.SPOT
    return Instrument(
        exchange="backpack",
        native=native,
        symbol=Instrument.normalized(parts[0], parts[1], kind),
        base=parts[0],
        quote=parts[1],
        tick_size=tick,
        step_size=step,
        status="Open",
        active=True,
        kind=kind,
    )


def make_table() -> InstrumentTable:
    """The markets named by the fixtures (the docs' examples use SOL_USD)."""
    natives = ["SOL_USDC", "SOL_USD", "ETH_USDC", "ETH_USDC_PERP", "BTC_USDC_PERP", "SOL_USDC_PERP"]
    return InstrumentTable("backpack", [_instrument(n) for n in natives])


Handler = Callable[[HttpRequest], HttpReply]


@asynccontextmanager
async def http_server(handler: Handler, seen: list[HttpRequest] | None = None) -> AsyncIterator[str]:
    """A minimal HTTP/1.1 server on 127.0.0.1 (one request per connection) serving ``handler``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            data = b""
            with anyio.fail_after(5):
                while b"\r\n\r\n" not in data:
                    data += await stream.receive(65536)
            method, target, _ = data.split(b"\r\n", 1)[0].decode().split(" ", 2)
            url = urllib.parse.urlsplit(target)
            request = HttpRequest(method, url.path, dict(urllib.parse.parse_qsl(url.query)), {})
            if seen is not None:
                seen.append(request)
            reply = handler(request)
            head = (
                f"HTTP/1.1 {reply.status} X\r\nContent-Type: {reply.content_type}\r\n"
                f"Content-Length: {len(reply.body)}\r\nConnection: close\r\n\r\n"
            )
            await stream.send(head.encode() + reply.body)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()
