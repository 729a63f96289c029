"""``jsonl`` sink: one JSON Lines file per data type (``trades.jsonl``, ``orderbook.jsonl``, ...).

Each line is one event: ``{"type": "<class name>", <every field>}`` with enums as their values,
book levels as ``[price, size]`` pairs and times as integer nanoseconds. Files are opened in append
mode. Writing happens in a worker thread (one at a time per sink), so the event loop never blocks
on the disk. Options:

``target`` (or ``path``)
    Directory for the files (created if missing). Required.
``fsync``
    ``"never"``, ``"batch"`` (after every batch; safest, slowest) or ``"close"`` (default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

import anyio
import anyio.to_thread
import attrs
import orjson

from marketfeeder.models import Event

__all__ = ["JsonlSink", "event_to_dict"]

FSYNC_POLICIES = ("never", "batch", "close")
_OPTIONS = {"target", "path", "fsync"}
_field_names: dict[type[Event], tuple[str, ...]] = {}


def _fields_of(cls: type[Event]) -> tuple[str, ...]:
    names = _field_names.get(cls)
    if names is None:
        names = _field_names[cls] = tuple(f.name for f in attrs.fields(cast(Any, cls)))
    return names


def event_to_dict(event: Event) -> dict[str, Any]:
    """The JSON object of one event (enums stay enums here; orjson writes their values)."""
    row: dict[str, Any] = {"type": event.__class__.__name__}
    for name in _fields_of(event.__class__):
        row[name] = getattr(event, name)
    return row


class JsonlSink:
    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"jsonl sink: unknown option(s) {', '.join(sorted(unknown))}; known: fsync, path, target")
        target = options.get("target") or options.get("path")
        if not target or not isinstance(target, str | os.PathLike):
            raise ValueError("jsonl sink: option 'target' (a directory) is required, e.g. --sink jsonl:./out")
        fsync = options.get("fsync", "close")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"jsonl sink: fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.directory = Path(target)
        self.fsync: str = fsync
        self._files: dict[str, IO[bytes]] = {}
        self._limiter = anyio.CapacityLimiter(1)
        self.written = 0
        self.is_open = False
        self.is_closed = False

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        self.is_open = True

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def write_batch(self, events: Sequence[Event]) -> None:
        if self.is_closed:
            raise RuntimeError("jsonl sink: write after close")
        # Serialize on the loop (orjson is fast); only the file I/O goes to the thread.
        chunks: dict[str, list[bytes]] = {}
        dumps = orjson.dumps
        for event in events:
            lines = chunks.get(event.data_type.value)
            if lines is None:
                lines = chunks[event.data_type.value] = []
            lines.append(dumps(event_to_dict(event)))
        if chunks:
            await anyio.to_thread.run_sync(self._write, chunks, limiter=self._limiter)
        self.written += len(events)

    def _file(self, name: str) -> IO[bytes]:
        handle = self._files.get(name)
        if handle is None:
            handle = self._files[name] = open(self.directory / f"{name}.jsonl", "ab")  # noqa: SIM115
        return handle

    def _write(self, chunks: dict[str, list[bytes]]) -> None:
        for name, lines in chunks.items():
            handle = self._file(name)
            handle.write(b"\n".join(lines))
            handle.write(b"\n")
            if self.fsync == "batch":
                handle.flush()
                os.fsync(handle.fileno())

    async def flush(self) -> None:
        await anyio.to_thread.run_sync(self._flush, False, limiter=self._limiter)

    def _flush(self, sync: bool) -> None:
        for handle in self._files.values():
            handle.flush()
            if sync:
                os.fsync(handle.fileno())

    async def close(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _close(self) -> None:
        try:
            self._flush(self.fsync != "never")
        finally:
            for handle in self._files.values():
                handle.close()
            self._files.clear()

    def files(self) -> list[Path]:
        """The files written so far."""
        return sorted(self.directory.glob("*.jsonl"))

    def statistics(self) -> dict[str, Any]:
        return {"written": self.written, "directory": str(self.directory), "files": len(self._files)}
