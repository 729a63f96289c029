"""A tiny exchange for runtime tests: a connector and a fake venue on :class:`LoopbackServer`.

Wire protocol (JSON text):

* connect to ``<ws_url>/ws``; subscribe with ``{"method": "SUBSCRIBE", "params": [...], "id": N}``,
  answered by ``{"result": null, "id": N}`` (or ``{"error": {"code": 2, "msg": ...}, "id": N}`` for
  an unknown stream);
* stream names ``<native lower>@trade|depth|ticker``;
* ``{"e": "trade", "s": "BTCUSD", "E": ms, "t": id, "p": "1.5", "q": "2", "m": true}``,
  ``{"e": "depth", "s": ..., "E": ms, "U": first, "u": last, "b": [[p, q]], "a": [[p, q]]}``,
  ``{"e": "ticker", "s": ..., "E": ms, "c": "100.5", "v": "10"}``, ``{"e": "shutdown", "E": ms}``;
* REST ``GET /instruments`` and ``GET /depth?symbol=BTCUSD&limit=N`` (``lastUpdateId``, ``bids``, ``asks``).

The venue keeps one book per symbol and one update-id sequence shared by every connection, so a
client can sync a book from any connection. Faults are switched on by the tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import anyio
import orjson

from marketfeeder.connector import (
    ConnectionLimits,
    Connector,
    ControlError,
    ControlMessage,
    DecodeError,
    ServerShutdown,
    SubscribeAck,
    UnhandledMessage,
)
from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    DataType,
    Event,
    Instrument,
    InstrumentTable,
    Side,
    Ticker,
    Trade,
)
from marketfeeder.sequence import SequencePolicy
from marketfeeder.transport.server import HttpReply, HttpRequest, LoopbackServer, ServerWebSocket

KINDS = {DataType.TRADES: "trade", DataType.ORDERBOOK: "depth", DataType.TICKER: "ticker"}
BUY, SELL = Side.BUY, Side.SELL
MS = 1_000_000


class ToyConnector(Connector):
    name: ClassVar[str] = "toy"
    default_ws_url: ClassVar[str] = "ws://127.0.0.1:9"
    default_rest_url: ClassVar[str] = "http://127.0.0.1:9"
    limits: ClassVar[ConnectionLimits] = ConnectionLimits(max_streams_per_connection=50, subscribe_timeout=2.0)
    sequence_policy: ClassVar[SequencePolicy] = SequencePolicy(snapshot_retry_delay=0.05, default_depth_limit=50)
    supported_data_types: ClassVar[frozenset[DataType]] = frozenset(KINDS)

    async def load_instruments(self) -> InstrumentTable:
        rows = await self.http.get_json(f"{self.rest_url}/instruments")
        table = InstrumentTable(self.name)
        for row in rows:
            table.add(
                Instrument(
                    exchange=self.name,
                    native=row["symbol"],
                    symbol=Instrument.normalized(row["base"], row["quote"]),
                    base=row["base"],
                    quote=row["quote"],
                    tick_size=float(row["tick"]),
                    step_size=float(row["step"]),
                    status=row["status"],
                    active=row["status"] == "TRADING",
                )
            )
        self.instruments = table
        return table

    def streams_for(self, instrument: Instrument, data_type: DataType) -> list[str]:
        kind = KINDS.get(data_type)
        if kind is None:
            raise ValueError(f"toy does not offer {data_type.value}")
        return [f"{instrument.native.lower()}@{kind}"]

    def connection_url(self, streams: Sequence[str]) -> str:
        return f"{self.ws_url}/ws"

    def subscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        return orjson.dumps({"method": "SUBSCRIBE", "params": list(streams), "id": request_id}).decode()

    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> str:
        return orjson.dumps({"method": "UNSUBSCRIBE", "params": list(streams), "id": request_id}).decode()

    def decode(self, frame: str | bytes, receive_ts: int) -> list[Event | ControlMessage]:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise DecodeError("expected a JSON object")
        try:
            kind = msg.get("e")
            if kind is None:
                if "error" in msg:
                    err = msg["error"]
                    return [ControlError(msg.get("id"), err.get("code"), err.get("msg", ""))]
                if "result" in msg:
                    return [SubscribeAck(msg.get("id"), msg["result"])]
                raise UnhandledMessage(f"unknown message {frame!r:.80}")
            if kind == "shutdown":
                return [ServerShutdown(msg["E"] * MS)]
            symbol = self.instruments.to_symbol(msg["s"])
            ts = msg["E"] * MS
            if kind == "trade":
                return [Trade.fast("toy", symbol, ts, receive_ts, msg["t"], float(msg["p"]), float(msg["q"]),
                                   SELL if msg["m"] else BUY, ts)]
            if kind == "depth":
                return [BookDelta.fast("toy", symbol, ts, receive_ts, msg["u"], msg["U"],
                                       tuple((float(p), float(q)) for p, q in msg["b"]),
                                       tuple((float(p), float(q)) for p, q in msg["a"]), None)]
            if kind == "ticker":
                last = float(msg["c"])
                return [Ticker.fast("toy", symbol, ts, receive_ts, None, last, None, None, None, None, None, None,
                                    None, float(msg["v"]), None, None, None, None, None)]
        except (LookupError, TypeError, ValueError) as exc:
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"bad {msg.get('e')!r} message: {type(exc).__name__}: {exc}") from None
        raise UnhandledMessage(f"unknown event type {kind!r}")

    async def fetch_snapshot(self, instrument: Instrument, limit: int) -> BookSnapshot:
        from marketfeeder.clock import now_ns

        data = await self.http.get_json(f"{self.rest_url}/depth", {"symbol": instrument.native, "limit": limit})
        return BookSnapshot.fast(
            "toy", instrument.symbol, None, now_ns(), data["lastUpdateId"],
            tuple((float(p), float(q)) for p, q in data["bids"]),
            tuple((float(p), float(q)) for p, q in data["asks"]),
        )


class _Market:
    """One symbol's book and counters on the venue."""

    def __init__(self, native: str) -> None:
        self.native = native
        self.update_id = 1000
        self.trade_id = 0
        self.bids = {99.0 - i: 1.0 + i for i in range(5)}
        self.asks = {101.0 + i: 1.0 + i for i in range(5)}
        self.skip_next = 0

    def depth_update(self) -> dict[str, Any]:
        self.update_id += 1 + self.skip_next
        self.skip_next = 0
        u = self.update_id
        bid_price, ask_price = 99.0 - (u % 5), 101.0 + (u % 5)
        bid_size, ask_size = float(u % 4), float((u + 1) % 4)
        for side, price, size in ((self.bids, bid_price, bid_size), (self.asks, ask_price, ask_size)):
            if size == 0.0:
                side.pop(price, None)
            else:
                side[price] = size
        return {"e": "depth", "s": self.native, "U": u, "u": u,
                "b": [[str(bid_price), str(bid_size)]], "a": [[str(ask_price), str(ask_size)]]}

    def snapshot(self, limit: int) -> dict[str, Any]:
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return {"lastUpdateId": self.update_id, "bids": [[str(p), str(q)] for p, q in bids],
                "asks": [[str(p), str(q)] for p, q in asks]}


