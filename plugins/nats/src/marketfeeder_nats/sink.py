"""The ``nats`` sink: publish every event to JetStream with a bounded window of un-acked messages.

Each event becomes one HPUB on ``md.<exchange>.<shard>.<type>.<symbol>`` with a ``Nats-Msg-Id`` header
and a reply inbox on which the stream's publish ack arrives. Un-acked messages stay in the window (in
publish order). When the window is full the overflow policy applies: ``block`` waits for acks,
``drop_oldest`` stops waiting for the oldest message and publishes a ``Gap`` for it on the same subject.
After a reconnect, or when acks stop coming for ``ack_timeout`` seconds, the whole un-acked suffix
is republished in order; the stream's de-duplication (``Nats-Msg-Id`` within ``duplicate_window``)
drops the copies that had landed. ``flush`` returns once every message is acked: acked means stored.

Book images: the sink keeps a local copy of every book from the ``BookSnapshot`` and ``BookDelta``
events it is given (a non-LIVE ``BookState`` or an order-book ``Gap`` makes the copy unknown until
the next snapshot) and, every ``snapshot_interval`` seconds, publishes a ``BookSnapshot`` of it on
the book's subject right after the delta it reflects, so nothing stands between the image and the
state it shows. A consumer can start a book from any image; a live replica checks it matches.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import orjson

from marketfeeder.book import OrderBook
from marketfeeder.clock import now_ns
from marketfeeder.models import (
    BookDelta,
    BookSnapshot,
    BookState,
    BookStatus,
    BusCheckpoint,
    DataType,
    Event,
    Gap,
    Trade,
)

from .client import (
    SECURITY_OPTIONS,
    Msg,
    NatsClient,
    NatsConnectionError,
    NatsError,
    NatsTimeoutError,
    hpub_frame,
    security_options,
)
from .codec import CodecError, decode_event, encode_event
from .jetstream import JetStream, JetStreamError
from .leases import ShardLeases
from .subjects import (
    DEFAULT_RETENTION,
    msg_id,
    shard_of,
    stream_configs,
    stream_name,
    subject_token,
    type_token,
)

__all__ = ["NatsSink", "NatsSinkOptions"]

log = logging.getLogger(__name__)

_STATUS = DataType.STATUS
_ORDERBOOK = DataType.ORDERBOOK
_LIVE = BookStatus.LIVE
_BookDelta = BookDelta
_BookSnapshot = BookSnapshot
_BookState = BookState
_Gap = Gap
_snapshot_fast = BookSnapshot.fast
_monotonic = time.monotonic
#: Classes whose seq orders them within their subject (what a take-over compares with the stream).
_SEQ_CLASSES = (Trade, BookDelta, BookSnapshot)
#: Classes that change what the sink knows of a book.
_BOOK_CLASSES = (BookSnapshot, BookDelta, BookState, Gap)


class NatsSinkOptions:
    """Validated options of the sink (``[[sinks]] type = "nats"``, or ``--sink nats:URL``)."""

    KNOWN = frozenset(
        {
            "target", "url", "shards", "window", "overflow", "ack_timeout", "flush_timeout",
            "stream_prefix", "subject_prefix", "retention", "replicas", "storage", "duplicate_window",
            "create_streams", "name", "max_bytes", "group", "member", "lease_ttl", "standby_buffer",
            "snapshot_interval", "snapshot_depth",
        }
    ) | SECURITY_OPTIONS  # fmt: skip

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - self.KNOWN
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(self.KNOWN))}")
        self.url = str(options.get("url") or options.get("target") or "nats://127.0.0.1:4222")
        #: Credentials and TLS files for the client (``repr`` hides the secrets).
        self.security = security_options(options)
        shards = options.get("shards", 16)
        if isinstance(shards, Mapping):
            self.default_shards = int(shards.get("default", 16))
            self.shards = {str(k): int(v) for k, v in shards.items() if k != "default"}
        else:
            self.default_shards = int(shards)
            self.shards = {}
        if self.default_shards <= 0 or any(v <= 0 for v in self.shards.values()):
            raise ValueError("shards must be positive")
        self.window = int(options.get("window", 8192))
        if self.window <= 0:
            raise ValueError("window must be positive")
        self.overflow = str(options.get("overflow", "block"))
        if self.overflow not in ("block", "drop_oldest"):
            raise ValueError(f"overflow must be 'block' or 'drop_oldest', got {self.overflow!r}")
        self.ack_timeout = float(options.get("ack_timeout", 2.0))
        self.flush_timeout = float(options.get("flush_timeout", 120.0))
        if self.ack_timeout <= 0 or self.flush_timeout <= 0:
            raise ValueError("ack_timeout and flush_timeout must be positive")
        self.stream_prefix = str(options.get("stream_prefix", "MD"))
        self.subject_prefix = str(options.get("subject_prefix", "md"))
        retention = dict(options.get("retention", {}))
        unknown_types = set(retention) - set(DEFAULT_RETENTION)
        if unknown_types:
            raise ValueError(f"retention: unknown data type(s) {', '.join(sorted(unknown_types))}")
        self.retention = {k: float(v) for k, v in retention.items()}
        self.replicas = int(options.get("replicas", 1))
        self.storage = str(options.get("storage", "file"))
        if self.storage not in ("file", "memory"):
            raise ValueError(f"storage must be 'file' or 'memory', got {self.storage!r}")
        self.duplicate_window = float(options.get("duplicate_window", 120.0))
        self.max_bytes = {str(k): int(v) for k, v in dict(options.get("max_bytes", {})).items()}
        self.create_streams = bool(options.get("create_streams", True))
        self.name = str(options.get("name", "marketfeeder-publisher"))
        group = options.get("group")
        self.group = str(group) if group else None
        self.member = str(options.get("member") or f"{socket.gethostname()}-{os.getpid()}").replace(".", "_")
        self.lease_ttl = float(options.get("lease_ttl", 5.0))
        self.standby_buffer = int(options.get("standby_buffer", 10_000))
        if self.lease_ttl <= 0 or self.standby_buffer <= 0:
            raise ValueError("lease_ttl and standby_buffer must be positive")
        #: Seconds between book images per book (0: none); levels a side in an image (0: the whole book).
        self.snapshot_interval = float(options.get("snapshot_interval", 5.0))
        self.snapshot_depth = int(options.get("snapshot_depth", 0))
        if not self.snapshot_interval >= 0 or self.snapshot_depth < 0:
            raise ValueError("snapshot_interval and snapshot_depth must be >= 0")

    def shards_for(self, exchange: str) -> int:
        return self.shards.get(exchange, self.default_shards)


class _Pending:
    __slots__ = ("event", "frame", "subject")

    def __init__(self, frame: bytes, subject: str, event: Event) -> None:
        self.frame = frame
        self.subject = subject
        self.event = event


class _Tracked:
    """The sink's copy of one book, on the book's subject."""

    __slots__ = ("book", "due", "exchange_ts", "imaged", "known", "pair")

    def __init__(self, exchange: str, symbol: str, pair: tuple[str, int]) -> None:
        self.book = OrderBook(exchange, symbol)
        self.pair = pair
        #: False from a non-LIVE state or a gap until the next snapshot: no image of it then.
        self.known = False
        self.exchange_ts: int | None = None  # of the last snapshot or delta applied
        self.imaged: int | None = None  # update id of the last image in the stream
        self.due = 0.0  # monotonic time of the next image


class NatsSink:
    """Publishes events to JetStream. ``NatsSink({"url": "nats://127.0.0.1:4222"})``."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = NatsSinkOptions(options)
        self.nc = NatsClient(self.options.url, name=self.options.name, **self.options.security)
        self.js = JetStream(self.nc)
        self._window: dict[str, _Pending] = {}
        self._subjects: dict[tuple[type[Event], str, str, str], str] = {}
        self._token = 0
        self._ack_prefix = ""
        self._gen = 0
        self._need_streams = False
        self.published = 0
        self.acked = 0
        self.duplicates = 0
        self.republished = 0
        self.errors = 0
        self.dropped = 0
        self.last_error = ""
        self.stream_seqs: dict[str, int] = {}
        # Group mode: leases decide which (exchange, shard) pairs this member publishes; the others are
        # kept in a bounded standby buffer per pair, republished on take-over (hot standby).
        self.leases: ShardLeases | None = None
        self._routes: dict[tuple[type[Event], str, str, str], tuple[str, tuple[str, int]]] = {}
        self._standby: dict[tuple[str, int], deque[Event]] = {}
        self._wanted: set[tuple[str, int]] = set()
        self._next_tick = 0.0
        self.standby_dropped = 0
        #: Batches from which BusCheckpoint events (a relaying feeder's own positions) were left out.
        self.checkpoints_skipped = 0
        self.takeovers = 0
        self.takeover_gaps = 0
        # Book images: the sink's copy of each book by its subject.
        self._books: dict[str, _Tracked] = {}
        self._next_scan = 0.0
        self.images = 0
        self.images_truncated = 0

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.nc.connect()
        if self.options.create_streams:
            await self.ensure_streams()
        self._ack_prefix = self.nc.new_inbox() + "."
        await self.nc.subscribe(self._ack_prefix + "*", callback=self._on_ack)
        self._gen = self.nc.generation
        o = self.options
        if o.group is not None:
            self.leases = ShardLeases(self.js, o.group, o.member, ttl=o.lease_ttl)
            await self.leases.open()

    async def ensure_streams(self) -> None:
        o = self.options
        for config in stream_configs(
            stream_prefix=o.stream_prefix,
            subject_prefix=o.subject_prefix,
            retention=o.retention,
            replicas=o.replicas,
            storage=o.storage,
            duplicate_window=o.duplicate_window,
            max_bytes=o.max_bytes,
        ):
            await self.js.ensure_stream(config)
        self._need_streams = False

    async def close(self) -> None:
        try:
            if self.leases is not None:
                with anyio.move_on_after(2.0, shield=True):
                    await self.leases.release_all()  # planned leave: hand over at once
            if self._window:
                with anyio.move_on_after(min(self.options.flush_timeout, 10.0)):
                    await self.flush()
        finally:
            if self._window:
                log.error("nats sink closed with %d un-acknowledged messages", len(self._window))
            await self.nc.close()

    def statistics(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "acked": self.acked,
            "duplicates": self.duplicates,
            "republished": self.republished,
            "errors": self.errors,
            "dropped": self.dropped,
            "unacked": len(self._window),
            "last_error": self.last_error,
            "images": self.images,
            "checkpoints_skipped": self.checkpoints_skipped,
            "images_truncated": self.images_truncated,
            "books": len(self._books),
            "client": self.nc.statistics(),
            "group": None if self.leases is None else {
                "member": self.options.member,
                "owned": [f"{e}.{s}" for e, s in self.leases.owned()],
                "standby": sum(len(d) for d in self._standby.values()),
                "standby_dropped": self.standby_dropped,
                "takeovers": self.takeovers,
                "takeover_gaps": self.takeover_gaps,
                "last_error": self.leases.last_error,
            },
        }

    # --- acks ----------------------------------------------------------------------------------

    def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._ack_prefix) :]
        pending = self._window.get(token)
        if pending is None:
            return  # ack of a republished copy already acked, or of a dropped message
        if msg.status is not None:
            # 503: no stream (yet) on this subject, e.g. JetStream still recovering: retried.
            self.last_error = f"publish to {pending.subject}: status {msg.status} {msg.description}"
            self._need_streams = True
            return
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            self.errors += 1
            return
        err = data.get("error")
        if err:
            # Refused for good (e.g. too large): not retried, counted and logged.
            self.errors += 1
            self.last_error = f"publish to {pending.subject}: {err.get('description')} ({err.get('err_code')})"
            log.error("nats sink: %s", self.last_error)
            del self._window[token]
            return
        del self._window[token]
        self.acked += 1
        if data.get("duplicate"):
            self.duplicates += 1
        self.stream_seqs[data.get("stream", "")] = int(data.get("seq", 0))

    # --- publishing ----------------------------------------------------------------------------

    def subject_for(self, event: Event) -> str:
        key = (type(event), event.exchange, event.symbol, event.gap_type.value if isinstance(event, Gap) else "")
        subject = self._subjects.get(key)
        if subject is None:
            o = self.options
            shard = shard_of(event.exchange, event.symbol, o.shards_for(event.exchange))
            subject = (
                f"{o.subject_prefix}.{subject_token(event.exchange)}.{shard}.{type_token(event)}."
                f"{subject_token(event.symbol)}"
            )
            self._subjects[key] = subject
        return subject

    def _route(self, event: Event) -> tuple[str, tuple[str, int]]:
        key = (type(event), event.exchange, event.symbol, event.gap_type.value if isinstance(event, Gap) else "")
        route = self._routes.get(key)
        if route is None:
            shards = self.options.shards_for(event.exchange)
            route = (self.subject_for(event), (event.exchange, shard_of(event.exchange, event.symbol, shards)))
            self._routes[key] = route
        return route

    async def write_batch(self, events: Sequence[Event]) -> None:
        if any(event.__class__ is BusCheckpoint for event in events):
            # A feeder relaying one bus to another: its own consumer positions mean nothing downstream
            # (and would be taken for the downstream consumers' positions if they shared names).
            events = [event for event in events if event.__class__ is not BusCheckpoint]
            self.checkpoints_skipped += 1
        if self.leases is not None:
            events = await self._owned_only(events)
        await self._publish(events)
        if self._books and _monotonic() >= self._next_scan:
            await self._scan_images()

    async def _owned_only(self, events: Sequence[Event]) -> list[Event]:
        """Events of pairs this member holds a valid lease for; the others go to standby."""
        assert self.leases is not None
        await self._maybe_tick()
        owned = set(self.leases.owned())
        out: list[Event] = []
        track = self.options.snapshot_interval > 0
        now = _monotonic()
        for event in events:
            subject, pair = self._route(event)
            if pair in owned:
                out.append(event)  # tracked as it is published
                continue
            if track and isinstance(event, _BOOK_CLASSES):
                # Kept current while standing by, so a take-over can publish images at once.
                self._track(event, subject, now)
            buffer = self._standby.get(pair)
            if buffer is None:
                buffer = self._standby[pair] = deque(maxlen=self.options.standby_buffer)
                if pair not in self._wanted:
                    self._wanted.add(pair)
                    self._next_tick = 0.0  # a new pair: claim it (or learn its owner) soon
            if len(buffer) == buffer.maxlen:
                self.standby_dropped += 1
            buffer.append(event)
        return out

    async def _maybe_tick(self) -> None:
        leases = self.leases
        assert leases is not None
        now = anyio.current_time()
        if now < self._next_tick:
            return
        self._next_tick = now + self.options.lease_ttl / 3
        changes = await leases.tick(self._wanted)
        for pair in changes.lost:
            log.warning("nats sink %s: lease of %s.%d lost; standing by", self.options.member, *pair)
        for pair in changes.acquired:
            await self._take_over(pair)

    async def _take_over(self, pair: tuple[str, int]) -> None:
        """Publish what the standby buffer holds for ``pair`` and the previous owner did not store,
        preceded by an exact ``Gap`` where the buffer does not reach back to the last stored event of a
        trade or book subject."""
        events = list(self._standby.pop(pair, ()))
        self.takeovers += 1
        plan = await self._takeover_plan(events)
        log.info("nats sink %s: took over %s.%d: %d buffered, %d to publish", self.options.member, pair[0],
                 pair[1], len(events), len(plan))
        await self._publish(plan, track=False)  # tracked when buffered
        # The copies reflect the last buffered event, now the end of each book's subject: an image
        # there lets consumers resync whatever the previous owner left out.
        now = _monotonic()
        for subject, tracked in list(self._books.items()):
            if tracked.pair == pair and tracked.known and tracked.book.update_id is not None:
                await self._image(tracked, subject, now)

    async def _takeover_plan(self, events: Sequence[Event]) -> list[Event]:
        """Per subject: drop buffered events up to the last one the stream already has (by exchange
        sequence: older snapshots or deltas must not land after newer ones), and put a ``Gap`` first
        where the next trade or delta does not follow the stored one."""
        by_subject: dict[str, list[Event]] = {}
        for event in events:
            by_subject.setdefault(self._route(event)[0], []).append(event)
        o = self.options
        dropped: set[int] = set()
        gaps: list[Event] = []
        for subject, items in by_subject.items():
            if not any(isinstance(e, _SEQ_CLASSES) for e in items):
                continue
            try:
                stored = await self.js.get_last_msg(stream_name(o.stream_prefix, type_token(items[0])), subject)
                last = decode_event(stored["data"]) if stored is not None else None
            except (NatsError, JetStreamError, CodecError) as exc:
                self.last_error = f"take-over check of {subject}: {exc}"
                continue
            if last is None or last.seq is None:
                continue  # nothing stored yet: nothing to compare with
            cut = -1
            for index, event in enumerate(items):
                if isinstance(event, _SEQ_CLASSES) and event.seq is not None and event.seq <= last.seq:
                    cut = index
            dropped.update(id(e) for e in items[: cut + 1])
            nxt = next((e for e in items[cut + 1 :] if isinstance(e, Trade | BookDelta)), None)
            if isinstance(nxt, Trade) and isinstance(last, Trade) and nxt.seq is not None:
                start, end, kind = last.seq + 1, nxt.seq - 1, DataType.TRADES
            elif isinstance(nxt, BookDelta) and isinstance(last, BookDelta | BookSnapshot):
                start, end, kind = last.seq + 1, nxt.first_seq - 1, DataType.ORDERBOOK
            else:
                continue
            if end >= start:
                gaps.append(Gap.fast(
                    nxt.exchange, nxt.symbol, None, now_ns(), None, kind, start, end,
                    f"nats: shard taken over by {o.member}; events {start}..{end} were published by no member",
                    end - start + 1 if kind is DataType.TRADES else None,
                ))  # fmt: skip
        self.takeover_gaps += len(gaps)
        return gaps + [e for e in events if id(e) not in dropped]

    async def _publish(self, events: Sequence[Event], *, track: bool = True) -> None:
        if self.nc.generation != self._gen or self._need_streams:
            await self._resend()
        window = self._window
        limit = self.options.window
        nc = self.nc
        track = track and self.options.snapshot_interval > 0
        books = self._books
        now = _monotonic()
        for event in events:
            if len(window) >= limit:
                await self._make_room()
            subject = self.subject_for(event)
            self._token += 1
            token = str(self._token)
            frame = hpub_frame(subject, self._ack_prefix + token, msg_id(event), encode_event(event))
            window[token] = _Pending(frame, subject, event)
            self.published += 1
            try:
                await nc.write_raw(frame)
            except NatsConnectionError as exc:
                # Kept in the window: republished once the connection is back.
                self.last_error = str(exc)
            if not track:
                continue
            cls = event.__class__
            if cls is _BookDelta:
                # Inline: the one per-event cost of images is this lookup plus the level updates.
                tracked = books.get(subject)
                if tracked is None or not tracked.known:
                    continue  # no snapshot yet, or out of step: the next snapshot starts it
                book = tracked.book
                uid = book.update_id
                delta: BookDelta = event  # type: ignore[assignment]
                last = delta.seq
                if uid is not None and delta.first_seq <= uid + 1 <= last:
                    book.apply_delta(delta)
                    tracked.exchange_ts = delta.exchange_ts
                    if now >= tracked.due:
                        await self._image(tracked, subject, now)
                elif uid is None or last > uid:
                    tracked.known = False  # update ids missing: no image until a snapshot
            elif cls is _BookSnapshot or cls is _BookState or cls is _Gap:
                self._track(event, subject, now)
        try:
            await nc.flush_writes()
        except NatsConnectionError as exc:
            self.last_error = str(exc)

    def _track(self, event: Event, subject: str, now: float) -> None:
        """Follow ``event`` in the copy of its book (any book event; the publish loop inlines deltas)."""
        cls = event.__class__
        if cls is _BookSnapshot:
            tracked = self._books.get(subject)
            if tracked is None:
                tracked = self._books[subject] = _Tracked(event.exchange, event.symbol, self._route(event)[1])
            if event.seq is None:
                tracked.known = False  # no update id: deltas cannot be checked against it
                return
            tracked.book.load_snapshot(event.bids, event.asks, event.seq)  # type: ignore[attr-defined]
            tracked.known = True
            tracked.exchange_ts = event.exchange_ts
            tracked.imaged = event.seq  # the snapshot itself is an image in the stream
            tracked.due = now + self.options.snapshot_interval
        elif cls is _BookDelta:
            tracked = self._books.get(subject)
            if tracked is None or not tracked.known:
                return
            book = tracked.book
            uid = book.update_id
            change: BookDelta = event  # type: ignore[assignment]
            if uid is not None and change.first_seq <= uid + 1 <= change.seq:
                book.apply(change.bids, change.asks)
                book.update_id = change.seq
                tracked.exchange_ts = change.exchange_ts
            elif uid is None or change.seq > uid:
                tracked.known = False
        elif cls is _BookState:
            if event.state is not _LIVE:  # type: ignore[attr-defined]
                tracked = self._books.get(subject)
                if tracked is not None:
                    tracked.known = False
        elif cls is _Gap and event.gap_type is _ORDERBOOK:  # type: ignore[attr-defined]
            tracked = self._books.get(subject)
            if tracked is not None:
                tracked.known = False

    async def _image(self, tracked: _Tracked, subject: str, now: float) -> None:
        """Publish an image of ``tracked`` on its subject, next in order."""
        book = tracked.book
        depth = self.options.snapshot_depth
        if depth:
            bids, asks = book.top(depth)
        else:
            bids, asks = book.bids(), book.asks()
        receive_ts = now_ns()
        image = _snapshot_fast(
            book.exchange, book.symbol, tracked.exchange_ts, receive_ts, book.update_id, tuple(bids), tuple(asks)
        )
        tracked.imaged = book.update_id
        tracked.due = now + self.options.snapshot_interval
        payload = encode_event(image)
        limit = self.nc.max_payload - 1024  # room for the headers
        if len(payload) > limit:
            # The server would refuse it and drop the connection: the best levels that fit instead.
            self.images_truncated += 1
            levels = max(len(bids), len(asks))
            while len(payload) > limit:
                if levels <= 1:
                    self.last_error = f"image of {book.exchange} {book.symbol} exceeds max_payload; not published"
                    return
                levels = max(1, min(levels - 1, int(levels * limit / len(payload) * 0.9)))
                bids, asks = book.top(levels)
                image = _snapshot_fast(
                    book.exchange, book.symbol, tracked.exchange_ts, receive_ts, book.update_id, tuple(bids),
                    tuple(asks),
                )  # fmt: skip
                payload = encode_event(image)
        window = self._window
        if len(window) >= self.options.window:
            await self._make_room()
        self._token += 1
        token = str(self._token)
        # An id of its own: an exchange snapshot at the same update id is another message (it may
        # carry another depth) and must not be dropped as a copy of the image.
        ident = msg_id(image) + ":image"
        frame = hpub_frame(subject, self._ack_prefix + token, ident, payload)
        window[token] = _Pending(frame, subject, image)
        self.published += 1
        self.images += 1
        try:
            await self.nc.write_raw(frame)
        except NatsConnectionError as exc:
            self.last_error = str(exc)

    async def _scan_images(self) -> None:
        """Images of books that changed since their last image but got no delta after it came due
        (a book that went quiet); between batches nothing of theirs is in flight, so the image is
        the end of the subject. Only books this member publishes."""
        now = _monotonic()
        interval = self.options.snapshot_interval
        self._next_scan = now + interval
        owned = None if self.leases is None else set(self.leases.owned())
        sent = False
        for subject, tracked in list(self._books.items()):
            uid = tracked.book.update_id
            if (
                tracked.known
                and uid is not None
                and uid != tracked.imaged
                and now >= tracked.due
                and (owned is None or tracked.pair in owned)
            ):
                await self._image(tracked, subject, now)
                sent = True
        if sent:
            try:
                await self.nc.flush_writes()
            except NatsConnectionError as exc:
                self.last_error = str(exc)

    async def _make_room(self) -> None:
        window = self._window
        limit = self.options.window
        if self.options.overflow == "drop_oldest":
            await self._wait_acks(lambda: len(window) < limit, self.options.ack_timeout, give_up=False)
            while len(window) >= limit:
                token = next(iter(window))
                pending = window.pop(token)
                self.dropped += 1
                self._gap_for(pending)
            return
        await self._wait_acks(lambda: len(window) < limit, self.options.flush_timeout)

    def _gap_for(self, pending: _Pending) -> None:
        event = pending.event
        if isinstance(event, Gap):
            return  # never a gap for a gap
        gap = Gap.fast(
            event.exchange, event.symbol, event.exchange_ts, event.receive_ts, event.seq,
            event.data_type if event.data_type is not _STATUS else _STATUS,
            event.seq, event.seq, "nats: publish window full, message may be lost (not acknowledged)", 1,
        )  # fmt: skip
        self._token += 1
        token = str(self._token)
        frame = hpub_frame(self.subject_for(gap), self._ack_prefix + token, msg_id(gap), encode_event(gap))
        # The gap itself takes a window slot past the limit so it is retried like any message.
        self._window[token] = _Pending(frame, pending.subject, gap)

    async def _wait_acks(self, cond: Callable[[], bool], budget: float, *, give_up: bool = True) -> None:
        """Read acks until ``cond()``; republish the un-acked suffix when acks stall for ``ack_timeout``
        or the connection was replaced; give up after ``budget`` seconds."""
        if cond():
            return
        deadline = anyio.current_time() + budget
        nc = self.nc
        while not cond():
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                if not give_up:
                    return
                raise NatsTimeoutError(
                    f"nats sink: {len(self._window)} messages not acknowledged within {budget} s "
                    f"(last error: {self.last_error or self.nc.last_error or 'none'})"
                )
            gen = self._gen

            def done(gen: int = gen) -> bool:
                return cond() or nc.generation != gen

            try:
                await nc.wait_until(done, min(self.options.ack_timeout, remaining), what="publish acks")
                if nc.generation != gen or self._need_streams:
                    await self._resend()
            except NatsTimeoutError:
                await self._resend()
            except NatsConnectionError as exc:
                self.last_error = str(exc)

    async def _resend(self) -> None:
        """Republish every un-acked message in its original order (same ids, same ack tokens)."""
        nc = self.nc
        try:
            if not nc.is_connected:
                await nc.connect()
            self._gen = nc.generation
            if self._need_streams and self.options.create_streams:
                await self.ensure_streams()
            for pending in list(self._window.values()):
                await nc.write_raw(pending.frame)
                self.republished += 1
            await nc.flush_writes()
        except (NatsError, JetStreamError) as exc:
            # Not reachable or JetStream not ready yet: the next wait retries.
            self.last_error = f"{type(exc).__name__}: {exc}"

    async def flush(self) -> None:
        """Wait until every published message is acknowledged (stored by JetStream)."""
        if self.leases is not None:
            await self._maybe_tick()  # the runtime flushes often: keep the leases renewed
        if self._books and _monotonic() >= self._next_scan:
            await self._scan_images()
        window = self._window
        if window:
            await self._wait_acks(lambda: not window, self.options.flush_timeout)
