"""The ``csv`` sink: every event to CSV, one file per event type, in a target directory.

Each file (``Trade.csv``, ``BookTicker.csv``, ``Gap.csv``, ...) starts with a header naming the
event's fields in declaration order, after a ``type`` column. Cells: numbers as Python writes them
(``repr`` of a float reads back to the same float), ``None`` as an empty cell, enums as their value,
book levels as JSON ``[[price, size], ...]``. Files are opened in append mode, so a restarted run
adds to them (the header is written only into a new, empty file).

The runtime already batches and buffers (each sink sits behind its own bounded queue), so the sink
only writes. File I/O runs in a worker thread, one call at a time per sink, so the event loop never
blocks on the disk. Options:

``target`` (or ``path``)
    The directory (created if missing). Required; ``--sink csv:DIR`` passes it.
"""

from __future__ import annotations

import csv
import enum
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import attrs

from marketfeeder import Event

__all__ = ["CsvSink", "read_events"]

_OPTIONS = {"target", "path"}
_columns: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _columns.get(cls)
    if names is None:
        names = _columns[cls] = tuple(field.name for field in attrs.fields(cls))
    return names


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return json.dumps(value)
    return value


class CsvSink:
    """Implements :class:`marketfeeder.sinks.base.Sink` (open, write_batch, flush, close)."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"csv sink: unknown option(s) {', '.join(sorted(unknown))}; known: path, target")
        target = options.get("target") or options.get("path")
        if not target or not isinstance(target, str | os.PathLike):
            raise ValueError("csv sink: option 'target' (a directory) is required, e.g. --sink csv:./out")
        self.directory = Path(target)
        self.written = 0
        self._files: dict[str, tuple[IO[str], Any]] = {}  # event type -> (file, csv writer)
        # One worker-thread call at a time: the files are not shared between threads.
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False

    async def open(self) -> None:
        await anyio.to_thread.run_sync(lambda: self.directory.mkdir(parents=True, exist_ok=True),
                                       limiter=self._limiter)

    async def write_batch(self, events: Sequence[Event]) -> None:
        if self._closed:
            raise RuntimeError("csv sink: write after close")
        if not events:
            return
        # Rows are built on the loop (cheap); only the file writes go to the thread.
        rows: list[tuple[type, list[Any]]] = []
        for event in events:
            cls = type(event)
            rows.append((cls, [cls.__name__, *(_cell(getattr(event, name)) for name in _fields(cls))]))
        await anyio.to_thread.run_sync(self._write, rows, limiter=self._limiter)
        self.written += len(rows)

    def _write(self, rows: list[tuple[type, list[Any]]]) -> None:
        for cls, row in rows:
            entry = self._files.get(cls.__name__)
            if entry is None:
                entry = self._open_file(cls)
            entry[1].writerow(row)

    def _open_file(self, cls: type) -> tuple[IO[str], Any]:
        path = self.directory / f"{cls.__name__}.csv"
        handle = path.open("a", newline="", encoding="utf-8")
        writer = csv.writer(handle)
        if handle.tell() == 0:
            writer.writerow(["type", *_fields(cls)])
        entry = (handle, writer)
        self._files[cls.__name__] = entry
        return entry

    async def flush(self) -> None:
        await anyio.to_thread.run_sync(self._flush, limiter=self._limiter)

    def _flush(self) -> None:
        for handle, _ in self._files.values():
            handle.flush()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):  # the data must reach the disk even during cancellation
            await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _close(self) -> None:
        files, self._files = self._files, {}
        for handle, _ in files.values():
            handle.close()


def read_events(directory: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Every stored row as a dict of strings (``type`` plus the event's fields), ordered by receive
    time, then file order. For tests and quick looks; pandas or DuckDB read these files too."""
    rows: list[dict[str, str]] = []
    for path in sorted(Path(directory).glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows.extend(csv.DictReader(handle))
    rows.sort(key=lambda row: int(row["receive_ts"]))
    return rows
