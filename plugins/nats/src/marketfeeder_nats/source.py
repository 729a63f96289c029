"""The ``nats-source`` strategy: events from JetStream into a feeder on another host.

The core's connector contract is WebSocket-shaped (URL, subscribe messages, ``decode(frame)``, REST
snapshots), so a JetStream consumer cannot be a :class:`~marketfeeder.connector.Connector`. It runs as
a strategy instead: one durable pull consumer per data-type stream, filtered by exchange, shard and
symbol, decoding each message back into the original event and handing it to ``feeder.publish``, from
where it reaches callbacks, streams, latest-value buffers and sinks like any other event.

Delivery is at-least-once: a message is acknowledged after ``feeder.publish`` accepted it, so a
crash between the two redelivers it (``JsMeta.delivered > 1``, counted as ``redelivered``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from marketfeeder.clock import now_ns
from marketfeeder.models import DataType, Event, Gap

from .client import NatsClient, NatsError
from .codec import CodecError, decode_event
from .jetstream import JetStream, JetStreamError, PullConsumer, parse_ack_reply
from .subjects import TYPE_TOKENS, stream_name, subject_token

if TYPE_CHECKING:
    from marketfeeder.runtime.feeder import Feeder

__all__ = ["NatsSource", "NatsSourceOptions"]

log = logging.getLogger(__name__)

_POLICIES = {"all": "all", "new": "new", "last": "last_per_subject", "last_per_subject": "last_per_subject"}


def _start_time(value: Any) -> str:
    """RFC 3339 (UTC) from an int of ns since the epoch, or an ISO-8601 string."""
    if isinstance(value, int | float):
        seconds, ns = divmod(int(value), 1_000_000_000)
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{ns:09d}Z"
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"start must be all, new, last_per_subject, ns since the epoch or an ISO-8601 time, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rfc3339_ns(text: str) -> int:
    """ns since the epoch of a server timestamp (``2026-11-26T18:38:58.915717574Z``)."""
    main, _, frac = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(main).replace(tzinfo=UTC).timestamp()
    digits = "".join(c for c in frac if c.isdigit())[:9].ljust(9, "0")
    return int(seconds) * 1_000_000_000 + int(digits)


class NatsSourceOptions:
    KNOWN = frozenset(
        {
            "url", "target", "durable", "exchange", "shard", "symbol", "types", "start", "batch", "expires",
            "stream_prefix", "subject_prefix", "max_ack_pending", "ack_wait", "wait_for_streams",
        }
    )  # fmt: skip

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - self.KNOWN
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(self.KNOWN))}")
        self.url = str(options.get("url") or options.get("target") or "nats://127.0.0.1:4222")
        self.durable = str(options.get("durable", "marketfeeder"))
        if not self.durable or any(c in self.durable for c in ". *>"):
            raise ValueError(f"durable must be a plain name (no dots, blanks or wildcards), got {self.durable!r}")
        self.exchange = str(options.get("exchange", "*"))
        self.shard = str(options.get("shard", "*"))
        self.symbol = str(options.get("symbol", "*"))
        for key in ("exchange", "shard", "symbol"):
            value = getattr(self, key)
            if value != "*" and value != subject_token(value):
                raise ValueError(f"{key} {value!r} is not a single subject token")
        types = options.get("types")
        if types is None:
            self.types = list(TYPE_TOKENS)
        else:
            self.types = [DataType.parse(str(t)).value for t in ([types] if isinstance(types, str) else types)]
        start = options.get("start", "all")
        if isinstance(start, str) and start.lower() in _POLICIES:
            self.deliver_policy = _POLICIES[start.lower()]
            self.start_time: str | None = None
        else:
            self.deliver_policy = "by_start_time"
            self.start_time = _start_time(start)
        self.batch = int(options.get("batch", 256))
        self.expires = float(options.get("expires", 5.0))
        self.max_ack_pending = int(options.get("max_ack_pending", 20_000))
        self.ack_wait = float(options.get("ack_wait", 30.0))
        if self.batch <= 0 or self.expires <= 0 or self.max_ack_pending <= 0 or self.ack_wait <= 0:
            raise ValueError("batch, expires, max_ack_pending and ack_wait must be positive")
        self.stream_prefix = str(options.get("stream_prefix", "MD"))
        self.subject_prefix = str(options.get("subject_prefix", "md"))
        self.wait_for_streams = float(options.get("wait_for_streams", 30.0))

    @property
    def full_stream(self) -> bool:
        return self.exchange == "*" and self.shard == "*" and self.symbol == "*"

    def filter_subject(self, token: str) -> str:
        return f"{self.subject_prefix}.{self.exchange}.{self.shard}.{token}.{self.symbol}"


class NatsSource:
    """Consumes the bus into a feeder (``run``) or into any callable (``consume``)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = NatsSourceOptions(options)
        self.delivered = 0
        self.redelivered = 0
        self.malformed = 0
        self.gaps = 0
        self.errors: dict[str, str] = {}
        self.last_stream_seq: dict[str, int] = {}
        #: Set once every per-stream consumer exists (tests and supervisors wait on it).
        self.ready = anyio.Event()
        self._ready_count = 0

    def statistics(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "redelivered": self.redelivered,
            "malformed": self.malformed,
            "gaps": self.gaps,
            "errors": dict(self.errors),
            "last_stream_seq": dict(self.last_stream_seq),
        }

    async def run(self, feeder: Feeder) -> None:
        await self.consume(feeder.publish)

    async def consume(self, deliver: Callable[[Event], None]) -> None:
        """Deliver events until cancelled. ``deliver`` must not block (``feeder.publish`` does not)."""
        async with NatsClient(self.options.url, name=f"marketfeeder-source-{self.options.durable}") as nc:
            js = JetStream(nc)
            async with anyio.create_task_group() as tg:
                for token in self.options.types:
                    tg.start_soon(self._consume_stream, js, token, deliver)

    async def _consumer(self, js: JetStream, token: str) -> tuple[PullConsumer, list[Gap]]:
        o = self.options
        stream = stream_name(o.stream_prefix, token)
        info = await js.stream_info(stream)
        deadline = anyio.current_time() + o.wait_for_streams
        while info is None:  # no publisher has created it yet: poll the server
            if anyio.current_time() > deadline:
                raise JetStreamError(404, 10059, f"stream {stream} does not exist (waited {o.wait_for_streams} s)")
            await anyio.sleep(0.5)
            info = await js.stream_info(stream)
        existing = await js.consumer_info(stream, o.durable)
        gaps: list[Gap] = []
        state = info.get("state", {})
        first_seq = int(state.get("first_seq", 0))
        if existing is None:
            config: dict[str, Any] = {
                "durable_name": o.durable,
                "ack_policy": "explicit",
                "deliver_policy": o.deliver_policy,
                "filter_subject": o.filter_subject(token),
                "max_ack_pending": o.max_ack_pending,
                "ack_wait": int(o.ack_wait * 1e9),
                "max_waiting": 512,
            }
            if o.start_time is not None:
                config["opt_start_time"] = o.start_time
                first_ts = state.get("first_ts")
                # Messages before first_seq were removed; if the replay should have started before the
                # oldest kept one, some of them may have been in range: say so instead of staying silent.
                if first_seq > 1 and first_ts and _rfc3339_ns(first_ts) > _rfc3339_ns(o.start_time):
                    gaps.append(self._gap(token, None, first_seq - 1,
                                          f"nats: replay from {o.start_time} asked, {stream} retains only from "
                                          f"{first_ts} (seq {first_seq})"))
            await js.create_consumer(stream, config)
        else:
            floor = int(existing.get("ack_floor", {}).get("stream_seq", 0))
            if floor and first_seq > floor + 1:
                gaps.append(self._gap(token, floor + 1, first_seq - 1,
                                      f"nats: {stream} removed seqs {floor + 1}..{first_seq - 1} (retention) before "
                                      f"consumer {o.durable} read them"))
            # Resume point for the jump check: past the removed range already reported.
            self.last_stream_seq[stream] = max(floor, first_seq - 1) if floor else 0
        consumer = await js.pull_consumer(stream, o.durable, max_pending=max(o.batch * 4, 1024))
        return consumer, gaps

    def _gap(self, token: str, from_seq: int | None, to_seq: int | None, reason: str) -> Gap:
        """A Gap over stream sequences of a data-type stream (``exchange``/``symbol`` are the filter)."""
        o = self.options
        self.gaps += 1
        log.warning("%s", reason)
        count = to_seq - from_seq + 1 if from_seq is not None and to_seq is not None else None
        return Gap(o.exchange, "" if o.symbol == "*" else o.symbol, None, now_ns(), None, DataType(token),
                   from_seq, to_seq, reason, count)

    async def _consume_stream(self, js: JetStream, token: str, deliver: Callable[[Event], None]) -> None:
        o = self.options
        stream = stream_name(o.stream_prefix, token)
        consumer, gaps = await self._consumer(js, token)
        for gap in gaps:
            deliver(gap)
        self._ready_count += 1
        if self._ready_count == len(o.types):
            self.ready.set()
        last = self.last_stream_seq.get(stream, 0)
        while True:
            try:
                msgs = await consumer.next_batch(o.batch, o.expires)
            except (NatsError, JetStreamError) as exc:
                self.errors[stream] = f"{type(exc).__name__}: {exc}"
                await anyio.sleep(0.2)
                continue
            for msg in msgs:
                try:
                    meta = parse_ack_reply(msg.reply)
                except ValueError:
                    self.malformed += 1
                    continue
                if meta.delivered > 1:
                    self.redelivered += 1
                sseq = meta.stream_seq
                if sseq <= last and meta.delivered > 1:
                    await consumer.ack(msg)  # already delivered before a reconnect: ack it again
                    continue
                if o.full_stream and last and sseq > last + 1:
                    # Unfiltered consumer: a jump in stream sequence can only be deleted messages.
                    deliver(self._gap(token, last + 1, sseq - 1,
                                      f"nats: {stream} seqs {last + 1}..{sseq - 1} were removed (retention) "
                                      "before this consumer read them"))
                last = max(last, sseq)
                try:
                    event = decode_event(msg.data)
                except CodecError as exc:
                    self.malformed += 1
                    self.errors[stream] = f"malformed message {sseq}: {exc}"
                else:
                    deliver(event)
                    self.delivered += 1
                await consumer.ack(msg)
            self.last_stream_seq[stream] = last
            if msgs:
                try:
                    await js.nc.flush_writes()  # send the acks
                except NatsError as exc:
                    self.errors[stream] = f"{type(exc).__name__}: {exc}"
                await anyio.lowlevel.checkpoint()  # let the feeder's sinks and callbacks run
