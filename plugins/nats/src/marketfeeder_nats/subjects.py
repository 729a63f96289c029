"""Subject layout, sharding, streams and message ids of the bus.

Subjects are ``<prefix>.<exchange>.<shard>.<type>.<symbol>``. All events of one order book
(``BookSnapshot``, ``BookDelta``, ``BookState`` and order-book ``Gap``) share the ``orderbook``
subject of that book, so each book is one ordered, self-sufficient stream. Connection-wide events
(symbol ``""``) use the symbol token ``_``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from marketfeeder.models import DataType, Event, Gap

__all__ = [
    "DEFAULT_RETENTION",
    "TYPE_TOKENS",
    "msg_id",
    "shard_of",
    "stream_configs",
    "stream_name",
    "subject_token",
    "type_token",
]

#: Subject type tokens, one JetStream stream each.
TYPE_TOKENS: tuple[str, ...] = tuple(dt.value for dt in DataType)

#: Seconds each stream keeps messages unless configured otherwise: book data short, trades and
#: klines longer (a late consumer starts from the next periodic snapshot of each book).
DEFAULT_RETENTION: dict[str, float] = {
    "orderbook": 3600.0,
    "book_ticker": 3600.0,
    "ticker": 86400.0,
    "mark_price": 86400.0,
    "trades": 7 * 86400.0,
    "klines": 30 * 86400.0,
    "status": 7 * 86400.0,
    "signal": 7 * 86400.0,
}

_ORDERBOOK = DataType.ORDERBOOK
_STATUS = DataType.STATUS
_BAD = str.maketrans({".": "_", "*": "_", ">": "_", " ": "_", "\t": "_", "\r": "_", "\n": "_"})

#: Event classes whose ``seq`` identifies the event within (exchange, symbol, class).
_SEQ_IDENTIFIES = frozenset({"Trade", "BookDelta", "BookSnapshot", "BookTicker"})
_BOOK_CONTROL = frozenset({"BookState"})


def subject_token(text: str) -> str:
    """``text`` made safe as one subject token (no dots, wildcards or blanks; ``_`` when empty)."""
    return text.translate(_BAD) if text else "_"


def shard_of(exchange: str, symbol: str, shards: int) -> int:
    """Stable shard of a book: CRC-32 of ``exchange:symbol`` mod ``shards`` (same on every host)."""
    return zlib.crc32(f"{exchange}:{symbol}".encode()) % shards


def type_token(event: Event) -> str:
    """The subject type token of ``event`` (book control events go with their book)."""
    if isinstance(event, Gap):
        return event.gap_type.value
    if type(event).__name__ in _BOOK_CONTROL and event.symbol:
        return _ORDERBOOK.value
    return event.data_type.value


def stream_name(prefix: str, token: str) -> str:
    return f"{prefix}_{token.upper()}"


def stream_configs(
    *,
    stream_prefix: str,
    subject_prefix: str,
    retention: Mapping[str, float],
    replicas: int = 1,
    storage: str = "file",
    duplicate_window: float = 120.0,
    max_bytes: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """JetStream stream configurations, one per data type."""
    configs = []
    for token in TYPE_TOKENS:
        max_age = float(retention.get(token, DEFAULT_RETENTION[token]))
        configs.append(
            {
                "name": stream_name(stream_prefix, token),
                "subjects": [f"{subject_prefix}.*.*.{token}.*"],
                "retention": "limits",
                "storage": storage,
                "num_replicas": replicas,
                "max_age": int(max_age * 1e9),
                "max_bytes": int((max_bytes or {}).get(token, -1)),
                "discard": "old",
                "duplicate_window": int(min(duplicate_window, max_age) * 1e9),
            }
        )
    return configs


def msg_id(event: Event) -> str:
    """``Nats-Msg-Id`` of ``event``: from the exchange sequence where it identifies the event, so a
    republish or a second publisher of the same event is dropped by the stream's de-duplication."""
    name = type(event).__name__
    seq = event.seq
    if seq is not None and name in _SEQ_IDENTIFIES:
        key = f"s{seq}"
    elif name == "Kline":
        key = f"k{event.interval}:{event.open_ts}:{event.exchange_ts}:{int(event.closed)}"  # type: ignore[attr-defined]
    elif isinstance(event, Gap):
        key = f"g{event.gap_type.value}:{event.from_seq}:{event.to_seq}:{event.receive_ts}"
    elif event.exchange_ts is not None and event.data_type is not _STATUS:
        key = f"e{event.exchange_ts}:{seq}"
    else:
        key = f"r{event.receive_ts}:{seq}"
    return f"{event.exchange}:{event.symbol}:{name}:{key}"
