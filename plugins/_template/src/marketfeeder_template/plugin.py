"""Hook implementations: the only module marketfeeder imports from this plugin (see the entry point)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from marketfeeder import hookimpl
from marketfeeder.models import Event, Trade
from marketfeeder.validators.base import ValidationContext, Verdict


class CsvTradeSink:
    """Appends trades to a CSV file. Options: ``target`` (file path)."""

    COLUMNS = ("exchange", "symbol", "exchange_ts", "receive_ts", "seq", "price", "size", "side")

    def __init__(self, options: Mapping[str, Any]) -> None:
        target = options.get("target") or options.get("path")
        if not target:
            raise ValueError("csv-trades sink: option 'target' (the CSV file path) is required")
        self.path = Path(str(target))
        self._rows: list[tuple[object, ...]] = []
        self._limiter = anyio.CapacityLimiter(1)

    async def open(self) -> None:
        def create() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                with self.path.open("w", newline="") as fh:
                    csv.writer(fh).writerow(self.COLUMNS)

        await anyio.to_thread.run_sync(create, limiter=self._limiter)

    async def write_batch(self, events: Sequence[Event]) -> None:
        self._rows.extend(
            (e.exchange, e.symbol, e.exchange_ts, e.receive_ts, e.seq, e.price, e.size, e.side.value)
            for e in events
            if isinstance(e, Trade)
        )

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return

        def append() -> None:
            with self.path.open("a", newline="") as fh:
                csv.writer(fh).writerows(rows)

        await anyio.to_thread.run_sync(append, limiter=self._limiter)

    async def close(self) -> None:
        await self.flush()


class MaxTradeSize:
    """Flags a trade larger than ``max_size`` (option, default 1000)."""

    name = "max_trade_size"
    event_types = (Trade,)

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.max_size = float(options.get("max_size", 1000.0))

    def check(self, event: Event, context: ValidationContext) -> Verdict | None:
        size = getattr(event, "size", None)
        if isinstance(size, float) and size > self.max_size:
            return Verdict(self.name, f"trade size {size} is above {self.max_size}")
        return None


@hookimpl
def marketfeeder_register_sinks(register: Callable[[str, Any], None]) -> None:
    register("csv-trades", CsvTradeSink)


@hookimpl
def marketfeeder_register_validators(register: Callable[[str, Any], None]) -> None:
    register("max_trade_size", MaxTradeSize)
