"""``memory`` sink: the newest events in a bounded deque (tests, notebooks, small tools)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from marketfeeder.models import Event

__all__ = ["MemorySink"]

DEFAULT_MAXLEN = 100_000


class MemorySink:
    """Keeps the newest ``maxlen`` events (option ``maxlen``, default 100 000), oldest first."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        maxlen = options.pop("maxlen", DEFAULT_MAXLEN)
        if options:
            raise ValueError(f"memory sink: unknown option(s) {', '.join(sorted(options))}; known: maxlen")
        if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen <= 0:
            raise ValueError(f"memory sink: maxlen must be a positive integer, got {maxlen!r}")
        self.maxlen = maxlen
        self._events: deque[Event] = deque(maxlen=maxlen)
        self.received = 0
        self.flushes = 0
        self.is_open = False
        self.is_closed = False

    async def open(self) -> None:
        self.is_open = True

    async def write_batch(self, events: Sequence[Event]) -> None:
        if self.is_closed:
            raise RuntimeError("memory sink: write after close")
        self._events.extend(events)
        self.received += len(events)

    async def flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        self.is_closed = True

    def events(self) -> list[Event]:
        """Everything kept, oldest first."""
        return list(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def statistics(self) -> dict[str, Any]:
        return {"kept": len(self._events), "received": self.received, "maxlen": self.maxlen}
