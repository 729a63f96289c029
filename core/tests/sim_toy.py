"""A minimal venue for the simulator's own tests: JSON frames ``{"stream": s, "data": {...}}``.

Streams are ``<SYMBOL>@<kind>`` with kind one of depth, trade, bookTicker, ticker, markPrice,
kline_<interval>. Connect at ``/ws`` (optionally ``?streams=a/b``); control messages are
``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}``, answered ``{"result": null, "id": n}``
or ``{"error": "...", "id": n}``. REST: ``/depth?symbol=&limit=``, ``/klines?symbol=&interval=``,
``/ticker?symbol=``, ``/ping``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from marketfeeder.models import DataType
from marketfeeder.sim.model import (
    SimBookTicker,
    SimDepth,
    SimEvent,
    SimKline,
    SimMarkPrice,
    SimTicker,
    SimTrade,
)
from marketfeeder.sim.venue import (
    HttpReply,
    HttpRequest,
    SimConnection,
    SimFrame,
    Venue,
    VenueRules,
    WsReject,
)

KINDS = ("depth", "trade", "bookTicker", "ticker", "markPrice", "kline_1s", "kline_1m")


def _ms(ns: int) -> int:
    return ns // 1_000_000


class ToyVenue(Venue):
    name: ClassVar[str] = "toy"
    rules: ClassVar[VenueRules] = VenueRules(ping_interval=None, max_streams=20)
    fault_paths: ClassVar[tuple[str, ...]] = ("/depth",)

    def _valid(self, stream: str) -> bool:
        symbol, _, kind = stream.partition("@")
        return kind in KINDS and any(i.symbol == symbol for i in self.market.instruments())

    def on_connect(self, conn: SimConnection) -> None:
        if conn.path != "/ws":
            raise WsReject(404, f"no such path {conn.path}")
        streams = [s for s in conn.query.get("streams", "").split("/") if s]
        bad = [s for s in streams if not self._valid(s)]
        if bad:
            raise WsReject(400, f"invalid streams {bad}")
        conn.streams.update(streams)

    def on_message(self, conn: SimConnection, text: str) -> list[str]:
        try:
            msg = orjson.loads(text)
            method, params, req_id = msg["method"], msg["params"], msg.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return ['{"error":"invalid request","id":null}']
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return [orjson.dumps({"error": f"unknown method {method}", "id": req_id}).decode()]
        bad = [s for s in params if not isinstance(s, str) or not self._valid(s)]
        if bad:
            return [orjson.dumps({"error": f"invalid streams {bad}", "id": req_id}).decode()]
        if method == "SUBSCRIBE":
            limit = self.rules.max_streams
            if limit is not None and len(conn.streams | set(params)) > limit:
                return [orjson.dumps({"error": f"too many streams (max {limit})", "id": req_id}).decode()]
            conn.streams.update(params)
        else:
            conn.streams.difference_update(params)
        return [orjson.dumps({"result": None, "id": req_id}).decode()]

    def encode(self, event: SimEvent, wanted: set[str]) -> list[SimFrame]:
        if isinstance(event, SimDepth):
            stream, dt = event.symbol + "@depth", DataType.ORDERBOOK
            data: dict[str, Any] = {
                "e": "depth",
                "E": _ms(event.time_ns),
                "s": event.symbol,
                "U": event.first_id,
                "u": event.last_id,
                "b": event.bids,
                "a": event.asks,
            }
        elif isinstance(event, SimTrade):
            stream, dt = event.symbol + "@trade", DataType.TRADES
            data = {
                "e": "trade",
                "E": _ms(event.time_ns),
                "s": event.symbol,
                "t": event.trade_id,
                "p": event.price,
                "q": event.size,
                "m": event.buyer_is_maker,
            }
        elif isinstance(event, SimBookTicker):
            stream, dt = event.symbol + "@bookTicker", DataType.BOOK_TICKER
            data = {
                "u": event.update_id,
                "s": event.symbol,
                "b": event.bid,
                "B": event.bid_size,
                "a": event.ask,
                "A": event.ask_size,
            }
        elif isinstance(event, SimTicker):
            stream, dt = event.symbol + "@ticker", DataType.TICKER
            data = {
                "e": "ticker",
                "E": _ms(event.time_ns),
                "s": event.symbol,
                "c": event.last,
                "v": event.volume,
                "n": event.trade_count,
            }
        elif isinstance(event, SimKline):
            stream, dt = f"{event.symbol}@kline_{event.interval}", DataType.KLINES
            data = {
                "e": "kline",
                "E": _ms(event.time_ns),
                "s": event.symbol,
                "t": _ms(event.open_ns),
                "o": event.open,
                "c": event.close,
                "v": event.volume,
                "n": event.trade_count,
                "x": event.closed,
            }
        elif isinstance(event, SimMarkPrice):
            stream, dt = event.symbol + "@markPrice", DataType.MARK_PRICE
            data = {"e": "markPrice", "E": _ms(event.time_ns), "s": event.symbol, "p": event.mark}
        else:  # pragma: no cover - every record type is handled above
            return []
        if stream not in wanted:
            return []
        return [SimFrame(stream, orjson.dumps(data).decode(), dt)]

    def wrap(self, conn: SimConnection, frame: SimFrame) -> str:
        return '{"stream":"' + frame.stream + '","data":' + frame.payload + "}"

    def shutdown_notice(self, now_ns: int) -> str | None:
        return orjson.dumps({"event": "serverShutdown", "E": _ms(now_ns)}).decode()

    def handle_http(self, request: HttpRequest) -> HttpReply:
        q = request.query
        body: Any
        try:
            if request.path == "/ping":
                return HttpReply(200, b"{}")
            if request.path == "/depth":
                snap = self.market.snapshot(q["symbol"], int(q.get("limit", "1000")))
                body = {"lastUpdateId": snap.last_id, "bids": snap.bids, "asks": snap.asks}
            elif request.path == "/klines":
                rows = self.market.klines(q["symbol"], q["interval"], None, None, int(q.get("limit", "500")))
                body = [
                    [_ms(k.open_ns), k.open, k.high, k.low, k.close, k.volume, k.trade_count] for k in rows
                ]
            elif request.path == "/ticker":
                t = self.market.ticker(q["symbol"])
                body = {"symbol": t.symbol, "last": t.last, "volume": t.volume, "count": t.trade_count}
            else:
                return HttpReply(404, b'{"error":"not found"}')
        except (KeyError, ValueError) as exc:
            return HttpReply(400, orjson.dumps({"error": str(exc)}))
        return HttpReply(200, orjson.dumps(body))
