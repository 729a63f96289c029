"""The ``nats`` source: events from JetStream into a feeder on another host.

``marketfeeder run --source nats://HOST:PORT`` (or ``[[sources]] type = "nats"``) runs one durable pull
consumer per data-type stream, filtered by exchange, shard and symbol. Each fetched batch is decoded
back into the original events and handed to the feeder in ONE ``ingest.deliver`` call that ends with a
:class:`~marketfeeder.models.BusCheckpoint` (stream, durable, last stream sequence, count), then
acknowledged. From the ingest the events reach replica books, validators, callbacks, strategies and
sinks as a connector's would.

Delivery into strategies is at-least-once: a message is acknowledged after the feeder accepted it, so
a crash between the two redelivers it (counted as ``redelivered``; the feeder drops repeated
sequence numbers). Storage is exactly-once with positioned sinks: at start the source asks the sinks
for the last sequence they committed per stream and restarts each consumer right after it, skipping
whatever the server would redeliver at or before it. After a reconnect the consumer is restarted
right after the last sequence handled, so what was in flight on the dead connection comes next, in
order, instead of after the ack wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from marketfeeder.clock import now_ns
from marketfeeder.models import BusCheckpoint, DataType, Event, Gap
from marketfeeder.source import Ingest

from .client import SECURITY_OPTIONS, NatsClient, NatsError, security_options
from .codec import CodecError, decode_event
from .jetstream import JetStream, JetStreamError, PullConsumer, parse_ack_reply
from .subjects import TYPE_TOKENS, stream_name, subject_token

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
    ) | SECURITY_OPTIONS  # fmt: skip

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - self.KNOWN
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(self.KNOWN))}")
        self.url = str(options.get("url") or options.get("target") or "nats://127.0.0.1:4222")
        #: Credentials and TLS files for the client (``repr`` hides the secrets).
        self.security = security_options(options)
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



#: Start policies a durable can be recreated with to read the same messages again.
_REPLAYABLE = frozenset({"all", "by_start_time"})
#: Setup retries wait this long between attempts while the server is unreachable.
_RETRY = 0.5


class NatsSource:
    """A :class:`~marketfeeder.source.Source` reading the bus (``NatsSource({"url": ..., "durable": ...})``)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = NatsSourceOptions(options)
        self.delivered = 0
        self.redelivered = 0
        self.skipped = 0
        self.malformed = 0
        self.gaps = 0
        self.checkpoints = 0
        self.repositioned = 0
        self.errors: dict[str, str] = {}
        #: Per stream, the highest stream sequence handled (delivered, skipped or found malformed).
        self.last_stream_seq: dict[str, int] = {}
        #: What the positioned sinks had committed at start (stream -> seq); resumed right after it.
        self.positions: dict[str, int] = {}
        #: Whether a sink keeps positions (the ingest's ``positioned``; read at start).
        self.positioned = False
        #: Set once every per-stream consumer exists (tests and supervisors wait on it).
        self.ready = anyio.Event()
        self._ready_count = 0

    def statistics(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "redelivered": self.redelivered,
            "skipped": self.skipped,
            "malformed": self.malformed,
            "gaps": self.gaps,
            "checkpoints": self.checkpoints,
            "repositioned": self.repositioned,
            "errors": dict(self.errors),
            "positions": dict(self.positions),
            "positioned": self.positioned,
            "last_stream_seq": dict(self.last_stream_seq),
        }

    async def run(self, ingest: Ingest) -> None:
        """Consume every configured data-type stream until cancelled."""
        o = self.options
        self.positions = dict(await ingest.positions(o.durable))
        # A positioned sink without a position for a stream committed nothing of it yet.
        self.positioned = bool(getattr(ingest, "positioned", False))
        async with NatsClient(o.url, name=f"marketfeeder-source-{o.durable}", **o.security) as nc:
            js = JetStream(nc)
            async with anyio.create_task_group() as tg:
                for token in o.types:
                    tg.start_soon(self._consume_stream, js, token, ingest)

    async def consume(self, deliver: Callable[[Event], None]) -> None:
        """Hand every event to ``deliver`` (no feeder, no positions, checkpoints left out): for tools
        and benchmarks that read the bus raw."""
        await self.run(_CallbackIngest(deliver))

    # --- setup -------------------------------------------------------------------------------------

    def _config(self, token: str, start_seq: int | None = None) -> dict[str, Any]:
        o = self.options
        config: dict[str, Any] = {
            "durable_name": o.durable,
            "ack_policy": "explicit",
            "deliver_policy": o.deliver_policy,
            "filter_subject": o.filter_subject(token),
            "max_ack_pending": o.max_ack_pending,
            "ack_wait": int(o.ack_wait * 1e9),
            "max_waiting": 512,
        }
        if start_seq is not None:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = start_seq
        elif o.start_time is not None:
            config["opt_start_time"] = o.start_time
        return config

    async def _stream_info(self, js: JetStream, stream: str) -> dict[str, Any]:
        o = self.options
        deadline = anyio.current_time() + o.wait_for_streams
        while True:
            info = await js.stream_info(stream)
            if info is not None:
                return info
            if anyio.current_time() > deadline:  # no publisher has created it yet
                raise JetStreamError(404, 10059, f"stream {stream} does not exist (waited {o.wait_for_streams} s)")
            await anyio.sleep(_RETRY)

    async def _setup(self, js: JetStream, token: str) -> tuple[PullConsumer, list[Gap], int]:
        """The stream's pull consumer, the Gaps to report before its first message, and the stream
        sequence handled so far (messages at or before it are skipped)."""
        o = self.options
        stream = stream_name(o.stream_prefix, token)
        while True:
            try:
                info = await self._stream_info(js, stream)
                existing = await js.consumer_info(stream, o.durable)
                state = info.get("state", {})
                first_seq = int(state.get("first_seq", 0))
                position = self.positions.get(stream)
                if position is not None and position > int(state.get("last_seq", 0)):
                    # The sinks saw sequences the stream never reached: it was recreated since.
                    log.warning("nats: %s committed up to seq %d but %s ends at %s: the stream was reset, "
                                "position ignored", o.durable, position, stream, state.get("last_seq"))
                    position = None
                if position is not None:
                    gaps, last = await self._resume_at(js, stream, token, existing, position, first_seq)
                else:
                    if existing is not None and self.positioned and o.deliver_policy in _REPLAYABLE:
                        existing = await self._restart_unless_fresh(js, stream, existing)
                    gaps, last = await self._resume_durable(js, stream, token, existing, state)
                consumer = await js.pull_consumer(stream, o.durable, max_pending=max(o.batch * 4, 1024))
                return consumer, gaps, last
            except NatsError as exc:  # server unreachable or slow: the client reconnects by itself
                self.errors[stream] = f"setup: {type(exc).__name__}: {exc}"
                await anyio.sleep(_RETRY)

    async def _resume_at(
        self, js: JetStream, stream: str, token: str, existing: dict[str, Any] | None, position: int, first_seq: int
    ) -> tuple[list[Gap], int]:
        """Start the consumer right after ``position``, what the positioned sinks committed."""
        o = self.options
        if existing is not None:
            floor = int(existing.get("ack_floor", {}).get("stream_seq", 0))
            delivered = int(existing.get("delivered", {}).get("stream_seq", 0))
            if max(floor, delivered) > position:
                # Acked (or handed out) past what the sinks committed: those were lost with the
                # process, so the consumer must go back; JetStream cannot move a durable's start.
                await js.delete_consumer(stream, o.durable)
                existing = None
                self.repositioned += 1
        if existing is None:
            await js.create_consumer(stream, self._config(token, position + 1))
        gaps: list[Gap] = []
        last = position
        if first_seq > position + 1:
            gaps.append(self._gap(token, position + 1, first_seq - 1,
                                  f"nats: {stream} removed seqs {position + 1}..{first_seq - 1} (retention) "
                                  f"after the sinks committed up to {position}"))
            last = first_seq - 1
        return gaps, last

    async def _restart_unless_fresh(
        self, js: JetStream, stream: str, existing: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The sinks keep positions but hold none for ``stream``: whatever this durable handed out
        before was not committed (the process died before its first commit), so it starts over."""
        floor = int(existing.get("ack_floor", {}).get("stream_seq", 0))
        delivered = int(existing.get("delivered", {}).get("stream_seq", 0))
        if not floor and not delivered:
            return existing
        await js.delete_consumer(stream, self.options.durable)
        self.repositioned += 1
        return None

    async def _resume_durable(
        self, js: JetStream, stream: str, token: str, existing: dict[str, Any] | None, state: dict[str, Any]
    ) -> tuple[list[Gap], int]:
        """No positions: the durable consumer goes on from its ack floor (or starts per ``start``)."""
        o = self.options
        gaps: list[Gap] = []
        first_seq = int(state.get("first_seq", 0))
        if existing is None:
            if o.start_time is not None:
                first_ts = state.get("first_ts")
                # Messages before first_seq were removed; if the replay should have started before the
                # oldest kept one, some of them may have been in range: say so instead of staying silent.
                if first_seq > 1 and first_ts and _rfc3339_ns(first_ts) > _rfc3339_ns(o.start_time):
                    gaps.append(self._gap(token, None, first_seq - 1,
                                          f"nats: replay from {o.start_time} asked, {stream} retains only from "
                                          f"{first_ts} (seq {first_seq})"))
            await js.create_consumer(stream, self._config(token))
            return gaps, 0
        floor = int(existing.get("ack_floor", {}).get("stream_seq", 0))
        if floor and first_seq > floor + 1:
            gaps.append(self._gap(token, floor + 1, first_seq - 1,
                                  f"nats: {stream} removed seqs {floor + 1}..{first_seq - 1} (retention) before "
                                  f"consumer {o.durable} read them"))
        # Past the removed range already reported.
        return gaps, max(floor, first_seq - 1) if floor else 0

    async def _reposition(self, js: JetStream, consumer: PullConsumer, token: str, last: int) -> None:
        """After a reconnect: restart the durable right after ``last``. Whatever the server had sent on
        the dead connection would otherwise come back only after ``ack_wait``, behind newer messages."""
        o = self.options
        stream = consumer.stream
        while True:
            try:
                await js.delete_consumer(stream, o.durable)
                await js.create_consumer(stream, self._config(token, last + 1))
                break
            except (NatsError, JetStreamError) as exc:
                self.errors[stream] = f"reposition: {type(exc).__name__}: {exc}"
                await anyio.sleep(_RETRY)
        consumer.reset()
        self.repositioned += 1

    def _gap(self, token: str, from_seq: int | None, to_seq: int | None, reason: str) -> Gap:
        """A Gap over stream sequences of a data-type stream (``exchange``/``symbol`` are the filter)."""
        o = self.options
        self.gaps += 1
        log.warning("%s", reason)
        count = to_seq - from_seq + 1 if from_seq is not None and to_seq is not None else None
        return Gap(o.exchange, "" if o.symbol == "*" else o.symbol, None, now_ns(), None, DataType(token),
                   from_seq, to_seq, reason, count)

    # --- consuming ---------------------------------------------------------------------------------

    async def _consume_stream(self, js: JetStream, token: str, ingest: Ingest) -> None:
        o = self.options
        stream = stream_name(o.stream_prefix, token)
        durable = o.durable
        consumer, gaps, last = await self._setup(js, token)
        self.last_stream_seq[stream] = last
        if gaps:
            await ingest.deliver([*gaps, ingest.checkpoint(stream, durable, last, len(gaps))])
            self.checkpoints += 1
        self._ready_count += 1
        if self._ready_count == len(o.types):
            self.ready.set()
        nc = js.nc
        gen = nc.generation
        full_stream = o.full_stream
        while True:
            if nc.generation != gen and last:
                await self._reposition(js, consumer, token, last)
            gen = nc.generation
            try:
                msgs = await consumer.next_batch(o.batch, o.expires)
            except (NatsError, JetStreamError) as exc:
                self.errors[stream] = f"{type(exc).__name__}: {exc}"
                await anyio.sleep(0.2)
                continue
            if not msgs:
                continue
            out: list[Event] = []
            top = last
            for msg in msgs:
                try:
                    meta = parse_ack_reply(msg.reply)
                except ValueError:
                    self.malformed += 1
                    continue
                if meta.delivered > 1:
                    self.redelivered += 1
                sseq = meta.stream_seq
                if sseq <= top:  # delivered before a reconnect, or committed by the sinks already
                    self.skipped += 1
                    continue
                if full_stream and top and sseq > top + 1:
                    # Unfiltered consumer: a jump in stream sequence can only be deleted messages.
                    out.append(self._gap(token, top + 1, sseq - 1,
                                         f"nats: {stream} seqs {top + 1}..{sseq - 1} were removed (retention) "
                                         "before this consumer read them"))
                top = sseq
                try:
                    out.append(decode_event(msg.data))
                except CodecError as exc:
                    self.malformed += 1
                    self.errors[stream] = f"malformed message {sseq}: {exc}"
            if top > last:
                # One call, one contiguous run in every sink, closed by the position it reaches.
                await ingest.deliver([*out, ingest.checkpoint(stream, durable, top, len(out))])
                self.delivered += len(out)
                self.checkpoints += 1
                last = self.last_stream_seq[stream] = top
            for msg in msgs:
                await consumer.ack(msg)
            try:
                await nc.flush_writes()  # send the acks
            except NatsError as exc:
                self.errors[stream] = f"{type(exc).__name__}: {exc}"
            await anyio.lowlevel.checkpoint()


class _CallbackIngest:
    """The :class:`~marketfeeder.source.Ingest` of :meth:`NatsSource.consume`."""

    source = "nats"
    positioned = False  # a callback keeps no bus positions

    def __init__(self, deliver: Callable[[Event], None]) -> None:
        self._deliver = deliver

    async def deliver(self, events: Sequence[Event]) -> None:
        deliver = self._deliver
        for event in events:
            if event.__class__ is not BusCheckpoint:
                deliver(event)

    def checkpoint(self, stream: str, consumer: str, seq: int, count: int) -> BusCheckpoint:
        return BusCheckpoint(self.source, stream, None, now_ns(), seq, consumer, count)

    async def positions(self, consumer: str) -> dict[str, int]:
        return {}
