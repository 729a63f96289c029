"""Reading back what the sink stored: every message of a stream, decoded, by stream sequence."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from marketfeeder.models import Event
from marketfeeder_nats.client import NatsClient
from marketfeeder_nats.codec import decode_event
from marketfeeder_nats.jetstream import JetStream, JetStreamError
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