class _Client:
    def __init__(self, ws: ServerWebSocket) -> None:
        self.ws = ws
        self.streams: set[str] = set()
        self.stalled = False


class ToyExchange:
    """``async with ToyExchange() as venue:`` then point a ToyConnector at ``venue.ws_url``/``venue.http_url``.

    ``intervals`` maps a stream name (or a kind: ``trade``, ``depth``, ``ticker``) to seconds
    between its messages.
    """

    def __init__(
        self,
        symbols: Sequence[tuple[str, str, str]] = (("BTCUSD", "BTC", "USD"), ("ETHUSD", "ETH", "USD")),
        *,
        intervals: dict[str, float] | None = None,
        halted: Sequence[str] = ("DOGEUSD",),
    ) -> None:
        self.instruments = [
            {"symbol": native, "base": base, "quote": quote, "tick": "0.01", "step": "0.001", "status": "TRADING"}
            for native, base, quote in symbols
        ]
        self.instruments += [
            {"symbol": native, "base": native[:-3], "quote": "USD", "tick": "0.01", "step": "0.001", "status": "HALT"}
            for native in halted
        ]
        self.markets = {native: _Market(native) for native, _, _ in symbols}
        self.intervals = {"trade": 0.01, "depth": 0.01, "ticker": 0.05, **(intervals or {})}
        self.clients: list[_Client] = []
        self.connections = 0
        self.subscribe_requests: list[list[str]] = []
        self.snapshot_requests = 0
        self.duplicate_frames = False
        self.refuse_snapshots = False
        self.errors_without_id = False
        self.refuse_connections = False
        self.refused = 0
        self.refused_at: list[float] = []
        self._server: LoopbackServer | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def ws_url(self) -> str:
        assert self._server is not None
        return self._server.ws_url

    @property
    def http_url(self) -> str:
        assert self._server is not None
        return self._server.http_url

    def exchange_config(self, symbols: Sequence[str] = ("BTC-USD", "ETH-USD"),
                        data_types: Sequence[str] = ("trades", "orderbook", "ticker")) -> dict[str, Any]:
        return {"ws_url": self.ws_url, "rest_url": self.http_url, "symbols": list(symbols),
                "data_types": list(data_types)}

    async def __aenter__(self) -> ToyExchange:
        self._server = LoopbackServer(ws_handler=self._ws_handler, http_handler=self._http_handler,
                                      ws_accept=self._ws_accept)
        await self._server.__aenter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for native in self.markets:
            for kind in ("trade", "depth", "ticker"):
                self._tg.start_soon(self._pump, native, kind)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None and self._server is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        await self._server.__aexit__(None, None, None)

    # --- faults ----------------------------------------------------------------------------------

    def stall(self) -> None:
        """Current connections stop receiving data (they stay open); new ones are served."""
        for client in self.clients:
            client.stalled = True

    def skip_depth(self, native: str, count: int = 3) -> None:
        """The next depth update of ``native`` skips ``count`` update ids (a gap)."""
        self.markets[native].skip_next = count

    async def broadcast_raw(self, text: str) -> None:
        for client in list(self.clients):
            if not client.stalled:
                await client.ws.send(text)

    async def drop_all(self) -> None:
        for client in list(self.clients):
            await client.ws.abort()

    # --- server side ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return time.time_ns() // MS

    async def _pump(self, native: str, kind: str) -> None:
        market = self.markets[native]
        stream = f"{native.lower()}@{kind}"
        while True:
            await anyio.sleep(self.intervals.get(stream, self.intervals[kind]))
            if kind == "depth":
                payload = market.depth_update()
            elif kind == "trade":
                market.trade_id += 1
                payload = {"e": "trade", "s": native, "t": market.trade_id, "p": "100.5", "q": "0.25",
                           "m": market.trade_id % 2 == 0}
            else:
                payload = {"e": "ticker", "s": native, "c": "100.5", "v": "12.5"}
            payload["E"] = self._now_ms()
            text = orjson.dumps(payload).decode()
            for client in list(self.clients):
                if stream in client.streams and not client.stalled:
                    try:
                        await client.ws.send(text)
                        if self.duplicate_frames:
                            await client.ws.send(text)
                    except Exception:
                        client.streams.clear()

    async def _ws_handler(self, ws: ServerWebSocket) -> None:
        client = _Client(ws)
        self.connections += 1
        self.clients.append(client)
        # "@quiet" streams are accepted but never carry anything (a silent subscription).
        known = {f"{m.lower()}@{k}" for m in self.markets for k in ("trade", "depth", "ticker", "quiet")}
        try:
            while True:
                request = orjson.loads(await ws.receive())
                streams = request.get("params", [])
                if request.get("method") == "SUBSCRIBE":
                    self.subscribe_requests.append(streams)
                    bad = [s for s in streams if s not in known]
                    if bad:
                        request_id = None if self.errors_without_id else request.get("id")
                        await ws.send(orjson.dumps({"error": {"code": 2, "msg": f"invalid stream {bad[0]}"},
                                                    "id": request_id}).decode())
                        continue
                    client.streams.update(streams)
                else:
                    client.streams.difference_update(streams)
                await ws.send(orjson.dumps({"result": None, "id": request.get("id")}).decode())
        finally:
            self.clients.remove(client)

    def _ws_accept(self, request: HttpRequest) -> HttpReply | None:
        if self.refuse_connections:
            self.refused += 1
            self.refused_at.append(time.monotonic())
            return HttpReply(503, b'{"msg":"try later"}')
        return None

    def _http_handler(self, request: HttpRequest) -> HttpReply:
        if request.path == "/instruments":
            return HttpReply(200, orjson.dumps(self.instruments))
        if request.path == "/depth":
            self.snapshot_requests += 1
            if self.refuse_snapshots:
                return HttpReply(400, b'{"msg":"refused"}')
            market = self.markets.get(request.query.get("symbol", ""))
            if market is None:
                return HttpReply(400, b'{"msg":"unknown symbol"}')
            return HttpReply(200, orjson.dumps(market.snapshot(int(request.query.get("limit", "50")))))
        return HttpReply(404, b'{"msg":"not found"}')
