"""Test helpers: reading back what the sink stored, and consumer feeders with a positioned test sink."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from marketfeeder.hookspecs import hookimpl
from marketfeeder.models import BusCheckpoint, Event
from marketfeeder.plugins import PluginManager, get_plugin_manager
from marketfeeder.runtime.feeder import Feeder
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.codec import decode_event
from marketfeeder_nats.jetstream import JetStream, JetStreamError
from marketfeeder_nats.source import NatsSource
from marketfeeder_nats.subjects import TYPE_TOKENS, stream_name


def unique_prefixes() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"stream_prefix": f"T{tag}".upper(), "subject_prefix": f"t{tag}"}


async def read_stream(url: str, stream: str) -> list[tuple[int, str, dict[str, str], Event]]:
    """(stream seq, subject, headers, event) of every message still in ``stream``."""
    out: list[tuple[int, str, dict[str, str], Event]] = []
    async with NatsClient(url) as nc:
        js = JetStream(nc)
        info = await js.stream_info(stream)
        if info is None:
            return out
        state = info["state"]
        for seq in range(int(state["first_seq"]), int(state["last_seq"]) + 1):
            try:
                data = await js.api(f"STREAM.MSG.GET.{stream}", {"seq": seq})
            except JetStreamError:
                continue  # deleted
            msg: dict[str, Any] = data["message"]
            headers: dict[str, str] = {}
            if msg.get("hdrs"):
                from marketfeeder_nats.client import parse_headers

                headers = parse_headers(base64.b64decode(msg["hdrs"]))[0]
            out.append((seq, msg["subject"], headers, decode_event(base64.b64decode(msg.get("data") or ""))))
    return out


async def read_all(url: str, stream_prefix: str) -> list[Event]:
    """Every stored event of every data-type stream, in receive_ts order (stable per stream)."""
    rows: list[tuple[int, int, Event]] = []
    for index, token in enumerate(TYPE_TOKENS):
        for seq, _subject, _headers, event in await read_stream(url, stream_name(stream_prefix, token)):
            rows.append((index, seq, event))
    events = [event for _i, _s, event in rows]
    order = {id(e): n for n, e in enumerate(events)}
    return sorted(events, key=lambda e: (e.receive_ts, order[id(e)]))


# --- a consumer feeder --------------------------------------------------------------------------------


class Ledger:
    """The "database" behind :class:`LedgerSink`: it outlives feeders, as a file would."""

    def __init__(self) -> None:
        self.committed: list[Event] = []
        self.positions: dict[tuple[str, str], dict[str, int]] = {}
        #: While set, writes are lost (the process died before its next commit).
        self.frozen = False

    def events(self) -> list[Event]:
        return [e for e in self.committed if not isinstance(e, BusCheckpoint)]


LEDGERS: dict[str, Ledger] = {}


class LedgerSink:
    """A positioned sink for the tests: commits the events before each BusCheckpoint together with
    its position, as one transaction would, and answers ``bus_positions`` from what it committed."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.ledger = LEDGERS.setdefault(str(options["ledger"]), Ledger())
        self._pending: list[Event] = []

    async def open(self) -> None:
        pass

    async def write_batch(self, events: Sequence[Event]) -> None:
        ledger = self.ledger
        if ledger.frozen:
            return
        for event in events:
            self._pending.append(event)
            if isinstance(event, BusCheckpoint):
                ledger.committed.extend(self._pending)
                self._pending.clear()
                ledger.positions.setdefault((event.exchange, event.consumer), {})[event.symbol] = event.seq

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def bus_positions(self, source: str, consumer: str) -> dict[str, int]:
        return dict(self.ledger.positions.get((source, consumer), {}))


class _LedgerPlugin:
    @hookimpl
    def marketfeeder_register_sinks(self, register: Any) -> None:
        register("ledger", LedgerSink)


def plugin_manager() -> PluginManager:
    """The installed plugins plus the ``ledger`` sink."""
    pm = get_plugin_manager()
    pm.register(_LedgerPlugin(), name="test-ledger")
    return pm


def consumer_config(url: str, prefixes: Mapping[str, str], *, sinks: Sequence[Mapping[str, Any]] = (),
                    **options: Any) -> dict[str, Any]:
    """A feeder with no exchange and one ``nats`` source (its sinks write every 50 ms)."""
    return {
        "exchanges": {},
        "sinks": [{"flush_interval": 0.05, **s} for s in sinks or [{"type": "memory", "options": {}}]],
        "sources": [{"type": "nats", "options": {"url": url, **prefixes, **options}}],
    }


def nats_source(feeder: Feeder) -> NatsSource:
    source = next(iter(feeder.sources.values()))[0]
    assert isinstance(source, NatsSource)
    return source


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (callers bound the wait with ``anyio.fail_after``)."""
    while not condition():  # noqa: ASYNC110 - polling what has no event
        await anyio.sleep(0.02)


async def acks_settled(source: NatsSource) -> None:
    """Wait until the server has every ack (so a restarted consumer resumes exactly after them)."""
    o = source.options
    async with NatsClient(o.url) as nc:
        js = JetStream(nc)
        for token in o.types:
            stream = stream_name(o.stream_prefix, token)
            for _ in range(250):
                info = await js.consumer_info(stream, o.durable)
                if info is None or info["num_ack_pending"] == 0:
                    break
                await anyio.sleep(0.02)


async def until_nats_py_subscribed(nc: NatsClient, sub: Any, subject: str) -> None:
    """nats-py's ``flush()`` can return before the server has applied its SUB (a message published
    right then is not routed to it; the next one is): probe until one gets through."""
    import nats.errors

    for _ in range(50):
        await nc.publish(subject, b"probe")
        await nc.flush()
        try:
            await sub.next_msg(0.1)
            return
        except nats.errors.TimeoutError:
            continue
    raise AssertionError(f"nats-py never received a message on {subject}")
