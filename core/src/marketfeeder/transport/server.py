"""A small loopback WebSocket + HTTP server on anyio (websockets' Sans-I/O protocol).

Used by the simulator and by tests; it binds to loopback only. One port serves both WebSocket
upgrades and plain HTTP requests (one request per connection, ``Connection: close``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["HttpReply", "HttpRequest"]


@attrs.frozen
class HttpRequest:
    method: str
    path: str  # without the query string
    query: Mapping[str, str]
    headers: Mapping[str, str]


@attrs.frozen
class HttpReply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = attrs.field(factory=dict)
